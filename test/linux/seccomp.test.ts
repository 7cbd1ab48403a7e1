// seccomp per service and a fresh session keyring (plan/seccomp.ts, native/spawn.c), attacked from
// inside a service (uid 62001) with the C probe native/test/seccomp-probe.c. Each attack is refused
// with the defaults, and its positive control shows the same probe succeeding when the syscall is
// re-enabled by `seccomp.allow` (or, for the keyring, on the host without the sandbox).

import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ServiceConfig } from '../../config/types.js';
import { sys } from '../../effects/linux/native.js';
import { forceCleanup, removeTestParents } from './helpers/leftovers.js';
import { ensureNative, staticCcSkipReason, testProgram } from './helpers/native.js';
import { runProbe, stopProbe, type ProbeResult } from './helpers/probe.js';
import { landlockSkipReason, skipReason } from './helpers/skip.js';
import { newTestVm, service, SYSTEM_READ, type TestVm } from './helpers/vm.js';

const skip = skipReason() ?? landlockSkipReason(1) ?? staticCcSkipReason();
if (skip) console.warn(`test/linux/seccomp skipped: ${skip}`);

const SYS_KEYCTL = process.arch === 'arm64' ? 219 : 250;
const KEYCTL_JOIN_SESSION_KEYRING = 1;
const x86 = process.arch === 'x64';
if (!skip && !x86) console.warn(`test/linux/seccomp: the i386-table test skipped: ${process.arch} has no int 0x80`);


describe('linux backend: seccomp and the session keyring', () => {
  let vm: TestVm | null = null;
  let tools = '';
  let probeBin = '';
  beforeAll(() => {
    if (skip) return;
    ensureNative();
    tools = mkdtempSync('/tmp/vmsandbox-tools-');
    chmodSync(tools, 0o755);
    probeBin = join(tools, 'scp');
    copyFileSync(testProgram('seccomp-probe'), probeBin);
    chmodSync(probeBin, 0o755);
  });
  afterEach(() => {
    if (vm) forceCleanup(vm);
    vm = null;
  });
  afterAll(() => {
    if (!skip) removeTestParents();
    if (tools) rmSync(tools, { recursive: true, force: true });
  });

  /** Run `script` as service "probe" next to `others` and a sleeping vmm; the VM keeps running. */
  async function probe(script: string, over: Partial<ServiceConfig> = {}, others: ServiceConfig[] = []): Promise<ProbeResult> {
    vm ??= newTestVm();
    const landlock = { read: [...SYSTEM_READ, '/proc', tools], write: [] };
    return runProbe(vm, script, { env: { P: probeBin }, over: { landlock, ...over }, others });
  }
  const finish = (r: ProbeResult) => stopProbe(vm!, r);

  const NAMESPACES = '$P unshare-user; $P clone-user; $P clone3; $P thread';

  it.skipIf(skip)('a new user namespace is refused: unshare and clone with CLONE_NEWUSER EPERM, clone3 ENOSYS, threads still start', async () => {
    const r = await probe(NAMESPACES);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^unshare-user rc=-1 errno=EPERM$/m);
    expect(r.out).toMatch(/^clone-user rc=-1 errno=EPERM$/m);
    expect(r.out).toMatch(/^clone3 rc=-1 errno=ENOSYS$/m);
    // glibc falls back from clone3 to clone for pthread_create.
    expect(r.out).toMatch(/^thread rc=0$/m);
    await finish(r);
  });

  it.skipIf(skip)('control: with seccomp.allow unshare, clone, clone3 the same probe makes user namespaces', async () => {
    const r = await probe(NAMESPACES, { seccomp: { allow: ['unshare', 'clone', 'clone3'] } });
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^unshare-user rc=0$/m);
    expect(r.out).toMatch(/^clone-user rc=[1-9]\d*$/m);
    expect(r.out).toMatch(/^clone3 rc=[1-9]\d*$/m);
    await finish(r);
  });

  it.skipIf(skip || !x86)('a syscall through the i386 table (int 0x80) kills the service; control: it works on the host', async () => {
    const host = spawnSync(probeBin, ['i386-unshare'], { encoding: 'utf8' });
    expect(host.stdout).toMatch(/^i386-unshare rc=0$/m);
    const r = await probe('exec $P i386-unshare');
    expect(r.signal).toBe('SIGSYS');
    expect(r.out).not.toMatch(/rc=0/);
    await finish(r);
  });

  /** The sibling: a same-uid `sleep 999`; the probe finds its pid in the VM's /proc. */
  const victim = service({ name: 'victim', argv: ['/bin/sleep', '999'] });
  const SIBLING = `v=
    for p in /proc/[0-9]*; do [ "$(tr '\\0' ' ' < $p/cmdline 2>/dev/null)" = "/bin/sleep 999 " ] && v=\${p#/proc/}; done
    echo "victim=$v uid=$(stat -c %u /proc/$v)"
    [ -n "$v" ] || exit 3
    echo "== sibling"; $P sibling "$v"
    echo "== self"; $P sibling 0
    echo "== after"; grep -E '^Max open files' /proc/$v/limits; cut -d' ' -f19 /proc/$v/stat`;
  const attempts = ['prlimit', 'setpriority', 'affinity', 'sched-idle', 'ioprio'];
  const section = (out: string, name: string) => out.split(`== ${name}\n`)[1]?.split('\n== ')[0] ?? '';

  it.skipIf(skip)('a same-uid sibling cannot be crippled: prlimit, setpriority, affinity, SCHED_IDLE, ioprio EPERM; on itself they work', async () => {
    const r = await probe(SIBLING, {}, [victim]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^victim=\d+ uid=62001$/m);
    for (const a of attempts) {
      expect(section(r.out, 'sibling')).toMatch(new RegExp(`^${a} rc=-1 errno=EPERM$`, 'm'));
      expect(section(r.out, 'self')).toMatch(new RegExp(`^${a} rc=0$`, 'm'));
    }
    expect(section(r.out, 'sibling')).toMatch(/^setpriority-user rc=-1 errno=EPERM$/m);
    // The sibling kept its limits and its nice value.
    expect(section(r.out, 'after')).toMatch(/^Max open files\s+(\d+)\s+\d+\s+files\s*\n0$/m);
    expect(section(r.out, 'after')).not.toMatch(/^Max open files\s+3\s/m);
    await finish(r);
  });

  it.skipIf(skip)('control: with those syscalls allowed the same probe cripples the sibling (Landlock alone does not stop it)', async () => {
    const r = await probe(SIBLING, { seccomp: { allow: ['prlimit64', 'setpriority', 'sched_setaffinity', 'sched_setscheduler', 'ioprio_set'] } }, [victim]);
    expect(r.code).toBe(0);
    for (const a of attempts) expect(section(r.out, 'sibling')).toMatch(new RegExp(`^${a} rc=0$`, 'm'));
    expect(section(r.out, 'after')).toMatch(/^Max open files\s+3\s+3\s+files\s*\n19$/m);
    await finish(r);
  });

  describe('keyrings', () => {
    let managerKey = 0;
    let managerSession = 0;
    beforeAll(() => {
      if (skip) return;
      // The manager (this process's main thread, which clones the init) gets a session keyring of
      // its own holding a key; the probe, a root child sharing that keyring, adds the key.
      sys('keyctl', SYS_KEYCTL, KEYCTL_JOIN_SESSION_KEYRING, 0);
      const add = spawnSync(probeBin, ['addkey'], { encoding: 'utf8' });
      managerKey = Number(/^addkey rc=(\d+)$/m.exec(add.stdout)?.[1] ?? 0);
      const ses = spawnSync(probeBin, ['session'], { encoding: 'utf8' });
      managerSession = Number(/^session rc=(\d+)$/m.exec(ses.stdout)?.[1] ?? 0);
      expect(managerKey).toBeGreaterThan(0);
      expect(managerSession).toBeGreaterThan(0);
    });

    it.skipIf(skip)('control: a uid-62001 process that inherits the manager\'s session keyring reads the manager\'s key', () => {
      const r = spawnSync(probeBin, ['keyread', String(managerKey)], { encoding: 'utf8', uid: 62001, gid: 62001 });
      expect(r.stdout).toMatch(/^keyread rc=13$/m);
      expect(r.stdout).toMatch(/^payload=probe-payload$/m);
    });

    it.skipIf(skip)('a service cannot use the keyring syscalls (EPERM)', async () => {
      const r = await probe(`$P session; $P keyread ${managerKey}; $P addkey`);
      expect(r.code).toBe(0);
      expect(r.out).toMatch(/^session rc=-1 errno=EPERM$/m);
      expect(r.out).toMatch(/^keyread rc=-1 errno=EPERM$/m);
      expect(r.out).toMatch(/^addkey rc=-1 errno=EPERM$/m);
      await finish(r);
    });

    it.skipIf(skip)('with keyctl allowed, the service has a fresh session keyring: the manager\'s key is out of reach, its own works', async () => {
      const r = await probe(`$P session; $P keyread ${managerKey}; $P addkey`, { seccomp: { allow: ['keyctl', 'add_key'] } });
      expect(r.code).toBe(0);
      const session = Number(/^session rc=(\d+)$/m.exec(r.out)?.[1] ?? 0);
      expect(session).toBeGreaterThan(0);
      expect(session).not.toBe(managerSession);
      expect(r.out).toMatch(/^keyread rc=-1 errno=EACCES$/m);
      expect(r.out).toMatch(/^addkey rc=[1-9]\d*$/m);
      await finish(r);
    });
  });
});
