// Views instead of visibility. A VM's mount namespace shows its own runtime dir and storage and no
// other VM's (two VMs at once); each service's namespace shows, of the runtime dir, its own
// directory and the sockets it owns or is a client of. The probes hold CAP_DAC_OVERRIDE, as
// virtiofsd does: file modes do not stop them, and Landlock does not govern connect(2) to a named
// socket (nor a path walk), so only not seeing a file does.

import { chmodSync, copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { serviceExit, start, stop } from './helpers/inprocess.js';
import { forceCleanup, leftovers, removeTestParents } from './helpers/leftovers.js';
import { ensureNative, staticCcSkipReason, testProgram } from './helpers/native.js';
import { skipReason } from './helpers/skip.js';
import { newTestVm, service, SLEEPER, SYSTEM_READ, vmConfig, type TestVm } from './helpers/vm.js';

const skip = skipReason();
if (skip) console.warn(`skipping the view tests: ${skip}`);
const skipCc = skip ?? staticCcSkipReason();
if (!skip && skipCc) console.warn(`skipping the per-service view test (it connects with the static escape helper): ${skipCc}`);

describe.skipIf(skip)('a VM sees its own runtime dir and storage, not another VM\'s', () => {
  const vms: TestVm[] = [];
  afterEach(() => {
    for (const vm of vms.splice(0)) forceCleanup(vm);
  });
  afterAll(() => removeTestParents());

  it('a service with DAC_OVERRIDE and a Landlock rule on the parents in VM B finds nothing of VM A; it reads its own VM\'s storage (control)', async () => {
    ensureNative();
    const a = newTestVm();
    vms.push(a);
    writeFileSync(join(a.storage, 'secret'), 'disk of A\n');
    chmodSync(join(a.storage, 'secret'), 0o600);
    const runA = start(vmConfig(a, [SLEEPER]), a);
    await runA.waitFor('running');

    const b = newTestVm();
    vms.push(b);
    writeFileSync(join(b.storage, 'own'), 'disk of B\n');
    chmodSync(join(b.storage, 'own'), 0o600);
    const out = `${b.runtimeDir}/probe/out`;
    const script = [
      `exec >${out} 2>&1`,
      `[ -e ${a.runtimeDir} ] && echo "other-vm-runtime: visible" || echo "other-vm-runtime: absent"`,
      `[ -e ${a.storage} ] && echo "other-vm-storage: visible" || echo "other-vm-storage: absent"`,
      `cat ${a.storage}/secret || echo "other-vm-secret: unread"`,
      // Control: the rule and the capability do reach what the view shows (B's own storage, a
      // root-owned 0600 file the probe's uid could not read by its modes).
      `cat ${b.storage}/own || echo "own-storage: unread"`,
      `ls ${dirname(b.storage)} | grep -c vmsandbox-storage- | sed 's/^/storages listed: /'`,
    ].join('\n');
    // Rules on the parents themselves: what a broad rule would give a service without the view.
    const probe = service({
      name: 'probe',
      argv: ['/bin/sh', '-c', script],
      caps: ['CAP_DAC_OVERRIDE'],
      storage: 'ro',
      landlock: { read: [...SYSTEM_READ, dirname(a.storage), dirname(a.runtimeDir)], write: [`${b.runtimeDir}/probe`] },
    });
    const runB = start(vmConfig(b, [probe, { ...SLEEPER, onExit: 'stop' }], {}), b);
    const exit = await serviceExit(runB, 'probe');
    expect(exit.code).toBe(0);
    const said = readFileSync(out, 'utf8');
    expect(said).toContain('other-vm-runtime: absent');
    expect(said).toContain('other-vm-storage: absent');
    expect(said).toContain('other-vm-secret: unread');
    expect(said).not.toContain('disk of A');
    expect(said).toContain('disk of B');
    // /tmp holds every test VM's storage on the host; B's view of it holds B's alone.
    expect(said).toContain('storages listed: 1');
    // On the host A's files are there, A running: only B's view lacks them.
    expect(existsSync(`${a.runtimeDir}/vmm`)).toBe(true);
    expect(readFileSync(join(a.storage, 'secret'), 'utf8')).toBe('disk of A\n');
    await stop(runB);
    expect((await stop(runA)).outcome).toBe('stopped');
    expect(leftovers(a)).toEqual([]);
    expect(leftovers(b)).toEqual([]);
  }, 30_000);
});

describe.skipIf(skipCc)('a service sees its own directory and the sockets shared with it, nothing else of the runtime dir', () => {
  let vm: TestVm | null = null;
  let tools = '';
  beforeAll(() => {
    if (skipCc) return;
    ensureNative();
    tools = mkdtempSync('/tmp/vmsandbox-tools-');
    chmodSync(tools, 0o755);
    copyFileSync(testProgram('escape-helper'), join(tools, 'esc'));
    chmodSync(join(tools, 'esc'), 0o755);
  });
  afterEach(() => {
    if (vm) forceCleanup(vm);
    vm = null;
  });
  afterAll(() => {
    removeTestParents();
    if (tools) rmSync(tools, { recursive: true, force: true });
  });

  it('with DAC_OVERRIDE it connects to a 0600 socket listed for it (control) and finds neither the same socket unlisted nor the vmm\'s directory', async () => {
    const t = newTestVm();
    vm = t;
    const rt = t.runtimeDir;
    // Two identical sockets of another uid, mode 0600: only `clients` tells them apart.
    const owner = service({
      name: 'owner',
      uid: 62003,
      gid: 62003,
      argv: ['/bin/sleep', '1000'],
      sockets: [
        { path: `${rt}/shared.sock`, fd: 3, mode: '0600', gid: 62003, clients: ['probe'] },
        { path: `${rt}/owner/private.sock`, fd: 4, mode: '0600', gid: 62003 },
        { path: `${rt}/unlisted.sock`, fd: 5, mode: '0600', gid: 62003 },
      ],
    });
    const out = `${rt}/probe/out`;
    const script = [
      `exec >${out} 2>&1`,
      `${tools}/esc connect ${rt}/shared.sock`,
      `[ -e ${rt}/unlisted.sock ] && echo "unlisted: visible" || echo "unlisted: absent"`,
      `${tools}/esc connect ${rt}/unlisted.sock | sed 's/^/unlisted-/'`,
      `[ -e ${rt}/owner ] && echo "owner-dir: visible" || echo "owner-dir: absent"`,
      `[ -e ${rt}/vmm ] && echo "vmm-dir: visible" || echo "vmm-dir: absent"`,
      `touch ${rt}/probe/mine && echo "own-dir: writable" || echo "own-dir: denied"`,
      `touch ${rt}/planted && echo "view: writable" || echo "view: read-only"`,
    ].join('\n');
    const probe = service({
      name: 'probe',
      argv: ['/bin/sh', '-c', script],
      caps: ['CAP_DAC_OVERRIDE'],
      landlock: { read: [...SYSTEM_READ, tools], write: [rt] },
    });
    const run = start(vmConfig(t, [owner, probe, { ...SLEEPER, uid: 62002, gid: 62002 }]), t);
    const exit = await serviceExit(run, 'probe');
    expect(exit.code).toBe(0);
    await run.waitFor('running');
    const said = readFileSync(out, 'utf8');
    expect(said).toContain('connect rc=0');
    expect(said).toContain('unlisted: absent');
    expect(said).toContain('unlisted-connect rc=-1 errno=ENOENT');
    expect(said).toContain('owner-dir: absent');
    expect(said).toContain('vmm-dir: absent');
    expect(said).toContain('own-dir: writable');
    expect(said).toContain('view: read-only');
    // On the host every one of them is there, the VM running.
    for (const p of [`${rt}/unlisted.sock`, `${rt}/owner/private.sock`, `${rt}/vmm`, `${rt}/probe/mine`]) expect(existsSync(p)).toBe(true);
    expect(existsSync(`${rt}/planted`)).toBe(false);
    expect((await stop(run)).outcome).toBe('stopped');
    expect(leftovers(t)).toEqual([]);
  }, 30_000);
});
