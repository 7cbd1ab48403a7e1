// `vmsandbox check CONFIG [--json]`: validate a config file without starting anything.
// Exit status 0 if valid; 100 if not (s6's "permanent failure", as a run with this config would
// end); 2 for a usage error, as for every vmsandbox command (cli/main.ts).

import { ConfigError, loadConfig } from '../config/load.js';
import type { VmConfig } from '../config/types.js';
import { EXIT_CODES } from '../machines/outcome.js';
import { type CliIo, processIo } from './io.js';

const USAGE_ERROR = 2;

/**
 * Extension point for checks against the host, run only on a valid config: e.g. the Linux
 * backend can verify that uids exist, devices are present and the cgroup parent is delegated.
 * Resolves to problems in the same "<field path>: <problem>" form as the loader's (empty if none).
 */
export type HostCheck = (config: VmConfig) => Promise<string[]>;

export interface CheckOptions {
  hostCheck?: HostCheck;
  io?: CliIo;
}

const USAGE =
  'usage: vmsandbox check CONFIG [--json]\n' +
  '  Validate the VM config file CONFIG. Prints "CONFIG: ok (...)", or every problem on stderr.\n' +
  '  --json  print {"file", "ok", "config" | "problems"} on stdout instead (config with defaults filled in).\n';

type Result = { ok: true; config: VmConfig } | { ok: false; problems: string[] };

async function check(file: string, hostCheck: HostCheck | undefined): Promise<Result> {
  let config: VmConfig;
  try {
    config = loadConfig(file);
  } catch (error) {
    if (error instanceof ConfigError) return { ok: false, problems: error.problems };
    throw error;
  }
  const problems = hostCheck ? await hostCheck(config) : [];
  return problems.length > 0 ? { ok: false, problems } : { ok: true, config };
}

/** argv: the arguments after "check". Returns the exit status. */
export async function checkMain(argv: string[], options: CheckOptions = {}): Promise<number> {
  const io = options.io ?? processIo;
  if (argv.includes('--help') || argv.includes('-h')) {
    io.out(USAGE);
    return 0;
  }
  const json = argv.includes('--json');
  const rest = argv.filter((a) => a !== '--json');
  const file = rest[0];
  if (rest.length !== 1 || file === undefined || file.startsWith('-')) {
    const what = rest.length === 0 ? 'missing CONFIG' : `unexpected arguments ${rest.map((a) => JSON.stringify(a)).join(' ')}`;
    io.err(`vmsandbox check: ${what}\n${USAGE}`);
    return USAGE_ERROR;
  }

  const result = await check(file, options.hostCheck);
  if (json) {
    io.out(`${JSON.stringify({ file, ...result }, null, 2)}\n`);
  } else if (result.ok) {
    const n = result.config.services.length;
    io.out(`${file}: ok (vm ${result.config.name}, ${n} service${n === 1 ? '' : 's'})\n`);
  } else {
    io.err(result.problems.map((problem) => `${file}: ${problem}\n`).join(''));
  }
  return result.ok ? 0 : EXIT_CODES.configInvalid;
}
