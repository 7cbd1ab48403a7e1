// vmsandbox finish CONFIG [EXITCODE [SIGNAL]]: the s6 `finish` script's job.
//
// s6-supervise runs ./finish after ./run exited, with run's exit code (256 if it was killed by a
// signal) and the signal number. A manager that exited normally left nothing behind; one that was
// SIGKILLed (or hit its watchdog) may have left the VM's cgroups, processes of a sandbox whose
// init had not died yet, and the runtime directory. This removes them with the Linux backend's own
// killAll + cleanup (idempotent, work from what exists), logs what it removed, and tells s6
// whether to restart:
//
//   100 (config invalid)                → 125: permanent, s6 does not restart (as s6-svc -O)
//   111 (setup failed), MAX times in a row without another exit in between
//                                        → 125 (a missing binary, a refused Landlock ABI, ... do
//                                          not fix themselves); before that → 0 (s6 restarts)
//   anything else                       → 0 (s6 restarts if the service is wanted up)
//
// The consecutive-111 count lives in `<runtimeDir>.setup-failures` (a sibling of the runtime
// directory, which cleanup removes); any other exit code, or a 125, resets it.

import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from '../config/load.js';
import type { VmConfig } from '../config/types.js';
import { createLinuxBackend } from '../effects/linux/index.js';
import { cgroupRoot, vmCgroupDir } from '../effects/linux/cgroup.js';
import { signalName } from '../effects/linux/native.js';
import { EXIT_CODES } from '../machines/outcome.js';
import { createLogger } from './log.js';

/** s6-supervise's "permanent failure: do not restart ./run". */
export const S6_PERMANENT_FAILURE = 125;
export const DEFAULT_MAX_SETUP_FAILURES = 3;

const USAGE = 'usage: vmsandbox finish CONFIG [EXITCODE [SIGNAL]] [--max-setup-failures N]\n';

interface Found {
  cgroups: string[];
  processes: number;
  runtimeDir: boolean;
}

function cgroupDirs(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out = [dir];
  try {
    for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) out.push(...cgroupDirs(join(dir, e.name)));
  } catch {
    /* vanished */
  }
  return out;
}

function countProcs(dirs: string[]): number {
  let n = 0;
  for (const d of dirs) {
    try {
      n += readFileSync(join(d, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).length;
    } catch {
      /* gone */
    }
  }
  return n;
}

function survey(config: VmConfig, cgroupDir: string | null): Found {
  const cgroups = cgroupDir ? cgroupDirs(cgroupDir) : [];
  return { cgroups, processes: countProcs(cgroups), runtimeDir: existsSync(config.runtimeDir) };
}

function counterFile(config: VmConfig): string {
  return `${config.runtimeDir}.setup-failures`;
}

/** Count this setup failure; returns how many happened in a row. */
function countSetupFailure(config: VmConfig): number {
  const file = counterFile(config);
  let n = 0;
  try {
    n = Number(readFileSync(file, 'utf8').trim()) || 0;
  } catch {
    /* first one */
  }
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${n + 1}\n`);
  return n + 1;
}

function resetSetupFailures(config: VmConfig): void {
  rmSync(counterFile(config), { force: true });
}

function describeRunExit(code: number | undefined, signal: number | undefined): string {
  if (code === undefined) return 'run exit status unknown';
  if (code === 256 || code < 0) return `run was killed by ${signal ? signalName(signal) : 'a signal'}`;
  return `run exited ${code}`;
}

export async function finishMain(argv: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { 'max-setup-failures': { type: 'string' } },
  });
  const max = values['max-setup-failures'] === undefined ? DEFAULT_MAX_SETUP_FAILURES : Number(values['max-setup-failures']);
  // s6 may pass more arguments (service name, process group): they are ignored.
  const [file, codeText, signalText] = positionals;
  const code = codeText === undefined ? undefined : Number(codeText);
  const signal = signalText === undefined ? undefined : Number(signalText);
  if (file === undefined || !Number.isInteger(max) || max < 1 || (code !== undefined && !Number.isInteger(code)) || (signal !== undefined && !Number.isInteger(signal))) {
    process.stderr.write(USAGE);
    return 2;
  }
  let config: VmConfig;
  try {
    config = loadConfig(file);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    createLogger(basename(file).replace(/\.json$/, '')).error(
      { config: file, problems: e.problems, exitCode: S6_PERMANENT_FAILURE },
      `finish: config invalid, nothing to clean up; not restarting (exit ${S6_PERMANENT_FAILURE}): ${e.problems.join('; ')}`,
    );
    return S6_PERMANENT_FAILURE;
  }
  const log = createLogger(config.name);
  const started = Date.now();
  const runExit = describeRunExit(code, signal);

  // ---- remove what is left ----
  let cgroupDir: string | null = null;
  try {
    cgroupDir = vmCgroupDir(config, cgroupRoot());
  } catch (e) {
    log.warn({ detail: (e as Error).message }, `finish: ${(e as Error).message}`);
  }
  const before = survey(config, cgroupDir);
  const problems: string[] = [];
  if (before.cgroups.length || before.runtimeDir) {
    if (process.getuid?.() !== 0) {
      problems.push('not root: cannot remove the leftovers');
    } else {
      const backend = createLinuxBackend(config, { log: (msg) => log.warn({ detail: msg }, msg) });
      const bound = AbortSignal.timeout(config.timeouts.killMs + 2000);
      for (const op of ['killAll', 'cleanup'] as const) {
        try {
          await backend.effects[op]({ config }, bound);
        } catch (e) {
          problems.push(`${op}: ${(e as Error).message}`);
        }
      }
      backend.dispose();
    }
  }
  const after = survey(config, cgroupDir);
  const removed = [
    ...(before.processes > after.processes ? [`${before.processes - after.processes} process(es)`] : []),
    ...before.cgroups.filter((d) => !after.cgroups.includes(d)).map((d) => `cgroup ${d}`),
    ...(before.runtimeDir && !after.runtimeDir ? [`runtime dir ${config.runtimeDir}`] : []),
  ];
  if (after.cgroups.length || after.runtimeDir) {
    problems.push(`still there: ${[...after.cgroups.map((d) => `cgroup ${d}`), ...(after.runtimeDir ? [config.runtimeDir] : [])].join(', ')}`);
  }

  // ---- restart or not ----
  let exit = 0;
  let decision = 's6 restarts the service if it is wanted up';
  if (code === EXIT_CODES.configInvalid) {
    exit = S6_PERMANENT_FAILURE;
    decision = 'config invalid: permanent, not restarting';
  } else if (code === EXIT_CODES.setupFailed) {
    const n = countSetupFailure(config);
    if (n >= max) {
      exit = S6_PERMANENT_FAILURE;
      decision = `setup failed ${n} times in a row: treating it as permanent, not restarting (s6-svc -u to try again)`;
    } else {
      decision = `setup failed (${n} of ${max} in a row before giving up): s6 restarts the service`;
    }
  }
  if (exit === S6_PERMANENT_FAILURE || code !== EXIT_CODES.setupFailed) resetSetupFailures(config);

  const rec = { event: 'finish', runExitCode: code ?? null, runSignal: signal ? signalName(signal) : null, removed, exitCode: exit, ms: Date.now() - started };
  const what = removed.length ? `removed ${removed.join(', ')}` : 'nothing left behind';
  if (problems.length) log.error({ ...rec, problems }, `finish: ${runExit}; ${what}; ${problems.join('; ')}; ${decision}`);
  else log[exit ? 'error' : 'info'](rec, `finish: ${runExit}; ${what}; ${decision}`);
  return exit;
}
