// The plan's operations as record lines. Each backend appends one line per operation it executes
// (LinuxBackend.executed, SimBackend.executed), built by these functions only, so two backends
// that executed the same plan have equal records (test/plan-equivalence.test.ts), and both equal
// setupOperations(plan) after a complete setup.

import { describeOp, type MountOp } from './mounts.js';
import type { DirPlan, LimitWrite, NamespacesPlan, SandboxPlan, ServicePlan } from './types.js';

export const line = {
  cgroupDir: (rel: string) => `cgroup mkdir ${rel}`,
  init: (rel: string, ns: NamespacesPlan) =>
    `init clone into ${rel} ns pid,mnt${ns.clone.map((n) => `,${n}`).join('')}${ns.loopback ? ' lo up' : ''}`,
  runtimeDir: (path: string) => `dir ${path} 711 0:0`,
  dir: (d: DirPlan) => `dir ${d.path} ${d.mode.toString(8)} ${d.uid}:${d.gid}`,
  mount: (op: MountOp) => `mount ${describeOp(op)}`,
  landlock: (l: SandboxPlan['landlock']) => `landlock abi ${l.abi}${l.degraded.length ? ` degraded ${l.degraded.join(', ')}` : ''}`,
  limit: (w: LimitWrite) => `limit ${w.cgroup} ${w.key}=${w.value}`,
  spawn: (s: ServicePlan) =>
    [
      `spawn ${s.name} uid ${s.uid} gid ${s.gid} groups [${s.groups.join(',')}] caps [${s.caps.join(',')}] securebits ${s.securebits}`,
      `cgroup ${s.cgroup} storage ${JSON.stringify(s.storage)} tmpfs [${s.tmpfs.map((t) => `${t.path} ${t.flags} ${t.data}`).join('; ')}]`,
      `sockets [${s.sockets.map((k) => `${k.fd}:${k.path}`).join(',')}]`,
      `landlock ${s.landlock ? JSON.stringify(s.landlock) : 'none'} seccomp ${s.seccomp ? JSON.stringify(s.seccomp) : 'none'} argv ${JSON.stringify(s.argv)}`,
    ].join(' '),
};

/** Every setup operation of the plan, in the order a complete setup executes them. */
export function setupOperations(plan: SandboxPlan): string[] {
  return [
    line.cgroupDir(plan.cgroup.init),
    line.init(plan.cgroup.init, plan.namespaces),
    line.runtimeDir(plan.runtimeDir),
    ...plan.dirs.map(line.dir),
    ...plan.mounts.map(line.mount),
    line.landlock(plan.landlock),
    line.cgroupDir(plan.cgroup.vm),
    ...plan.cgroup.leaves.map(line.cgroupDir),
    ...plan.cgroup.limits.map(line.limit),
    ...plan.services.map(line.spawn),
  ];
}
