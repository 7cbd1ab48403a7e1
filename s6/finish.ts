// vmsandbox finish CONFIG [EXITCODE [SIGNAL]] [--force]: the s6 `finish` script's job.
//
// s6-supervise runs ./finish after ./run exited, with run's exit code (256 if it was killed by a
// signal) and the signal number. A manager that exited normally left nothing behind; one that was
// SIGKILLed (or hit its watchdog) may have left the VM's cgroup, processes of a sandbox whose init
// had not died yet, and the runtime directory. finish takes the VM's lock (effects/owner.ts) and
// removes exactly what the lock's journal says runs of this VM created, with the Linux backend's
// own killAll + cleanup. If another manager holds the lock the VM is live: finish refuses and
// changes nothing (exit 1), unless --force, which kills the VM without a graceful stop.
//
// Then it tells s6 whether to restart (docs/s6.md):
//
//   100 (config invalid)                → 125: permanent, s6 does not restart (as s6-svc -O)
//   an early failure, MAX in a row      → 125: a crash loop (see isEarlyFailure); before that 0
//   anything else                       → 0 (s6 restarts if the service is wanted up)

import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { printHelp } from '../cli/help.js';
import type { VmConfig } from '../config/types.js';
import { cgroupRoot, vmCgroupDir } from '../effects/linux/cgroup.js';
import { signalName } from '../effects/linux/native.js';
import { failuresPath, linuxOwnership } from '../effects/linux/owner.js';
import { describeHolder, memoryJournal, UPTIME_JUDGED_EXITS, type Claim, type JournalStore, type OwnerRecord } from '../effects/owner.js';
import { EXIT_CODES, FINISH_REFUSED } from '../machines/outcome.js';
import { removeLeftovers, type Removal } from './leftovers.js';
import { createLogger } from '../cli/log.js';
import { loadConfigOrLog } from './config.js';

export { FINISH_REFUSED };

/** s6-supervise's "permanent failure: do not restart ./run". */
export const S6_PERMANENT_FAILURE = 125;
export const DEFAULT_MAX_EARLY_FAILURES = 3;
/** A run that fails sooner than this after its start counts as an early failure. */
export const DEFAULT_MIN_UPTIME_MS = 10_000;

const USAGE =
  'usage: vmsandbox finish CONFIG [EXITCODE [SIGNAL]] [--force] [--max-early-failures N] [--min-uptime MS]\n' +
  '  s6\'s finish script: remove what a dead manager of the VM left (its cgroup, its runtime dir).\n' +
  '  EXITCODE and SIGNAL are run\'s, as s6-supervise passes them (256: killed by SIGNAL).\n' +
  '  It refuses while the VM\'s manager lives (never harms a live VM); --force kills it first.\n' +
  '  --max-early-failures N  early failures in a row that make a crash loop (default 3)\n' +
  '  --min-uptime MS         a run shorter than this that crashed is an early failure (default 10000)\n' +
  '  exit: 0 done, 1 refused (the VM is live), 125 do not restart (config invalid, or a crash loop)\n';

/**
 * Is this run's end part of a crash loop? A setup failure (111) and a refused duplicate start
 * (101) never got a VM up, whenever they happen. A crash, a dead init, a failed teardown or a
 * killed manager count when the run lasted less than minUptimeMs: a vmm that dies within a second
 * of every start (a Landlock denial, a bad argument) will do so again. A clean end (0, 2, 3) or a
 * run that was up long enough is not part of a loop.
 */
export function isEarlyFailure(code: number | undefined, uptimeMs: number | null, minUptimeMs: number): boolean {
  if (code === EXIT_CODES.setupFailed || code === EXIT_CODES.alreadyRunning) return true;
  return code !== undefined && UPTIME_JUDGED_EXITS.has(code) && uptimeMs !== null && uptimeMs < minUptimeMs;
}

interface Failures {
  count: number;
  /** The run exit codes of the failures in a row, oldest first. */
  codes: number[];
}

function readFailures(config: VmConfig): Failures {
  try {
    const f = JSON.parse(readFileSync(failuresPath(config.name), 'utf8')) as Failures;
    if (Number.isInteger(f.count) && Array.isArray(f.codes)) return f;
  } catch {
    /* none yet */
  }
  return { count: 0, codes: [] };
}

function writeFailures(config: VmConfig, f: Failures | null): void {
  const path = failuresPath(config.name);
  if (f === null) rmSync(path, { force: true });
  else writeFileSync(path, `${JSON.stringify(f)}\n`, { mode: 0o600 });
}

function describeRunExit(code: number | undefined, signal: number | undefined): string {
  if (code === undefined) return 'run exit status unknown';
  if (code === 256 || code < 0) return `run was killed by ${signal ? signalName(signal) : 'a signal'}`;
  if (code === EXIT_CODES.alreadyRunning) return `run exited ${code} (the VM has another owner)`;
  return `run exited ${code}`;
}

function positiveInt(text: string | undefined, dflt: number): number | null {
  if (text === undefined) return dflt;
  return /^\d+$/.test(text) && Number(text) >= 1 ? Number(text) : null;
}

export async function finishMain(argv: string[]): Promise<number> {
  if (printHelp(argv, USAGE)) return 0;
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      force: { type: 'boolean' },
      'max-early-failures': { type: 'string' },
      // The name before early failures other than 111 counted too.
      'max-setup-failures': { type: 'string' },
      'min-uptime': { type: 'string' },
    },
  });
  const max = positiveInt(values['max-early-failures'] ?? values['max-setup-failures'], DEFAULT_MAX_EARLY_FAILURES);
  const minUptime = positiveInt(values['min-uptime'], DEFAULT_MIN_UPTIME_MS);
  // s6 may pass more arguments (service name, process group): they are ignored.
  const [file, codeText, signalText] = positionals;
  const code = codeText === undefined ? undefined : Number(codeText);
  const signal = signalText === undefined ? undefined : Number(signalText);
  if (file === undefined || max === null || minUptime === null || (code !== undefined && !Number.isInteger(code)) || (signal !== undefined && !Number.isInteger(signal))) {
    process.stderr.write(USAGE);
    return 2;
  }
  const config = loadConfigOrLog(file, S6_PERMANENT_FAILURE, `finish: config invalid, nothing to clean up; not restarting (exit ${S6_PERMANENT_FAILURE})`);
  if (!config) return S6_PERMANENT_FAILURE;
  const log = createLogger(config.name);
  const warn = (msg: string) => log.warn({ detail: msg }, msg);
  const started = Date.now();
  const runExit = describeRunExit(code, signal);
  if (process.getuid?.() !== 0) {
    log.error({ event: 'finish', exitCode: FINISH_REFUSED }, 'finish needs root: the VM\'s lock, cgroups and runtime directory are root\'s');
    return FINISH_REFUSED;
  }

  // ---- own the VM, or refuse: a live VM is never touched without --force ----
  let claim: Claim;
  try {
    claim = linuxOwnership().tryClaim(config, { pid: process.pid, phase: 'finish' });
  } catch (e) {
    log.error({ event: 'finish', exitCode: FINISH_REFUSED }, `finish: cannot take the lock of vm ${config.name}: ${(e as Error).message}`);
    return FINISH_REFUSED;
  }
  let previous: OwnerRecord | null = null;
  let removal: Removal = { removed: [], problems: [] };
  let refused: string | null = null;
  if (claim.ok) {
    previous = claim.lock.previous;
    if (values.force) claim.lock.setJournal(byName(config, claim.lock.journal(), warn));
    removal = await removeLeftovers(config, claim.lock, warn);
  } else if (values.force) {
    log.warn({ event: 'finish-force', owner: claim.holder }, `finish --force: ${describeHolder(claim, config)}: killing it without a graceful stop`);
    const store = memoryJournal(byName(config, claim.holder?.journal ?? null, warn));
    removal = await removeLeftovers(config, store, warn);
  } else {
    refused = `${describeHolder(claim, config)}: finish changes nothing (stop it first, e.g. s6-svc -d; --force kills it without a graceful stop)`;
  }

  // ---- restart or not ----
  let exit = 0;
  let decision = 's6 restarts the service if it is wanted up';
  const uptime = previous && previous.pid !== process.pid ? (previous.endedAt ?? Date.now()) - previous.since : null;
  if (code === EXIT_CODES.configInvalid) {
    exit = S6_PERMANENT_FAILURE;
    decision = 'config invalid: permanent, not restarting';
    writeFailures(config, null);
  } else if (isEarlyFailure(code, uptime, minUptime)) {
    const f = readFailures(config);
    const next: Failures = { count: f.count + 1, codes: [...f.codes, code!].slice(-max) };
    const when = uptime === null ? '' : ` ${uptime} ms after its start`;
    if (next.count >= max) {
      exit = S6_PERMANENT_FAILURE;
      decision = `early failure${when}, ${next.count} in a row (exit codes ${next.codes.join(', ')}): a crash loop, not restarting (fix it, then s6-svc -u)`;
      writeFailures(config, null);
    } else {
      decision = `early failure${when} (${next.count} of ${max} in a row before giving up): s6 restarts the service`;
      writeFailures(config, next);
    }
  } else if (code !== undefined) {
    writeFailures(config, null);
  }
  if (claim.ok) claim.lock.release();

  const rec = {
    event: 'finish',
    runExitCode: code ?? null,
    runSignal: signal ? signalName(signal) : null,
    uptimeMs: uptime,
    removed: removal.removed,
    exitCode: refused && exit === 0 ? FINISH_REFUSED : exit,
    ms: Date.now() - started,
  };
  if (refused) {
    log.error({ ...rec, owner: claim.ok ? null : claim.holder }, `finish: ${runExit}; ${refused}; ${decision}`);
    return rec.exitCode;
  }
  const what = removal.removed.length ? `removed ${removal.removed.join(', ')}` : 'nothing left behind';
  if (removal.problems.length) log.error({ ...rec, problems: removal.problems }, `finish: ${runExit}; ${what}; ${removal.problems.join('; ')}; ${decision}`);
  else log[exit ? 'error' : 'info'](rec, `finish: ${runExit}; ${what}; ${decision}`);
  return exit;
}

/**
 * --force: the VM's objects by its config's names, whoever created them, plus what a journal
 * holds. The escape hatch for leftovers no journal knows (an older vmsandbox) and for a live VM.
 */
function byName(config: VmConfig, journal: ReturnType<JournalStore['journal']> | null, warn: (m: string) => void) {
  let cgroup: string | null;
  try {
    cgroup = vmCgroupDir(config, cgroupRoot());
  } catch (e) {
    warn(`finish --force: ${(e as Error).message}`);
    cgroup = journal?.cgroup ?? null;
  }
  if (journal?.cgroup && journal.cgroup !== cgroup) warn(`finish --force: the journal names cgroup ${journal.cgroup}, the config ${cgroup}: removing the config's`);
  return { cgroup, runtimeDir: config.runtimeDir };
}
