// Why Landlock said no. A vmm that reads a file outside its rules fails with only its own
// "Permission denied"; `vmsandbox run` then names the access, the path and the rule to add, read
// from the kernel's audit records (Landlock ABI 7, the kernel's audit switched on for the test and
// restored after). `check` finds the usual case before anything runs: a file a QEMU command line
// names (-kernel) outside the vmm's read rules.

import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { checkMain } from '../../cli/check.js';
import { forceCleanup, leftovers, removeTestParents } from './helpers/leftovers.js';
import { spawnRun, writeRunConfig } from './helpers/manager.js';
import { ensureNative, staticCcSkipReason, testProgram } from './helpers/native.js';
import { landlockSkipReason, skipReason } from './helpers/skip.js';
import { newTestVm, type TestVm } from './helpers/vm.js';

const skip = skipReason() ?? landlockSkipReason(7) ?? staticCcSkipReason();
if (skip) console.warn(`test/linux/landlock-audit skipped: ${skip}`);

/** The kernel's audit switch (native/test/audit-ctl.c): "0" / "1", or the current state. */
function audit(set?: '0' | '1'): string {
  return execFileSync(testProgram('audit-ctl'), set ? [set] : [], { encoding: 'utf8' }).trim();
}

describe.skipIf(skip)('a Landlock denial explained', () => {
  let vm: TestVm;
  let dir = '';
  let before = '';
  beforeAll(() => {
    ensureNative();
    before = audit();
    // Outside /tmp (the VM's view covers the storage's parent there): the file is visible, only Landlock denies it.
    dir = mkdtempSync('/var/tmp/vmsandbox-guest-');
    chmodSync(dir, 0o755);
    writeFileSync(join(dir, 'vmlinux'), 'kernel\n', { mode: 0o644 });
  });
  afterEach(() => forceCleanup(vm));
  afterAll(() => {
    audit(before === 'enabled=1' ? '1' : '0');
    rmSync(dir, { recursive: true, force: true });
    removeTestParents();
  });

  async function failingRun(): Promise<Record<string, unknown>[]> {
    vm = newTestVm();
    const m = spawnRun(writeRunConfig(vm, ['/bin/sh', '-c', `exec cat ${dir}/vmlinux`]).file);
    expect(await m.exited, m.log()).toBe(4); // the vmm failed: serviceCrashed
    expect(m.lines.some((l) => l.service === 'vmm' && String(l.msg).includes('Permission denied')), m.log()).toBe(true);
    expect(leftovers(vm)).toEqual([]);
    return m.lines;
  }

  it('run names the access, the path and the rule to add when audit is on', async () => {
    audit('1');
    const lines = await failingRun();
    const rec = lines.find((l) => l.event === 'landlock-denied');
    expect(rec, JSON.stringify(lines)).toMatchObject({ level: 'warn', service: 'vmm' });
    // (Another test VM of the same uid may have met denials at the same time: look for ours.)
    expect(rec!.denials).toContainEqual({ blockers: ['fs.read_file'], path: `${dir}/vmlinux`, fix: `add "${dir}/vmlinux" (or a directory above it) to services[1].landlock.read` });
    expect(String(rec!.msg)).toMatch(/^vmm: Landlock denied fs\.read_file on \S+: add "\S+" \(or a directory above it\) to services\[1\]\.landlock\.read/);
  }, 30_000);

  it('with audit off (control) nothing is recorded: run says how to have denials named', async () => {
    audit('0');
    const lines = await failingRun();
    expect(lines.find((l) => l.event === 'landlock-denied')).toBeUndefined();
    expect(lines.find((l) => l.event === 'landlock-unexplained')).toMatchObject({ service: 'vmm', msg: expect.stringMatching(/^vmm failed early: .*auditctl -e 1/) });
  }, 30_000);

  it('check finds a QEMU -kernel outside the vmm\'s read rules before anything runs (exit 111), and not once it is granted', async () => {
    vm = newTestVm();
    const { file } = writeRunConfig(vm, ['/usr/bin/qemu-system-x86_64', '-nodefaults', '-kernel', `${dir}/vmlinux`]);
    const fails = async () => {
      let out = '';
      const code = await checkMain([file, '--quiet'], { io: { out: (t) => void (out += t), err: () => undefined } });
      return { code, lines: out.split('\n').filter((l) => l.startsWith('FAIL: services[1].argv[3]')) };
    };
    const denied = await fails();
    expect(denied.code).toBe(111);
    expect(denied.lines).toEqual([
      `FAIL: services[1].argv[3]: -kernel ${dir}/vmlinux: outside vmm's Landlock read rules, so it cannot be opened (Permission denied when the VM starts). Fix: add "${dir}/vmlinux" (or its directory) to services[1].landlock.read`,
    ]);
    const raw = JSON.parse(readFileSync(file, 'utf8'));
    raw.services[1].landlock.read.push(dir);
    writeFileSync(file, JSON.stringify(raw));
    expect((await fails()).lines).toEqual([]);
  });
});
