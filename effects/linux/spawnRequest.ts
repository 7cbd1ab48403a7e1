// The `spawn` request to the sandbox init for one service: its plan (plan/service.ts) encoded as
// the init's key=value fields (see spawn_parse in native/spawn.c). Encoding only: every
// decision was made by the plan.
//
// Landlock (plan/landlock.ts) is on when `llfs=` is present; masks and flags are hex:
//   llfs=<handled_access_fs> llscope=<scoped> llflags=<restrict_self flags>
//   llfile=<rights a rule keeps on a non-directory> rule=<allowed_access>,<path>*
//   llnet=<handled_access_net> port=<allowed_access>,<decimal port>*   (network "host" only)

import type { ServicePlan } from '../../plan/types.js';
import { SERVICE_OUTPUT } from '../../plan/output.js';

export function spawnFields(s: ServicePlan): string[] {
  const f: string[] = [
    `name=${s.name}`,
    `leaf=${s.leaf}`,
    `uid=${s.uid}`,
    `gid=${s.gid}`,
    ...s.groups.map((g) => `group=${g}`),
    ...s.caps.map((c) => `cap=${c}`),
    ...(s.securebits ? [`secbits=${s.securebits}`] : []),
    ...s.sockets.map((k) => `listen=${k.fd},${k.mode.toString(8)},${k.gid},${k.backlog},${k.path}`),
    `storagepath=${s.storage.path}`,
    ...(s.storage.bind ? [`storagebind=${s.storage.bind.set.toString(16)},${s.storage.bind.clr.toString(16)}`] : []),
    ...(s.storage.hide ? [`storagehide=${s.storage.hide.flags.toString(16)},${s.storage.hide.data}`] : []),
    ...s.keep.map((p) => `keep=${p}`),
    `view=${s.view.flags.toString(16)},${s.view.data}`,
    `viewpath=${s.view.path}`,
    ...s.view.show.map((p) => `show=${p}`),
  ];
  for (const t of s.tmpfs) f.push(`${t.path === '/tmp' ? 'tmp' : 'shm'}=${t.flags.toString(16)},${t.data}`);
  const ll = s.landlock;
  if (ll) {
    f.push(`llfs=${hex(ll.handledFs)}`, `llscope=${hex(ll.scoped)}`, `llflags=${hex(ll.restrictFlags)}`, `llfile=${hex(ll.fileAccess)}`);
    f.push(...ll.rules.map((r) => `rule=${hex(r.access)},${r.path}`));
    if (ll.handledNet) f.push(`llnet=${hex(ll.handledNet)}`, ...ll.ports.map((p) => `port=${hex(p.access)},${p.port}`));
  }
  // seccomp (plan/seccomp.ts): one `sc=` per rule, by syscall name (the init resolves it for its
  // architecture): sc=<name>,<errno> or, with an argument condition, sc=<name>,<errno>,<arg
  // index>,ne,<value hex> | sc=<name>,<errno>,<arg index>,me,<mask hex>,<value hex> (masked equal).
  for (const r of s.seccomp?.rules ?? []) {
    const a = r.arg;
    const cond = !a ? '' : a.op === 'ne' ? `,${a.index},ne,${hex(a.value)}` : `,${a.index},me,${hex(a.mask)},${hex(a.value)}`;
    f.push(`sc=${r.syscall},${r.errno}${cond}`);
  }
  f.push(...s.argv.map((a) => `arg=${a}`));
  f.push(...s.env.map(([k, v]) => `env=${k}=${v}`));
  // stdout/stderr are pipes the init reads and forwards line by line; a longer line is cut here.
  f.push(`outline=${SERVICE_OUTPUT.lineBytes}`);
  // At most this many lines a second per service leave the init; the rest are only counted.
  f.push(`outrate=${SERVICE_OUTPUT.linesPerSecond}`);
  return f;
}

function hex(n: number): string {
  return n.toString(16);
}
