// vmsandbox run CONFIG: the manager. Builds the VM's sandbox on this host with the Linux backend,
// runs its services, and tears it down on SIGTERM (graceful) / second SIGTERM or SIGINT (forced) /
// parent death. Logs one pino JSON line per state change; exits with the outcome's code
// (docs/architecture.md).

import { parseArgs } from 'node:util';
import { createActor, toPromise } from 'xstate';
import { loadConfig } from '../config/load.js';
import { createLinuxBackend } from '../effects/linux/index.js';
import { bindEffects } from '../machines/bindBackend.js';
import { transitionInspector } from '../machines/observe.js';
import type { SandboxOutput } from '../machines/sandbox.js';
import { createLogger, logTransition } from './log.js';

/**
 * The signal the kernel sends the manager when its parent (s6-supervise) dies. Not SIGTERM/SIGINT
 * (those are stop requests) nor SIGHUP (s6-svc -h); SIGPWR is otherwise unused by s6 and Node.
 */
const PARENT_DEATH_SIGNAL = 'SIGPWR';

export async function runMain(argv: string[]): Promise<number> {
  const { positionals } = parseArgs({ args: argv, allowPositionals: true, options: {} });
  if (positionals.length !== 1) {
    process.stderr.write('usage: vmsandbox run CONFIG\n');
    return 2;
  }
  const config = loadConfig(positionals[0]!);
  const log = createLogger(config.name);
  if (process.getuid?.() !== 0) {
    log.error({ reason: 'not root' }, 'vmsandbox run needs root: it creates namespaces, mounts and cgroups and drops to the services\' uids');
    return 111;
  }
  const backend = createLinuxBackend(config, {
    handleSignals: true,
    parentDeathSignal: PARENT_DEATH_SIGNAL,
    log: (msg) => log.warn({ detail: msg }, msg),
  });
  let errors = 0;
  const actor = createActor(bindEffects(backend.effects), {
    input: { config },
    inspect: transitionInspector((r) => {
      logTransition(log, r, errors);
      errors = r.errors;
    }),
  });
  const sub = backend.events$.subscribe((ev) => {
    if (ev.type === 'STOP_REQUESTED' || ev.type === 'PARENT_DIED') log.info({ event: ev }, `received ${ev.type}`);
    actor.send(ev);
  });
  // SIGHUP is s6-svc -h: meaningless to a VM; say so rather than die of it.
  const onHup = () => log.info({ signal: 'SIGHUP' }, 'SIGHUP ignored');
  process.on('SIGHUP', onHup);
  actor.start();
  const output = (await toPromise(actor)) as SandboxOutput;
  sub.unsubscribe();
  backend.dispose();
  process.off('SIGHUP', onHup);
  const level = output.exitCode === 0 ? 'info' : 'error';
  log[level]({ outcome: output.outcome, exitCode: output.exitCode, errors: output.errors }, `exit ${output.exitCode}: ${output.outcome}${output.errors.length ? `: ${output.errors[0]}` : ''}`);
  return output.exitCode;
}
