// The sandbox features a real VM's services need, each on the real kernel (root): a listening unix
// socket handed over as an fd (virtiofsd --fd=3), securebits (virtiofsd's SECBIT_NO_SETUID_FIXUP),
// and a private device node owned by one service (the vmm's /dev/kvm).

import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { createActor } from 'xstate';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { SandboxEffects } from '../../effects/port.js';
import { bindEffects } from '../../machines/bindBackend.js';
import { parseConfig } from '../../config/load.js';
// @ts-expect-error plain JavaScript module without types
import { makeVmConfig } from '../../examples/vm/make-config.mjs';
import { start, stop } from '../linux/helpers/inprocess.js';
import { forceCleanup, leftovers, removeTestParents } from '../linux/helpers/leftovers.js';
import { ensureNative } from '../linux/helpers/native.js';
import { skipReason } from '../linux/helpers/skip.js';
import { newTestVm, service, SLEEPER, SYSTEM_READ, vmConfig, type TestVm } from '../linux/helpers/vm.js';

const skip = skipReason();
if (skip) console.warn(`test/vm/features skipped: ${skip}`);
const PY = '/usr/bin/python3';
const noPython = existsSync(PY) ? null : 'no python3';
if (!skip && noPython) console.warn(`test/vm/features skipped: ${noPython}`);

async function waitFile(path: string, timeoutMs = 15_000): Promise<string> {
  for (const t0 = Date.now(); Date.now() - t0 < timeoutMs; await new Promise((r) => setTimeout(r, 25))) {
    if (existsSync(path)) {
      const text = readFileSync(path, 'utf8');
      if (text.endsWith('\n')) return text.trim();
    }
  }
  throw new Error(`${path} did not appear within ${timeoutMs} ms`);
}

/** Write `expr`'s value (a Python expression) to <runtimeDir>/<name>/out, atomically enough (one line). */
const py = (vm: TestVm, name: string, body: string, expr: string) => [
  PY, '-c', `import os, socket, errno\n${body}\nopen('${vm.runtimeDir}/${name}/out', 'w').write(str(${expr}) + '\\n')`,
];

describe.skipIf(skip || noPython)('sandbox features for real VM services', () => {
  let vm: TestVm;
  beforeAll(() => ensureNative());
  afterEach(() => forceCleanup(vm));
  afterAll(() => removeTestParents());

  it('hands a listening socket to a service at fd 3, owned by its uid, connectable by the granted group only', async () => {
    vm = newTestVm();
    const path = `${vm.runtimeDir}/server.sock`;
    const server = service({
      name: 'server', uid: 62001, gid: 62001,
      // Both see it (clients); the file's group and mode then let only the client connect.
      sockets: [{ path, fd: 3, mode: '0660', gid: 62002, clients: ['client', 'stranger'] }],
      // Serve two connections on the handed-over fd, then report which fds the service got.
      argv: py(vm, 'server', `s = socket.socket(fileno=3)
assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
for _ in range(2):
    c, _ = s.accept(); c.sendall(b'hello from %d\\n' % os.getuid()); c.close()`, "sorted(int(f) for f in os.listdir('/proc/self/fd'))"),
      landlock: { read: [...SYSTEM_READ, '/proc'], write: [] },
    });
    const client = service({
      name: 'client', uid: 62002, gid: 62002,
      argv: py(vm, 'client', `c = socket.socket(socket.AF_UNIX); c.connect('${path}')`, 'c.recv(100).decode().strip()'),
    });
    const stranger = service({
      name: 'stranger', uid: 62003, gid: 62003,
      argv: py(vm, 'stranger', `c = socket.socket(socket.AF_UNIX)
try:
    c.connect('${path}'); r = 'connected'
except OSError as e:
    r = errno.errorcode[e.errno]`, 'r'),
    });
    const run = start(vmConfig(vm, [server, client, stranger, SLEEPER]), vm);
    await run.waitFor('running');
    const st = statSync(path);
    expect(st.isSocket()).toBe(true);
    expect([st.uid, st.gid, (st.mode & 0o777).toString(8)]).toEqual([62001, 62002, '660']);
    expect(await waitFile(`${vm.runtimeDir}/client/out`)).toBe('hello from 62001');
    expect(await waitFile(`${vm.runtimeDir}/stranger/out`)).toBe('EACCES');
    // The manager (root, on the host) reaches the same socket at the same path.
    const fromHost = await new Promise<string>((resolve, reject) => {
      const c = connect({ path });
      let got = '';
      c.on('data', (d) => (got += d.toString()));
      c.on('end', () => resolve(got.trim()));
      c.on('error', reject);
    });
    expect(fromHost).toBe('hello from 62001');
    // fds 0-2, the socket at 3, then the output file and listdir's own fd: nothing else leaked in.
    const fds = JSON.parse(await waitFile(`${vm.runtimeDir}/server/out`)) as number[];
    expect(fds.slice(0, 4)).toEqual([0, 1, 2, 3]);
    expect(fds.length).toBe(6);
    expect(await stop(run)).toMatchObject({ outcome: 'stopped' });
    expect(leftovers(vm)).toEqual([]);
  });

  it('refuses to replace a file that is not a socket at a socket path (setup fails, nothing left)', async () => {
    vm = newTestVm();
    const path = `${vm.runtimeDir}/server/not-a-socket`;
    const server = service({ name: 'server', argv: ['/bin/sleep', '100'], sockets: [{ path, fd: 3, mode: '0600', gid: 62001 }] });
    // The service's runtime directory exists from the mount step on: a regular file is planted at
    // the socket's path just before the server's launch (by the effect itself, so no race).
    const plantFirst = (effects: SandboxEffects): SandboxEffects => ({
      ...effects,
      launch: (input, signal) => {
        if (input.service.name === 'server') writeFileSync(path, 'x');
        return effects.launch(input, signal);
      },
    });
    const run = start(vmConfig(vm, [server, SLEEPER]), vm, {
      hooks: { actorFor: (effects, options) => createActor(bindEffects(plantFirst(effects)), options as never) },
    });
    const out = await run.done;
    expect(out.outcome).toBe('setupFailed');
    expect(out.errors.join('\n')).toMatch(/EEXIST/);
    expect(leftovers(vm)).toEqual([]);
  });

  it('SECBIT_NO_SETUID_FIXUP keeps the effective caps across euid changes (virtiofsd writing as guest uids)', async () => {
    vm = newTestVm();
    const body = `import ctypes
libc = ctypes.CDLL(None, use_errno=True)
def eff(): return [l.split()[1] for l in open('/proc/self/status') if l.startswith('CapEff')][0]
before = eff(); os.setresuid(-1, 0, -1); os.setresuid(-1, os.getuid(), -1); after = eff()
bits = libc.prctl(27, 0, 0, 0, 0)`;
    const caps = ['CAP_SETUID', 'CAP_SETGID', 'CAP_CHOWN'];
    const read = { read: [...SYSTEM_READ, '/proc'], write: [] };
    const fixed = service({ name: 'fixed', caps, securebits: ['SECBIT_NO_SETUID_FIXUP'], argv: py(vm, 'fixed', body, "' '.join([before, after, str(bits)])"), landlock: read });
    const plain = service({ name: 'plain', uid: 62003, gid: 62003, caps, argv: py(vm, 'plain', body, "' '.join([before, after, str(bits)])"), landlock: read });
    const run = start(vmConfig(vm, [fixed, plain, SLEEPER]), vm);
    await run.waitFor('running');
    const capMask = ((1 << 0) | (1 << 6) | (1 << 7)).toString(16).padStart(16, '0');
    // With the bit: the caps survive euid 0 → uid; the securebits read back as 4 (bit 2).
    expect((await waitFile(`${vm.runtimeDir}/fixed/out`)).split(' ')).toEqual([capMask, capMask, '4']);
    // Without it: the kernel's fixup clears the effective set on the way back from euid 0.
    expect((await waitFile(`${vm.runtimeDir}/plain/out`)).split(' ')).toEqual([capMask, '0000000000000000', '0']);
    expect(await stop(run)).toMatchObject({ outcome: 'stopped' });
    expect(leftovers(vm)).toEqual([]);
  });

  // /dev/kvm when the host has it (the vmm's case), else another character device: the mechanism
  // is the same for every granted device.
  const dev = ['/dev/kvm', '/dev/net/tun', '/dev/fuse', '/dev/loop-control'].find((d) => existsSync(d));
  if (!dev) console.warn('test/vm/features: private device node test skipped: this host has none of /dev/kvm, /dev/net/tun, /dev/fuse, /dev/loop-control');
  it.skipIf(!dev)(`gives ${dev} as a private node owned by the one service that asked for it`, async () => {
    vm = newTestVm();
    const host = statSync(dev!);
    const body = `st = os.stat('${dev}')
def tryopen():
    try:
        os.close(os.open('${dev}', os.O_RDWR)); return 'opened'
    except OSError as e:
        return errno.errorcode[e.errno]`;
    const expr = "' '.join(str(x) for x in [st.st_uid, st.st_gid, oct(st.st_mode & 0o7777), st.st_rdev, tryopen()])";
    const owner = service({ name: 'owner', uid: 62001, gid: 62001, devices: [dev!], argv: py(vm, 'owner', body, expr) });
    const other = service({ name: 'other', uid: 62003, gid: 62003, argv: py(vm, 'other', body, expr) });
    const run = start(vmConfig(vm, [owner, other, SLEEPER]), vm);
    await run.waitFor('running');
    expect(await waitFile(`${vm.runtimeDir}/owner/out`)).toBe(`62001 62001 0o600 ${host.rdev} opened`);
    // Another uid in the same VM sees the node (one /dev per VM) but can open it neither by
    // permission nor by Landlock (it is not in its rules).
    expect(await waitFile(`${vm.runtimeDir}/other/out`)).toBe(`62001 62001 0o600 ${host.rdev} EACCES`);
    // The host's node is untouched.
    const after = statSync(dev!);
    expect([after.uid, after.gid, after.mode]).toEqual([host.uid, host.gid, host.mode]);
    expect(await stop(run)).toMatchObject({ outcome: 'stopped' });
    expect(leftovers(vm)).toEqual([]);
  });
});

describe('examples/vm/make-config.mjs', () => {
  it('generates valid configs: TCG without devices, KVM with the private /dev/kvm node and -cpu host', () => {
    const common = { name: 'vm1', storage: '/var/lib/vmsandbox/vm1', guest: '/nonexistent/guest' };
    const tcg = parseConfig(makeVmConfig({ ...common, accel: 'tcg' }));
    const [fsd, vmm] = tcg.services;
    expect(vmm?.vmm).toBe(true);
    expect(vmm?.argv).toContain('q35,accel=tcg,memory-backend=mem');
    expect(vmm?.devices).toEqual([]);
    expect(vmm?.stop).toEqual({ qmp: '/run/vmsandbox/vm1/vmm/qmp.sock' });
    expect(fsd?.sockets).toEqual([{ path: '/run/vmsandbox/vm1/virtiofsd.sock', fd: 3, mode: '0660', gid: vmm?.gid, clients: ['vmm'] }]);
    expect(fsd?.securebits).toEqual(['SECBIT_NO_SETUID_FIXUP']);
    expect(fsd?.argv).toContain('--fd=3');
    expect(fsd?.uid).not.toBe(vmm?.uid);
    const kvm = parseConfig(makeVmConfig({ ...common, accel: 'kvm', ignorePowerButton: true }));
    expect(kvm.services[1]?.devices).toEqual(['/dev/kvm']);
    expect(kvm.services[1]?.argv).toEqual(expect.arrayContaining(['-cpu', 'host', 'q35,accel=kvm,memory-backend=mem']));
    expect(kvm.services[1]?.argv.join(' ')).toContain('vmsandbox.ignore_powerbutton');
  });
});
