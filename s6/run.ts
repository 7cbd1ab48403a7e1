// vmsandbox run CONFIG [--notify-fd N] [--supervisor-pid PID]: the manager, s6's run script.
// Builds the VM's sandbox on this host with the Linux backend, runs its services, reports
// readiness, and tears everything down on SIGTERM (graceful) / second SIGTERM or SIGINT (forced) /
// supervisor death. Logs one pino JSON line per state change; exits with the outcome's code
// (docs/architecture.md, docs/s6.md).

import { closeSync, openSync, writeSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { printHelp } from '../cli/help.js';
import { readyOf, vmmOf, type VmConfig } from '../config/types.js';
import { claimRuntimeDir } from '../effects/linux/backend.js';
import { createLinuxBackend } from '../effects/linux/index.js';
import { explainFailedExit } from '../effects/linux/landlockAudit.js';
import { linuxOwnership, writeLastRun } from '../effects/linux/owner.js';
import { claimVm, describeHolder, describeJournal, journalIsEmpty, phaseOf, type Claim, type Phase, type VmLock } from '../effects/owner.js';
import { EXIT_CODES } from '../machines/outcome.js';
import { runSandbox } from '../machines/runner.js';
import { CLEANUP_MS, stopBoundMs, stopByFrom } from '../machines/sandbox.js';
import { removeLeftovers } from './leftovers.js';
import { createLogger, logTransition, type Logger } from '../cli/log.js';
import { describeReady, waitReady } from './ready.js';
import { startStatus } from '../visualizer/statusSocket.js';
import { SupervisorError, watchSupervisor } from './supervisor.js';
import { loadConfigOrLog } from './config.js';
import { mark, startupMarks } from '../cli/startup.js';

/**
 * The signal the kernel sends the manager when its parent (s6-supervise) dies. Not SIGTERM/SIGINT
 * (those are stop requests) nor SIGHUP (s6-svc -h); SIGPWR is otherwise unused by s6 and Node.
 */
const PARENT_DEATH_SIGNAL = 'SIGPWR';

const USAGE =
  'usage: vmsandbox run CONFIG [--notify-fd N] [--supervisor-pid PID]\n' +
  '  Build the VM\'s sandbox and run its services (root): what an s6 run script execs (docs/s6.md).\n' +
  '  Logs pino JSON lines on stdout (vmsandbox log renders them).\n' +
  '  --notify-fd N         write one newline to fd N once the VM is ready (s6\'s notification-fd)\n' +
  '  --supervisor-pid PID  the supervisor (s6-supervise: "$PPID"): the VM is stopped when it dies\n' +
  '  signals: SIGTERM stops gracefully; a second SIGTERM, or SIGINT, forces the stop\n' +
  '  exit: 0 stopped, 2 forced, 3 powered off, 4 service crashed, 5 init died, 6 supervisor died,\n' +
  '        7 teardown failed, 100 config invalid, 101 already running, 111 setup failed\n';

function positiveInt(text: string | undefined, min: number): number | null | undefined {
  if (text === undefined) return undefined;
  return /^\d+$/.test(text) && Number(text) >= min && Number(text) <= 2 ** 31 - 1 ? Number(text) : null;
}

/**
 * Take over s6's notification fd: reopen it close-on-exec (so nothing the manager starts holds
 * the pipe) and close the inherited descriptor. Returns the new fd.
 */
function adoptNotifyFd(fd: number): number {
  const own = openSync(`/proc/self/fd/${fd}`, 'w');
  closeSync(fd);
  return own;
}

export { stopBoundMs };

/** A service failing within this long of the manager's start failed early (likely a missing rule). */
const EARLY_FAILURE_MS = 10_000;

export async function runMain(argv: string[]): Promise<number> {
  mark('main');
  if (printHelp(argv, USAGE)) return 0;
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { 'notify-fd': { type: 'string' }, 'supervisor-pid': { type: 'string' } },
  });
  const notifyArg = positiveInt(values['notify-fd'], 3);
  const supervisorArg = positiveInt(values['supervisor-pid'], 1);
  if (positionals.length !== 1 || notifyArg === null || supervisorArg === null) {
    if (notifyArg === null) process.stderr.write('vmsandbox run: --notify-fd must be a file descriptor number ≥ 3\n');
    if (supervisorArg === null) process.stderr.write('vmsandbox run: --supervisor-pid must be a process id\n');
    process.stderr.write(USAGE);
    return 2;
  }
  const file = positionals[0]!;
  // The exit code tells `vmsandbox finish` not to restart.
  const config = loadConfigOrLog(file, EXIT_CODES.configInvalid, `config invalid (exit ${EXIT_CODES.configInvalid}, permanent: fix the config)`);
  if (!config) return EXIT_CODES.configInvalid;
  mark('config');
  const log = createLogger(config.name);
  const started = Date.now();

  let notifyFd: number | null = null;
  if (notifyArg !== undefined) {
    try {
      notifyFd = adoptNotifyFd(notifyArg);
    } catch (e) {
      log.error({ notifyFd: notifyArg, exitCode: EXIT_CODES.configInvalid }, `--notify-fd ${notifyArg} is not open (${(e as Error).message}): check the service's notification-fd file`);
      return EXIT_CODES.configInvalid;
    }
  }
  if (process.getuid?.() !== 0) {
    log.error({ reason: 'not root' }, 'vmsandbox run needs root: it creates namespaces, mounts and cgroups and drops to the services\' uids');
    return EXIT_CODES.setupFailed;
  }
  // Refuse, before creating anything, what `vmsandbox check` would refuse (cli/preflight.ts).
  const plan = await (await import('./preflight.js')).preflight(config, log);
  if (typeof plan === 'number') return plan;
  mark('preflight');

  // ---- one owner per VM: take its lock before touching anything ----
  const lock = await takeVm(config, log);
  if (typeof lock === 'number') return lock;
  mark('lock');
  try {
    claimRuntimeDir(config, lock);
  } catch (e) {
    log.error({ reason: (e as Error).message, exitCode: EXIT_CODES.setupFailed }, `setup refused: ${(e as Error).message}`);
    endOwnership(lock, EXIT_CODES.setupFailed);
    return EXIT_CODES.setupFailed;
  }

  // Transitions, events and the services' recent output also go to a root-only socket in the
  // runtime dir (vmsandbox inspect, status). It listens once setup is over (below): what comes
  // before a client connects is kept for it.
  const status = startStatus({ config, log: (msg) => log.warn({ detail: msg }, msg) });

  // PR_SET_PDEATHSIG first (in createLinuxBackend), then the pidfd: a parent that dies in between
  // is caught by the pidfd check, one that dies after by the signal.
  const backend = createLinuxBackend(config, {
    plan,
    parentDeathSignal: PARENT_DEATH_SIGNAL,
    log: (msg) => log.warn({ detail: msg }, msg),
    journal: lock,
  });

  // The services' output, each line a record of its own tagged with the service: a service's text
  // is only ever a field of a record (it cannot forge one of the manager's), and it never holds
  // the manager's stdout (it cannot truncate the log). Its stdout at info, its stderr at warn.
  const outputSub = backend.output$.subscribe((o) => {
    status.output(o); // the last lines of each service, for vmsandbox inspect
    if (o.type === 'line') {
      log[o.stream === 'stdout' ? 'info' : 'warn']({ service: o.service, stream: o.stream, ...(o.cut ? { cut: true } : {}) }, o.line);
    } else {
      const why = o.reason === 'rate' ? 'over the rate limit' : "the init's buffer to the manager was full";
      log.warn({ service: o.service, stream: o.stream, dropped: o.count, reason: o.reason }, `${o.service}: ${o.count} output lines dropped (${why})`);
    }
  });

  // Before the machine starts: a supervisor that cannot be watched is a config error (exit 100).
  const deaths: Array<(why: string) => void> = [];
  let supervisor;
  try {
    supervisor = watchSupervisor({ pid: supervisorArg, parentDeathSignal: true, onDeath: (why) => deaths.forEach((d) => d(why)) });
  } catch (e) {
    if (!(e instanceof SupervisorError)) throw e;
    await status.close();
    await backend.effects.cleanup({}, AbortSignal.timeout(CLEANUP_MS)).catch((c: Error) => log.warn({ detail: c.message }, c.message));
    backend.dispose();
    outputSub.unsubscribe();
    log.error({ exitCode: EXIT_CODES.configInvalid }, e.message);
    endOwnership(lock, EXIT_CODES.configInvalid);
    return EXIT_CODES.configInvalid;
  }
  log.info({ supervisor: { pid: supervisor.pid, comm: supervisor.comm, source: supervisor.source }, notifyFd: notifyArg ?? null }, `supervisor: ${supervisor.comm} (pid ${supervisor.pid})`);

  // SIGHUP is s6-svc -h: meaningless to a VM; say so rather than die of it. SIGCONT follows every
  // SIGTERM of s6-svc -d: nothing to do.
  const onHup = () => log.info({ signal: 'SIGHUP' }, 'SIGHUP ignored');
  const onCont = () => undefined;
  process.on('SIGHUP', onHup);
  process.on('SIGCONT', onCont);

  // A service that fails: the Landlock denials its uid met, each with the rule to add
  // (effects/linux/landlockAudit.ts). Read after the fact from the audit records: nothing at start.
  const explainExit = (name: string) => {
    const s = config.services.find((x) => x.name === name);
    if (!s) return;
    const x = explainFailedExit(config, s, started, Date.now() - started < EARLY_FAILURE_MS, plan.landlock.abi);
    if (x) log.warn(x.fields, x.msg);
  };

  mark('machine');
  let errors = 0;
  let phase: Phase = 'starting';
  const ready = readyOf(vmmOf(config));
  const run = runSandbox(backend, config, {
    processSignals: true,
    onRecord: (r) => {
      // The lock's record says where the owner is (a new manager waits for one that is stopping),
      // updated before the log says so.
      const now = phaseOf(r.state, phase);
      if (now !== phase) {
        // Setup is over (launched, or failed): now the status socket (after this turn, so that an
        // immediate readiness is told first).
        if (phase === 'starting') setImmediate(() => void status.listen());
        phase = now;
        lock.update({ phase, stopBy: phase === 'stopping' ? stopByFrom(Date.now(), config) : null });
      }
      if (phase === 'starting') mark(String(r.state));
      logTransition(log, r, errors);
      status.record(r);
      errors = r.errors;
    },
    onEvent: (ev) => {
      if (ev.type === 'STOP_REQUESTED' || ev.type === 'PARENT_DIED') {
        log.info({ event: ev }, `received ${ev.type}${ev.type === 'STOP_REQUESTED' ? ` (${ev.signal}${ev.force ? ', forced' : ''})` : ''}`);
      }
      status.event(ev);
      // Not while stopping: then the manager itself signalled the services.
      if (ev.type === 'SERVICE_EXITED' && (ev.code !== 0 || ev.signal !== null) && phase !== 'stopping') explainExit(ev.service);
    },
    // Readiness: once the machine is running, probe the vmm's condition; while it holds, tell s6.
    ready: {
      probe: (signal) => waitReady(ready, signal, vmmOf(config).uid),
      onReady: () => {
        const ms = Date.now() - started;
        signalReady(log, notifyFd, ready, ms);
        status.ready(describeReady(ready), ms);
        notifyFd = null;
      },
    },
    onWatchdog: (bound) => {
      log.error({ boundMs: bound, exitCode: EXIT_CODES.teardownFailed }, `teardown did not end within ${bound} ms: exiting; \`vmsandbox finish\` removes what is left`);
      process.exit(EXIT_CODES.teardownFailed);
    },
  });
  deaths.push((why) => {
    log.warn({ supervisor: why }, why);
    run.deliver({ type: 'PARENT_DIED' });
  });

  const output = await run.done;
  await status.close();
  supervisor.stop();
  backend.dispose();
  outputSub.unsubscribe();
  process.off('SIGHUP', onHup);
  process.off('SIGCONT', onCont);
  if (notifyFd !== null) closeSync(notifyFd);
  endOwnership(lock, output.exitCode);
  writeLastRun(config.name, { pid: process.pid, startedAt: new Date(started).toISOString(), endedAt: new Date().toISOString(), exitCode: output.exitCode, outcome: output.outcome, reason: output.errors[0] ?? null }, (why) =>
    log.warn({ detail: why }, why),
  );
  const level = output.exitCode === 0 ? 'info' : 'error';
  log[level]({ outcome: output.outcome, exitCode: output.exitCode, errors: output.errors, stopRequests: output.stopRequests }, `exit ${output.exitCode}: ${output.outcome}${output.errors.length ? `: ${output.errors[0]}` : ''}`);
  return output.exitCode;
}

/**
 * Take the VM's lock: wait for an owner that is stopping, refuse any other (exit 101, nothing
 * touched), and remove what a dead owner left (its journal) before this run builds anything.
 * Returns the lock, or the exit code to end with.
 */
async function takeVm(config: VmConfig, log: Logger): Promise<VmLock | number> {
  let claim: Claim;
  try {
    claim = await claimVm(linuxOwnership(), config, { pid: process.pid }, {
      onWait: (h, ms) => log.info({ owner: h }, `vm ${config.name}: the previous manager (pid ${h.pid}) is stopping; waiting up to ${ms} ms for it`),
    });
  } catch (e) {
    log.error({ reason: (e as Error).message, exitCode: EXIT_CODES.setupFailed }, `cannot take the lock of vm ${config.name}: ${(e as Error).message}`);
    return EXIT_CODES.setupFailed;
  }
  if (!claim.ok) {
    const code = EXIT_CODES.alreadyRunning;
    log.error({ owner: claim.holder, exitCode: code }, `${describeHolder(claim, config)}: this run changes nothing (exit ${code})`);
    return code;
  }
  const lock = claim.lock;
  const stale = lock.journal();
  if (!journalIsEmpty(stale)) {
    const prev = lock.previous;
    const who = prev ? `a manager (pid ${prev.pid}) that ended without tearing down (last seen ${prev.phase})` : 'an earlier run';
    const r = await removeLeftovers(config, lock, (msg) => log.warn({ detail: msg }, msg));
    if (r.problems.length) {
      const why = `vm ${config.name}: could not remove what ${who} left (${describeJournal(stale).join(', ')}): ${r.problems.join('; ')}`;
      log.error({ reason: why, exitCode: EXIT_CODES.setupFailed }, why);
      endOwnership(lock, EXIT_CODES.setupFailed);
      return EXIT_CODES.setupFailed;
    }
    log.warn({ event: 'stale', previous: prev, removed: r.removed }, `vm ${config.name}: removed what ${who} left: ${r.removed.join(', ') || 'nothing was there any more'}`);
  }
  return lock;
}

/** Record how this run ended in the lock (finish reads it), then let the lock go. */
function endOwnership(lock: VmLock, exitCode: number): void {
  lock.update({ phase: 'ended', exitCode, endedAt: Date.now(), stopBy: null });
  lock.release();
}

/** Write s6's readiness newline (exactly once, then close the fd) and log the "ready" record. */
function signalReady(log: Logger, fd: number | null, ready: ReturnType<typeof readyOf>, ms: number): void {
  if (fd !== null) {
    try {
      writeSync(fd, '\n');
    } catch (e) {
      log.warn({ detail: (e as Error).message }, `could not notify readiness: ${(e as Error).message}`);
    }
    closeSync(fd);
  }
  mark('ready');
  log.info({ event: 'ready', condition: describeReady(ready), ms, notified: fd !== null, startup: startupMarks() }, `ready: ${describeReady(ready)}, ${ms} ms after start${fd !== null ? '; s6 notified' : ''}`);
}
