// The demo's script for the simulator: nothing fails, the VM runs for a while, s6 asks it to stop,
// the guest powers off within the deadline. Timings resemble the real thing (see architecture.md).

import type { FaultPlan } from './faults.js';

export const demoPlan: FaultPlan = {
  seed: 0,
  delays: {
    createNamespaces: 1, mount: 3, prepareLandlock: 1, createCgroups: 1, launch: 2,
    requestStop: 1, terminateServices: 5, killAll: 2, cleanup: 1,
  },
  fail: null,
  landlockAbi: 7,
  controllers: ['memory', 'pids', 'cpu', 'io'],
  stopAt: [3000],
  parentDiesAt: null,
  initDiesAt: null,
  crash: null,
  powerOffAt: null,
  vmmIgnoresStop: false,
  vmmStopMs: 160,
  othersIgnoreTerm: false,
  cleanupBusy: 0,
  pidReuse: 1,
  vmmArmsAt: null,
  secondManagerAt: null,
  finishAt: null,
};
