// Fill the machine's effect slots from a backend's port: the only place the pure machine meets effects.

import { fromPromise } from 'xstate';
import type { SandboxEffects } from '../effects/port.js';
import { sandboxMachine } from './sandbox.js';

export function bindEffects(effects: SandboxEffects, machine: typeof sandboxMachine = sandboxMachine) {
  return machine.provide({
    actors: {
      createNamespaces: fromPromise(({ input, signal }) => effects.createNamespaces(input, signal)),
      mount: fromPromise(({ input, signal }) => effects.mount(input, signal)),
      prepareLandlock: fromPromise(({ input, signal }) => effects.prepareLandlock(input, signal)),
      createCgroups: fromPromise(({ input, signal }) => effects.createCgroups(input, signal)),
      launch: fromPromise(({ input, signal }) => effects.launch(input, signal)),
      requestStop: fromPromise(({ input, signal }) => effects.requestStop(input, signal)),
      terminateServices: fromPromise(({ input, signal }) => effects.terminateServices(input, signal)),
      killAll: fromPromise(({ input, signal }) => effects.killAll(input, signal)),
      cleanup: fromPromise(({ input, signal }) => effects.cleanup(input, signal)),
    },
  });
}
