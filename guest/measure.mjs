#!/usr/bin/env node
// Boot time and memory of the real VM inside the sandbox versus the same virtiofsd + QEMU commands
// run directly as root, alternating, in one run (docs/vm.md has the numbers).
//
//   node guest/measure.mjs [reps=3]          (root; after `npm run build` and guest/build.sh)
//
// Boot time: from spawning the first process (vmsandbox run / virtiofsd) until the guest's
// "booted" marker appears in the storage (written through virtiofs after the power button is
// armed). RSS (VmRSS) of every process, sampled once the guest has booted. Stop: SIGTERM to the
// manager (→ QMP system_powerdown) / system_powerdown sent directly, until everything has exited.

import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { makeVmConfig } from '../examples/vm/make-config.mjs';

const repo = join(import.meta.dirname, '..');
const reps = Number(process.argv[2] ?? 3);
const guest = execFileSync('sh', [join(repo, 'guest', 'build.sh')], { encoding: 'utf8' }).trim().split('\n').at(-1);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(cond, timeoutMs = 180_000) {
  for (const t0 = Date.now(); Date.now() - t0 < timeoutMs; await sleep(20)) if (cond()) return;
  throw new Error('timeout');
}
const rss = (pid) => Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
const cg2 = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => / - cgroup2 /.test(l))?.split(' ')[4];
const procs = (dir) => readFileSync(join(dir, 'cgroup.procs'), 'utf8').trim().split('\n').filter(Boolean).map(Number);
const exited = (child) => new Promise((r) => (child.exitCode !== null ? r(child.exitCode) : child.on('exit', (c) => r(c))));

async function qmpPowerdown(path) {
  await new Promise((resolve, reject) => {
    const s = connect({ path });
    let n = 0;
    s.on('data', (d) => {
      for (const line of d.toString().split('\n').filter(Boolean)) {
        const m = JSON.parse(line);
        if (m.QMP) s.write('{"execute":"qmp_capabilities"}\n');
        else if ('return' in m && n++ === 0) s.write('{"execute":"system_powerdown"}\n');
        else if ('return' in m) { s.end(); resolve(); }
      }
    });
    s.on('error', reject);
  });
}

async function sandboxed(i) {
  const name = `vmmeasure${i}`;
  const storage = mkdtempSync('/tmp/vmsandbox-measure-');
  const runtimeDir = `/run/vmsandbox-measure/${name}`;
  const cfg = makeVmConfig({ name, storage, runtimeDir, guest, cgroupParent: 'vmsandbox-measure' });
  const file = join(storage, '..', `${name}.json`);
  writeFileSync(file, JSON.stringify(cfg));
  const t0 = performance.now();
  const m = spawn(join(repo, 'bin', 'vmsandbox'), ['run', file], { stdio: 'ignore' });
  await until(() => existsSync(join(storage, 'guest-booted')));
  const boot = performance.now() - t0;
  const vmcg = join(cg2, 'vmsandbox-measure', name);
  const mem = {
    manager: rss(m.pid),
    init: procs(join(vmcg, 'init')).reduce((a, p) => a + rss(p), 0),
    virtiofsd: procs(join(vmcg, 'svc-virtiofsd')).reduce((a, p) => a + rss(p), 0),
    qemu: procs(join(vmcg, 'svc-vmm')).reduce((a, p) => a + rss(p), 0),
  };
  const s0 = performance.now();
  m.kill('SIGTERM');
  const code = await exited(m);
  const stop = performance.now() - s0;
  const guestUptime = Number(readFileSync(join(storage, 'guest-booted'), 'utf8').split(' ')[1]);
  rmSync(storage, { recursive: true, force: true });
  rmSync(file, { force: true });
  return { boot, guestUptime, stop, code, mem };
}

async function direct(i) {
  const storage = mkdtempSync('/tmp/vmsandbox-measure-');
  const rt = mkdtempSync('/tmp/vmsandbox-measure-rt-');
  const cfg = makeVmConfig({ name: `direct${i}`, storage, runtimeDir: rt, guest });
  const [fsd, vmm] = cfg.services;
  execFileSync('mkdir', ['-p', join(rt, 'vmm')]);
  const sock = fsd.sockets[0].path;
  const t0 = performance.now();
  // The same virtiofsd command, its listening socket created the same way (bound, listening, at fd 3).
  const v = spawn('/usr/bin/python3', ['-c',
    `import os, socket, sys\ns = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(16)\nif s.fileno() != 3: os.dup2(s.fileno(), 3)\nos.set_inheritable(3, True)\nos.execv(sys.argv[2], sys.argv[2:])`,
    sock, ...fsd.argv], { stdio: 'ignore' });
  await until(() => existsSync(sock), 10_000);
  const q = spawn(vmm.argv[0], vmm.argv.slice(1), { stdio: 'ignore' });
  await until(() => existsSync(join(storage, 'guest-booted')));
  const boot = performance.now() - t0;
  const mem = { virtiofsd: rss(v.pid), qemu: rss(q.pid) };
  const s0 = performance.now();
  await qmpPowerdown(vmm.stop.qmp);
  const code = await exited(q);
  await exited(v);
  const stop = performance.now() - s0;
  const guestUptime = Number(readFileSync(join(storage, 'guest-booted'), 'utf8').split(' ')[1]);
  rmSync(storage, { recursive: true, force: true });
  rmSync(rt, { recursive: true, force: true });
  return { boot, guestUptime, stop, code, mem };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const rows = { sandboxed: [], direct: [] };
for (let i = 0; i < reps; i++) {
  rows.direct.push(await direct(i));
  rows.sandboxed.push(await sandboxed(i));
  console.log(JSON.stringify({ rep: i, direct: rows.direct.at(-1), sandboxed: rows.sandboxed.at(-1) }));
}
for (const [k, r] of Object.entries(rows)) {
  const fmt = (xs) => `median ${median(xs).toFixed(0)} ms (${xs.map((x) => x.toFixed(0)).join(', ')})`;
  console.log(`${k}: boot ${fmt(r.map((x) => x.boot))}; guest uptime at marker median ${median(r.map((x) => x.guestUptime)).toFixed(2)} s; ` +
    `stop ${fmt(r.map((x) => x.stop))}; exit ${r.map((x) => x.code).join(',')}; ` +
    `RSS MiB ${Object.keys(r[0].mem).map((p) => `${p} ${median(r.map((x) => x.mem[p])).toFixed(1)}`).join(', ')}`);
}
try { execFileSync('rmdir', [join(cg2, 'vmsandbox-measure'), '/run/vmsandbox-measure']); } catch { /* absent or busy */ }
