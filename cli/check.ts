// `vmsandbox check CONFIG [--json] [--no-host]`: validate a config file without starting anything,
// and (on Linux, unless --no-host) report whether this host can enforce it.
// Exit status: 0 valid (and the host can enforce it; warnings do not change the status); 100 invalid
// config (s6's "permanent failure", as a run with this config would end); 111 valid config that this
// host cannot enforce (a run would end in setupFailed, 111); 2 for a usage error, as for every
// vmsandbox command (cli/main.ts).

import { ConfigError, loadConfig } from '../config/load.js';
import type { VmConfig } from '../config/types.js';
import type { HostReport } from '../effects/linux/hostCheck.js';
import { EXIT_CODES } from '../machines/outcome.js';
import { type CliIo, processIo } from './io.js';

const USAGE_ERROR = 2;

export type { HostItem, HostLevel, HostReport } from '../effects/linux/hostCheck.js';

/**
 * Extension point for checks against the host, run only on a valid config. Resolves to either
 * - a HostReport (ok/warn/fail items; any fail → exit 111, "this host cannot enforce the config"), or
 * - a list of problems in the loader's "<field path>: <problem>" form, treated as config problems
 *   (exit 100; empty if none).
 */
export type HostCheck = (config: VmConfig) => Promise<string[] | HostReport>;

export interface CheckOptions {
  /** The host check; undefined: the platform's (Linux: linuxHostCheck), null: none. */
  hostCheck?: HostCheck | null;
  io?: CliIo;
}

const USAGE =
  'usage: vmsandbox check CONFIG [--json] [--no-host] [--quiet]\n' +
  '  Validate the VM config file CONFIG, then (on Linux) check that this host can enforce it:\n' +
  '  Landlock ABI, cgroup2 controllers for each limit, devices, programs, paths, uids.\n' +
  '  Prints "ok:/warn:/FAIL: ITEM: ..." lines and a verdict; config problems go to stderr.\n' +
  '  --json     print {"file", "ok", "config" | "problems", "host"?} on stdout instead\n' +
  '  --no-host  check the config only\n' +
  '  --quiet    print only the warn: and FAIL: lines and the verdict\n' +
  '  exit: 0 ok (warnings allowed), 100 invalid config, 111 valid but this host cannot enforce it, 2 usage\n';

type Result =
  | { ok: true; exitCode: 0; config: VmConfig; host?: HostReport }
  | { ok: false; exitCode: number; config: VmConfig; host: HostReport }
  | { ok: false; exitCode: number; problems: string[] };

/** The platform's host check, loaded only where it applies (it binds native code). */
async function platformHostCheck(): Promise<HostCheck | null> {
  if (process.platform !== 'linux') return null;
  const { linuxHostCheck } = await import('../effects/linux/hostCheck.js');
  return (config) => linuxHostCheck(config);
}

async function check(file: string, hostCheck: HostCheck | null): Promise<Result> {
  let config: VmConfig;
  try {
    config = loadConfig(file);
  } catch (error) {
    if (error instanceof ConfigError) return { ok: false, exitCode: EXIT_CODES.configInvalid, problems: error.problems };
    throw error;
  }
  if (!hostCheck) return { ok: true, exitCode: 0, config };
  const host = await hostCheck(config);
  if (Array.isArray(host)) {
    return host.length > 0 ? { ok: false, exitCode: EXIT_CODES.configInvalid, problems: host } : { ok: true, exitCode: 0, config };
  }
  return host.ok ? { ok: true, exitCode: 0, config, host } : { ok: false, exitCode: EXIT_CODES.setupFailed, config, host };
}

function formatItems(report: HostReport, quiet: boolean): string {
  const tag = { ok: 'ok:  ', warn: 'warn:', fail: 'FAIL:' } as const;
  return report.items.filter((x) => !quiet || x.level !== 'ok').map((x) => `${tag[x.level]} ${x.item}: ${x.message}\n`).join('');
}

function plural(n: number, what: string): string {
  return `${n} ${what}${n === 1 ? '' : 's'}`;
}

/** argv: the arguments after "check". Returns the exit status. */
export async function checkMain(argv: string[], options: CheckOptions = {}): Promise<number> {
  const io = options.io ?? processIo;
  if (argv.includes('--help') || argv.includes('-h')) {
    io.out(USAGE);
    return 0;
  }
  const json = argv.includes('--json');
  const noHost = argv.includes('--no-host');
  const quiet = argv.includes('--quiet') || argv.includes('-q');
  const rest = argv.filter((a) => a !== '--json' && a !== '--no-host' && a !== '--quiet' && a !== '-q');
  const file = rest[0];
  if (rest.length !== 1 || file === undefined || file.startsWith('-')) {
    const what = rest.length === 0 ? 'missing CONFIG' : `unexpected arguments ${rest.map((a) => JSON.stringify(a)).join(' ')}`;
    io.err(`vmsandbox check: ${what}\n${USAGE}`);
    return USAGE_ERROR;
  }

  const hostCheck = noHost ? null : options.hostCheck !== undefined ? options.hostCheck : await platformHostCheck();
  const result = await check(file, hostCheck);
  if (json) {
    const { exitCode: _status, ...shown } = result;
    io.out(`${JSON.stringify({ file, ...shown }, null, 2)}\n`);
  } else if ('problems' in result) {
    io.err(result.problems.map((problem) => `${file}: ${problem}\n`).join(''));
  } else {
    const n = result.config.services.length;
    const vm = `vm ${result.config.name}, ${plural(n, 'service')}`;
    if (!result.host) io.out(`${file}: ok (${vm})\n`);
    else {
      io.out(formatItems(result.host, quiet));
      const counts = `${plural(result.host.failures, 'failure')}, ${plural(result.host.warnings, 'warning')}`;
      if (result.ok) io.out(`${file}: ok (${vm}; host: ${counts})\n`);
      else io.err(`${file}: valid config (${vm}), but this host cannot enforce it: ${counts} (see the FAIL lines)\n`);
    }
  }
  return result.exitCode;
}
