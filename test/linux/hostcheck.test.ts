// `vmsandbox check`'s host report against this real host (as root): Landlock ABI, cgroup2
// controllers per limit, programs, paths, devices, uids, and the exit codes and JSON shape.

import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkMain } from '../../cli/check.js';
import type { CliIo } from '../../cli/io.js';
import { loadConfig } from '../../config/load.js';
import { linuxHostCheck, type HostReport } from '../../effects/linux/hostCheck.js';
import { landlockAbi } from '../../effects/linux/native.js';
import { ensureNative } from './helpers/native.js';
import { skipReason } from './helpers/skip.js';
import { SYSTEM_READ } from './helpers/vm.js';

const skip = skipReason();
if (skip) console.warn(`test/linux/hostcheck skipped: ${skip}`);

function capture(): CliIo & { stdout: string; stderr: string } {
  const io = { stdout: '', stderr: '', out: (t: string) => void (io.stdout += t), err: (t: string) => void (io.stderr += t) };
  return io;
}

describe.skipIf(skip)('vmsandbox check: host report (real host)', () => {
  let dir: string;
  let storage: string;
  let n = 0;
  beforeAll(() => {
    ensureNative();
    dir = mkdtempSync(join(tmpdir(), 'vmsandbox-hostcheck-'));
    storage = mkdtempSync(join(tmpdir(), 'vmsandbox-hostcheck-storage-'));
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
    rmSync(storage, { recursive: true, force: true });
  });

  /** A config this host can run (the lifecycle tests run the same), edited by `edit`. */
  function configFile(edit: (c: any) => void = () => undefined): string {
    const raw: any = {
      name: 'hostcheck',
      storage,
      runtimeDir: `/run/vmsandbox-hostcheck-${process.pid}`,
      cgroup: { parent: 'vmsandbox-test' },
      landlock: { minAbi: 1 },
      services: [
        { name: 'helper', argv: ['/bin/sleep', '1000'], uid: 62001, gid: 62001, landlock: { read: SYSTEM_READ, write: [] } },
        { name: 'vmm', vmm: true, argv: ['/bin/sleep', '1000'], uid: 62002, gid: 62002, landlock: { read: SYSTEM_READ, write: [] } },
      ],
    };
    edit(raw);
    const file = join(dir, `vm${++n}.json`);
    writeFileSync(file, JSON.stringify(raw));
    return file;
  }

  async function report(file: string): Promise<HostReport> {
    return linuxHostCheck(loadConfig(file));
  }

  const levelOf = (r: HostReport, item: string) => r.items.filter((x) => x.item === item).map((x) => x.level);
  const failed = (r: HostReport) => r.items.filter((x) => x.level === 'fail').map((x) => x.item);

  it('a config this host can run: no failure, exit 0, the verdict on stdout', async () => {
    const file = configFile();
    const r = await report(file);
    expect(failed(r), JSON.stringify(r.items, null, 1)).toEqual([]);
    expect(r.ok).toBe(true);
    expect(levelOf(r, 'host.root')).toEqual(['ok']);
    expect(levelOf(r, 'services[1].argv[0]')).toEqual(['ok']);
    // ok, and (on a host whose storage mount lacks nosuid,nodev, as here) a warning saying so.
    expect(levelOf(r, 'storage')).toContain('ok');
    expect(levelOf(r, 'storage')).not.toContain('fail');
    expect(r.facts.landlockAbi).toBe(landlockAbi());
    expect(r.facts.cgroup2Mount).toMatch(/^\//);
    const io = capture();
    expect(await checkMain([file], { io })).toBe(0);
    expect(io.stderr).toBe('');
    expect(io.stdout).toMatch(/^ok: {3}landlock\.minAbi: the kernel offers Landlock ABI \d/m);
    expect(io.stdout.trimEnd().split('\n').at(-1)).toMatch(new RegExp(`^${file}: ok \\(vm hostcheck, 2 services; host: 0 failures, \\d+ warnings?\\)$`));
    // --quiet: the same verdict, without the ok: lines.
    const quiet = capture();
    expect(await checkMain([file, '--quiet'], { io: quiet })).toBe(0);
    expect(quiet.stdout).not.toMatch(/^ok: /m);
    expect(quiet.stdout.trimEnd().split('\n').at(-1)).toBe(io.stdout.trimEnd().split('\n').at(-1));
    expect(quiet.stdout.split('\n').filter((l) => l.startsWith('warn:'))).toEqual(io.stdout.split('\n').filter((l) => l.startsWith('warn:')));
    // --no-host: the config only, as before the host check existed.
    const plain = capture();
    expect(await checkMain([file, '--no-host'], { io: plain })).toBe(0);
    expect(plain.stdout).toBe(`${file}: ok (vm hostcheck, 2 services)\n`);
  });

  it('a risky capability is a warning saying what it lets a compromised service do; a harmless one is not', async () => {
    const r = await report(configFile((c) => (c.services[0].caps = ['CAP_SETUID', 'CAP_NET_BIND_SERVICE', 'fowner'])));
    expect(failed(r)).toEqual([]);
    expect(r.items.filter((x) => x.item.startsWith('services[0].caps'))).toEqual([
      { level: 'warn', item: 'services[0].caps[0]', message: expect.stringMatching(/^CAP_SETUID: if helper is compromised, it becomes any uid/) },
      { level: 'warn', item: 'services[0].caps[2]', message: expect.stringMatching(/^CAP_FOWNER: if helper is compromised, it chmods/) },
    ]);
  });

  it('a socket client that sees the socket but whose uid and group the mode shuts out is a warning with the fix', async () => {
    const sock = (over: object) => (c: any) => (c.services[0].sockets = [{ path: `${c.runtimeDir}/fs.sock`, fd: 3, clients: ['vmm'], ...over }]);
    const shut = await report(configFile(sock({ mode: '0600' })));
    expect(failed(shut)).toEqual([]);
    expect(shut.items.filter((x) => x.item.startsWith('services[0].sockets'))).toEqual([
      { level: 'warn', item: 'services[0].sockets[0].clients[0]', message: expect.stringMatching(/^vmm sees .*fs\.sock but cannot connect to it: .*Fix: "gid": 62002 with "mode": "0660"$/) },
    ]);
    // The group grants it; or the client bypasses modes: no warning.
    for (const ok of [await report(configFile(sock({ mode: '0660', gid: 62002 }))), await report(configFile((c) => (sock({ mode: '0600' })(c), (c.services[1].caps = ['CAP_DAC_OVERRIDE'])))) ]) {
      expect(ok.items.filter((x) => x.item.startsWith('services[0].sockets'))).toEqual([]);
    }
  });

  it('a missing argv[0] fails with its field path; exit 111 (valid config, this host cannot run it)', async () => {
    const file = configFile((c) => (c.services[0].argv = ['/nonexistent/virtiofsd']));
    const r = await report(file);
    expect(failed(r)).toEqual(['services[0].argv[0]']);
    expect(r.items.find((x) => x.item === 'services[0].argv[0]')!.message).toContain('/nonexistent/virtiofsd does not exist');
    const io = capture();
    expect(await checkMain([file], { io })).toBe(111);
    expect(io.stdout).toContain('FAIL: services[0].argv[0]: /nonexistent/virtiofsd does not exist');
    expect(io.stderr).toBe(`${file}: valid config (vm hostcheck, 2 services), but this host cannot enforce it: 1 failure, ${r.warnings} warning${r.warnings === 1 ? '' : 's'} (see the FAIL lines)\n`);
  });

  it('argv[0] outside the Landlock rules, or not executable by the service uid, fails', async () => {
    const notExec = join(dir, 'not-executable');
    writeFileSync(notExec, '#!/bin/sh\n', { mode: 0o744 });
    const file = configFile((c) => {
      c.services[0].landlock.read = ['/etc'];
      c.services[1].argv = [notExec];
      c.services[1].landlock.read = [...SYSTEM_READ, dir];
    });
    const r = await report(file);
    expect(failed(r)).toEqual(['services[0].argv[0]', 'services[1].argv[0]']);
    const msg = (item: string) => r.items.find((x) => x.item === item)!.message;
    expect(msg('services[0].argv[0]')).toContain("outside the service's Landlock rules");
    expect(msg('services[1].argv[0]')).toContain('not executable by uid 62002');
  });

  it('a missing Landlock path fails (a rule needs an inode); runtime dirs the run creates do not', async () => {
    const file = configFile((c) => {
      c.services[1].landlock.read = [...SYSTEM_READ, '/nonexistent/share'];
      c.services[1].landlock.write = [c.runtimeDir, `${c.runtimeDir}/vmm`];
    });
    const r = await report(file);
    expect(failed(r)).toEqual([`services[1].landlock.read[${SYSTEM_READ.length}]`]);
    expect(levelOf(r, 'services[1].landlock.write[0]')).toEqual(['ok']);
    expect(levelOf(r, 'services[1].landlock.write[1]')).toEqual(['ok']);
  });

  it('missing storage and a device that does not exist fail', async () => {
    const file = configFile((c) => {
      c.storage = '/nonexistent/storage';
      c.services[1].devices = ['/dev/null', '/dev/nonexistent'];
    });
    const r = await report(file);
    expect(failed(r)).toEqual(['services[1].devices[1]', 'storage']);
    expect(levelOf(r, 'services[1].devices[0]')).toEqual(['ok']);
    // A config without /dev/kvm (TCG) is told nothing about this host's KVM.
    expect(r.items.find((x) => x.item === 'host./dev/kvm')).toBeUndefined();
  });

  it('/dev/kvm is reported for a config that grants it: ok for real KVM, warn for kvm_pvm (a VM host) or none', async () => {
    const r = await report(configFile((c) => (c.services[1].devices = ['/dev/kvm'])));
    // Which one depends on the host, so assert the rule, not one answer.
    const kvm = r.items.find((x) => x.item === 'host./dev/kvm')!;
    const expected = !r.facts.kvm ? 'warn' : existsSync('/sys/module/kvm_pvm') ? 'warn' : 'ok';
    expect(kvm.level, kvm.message).toBe(expected);
  });

  it('warns that a stopMs below 5 s cannot let a guest shut down, unless the vmm is stopped by a signal', async () => {
    const qmp = (c: any) => (c.services[1].stop = { qmp: `${c.runtimeDir}/vmm/qmp.sock` });
    const short = await report(configFile((c) => (qmp(c), (c.timeouts = { stopMs: 50 }))));
    expect(short.items.filter((x) => x.item === 'timeouts.stopMs')).toEqual([
      { level: 'warn', item: 'timeouts.stopMs', message: expect.stringMatching(/^50 ms is too short for a guest to shut down after QMP system_powerdown .* Fix: 5000 or more$/) },
    ]);
    const long = await report(configFile((c) => (qmp(c), (c.timeouts = { stopMs: 10000 }))));
    expect(long.items.filter((x) => x.item === 'timeouts.stopMs')).toEqual([]);
    const signal = await report(configFile((c) => (c.timeouts = { stopMs: 50 })));
    expect(signal.items.filter((x) => x.item === 'timeouts.stopMs')).toEqual([]);
  });

  it('a limit whose controller cgroup v2 lacks: FAIL, or warn with cgroup.limitsOptional', async (ctx) => {
    const probe = await report(configFile());
    const missing = ['memory', 'pids', 'cpu', 'io'].find((c) => !probe.facts.cgroupControllers.includes(c));
    if (!missing) return ctx.skip(`this host's cgroup2 offers memory, pids, cpu and io: no missing controller to test`);
    const key = { memory: 'memory.max', pids: 'pids.max', cpu: 'cpu.weight', io: 'io.weight' }[missing]!;
    const value = { memory: '512M', pids: 64, cpu: 100, io: 100 }[missing]!;
    const strict = configFile((c) => {
      c.cgroup.limits = { [key]: value };
      c.services[0].limits = { [key]: value };
    });
    const r = await report(strict);
    expect(failed(r)).toEqual([`cgroup.limits["${key}"]`, `services[0].limits["${key}"]`]);
    expect(r.items.find((x) => x.level === 'fail')!.message).toContain('set cgroup.limitsOptional');
    expect(await checkMain([strict], { io: capture() })).toBe(111);
    const optional = configFile((c) => {
      c.cgroup.limits = { [key]: value };
      c.cgroup.limitsOptional = true;
    });
    const o = await report(optional);
    expect(failed(o)).toEqual([]);
    expect(levelOf(o, `cgroup.limits["${key}"]`)).toEqual(['warn']);
    expect(o.items.find((x) => x.item === `cgroup.limits["${key}"]`)!.message).toContain('skipped at run time');
    expect(await checkMain([optional], { io: capture() })).toBe(0); // warnings do not fail the check
  });

  it('landlock.minAbi above the host ABI: FAIL, or warn with the lost protections when allowDegraded', async () => {
    const host = landlockAbi();
    // Config allows minAbi up to 7; on a host at ABI 7 the probe is replaced by an older kernel's 5.
    const abi = host < 7 ? host : 5;
    const opts = host < 7 ? {} : { landlockAbi: 5 };
    const minAbi = abi + 1;
    const strict = loadConfig(configFile((c) => (c.landlock = { minAbi })));
    const r = await linuxHostCheck(strict, opts);
    expect(failed(r)).toEqual(['landlock.minAbi']);
    expect(r.items.find((x) => x.item === 'landlock.minAbi')!.message).toContain(`the kernel offers Landlock ABI ${abi}, the config needs ${minAbi}`);
    const degraded = loadConfig(configFile((c) => (c.landlock = { minAbi, allowDegraded: true })));
    const d = await linuxHostCheck(degraded, opts);
    expect(failed(d)).toEqual([]);
    const item = d.items.find((x) => x.item === 'landlock.minAbi')!;
    expect(item.level).toBe('warn');
    if (abi < 6) expect(item.message).toContain('signal scoping');
    if (host < 7) expect(await checkMain([configFile((c) => (c.landlock = { minAbi }))], { io: capture() })).toBe(111);
  });

  it('warns when a service uid is a passwd user, or two services share a uid', async () => {
    const config = loadConfig(configFile((c) => (c.services[1].uid = 62001)));
    const passwd = 'root:x:0:0:root:/root:/bin/bash\nalice:x:62001:62001::/home/alice:/bin/bash\n';
    const r = await linuxHostCheck(config, { passwd });
    expect(failed(r)).toEqual([]);
    const uidItems = r.items.filter((x) => x.item.endsWith('.uid') && x.level === 'warn').map((x) => [x.item, x.message]);
    expect(uidItems).toEqual([
      ['services[0].uid', expect.stringContaining('belongs to the login user alice')],
      ['services[1].uid', expect.stringContaining('belongs to the login user alice')],
      ['services[1].uid', expect.stringContaining("also helper's")],
    ]);
  });

  it('--json: the config and a host object {ok, failures, warnings, items, facts}', async () => {
    const file = configFile((c) => (c.services[0].argv = ['/nonexistent/x']));
    const io = capture();
    expect(await checkMain(['--json', file], { io })).toBe(111);
    expect(io.stderr).toBe('');
    const out = JSON.parse(io.stdout);
    expect(Object.keys(out)).toEqual(['file', 'ok', 'config', 'host']);
    expect(out).toMatchObject({ file, ok: false, config: loadConfig(file) });
    expect(Object.keys(out.host)).toEqual(['ok', 'failures', 'warnings', 'items', 'facts']);
    expect(out.host).toMatchObject({ ok: false, failures: 1 });
    for (const item of out.host.items) {
      expect(Object.keys(item)).toEqual(['level', 'item', 'message']);
      expect(['ok', 'warn', 'fail']).toContain(item.level);
    }
    expect(out.host.items).toContainEqual({ level: 'fail', item: 'services[0].argv[0]', message: expect.stringContaining('/nonexistent/x') });
    expect(out.host.facts).toEqual({
      root: true,
      landlockAbi: landlockAbi(),
      cgroup2Mount: expect.stringMatching(/^\//),
      cgroupControllers: expect.any(Array),
      kvm: expect.any(Boolean),
    });
    const plain = capture();
    expect(await checkMain(['--json', '--no-host', file], { io: plain })).toBe(0);
    expect(JSON.parse(plain.stdout)).toEqual({ file, ok: true, config: loadConfig(file) });
  });
});
