// Config v1: every loader rule with the exact field path it reports, the shipped examples, the
// check/schema commands, fuzzing of the loader and of the JSON error locator, and a cross-check
// that the JSON Schema accepts exactly what the loader accepts.

import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, posix } from 'node:path';
import { Ajv } from 'ajv';
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { type CliIo } from '../cli/io.js';
import { checkMain } from '../cli/check.js';
import { schemaMain } from '../cli/schema.js';
import { demoConfigPath } from '../config/demo.js';
import { findJsonSyntaxError } from '../config/jsonSyntax.js';
import { ConfigError, loadConfig, parseConfig } from '../config/load.js';
import { configSchema } from '../config/schema.js';
import { FORBIDDEN_CAPABILITIES, MAX_EXEC_BYTES } from '../config/rules.js';
import type { VmConfig } from '../config/types.js';
import { FORBIDDEN_CAPS } from '../plan/service.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Raw = any;

function base(): Raw {
  return {
    name: 'demo',
    storage: '/var/lib/vmsandbox/demo',
    services: [
      { name: 'virtiofsd', argv: ['/usr/lib/qemu/virtiofsd', '--cache=never'], uid: 62001, gid: 62001 },
      { name: 'vmm', argv: ['/usr/bin/qemu-system-x86_64'], uid: 62002, gid: 62002, vmm: true },
    ],
  };
}

function edited(edit: (c: Raw) => void): Raw {
  const c = base();
  edit(c);
  return c;
}

function problemsOf(raw: unknown): string[] {
  try {
    parseConfig(raw);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as ConfigError).problems;
  }
  throw new Error('config was accepted, expected problems');
}

/** The config is rejected with exactly one problem, at `path`, mentioning `fragment`. */
function expectOneProblem(raw: unknown, path: string, fragment: string): void {
  const problems = problemsOf(raw);
  expect(problems).toHaveLength(1);
  expect(problems[0]?.startsWith(`${path}: `), `${problems[0]} should start with "${path}: "`).toBe(true);
  expect(problems[0]).toContain(fragment);
}

const svc = (c: Raw, i: number) => c.services[i];

describe('defaults', () => {
  test('a minimal config is filled in completely', () => {
    const config = parseConfig(base());
    const expected: VmConfig = {
      name: 'demo',
      storage: '/var/lib/vmsandbox/demo',
      runtimeDir: '/run/vmsandbox/demo',
      timeouts: { setupMs: 30000, stopMs: 10000, killMs: 2000 },
      cgroup: { parent: 'vmsandbox', limits: {}, limitsOptional: false },
      landlock: { minAbi: 6, allowDegraded: false },
      network: 'none',
      services: [
        {
          name: 'virtiofsd', argv: ['/usr/lib/qemu/virtiofsd', '--cache=never'], env: {}, uid: 62001, gid: 62001,
          groups: [], vmm: false, storage: 'none', tmp: false, shm: false, landlock: { read: [], write: [] },
          limits: {}, caps: [], devices: [], sockets: [], securebits: [], seccomp: { allow: [] }, stop: { signal: 'SIGTERM' }, ready: 'immediate',
          onExit: 'stop',
        },
        {
          name: 'vmm', argv: ['/usr/bin/qemu-system-x86_64'], env: {}, uid: 62002, gid: 62002, groups: [], vmm: true,
          storage: 'none', tmp: false, shm: false, landlock: { read: [], write: [] }, limits: {}, caps: [],
          devices: [], sockets: [], securebits: [], seccomp: { allow: [] }, stop: { signal: 'SIGTERM' }, ready: 'immediate', onExit: 'stop',
        },
      ],
    };
    expect(config).toEqual(expected);
  });

  test('partial sections keep the defaults of the keys they leave out', () => {
    const config = parseConfig(edited((c) => {
      c.timeouts = { stopMs: 0 };
      c.cgroup = { limitsOptional: true };
      c.landlock = { minAbi: 1 };
      svc(c, 0).landlock = { read: ['/usr'] };
    }));
    expect(config.timeouts).toEqual({ setupMs: 30000, stopMs: 0, killMs: 2000 });
    expect(config.cgroup).toEqual({ parent: 'vmsandbox', limits: {}, limitsOptional: true });
    expect(config.landlock).toEqual({ minAbi: 1, allowDegraded: false });
    expect(config.services[0]?.landlock).toEqual({ read: ['/usr'], write: [] });
  });
});

describe('top level', () => {
  test.each([5, null, [], 'x'])('a non-object config (%j) is one problem at (root)', (raw) => {
    expectOneProblem(raw, '(root)', 'must be an object');
  });

  test('unknown keys are named, with the allowed keys', () => {
    expectOneProblem(edited((c) => (c.nmae = 'x')), 'nmae',
      'unknown key; allowed keys are: name, storage, runtimeDir, timeouts, cgroup, landlock, network, services');
    expectOneProblem(edited((c) => (c['my key'] = 1)), '["my key"]', 'unknown key');
  });

  test('name is a short identifier', () => {
    expectOneProblem(edited((c) => delete c.name), 'name', 'is required');
    for (const bad of ['Demo', '1vm', 'a_b', '', 'a'.repeat(32), 5]) {
      expectOneProblem(edited((c) => (c.name = bad)), 'name', 'short identifier');
    }
    expect(parseConfig(edited((c) => (c.name = `a${'-'.repeat(30)}`))).name).toBe(`a${'-'.repeat(30)}`);
  });

  test('storage is an absolute path, normalized, without "..", not "/"', () => {
    expect(problemsOf(edited((c) => (c.storage = 'vms/foo')))).toEqual(['storage: must be an absolute path (got "vms/foo")']);
    expectOneProblem(edited((c) => delete c.storage), 'storage', 'is required');
    expectOneProblem(edited((c) => (c.storage = '/a/../b')), 'storage', '".." segments');
    expectOneProblem(edited((c) => (c.storage = '/a\0b')), 'storage', 'NUL');
    expectOneProblem(edited((c) => (c.storage = '/./')), 'storage', 'other than "/"');
    expectOneProblem(edited((c) => (c.storage = 42)), 'storage', 'must be an absolute path (got 42)');
    expect(parseConfig(edited((c) => (c.storage = '//x/./y/'))).storage).toBe('/x/y');
    expect(parseConfig(edited((c) => (c.storage = '/a/..b'))).storage).toBe('/a/..b');
  });

  test('runtimeDir defaults from the name and follows the path rules', () => {
    expect(parseConfig(edited((c) => (c.name = 'vm-2'))).runtimeDir).toBe('/run/vmsandbox/vm-2');
    expect(parseConfig(edited((c) => (c.runtimeDir = '/run/x/'))).runtimeDir).toBe('/run/x');
    expectOneProblem(edited((c) => (c.runtimeDir = 'run/x')), 'runtimeDir', 'must be an absolute path');
    expectOneProblem(edited((c) => (c.runtimeDir = '/')), 'runtimeDir', 'other than "/"');
  });

  test('network is "none" (the default) or "host"', () => {
    expect(parseConfig(base()).network).toBe('none');
    expect(parseConfig(edited((c) => (c.network = 'none'))).network).toBe('none');
    expect(parseConfig(edited((c) => (c.network = 'host'))).network).toBe('host');
    for (const bad of ['Host', 'bridge', '', true, null, ['host']]) {
      expectOneProblem(edited((c) => (c.network = bad)), 'network', 'must be "none" (the VM\'s own network namespace');
    }
  });

  test('timeouts are bounded integers', () => {
    expectOneProblem(edited((c) => (c.timeouts = 5)), 'timeouts', 'must be an object');
    expectOneProblem(edited((c) => (c.timeouts = { stopms: 1 })), 'timeouts.stopms', 'allowed keys are: setupMs, stopMs, killMs');
    const cases: [string, unknown, string][] = [
      ['setupMs', 0, 'from 1 to 3600000'], ['stopMs', -1, 'from 0 to 3600000'], ['killMs', 0, 'from 1 to 3600000'],
      ['killMs', 1.5, 'integer'], ['setupMs', 3600001, 'from 1 to 3600000'], ['stopMs', '100', 'integer'],
    ];
    for (const [key, value, fragment] of cases) {
      expectOneProblem(edited((c) => (c.timeouts = { [key]: value })), `timeouts.${key}`, fragment);
    }
    const t = parseConfig(edited((c) => (c.timeouts = { setupMs: 1, stopMs: 0, killMs: 3600000 }))).timeouts;
    expect(t).toEqual({ setupMs: 1, stopMs: 0, killMs: 3600000 });
  });

  test('cgroup.parent is a relative path of identifier segments', () => {
    for (const bad of ['/vmsandbox', 'a/../b', 'a//b', '', '.hidden', 'a/', 'a b', 7]) {
      expectOneProblem(edited((c) => (c.cgroup = { parent: bad })), 'cgroup.parent', 'relative cgroup path');
    }
    for (const good of ['vms', 'machines/vms', 'vmsandbox.slice', 'user@1000.service/vms_1']) {
      expect(parseConfig(edited((c) => (c.cgroup = { parent: good }))).cgroup.parent).toBe(good);
    }
  });

  test('cgroup and landlock sections', () => {
    expectOneProblem(edited((c) => (c.cgroup = { limitsOptional: 'yes' })), 'cgroup.limitsOptional', 'true or false');
    expectOneProblem(edited((c) => (c.cgroup = { limit: {} })), 'cgroup.limit', 'allowed keys are: parent, limits, limitsOptional');
    expectOneProblem(edited((c) => (c.cgroup = [])), 'cgroup', 'must be an object');
    expectOneProblem(edited((c) => (c.landlock = { minAbi: 0 })), 'landlock.minAbi', 'from 1 to 7');
    expectOneProblem(edited((c) => (c.landlock = { minAbi: 8 })), 'landlock.minAbi', 'from 1 to 7');
    expectOneProblem(edited((c) => (c.landlock = { allowDegraded: 1 })), 'landlock.allowDegraded', 'true or false');
    expectOneProblem(edited((c) => (c.landlock = { abi: 1 })), 'landlock.abi', 'allowed keys are: minAbi, allowDegraded');
    expect(parseConfig(edited((c) => (c.landlock = { minAbi: 7, allowDegraded: true }))).landlock)
      .toEqual({ minAbi: 7, allowDegraded: true });
  });

  test('services is a non-empty array of objects', () => {
    expectOneProblem(edited((c) => delete c.services), 'services', 'is required');
    expectOneProblem(edited((c) => (c.services = [])), 'services', 'non-empty array');
    expectOneProblem(edited((c) => (c.services = {})), 'services', 'non-empty array');
    expectOneProblem(edited((c) => (c.services[0] = 5)), 'services[0]', 'must be an object (got 5)');
  });

  test('every problem is reported at once, one per line in the message', () => {
    const raw = edited((c) => {
      c.name = 'Bad';
      c.storage = 'rel';
      c.timeouts = { killMs: 0 };
      svc(c, 0).uid = 0;
      svc(c, 1).caps = ['CAP_SYS_ADMIN'];
    });
    let error: unknown;
    try {
      parseConfig(raw);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const { problems, message, name } = error as ConfigError;
    expect(name).toBe('ConfigError');
    expect(problems.map((p) => p.slice(0, p.indexOf(': ')))).toEqual(
      ['name', 'storage', 'timeouts.killMs', 'services[0].uid', 'services[1].caps[0]'],
    );
    expect(message).toBe(problems.join('\n'));
  });
});

describe('limits', () => {
  const withLimit = (key: string, value: unknown) => edited((c) => (c.cgroup = { limits: { [key]: value } }));
  const accepted = (key: string, value: unknown) => parseConfig(withLimit(key, value)).cgroup.limits[key];

  test('only known cgroup files, listed in the error', () => {
    expectOneProblem(withLimit('memory.foo', 1), 'cgroup.limits["memory.foo"]',
      'unknown cgroup limit; allowed limits are: memory.max, memory.high, memory.low, memory.min, memory.swap.max, ' +
        'pids.max, cpu.max, cpu.weight, io.weight');
    expectOneProblem(edited((c) => (c.cgroup = { limits: [] })), 'cgroup.limits', 'must be an object');
  });

  test.each(['memory.max', 'memory.high', 'memory.low', 'memory.min', 'memory.swap.max'])('%s takes bytes, sizes and "max"', (key) => {
    for (const good of ['512M', '1G', '2T', '1024', 'max', 0, 1073741824]) expect(accepted(key, good)).toBe(good);
    for (const bad of [-1, 1.5, '512 M', '512MB', '1g', 'MAX', '', true, null]) {
      expectOneProblem(withLimit(key, bad), `cgroup.limits["${key}"]`, 'must be a byte count');
    }
  });

  test('pids.max', () => {
    for (const good of [1, 512, 'max']) expect(accepted('pids.max', good)).toBe(good);
    for (const bad of [0, -1, '5', 2.5]) expectOneProblem(withLimit('pids.max', bad), 'cgroup.limits["pids.max"]', 'integer ≥ 1 or "max"');
  });

  test('cpu.max', () => {
    for (const good of ['max', '50000 100000', 'max 100000', '1000 1000', '1000 1000000']) {
      expect(accepted('cpu.max', good)).toBe(good);
    }
    for (const bad of ['50000', '999 100000', '1000 999', '1000 1000001', '50000  100000', 50000, 'max max', '0 1000']) {
      expectOneProblem(withLimit('cpu.max', bad), 'cgroup.limits["cpu.max"]', '"QUOTA PERIOD"');
    }
  });

  test.each(['cpu.weight', 'io.weight'])('%s is 1 to 10000', (key) => {
    for (const good of [1, 100, 10000]) expect(accepted(key, good)).toBe(good);
    for (const bad of [0, 10001, '100', 1.5]) expectOneProblem(withLimit(key, bad), `cgroup.limits["${key}"]`, 'from 1 to 10000');
  });

  test('service limits follow the same rules, at their own path', () => {
    expectOneProblem(edited((c) => (svc(c, 0).limits = { 'pids.max': 0 })), 'services[0].limits["pids.max"]', 'integer ≥ 1');
    const config = parseConfig(edited((c) => (svc(c, 0).limits = { 'memory.max': '256M', 'pids.max': 64 })));
    expect(config.services[0]?.limits).toEqual({ 'memory.max': '256M', 'pids.max': 64 });
  });
});

describe('services', () => {
  test('unknown keys and names', () => {
    expectOneProblem(edited((c) => (svc(c, 0).user = 'x')), 'services[0].user',
      'unknown key; allowed keys are: name, argv, env, uid, gid, groups, vmm, storage, tmp, shm, landlock, limits, caps, devices, sockets, securebits, seccomp, stop, ready, onExit');
    expectOneProblem(edited((c) => delete svc(c, 0).name), 'services[0].name', 'is required');
    expectOneProblem(edited((c) => (svc(c, 1).name = 'VMM')), 'services[1].name', 'short identifier');
  });

  test('duplicate names name both indices', () => {
    expect(problemsOf(edited((c) => (svc(c, 0).name = 'vmm')))).toEqual(['services[1].name: duplicate name "vmm" (also used by services[0])']);
  });

  test('argv: non-empty, argv[0] absolute, C strings', () => {
    expectOneProblem(edited((c) => delete svc(c, 0).argv), 'services[0].argv', 'is required');
    expectOneProblem(edited((c) => (svc(c, 0).argv = [])), 'services[0].argv', 'non-empty array');
    expectOneProblem(edited((c) => (svc(c, 0).argv = '/bin/x')), 'services[0].argv', 'non-empty array');
    expectOneProblem(edited((c) => (svc(c, 0).argv = ['virtiofsd'])), 'services[0].argv[0]', 'must be an absolute path (got "virtiofsd")');
    expectOneProblem(edited((c) => (svc(c, 0).argv = ['/usr/../bin/x'])), 'services[0].argv[0]', '".." segments');
    expectOneProblem(edited((c) => (svc(c, 0).argv = ['/bin/x', 5])), 'services[0].argv[1]', 'string');
    expectOneProblem(edited((c) => (svc(c, 0).argv = ['/bin/x', 'a\0'])), 'services[0].argv[1]', 'NUL');
    // argv[0] is what the program sees as its name, so it is kept as written.
    expect(parseConfig(edited((c) => (svc(c, 0).argv = ['/usr//bin/x', '..']))).services[0]?.argv).toEqual(['/usr//bin/x', '..']);
  });

  test('env: string to string, names without "=" or NUL', () => {
    expect(parseConfig(edited((c) => (svc(c, 0).env = { RUST_LOG: 'info', EMPTY: '' }))).services[0]?.env)
      .toEqual({ RUST_LOG: 'info', EMPTY: '' });
    expectOneProblem(edited((c) => (svc(c, 0).env = { A: 1 })), 'services[0].env.A', 'string');
    expectOneProblem(edited((c) => (svc(c, 0).env = { 'A=B': 'x' })), 'services[0].env["A=B"]', '"="');
    expectOneProblem(edited((c) => (svc(c, 0).env = { '': 'x' })), 'services[0].env[""]', 'non-empty');
    expectOneProblem(edited((c) => (svc(c, 0).env = ['A=B'])), 'services[0].env', 'must be an object');
    const raw = JSON.parse(JSON.stringify(base()).replace('"uid":62001', '"env":{"__proto__":"x"},"uid":62001'));
    const env = parseConfig(raw).services[0]?.env ?? {};
    expect(Object.keys(env)).toEqual(['__proto__']);
    expect(Object.getPrototypeOf(env)).toBe(Object.prototype);
  });

  test('uid and gid: 1 to 4294967294, never root', () => {
    expect(problemsOf(edited((c) => (svc(c, 1).uid = 0)))).toEqual(['services[1].uid: must be an integer ≥ 1 (root is not allowed for services)']);
    expectOneProblem(edited((c) => (svc(c, 0).gid = 0)), 'services[0].gid', "must be an integer ≥ 1 (group 0 is root's group");
    expectOneProblem(edited((c) => delete svc(c, 0).uid), 'services[0].uid', 'is required');
    for (const bad of [-1, 4294967295, 1.5, '1000', null]) {
      expectOneProblem(edited((c) => (svc(c, 0).uid = bad)), 'services[0].uid', 'from 1 to 4294967294');
    }
    const config = parseConfig(edited((c) => {
      svc(c, 0).uid = 4294967294;
      svc(c, 1).uid = 4294967294; // shared uids are allowed (distinct ones are recommended)
    }));
    expect(config.services.map((s) => s.uid)).toEqual([4294967294, 4294967294]);
  });

  test('groups', () => {
    expect(parseConfig(edited((c) => (svc(c, 0).groups = [10, 20]))).services[0]?.groups).toEqual([10, 20]);
    expectOneProblem(edited((c) => (svc(c, 0).groups = [10, 0])), 'services[0].groups[1]', 'must be an integer ≥ 1');
    expectOneProblem(edited((c) => (svc(c, 0).groups = 10)), 'services[0].groups', 'array of group ids');
  });

  test('exactly one vmm', () => {
    expect(problemsOf(edited((c) => delete svc(c, 1).vmm))).toEqual(['services: exactly one service must have "vmm": true (found none)']);
    expect(problemsOf(edited((c) => (svc(c, 0).vmm = true)))).toEqual([
      'services: exactly one service must have "vmm": true (found 2: services[0] "virtiofsd", services[1] "vmm")',
    ]);
    // An invalid flag is one problem; counting vmms around it would add a misleading second one.
    expectOneProblem(edited((c) => (svc(c, 1).vmm = 'yes')), 'services[1].vmm', 'true or false');
    expect(parseConfig(edited((c) => (svc(c, 0).vmm = false))).services[0]?.vmm).toBe(false);
  });

  test('storage access', () => {
    expect(parseConfig(edited((c) => (svc(c, 0).storage = 'rw'))).services[0]?.storage).toBe('rw');
    expectOneProblem(edited((c) => (svc(c, 0).storage = 'write')), 'services[0].storage', 'one of "none", "ro", "rw"');
  });

  test('tmp and shm', () => {
    const tmp = (v: unknown) => parseConfig(edited((c) => (svc(c, 0).tmp = v))).services[0]?.tmp;
    expect(tmp(true)).toBe('64M');
    expect(tmp(false)).toBe(false);
    for (const size of ['16M', '1G', '1024', '512K']) expect(tmp(size)).toBe(size);
    for (const bad of ['0', '0M', '16MB', '16m', '1T', 16, null]) {
      expectOneProblem(edited((c) => (svc(c, 0).tmp = bad)), 'services[0].tmp', 'size like "16M"');
    }
    expect(parseConfig(edited((c) => (svc(c, 1).shm = true))).services[1]?.shm).toBe('64M');
    expectOneProblem(edited((c) => (svc(c, 1).shm = 'big')), 'services[1].shm', 'size like "16M"');
  });

  test('landlock paths', () => {
    const config = parseConfig(edited((c) => (svc(c, 0).landlock = { read: ['/usr/', '/lib'], write: ['/run//x'] })));
    expect(config.services[0]?.landlock).toEqual({ read: ['/usr', '/lib'], write: ['/run/x'] });
    expectOneProblem(edited((c) => (svc(c, 0).landlock = { read: ['usr'] })), 'services[0].landlock.read[0]', 'absolute path');
    expectOneProblem(edited((c) => (svc(c, 0).landlock = { write: '/x' })), 'services[0].landlock.write', 'array of absolute paths');
    expectOneProblem(edited((c) => (svc(c, 0).landlock = { exec: [] })), 'services[0].landlock.exec', 'allowed keys are: read, write');
  });

  test('argv and env together are bounded by what one request to the init carries', () => {
    const big = 'x'.repeat(MAX_EXEC_BYTES / 2);
    expectOneProblem(edited((c) => (svc(c, 0).argv = ['/bin/true', big, big])), 'services[0].argv', `over ${MAX_EXEC_BYTES}`);
    expectOneProblem(edited((c) => { svc(c, 0).argv = ['/bin/true', big]; svc(c, 0).env = { BIG: big }; }), 'services[0].argv', 'argv and env together');
    expect(parseConfig(edited((c) => (svc(c, 0).argv = ['/bin/true', 'x'.repeat(MAX_EXEC_BYTES - 20)]))).services[0]!.argv).toHaveLength(2);
  });

  test('caps: canonical names, CAP_SYS_ADMIN refused with the reason', () => {
    const caps = (v: unknown) => parseConfig(edited((c) => (svc(c, 0).caps = v))).services[0]?.caps;
    expect(caps(['CAP_DAC_READ_SEARCH'])).toEqual(['CAP_DAC_READ_SEARCH']);
    expect(caps(['dac_read_search', 'Cap_Chown', 'CHOWN'])).toEqual(['CAP_DAC_READ_SEARCH', 'CAP_CHOWN']);
    for (const admin of ['CAP_SYS_ADMIN', 'sys_admin']) {
      expectOneProblem(edited((c) => (svc(c, 0).caps = [admin])), 'services[0].caps[0]', 'CAP_SYS_ADMIN is not allowed');
      expect(problemsOf(edited((c) => (svc(c, 0).caps = [admin])))[0]).toContain('mount_setattr');
    }
    expectOneProblem(edited((c) => (svc(c, 0).caps = ['CAP_CHOWN', 'CAP_FOO'])), 'services[0].caps[1]', 'unknown capability');
    // Every capability the Linux backend refuses at launch is refused here first, with its reason
    // (one list: config/rules.ts), so `check` and `run` agree (both exit 100).
    expect([...FORBIDDEN_CAPS].sort()).toEqual(Object.keys(FORBIDDEN_CAPABILITIES).map((c) => `CAP_${c}`).sort());
    expect(Object.keys(FORBIDDEN_CAPABILITIES)).toEqual(expect.arrayContaining(['SYS_ADMIN', 'SYS_MODULE', 'SYS_RAWIO', 'SYS_PTRACE', 'SYS_BOOT', 'SYS_RESOURCE', 'MAC_OVERRIDE', 'MAC_ADMIN', 'PERFMON', 'BPF', 'CHECKPOINT_RESTORE']));
    for (const [cap, why] of Object.entries(FORBIDDEN_CAPABILITIES)) {
      expectOneProblem(edited((c) => (svc(c, 1).caps = ['CAP_CHOWN', cap.toLowerCase()])), 'services[1].caps[1]', `CAP_${cap} is not allowed: ${why}`);
    }
    // Only ASCII is case-folded: "ı".toUpperCase() is "I", which would smuggle in a lookalike.
    expectOneProblem(edited((c) => (svc(c, 0).caps = ['cap_kıll'])), 'services[0].caps[0]', 'unknown capability');
    expectOneProblem(edited((c) => (svc(c, 0).caps = [5])), 'services[0].caps[0]', 'capability name');
    expectOneProblem(edited((c) => (svc(c, 0).caps = 'CAP_CHOWN')), 'services[0].caps', 'array of capability names');
  });

  test('seccomp.allow: names of the default deny list only, each unknown one named', () => {
    const allow = (v: unknown) => parseConfig(edited((c) => (svc(c, 0).seccomp = v))).services[0]?.seccomp;
    expect(allow({ allow: ['userfaultfd', 'keyctl', 'userfaultfd'] })).toEqual({ allow: ['userfaultfd', 'keyctl'] });
    expect(allow({})).toEqual({ allow: [] });
    expectOneProblem(edited((c) => (svc(c, 0).seccomp = { allow: ['keyctl', 'read'] })), 'services[0].seccomp.allow[1]', 'a syscall the default seccomp filter denies: unshare, clone');
    expectOneProblem(edited((c) => (svc(c, 0).seccomp = { allow: ['KEYCTL'] })), 'services[0].seccomp.allow[0]', 'a syscall the default seccomp filter denies');
    expectOneProblem(edited((c) => (svc(c, 0).seccomp = { deny: [] })), 'services[0].seccomp.deny', 'unknown key');
    expectOneProblem(edited((c) => (svc(c, 0).seccomp = { allow: 'keyctl' })), 'services[0].seccomp.allow', 'an array of syscall names');
  });

  test('devices are paths under /dev/', () => {
    const devices = (v: unknown) => parseConfig(edited((c) => (svc(c, 1).devices = v))).services[1]?.devices;
    expect(devices(['/dev/kvm', '/dev//net/tun', '/./dev/vhost-net'])).toEqual(['/dev/kvm', '/dev/net/tun', '/dev/vhost-net']);
    for (const bad of ['/tmp/kvm', '/dev', '/dev/', '/dev/.', '/devices/x']) {
      expectOneProblem(edited((c) => (svc(c, 1).devices = [bad])), 'services[1].devices[0]', 'a device path under /dev/');
    }
    expectOneProblem(edited((c) => (svc(c, 1).devices = ['dev/kvm'])), 'services[1].devices[0]', 'must be an absolute path');
    expectOneProblem(edited((c) => (svc(c, 1).devices = ['/dev/../etc/shadow'])), 'services[1].devices[0]', '".." segments');
  });

  test('a device belongs to one service (it becomes a node owned by its uid)', () => {
    expectOneProblem(edited((c) => {
      svc(c, 0).devices = ['/dev/kvm'];
      svc(c, 1).devices = ['/dev/kvm'];
    }), 'services[1].devices[0]', 'already granted to services[0]');
  });

  test('sockets: handed-over listening sockets, in the runtime dir, unique fds and paths', () => {
    const sockets = (v: unknown) => parseConfig(edited((c) => (svc(c, 0).sockets = v))).services[0]?.sockets;
    expect(sockets([{ path: '/run/vmsandbox/demo/virtiofsd.sock', fd: 3 }]))
      .toEqual([{ path: '/run/vmsandbox/demo/virtiofsd.sock', fd: 3, mode: '0600', gid: 62001, clients: [] }]);
    expect(sockets([{ path: '/run/vmsandbox/demo/virtiofsd/fs.sock', fd: 4, mode: '660', gid: 62002 }]))
      .toEqual([{ path: '/run/vmsandbox/demo/virtiofsd/fs.sock', fd: 4, mode: '0660', gid: 62002, clients: [] }]);
    const one = (sock: unknown, path: string, fragment: string) =>
      expectOneProblem(edited((c) => (svc(c, 0).sockets = [sock])), path, fragment);
    one({ path: '/run/vmsandbox/demo/s', fd: 2 }, 'services[0].sockets[0].fd', 'from 3 to 255');
    one({ path: '/run/vmsandbox/demo/s', fd: 256 }, 'services[0].sockets[0].fd', 'from 3 to 255');
    one({ path: '/run/vmsandbox/demo/s', fd: 3, mode: '0999' }, 'services[0].sockets[0].mode', 'octal');
    one({ path: '/run/vmsandbox/demo/s', fd: 3, gid: 0 }, 'services[0].sockets[0].gid', "root's group");
    one({ path: '/tmp/s', fd: 3 }, 'services[0].sockets[0].path', 'directly in the runtime dir');
    // Not in another service's directory: that service could replace it and take its clients.
    one({ path: '/run/vmsandbox/demo/vmm/fs.sock', fd: 3 }, 'services[0].sockets[0].path', "in vmm's directory, which vmm can write");
    one({ path: '/run/vmsandbox/demo/a/b/s', fd: 3 }, 'services[0].sockets[0].path', 'directly in the runtime dir');
    one({ path: 'rel', fd: 3 }, 'services[0].sockets[0].path', 'absolute');
    one({ path: '/run/vmsandbox/demo/s', fd: 3, port: 1 }, 'services[0].sockets[0].port', 'unknown key');
    expectOneProblem(edited((c) => (svc(c, 0).sockets = [{ path: '/run/vmsandbox/demo/a', fd: 3 }, { path: '/run/vmsandbox/demo/b', fd: 3 }])),
      'services[0].sockets[1].fd', 'already used');
    expectOneProblem(edited((c) => {
      svc(c, 0).sockets = [{ path: '/run/vmsandbox/demo/a', fd: 3 }];
      svc(c, 1).sockets = [{ path: '/run/vmsandbox/demo/a', fd: 3 }];
    }), 'services[1].sockets[0].path', 'already used');
    // clients: other services of the VM, each once.
    const clients = (v: unknown) => parseConfig(edited((c) => (svc(c, 0).sockets = [{ path: '/run/vmsandbox/demo/fs.sock', fd: 3, clients: v }]))).services[0]?.sockets?.[0]?.clients;
    const svcName = (i: number) => (parseConfig(edited(() => undefined)).services[i]!.name);
    expect(clients([svcName(1)])).toEqual([svcName(1)]);
    one({ path: '/run/vmsandbox/demo/s', fd: 3, clients: ['nosuch'] }, 'services[0].sockets[0].clients[0]', 'no service of this VM is named "nosuch"');
    one({ path: '/run/vmsandbox/demo/s', fd: 3, clients: [svcName(0)] }, 'services[0].sockets[0].clients[0]', 'owns the socket');
    one({ path: '/run/vmsandbox/demo/s', fd: 3, clients: [svcName(1), svcName(1)] }, 'services[0].sockets[0].clients[1]', 'listed twice');
    one({ path: '/run/vmsandbox/demo/s', fd: 3, clients: 'vmm' }, 'services[0].sockets[0].clients', 'array of service names');
  });

  test('securebits: a short list of names, normalized', () => {
    const bits = (v: unknown) => parseConfig(edited((c) => (svc(c, 0).securebits = v))).services[0]?.securebits;
    expect(bits(['no_setuid_fixup', 'SECBIT_NO_SETUID_FIXUP', 'noroot'])).toEqual(['SECBIT_NO_SETUID_FIXUP', 'SECBIT_NOROOT']);
    expectOneProblem(edited((c) => (svc(c, 0).securebits = ['KEEP_CAPS'])), 'services[0].securebits[0]', 'SECBIT_NO_SETUID_FIXUP');
    expectOneProblem(edited((c) => (svc(c, 0).securebits = 'NOROOT')), 'services[0].securebits', 'array');
  });

  test('stop: vmm only, exactly one method', () => {
    const stop = (v: unknown) => parseConfig(edited((c) => (svc(c, 1).stop = v))).services[1]?.stop;
    expect(stop({ qmp: '/run/vmsandbox/demo/qmp.sock' })).toEqual({ qmp: '/run/vmsandbox/demo/qmp.sock' });
    expect(stop({ cloudHypervisorApi: '/run/ch//api.sock' })).toEqual({ cloudHypervisorApi: '/run/ch/api.sock' });
    expect(stop({ command: ['/usr/bin/vm-stop', 'demo'] })).toEqual({ command: ['/usr/bin/vm-stop', 'demo'] });
    expect(stop({ signal: 'SIGUSR1' })).toEqual({ signal: 'SIGUSR1' });
    expectOneProblem(edited((c) => (svc(c, 0).stop = { signal: 'SIGTERM' })), 'services[0].stop', 'only the vmm service may set "stop"');
    expectOneProblem(edited((c) => (svc(c, 1).stop = {})), 'services[1].stop', 'exactly one of the keys signal, qmp, cloudHypervisorApi, command');
    expectOneProblem(edited((c) => (svc(c, 1).stop = { signal: 'SIGTERM', qmp: '/q' })), 'services[1].stop', 'exactly one');
    expectOneProblem(edited((c) => (svc(c, 1).stop = { sginal: 'SIGTERM' })), 'services[1].stop.sginal', 'unknown key');
    expectOneProblem(edited((c) => (svc(c, 1).stop = 'SIGTERM')), 'services[1].stop', 'must be an object');
    for (const bad of ['SIGKILL', 'sigterm', 'TERM', 15]) {
      expectOneProblem(edited((c) => (svc(c, 1).stop = { signal: bad })), 'services[1].stop.signal', '"SIGTERM"');
    }
    expectOneProblem(edited((c) => (svc(c, 1).stop = { qmp: 'qmp.sock' })), 'services[1].stop.qmp', 'absolute path');
    expectOneProblem(edited((c) => (svc(c, 1).stop = { command: [] })), 'services[1].stop.command', 'non-empty array');
    expectOneProblem(edited((c) => (svc(c, 1).stop = { command: ['stop'] })), 'services[1].stop.command[0]', 'absolute path');
  });

  test('ready: vmm only; "immediate" (default), a socket path, or a QMP socket', () => {
    const ready = (v: unknown) => parseConfig(edited((c) => (svc(c, 1).ready = v))).services[1]?.ready;
    expect(parseConfig(base()).services[1]?.ready).toBe('immediate');
    expect(ready('immediate')).toBe('immediate');
    expect(ready({ socket: '/run/vmsandbox/demo//vmm/api.sock' })).toEqual({ socket: '/run/vmsandbox/demo/vmm/api.sock' });
    expect(ready({ qmp: '/run/vmsandbox/demo/vmm/qmp.sock' })).toEqual({ qmp: '/run/vmsandbox/demo/vmm/qmp.sock' });
    expectOneProblem(edited((c) => (svc(c, 0).ready = 'immediate')), 'services[0].ready', 'only the vmm service may set "ready"');
    expectOneProblem(edited((c) => (svc(c, 1).ready = 'now')), 'services[1].ready', '"immediate" or an object with exactly one of the keys socket, qmp');
    expectOneProblem(edited((c) => (svc(c, 1).ready = {})), 'services[1].ready', 'exactly one of the keys socket, qmp (got none)');
    expectOneProblem(edited((c) => (svc(c, 1).ready = { socket: '/a', qmp: '/b' })), 'services[1].ready', 'exactly one');
    expectOneProblem(edited((c) => (svc(c, 1).ready = { sokcet: '/a' })), 'services[1].ready.sokcet', 'unknown key');
    expectOneProblem(edited((c) => (svc(c, 1).ready = { qmp: 'qmp.sock' })), 'services[1].ready.qmp', 'absolute path');
    expectOneProblem(edited((c) => (svc(c, 1).ready = true)), 'services[1].ready', 'must be an object');
  });

  test('onExit: the vmm cannot be ignored', () => {
    expect(parseConfig(edited((c) => (svc(c, 0).onExit = 'ignore'))).services[0]?.onExit).toBe('ignore');
    expectOneProblem(edited((c) => (svc(c, 1).onExit = 'ignore')), 'services[1].onExit', 'the vmm cannot use "ignore"');
    expectOneProblem(edited((c) => (svc(c, 0).onExit = 'restart')), 'services[0].onExit', 'one of "stop", "ignore"');
  });
});

describe('loadConfig', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmsandbox-config-'));
  const file = (name: string, text: string) => {
    const path = join(dir, name);
    writeFileSync(path, text);
    return path;
  };
  const loadError = (path: string): ConfigError => {
    try {
      loadConfig(path);
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      return e as ConfigError;
    }
    throw new Error('expected a ConfigError');
  };

  test('an unreadable file names the file', () => {
    const path = join(dir, 'missing.json');
    const error = loadError(path);
    expect(error.file).toBe(path);
    expect(error.message).toBe(`${path}: cannot read the file (ENOENT: no such file or directory)`);
    expect(loadError(dir).problems).toEqual(['cannot read the file (EISDIR: illegal operation on a directory)']);
  });

  test('invalid JSON names the file, line and column', () => {
    const path = file('syntax.json', '{\n  "name": "demo",\n  "storage": }\n');
    expect(loadError(path).message).toBe(`${path}: invalid JSON at line 3, column 14: unexpected "}"; expected a value`);
    const trailing = file('trailing.json', '{"name": "demo",\n}');
    expect(loadError(trailing).problems).toEqual(['invalid JSON at line 2, column 1: unexpected "}"; expected a property name in double quotes']);
    expect(loadError(file('empty.json', '')).problems).toEqual(['invalid JSON at line 1, column 1: unexpected end of input; expected a value']);
  });

  test('validation problems keep their field paths and are prefixed by the file in the message', () => {
    const path = file('bad.json', JSON.stringify(edited((c) => (svc(c, 1).uid = 0))));
    const error = loadError(path);
    expect(error.problems).toEqual(['services[1].uid: must be an integer ≥ 1 (root is not allowed for services)']);
    expect(error.message).toBe(`${path}: services[1].uid: must be an integer ≥ 1 (root is not allowed for services)`);
  });

  test('a byte-order mark is tolerated', () => {
    expect(loadConfig(file('bom.json', `\uFEFF${JSON.stringify(base())}`)).name).toBe('demo');
  });
});

describe('examples', () => {
  const examples = dirname(demoConfigPath);

  test('demoConfigPath is examples/demo.json of this package', () => {
    expect(demoConfigPath).toBe(join(process.cwd(), 'examples', 'demo.json'));
  });

  test('the demo config is the documented demo', () => {
    const config = loadConfig(demoConfigPath);
    expect(config.name).toBe('demo');
    expect(config.storage).toBe('/var/lib/vmsandbox/demo');
    expect(config.timeouts).toMatchObject({ stopMs: 10000, killMs: 2000 });
    expect(config.services.map((s) => [s.name, s.uid, s.vmm])).toEqual([['virtiofsd', 62001, false], ['vmm', 62002, true]]);
    // QEMU is not installed everywhere: the demo's vmm is the QMP-speaking stand-in, its
    // "virtiofsd" a sleeper (docs/s6.md).
    expect(config.services[0]?.argv[0]).toBe('/bin/sleep');
    expect(config.services[1]?.argv.slice(0, 2)).toEqual(['/usr/bin/node', '/var/lib/vmsandbox/demo/fake-vmm.mjs']);
    expect(config.services[1]?.stop).toEqual({ qmp: '/run/vmsandbox/demo/vmm/qmp.sock' });
    expect(config.services[1]?.ready).toEqual({ qmp: '/run/vmsandbox/demo/vmm/qmp.sock' });
  });

  test('docs/config.md shows examples/demo.json as it is', () => {
    const doc = readFileSync(join(examples, '..', 'docs', 'config.md'), 'utf8');
    const block = /## Full example[\s\S]*?```json\n([\s\S]*?)```/.exec(doc)?.[1];
    expect(block).toBe(readFileSync(demoConfigPath, 'utf8'));
  });

  test.each(readdirSync(examples).filter((f) => f.endsWith('.json')))('examples/%s loads', (name) => {
    expect(() => loadConfig(join(examples, name))).not.toThrow();
  });
});

function capture(): CliIo & { stdout: string; stderr: string } {
  const io = { stdout: '', stderr: '', out: (t: string) => void (io.stdout += t), err: (t: string) => void (io.stderr += t) };
  return io;
}

describe('vmsandbox check', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmsandbox-check-'));
  const bad = join(dir, 'bad.json');
  writeFileSync(bad, JSON.stringify(edited((c) => {
    c.name = 'Bad';
    svc(c, 1).uid = 0;
  })));

  test('a valid config: one line on stdout, status 0', async () => {
    const io = capture();
    expect(await checkMain([demoConfigPath], { io, hostCheck: null })).toBe(0);
    expect(io.stdout).toBe(`${demoConfigPath}: ok (vm demo, 2 services)\n`);
    expect(io.stderr).toBe('');
  });

  test('an invalid config: every problem on stderr prefixed by the file, status 100', async () => {
    const io = capture();
    expect(await checkMain([bad], { io })).toBe(100);
    expect(io.stdout).toBe('');
    expect(io.stderr).toBe(
      `${bad}: name: must be a short identifier: a lowercase letter, then up to 30 lowercase letters, digits or '-' (got "Bad")\n` +
        `${bad}: services[1].uid: must be an integer ≥ 1 (root is not allowed for services)\n`,
    );
  });

  test('--json reports the normalized config or the problems on stdout', async () => {
    const ok = capture();
    expect(await checkMain(['--json', demoConfigPath], { io: ok, hostCheck: null })).toBe(0);
    expect(JSON.parse(ok.stdout)).toEqual({ file: demoConfigPath, ok: true, config: loadConfig(demoConfigPath) });
    const ko = capture();
    expect(await checkMain([bad, '--json'], { io: ko })).toBe(100);
    const out = JSON.parse(ko.stdout);
    expect(out.ok).toBe(false);
    expect(out.problems).toHaveLength(2);
    expect(ko.stderr).toBe('');
  });

  test('usage errors', async () => {
    for (const argv of [[], ['a.json', 'b.json'], ['--frobnicate', 'a.json']]) {
      const io = capture();
      expect(await checkMain(argv, { io })).toBe(2);
      expect(io.stderr).toContain('usage: vmsandbox check CONFIG [--json]');
    }
    const help = capture();
    expect(await checkMain(['--help'], { io: help })).toBe(0);
    expect(help.stdout).toContain('usage:');
  });

  test('host checks run on a valid config and their problems fail the check', async () => {
    const seen: string[] = [];
    const hostCheck = async (config: VmConfig) => {
      seen.push(config.name);
      return ['services[0].uid: no such user on this host'];
    };
    const io = capture();
    expect(await checkMain([demoConfigPath], { io, hostCheck })).toBe(100);
    expect(io.stderr).toBe(`${demoConfigPath}: services[0].uid: no such user on this host\n`);
    expect(await checkMain([bad], { io: capture(), hostCheck })).toBe(100);
    expect(seen).toEqual(['demo']);
    expect(await checkMain([demoConfigPath], { io: capture(), hostCheck: async () => [] })).toBe(0);
  });
});

describe('vmsandbox schema', () => {
  test('prints the schema as pretty JSON', async () => {
    const io = capture();
    expect(await schemaMain([], io)).toBe(0);
    expect(JSON.parse(io.stdout)).toEqual(configSchema);
    expect(io.stdout).toContain('\n  "title"');
    expect(await schemaMain(['extra'], capture())).toBe(2);
  });

  test('every property has a description', () => {
    const missing: string[] = [];
    const visit = (schema: Record<string, unknown>, path: string) => {
      const props = (schema.properties ?? {}) as Record<string, Record<string, unknown>>;
      for (const [key, sub] of Object.entries(props)) {
        // Inside if/then/else, properties only restate constraints; their documentation is above.
        if (!/\/(if|then|else|contains)/.test(path) && typeof sub.description !== 'string') missing.push(`${path}/${key}`);
        visit(sub, `${path}/${key}`);
      }
      for (const k of ['items', 'additionalItems', 'if', 'then', 'else', 'contains']) {
        const sub = schema[k];
        if (sub && typeof sub === 'object') {
          for (const [i, s] of (Array.isArray(sub) ? sub : [sub]).entries()) visit(s as Record<string, unknown>, `${path}/${k}${i || ''}`);
        }
      }
    };
    visit(configSchema as unknown as Record<string, unknown>, '#');
    expect(missing).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------
// Fuzzing: raw JSON values and mutations of valid configs.

// FUZZ_SCALE=20 npx vitest run test/config.test.ts for a longer hunt.
const runs = (n: number) => Math.round(n * (Number(process.env.FUZZ_SCALE) || 1));

const FIELD_PATH = /^(?:\(root\)|[A-Za-z_$][\w$]*|\["(?:[^"\\]|\\.)*"\])(?:\.[A-Za-z_$][\w$]*|\[\d+\]|\["(?:[^"\\]|\\.)*"\])*: \S/;

type Outcome = { ok: true; config: VmConfig } | { ok: false; problems: string[] };

/** parseConfig, asserting it fails only with a ConfigError whose problems all start with a field path. */
function outcome(raw: unknown): Outcome {
  try {
    return { ok: true, config: parseConfig(raw) };
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    expect(error.problems.length).toBeGreaterThan(0);
    for (const problem of error.problems) {
      expect(problem, 'a problem must start with a field path').toMatch(FIELD_PATH);
      expect(problem).not.toContain('\n');
    }
    return { ok: false, problems: error.problems };
  }
}

function rich(): Raw {
  return {
    name: 'rich-vm',
    storage: '/var/lib/vmsandbox/rich',
    runtimeDir: '/run/vmsandbox/rich',
    timeouts: { setupMs: 30000, stopMs: 0, killMs: 1 },
    cgroup: { parent: 'machine.slice/vms', limits: { 'memory.max': '2G', 'pids.max': 'max', 'cpu.max': 'max 100000' }, limitsOptional: true },
    landlock: { minAbi: 7, allowDegraded: true },
    services: [
      {
        name: 'virtiofsd', argv: ['/usr/lib/qemu/virtiofsd', '--cache=never'], env: { RUST_LOG: 'info' }, uid: 62001, gid: 62001,
        groups: [62100], storage: 'rw', tmp: '16M', shm: true, landlock: { read: ['/usr'], write: ['/var/lib/vmsandbox/rich'] },
        limits: { 'memory.high': 1048576, 'io.weight': 100 }, caps: ['CAP_DAC_READ_SEARCH', 'chown'], onExit: 'ignore',
      },
      {
        name: 'vmm', vmm: true, argv: ['/usr/bin/cloud-hypervisor', '--api-socket', '/run/vmsandbox/rich/ch.sock'], uid: 62002,
        gid: 62002, storage: 'ro', tmp: false, devices: ['/dev/kvm', '/dev/net/tun'], limits: { 'cpu.weight': 200, 'memory.min': 0 },
        stop: { cloudHypervisorApi: '/run/vmsandbox/rich/ch.sock' }, onExit: 'stop',
      },
      { name: 'gpu', argv: ['/usr/bin/crosvm', 'device', 'gpu'], uid: 62003, gid: 62003 },
    ],
  };
}

const BASES: Raw[] = [base(), rich(), JSON.parse(readFileSync(demoConfigPath, 'utf8'))];

// Values a mutation plants: boundary cases of every rule, so that mutated configs land on both
// sides of each rule (and near the places where loader and schema could disagree).
const INTERESTING: unknown[] = [
  null, true, false, 0, -0, 1, -1, 1.5, 2, 6, 7, 8, 100, 999, 1000, 10000, 10001, 3600000, 3600001, 62001,
  4294967294, 4294967295, 2 ** 53, 1e300, '', ' ', 'x', 'demo', 'vmm', 'virtiofsd', 'Demo', 'a'.repeat(31), 'a'.repeat(32),
  '/', '//', '/.', '/./', '/..', '/...', '/a/../b', '/a/..b', '/a/./b/', 'a/b', '/x\u0000y', '/run/x.sock', '/dev', '/dev/',
  '/dev/kvm', '/dev/.', '/dev/./', '/dev//kvm', '/./dev/kvm', '/dev/.x', '/devices/x', 'max', 'MAX', '512M', '0', '0M',
  '1G', '16T', '64M', '16MB', '100000 100000', 'max 100000', 'max 999', '1000 1000000', '1000 1000001', '999 1000',
  '50000', 'SIGTERM', 'SIGKILL', 'SIGUSR1', 'sigterm', 'CAP_SYS_ADMIN', 'sys_admin', 'cap_dac_read_search',
  'DAC_READ_SEARCH', 'CAP_FOO', 'Cap_Chown', 'CAP_', 'cap_kıll', 'none', 'ro', 'rw', 'stop', 'ignore', 'vmsandbox',
  'a/b', 'vms.slice', '.x', 'a//b', 'a=b', '=', 'PATH', [], {}, ['/bin/x'], ['x'], ['/dev/kvm'], ['CAP_CHOWN'], [0], [1, 2],
  { signal: 'SIGTERM' }, { qmp: '/q' }, { command: ['/bin/stop'] }, { command: [] }, { signal: 'SIGINT', qmp: '/q' },
  { read: ['/usr'] }, { write: ['x'] }, { 'memory.max': 'max' }, { 'pids.max': 0 }, { 'cpu.weight': 1 }, { A: 'b' }, { 'A=': 'b' },
];
const KEYS = [
  'name', 'storage', 'runtimeDir', 'timeouts', 'cgroup', 'landlock', 'services', 'setupMs', 'stopMs', 'killMs', 'parent',
  'limits', 'limitsOptional', 'minAbi', 'allowDegraded', 'argv', 'env', 'uid', 'gid', 'groups', 'vmm', 'tmp', 'shm', 'caps',
  'devices', 'securebits', 'stop', 'onExit', 'read', 'write', 'signal', 'qmp', 'cloudHypervisorApi', 'command', 'memory.max', 'memory.low',
  'memory.swap.max', 'pids.max', 'cpu.max', 'cpu.weight', 'io.weight', 'memory.foo', 'unknown', '__proto__', 'constructor', '',
];

// Per-key boundary values: a mutation of key K plants one of these half of the time, so that each
// rule's edges are reached far more often than uniform picks from INTERESTING would reach them.
const PATHS = ['/', '/.', '/./', '//', '/x', '/x/', '/a/../b', '/a/..b', '/...', 'rel', '/x\u0000', '', 5];
const SIZES = ['max', '0', '1T', '1P', '512M', '512m', '', ' 1M', 0, -1, 2 ** 53 - 1, 2 ** 53, 1.5, null];
const WEIGHTS = [0, 1, 100, 10000, 10001, '1', 1.5];
const KEY_VALUES: Record<string, unknown[]> = {
  name: ['demo', 'vmm', 'virtiofsd', 'gpu', 'a'.repeat(31), 'a'.repeat(32), 'A', '', '1a', 'a-', 'a_b', 7],
  storage: [...PATHS, 'none', 'ro', 'rw', 'RW'],
  runtimeDir: PATHS,
  qmp: PATHS,
  cloudHypervisorApi: PATHS,
  setupMs: [0, 1, -1, 3600000, 3600001, 1.5, '5', null],
  stopMs: [0, 1, -1, -0, 3600000, 3600001, 1.5, '5'],
  killMs: [0, 1, -1, 3600000, 3600001, 2.5, true],
  parent: ['a', 'a/b', '/a', 'a/', '.a', 'a..b', 'a/../b', 'a//b', '@x', 'x.slice', 'x'.repeat(64), 'x'.repeat(65), '', 'a b'],
  limitsOptional: [true, false, 0, 'true', null],
  allowDegraded: [true, false, 1, 'false'],
  vmm: [true, false, 0, 'true', null],
  minAbi: [0, 1, 6, 7, 8, 1.5, '6'],
  'memory.max': SIZES, 'memory.high': SIZES, 'memory.low': SIZES, 'memory.min': SIZES, 'memory.swap.max': SIZES,
  'pids.max': ['max', 0, 1, '1', 2 ** 53 - 1, 2 ** 53, -1, 1.5],
  'cpu.max': ['max', 'max 1000', 'max 999', '1000 1000', '999 1000', '9999999999999 1000000', '99999999999999 1000',
    '1000 1000001', '1000 01000', ' 1000 1000', '1000', 1000],
  'cpu.weight': WEIGHTS, 'io.weight': WEIGHTS,
  argv: [[], ['/bin/x'], ['x'], ['/bin/x', 'a\u0000'], ['/bin/../x'], ['/bin/x', 5], ['/', ''], '/bin/x'],
  command: [[], ['/bin/x'], ['x'], ['/bin/x', '..'], ['/bin/./x'], [5], '/bin/x'],
  env: [{}, { A: 'b' }, { '': 'x' }, { 'A=': 'x' }, { A: 1 }, { 'a\u0000': 'b' }, { A: 'b\u0000' }, []],
  uid: [0, 1, 4294967294, 4294967295, -1, 1.5, '1'],
  gid: [0, 1, 4294967294, 4294967295, -1, '1'],
  groups: [[], [0], [1, 2], [4294967295], 1, ['1']],
  tmp: [true, false, '0', '0M', '1', '16M', '1G', '1T', '01M', 'x', 16, null],
  shm: [true, false, '0', '10K', '99999999999999999G', '1 G'],
  landlock: [{}, { read: [] }, { read: ['/'] }, { write: ['x'] }, { exec: [] }, { minAbi: 6 }, { allowDegraded: true }],
  read: [[], ['/'], ['x'], ['/a/../b'], ['/a//b/']],
  write: [[], ['/run/x'], [''], '/x'],
  caps: [[], ['CAP_CHOWN'], ['sys_admin'], ['cap_kıll'], ['CAP_'], ['chown', 'CHOWN'], ['CAP_CAP_CHOWN'], ['Cap_Bpf'], ['CAP_SYS_ADMIN']],
  devices: [[], ['/dev/kvm'], ['/dev'], ['/dev/.'], ['/./dev//x'], ['/dev/./.'], ['/devx/y'], ['/dev/..x'], ['//dev/x/'], ['/dev/x/..']],
  securebits: [[], ['SECBIT_NO_SETUID_FIXUP'], ['no_setuid_fixup'], ['NOROOT_LOCKED'], ['KEEP_CAPS'], ['SECBIT_'], ['secbit_noroot'], 'NOROOT', [2]],
  stop: [{ signal: 'SIGTERM' }, { signal: 'SIGKILL' }, { qmp: '/q' }, { qmp: 'q' }, { cloudHypervisorApi: '/c' }, { command: ['/x'] },
    { command: [] }, {}, { signal: 'SIGINT', qmp: '/q' }, { x: 1 }, 'SIGTERM'],
  signal: ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2', 'SIGPWR', 'SIGKILL', 'SIGSTOP', 'sigterm', 15],
  onExit: ['stop', 'ignore', 'restart', null],
  timeouts: [{}, { setupMs: 0 }, { stopMs: 0 }, [], { setupms: 1 }],
  cgroup: [{}, { parent: 'x' }, { limits: {} }, { limitsOptional: false }, null],
  limits: [{}, { 'memory.max': 'max' }, { 'memory.foo': 1 }, { 'cpu.max': '1000 1000' }, { 'pids.max': 'max', 'io.weight': 1 }],
  services: [[], {}, [{ name: 'solo', argv: ['/bin/vmm'], uid: 1, gid: 1, vmm: true }]],
};

/** Boundary values for the value at `path`; for an array element, the elements of its array's values. */
function poolFor(path: Segment[]): unknown[] {
  const last = path[path.length - 1];
  if (typeof last === 'string') return Object.hasOwn(KEY_VALUES, last) ? (KEY_VALUES[last] as unknown[]) : [];
  const parent = path[path.length - 2];
  if (typeof parent !== 'string' || !Object.hasOwn(KEY_VALUES, parent)) return [];
  return (KEY_VALUES[parent] as unknown[]).flatMap((v) => (Array.isArray(v) ? v : []));
}

const valueArb: fc.Arbitrary<unknown> = fc.oneof(
  { arbitrary: fc.constantFrom(...INTERESTING), weight: 6 },
  { arbitrary: fc.jsonValue({ maxDepth: 2 }), weight: 2 },
  { arbitrary: fc.array(fc.constantFrom(...INTERESTING), { maxLength: 3 }), weight: 1 },
  { arbitrary: fc.dictionary(fc.constantFrom(...KEYS), fc.constantFrom(...INTERESTING), { maxKeys: 2 }), weight: 1 },
);

type Segment = string | number;
type Mutation = { kind: 'delete' | 'replace' | 'add'; pick: number; key: string; value: unknown; keyed: boolean; alt: number };

/** Every value's path, except array elements past the second: long argvs would swamp the picks. */
function allPaths(v: unknown, prefix: Segment[] = []): Segment[][] {
  const out: Segment[][] = [prefix];
  if (Array.isArray(v)) v.slice(0, 2).forEach((x, i) => out.push(...allPaths(x, [...prefix, i])));
  else if (v !== null && typeof v === 'object') for (const [k, x] of Object.entries(v)) out.push(...allPaths(x, [...prefix, k]));
  return out;
}

function setOwn(obj: Record<string, unknown>, key: string, value: unknown): void {
  // defineProperty, not assignment: a "__proto__" key must become data, as JSON.parse makes it.
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

function mutate(root: unknown, mutation: Mutation): unknown {
  // Planted values are cloned: constants shared by reference could otherwise form a cycle.
  const paths = allPaths(root);
  const path = paths[mutation.pick % paths.length] as Segment[];
  const pool = poolFor(mutation.kind === 'add' ? [mutation.key] : path);
  const value = mutation.keyed && pool.length > 0 ? pool[mutation.alt % pool.length] : mutation.value;
  const m = { ...mutation, value: structuredClone(value) };
  if (m.kind === 'add') {
    const objects = paths.filter((p) => {
      const v = p.reduce<unknown>((o, k) => (o as Record<Segment, unknown>)[k], root);
      return v !== null && typeof v === 'object' && !Array.isArray(v);
    });
    const target = objects[m.pick % objects.length];
    if (!target) return root;
    setOwn(target.reduce<any>((o, k) => o[k], root), m.key, m.value);
    return root;
  }
  if (path.length === 0) return m.kind === 'replace' ? m.value : root;
  const parent = path.slice(0, -1).reduce<any>((o, k) => o[k], root);
  const last = path[path.length - 1] as Segment;
  if (m.kind === 'replace') setOwn(parent, String(last), m.value);
  else if (Array.isArray(parent)) parent.splice(Number(last), 1);
  else delete parent[last];
  return root;
}

const mutationArb: fc.Arbitrary<Mutation> = fc.record({
  kind: fc.constantFrom('delete', 'replace', 'replace', 'add'),
  pick: fc.nat(),
  key: fc.oneof(fc.constantFrom(...KEYS), fc.string({ maxLength: 8 })),
  value: valueArb,
  keyed: fc.boolean(),
  alt: fc.nat(),
});

const mutatedConfigArb: fc.Arbitrary<unknown> = fc
  .tuple(fc.nat(BASES.length - 1), fc.array(mutationArb, { minLength: 1, maxLength: 3 }))
  .map(([b, mutations]) => mutations.reduce<unknown>((raw, m) => mutate(raw, m), structuredClone(JSON.parse(JSON.stringify(BASES[b])))));

describe('fuzz', () => {
  test('the bases are valid', () => {
    for (const raw of BASES) expect(outcome(raw).ok).toBe(true);
  });

  test('arbitrary JSON: a config or a ConfigError with field paths, nothing else', () => {
    fc.assert(fc.property(fc.jsonValue(), (raw) => void outcome(raw)), { numRuns: runs(2000) });
  });

  test('mutated configs: a config or a ConfigError with field paths; accepted configs are sound', () => {
    fc.assert(
      fc.property(mutatedConfigArb, (raw) => {
        const result = outcome(raw);
        if (!result.ok) return;
        const { services } = result.config;
        expect(services.filter((s) => s.vmm)).toHaveLength(1);
        expect(new Set(services.map((s) => s.name)).size).toBe(services.length);
        for (const s of services) if (!s.vmm) expect(s.stop).toEqual({ signal: 'SIGTERM' });
      }),
      { numRuns: runs(3000) },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Schema/loader cross-check. Draft-07 cannot express these loader rules, so inputs breaking them
// are checked separately rather than counted as agreement:
//  - a device is granted to one service only (a rule across items);
//  - handed-over sockets: fds unique per service, paths unique and placed in the runtime dir (across
//    items and fields; the fuzzer does not generate sockets, the unit tests above cover them);
//  - service names must be unique (uniqueItems compares whole items, not one key);
//  - at most one service may be the vmm (needs maxContains, draft 2019-09+; "at least one" is in
//    the schema, as `contains`).
// For those inputs the loader must reject, and if the schema accepts, the loader's only problems
// must be exactly those two rules.

describe('schema cross-check', () => {
  // strictTuples would reject `argv`'s open tuple (argv[0] a path, then any strings), a lint
  // about tuple style rather than a schema error; everything else passes strict mode.
  const validate = new Ajv({ strict: true, strictTuples: false, allErrors: true }).compile(configSchema);

  function exempt(raw: unknown): boolean {
    const services = (raw as Raw)?.services;
    if (!Array.isArray(services)) return false;
    const entries = services.filter((s) => s !== null && typeof s === 'object' && !Array.isArray(s));
    const names = entries.map((s) => s.name).filter((n) => typeof n === 'string');
    return new Set(names).size < names.length || entries.filter((s) => Object.hasOwn(s, 'vmm') && s.vmm === true).length > 1 ||
      sharedDevice(entries) || overlapping(raw as Raw);
  }
  /** Storage and runtime dir, one inside the other: a relation between two fields, beyond draft 7. */
  function overlapping(raw: Raw): boolean {
    const s = typeof raw?.storage === 'string' && raw.storage.startsWith('/') ? posix.normalize(raw.storage).replace(/(.)\/+$/, '$1') : null;
    const name = typeof raw?.name === 'string' ? raw.name : '';
    const r = typeof raw?.runtimeDir === 'string' ? posix.normalize(raw.runtimeDir).replace(/(.)\/+$/, '$1') : `/run/vmsandbox/${name}`;
    const inside = (a: string, b: string) => a === b || a.startsWith(`${b}/`);
    return s !== null && (inside(s, r) || inside(r, s));
  }
  /** Some device is granted to two services (compared as the loader normalizes paths). */
  function sharedDevice(entries: Raw[]): boolean {
    const owner = new Map<string, number>();
    return entries.some((s, i) => Array.isArray(s.devices) && s.devices.some((d: unknown) => {
      if (typeof d !== 'string' || !d.startsWith('/')) return false;
      const n = posix.normalize(d).replace(/(.)\/+$/, '$1');
      const first = owner.get(n);
      if (first === undefined) owner.set(n, i);
      return first !== undefined && first !== i;
    }));
  }
  const beyondDraft7 = new RegExp('^(?:services\\[\\d+\\]\\.name: duplicate name |services: exactly one service must have "vmm": true \\(found \\d+:' +
    '|services\\[\\d+\\]\\.devices\\[\\d+\\]: \\S+ is already granted to services\\[\\d+\\]' +
    '|storage: \\S+ is inside the runtime dir |runtimeDir: \\S+ is inside the storage )');

  function agree(raw: unknown): 'accepted' | 'rejected' | 'exempt' {
    const result = outcome(raw);
    const schemaOk = validate(raw);
    if (exempt(raw)) {
      expect(result.ok).toBe(false);
      if (schemaOk && !result.ok) for (const p of result.problems) expect(p).toMatch(beyondDraft7);
      return 'exempt';
    }
    const detail = result.ok ? JSON.stringify(validate.errors) : result.problems.join('; ');
    expect(schemaOk, `schema and loader disagree on ${JSON.stringify(raw)}: ${detail}`).toBe(result.ok);
    return result.ok ? 'accepted' : 'rejected';
  }

  test('the schema accepts the bases and every example', () => {
    for (const raw of BASES) expect(agree(raw)).toBe('accepted');
    const examples = dirname(demoConfigPath);
    for (const name of readdirSync(examples).filter((f) => f.endsWith('.json'))) {
      expect(agree(JSON.parse(readFileSync(join(examples, name), 'utf8')))).toBe('accepted');
    }
  });

  test('the unit-test cases agree too (spot checks at every rule boundary)', () => {
    const spots: Raw[] = [
      edited((c) => (c.storage = '/./')), edited((c) => (c.runtimeDir = '/a/..b')), edited((c) => (svc(c, 1).devices = ['/dev/./.'])),
      edited((c) => (svc(c, 1).devices = ['/./dev//x/'])), edited((c) => (svc(c, 0).caps = ['cap_kıll'])),
      edited((c) => (svc(c, 0).env = { '': 'x' })), edited((c) => (svc(c, 1).onExit = 'ignore')),
      edited((c) => (svc(c, 0).stop = { signal: 'SIGTERM' })), edited((c) => (svc(c, 1).stop = { sginal: 'SIGTERM' })),
      edited((c) => delete svc(c, 1).vmm), edited((c) => (svc(c, 1).vmm = 'yes')),
      edited((c) => (c.cgroup = { limits: { 'cpu.max': '1000 1000000', 'memory.low': 'max' } })),
    ];
    for (const raw of spots) agree(raw);
  });

  test('over fuzzed mutations, the schema accepts exactly what the loader accepts', () => {
    const seen = { accepted: 0, rejected: 0, exempt: 0 };
    fc.assert(fc.property(mutatedConfigArb, (raw) => void (seen[agree(raw)] += 1)), { numRuns: runs(10000) });
    // Both verdicts must be well represented, or the agreement says little.
    if (process.env.FUZZ_SCALE) console.log('cross-check verdicts', seen);
    expect(seen.accepted).toBeGreaterThan(runs(500));
    expect(seen.rejected).toBeGreaterThan(runs(2500));
  });
});

describe('JSON syntax errors', () => {
  test('positions', () => {
    expect(findJsonSyntaxError('{"a": 1}')).toBeUndefined();
    expect(findJsonSyntaxError('{"a": 1} x')).toEqual({ line: 1, column: 10, message: 'unexpected "x" after the end of the JSON value' });
    expect(findJsonSyntaxError('[1,\n 2\n 3]')).toEqual({ line: 3, column: 2, message: 'unexpected "3"; expected \',\' or \']\'' });
    expect(findJsonSyntaxError('{"a" 1}')?.message).toBe('unexpected "1"; expected \':\' after the property name');
    expect(findJsonSyntaxError('"a\tb"')?.message).toContain('control character');
    expect(findJsonSyntaxError('"\\x"')?.message).toBe('invalid escape in a string');
    expect(findJsonSyntaxError('-')?.message).toBe('invalid number');
    expect(findJsonSyntaxError('['.repeat(100000))?.message).toBe('unexpected end of input; expected a value');
  });

  const parses = (text: string) => {
    try {
      JSON.parse(text);
      return true;
    } catch {
      return false;
    }
  };

  test('finds an error exactly when JSON.parse fails', () => {
    const chars = fc.constantFrom(...'{}[],:"\\ \t\n-+.0123456789eEtrufalsnx/u\u0001'.split(''));
    const damaged = fc.tuple(fc.jsonValue(), fc.nat(), fc.nat(), fc.constantFrom('insert', 'delete'), chars).map(([v, pos, len, op, c]) => {
      const text = JSON.stringify(v, null, pos % 2 === 0 ? 2 : undefined) ?? 'null';
      const at = pos % (text.length + 1);
      return op === 'insert' ? text.slice(0, at) + c + text.slice(at) : text.slice(0, at) + text.slice(at + 1 + (len % 3));
    });
    fc.assert(
      fc.property(fc.oneof(damaged, fc.string({ unit: chars, maxLength: 12 })), (text) => {
        expect(findJsonSyntaxError(text) === undefined).toBe(parses(text));
      }),
      { numRuns: runs(5000) },
    );
  });
});
