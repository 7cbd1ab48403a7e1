// Escape attempts from inside a service must fail, each in its own test, with positive controls
// showing the probe could do what it was allowed to. A probe is a /bin/sh script run as a service
// (uid 62001) that writes what it saw to its own runtime directory.

import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ServiceConfig, VmConfig } from '../../config/types.js';
import { serviceExit, start, stop } from './helpers/inprocess.js';
import { forceCleanup, leftovers, removeTestParents } from './helpers/leftovers.js';
import { ensureNative, staticCcSkipReason, testProgram } from './helpers/native.js';
import { CGROUP_PARENT as CGROUP_PARENT_NAME, cgroupParentDir } from './helpers/paths.js';
import { runProbe, stopProbe, type ProbeResult } from './helpers/probe.js';
import { landlockSkipReason, skipReason } from './helpers/skip.js';
import { newTestVm, service, SLEEPER, SYSTEM_READ, vmConfig, type TestVm } from './helpers/vm.js';

const skip = skipReason();
const skipScoped = landlockSkipReason(6);
const skipLandlock = landlockSkipReason(1);
// The C escape helper (native/test/escape-helper.c: ptrace, pidfd, setuid, cgroup moves) needs `cc -static`.
const skipTools = skip ?? skipLandlock ?? staticCcSkipReason();
const skipScopedTools = skipScoped ?? skipTools;
if (skip) console.warn(`test/linux/escape skipped: ${skip}`);
else {
  if (skipScoped) console.warn(`test/linux/escape: Landlock scoping tests skipped: ${skipScoped}`);
  if (skipTools) console.warn(`test/linux/escape: tests with the C escape helper skipped: ${skipTools}`);
}


describe('linux backend: escapes from a service fail', () => {
  let vm: TestVm | null = null;
  /** More VMs a test started (another VM's storage), cleaned up like `vm`. */
  let extraVms: TestVm[] = [];
  /** Host directories a test made outside its VM's (removed after it). */
  const extraDirs: string[] = [];
  /** A directory every probe may read and execute: the static escape helper `esc` and its setuid-root copy `esc-suid`. */
  let tools = '';
  beforeAll(() => {
    if (skip) return;
    ensureNative();
    if (!skipTools) {
      tools = mkdtempSync('/tmp/vmsandbox-tools-');
      chmodSync(tools, 0o755);
      // Copied into a directory of its own: the probes' Landlock rules grant it, and nothing else.
      copyFileSync(testProgram('escape-helper'), join(tools, 'esc'));
      chmodSync(join(tools, 'esc'), 0o755);
      copyFileSync(join(tools, 'esc'), join(tools, 'esc-suid'));
      chownSync(join(tools, 'esc-suid'), 0, 0);
      chmodSync(join(tools, 'esc-suid'), 0o4755);
    }
  });
  afterEach(() => {
    if (vm) forceCleanup(vm);
    vm = null;
    for (const o of extraVms.splice(0)) forceCleanup(o);
    for (const d of extraDirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  afterAll(() => {
    if (!skip) removeTestParents();
    if (tools) rmSync(tools, { recursive: true, force: true });
  });

  /** Landlock rules that let a probe use /proc and the escape helper. */
  const withTools = () => ({ landlock: { read: [...SYSTEM_READ, '/proc', tools], write: [] } });
  /** sh: set $v to the pid (in the VM) of the sibling running `/bin/sleep 999`, or exit 3. */
  const findVictim = `v=
       for p in /proc/[0-9]*; do [ "$(tr '\\0' ' ' < $p/cmdline 2>/dev/null)" = "/bin/sleep 999 " ] && v=\${p#/proc/}; done
       echo "victim=$v uid=$(stat -c %u /proc/$v)"
       [ -n "$v" ] || exit 3`;

  /** Run `script` as service "probe" next to `others` and a sleeping vmm; stop the VM afterwards. */
  async function probe(script: string, over: Partial<ServiceConfig> = {}, others: ServiceConfig[] = [], vmOver: Partial<VmConfig> = {}): Promise<ProbeResult> {
    vm ??= newTestVm();
    chownSync(vm.storage, 62001, 62001);
    return runProbe(vm, script, { env: { STORAGE: vm.storage, SCRATCH: vm.scratch }, over, others, vmOver });
  }
  const finish = (r: ProbeResult) => stopProbe(vm!, r);

  it.skipIf(skip)('runs as its own uid with no capabilities, no_new_privs, an empty bounding set', async () => {
    const r = await probe('grep -E "^(Uid|Gid|Groups|CapEff|CapPrm|CapBnd|CapAmb|NoNewPrivs):" /proc/self/status', {
      landlock: { read: [...SYSTEM_READ, '/proc'], write: [] },
    });
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^Uid:\s+62001\s+62001\s+62001\s+62001$/m);
    expect(r.out).toMatch(/^Gid:\s+62001\s+62001\s+62001\s+62001$/m);
    expect(r.out).toMatch(/^Groups:\s*$/m);
    for (const set of ['CapEff', 'CapPrm', 'CapBnd', 'CapAmb']) expect(r.out).toMatch(new RegExp(`^${set}:\\s+0{16}$`, 'm'));
    expect(r.out).toMatch(/^NoNewPrivs:\s+1$/m);
    await finish(r);
  });

  it.skipIf(skip)('keeps a listed capability as ambient, and only that one', async () => {
    const r = await probe('grep -E "^(CapEff|CapBnd|CapAmb):" /proc/self/status', {
      landlock: { read: [...SYSTEM_READ, '/proc'], write: [] },
      caps: ['CAP_NET_BIND_SERVICE'],
    });
    expect(r.code).toBe(0);
    for (const set of ['CapEff', 'CapBnd', 'CapAmb']) expect(r.out).toMatch(new RegExp(`^${set}:\\s+0{13}400$`, 'm'));
    await finish(r);
  });

  it.skipIf(skip)('refuses to launch a service that keeps CAP_SYS_ADMIN', async () => {
    vm = newTestVm();
    const run = start(vmConfig(vm, [service({ name: 'bad', argv: ['/bin/true'], caps: ['CAP_SYS_ADMIN'] }), SLEEPER]), vm);
    const out = await run.done;
    expect(out.outcome).toBe('setupFailed');
    expect(out.errors.join('\n')).toMatch(/CAP_SYS_ADMIN would let the service leave its sandbox/);
    expect(leftovers(vm)).toEqual([]);
  });

  it.skipIf(skipScoped)('cannot signal a sibling service with the same uid (Landlock signal scoping: EPERM)', async () => {
    const victim = service({ name: 'victim', argv: ['/bin/sleep', '999'] });
    const r = await probe(
      `v=
       for p in /proc/[0-9]*; do [ "$(tr '\\0' ' ' < $p/cmdline 2>/dev/null)" = "/bin/sleep 999 " ] && v=\${p#/proc/}; done
       echo "victim=$v uid=$(stat -c %u /proc/$v)"
       [ -n "$v" ] || exit 3
       sleep 100 & c=$!
       kill -TERM $c; wait $c; echo "own-child=$?"
       kill -TERM "$v" && exit 10
       exit 20`,
      { landlock: { read: [...SYSTEM_READ, '/proc'], write: [] } },
      [victim],
    );
    expect(r.out).toMatch(/victim=\d+ uid=62001/);
    // Control: it can signal a child of its own (143 = killed by SIGTERM).
    expect(r.out).toMatch(/^own-child=143$/m);
    expect(r.out).toMatch(/Operation not permitted/);
    expect(r.code).toBe(20);
    expect(r.run.backend.state.services.get('victim')!.exited).toBe(false);
    await finish(r);
  });

  it.skipIf(skipScoped)('cannot connect to a sibling\'s abstract unix socket (Landlock scoping), which the host can reach', async () => {
    vm = newTestVm();
    const name = `vmsandbox-abstract-${process.pid}`;
    const nodeRead = { read: [...SYSTEM_READ, '/proc', '/sys'], write: [] };
    const victim = service({
      name: 'victim',
      argv: ['/usr/bin/node', '-e', `require('net').createServer((c) => c.end('hi')).listen('\\0${name}')`],
      landlock: nodeRead,
    });
    // The probe does not see the victim's directory (views), so it cannot wait for a file there:
    // it retries while nothing listens yet (ECONNREFUSED), up to 10 s.
    const connect = `const t = Date.now(); const go = () => require('net').connect('\\0${name}').on('connect', () => { console.log('connected'); process.exit(0) }).on('error', (e) => { if (e.code === 'ECONNREFUSED' && Date.now() - t < 10000) return setTimeout(go, 20); console.log('error ' + e.code); process.exit(1) }); go()`;
    const waitReady = 'true';
    // Abstract sockets belong to a network namespace: the VM keeps the host's (network "host") so that
    // the control below, from the host, can reach the victim's socket at all.
    const r = await probe(`${waitReady}; /usr/bin/node -e "${connect}"`, { landlock: nodeRead }, [victim], { network: 'host' });
    expect(r.out).toMatch(/error EPERM/);
    expect(r.code).toBe(1);
    // Control: the socket is there, and an unsandboxed client (the test itself, same network namespace) reaches it.
    const { connect: netConnect } = await import('node:net');
    const reached = await new Promise<string>((resolve) => {
      const c = netConnect(`\0${name}`);
      c.on('data', (d) => resolve(d.toString()));
      c.on('error', (e) => resolve(`error ${(e as NodeJS.ErrnoException).code}`));
    });
    expect(reached).toBe('hi');
    await finish(r);
  });

  it.skipIf(skip)('cannot write the host root, even where Landlock and file modes would allow it (read-only mount)', async () => {
    vm = newTestVm();
    chmodSync(vm.scratch, 0o777);
    const r = await probe(`touch "$SCRATCH/pwned"; echo "rc=$?"`, { landlock: { read: SYSTEM_READ, write: [vm.scratch] } });
    expect(r.out).toMatch(/Read-only file system/);
    expect(r.out).toMatch(/rc=1/);
    expect(existsSync(join(vm.scratch, 'pwned'))).toBe(false);
    await finish(r);
  });

  it.skipIf(skip)('sees only the VM\'s processes in /proc, with the init as PID 1', async () => {
    const r = await probe('cat /proc/1/comm; echo "--"; cat /proc/[0-9]*/comm', { landlock: { read: [...SYSTEM_READ, '/proc'], write: [] } });
    expect(r.code).toBe(0);
    const [pid1, rest] = r.out.split('--\n');
    expect(pid1!.trim()).toBe('vmsandbox-init');
    const comms = rest!.split('\n').filter(Boolean);
    expect(comms.length).toBeLessThanOrEqual(5);
    for (const c of comms) expect(['vmsandbox-init', 'sh', 'cat', 'sleep']).toContain(c);
    await finish(r);
  });

  it.skipIf(skip)('cannot mount or create a mount namespace', async () => {
    const r = await probe('mount -t tmpfs none /tmp; echo "mount=$?"; unshare -m true; echo "unshare=$?"; grep -c . /proc/self/mountinfo', {
      landlock: { read: [...SYSTEM_READ, '/proc'], write: [] },
    });
    expect(r.out).toMatch(/mount=(?!0)\d+/);
    expect(r.out).toMatch(/unshare=(?!0)\d+/);
    expect(r.out).toMatch(/unshare: unshare failed: Operation not permitted/);
    await finish(r);
  });

  it.skipIf(skip)('cannot read a file outside its Landlock rules that file modes would allow', async () => {
    vm = newTestVm();
    // Outside the parents the VM's view covers (/tmp holds every test VM's storage and scratch):
    // the file is visible in the VM, and only Landlock stands in the way.
    const root = mkdtempSync('/var/tmp/vmsandbox-landlock-');
    extraDirs.push(root);
    const secretDir = join(root, 'secret');
    mkdirSync(secretDir, { mode: 0o755 });
    chmodSync(root, 0o755);
    writeFileSync(join(secretDir, 'file'), 'top secret\n', { mode: 0o644 });
    const r = await probe(`cat /etc/hostname >/dev/null && echo control-ok; cat "${secretDir}/file"; echo "rc=$?"; ls "${root}"; echo "ls=$?"`);
    expect(r.out).toMatch(/control-ok/);
    expect(r.out).toMatch(/Permission denied/);
    expect(r.out).not.toMatch(/top secret/);
    expect(r.out).toMatch(/rc=1/);
    expect(r.out).toMatch(/ls=2/);
    await finish(r);
  });

  it.skipIf(skip)('writes its storage (storage rw) and its private /tmp, which is not the host\'s /tmp', async () => {
    const hostMarker = `/tmp/vmsandbox-host-marker-${process.pid}`;
    writeFileSync(hostMarker, 'host');
    try {
      const r = await probe(
        `echo hello > "$STORAGE/written" && echo storage-ok
         echo private > /tmp/private-marker && echo tmp-ok
         [ -e ${hostMarker} ] && echo host-tmp-visible
         stat -f -c "fstype=%T" /tmp`,
        { storage: 'rw', tmp: '16M' },
      );
      expect(r.out).toMatch(/storage-ok/);
      expect(r.out).toMatch(/tmp-ok/);
      expect(r.out).not.toMatch(/host-tmp-visible/);
      expect(r.out).toMatch(/^fstype=tmpfs$/m);
      expect(readFileSync(join(vm!.storage, 'written'), 'utf8')).toBe('hello\n');
      expect(existsSync('/tmp/private-marker')).toBe(false);
      await finish(r);
    } finally {
      rmSync(hostMarker, { force: true });
    }
  });

  it.skipIf(skip)('reads but cannot write storage "ro", and does not see storage "none"', async () => {
    vm = newTestVm();
    writeFileSync(join(vm.storage, 'data'), 'shared\n', { mode: 0o644 });
    chmodSync(vm.storage, 0o755);
    const ro = service({
      name: 'reader',
      argv: ['/bin/sh', '-c', `exec >${vm.runtimeDir}/reader/out 2>&1; cat "${vm.storage}/data"; echo x > "${vm.storage}/new"; echo "write=$?"`],
      storage: 'ro',
    });
    const r = await probe(`ls -A "$STORAGE"; echo "ls=$?"; cat "$STORAGE/data"; echo "cat=$?"`, { storage: 'none', landlock: { read: [...SYSTEM_READ, vm.storage], write: [] } }, [ro]);
    // storage "none": a read-only empty tmpfs covers it, whatever Landlock would allow.
    expect(r.out).not.toMatch(/shared/);
    expect(r.out).toMatch(/cat=1/);
    await serviceExit(r.run, 'reader');
    const readerOut = readFileSync(`${vm.runtimeDir}/reader/out`, 'utf8');
    expect(readerOut).toMatch(/^shared$/m);
    expect(readerOut).toMatch(/Read-only file system/);
    expect(existsSync(join(vm.storage, 'new'))).toBe(false);
    await finish(r);
  });

  it.skipIf(skip)('gets a minimal /dev and a read-only /sys', async () => {
    const r = await probe('ls /dev | tr "\\n" " "; echo; echo x > /dev/null && echo null-ok; head -c 4 /dev/urandom | wc -c; touch /sys/x; echo "sys=$?"', {
      landlock: { read: [...SYSTEM_READ, '/dev', '/sys'], write: ['/sys'] },
    });
    expect(r.out.split('\n')[0]!.trim().split(' ').sort()).toEqual(['fd', 'full', 'null', 'random', 'shm', 'stderr', 'stdin', 'stdout', 'tty', 'urandom', 'zero']);
    expect(r.out).toMatch(/null-ok/);
    expect(r.out).toMatch(/^4$/m);
    expect(r.out).toMatch(/sys=1/);
    await finish(r);
  });

  it.skipIf(skipTools)('cannot ptrace (PTRACE_ATTACH, PTRACE_SEIZE) a sibling service with the same uid, but can ptrace its own child', async () => {
    const victim = service({ name: 'victim', argv: ['/bin/sleep', '999'] });
    const r = await probe(
      `${findVictim}
       ${tools}/esc ptrace-child
       ${tools}/esc ptrace-attach "$v"
       ${tools}/esc ptrace-seize "$v"`,
      // seccomp denies ptrace by default (test/linux/seccomp.test.ts); allowed here, so this tests Landlock's own wall.
      { ...withTools(), seccomp: { allow: ['ptrace'] } },
      [victim],
    );
    expect(r.out).toMatch(/victim=\d+ uid=62001/);
    // Control: ptrace works for the probe on a process of its own Landlock domain.
    expect(r.out).toMatch(/^ptrace-child-attach rc=0$/m);
    expect(r.out).toMatch(/^ptrace-child-seize rc=0$/m);
    // Same uid, no Yama here: only the Landlock domain stops it.
    expect(r.out).toMatch(/^ptrace-attach rc=-1 errno=EPERM$/m);
    expect(r.out).toMatch(/^ptrace-seize rc=-1 errno=EPERM$/m);
    const v = r.run.backend.state.services.get('victim')!;
    expect(v.exited).toBe(false);
    expect(readFileSync(`/proc/${v.hostPid}/status`, 'utf8')).toMatch(/^TracerPid:\s+0$/m);
    await finish(r);
  });

  it.skipIf(skipScopedTools)('cannot pidfd_send_signal a sibling service with the same uid (EPERM), but can its own child', async () => {
    const victim = service({ name: 'victim', argv: ['/bin/sleep', '999'] });
    const r = await probe(`${findVictim}\n${tools}/esc pidfd-child\n${tools}/esc pidfd "$v"`, withTools(), [victim]);
    expect(r.out).toMatch(/victim=\d+ uid=62001/);
    expect(r.out).toMatch(/^pidfd-child-open rc=\d+$/m);
    expect(r.out).toMatch(/^pidfd-child-signal rc=0$/m);
    expect(r.out).toMatch(/^pidfd-child-status signal 9$/m);
    // pidfd_open itself needs no permission; sending through it is what scoping forbids.
    expect(r.out).toMatch(/^pidfd_open rc=\d+$/m);
    expect(r.out).toMatch(/^pidfd_send_signal rc=-1 errno=EPERM$/m);
    expect(r.run.backend.state.services.get('victim')!.exited).toBe(false);
    await finish(r);
  });

  it.skipIf(skipTools)('cannot see or signal a process outside the VM by its host pid', async () => {
    const r = await probe(`kill -0 ${process.pid}; echo "kill=$?"; ${tools}/esc pidfd ${process.pid}`, withTools());
    expect(r.out).toMatch(/kill=(?!0)\d+/);
    expect(r.out).toMatch(/No such process/);
    expect(r.out).toMatch(/^pidfd_open rc=-1 errno=ESRCH$/m);
    await finish(r);
  });

  it.skipIf(skipLandlock)('cannot read another VM\'s storage, even with the same uid and file modes that allow it', async () => {
    // VM B: running, its storage owned by the uid VM A's probe also runs as.
    const vmB = newTestVm();
    extraVms.push(vmB);
    writeFileSync(join(vmB.storage, 'secret'), 'B only\n', { mode: 0o600 });
    chownSync(join(vmB.storage, 'secret'), 62001, 62001);
    chownSync(vmB.storage, 62001, 62001);
    const runB = start(vmConfig(vmB, [service({ name: 'vmm', vmm: true, argv: ['/bin/sleep', '1000'], storage: 'rw' })]), vmB);
    await runB.waitFor('running');
    // Control: outside any sandbox, uid 62001 reads it (so DAC is not what stops VM A).
    const host = spawnSync('/bin/cat', [join(vmB.storage, 'secret')], { uid: 62001, gid: 62001, encoding: 'utf8' });
    expect(host.stdout).toBe('B only\n');
    const r = await probe(
      `echo mine > "$STORAGE/own" && cat "$STORAGE/own" && echo own-ok
       cat "${vmB.storage}/secret"; echo "cat=$?"
       ls "${vmB.storage}"; echo "ls=$?"
       echo x > "${vmB.storage}/planted"; echo "write=$?"`,
      { storage: 'rw' },
    );
    expect(r.out).toMatch(/own-ok/);
    expect(r.out).not.toMatch(/B only/);
    expect(r.out).toMatch(/cat=1/);
    expect(r.out).toMatch(/ls=2/);
    expect(r.out).toMatch(/write=(?!0)\d+/);
    // B's storage is not in A's view at all (test/linux/views.test.ts); Landlock would deny it too.
    expect(r.out).toMatch(/No such file or directory/);
    expect(existsSync(join(vmB.storage, 'planted'))).toBe(false);
    await finish(r);
    expect((await stop(runB)).outcome).toBe('stopped');
    expect(leftovers(vmB)).toEqual([]);
  });

  it.skipIf(skipTools)('cannot regain root through a setuid-root binary (nosuid mounts, no_new_privs): euid stays the service\'s', async () => {
    vm = newTestVm();
    copyFileSync(join(tools, 'esc'), join(vm.storage, 'esc-suid'));
    chmodSync(join(vm.storage, 'esc-suid'), 0o4755);
    // Control: outside the sandbox the helper is a working setuid-root binary for uid 62001.
    const host = spawnSync(join(tools, 'esc-suid'), ['ids'], { uid: 62001, gid: 62001, encoding: 'utf8' });
    expect(host.stdout).toMatch(/^ruid=62001 euid=0 /m);
    const r = await probe(
      `${tools}/esc-suid ids; echo "--"; "$STORAGE/esc-suid" ids; echo "--"; /usr/bin/su -c "id -u" root </dev/null; echo "su=$?"`,
      { ...withTools(), storage: 'ro' },
    );
    const [fromTools, fromStorage, fromSu] = r.out.split('--\n');
    for (const o of [fromTools!, fromStorage!]) {
      expect(o).toMatch(/^ruid=62001 euid=62001 suid=62001$/m);
      expect(o).toMatch(/^setuid0 rc=-1 errno=EPERM$/m);
      expect(o).toMatch(/^after ruid=62001 euid=62001 suid=62001$/m);
    }
    // su runs (it is readable and executable) but gets no root: no "0" line, non-zero exit.
    expect(fromSu).not.toMatch(/^0$/m);
    expect(fromSu).toMatch(/su=(?!0)\d+/);
    await finish(r);
  });

  it.skipIf(skipTools)('cannot move itself to another cgroup (cgroupfs is not in the sandbox; sysfs is read-only)', async () => {
    vm = newTestVm();
    const cgRoot = join(cgroupParentDir(), '..');
    const vmDir = join(cgroupParentDir(), vm.name);
    const targets = [`${cgRoot}/cgroup.procs`, `${vmDir}/svc-vmm/cgroup.procs`, `${vmDir}/init/cgroup.procs`, `${vmDir}/cgroup.procs`, '/sys/fs/cgroup/cgroup.procs'];
    const r = await probe(
      `cat /proc/self/cgroup
       ${targets.map((t) => `echo "target ${t}"; ${tools}/esc cgmove ${t}`).join('\n')}
       echo "--"; cat /proc/self/cgroup`,
      // Landlock lets it write /sys: what must stop it is the mount tree.
      { landlock: { read: [...SYSTEM_READ, '/proc', '/sys', tools], write: ['/sys'] } },
    );
    const attempts = r.out.split('target ').slice(1);
    expect(attempts).toHaveLength(targets.length);
    for (const a of attempts) expect(a).toMatch(/^cgmove-(open|write) rc=-1 errno=(EACCES|EPERM|EROFS|ENOENT)$/m);
    const leaf = `0::/${join(CGROUP_PARENT_NAME, vm.name, 'svc-probe')}`;
    const [before, after] = r.out.split('--\n');
    expect(before).toMatch(new RegExp(`^${leaf}$`, 'm'));
    expect(after).toMatch(new RegExp(`^${leaf}$`, 'm'));
    await finish(r);
  });
});
