// Landlock in the plan (plan/landlock.ts): the masks and flags the sandbox init applies, per ABI,
// and their encoding in the spawn request (effects/linux/spawnRequest.ts). The init decides none of
// it (native/spawn.c); test/linux/escape.test.ts checks on the real kernel what these masks deny.
// Pure.

import { describe, expect, it } from 'vitest';
import { spawnFields } from '../effects/linux/spawnRequest.js';
import {
  FILE_ACCESS,
  handledAccessFs,
  LANDLOCK,
  planServiceLandlock,
  READ_ACCESS,
  scopedFor,
  type LandlockPlan,
} from '../plan/landlock.js';
import type { ServicePlan } from '../plan/types.js';

const FS = LANDLOCK.fs;
const ALL_ABI1 = 0x1fff; // EXECUTE .. MAKE_SYM, bits 0..12

describe('plan/landlock: the uapi table', () => {
  it('holds the kernel header values, each bit once per group, in the order the ABIs added them', () => {
    expect(FS.EXECUTE.bit).toBe(1);
    expect(FS.MAKE_SYM.bit).toBe(0x1000);
    expect(FS.REFER).toEqual({ bit: 0x2000, abi: 2 });
    expect(FS.TRUNCATE).toEqual({ bit: 0x4000, abi: 3 });
    expect(FS.IOCTL_DEV).toEqual({ bit: 0x8000, abi: 5 });
    expect(LANDLOCK.net).toEqual({ BIND_TCP: { bit: 1, abi: 4 }, CONNECT_TCP: { bit: 2, abi: 4 } });
    expect(LANDLOCK.scope).toEqual({ ABSTRACT_UNIX_SOCKET: { bit: 1, abi: 6 }, SIGNAL: { bit: 2, abi: 6 } });
    expect(Object.values(LANDLOCK.restrictSelf).map((f) => [f.bit, f.abi])).toEqual([[1, 7], [2, 7], [4, 7]]);
    for (const group of Object.values(LANDLOCK)) {
      const entries = Object.values(group) as Array<{ bit: number; abi: number }>;
      const bits = entries.map((e) => e.bit);
      expect(new Set(bits).size).toBe(bits.length);
      for (const b of bits) expect(b & (b - 1), `${b} is one bit`).toBe(0);
      const abis = entries.map((e) => e.abi);
      expect(abis).toEqual([...abis].sort((a, b) => a - b));
    }
  });
});

describe('plan/landlock: masks per ABI', () => {
  it('handles every filesystem right the ABI knows', () => {
    expect([1, 2, 3, 4, 5, 6, 7].map(handledAccessFs)).toEqual([
      ALL_ABI1,
      ALL_ABI1 | FS.REFER.bit,
      ALL_ABI1 | FS.REFER.bit | FS.TRUNCATE.bit,
      ALL_ABI1 | FS.REFER.bit | FS.TRUNCATE.bit, // ABI 4 added network rights only
      0xffff,
      0xffff,
      0xffff,
    ]);
    // A newer kernel than the table: what the table knows, nothing invented.
    expect(handledAccessFs(8)).toBe(0xffff);
  });

  it('scopes signals and abstract unix sockets from ABI 6 only (older kernels reject a non-zero scoped)', () => {
    expect([1, 2, 3, 4, 5].map(scopedFor)).toEqual([0, 0, 0, 0, 0]);
    expect(scopedFor(6)).toBe(LANDLOCK.scope.SIGNAL.bit | LANDLOCK.scope.ABSTRACT_UNIX_SOCKET.bit);
    expect(scopedFor(7)).toBe(3);
  });

  it('ABI 0 (no Landlock, allowed by the config): no ruleset at all', () => {
    expect(planServiceLandlock(0, { read: ['/usr'], write: ['/tmp'] })).toBeNull();
  });

  it('read grants execute, read file and read dir; write grants every handled right; from ABI 7 the service\'s denials are audited', () => {
    expect(READ_ACCESS).toBe(FS.EXECUTE.bit | FS.READ_FILE.bit | FS.READ_DIR.bit);
    for (let abi = 1; abi <= 7; abi++) {
      const p = planServiceLandlock(abi, { read: ['/usr', '/etc'], write: ['/tmp'] })!;
      expect(p).toEqual<LandlockPlan>({
        abi,
        handledFs: handledAccessFs(abi),
        scoped: scopedFor(abi),
        // LOG_NEW_EXEC_ON: the service is exec'd into the domain; without it its denials are not audited.
        restrictFlags: abi >= 7 ? LANDLOCK.restrictSelf.LOG_NEW_EXEC_ON.bit : 0,
        fileAccess: FILE_ACCESS & handledAccessFs(abi),
        rules: [
          { path: '/usr', access: 0b1101 },
          { path: '/etc', access: 0b1101 },
          { path: '/tmp', access: handledAccessFs(abi) },
        ],
        handledNet: 0,
        ports: [],
        read: ['/usr', '/etc'],
        write: ['/tmp'],
      });
      // Nothing that changes the tree through a read rule, whatever the ABI.
      for (const r of [FS.WRITE_FILE, FS.TRUNCATE, FS.IOCTL_DEV, FS.REFER, FS.REMOVE_FILE, FS.MAKE_REG]) expect(p.rules[0]!.access & r.bit).toBe(0);
    }
  });

  it('TCP: handled (bind and connect denied but the listed ports) only when asked for and from ABI 4', () => {
    const tcp = { bind: [8080], connect: [443, 8080] };
    expect(planServiceLandlock(3, { read: [], write: [] }, tcp)!.handledNet).toBe(0);
    expect(planServiceLandlock(7, { read: [], write: [] }, null)!.handledNet).toBe(0);
    const p = planServiceLandlock(4, { read: [], write: [] }, tcp)!;
    expect(p.handledNet).toBe(LANDLOCK.net.BIND_TCP.bit | LANDLOCK.net.CONNECT_TCP.bit);
    expect(p.ports).toEqual([
      { port: 8080, access: LANDLOCK.net.BIND_TCP.bit | LANDLOCK.net.CONNECT_TCP.bit },
      { port: 443, access: LANDLOCK.net.CONNECT_TCP.bit },
    ]);
  });

  it('a path both read and written is one rule with both grants', () => {
    const p = planServiceLandlock(5, { read: ['/srv', '/usr'], write: ['/srv'] })!;
    expect(p.rules).toEqual([
      { path: '/srv', access: 0xffff },
      { path: '/usr', access: READ_ACCESS },
    ]);
  });

  it('on a non-directory a rule keeps only the file rights of its ABI', () => {
    expect(FILE_ACCESS).toBe(FS.EXECUTE.bit | FS.WRITE_FILE.bit | FS.READ_FILE.bit | FS.TRUNCATE.bit | FS.IOCTL_DEV.bit);
    expect(planServiceLandlock(1, { read: [], write: [] })!.fileAccess).toBe(0b111);
    expect(planServiceLandlock(3, { read: [], write: [] })!.fileAccess).toBe(0b111 | FS.TRUNCATE.bit);
    expect(planServiceLandlock(7, { read: [], write: [] })!.fileAccess).toBe(0b111 | FS.TRUNCATE.bit | FS.IOCTL_DEV.bit);
  });
});

describe('spawn request: the Landlock fields', () => {
  const service = (landlock: LandlockPlan | null): ServicePlan => ({
    name: 'vmm',
    vmm: true,
    uid: 62001,
    gid: 62001,
    groups: [],
    caps: [],
    securebits: 0,
    sockets: [],
    cgroup: 'vmsandbox/vm1/svc-vmm',
    leaf: 'svc-vmm',
    storage: { access: 'none', path: '/var/lib/vm1', bind: null, hide: { flags: 0xf, data: 'mode=000,size=4k' } },
    tmpfs: [],
    keep: ['/run/vmsandbox/vm1'],
    view: { path: '/run/vmsandbox/vm1', flags: 0xf, data: 'mode=0711,size=16k', show: ['/run/vmsandbox/vm1/vmm'] },
    landlock,
    seccomp: null,
    argv: ['/bin/sleep', '1000'],
    env: [],
  });

  it('TCP rules: llnet= and one port= per port, only when handled', () => {
    const tcp = planServiceLandlock(4, { read: [], write: [] }, { bind: [8080], connect: [443, 8080] });
    expect(spawnFields(service(tcp))).toEqual(expect.arrayContaining(['llnet=3', 'port=3,8080', 'port=2,443']));
    expect(spawnFields(service(planServiceLandlock(7, { read: [], write: [] }))).some((f) => f.startsWith('llnet=') || f.startsWith('port='))).toBe(false);
  });
  const landlockFields = (f: string[]) => f.filter((x) => /^(ll[a-z]+|rule|landlock|ro|rw)=/.test(x));

  it('hands the init the masks and flags in hex, one rule= per path with its rights', () => {
    const f = spawnFields(service(planServiceLandlock(6, { read: ['/usr'], write: ['/run/vmsandbox/vm1/vmm', '/dev/null'] })));
    expect(landlockFields(f)).toEqual([
      'llfs=ffff',
      'llscope=3',
      'llflags=0',
      'llfile=c007',
      'rule=d,/usr',
      'rule=ffff,/run/vmsandbox/vm1/vmm',
      'rule=ffff,/dev/null',
    ]);
    expect(landlockFields(spawnFields(service(planServiceLandlock(3, { read: ['/usr'], write: [] }))))).toEqual([
      'llfs=7fff',
      'llscope=0',
      'llflags=0',
      'llfile=4007',
      'rule=d,/usr',
    ]);
  });

  it('no Landlock: no Landlock field at all (the init turns it on only with llfs=)', () => {
    expect(landlockFields(spawnFields(service(null)))).toEqual([]);
  });
});
