// The status socket: hello with the history so far, live records to every client, clients that
// leave, cgroup counters, the socket's mode, and its removal on close.

import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { findStatusSockets, followStatus, publishStatus, startStatus, type StatusPublisher } from '../../visualizer/statusSocket.js';
import type { TransitionRecord } from '../../machines/observe.js';
import { OUTPUT_KEPT, OUTPUT_TEXT_MAX, type HelloMessage, type StatusMessage } from '../../visualizer/protocol.js';
import { demoConfig, tempRoot } from './helpers.js';

const rec = (state: string, over: Partial<TransitionRecord> = {}): TransitionRecord => ({
  state,
  event: 'xstate.init',
  reason: null,
  outcome: null,
  errors: 0,
  services: {},
  ...over,
});

interface Client {
  messages: StatusMessage[];
  waitFor(n: number): Promise<StatusMessage[]>;
  close(): void;
  closed: Promise<void>;
}

function client(path: string): Client {
  const messages: StatusMessage[] = [];
  let wake: (() => void) | null = null;
  const c = followStatus(path, (m) => {
    messages.push(m);
    wake?.();
  });
  return {
    messages,
    close: c.close,
    closed: c.closed,
    async waitFor(n) {
      const deadline = Date.now() + 3000;
      while (messages.length < n) {
        if (Date.now() > deadline) throw new Error(`got ${messages.length} messages, wanted ${n}: ${JSON.stringify(messages)}`);
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, 50);
        });
      }
      return messages;
    },
  };
}

const until = async (cond: () => boolean) => {
  for (let i = 0; i < 100 && !cond(); i++) await new Promise((r) => setTimeout(r, 20));
  expect(cond()).toBe(true);
};

let pub: StatusPublisher | null = null;
afterEach(async () => {
  await pub?.close();
  pub = null;
});

describe('status socket', () => {
  it('started before it listens (as run starts it): keeps what comes first for the first client, and closes cleanly either way', async () => {
    const root = tempRoot();
    const config = demoConfig(root);
    const status = startStatus({ config, cgroupRoot: null });
    pub = status;
    // Setup's records and events arrive before there is any socket.
    status.record(rec('setup.setupNamespaces'), 0);
    status.event({ type: 'SERVICE_EXITED', service: 'vmm', pid: 7, code: 0, signal: null }, 1);
    expect(status.path).toBeNull();
    expect(existsSync(join(config.runtimeDir, 'status.sock'))).toBe(false);
    await Promise.all([status.listen(), status.listen()]); // once, however often asked
    expect(status.path).toBe(join(config.runtimeDir, 'status.sock'));
    const a = client(status.path!);
    const [hello] = await a.waitFor(1);
    const h = hello as HelloMessage;
    expect(h.history.map((r) => r.state)).toEqual(['setup.setupNamespaces']);
    expect(h.events.map((e) => e.event.type)).toEqual(['SERVICE_EXITED']);
    expect(h.graph.nodes.length).toBeGreaterThan(5); // drawn for this first client
    a.close();
    // One that never listened closes too, and leaves no socket.
    const never = startStatus({ config: { ...config, runtimeDir: join(root, 'never') }, cgroupRoot: null });
    never.record(rec('setup.setupNamespaces'), 0);
    await never.close();
    await never.listen();
    expect(never.path).toBeNull();
    expect(existsSync(join(root, 'never', 'status.sock'))).toBe(false);
  });

  it('greets with the config, the graph and the history, then streams records to every client', async () => {
    const root = tempRoot();
    const config = demoConfig(root);
    pub = await publishStatus({ config, cgroupRoot: null });
    expect(pub.path).toBe(join(config.runtimeDir, 'status.sock'));
    expect(await findStatusSockets([root, join(root, 'missing')])).toEqual([pub.path]);
    pub.record(rec('setup.setupNamespaces'), 0);
    pub.record(rec('setup.mount', { event: 'xstate.done.actor.createNamespaces' }), 1);

    const a = client(pub.path!);
    const [hello] = await a.waitFor(1);
    expect(hello!.type).toBe('hello');
    const h = hello as HelloMessage;
    expect(h.vm).toBe('demo');
    expect(h.pid).toBe(process.pid);
    expect(h.config.services.map((s) => s.name)).toEqual(['virtiofsd', 'vmm']);
    expect(h.graph.nodes.map((n) => n.id)).toContain('gracefulStop.vmm');
    expect(h.history.map((r) => [r.seq, r.state, r.label, r.at])).toEqual([
      [0, 'setup.setupNamespaces', 'xstate.init', 0],
      [1, 'setup.mount', 'done: createNamespaces', 1],
    ]);

    const b = client(pub.path!);
    await b.waitFor(1);
    await until(() => pub!.clients === 2);
    pub.record(rec('running', { services: { virtiofsd: 301, vmm: 302 } }), 10);
    pub.event({ type: 'STOP_REQUESTED', signal: 'SIGTERM', force: false }, 20);
    for (const c of [a, b]) {
      const ms = await c.waitFor(3);
      expect(ms[1]).toMatchObject({ type: 'record', seq: 2, state: 'running', at: 10 });
      expect((ms[1] as { services: unknown[] }).services).toEqual([
        { name: 'virtiofsd', pid: 301, uid: 62001, gid: 62001, vmm: false, cgroup: 'vmsandbox/demo/svc-virtiofsd' },
        { name: 'vmm', pid: 302, uid: 62002, gid: 62002, vmm: true, cgroup: 'vmsandbox/demo/svc-vmm' },
      ]);
      expect(ms[2]).toMatchObject({ type: 'event', at: 20, event: { type: 'STOP_REQUESTED', signal: 'SIGTERM' } });
    }

    // a client that leaves does not disturb the others
    a.close();
    await until(() => pub!.clients === 1);
    pub.record(rec('teardown.kill', { event: 'xstate.error.actor.requestStop', reason: 'stop failed', errors: 1 }), 30);
    const ms = await b.waitFor(4);
    expect(ms[3]).toMatchObject({ type: 'record', state: 'teardown.kill', failure: true, reason: 'stop failed' });

    // a late client gets everything so far in its hello
    const c = client(pub.path!);
    const [h2] = await c.waitFor(1);
    expect((h2 as HelloMessage).history.map((r) => r.state)).toEqual(['setup.setupNamespaces', 'setup.mount', 'running', 'teardown.kill']);
    expect((h2 as HelloMessage).events.map((e) => e.event.type)).toEqual(['STOP_REQUESTED']);

    // close: bye to everyone, connections end, socket removed
    const path = pub.path!;
    await pub.close();
    pub = null;
    await Promise.all([b.closed, c.closed]);
    expect(b.messages[b.messages.length - 1]!.type).toBe('bye');
    expect(existsSync(path)).toBe(false);
    expect(await findStatusSockets([root])).toEqual([]);
  });

  it('carries each service\'s recent output: the last OUTPUT_KEPT entries per service in hello, each new one live', async () => {
    const root = tempRoot();
    const config = demoConfig(root);
    pub = await publishStatus({ config, cgroupRoot: null });
    for (let i = 0; i < OUTPUT_KEPT + 50; i++) pub.output({ type: 'line', service: 'vmm', stream: 'stdout', line: `vmm line ${i}`, cut: false }, i);
    pub.output({ type: 'line', service: 'virtiofsd', stream: 'stderr', line: 'x'.repeat(OUTPUT_TEXT_MAX + 10), cut: true }, 1);
    pub.output({ type: 'dropped', service: 'virtiofsd', count: 4821, reason: 'rate' }, 2);
    const a = client(pub.path!);
    const h = (await a.waitFor(1))[0] as HelloMessage;
    const vmm = h.output.vmm!;
    expect(vmm).toHaveLength(OUTPUT_KEPT);
    expect(vmm[0]).toMatchObject({ stream: 'stdout', line: 'vmm line 50', at: 50 });
    expect(vmm.at(-1)).toMatchObject({ stream: 'stdout', line: `vmm line ${OUTPUT_KEPT + 49}` });
    expect(vmm[0]).not.toHaveProperty('cut');
    expect(h.output.virtiofsd).toEqual([
      { time: expect.any(String), at: 1, stream: 'stderr', line: 'x'.repeat(OUTPUT_TEXT_MAX), cut: true },
      { time: expect.any(String), at: 2, dropped: 4821, reason: 'rate' },
    ]);
    // live: one message per entry, to every client
    pub.output({ type: 'line', service: 'vmm', stream: 'stderr', line: '<b>not markup</b>', cut: false }, 300);
    pub.output({ type: 'dropped', service: 'vmm', stream: 'stdout', count: 3, reason: 'socket' }, 301);
    const ms = await a.waitFor(3);
    expect(ms[1]).toEqual({ type: 'output', service: 'vmm', time: expect.any(String), at: 300, stream: 'stderr', line: '<b>not markup</b>' });
    expect(ms[2]).toEqual({ type: 'output', service: 'vmm', time: expect.any(String), at: 301, stream: 'stdout', dropped: 3, reason: 'socket' });
    // still bounded for the next hello
    const b = client(pub.path!);
    const h2 = (await b.waitFor(1))[0] as HelloMessage;
    expect(h2.output.vmm).toHaveLength(OUTPUT_KEPT);
    expect(h2.output.vmm!.at(-1)).toMatchObject({ dropped: 3 });
  });

  it('is a 0600 socket, and nothing else is left in the runtime dir', async () => {
    const root = tempRoot();
    const config = demoConfig(root);
    pub = await publishStatus({ config, cgroupRoot: null });
    const st = statSync(pub.path!);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o600);
    expect(st.uid).toBe(process.getuid!());
    const { readdirSync } = await import('node:fs');
    expect(readdirSync(config.runtimeDir)).toEqual(['status.sock']);
  });

  it('reads memory.current and pids.current of each service leaf when they exist', async () => {
    const root = tempRoot();
    const config = demoConfig(root);
    const cg = join(root, 'cgroup');
    mkdirSync(join(cg, 'vmsandbox/demo/svc-vmm'), { recursive: true });
    writeFileSync(join(cg, 'vmsandbox/demo/svc-vmm/memory.current'), '1048576\n');
    writeFileSync(join(cg, 'vmsandbox/demo/svc-vmm/pids.current'), '7\n');
    pub = await publishStatus({ config, cgroupRoot: cg, sampleMs: 50 });
    pub.record(rec('running', { services: { virtiofsd: 301, vmm: 302 } }), 10);
    const a = client(pub.path!);
    const [hello] = await a.waitFor(1);
    const services = (hello as HelloMessage).history[0]!.services;
    expect(services.find((s) => s.name === 'vmm')).toMatchObject({ memoryCurrent: 1048576, pidsCurrent: 7 });
    expect(services.find((s) => s.name === 'virtiofsd')).not.toHaveProperty('memoryCurrent');
    // a changed counter is sampled to connected clients
    writeFileSync(join(cg, 'vmsandbox/demo/svc-vmm/pids.current'), '9\n');
    const ms = await a.waitFor(2);
    expect(ms[1]).toMatchObject({ type: 'services' });
    expect((ms[1] as { services: { pidsCurrent?: number }[] }).services[1]!.pidsCurrent).toBe(9);
  });

  it('replaces a stale socket left by a killed manager, and a failure to publish never throws', async () => {
    const root = tempRoot();
    const config = demoConfig(root);
    const first = await publishStatus({ config, cgroupRoot: null });
    const second = await publishStatus({ config, cgroupRoot: null });
    const a = client(second.path!);
    expect((await a.waitFor(1))[0]!.type).toBe('hello');
    await first.close(); // the older one must not remove the newer one's socket
    expect(existsSync(second.path!)).toBe(true);
    await second.close();
    writeFileSync(join(root, 'file'), '');
    const logs: string[] = [];
    const broken = await publishStatus({ config: { ...config, runtimeDir: join(root, 'file', 'x') }, cgroupRoot: null, log: (m) => logs.push(m) });
    expect(broken.path).toBeNull();
    expect(logs[0]).toMatch(/cannot publish/);
    broken.record(rec('running'));
    await broken.close();
  });

  it.skipIf(process.getuid?.() !== 0)('refuses a non-root uid (a service) while root connects', async () => {
    const root = tempRoot();
    chmodSync(root, 0o755); // only the socket's own mode may stand in the way
    const config = demoConfig(root);
    pub = await publishStatus({ config, cgroupRoot: null });
    const script = `const s=require('net').connect(${JSON.stringify(pub.path)});s.on('connect',()=>{console.log('connected');process.exit(0)});s.on('error',(e)=>{console.log(e.code);process.exit(0)})`;
    const out = await new Promise<string>((resolve, reject) => {
      const child = spawn(process.execPath, ['-e', script], { uid: 62001, gid: 62001, stdio: ['ignore', 'pipe', 'inherit'] });
      let o = '';
      child.stdout.on('data', (d: Buffer) => (o += d.toString()));
      child.on('error', reject);
      child.on('exit', () => resolve(o.trim()));
    });
    expect(out).toBe('EACCES');
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(pub!.path!);
      s.on('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    expect(ok).toBe(true);
  });
});
