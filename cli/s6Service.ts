// `vmsandbox s6-service CONFIG DIR`: write the s6 service directory of one VM, so that nobody
// writes run/finish by hand or computes timeout-kill from the config's deadlines.
//
// The files are examples/s6/vm-demo's (the directory the demo and test/s6 run), with the manager's
// absolute path in run and finish (s6-svscan's PATH need not hold it) and timeout-kill computed
// from the config: its stop bound (stopMs + killMs + cleanup) plus time for Node to start.

import { existsSync, readdirSync, realpathSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig } from '../config/load.js';
import { stopBoundMs } from '../machines/sandbox.js';
import { packageBinDir, TIMEOUT_KILL_SLACK_MS, writeServiceDir } from '../s6/scan.js';
import { processIo, type CliIo } from './io.js';

const USAGE =
  'usage: vmsandbox s6-service CONFIG DIR [--vmsandbox PATH] [--down]\n' +
  '  Write the s6 service directory DIR of the VM in CONFIG: run (the manager, readiness on fd 3),\n' +
  '  finish, notification-fd, timeout-kill (from the config\'s stopMs and killMs), config.json (a\n' +
  '  symlink to CONFIG), log/run (s6-log into log/main). DIR must not exist or be empty.\n' +
  '  --vmsandbox PATH  the vmsandbox program run and finish exec (default: this installation\'s,\n' +
  '                    by absolute path; "vmsandbox" to look it up on s6-svscan\'s PATH)\n' +
  '  --down            add a down file: s6 starts the VM only on s6-svc -u\n' +
  '  exit: 0 written, 100 invalid config, 1 DIR not empty, 2 usage\n';

/** What run and finish may exec: a plain path, safe unquoted in sh and in execline. */
const PROGRAM = /^[A-Za-z0-9._/+-]+$/;

export interface S6ServiceResult {
  dir: string;
  timeoutKillMs: number;
  program: string;
}

/** Write the directory (the caller checked that it is absent or empty). */
export function writeS6Service(configPath: string, dir: string, program: string, down: boolean): S6ServiceResult {
  const config = loadConfig(configPath);
  writeServiceDir(dir, configPath, config, { down, program });
  return { dir, timeoutKillMs: stopBoundMs(config) + TIMEOUT_KILL_SLACK_MS, program };
}

export async function s6ServiceMain(argv: string[], io: CliIo = processIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { vmsandbox: { type: 'string' }, down: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    io.out(USAGE);
    return 0;
  }
  const [configPath, dirArg] = positionals;
  if (!configPath || !dirArg || positionals.length > 2) {
    io.err(USAGE);
    return 2;
  }
  const program = values.vmsandbox ?? join(realpathSync(packageBinDir), 'vmsandbox');
  if (!PROGRAM.test(program)) {
    io.err(`vmsandbox s6-service: --vmsandbox ${JSON.stringify(program)}: use a path of letters, digits and ._/+- (it is written unquoted into run and finish)\n`);
    return 2;
  }
  const dir = resolve(dirArg);
  if (existsSync(dir) && readdirSync(dir).length > 0) {
    io.err(`vmsandbox s6-service: ${dir} exists and is not empty; it may be a live service's: remove it first (s6-svc -d, then rm -r) or choose another DIR\n`);
    return 1;
  }
  const r = writeS6Service(configPath, dir, program, values.down ?? false);
  io.out(
    `wrote ${r.dir}: run and finish (${r.program}), notification-fd 3, timeout-kill ${r.timeoutKillMs} ms, config.json -> ${resolve(configPath)}, log/run${values.down ? ', down' : ''}\n` +
      `next: vmsandbox check ${configPath}; then put ${r.dir} in s6-svscan's scan directory (or link it there) and run s6-svscanctl -a SCANDIR\n`,
  );
  return 0;
}
