// A real sandbox (`bin/vmsandbox run CONFIG`, root) seen by the visualizer: it must appear with its
// state, its services' pids and what a service wrote, and no service may connect to the status socket.

import { spawn } from 'node:child_process';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { startInspector } from '../../visualizer/inspect.js';
import { forceCleanup, removeTestParents } from '../linux/helpers/leftovers.js';
import { ensureNative } from '../linux/helpers/native.js';
import { CGROUP_PARENT, TEST_RUNTIME_ROOT } from '../linux/helpers/paths.js';
import { skipReason } from '../linux/helpers/skip.js';
import { newTestVm, SYSTEM_READ, type TestVm } from '../linux/helpers/vm.js';
import { chromiumSkipReason, launchChromium, outDir, repoRoot } from './helpers.js';

const skip = skipReason() ?? chromiumSkipReason();
if (skip) console.warn(`test/visualizer/real skipped: ${skip}`);

describe.skipIf(skip)('a real sandbox in the visualizer', () => {
  let vm: TestVm | null = null;
  afterAll(() => {
    if (vm) forceCleanup(vm);
    removeTestParents();
  });

  it('shows `vmsandbox run`: running, with the services and their output; a service cannot connect to the socket', async () => {
    ensureNative();
    vm = newTestVm();
    const sock = `${vm.runtimeDir}/status.sock`;
    // The helper service tries the socket from inside the sandbox (its uid, its Landlock domain) and
    // writes what happened into its own runtime dir.
    const probe = `echo "helper: hello from uid $(id -u)"; if [ -S ${sock} ] && [ -w ${sock} ]; then echo writable; else echo denied; fi > ${vm.runtimeDir}/helper/probe; exec sleep 1000`;
    const raw = {
      name: vm.name,
      storage: vm.storage,
      runtimeDir: vm.runtimeDir,
      timeouts: { stopMs: 3000, killMs: 2000 },
      cgroup: { parent: CGROUP_PARENT },
      landlock: { minAbi: 1 },
      services: [
        { name: 'helper', argv: ['/bin/sh', '-c', probe], uid: 62001, gid: 62001, tmp: true, env: { PATH: '/usr/bin:/bin' }, landlock: { read: SYSTEM_READ, write: [] } },
        { name: 'vmm', vmm: true, argv: ['/bin/sleep', '1000'], uid: 62002, gid: 62002, env: { PATH: '/usr/bin:/bin' }, landlock: { read: SYSTEM_READ, write: [] } },
      ],
    };
    const file = join(vm.scratch, 'vm.json');
    writeFileSync(file, JSON.stringify(raw));
    const child = spawn(join(repoRoot, 'bin', 'vmsandbox'), ['run', file], { stdio: ['ignore', 'ignore', 'inherit'] });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    const insp = await startInspector({ listen: '127.0.0.1:0', roots: [TEST_RUNTIME_ROOT], scanMs: 200, log: pino({ level: 'silent' }) });
    const browser = await launchChromium();
    try {
      for (let i = 0; i < 100 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 100));
      expect(statSync(sock).mode & 0o777).toBe(0o600);
      const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
      await page.goto(insp.url);
      const button = page.locator(`#sandboxes button:has-text("${vm.name}")`);
      await button.click({ timeout: 10_000 });
      await page.waitForFunction(() => document.querySelector('#current-state')?.textContent === 'running', null, { timeout: 15_000 });
      await page.locator('#last').click().catch(() => undefined);
      expect(await page.locator('#services tbody tr[data-service]').count()).toBe(2);
      // Readiness (no `ready` configured: immediate) on the live timeline, worded as the log says it.
      await page.waitForFunction(() => document.querySelector('#timeline tr.note.kind-ready') !== null, null, { timeout: 10_000 });
      expect(await page.locator('#timeline tr.note.kind-ready td:last-child').textContent()).toMatch(/^eventready: immediate \(all services launched\), \d+ ms after start$/);
      // What the helper wrote to its stdout (a pipe to the init, forwarded by the manager).
      await page.waitForFunction(
        () => [...document.querySelectorAll('#output .svc-output[data-service="helper"] li.stdout')].some((li) => li.textContent === 'helper: hello from uid 62001'),
        null,
        { timeout: 10_000 },
      );
      for (let i = 0; i < 50 && !existsSync(`${vm.runtimeDir}/helper/probe`); i++) await new Promise((r) => setTimeout(r, 100));
      expect(readFileSync(`${vm.runtimeDir}/helper/probe`, 'utf8').trim()).toBe('denied');
      await page.screenshot({ path: join(outDir, 'live-real.png') });
      child.kill('SIGTERM');
      await page.waitForFunction(() => document.querySelector('#current-state')?.textContent === 'stopped', null, { timeout: 15_000 });
      expect(await exited).toBe(0);
    } finally {
      child.kill('SIGKILL');
      await browser.close();
      await insp.close();
    }
  });
});
