// Pure parts of the Linux backend (no root needed): protocol encoding, mountinfo parsing, plans.

import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { findCgroup2Mount } from '../../effects/linux/cgroup.js';
import { landlockRules, MOUNT_ATTR, planMounts, spawnFields } from '../../effects/linux/plan.js';
import { decodeToken, encodeToken } from '../../effects/linux/protocol.js';
import { service, SLEEPER, vmConfig } from './helpers.js';

const vm = { name: 'vm1', storage: '/srv/vm1', runtimeDir: '/run/vmsandbox/vm1', scratch: '/tmp/x' };

describe('linux backend: pure parts', () => {
  it('encodes every token (no NUL) so that it decodes back and contains no space or newline', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }).filter((s) => !s.includes('\0')), (s) => {
        const t = encodeToken(s);
        expect(t).not.toMatch(/[ \n\t]/);
        expect(t.length).toBeGreaterThan(0);
        expect(decodeToken(t)).toBe(s);
      }),
    );
    expect(encodeToken('')).toBe('~');
    expect(encodeToken('~')).toBe('%7E');
    expect(() => encodeToken('a\0b')).toThrow(/NUL/);
  });

  it('finds the cgroup2 mount in mountinfo, never a cgroup v1 one', () => {
    const mi = [
      '30 1 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw',
      '31 30 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory',
      '40 30 0:37 / /sys/fs/cgroup/uni\\040fied rw,relatime - cgroup2 cgroup2 rw',
    ].join('\n');
    expect(findCgroup2Mount(mi)).toBe('/sys/fs/cgroup/uni fied');
    expect(findCgroup2Mount(mi.split('\n').slice(0, 2).join('\n'))).toBeNull();
  });

  it('plans the mounts: everything read-only first, fresh /proc and /sys, /dev moved in, runtime dir last', () => {
    const config = vmConfig(vm, [service({ name: 'gpu', argv: ['/bin/true'], devices: ['/dev/dri/renderD128'] }), SLEEPER]);
    const ops = planMounts(config);
    expect(ops[0]).toEqual({ verb: 'setattr', path: '/', set: MOUNT_ATTR.RDONLY | MOUNT_ATTR.NOSUID, clr: 0, recursive: true });
    expect(ops.at(-1)).toMatchObject({ verb: 'setattr', path: '/run/vmsandbox/vm1', clr: MOUNT_ATTR.RDONLY });
    expect(ops).toContainEqual(expect.objectContaining({ verb: 'mount', fstype: 'proc', target: '/proc' }));
    expect(ops).toContainEqual(expect.objectContaining({ verb: 'mkdir', path: '/tmp/dev/dri' }));
    // A granted device is a private node owned by the service that asked for it, not a bind.
    expect(ops).toContainEqual({ verb: 'mknod', source: '/dev/dri/renderD128', path: '/tmp/dev/dri/renderD128', mode: 0o600, uid: 62001, gid: 62001 });
    // No host device bound besides the base set.
    const binds = ops.filter((o) => o.verb === 'mount' && o.source.startsWith('/dev/')).map((o) => (o as { source: string }).source);
    expect(binds.sort()).toEqual(['/dev/full', '/dev/null', '/dev/random', '/dev/tty', '/dev/urandom', '/dev/zero']);
    expect(() => planMounts({ ...config, runtimeDir: 'relative' })).toThrow(/runtimeDir/);
  });

  it('gives Landlock rules for what the sandbox hands a service, and nothing for storage "none"', () => {
    const config = vmConfig(vm, [SLEEPER]);
    const rw = landlockRules(config, service({ name: 's', argv: ['/bin/true'], storage: 'rw', tmp: '8M' }));
    expect(rw.write).toEqual(expect.arrayContaining(['/srv/vm1', '/tmp', '/dev/null', '/run/vmsandbox/vm1/s']));
    const none = landlockRules(config, service({ name: 's', argv: ['/bin/true'] }));
    expect([...none.read, ...none.write]).not.toContain('/srv/vm1');
    expect(none.write).not.toContain('/tmp');
  });

  it('refuses forbidden capabilities, unknown ones, and a relative argv[0]', () => {
    const config = vmConfig(vm, [SLEEPER]);
    expect(() => spawnFields(config, service({ name: 's', argv: ['/bin/true'], caps: ['CAP_SYS_ADMIN'] }), 7)).toThrow(/CAP_SYS_ADMIN/);
    expect(() => spawnFields(config, service({ name: 's', argv: ['/bin/true'], caps: ['CAP_NOPE'] }), 7)).toThrow(/unknown capability/);
    expect(() => spawnFields(config, service({ name: 's', argv: ['true'] }), 7)).toThrow(/argv\[0\]/);
    expect(spawnFields(config, service({ name: 's', argv: ['/bin/true'], caps: ['net_bind_service'] }), 7)).toContain('cap=10');
    expect(spawnFields(config, service({ name: 's', argv: ['/bin/true'] }), 0).some((f) => f.startsWith('ro='))).toBe(false);
  });
});
