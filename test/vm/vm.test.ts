// End to end: QEMU + virtiofsd (Debian's qemu-system-x86) boot the guest of guest/build.sh inside
// the sandbox, run by the compiled CLI as s6 would (`bin/vmsandbox run CONFIG`), with the config
// examples/vm/make-config.mjs generates. Skips with a printed reason when QEMU, virtiofsd or the
// guest cannot be had. Serial consoles and the manager's log lines are saved under test-output/vm/.

import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { findCgroup2Mount } from '../../effects/linux/cgroup.js';
import { forceCleanup, leftovers, removeTestParents, trackNamespace } from '../linux/helpers/leftovers.js';
import { spawnRun, type RunningManager } from '../linux/helpers/manager.js';
import { ensureNative } from '../linux/helpers/native.js';
import { CGROUP_PARENT, repoRoot } from '../linux/helpers/paths.js';
import { skipReason } from '../linux/helpers/skip.js';
import { newTestVm, type TestVm } from '../linux/helpers/vm.js';
// @ts-expect-error plain JavaScript module without types
import { QEMU, VIRTIOFSD, makeVmConfig } from '../../examples/vm/make-config.mjs';

const outDir = join(repoRoot, 'test-output', 'vm');

/** Build (or reuse) the guest; null and a reason when that is impossible here. */
function guestOrReason(): { guest: string | null; reason: string | null } {
  const base = skipReason();
  if (base) return { guest: null, reason: base };
  if (!existsSync(QEMU)) return { guest: null, reason: `${QEMU} missing (apt-get install qemu-system-x86)` };
  if (!existsSync(VIRTIOFSD)) return { guest: null, reason: `${VIRTIOFSD} missing (apt-get install qemu-system-x86)` };
  try {
    const out = execFileSync('sh', [join(repoRoot, 'guest', 'build.sh')], { encoding: 'utf8', timeout: 300_000, stdio: ['ignore', 'pipe', 'pipe'] });
    const guest = out.trim().split('\n').at(-1) ?? '';
    if (!existsSync(join(guest, 'vmlinux')) || !existsSync(join(guest, 'initrd.img'))) return { guest: null, reason: `guest/build.sh gave no guest (${guest})` };
    return { guest, reason: null };
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    return { guest: null, reason: `guest/build.sh failed: ${(err.stderr || err.message).trim().split('\n').slice(-3).join(' | ')}` };
  }
}

const { guest, reason } = guestOrReason();
if (reason) console.warn(`test/vm/vm skipped: ${reason}`);

interface Options {
  ignorePowerButton?: boolean;
  stopMs: number;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  edit?: (raw: any) => void;
}

function startManager(vm: TestVm, opts: Options): RunningManager {
  const raw = makeVmConfig({
    name: vm.name, storage: vm.storage, runtimeDir: vm.runtimeDir, guest, cgroupParent: CGROUP_PARENT,
    ignorePowerButton: opts.ignorePowerButton, stopMs: opts.stopMs,
  });
  opts.edit?.(raw);
  const file = join(vm.scratch, 'vm.json');
  writeFileSync(file, JSON.stringify(raw, null, 2));
  return spawnRun(file);
}

/**
 * Keeps the serial console: opens console.log as soon as QEMU creates it and reads through that fd,
 * which still works after cleanup has removed the runtime dir.
 */
class Console {
  private fd: number | null = null;
  private text = '';
  private readonly timer: NodeJS.Timeout;
  constructor(private readonly path: string) {
    this.timer = setInterval(() => this.poll(), 100);
  }
  private closed = false;
  private poll(): void {
    if (this.closed) return;
    if (this.fd === null) {
      if (!existsSync(this.path)) return;
      try {
        this.fd = openSync(this.path, 'r');
      } catch {
        return;
      }
    }
    const chunk = Buffer.alloc(65536);
    for (;;) {
      const n = readSync(this.fd, chunk, 0, chunk.length, null);
      if (n <= 0) break;
      this.text += chunk.subarray(0, n).toString('utf8');
    }
  }
  current(): string {
    this.poll();
    return this.text;
  }
  save(name: string): string {
    clearInterval(this.timer);
    this.poll();
    if (this.fd !== null) {
      closeSync(this.fd);
      this.fd = null;
      this.closed = true;
    }
    mkdirSync(outDir, { recursive: true });
    writeFileSync(join(outDir, `${name}.console.log`), this.text);
    return this.text;
  }
}

async function waitFor(what: string, cond: () => boolean, m: RunningManager, timeoutMs = 180_000): Promise<void> {
  const exitedEarly = m.exited.then((code) => {
    throw new Error(`the manager exited (${code}) before ${what}:\n${m.log()}`);
  });
  const poll = (async () => {
    for (const t0 = Date.now(); Date.now() - t0 < timeoutMs; await new Promise((r) => setTimeout(r, 100))) {
      if (cond()) return;
    }
    throw new Error(`no ${what} within ${timeoutMs} ms:\n${m.log()}`);
  })();
  await Promise.race([poll, exitedEarly]);
  exitedEarly.catch(() => undefined);
}

function trackInit(vm: TestVm): void {
  // The init's PID namespace is what leftovers() checks processes against; the init sits in the VM's
  // "init" leaf.
  const procs = join(findCgroup2Mount() ?? '/nonexistent', CGROUP_PARENT, vm.name, 'init', 'cgroup.procs');
  const pid = Number(readFileSync(procs, 'utf8').trim().split('\n')[0]);
  if (pid > 0) trackNamespace(vm, pid);
}

const leaf = (vm: TestVm, service: string) => join(findCgroup2Mount() ?? '/nonexistent', CGROUP_PARENT, vm.name, `svc-${service}`);
const marker = (vm: TestVm, name: string) => join(vm.storage, name);

describe.skipIf(reason)('a real VM in the sandbox (QEMU + virtiofsd + the cached guest)', () => {
  let vm: TestVm;
  let consoleLog: Console;
  beforeAll(() => ensureNative());
  afterEach(() => forceCleanup(vm));
  afterAll(() => removeTestParents());

  function begin(name: string, opts: Options): RunningManager {
    vm = newTestVm();
    consoleLog = new Console(join(vm.runtimeDir, 'vmm', 'console.log'));
    const m = startManager(vm, opts);
    void m.exited.then(() => {
      consoleLog.save(name);
      writeFileSync(join(outDir, `${name}.manager.log`), m.log());
    });
    return m;
  }

  it('boots; its marker appears in the storage; SIGTERM → system_powerdown → the guest powers off → exit 0', async () => {
    const m = begin('graceful', { stopMs: 20_000 });
    await waitFor('guest-booted marker', () => existsSync(marker(vm, 'guest-booted')), m);
    trackInit(vm);
    expect(readFileSync(marker(vm, 'guest-started'), 'utf8')).toMatch(/^started /);
    // The sandbox handed virtiofsd its socket: QEMU connected through it.
    const procs = readFileSync(join(leaf(vm, 'virtiofsd'), 'cgroup.procs'), 'utf8').trim();
    expect(procs).not.toBe('');
    // Both run under the default seccomp filter (plan/seccomp.ts); virtiofsd stacks its own on top.
    const filters = (service: string) =>
      readFileSync(join(leaf(vm, service), 'cgroup.procs'), 'utf8').trim().split('\n').map((pid) => {
        const status = readFileSync(`/proc/${pid}/status`, 'utf8');
        return [/^Seccomp:\s+(\d+)$/m.exec(status)?.[1], Number(/^Seccomp_filters:\s+(\d+)$/m.exec(status)?.[1])];
      });
    for (const [mode, n] of filters('vmm')) expect([mode, n]).toEqual(['2', 1]);
    for (const [mode, n] of filters('virtiofsd')) expect([mode, (n as number) >= 1]).toEqual(['2', true]);
    m.kill('SIGTERM');
    const code = await m.exited;
    expect(code, m.log()).toBe(0);
    // The guest saw the button and powered itself off: the second marker, written by its handler.
    expect(readFileSync(marker(vm, 'guest-powerdown'), 'utf8')).toMatch(/^powerdown /);
    const last = m.lines.at(-1);
    expect(last).toMatchObject({ outcome: 'stopped', exitCode: 0 });
    expect(m.lines.some((l) => typeof l.reason === 'string' && /vmm \(pid \d+\) exit code 0/.test(l.reason))).toBe(true);
    expect(consoleLog.save('graceful')).toMatch(/power button: powering off/);
    expect(leftovers(vm)).toEqual([]);
  });

  it('SIGTERM the moment it is ready (QMP answers), the guest still booting: the request is repeated until the guest takes it → exit 0', async () => {
    // ready: {qmp} holds ~0.15 s after QEMU starts; the guest arms its power button seconds later
    // (TCG). The first system_powerdown is lost; the repeats (every STOP_REPEAT_MS) reach it.
    const m = begin('stopped-while-booting', {
      stopMs: 20_000,
      edit: (raw) => {
        for (const s of raw.services) if (s.vmm) s.ready = { qmp: s.stop.qmp };
      },
    });
    await waitFor('the ready record', () => m.lines.some((l) => l.event === 'ready'), m);
    const t0 = Date.now();
    m.kill('SIGTERM');
    trackInit(vm);
    const bootedAtTerm = existsSync(marker(vm, 'guest-booted'));
    const code = await m.exited;
    const ms = Date.now() - t0;
    const last = m.lines.at(-1)!;
    const ready = m.lines.find((l) => l.event === 'ready')!;
    const powerdown = existsSync(marker(vm, 'guest-powerdown')) ? readFileSync(marker(vm, 'guest-powerdown'), 'utf8').trim() : 'none';
    console.log(
      `vm: SIGTERM at ready (${String(ready.ms)} ms after the manager's start, guest booted: ${bootedAtTerm}) → exit ${code} after ${ms} ms, ` +
        `${String(last.stopRequests)} stop requests; guest marker "${powerdown}" (its uptime in s)`,
    );
    expect(bootedAtTerm, 'the guest had already armed its button: nothing to show').toBe(false);
    expect(code, m.log()).toBe(0);
    expect(last).toMatchObject({ outcome: 'stopped', exitCode: 0, errors: [] });
    expect(last.stopRequests as number, m.log()).toBeGreaterThan(1);
    expect(powerdown).toMatch(/^powerdown /);
    expect(consoleLog.save('stopped-while-booting')).toMatch(/power button: powering off/);
    expect(leftovers(vm)).toEqual([]);
  });

  it('a guest that ignores the power button is forced at stopMs: exit 2, nothing left', async () => {
    const m = begin('ignores-button', { ignorePowerButton: true, stopMs: 3000 });
    await waitFor('guest-booted marker', () => existsSync(marker(vm, 'guest-booted')), m);
    trackInit(vm);
    m.kill('SIGTERM');
    const code = await m.exited;
    expect(code, m.log()).toBe(2);
    expect(existsSync(marker(vm, 'guest-powerdown'))).toBe(false);
    expect(m.lines.some((l) => l.reason === 'graceful stop did not finish within 3000 ms'), m.log()).toBe(true);
    expect(consoleLog.save('ignores-button')).toMatch(/ignoring the power button/);
    expect(leftovers(vm)).toEqual([]);
  });

  it('virtiofsd killed while the guest runs: the VM is stopped (onExit "stop"), exit 4, nothing left', async () => {
    const m = begin('virtiofsd-killed', { stopMs: 3000 });
    await waitFor('guest-booted marker', () => existsSync(marker(vm, 'guest-booted')), m);
    trackInit(vm);
    const pids = readFileSync(join(leaf(vm, 'virtiofsd'), 'cgroup.procs'), 'utf8').trim().split('\n').map(Number);
    for (const pid of pids) process.kill(pid, 'SIGKILL');
    const code = await m.exited;
    expect(code, m.log()).toBe(4);
    expect(m.lines.at(-1)).toMatchObject({ outcome: 'serviceCrashed', exitCode: 4 });
    expect(m.lines.some((l) => typeof l.reason === 'string' && /virtiofsd .*SIGKILL/.test(l.reason)), m.log()).toBe(true);
    expect(leftovers(vm)).toEqual([]);
  });

  it('virtiofsd without SECBIT_NO_SETUID_FIXUP: only its first file write as a guest uid works', async () => {
    const m = begin('no-securebit', { stopMs: 3000, edit: (raw) => delete raw.services[0].securebits });
    // The guest logs "booted" on its console whether or not its marker write succeeded.
    await waitFor('"booted" on the console', () => /vmsandbox-guest: booted at/.test(consoleLog.current()), m);
    trackInit(vm);
    expect(existsSync(marker(vm, 'guest-started'))).toBe(true);
    expect(existsSync(marker(vm, 'guest-booted'))).toBe(false);
    m.kill('SIGTERM');
    expect(await m.exited).not.toBeNull();
    expect(leftovers(vm)).toEqual([]);
  });
});
