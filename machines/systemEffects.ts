// Which effects a running machine executes: its effect slots (machines/sandbox.ts) look their
// backend up by the actor system they run in, and the runner and the simulator attach the backend's
// port to that system before the actor starts. The machine holds no effects (it stays data: drawable, and the
// simulator and the Linux backend run the same one), and binding costs nothing: provide() would
// build the machine's state nodes a second time, 2.3 ms of every manager's start
// (docs/architecture.md, "How the manager starts"). bindBackend.ts still provides effects to a
// machine of one's own (tests that wrap an effect, the benches).

import type { SandboxEffects } from '../effects/port.js';

const attached = new WeakMap<object, SandboxEffects>();

/** Run the effects of every machine in `system` (an actor's `system`) through `effects`. */
export function attachEffects(system: object, effects: SandboxEffects): void {
  attached.set(system, effects);
}

/** The effects attached to `system`; what it lacks is an error naming the effect. */
export function effectsOf(system: object, op: keyof SandboxEffects): SandboxEffects {
  const effects = attached.get(system);
  if (!effects) throw new Error(`effect ${op} has no backend: start the machine through runSandbox (machines/runner.ts), or bind one with bindEffects`);
  return effects;
}
