// The plan (plan/): config + host facts → every setup operation, or every refusal with its field.

import { describe, expect, it } from 'vitest';
import { spawnFields } from '../effects/linux/spawnRequest.js';
import { launchOrder, planSandbox, type HostFacts } from '../plan/index.js';
import { MOUNT_ATTR, MS, planMounts, planViews } from '../plan/mounts.js';
import { setupOperations } from '../plan/record.js';
import { landlockRules, planView } from '../plan/service.js';
import { service, SLEEPER, vmConfig } from './linux/helpers/vm.js';

const vm = { name: 'vm1', storage: '/srv/vm1', runtimeDir: '/run/vmsandbox/vm1', scratch: '/tmp/x' };
const host: HostFacts = { landlockAbi: 7, cgroupControllers: ['cpu', 'memory', 'pids', 'io'] };

function refusals(config: Parameters<typeof planSandbox>[0], facts = host) {
  const r = planSandbox(config, facts);
  return r.ok ? [] : r.refusals;
}

describe('the plan', () => {
  it('plans the mounts: everything read-only first, fresh /proc and /sys, /dev moved in, runtime dir last', () => {
    const config = vmConfig(vm, [service({ name: 'gpu', argv: ['/bin/true'], devices: ['/dev/dri/renderD128'] }), SLEEPER]);
    const ops = planMounts(config);
    expect(ops[0]).toEqual({ verb: 'setattr', path: '/', set: MOUNT_ATTR.RDONLY | MOUNT_ATTR.NOSUID, clr: 0, recursive: true });
    // The views come last, after the staging tmpfs is gone: the runtime dir and the storage are
    // cloned, their parents (where other VMs' live) covered by empty tmpfs, the clones placed back.
    const stageGone = ops.findIndex((o) => o.verb === 'umount' && o.path === '/tmp');
    const clone = ops.findIndex((o) => o.verb === 'clone' && o.path === '/run/vmsandbox/vm1');
    const cover = ops.findIndex((o) => o.verb === 'mount' && o.fstype === 'tmpfs' && o.target === '/run/vmsandbox');
    const back = ops.findIndex((o) => o.verb === 'place' && o.path === '/run/vmsandbox/vm1');
    expect(stageGone).toBeGreaterThan(0);
    expect(clone).toBeGreaterThan(stageGone);
    expect(cover).toBeGreaterThan(clone);
    expect(back).toBeGreaterThan(cover);
    expect(ops).toContainEqual(expect.objectContaining({ verb: 'mount', fstype: 'tmpfs', target: '/srv' }));
    expect(ops).toContainEqual(expect.objectContaining({ verb: 'place', path: '/srv/vm1' }));
    expect(ops).toContainEqual({ verb: 'setattr', path: '/run/vmsandbox/vm1', set: MOUNT_ATTR.NOSUID | MOUNT_ATTR.NODEV, clr: MOUNT_ATTR.RDONLY, recursive: false });
    // The covers end read-only: nothing can be added beside what the VM keeps.
    expect(ops.at(-1)).toEqual({ verb: 'mount', source: '', target: '/srv', fstype: '', flags: MS.REMOUNT | MS.RDONLY | MS.NOSUID | MS.NODEV | MS.NOEXEC, data: 'mode=0755' });
    expect(refusals({ ...config, runtimeDir: '/vm1' })).toContainEqual({ field: 'runtimeDir', message: expect.stringMatching(/directly under \//) });
    expect(ops).toContainEqual(expect.objectContaining({ verb: 'mount', fstype: 'proc', target: '/proc' }));
    expect(ops).toContainEqual(expect.objectContaining({ verb: 'mkdir', path: '/tmp/dev/dri' }));
    // A granted device is a private node owned by the service that asked for it, not a bind.
    expect(ops).toContainEqual({ verb: 'mknod', source: '/dev/dri/renderD128', path: '/tmp/dev/dri/renderD128', mode: 0o600, uid: 62001, gid: 62001 });
    // No host device bound besides the base set.
    const binds = ops.filter((o) => o.verb === 'mount' && o.source.startsWith('/dev/')).map((o) => (o as { source: string }).source);
    expect(binds.sort()).toEqual(['/dev/full', '/dev/null', '/dev/random', '/dev/tty', '/dev/urandom', '/dev/zero']);
    expect(refusals({ ...config, runtimeDir: 'relative' })).toContainEqual({ field: 'runtimeDir', message: expect.stringMatching(/absolute/) });
  });

  it("keeps in the VM's view its runtime dir, its storage and what its services name under their parents; nothing else there", () => {
    const config = vmConfig({ ...vm, storage: '/var/lib/vms/vm1' }, [
      service({ name: 'fs', argv: ['/var/lib/vms/bin/fsd'], landlock: { read: ['/usr', '/var/lib/vms/images', '/var/lib/vms/images/kernel'], write: [] } }),
      SLEEPER,
    ]);
    const views = planViews(config);
    const kept = views.filter((o) => o.verb === 'clone').map((o) => (o as { path: string }).path);
    // /usr is not under a cover; images/kernel comes with images.
    expect(kept).toEqual(['/run/vmsandbox/vm1', '/var/lib/vms/bin/fsd', '/var/lib/vms/images', '/var/lib/vms/vm1']);
    expect(views.filter((o) => o.verb === 'mount' && o.fstype === 'tmpfs').map((o) => (o as { target: string }).target)).toEqual(['/run/vmsandbox', '/var/lib/vms']);
    // Each clone's slot is placed back at its own path.
    for (const c of views.filter((o) => o.verb === 'clone')) expect(views).toContainEqual({ verb: 'place', slot: (c as { slot: number }).slot, path: (c as { path: string }).path });
    // One cover when one parent holds the other.
    const nested = planViews(vmConfig({ ...vm, storage: '/run/vms/vm1', runtimeDir: '/run/vms/rt/vm1' }, [SLEEPER]));
    expect(nested.filter((o) => o.verb === 'mount' && o.fstype === 'tmpfs').map((o) => (o as { target: string }).target)).toEqual(['/run/vms']);
    expect(refusals({ ...config, storage: '/vm1' })).toContainEqual({ field: 'storage', message: expect.stringMatching(/directly under \//) });
  });

  it('gives each service a view of the runtime dir: its own directory and the sockets it owns or is a client of', () => {
    const fsd = service({
      name: 'fsd',
      argv: ['/bin/true'],
      sockets: [
        { path: '/run/vmsandbox/vm1/fs.sock', fd: 3, mode: '0660', gid: 62002, clients: ['vmm'] },
        { path: '/run/vmsandbox/vm1/fsd/private.sock', fd: 4, mode: '0600', gid: 62001 },
      ],
    });
    const other = service({ name: 'other', argv: ['/bin/true'] });
    const config = vmConfig(vm, [fsd, other, { ...SLEEPER, uid: 62002, gid: 62002 }]);
    expect(planView(config, fsd).show).toEqual(['/run/vmsandbox/vm1/fs.sock', '/run/vmsandbox/vm1/fsd']);
    expect(planView(config, config.services[2]!).show).toEqual(['/run/vmsandbox/vm1/fs.sock', '/run/vmsandbox/vm1/vmm']);
    expect(planView(config, other).show).toEqual(['/run/vmsandbox/vm1/other']);
    expect(planView(config, other)).toMatchObject({ path: '/run/vmsandbox/vm1', flags: MS.RDONLY | MS.NOSUID | MS.NODEV | MS.NOEXEC });
    const r = planSandbox(config, host);
    if (!r.ok) throw new Error(JSON.stringify(r.refusals));
    expect(spawnFields(r.plan.services.find((s) => s.name === 'vmm')!)).toEqual(
      expect.arrayContaining(['viewpath=/run/vmsandbox/vm1', 'show=/run/vmsandbox/vm1/fs.sock', 'show=/run/vmsandbox/vm1/vmm']),
    );
  });

  it('launches the owner of a socket before its clients, and refuses clients in a cycle', () => {
    const sock = (path: string, clients: string[]) => ({ path, fd: 3, mode: '0660', gid: 62001, clients });
    const a = service({ name: 'a', argv: ['/bin/true'], sockets: [sock('/run/vmsandbox/vm1/a.sock', ['vmm'])] });
    const b = service({ name: 'b', argv: ['/bin/true'], sockets: [sock('/run/vmsandbox/vm1/b.sock', ['a'])] });
    expect(launchOrder(vmConfig(vm, [a, b, SLEEPER])).map((s) => s.name)).toEqual(['b', 'a', 'vmm']);
    const vmmOwns = { ...SLEEPER, sockets: [sock('/run/vmsandbox/vm1/vmm.sock', ['a'])] };
    expect(launchOrder(vmConfig(vm, [{ ...a, sockets: [] }, vmmOwns])).map((s) => s.name)).toEqual(['vmm', 'a']);
    const cyclic = vmConfig(vm, [{ ...b, sockets: [sock('/run/vmsandbox/vm1/b.sock', ['a'])] }, { ...a, sockets: [sock('/run/vmsandbox/vm1/a.sock', ['b'])] }, SLEEPER]);
    expect(refusals(cyclic)).toContainEqual({ field: expect.stringMatching(/^services\[\d\]$/), message: expect.stringMatching(/cannot form a cycle/) });
  });

  it('clones the init into its own IPC namespace always, and its own network namespace with lo up unless network is "host"', () => {
    const plan = (network?: 'none' | 'host') => {
      const r = planSandbox(vmConfig(vm, [SLEEPER], network ? { network } : {}), host);
      if (!r.ok) throw new Error(JSON.stringify(r.refusals));
      return r.plan;
    };
    // Absent (a config built in code) is the safe default, as the loader's "none".
    expect(plan().namespaces).toEqual({ clone: ['ipc', 'net'], loopback: true });
    expect(plan('none').namespaces).toEqual({ clone: ['ipc', 'net'], loopback: true });
    expect(plan('host').namespaces).toEqual({ clone: ['ipc'], loopback: false });
    expect(setupOperations(plan())).toContain('init clone into vmsandbox-test/vm1/init ns pid,mnt,ipc,net lo up');
    expect(setupOperations(plan('host'))).toContain('init clone into vmsandbox-test/vm1/init ns pid,mnt,ipc');
  });

  it('gives Landlock rules for what the sandbox hands a service, and nothing for storage "none"', () => {
    const config = vmConfig(vm, [SLEEPER]);
    const rw = landlockRules(config, service({ name: 's', argv: ['/bin/true'], storage: 'rw', tmp: '8M' }));
    expect(rw.write).toEqual(expect.arrayContaining(['/srv/vm1', '/tmp', '/dev/null', '/run/vmsandbox/vm1/s']));
    const none = landlockRules(config, service({ name: 's', argv: ['/bin/true'] }));
    expect([...none.read, ...none.write]).not.toContain('/srv/vm1');
    expect(none.write).not.toContain('/tmp');
  });

  it('refuses, each with its field, forbidden and unknown capabilities, a relative argv[0], a device granted twice', () => {
    const config = vmConfig(vm, [
      service({ name: 's', argv: ['true'], caps: ['CAP_SYS_ADMIN', 'CAP_NOPE', 'net_bind_service'], devices: ['/dev/kvm'] }),
      { ...SLEEPER, devices: ['/dev/kvm'] },
    ]);
    expect(refusals(config)).toEqual([
      { field: 'services[1].devices[0]', message: expect.stringMatching(/granted to both s and vmm/) },
      { field: 'services[0].argv[0]', message: expect.stringMatching(/absolute path/) },
      { field: 'services[0].caps[0]', message: expect.stringMatching(/CAP_SYS_ADMIN would let the service leave its sandbox/) },
      { field: 'services[0].caps[1]', message: 'unknown capability CAP_NOPE' },
    ]);
  });

  it('refuses a kernel below landlock.minAbi unless degrading is allowed, and then plans no ruleset at ABI 0', () => {
    const config = vmConfig(vm, [SLEEPER], { landlock: { minAbi: 6, allowDegraded: false } });
    expect(refusals(config, { ...host, landlockAbi: 4 })).toEqual([
      { field: 'landlock.minAbi', message: expect.stringMatching(/offers Landlock ABI 4, the config needs 6 \(missing: device ioctl control, signal scoping/) },
    ]);
    const degraded = planSandbox({ ...config, landlock: { minAbi: 6, allowDegraded: true } }, { ...host, landlockAbi: 0 });
    expect(degraded.ok).toBe(true);
    if (!degraded.ok) return;
    expect(degraded.plan.landlock.degraded).toContain('filesystem access rules');
    expect(degraded.plan.services[0]!.landlock).toBeNull();
    expect(spawnFields(degraded.plan.services[0]!).some((f) => f.startsWith('ro=') || f.startsWith('rule='))).toBe(false);
  });

  it('refuses the host network on a kernel that cannot restrict TCP (Landlock ABI < 4) unless degrading is allowed', () => {
    const config = vmConfig(vm, [SLEEPER], { network: 'host', landlock: { minAbi: 1, allowDegraded: false } });
    expect(refusals(config, { ...host, landlockAbi: 3 })).toEqual([{ field: 'network', message: expect.stringMatching(/cannot restrict TCP bind\/connect \(ABI 4\)/) }]);
    expect(planSandbox({ ...config, landlock: { minAbi: 1, allowDegraded: true } }, { ...host, landlockAbi: 3 }).ok).toBe(true);
    expect(refusals(config, host)).toEqual([]);
    expect(refusals({ ...config, network: 'none' }, { ...host, landlockAbi: 3 })).toEqual([]);
  });

  it('refuses a limit whose controller the host lacks, naming the limit; skips it with limitsOptional', () => {
    const config = vmConfig(vm, [{ ...SLEEPER, limits: { 'pids.max': 64 } }], { cgroup: { parent: 'p', limits: { 'memory.max': '1G' }, limitsOptional: false } });
    const noMemory = { ...host, cgroupControllers: ['pids'] };
    expect(refusals(config, noMemory)).toEqual([{ field: 'cgroup.limits["memory.max"]', message: expect.stringMatching(/memory controller is not available.*cgroup.limitsOptional/) }]);
    const optional = planSandbox({ ...config, cgroup: { ...config.cgroup, limitsOptional: true } }, noMemory);
    expect(optional.ok && optional.plan.cgroup).toMatchObject({
      limits: [{ cgroup: 'p/vm1/svc-vmm', key: 'pids.max', value: '64', field: 'services[0].limits["pids.max"]' }],
      skipped: [expect.stringMatching(/^cgroup.limits\["memory.max"\]: /)],
    });
  });

  it('decides the mount flags the init applies: private tmpfs nosuid+nodev, storage bound nosuid+nodev (read-only for ro) or hidden', () => {
    const config = vmConfig(vm, [
      SLEEPER,
      service({ name: 'rw', argv: ['/bin/true'], storage: 'rw', tmp: '8M' }),
      service({ name: 'ro', argv: ['/bin/true'], storage: 'ro' }),
    ]);
    const r = planSandbox(config, host);
    if (!r.ok) throw new Error(JSON.stringify(r.refusals));
    const by = (n: string) => r.plan.services.find((s) => s.name === n)!;
    expect(by('rw').tmpfs).toEqual([{ path: '/tmp', flags: MS.NOSUID | MS.NODEV, data: 'mode=1777,size=8M' }]);
    expect(by('rw').storage.bind).toEqual({ set: MOUNT_ATTR.NOSUID | MOUNT_ATTR.NODEV, clr: MOUNT_ATTR.RDONLY });
    expect(by('ro').storage.bind).toEqual({ set: MOUNT_ATTR.NOSUID | MOUNT_ATTR.NODEV | MOUNT_ATTR.RDONLY, clr: 0 });
    expect(by('vmm').storage).toMatchObject({ bind: null, hide: { flags: MS.RDONLY | MS.NOSUID | MS.NODEV | MS.NOEXEC, data: 'mode=000,size=4k' } });
    expect(spawnFields(by('rw'))).toEqual(expect.arrayContaining(['tmp=6,mode=1777,size=8M', 'storagebind=6,1']));
    expect(spawnFields(by('vmm'))).toContain('storagehide=f,mode=000,size=4k');
  });

  it('plans a seccomp filter per service: the default deny list as sc= fields by name, minus seccomp.allow; refuses an unknown name', () => {
    const config = vmConfig(vm, [service({ name: 'fs', argv: ['/bin/true'], seccomp: { allow: ['keyctl', 'prlimit64'] } }), SLEEPER]);
    const r = planSandbox(config, host);
    if (!r.ok) throw new Error(JSON.stringify(r.refusals));
    const [fs, vmm] = r.plan.services;
    const fields = (s: typeof fs) => spawnFields(s!).filter((f) => f.startsWith('sc='));
    expect(fields(vmm)).toEqual(expect.arrayContaining([
      'sc=unshare,1,0,me,10000000,10000000',
      'sc=clone,1,0,me,10000000,10000000',
      'sc=clone3,38',
      'sc=keyctl,1',
      'sc=prlimit64,1,0,ne,0',
      'sc=setpriority,1,0,ne,0',
      'sc=setpriority,1,1,ne,0',
      'sc=ioprio_set,1,0,ne,1',
      'sc=ioprio_set,1,1,ne,0',
      'sc=bpf,1',
    ]));
    expect(fields(fs)).not.toContain('sc=keyctl,1');
    expect(fields(fs).some((f) => f.startsWith('sc=prlimit64,'))).toBe(false);
    expect(fields(fs)).toContain('sc=add_key,1');
    // The record line carries the filter, so both backends' records show it.
    expect(setupOperations(r.plan).at(-1)).toContain('seccomp {"rules":[{"syscall":"unshare"');
    expect(refusals(vmConfig(vm, [service({ name: 'fs', argv: ['/bin/true'], seccomp: { allow: ['read'] } }), SLEEPER]))).toEqual([
      { field: 'services[0].seccomp.allow[0]', message: expect.stringContaining('"read" is not a syscall the default filter denies') },
    ]);
  });

  it('orders the launches (the vmm last) and lists every setup operation once', () => {
    const config = vmConfig(vm, [SLEEPER, service({ name: 'virtiofsd', argv: ['/bin/true'], caps: ['net_bind_service'] })]);
    const r = planSandbox(config, host);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.plan.services.map((s) => s.name)).toEqual(['virtiofsd', 'vmm']);
    expect(spawnFields(r.plan.services[0]!)).toContain('cap=10');
    const ops = setupOperations(r.plan);
    expect(ops[0]).toBe(`cgroup mkdir ${r.plan.cgroup.init}`);
    expect(ops.filter((l) => l.startsWith('spawn ')).map((l) => l.split(' ')[1])).toEqual(['virtiofsd', 'vmm']);
    expect(ops.filter((l) => l.startsWith('mount '))).toHaveLength(r.plan.mounts.length);
  });
});
