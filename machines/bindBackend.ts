// Fill the machine's effect slots from a backend's port: the only place the pure machine meets effects.

import { fromPromise } from 'xstate';
import type { SandboxEffects } from '../effects/port.js';
import { sandboxMachine } from './sandbox.js';

/**
 * The effects of a run: one backend's, or, given a function, the backend of each actor system (the
 * root actor's `system`). The simulator binds one machine that way for all its runs: provide()
 * costs more than a whole simulated lifecycle.
 */
export type EffectsSource = SandboxEffects | ((system: object) => SandboxEffects);

export function bindEffects(source: EffectsSource, machine: typeof sandboxMachine = sandboxMachine) {
  const of = typeof source === 'function' ? source : () => source;
  return machine.provide({
    actors: {
      createNamespaces: fromPromise(({ input, signal, system }) => of(system).createNamespaces(input, signal)),
      mount: fromPromise(({ input, signal, system }) => of(system).mount(input, signal)),
      prepareLandlock: fromPromise(({ input, signal, system }) => of(system).prepareLandlock(input, signal)),
      createCgroups: fromPromise(({ input, signal, system }) => of(system).createCgroups(input, signal)),
      launch: fromPromise(({ input, signal, system }) => of(system).launch(input, signal)),
      requestStop: fromPromise(({ input, signal, system }) => of(system).requestStop(input, signal)),
      terminateServices: fromPromise(({ input, signal, system }) => of(system).terminateServices(input, signal)),
      killAll: fromPromise(({ input, signal, system }) => of(system).killAll(input, signal)),
      cleanup: fromPromise(({ input, signal, system }) => of(system).cleanup(input, signal)),
    },
  });
}
