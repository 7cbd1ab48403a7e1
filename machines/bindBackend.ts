// A machine with one backend's effects provided: for whoever wants a machine of its own with its
// effects in it (tests that wrap an effect, the benches). The runner and the simulator need no such
// machine: they attach the backend to the actor's system (systemEffects.ts), which costs nothing,
// where provide() builds the machine's state nodes again.

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
