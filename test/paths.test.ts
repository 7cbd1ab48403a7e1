// Paths generated from the machine itself (xstate/graph): every state is reached, and a stop
// request and a parent death are injected in every state — first on the pure machine, then
// driving the real machine over the simulator with a plan that parks it in that state.

import { describe, expect, it } from 'vitest';
import { initialTransition, transition } from 'xstate';
import { getShortestPaths } from 'xstate/graph';
import { machineGraph } from '../visualizer/graph.js';
import { stateString } from '../machines/observe.js';
import type { SandboxEvent } from '../machines/sandbox.js';
import { sandboxMachine } from '../machines/sandbox.js';
import { configFromSeed } from '../sim/configs.js';
import { demoPlan } from '../sim/demoPlan.js';
import type { FaultPlan } from '../sim/faults.js';
import { simulate } from '../sim/run.js';
import { mustPlan } from '../plan/index.js';

/** Every controller and the newest Landlock ABI: the plan as a fully capable host makes it. */
const planOf = (c: Parameters<typeof mustPlan>[0]) => mustPlan(c, { landlockAbi: 7, cgroupControllers: ['cpu', 'io', 'memory', 'pids'] });

type Snap = ReturnType<typeof initialTransition<typeof sandboxMachine>>[0];

// A config with a non-vmm service, so gracefulStop.services has someone to stop.
const config = configFromSeed(3);
expect(config.services.length).toBeGreaterThan(1);

const done = (id: string, output?: unknown) => ({ type: `xstate.done.actor.${id}`, output, actorId: id }) as unknown as SandboxEvent;
const error = (id: string, message: string) => ({ type: `xstate.error.actor.${id}`, error: new Error(message), actorId: id }) as unknown as SandboxEvent;
const delayed = (delay: string, path: string) => ({ type: `xstate.after.${delay}.vmsandbox.${path}` }) as unknown as SandboxEvent;
const STOP: SandboxEvent = { type: 'STOP_REQUESTED', signal: 'SIGTERM', force: false };
const PARENT: SandboxEvent = { type: 'PARENT_DIED' };

/** The events a state can usefully receive: its invoke completing, and what the world may send. */
function eventsFor(snap: Snap): SandboxEvent[] {
  const s = stateString(snap.value);
  const vmm = snap.context.order.at(-1)!;
  const byState: Record<string, SandboxEvent[]> = {
    'setup.setupNamespaces': [done('createNamespaces', { initPid: 1 })],
    'setup.mount': [done('mount')],
    'setup.landlock': [done('prepareLandlock', { abi: 7, degraded: [] })],
    'setup.cgroup': [done('createCgroups')],
    'setup.launch': [done('launch', { service: snap.context.order[snap.context.next], pid: 10 + snap.context.next })],
    'gracefulStop.vmm.requesting': [
      { type: 'SERVICE_EXITED', service: vmm, pid: 99, code: 0, signal: null },
      done('requestStop'),
      error('requestStop', 'ECONNRESET: the vmm is exiting'),
    ],
    'gracefulStop.vmm.waiting': [
      { type: 'SERVICE_EXITED', service: vmm, pid: 99, code: 0, signal: null },
      delayed('stopRepeat', 'gracefulStop.vmm.waiting'),
    ],
    'gracefulStop.services': [done('terminateServices')],
    'teardown.kill': [done('killAll')],
    'teardown.cleanup': [done('cleanup')],
  };
  return [...(byState[s] ?? []), STOP, PARENT];
}

// Whether a stop request was made already (a first and a repeated one fail differently), not
// how many: the count grows with every repeat and would make the graph infinite.
const serializeState = (snap: Snap) =>
  `${stateString(snap.value)}|${snap.context.next}|${snap.context.outcome}|${snap.context.stopRequests > 0}`;

function finish(snap: Snap): Snap {
  // Each state's first event ends it (in gracefulStop.vmm.* that is the vmm's exit).
  for (let i = 0; i < 20 && snap.status === 'active'; i++) [snap] = transition(sandboxMachine, snap, eventsFor(snap)[0]!);
  return snap;
}

const leafStates = machineGraph(sandboxMachine)
  .nodes.filter((n) => n.type !== 'compound' && n.type !== 'parallel')
  .map((n) => n.id)
  // Eventless states pass straight through; nothing can be injected while "in" them.
  .filter((id) => !['setup.launched', 'done'].includes(id));

describe('paths generated from the machine', () => {
  const paths = getShortestPaths(sandboxMachine, { input: { config, plan: planOf(config) }, events: eventsFor, serializeState });

  it('reaches every state', () => {
    const reached = new Set(paths.map((p) => stateString(p.state.value)));
    for (const s of leafStates) expect(reached, s).toContain(s);
  });

  const restingStates = leafStates.filter((s) => s !== 'stopped' && s !== 'failed');
  it.each(restingStates.flatMap((s) => [[s, STOP], [s, PARENT]] as const))('in %s, %o is honoured and the run ends', (state, ev) => {
    const path = paths.find((p) => stateString(p.state.value) === state)!;
    expect(path).toBeDefined();
    let [snap] = initialTransition(sandboxMachine, { config, plan: planOf(config) });
    for (const step of path.steps.slice(1)) [snap] = transition(sandboxMachine, snap, step.event as SandboxEvent);
    expect(stateString(snap.value)).toBe(state);
    [snap] = transition(sandboxMachine, snap, ev);
    const after = stateString(snap.value);
    if (state.startsWith('teardown.')) expect(after).toBe(state); // already stopping
    else expect(after).toMatch(/^(teardown\.kill|gracefulStop\.vmm\.requesting)$/);
    if (ev.type === 'PARENT_DIED' && !state.startsWith('teardown.')) expect(after).toBe('teardown.kill');
    const end = finish(snap);
    expect(end.status).toBe('done');
  });
});

describe('the same interruptions, driving the real machine over the simulator', () => {
  const base = (over: Partial<FaultPlan>): FaultPlan => ({ ...demoPlan, stopAt: [], ...over, delays: { ...demoPlan.delays, ...over.delays } });
  const FAR = 100_000;
  // For each state, a plan that parks the machine there at t=1000 (or reaches it then), and the
  // moment to inject the interruption.
  const parking: Record<string, { plan: Partial<FaultPlan>; at: number }> = {
    'setup.setupNamespaces': { plan: { delays: { createNamespaces: 5000 } }, at: 1000 },
    'setup.mount': { plan: { delays: { mount: 5000 } }, at: 1000 },
    'setup.landlock': { plan: { delays: { prepareLandlock: 5000 } }, at: 1000 },
    'setup.cgroup': { plan: { delays: { createCgroups: 5000 } }, at: 1000 },
    'setup.launch': { plan: { delays: { launch: 5000 } }, at: 1000 },
    running: { plan: {}, at: 1000 },
    'gracefulStop.vmm.requesting': { plan: { delays: { requestStop: 5000 }, stopAt: [500] }, at: 1000 },
    'gracefulStop.vmm.waiting': { plan: { vmmIgnoresStop: true, stopAt: [500] }, at: 1000 },
    'gracefulStop.services': { plan: { othersIgnoreTerm: true, vmmStopMs: 10, stopAt: [500] }, at: 1000 },
    'teardown.kill': { plan: { initDiesAt: 990, delays: { killAll: 100 } }, at: 1000 },
    'teardown.cleanup': { plan: { initDiesAt: 990, delays: { cleanup: 100 } }, at: 1050 },
  };

  it('has a parking plan for every resting state of the machine', () => {
    const resting = leafStates.filter((s) => s !== 'stopped' && s !== 'failed');
    expect(Object.keys(parking).sort()).toEqual(resting.sort());
  });

  it.each(Object.keys(parking).flatMap((s) => [[s, 'stop'], [s, 'parent death']] as const))('in %s, a %s: handled there, invariants hold', async (state, what) => {
    const { plan, at } = parking[state]!;
    const p = base(what === 'stop' ? { ...plan, stopAt: [...(plan.stopAt ?? []), at, FAR] } : { ...plan, parentDiesAt: at, stopAt: [...(plan.stopAt ?? []), FAR] });
    const records: { state: string; at: number }[] = [];
    const r = await simulate(0, { config, plan: p, onRecord: (rec, t) => records.push({ state: rec.state, at: t }) });
    const stateAtInjection = records.filter((x) => x.at < at).at(-1)?.state;
    expect(stateAtInjection).toBe(state);
    expect(r.violations).toEqual([]);
    expect(['stopped', 'failed']).toContain(r.finalState);
    expect(r.endedAt!).toBeLessThan(at + config.timeouts.stopMs + config.timeouts.killMs + 2100);
  });
});
