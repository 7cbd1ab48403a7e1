// Escape attempts from inside a service must fail, each in its own test, with positive controls
// showing the probe could do what it was allowed to. A probe is a /bin/sh script run as a service
// (uid 62001) that writes what it saw to its own runtime directory.

import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ServiceConfig, VmConfig } from '../../config/types.js';
import {
  ensureNative,
  forceCleanup,
  landlockSkipReason,
  leftovers,
  newTestVm,
  removeTestParents,
  service,
  serviceExit,
  skipReason,
  SLEEPER,
  start,
  stop,
  SYSTEM_READ,
  vmConfig,
  type Run,
  type TestVm,
} from './helpers.js';

const skip = skipReason();
const skipScoped = landlockSkipReason(6);
if (skip) console.warn(`test/linux/escape skipped: ${skip}`);
else if (skipScoped) console.warn(`test/linux/escape: Landlock scoping tests skipped: ${skipScoped}`);

interface ProbeResult {
  code: number | null;
  signal: string | null;
  out: string;
  run: Run;
}

describe('linux backend: escapes from a service fail', () => {
  let vm: TestVm | null = null;
  beforeAll(() => {
    if (!skip) ensureNative();
  });
  afterEach(() => {
    if (vm) forceCleanup(vm);
    vm = null;
  });
  afterAll(() => {
    if (!skip) removeTestParents();
  });

  /** Run `script` as service "probe" next to `others` and a sleeping vmm; stop the VM afterwards. */
  async function probe(script: string, over: Partial<ServiceConfig> = {}, others: ServiceConfig[] = [], vmOver: Partial<VmConfig> = {}): Promise<ProbeResult> {
    vm ??= newTestVm();
    chownSync(vm.storage, 62001, 62001);
    const outFile = `${vm.runtimeDir}/probe/out`;
    const p = service({
      name: 'probe',
      argv: ['/bin/sh', '-c', `exec >${outFile} 2>&1\n${script}`],
      env: { PATH: '/usr/bin:/bin', STORAGE: vm.storage, SCRATCH: vm.scratch },
      ...over,
    });
    const run = start(vmConfig(vm, [...others, p, SLEEPER], vmOver), vm);
    const exit = await serviceExit(run, 'probe');
    await run.waitFor('running');
    const out = existsSync(outFile) ? readFileSync(outFile, 'utf8') : '';
    return { code: exit.code, signal: exit.signal, out, run };
  }

  async function finish(r: ProbeResult): Promise<void> {
    const output = await stop(r.run);
    expect({ ...output, events: r.run.events }).toMatchObject({ outcome: 'stopped' });
    expect(leftovers(vm!)).toEqual([]);
  }

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
       kill -TERM "$v" && exit 10
       exit 20`,
      { landlock: { read: [...SYSTEM_READ, '/proc'], write: [] } },
      [victim],
    );
    expect(r.out).toMatch(/victim=\d+ uid=62001/);
    expect(r.out).toMatch(/Operation not permitted/);
    expect(r.code).toBe(20);
    expect(r.run.backend.state.services.get('victim')!.exited).toBe(false);
    await finish(r);
  });

  it.skipIf(skipScoped)('cannot connect to a sibling\'s abstract unix socket (Landlock scoping), which the host can reach', async () => {
    vm = newTestVm();
    const name = `vmsandbox-abstract-${process.pid}`;
    const ready = `${vm.runtimeDir}/victim/ready`;
    const nodeRead = { read: [...SYSTEM_READ, '/proc', '/sys'], write: [] };
    const victim = service({
      name: 'victim',
      argv: ['/usr/bin/node', '-e', `require('net').createServer((c) => c.end('hi')).listen('\\0${name}', () => require('fs').writeFileSync('${ready}', ''))`],
      landlock: nodeRead,
    });
    const waitReady = `while [ ! -e ${ready} ]; do sleep 0.02; done`;
    const connect = `require('net').connect('\\0${name}').on('connect', () => { console.log('connected'); process.exit(0) }).on('error', (e) => { console.log('error ' + e.code); process.exit(1) })`;
    const r = await probe(`${waitReady}; /usr/bin/node -e "${connect}"`, { landlock: nodeRead }, [victim]);
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
    const secretDir = join(vm.scratch, 'secret');
    mkdirSync(secretDir, { mode: 0o755 });
    chmodSync(vm.scratch, 0o755);
    writeFileSync(join(secretDir, 'file'), 'top secret\n', { mode: 0o644 });
    const r = await probe(`cat /etc/hostname >/dev/null && echo control-ok; cat "$SCRATCH/secret/file"; echo "rc=$?"; ls "$SCRATCH"; echo "ls=$?"`);
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
});
