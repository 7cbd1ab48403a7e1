#!/usr/bin/env node
// `npm run test:lab`: the kernel lab (docs/lab.md). Boots the Debian guest kernel under QEMU with
// the host's root shared read-only over 9p (a tmpfs overlay on top), cgroup2 with every controller,
// and runs inside the guest the real-kernel tests this host cannot run: test/linux/limits.test.ts
// and test/lab/*.test.ts (or the files given as arguments). Prints the guest's output as it comes
// and exits with the guest's vitest exit code; non-zero if the guest never reported one.
//
//   node lab/run.mjs [test files...]      (npm run test:lab builds the project first)
//
// Results under test-output/lab/: console.log (the guest's serial console), output.log (vitest's
// output), vitest.json (vitest's JSON report), exit-code, job.sh (what the guest ran).
// Environment: VMSANDBOX_LAB_TIMEOUT_S (default 900), VMSANDBOX_LAB_ACCEL (auto|kvm|tcg).

import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync, readSync, rmSync, writeFileSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { kvmUsable } from '../examples/vm/make-config.mjs';

const repo = join(import.meta.dirname, '..');
if (/\s/.test(repo)) {
  console.error(`test:lab: FAILED: the project's path ${JSON.stringify(repo)} has white space; the guest's kernel command line cannot carry it`);
  process.exit(1);
}
const out = join(repo, 'test-output', 'lab');
const QEMU = 'qemu-system-x86_64';
const t0 = Date.now();
const secs = () => ((Date.now() - t0) / 1000).toFixed(1);

function skip(reason) {
  console.log(`\n*** test:lab SKIPPED: ${reason} — no kernel-lab test ran ***\n`);
  process.exit(0);
}

function which(cmd) {
  for (const d of (process.env.PATH ?? '/usr/bin:/bin').split(':')) if (existsSync(join(d, cmd))) return join(d, cmd);
  return null;
}

if (process.platform !== 'linux' || process.arch !== 'x64') skip(`needs Linux on x86_64 (this is ${process.platform}/${process.arch})`);
if (process.getuid() !== 0) skip('not root (the guest runs the real-kernel tests as root over the host root)');
const qemu = which(QEMU);
if (!qemu) skip(`no ${QEMU} (apt-get install qemu-system-x86)`);
if (!execFileSync(qemu, ['-device', 'help'], { encoding: 'utf8' }).includes('virtio-9p-pci')) skip(`${qemu} has no virtio-9p-pci (-virtfs)`);
for (const f of ['dist', 'native/build/vmsandbox-init']) if (!existsSync(join(repo, f))) skip(`${f} missing: run npm run build first`);

const files = process.argv.slice(2).length ? process.argv.slice(2) : ['test/linux/limits.test.ts', 'test/lab'];
const accelWanted = process.env.VMSANDBOX_LAB_ACCEL ?? 'auto';
const accel = accelWanted === 'auto' ? (kvmUsable() ? 'kvm' : 'tcg') : accelWanted;
const timeoutS = Number(process.env.VMSANDBOX_LAB_TIMEOUT_S ?? 900);

console.log(`test:lab: building the lab guest (lab/build.sh)…`);
const guest = execFileSync('sh', [join(repo, 'lab', 'build.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim().split('\n').pop();

mkdirSync(out, { recursive: true });
for (const f of ['console.log', 'output.log', 'vitest.json', 'exit-code', 'job.sh']) rmSync(join(out, f), { force: true });
const q = (s) => `'${s.replaceAll("'", "'\\''")}'`;
writeFileSync(
  join(out, 'job.sh'),
  [
    '# Written by lab/run.mjs; run by the lab guest (lab/init.sh) as root, with the host root as its root.',
    `cd ${q(repo)} || exit 1`,
    'export VMSANDBOX_LAB=1',
    'echo "lab: kernel $(uname -r), cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers), LSMs: $(cat /sys/kernel/security/lsm)"',
    '# The manager (vitest, which runs the machine in process) in its own cgroup, so its memory.current exists.',
    'echo "+memory +pids +cpu" > /sys/fs/cgroup/cgroup.subtree_control',
    'mkdir -p /sys/fs/cgroup/lab-manager && echo $$ > /sys/fs/cgroup/lab-manager/cgroup.procs',
    `node node_modules/vitest/vitest.mjs run --reporter=default --reporter=json --outputFile.json=/run/lab/results/vitest.json ${files.map(q).join(' ')}`,
    'echo $? > /run/lab/results/exit-code',
    '',
  ].join('\n'),
);

const args = [
  '-machine', `q35,accel=${accel}`, '-cpu', accel === 'kvm' ? 'host' : 'max', '-smp', '2', '-m', '2048',
  '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
  '-kernel', join(guest, 'vmlinux'), '-initrd', join(guest, 'initrd.img'),
  // vmsandbox.lab.repo: lab/init.sh keeps the project visible if /tmp's fresh tmpfs would cover it.
  '-append', `console=ttyS0 panic=-1 cgroup_no_v1=all quiet vmsandbox.lab.repo=${repo}`,
  '-virtfs', 'local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap',
  '-virtfs', `local,path=${out},mount_tag=results,security_model=none`,
  '-serial', `file:${join(out, 'console.log')}`,
];
console.log(`test:lab: booting ${guest} under QEMU (${accel}, 2 CPUs, 2 GiB), running ${files.join(' ')}; timeout ${timeoutS} s`);
const child = spawn(qemu, args, { stdio: ['ignore', 'inherit', 'inherit'] });

// Follow the console as it is written.
let pos = 0;
const follow = () => {
  try {
    const fd = openSync(join(out, 'console.log'), 'r');
    const buf = Buffer.alloc(65536);
    let n;
    while ((n = readSync(fd, buf, 0, buf.length, pos)) > 0) {
      process.stdout.write(buf.subarray(0, n));
      pos += n;
    }
    closeSync(fd);
  } catch {
    /* not yet there */
  }
};
const tick = setInterval(follow, 500);
let timedOut = false;
const timer = setTimeout(() => {
  timedOut = true;
  console.log(`\ntest:lab: the guest did not finish within ${timeoutS} s: killing QEMU`);
  child.kill('SIGKILL');
}, timeoutS * 1000);
const onSignal = (sig) => {
  child.kill('SIGKILL');
  console.log(`\ntest:lab: ${sig}: QEMU killed`);
};
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);
const qemuExit = await new Promise((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal)));
clearTimeout(timer);
clearInterval(tick);
follow();

const codeFile = join(out, 'exit-code');
const code = existsSync(codeFile) ? Number(readFileSync(codeFile, 'utf8').trim()) : null;
let summary = '';
try {
  const r = JSON.parse(readFileSync(join(out, 'vitest.json'), 'utf8'));
  summary = `${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests + (r.numTodoTests ?? 0)} skipped of ${r.numTotalTests} tests`;
} catch {
  summary = 'no vitest report';
}
console.log(`\ntest:lab: ${summary}; guest vitest exit ${code ?? 'none'}; QEMU exit ${qemuExit}; ${secs()} s in all. Results in ${out}/`);
if (code === null) {
  console.log(`test:lab: FAILED: the guest never reported an exit code${timedOut ? ' (timeout)' : ''}; see ${join(out, 'console.log')}`);
  process.exit(1);
}
process.exit(Number.isInteger(code) ? code : 1);
