// Real-kernel benchmark of the Linux backend (root): per-operation latency, setup to running and
// stop to stopped through the real machine. Run: `make -C native && npx tsc -p . && node dist/bench/linux.js [runs]`.

import { mkdtempSync, rmSync, rmdirSync } from 'node:fs';
import { createActor } from 'xstate';
import type { ServiceConfig, VmConfig } from '../config/types.js';
import { createLinuxBackend } from '../effects/linux/backend.js';
import type { SandboxEffects } from '../effects/port.js';
import { bindEffects } from '../machines/bindBackend.js';
import { findCgroup2Mount } from '../effects/linux/cgroup.js';

function svc(name: string, vmm: boolean): ServiceConfig {
  return {
    name, argv: ['/bin/sleep', '1000'], env: {}, uid: 62001, gid: 62001, groups: [], vmm, storage: 'rw', tmp: '16M', shm: '16M',
    landlock: { read: ['/usr', '/bin', '/lib', '/lib64', '/etc'], write: [] }, limits: {}, caps: [], devices: [],
    stop: { signal: 'SIGTERM' }, onExit: 'ignore',
  };
}

function timed(effects: SandboxEffects, times: Map<string, number[]>): SandboxEffects {
  const out = {} as Record<string, unknown>;
  for (const [k, fn] of Object.entries(effects) as Array<[string, (i: never, s: AbortSignal) => Promise<unknown>]>) {
    out[k] = async (i: never, s: AbortSignal) => {
      const t = performance.now();
      try {
        return await fn(i, s);
      } finally {
        const list = times.get(k) ?? [];
        list.push(performance.now() - t);
        times.set(k, list);
      }
    };
  }
  return out as unknown as SandboxEffects;
}

function stats(xs: number[]): string {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))]!.toFixed(2);
  return `median ${q(0.5)} ms, p90 ${q(0.9)} ms, max ${s[s.length - 1]!.toFixed(2)} ms (n=${s.length})`;
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('bench/linux needs root');
  const runs = Number(process.argv[2] ?? 20);
  const times = new Map<string, number[]>();
  for (let i = 0; i < runs; i++) {
    const storage = mkdtempSync('/tmp/vmsandbox-bench-');
    const config: VmConfig = {
      name: `vmsandbox-bench-${process.pid}-${i}`, storage, runtimeDir: `/run/vmsandbox-bench/${i}`,
      timeouts: { setupMs: 10_000, stopMs: 5000, killMs: 5000 },
      cgroup: { parent: 'vmsandbox-bench', limits: {}, limitsOptional: true },
      landlock: { minAbi: 1, allowDegraded: false },
      services: [svc('virtiofsd', false), svc('vmm', true)],
    };
    const backend = createLinuxBackend(config);
    const actor = createActor(bindEffects(timed(backend.effects, times)), { input: { config } });
    const sub = backend.events$.subscribe((e) => actor.send(e));
    const t0 = performance.now();
    let tRunning = 0;
    const done = new Promise<void>((resolve) => {
      actor.subscribe((s) => {
        if (!tRunning && s.matches('running')) {
          tRunning = performance.now();
          (times.get('setup to running') ?? times.set('setup to running', []).get('setup to running')!).push(tRunning - t0);
          actor.send({ type: 'STOP_REQUESTED', signal: 'SIGTERM', force: false });
        }
        if (s.status === 'done') {
          (times.get('stop to stopped') ?? times.set('stop to stopped', []).get('stop to stopped')!).push(performance.now() - tRunning);
          if ((s.output as { outcome?: string } | undefined)?.outcome !== 'stopped') console.error('unexpected outcome', s.output);
          resolve();
        }
      });
    });
    actor.start();
    await done;
    sub.unsubscribe();
    rmSync(storage, { recursive: true, force: true });
  }
  rmdirSync(`${findCgroup2Mount()}/vmsandbox-bench`);
  rmdirSync('/run/vmsandbox-bench');
  for (const [k, v] of times) console.log(`${k.padEnd(18)} ${stats(v)}`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
