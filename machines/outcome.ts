// How a sandbox run ended, and the exit status the manager reports to s6 for it.
// Codes are part of the s6 contract (docs/s6.md): a finish script branches on them.

export type Outcome =
  | 'stopped' // stop requested, the VM shut down gracefully (or was still being set up)
  | 'forced' // stop requested, the vmm missed stopMs (or a forced stop was asked for)
  | 'poweredOff' // the vmm exited 0 by itself: the guest powered off
  | 'serviceCrashed' // a service (or the vmm, non-zero) exited unexpectedly
  | 'setupFailed' // an effect of a setup step failed or setup passed setupMs
  | 'initDied' // the sandbox's PID 1 died unexpectedly
  | 'parentDied'; // the supervisor (s6-supervise) died

export const EXIT_CODES: Record<Outcome | 'teardownFailed' | 'configInvalid' | 'alreadyRunning', number> = {
  stopped: 0,
  forced: 2,
  poweredOff: 3,
  serviceCrashed: 4,
  initDied: 5,
  parentDied: 6,
  teardownFailed: 7,
  configInvalid: 100, // permanent: s6's "do not restart" family
  alreadyRunning: 101, // another manager owns the VM: this one touched nothing (effects/owner.ts)
  setupFailed: 111, // temporary failure, the s6/djb convention
};

/** `vmsandbox finish`'s exit when it refused to touch a live VM (s6 treats it like 0). */
export const FINISH_REFUSED = 1;

export function exitCodeFor(outcome: Outcome | null, teardownFailed: boolean): number {
  if (teardownFailed) return EXIT_CODES.teardownFailed;
  return EXIT_CODES[outcome ?? 'stopped'];
}
