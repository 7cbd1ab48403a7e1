// The machine alone, as data: pure transitions (xstate's transition()), no backend at all.

import { describe, expect, it } from 'vitest';
import { initialTransition, transition } from 'xstate';
import type { ServiceConfig, VmConfig } from '../config/types.js';
import { stateString } from '../machines/observe.js';
import { EXIT_CODES } from '../machines/outcome.js';
import type { SandboxEvent } from '../machines/sandbox.js';
import { sandboxMachine, STOP_REPEAT_MS } from '../machines/sandbox.js';
import { mustPlan } from '../plan/index.js';

/** Every controller and the newest Landlock ABI: the plan as a fully capable host makes it. */
const planOf = (c: Parameters<typeof mustPlan>[0]) => mustPlan(c, { landlockAbi: 7, cgroupControllers: ['cpu', 'io', 'memory', 'pids'] });

type Snap = ReturnType<typeof initialTransition<typeof sandboxMachine>>[0];

function svc(name: string, extra: Partial<ServiceConfig> = {}): ServiceConfig {
  return {
    name, argv: ['/bin/true'], env: {}, uid: 62000, gid: 62000, groups: [], vmm: false, storage: 'none',
    tmp: false, shm: false, landlock: { read: [], write: [] }, limits: {}, caps: [], devices: [],
    stop: { signal: 'SIGTERM' }, onExit: 'stop', ...extra,
  };
}

const config: VmConfig = {
  name: 'vm-test', storage: '/var/lib/vms/vm-test', runtimeDir: '/run/vmsandbox/vm-test',
  timeouts: { setupMs: 30000, stopMs: 10000, killMs: 2000 },
  cgroup: { parent: 'vmsandbox', limits: {}, limitsOptional: false },
  landlock: { minAbi: 6, allowDegraded: false },
  // The vmm is listed first on purpose: it must still be launched last.
  services: [svc('vmm', { vmm: true }), svc('virtiofsd', { storage: 'rw' }), svc('gpu', { onExit: 'ignore' })],
};

const done = (id: string, output?: unknown) => ({ type: `xstate.done.actor.${id}`, output, actorId: id }) as unknown as SandboxEvent;
const error = (id: string, message: string) => ({ type: `xstate.error.actor.${id}`, error: new Error(message), actorId: id }) as unknown as SandboxEvent;
const after = (delay: string, path: string) => ({ type: `xstate.after.${delay}.vmsandbox.${path}` }) as unknown as SandboxEvent;
const STOP: SandboxEvent = { type: 'STOP_REQUESTED', signal: 'SIGTERM', force: false };
const PARENT: SandboxEvent = { type: 'PARENT_DIED' };
const exited = (service: string, code: number | null = 0, signal: string | null = null): SandboxEvent => ({ type: 'SERVICE_EXITED', service, pid: 100, code, signal });

function run(events: SandboxEvent[], start?: Snap): { snap: Snap; states: string[]; spawned: string[] } {
  let [snap, actions] = start ? [start, []] : initialTransition(sandboxMachine, { config, plan: planOf(config) });
  const states = [stateString(snap.value)];
  const spawned: string[] = [];
  const collect = (acts: { type: string; params?: unknown }[]) => {
    for (const a of acts) if (a.type === 'xstate.spawnChild') spawned.push((a.params as { id: string }).id);
  };
  collect(actions);
  for (const ev of events) {
    [snap, actions] = transition(sandboxMachine, snap, ev);
    collect(actions);
    states.push(stateString(snap.value));
  }
  return { snap, states, spawned };
}

const SETUP = [
  done('createNamespaces', { initPid: 42 }),
  done('mount'),
  done('prepareLandlock', { abi: 7, degraded: [] }),
  done('createCgroups'),
  done('launch', { service: 'virtiofsd', pid: 43 }),
  done('launch', { service: 'gpu', pid: 44 }),
  done('launch', { service: 'vmm', pid: 45 }),
];

describe('sandbox machine (pure)', () => {
  it('walks setup in order, launches the vmm last, and runs', () => {
    const { snap, states, spawned } = run(SETUP);
    expect(states).toEqual([
      'setup.setupNamespaces', 'setup.mount', 'setup.landlock', 'setup.cgroup',
      'setup.launch', 'setup.launch', 'setup.launch', 'running',
    ]);
    expect(spawned).toEqual(['createNamespaces', 'mount', 'prepareLandlock', 'createCgroups', 'launch', 'launch', 'launch']);
    expect(snap.context.order).toEqual(['virtiofsd', 'gpu', 'vmm']);
    expect(snap.context.pids).toEqual({ virtiofsd: 43, gpu: 44, vmm: 45 });
  });

  it('stops gracefully: vmm first, then the others, then kill and cleanup; exit 0', () => {
    const { snap, states } = run([...SETUP, STOP, exited('vmm'), done('terminateServices'), done('killAll'), done('cleanup')]);
    expect(states.slice(-5)).toEqual(['gracefulStop.vmm.requesting', 'gracefulStop.services', 'teardown.kill', 'teardown.cleanup', 'stopped']);
    expect(snap.status).toBe('done');
    expect(snap.output).toMatchObject({ outcome: 'stopped', exitCode: EXIT_CODES.stopped, errors: [] });
  });

  it('forces the stop when the vmm misses stopMs; exit 2, final state stopped', () => {
    const { snap, states } = run([...SETUP, STOP, after('timeoutKill', 'gracefulStop'), done('killAll'), done('cleanup')]);
    expect(states.slice(-4)).toEqual(['gracefulStop.vmm.requesting', 'teardown.kill', 'teardown.cleanup', 'stopped']);
    expect(snap.output).toMatchObject({ outcome: 'forced', exitCode: EXIT_CODES.forced, errors: [] });
    expect(snap.context.reason).toBe('graceful stop did not finish within 10000 ms');
  });

  describe('the stop request to the guest is repeated (STOP_REPEAT_MS) until the vmm exits', () => {
    const qmpConfig: VmConfig = { ...config, services: config.services.map((s) => (s.vmm ? { ...s, stop: { qmp: '/run/q.sock' } } : s)) };
    const start = (cfg: VmConfig) => {
      let [snap] = initialTransition(sandboxMachine, { config: cfg, plan: planOf(cfg) });
      for (const ev of [...SETUP, STOP]) [snap] = transition(sandboxMachine, snap, ev);
      return snap;
    };
    const REPEAT = after('stopRepeat', 'gracefulStop.vmm.waiting');

    it('qmp: requested again after each interval; each one counted and told; the vmm exit ends it: exit 0', () => {
      const { snap, states } = run([done('requestStop'), REPEAT, done('requestStop'), REPEAT, done('requestStop'), exited('vmm'), done('terminateServices'), done('killAll'), done('cleanup')], start(qmpConfig));
      expect(STOP_REPEAT_MS).toBe(1000);
      expect(states.slice(0, 7)).toEqual(['gracefulStop.vmm.requesting', 'gracefulStop.vmm.waiting', 'gracefulStop.vmm.requesting', 'gracefulStop.vmm.waiting', 'gracefulStop.vmm.requesting', 'gracefulStop.vmm.waiting', 'gracefulStop.services']);
      expect(snap.output).toMatchObject({ outcome: 'stopped', exitCode: 0, errors: [], stopRequests: 3 });
    });

    it('the reason names each request', () => {
      const { snap } = run([done('requestStop'), REPEAT, done('requestStop')], start(qmpConfig));
      expect(snap.context.reason).toBe('stop request 2 sent (qmp)');
    });

    it('a repeat that fails (the vmm is exiting) does not force: noted, and the wait goes on', () => {
      const { snap, states } = run([done('requestStop'), REPEAT, error('requestStop', 'ECONNRESET: QMP closed'), exited('vmm'), done('terminateServices'), done('killAll'), done('cleanup')], start(qmpConfig));
      expect(states.slice(0, 4)).toEqual(['gracefulStop.vmm.requesting', 'gracefulStop.vmm.waiting', 'gracefulStop.vmm.requesting', 'gracefulStop.vmm.waiting']);
      expect(snap.output).toMatchObject({ outcome: 'stopped', exitCode: 0, errors: [], stopRequests: 2 });
    });

    it('a failed repeat is in the reason; the deadline still forces', () => {
      const { snap } = run([done('requestStop'), REPEAT, error('requestStop', 'ECONNRESET: QMP closed')], start(qmpConfig));
      expect(snap.context.reason).toMatch(/^stop request 2 failed \(qmp\): .*ECONNRESET: QMP closed.*not forcing/);
      const [end] = transition(sandboxMachine, snap, after('timeoutKill', 'gracefulStop'));
      expect(stateString(end.value)).toBe('teardown.kill');
      expect(end.context.outcome).toBe('forced');
    });

    it('the first request failing still forces at once, as before', () => {
      const { snap, states } = run([error('requestStop', 'ECONNRESET: QMP closed')], start(qmpConfig));
      expect(states.at(-1)).toBe('teardown.kill');
      expect(snap.context.outcome).toBe('forced');
      expect(snap.context.errors).toEqual(['requestStop failed: ECONNRESET: QMP closed']);
      expect(snap.context.stopRequests).toBe(1);
    });

    it('a signal is sent once: the interval passing does not send it again', () => {
      const { snap, states, spawned } = run([done('requestStop'), REPEAT, REPEAT], start(config));
      expect(states).toEqual(['gracefulStop.vmm.requesting', 'gracefulStop.vmm.waiting', 'gracefulStop.vmm.waiting', 'gracefulStop.vmm.waiting']);
      expect(spawned).toEqual([]);
      expect(snap.context.stopRequests).toBe(1);
      expect(snap.context.reason).toBe('stop request 1 sent (signal SIGTERM)');
    });
  });

  it('a second stop request during the graceful stop forces it', () => {
    const { snap, states } = run([...SETUP, STOP, STOP]);
    expect(states.at(-1)).toBe('teardown.kill');
    expect(snap.context.outcome).toBe('forced');
  });

  it('a forced stop (SIGINT / second SIGTERM) in running skips the graceful stop', () => {
    const { states } = run([...SETUP, { type: 'STOP_REQUESTED', signal: 'SIGINT', force: true }]);
    expect(states.at(-1)).toBe('teardown.kill');
  });

  it('parent death during a graceful stop forces it; the reason is kept', () => {
    const { snap, states } = run([...SETUP, STOP, PARENT, done('killAll'), done('cleanup')]);
    expect(states.slice(-3)).toEqual(['teardown.kill', 'teardown.cleanup', 'stopped']);
    expect(snap.output).toMatchObject({ outcome: 'forced', exitCode: EXIT_CODES.forced, errors: ['supervisor died during graceful stop'] });
  });

  it.each(['setupNamespaces', 'mount', 'landlock', 'cgroup', 'launch'])('a stop request during setup.%s tears down and ends stopped', (state) => {
    const upTo = SETUP.slice(0, ['setupNamespaces', 'mount', 'landlock', 'cgroup', 'launch'].indexOf(state));
    const { snap, states } = run([...upTo, STOP, done('killAll'), done('cleanup')]);
    expect(states.at(-4)).toBe(`setup.${state}`);
    expect(states.slice(-3)).toEqual(['teardown.kill', 'teardown.cleanup', 'stopped']);
    expect(snap.output).toMatchObject({ outcome: 'stopped', exitCode: 0 });
  });

  it.each([
    ['setup.mount', SETUP.slice(0, 1)],
    ['running', SETUP],
  ] as const)('parent death in %s forces teardown and ends failed (exit 6)', (_state, before) => {
    const { snap, states } = run([...before, PARENT, done('killAll'), done('cleanup')]);
    expect(states.slice(-3)).toEqual(['teardown.kill', 'teardown.cleanup', 'failed']);
    expect(snap.output).toMatchObject({ outcome: 'parentDied', exitCode: EXIT_CODES.parentDied });
    expect(snap.context.errors.at(-1)).toMatch(/supervisor died/);
  });

  it.each([['createNamespaces', 0], ['mount', 1], ['prepareLandlock', 2], ['createCgroups', 3], ['launch', 4]] as const)(
    'a failed %s still kills and cleans up, then fails with its reason (exit 111)',
    (op, index) => {
      const { snap, states } = run([...SETUP.slice(0, index), error(op, 'EPERM: nope'), done('killAll'), done('cleanup')]);
      expect(states.slice(-3)).toEqual(['teardown.kill', 'teardown.cleanup', 'failed']);
      expect(snap.output).toMatchObject({ outcome: 'setupFailed', exitCode: EXIT_CODES.setupFailed });
      expect(snap.context.errors[0]).toContain('EPERM: nope');
    },
  );

  it('setup past setupMs is abandoned', () => {
    const { snap, states } = run([...SETUP.slice(0, 2), after('setupDeadline', 'setup')]);
    expect(states.at(-1)).toBe('teardown.kill');
    expect(snap.context.errors[0]).toMatch(/setup did not finish within 30000 ms/);
  });

  it('the vmm powering off by itself ends the VM with exit 3', () => {
    const { snap, states } = run([...SETUP, exited('vmm', 0), done('terminateServices'), done('killAll'), done('cleanup')]);
    expect(states.slice(-4)).toEqual(['gracefulStop.services', 'teardown.kill', 'teardown.cleanup', 'stopped']);
    expect(snap.output).toMatchObject({ outcome: 'poweredOff', exitCode: EXIT_CODES.poweredOff });
  });

  it('a crashing vmm is a crash (exit 4), with the signal in the reason', () => {
    const { snap } = run([...SETUP, exited('vmm', null, 'SIGSEGV'), done('terminateServices'), done('killAll'), done('cleanup')]);
    expect(snap.value).toBe('failed');
    expect(snap.output).toMatchObject({ outcome: 'serviceCrashed', exitCode: EXIT_CODES.serviceCrashed });
    expect(snap.context.errors[0]).toBe('vmm vmm killed by SIGSEGV');
  });

  it('a crashing service with onExit "stop" stops the VM gracefully', () => {
    const { snap, states } = run([...SETUP, exited('virtiofsd', 1)]);
    expect(states.at(-1)).toBe('gracefulStop.vmm.requesting');
    expect(snap.context.outcome).toBe('serviceCrashed');
  });

  it('a service with onExit "ignore" may exit; the VM keeps running', () => {
    const { snap, states } = run([...SETUP, exited('gpu', 0)]);
    expect(states.at(-1)).toBe('running');
    expect(snap.context.pids).toEqual({ virtiofsd: 43, vmm: 45 });
  });

  it('the init dying while running ends failed (exit 5)', () => {
    const { snap } = run([...SETUP, { type: 'INIT_EXITED', code: null, signal: 'SIGKILL' }, done('killAll'), done('cleanup')]);
    expect(snap.output).toMatchObject({ outcome: 'initDied', exitCode: EXIT_CODES.initDied });
  });

  it('a teardown that cannot finish is reported, not hidden (exit 7)', () => {
    const { snap } = run([...SETUP, STOP, exited('vmm'), done('terminateServices'), after('killDeadline', 'teardown.kill'), error('cleanup', 'EBUSY: rmdir')]);
    expect(snap.value).toBe('failed');
    expect(snap.output).toMatchObject({ teardownFailed: true, exitCode: EXIT_CODES.teardownFailed });
    expect(snap.context.errors).toEqual(['killAll did not finish within 2000 ms', 'cleanup failed: EBUSY: rmdir']);
  });

  it('requests during teardown are noted, not acted on twice', () => {
    const { snap, states } = run([...SETUP, STOP, after('timeoutKill', 'gracefulStop'), STOP, PARENT]);
    expect(states.slice(-3)).toEqual(['teardown.kill', 'teardown.kill', 'teardown.kill']);
    expect(snap.context.reason).toBe('supervisor died: already stopping');
  });

  it('requests during teardown.cleanup are noted too; a service exit during teardown.kill is recorded', () => {
    const killing = run([...SETUP, STOP, after('timeoutKill', 'gracefulStop'), exited('virtiofsd', null, 'SIGKILL')]);
    expect(killing.states.at(-1)).toBe('teardown.kill');
    expect(killing.snap.context.pids).toEqual({ gpu: 44, vmm: 45 });
    const { snap, states } = run([done('killAll'), STOP, PARENT, done('cleanup')], killing.snap);
    expect(states).toEqual(['teardown.kill', 'teardown.cleanup', 'teardown.cleanup', 'teardown.cleanup', 'stopped']);
    expect(snap.output).toMatchObject({ outcome: 'forced', exitCode: EXIT_CODES.forced, errors: [] });
  });

  // The log names each state: a clean stop must not read as a timeout (nor as s6's timeout-kill).
  it('a clean stop enters the teardown by the work finishing; only the graceful stop deadline is the timeout-kill', () => {
    const entered: string[] = [];
    let [snap] = initialTransition(sandboxMachine, { config, plan: planOf(config) });
    for (const ev of [...SETUP, STOP, exited('vmm'), done('terminateServices'), done('killAll'), done('cleanup')]) {
      const before = stateString(snap.value);
      [snap] = transition(sandboxMachine, snap, ev);
      if (!before.startsWith('teardown') && stateString(snap.value).startsWith('teardown')) entered.push(ev.type);
    }
    expect(entered).toEqual(['xstate.done.actor.terminateServices']);

    const named = (n: { after: { eventType: string; target?: readonly { id: string }[]; description?: string }[]; states: object }): { from: string; to: string; description?: string }[] => [
      ...n.after.filter((t) => /timeout.?kill/i.test(t.eventType)).map((t) => ({ from: t.eventType, to: t.target![0]!.id, description: t.description })),
      ...Object.values(n.states).flatMap((c) => named(c as typeof n)),
    ];
    expect(named(sandboxMachine.root as never)).toEqual([
      { from: 'xstate.after.timeoutKill.vmsandbox.gracefulStop', to: 'vmsandbox.teardown', description: expect.stringMatching(/^timeout-kill: .*stopMs/) },
    ]);
    expect(sandboxMachine.implementations.delays.timeoutKill).toBeTypeOf('function');
    const delay = sandboxMachine.implementations.delays.timeoutKill as (a: { context: { config: VmConfig } }) => number;
    expect(delay({ context: { config } })).toBe(config.timeouts.stopMs);
  });
});
