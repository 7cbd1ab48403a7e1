// Real-kernel tests of the vmm's stop methods beyond signal/qmp: cloud-hypervisor's HTTP API
// (a fake API server that IS the vmm, running inside the sandbox) and a command run on the host.

import { chownSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ServiceConfig } from '../../config/types.js';
import {
  ensureNative,
  forceCleanup,
  leftovers,
  newTestVm,
  removeTestParents,
  service,
  skipReason,
  start,
  stop,
  SYSTEM_READ,
  vmConfig,
  type Run,
  type TestVm,
} from './helpers.js';

const skip = skipReason() ?? (existsSync('/usr/bin/node') ? null : 'no /usr/bin/node for the fake cloud-hypervisor');
if (skip) console.warn(`test/linux/stop-methods skipped: ${skip}`);

const VMM_UID = 62002;

/**
 * A fake cloud-hypervisor: serves HTTP on argv[2] (a unix socket), records every request into
 * argv[3], answers PUT /api/v1/vm.power-button with argv[4] (a status) and exits 0 after a 2xx.
 */
const FAKE_CH = `
const http = require('node:http');
const fs = require('node:fs');
const [sock, record, status] = process.argv.slice(2);
const server = http.createServer((req, res) => {
  let body = '';
  req.on('data', (d) => (body += d));
  req.on('end', () => {
    fs.appendFileSync(record, JSON.stringify({ method: req.method, url: req.url, version: req.httpVersion, headers: req.headers, body }) + '\\n');
    const code = req.url === '/api/v1/vm.power-button' && req.method === 'PUT' ? Number(status) : 404;
    res.writeHead(code, { 'Content-Length': code === 204 ? 0 : 11 });
    res.end(code === 204 ? undefined : 'not today\\n');
    if (code >= 200 && code < 300) res.on('finish', () => process.exit(0));
  });
});
server.listen(sock, () => fs.writeFileSync(record + '.ready', ''));
`;

function fakeCloudHypervisor(vm: TestVm, status: number): { vmm: ServiceConfig; sock: string; record: string } {
  // In the VM's storage (owned by the vmm's uid, storage "rw"): the scratch dir is root's 0700.
  chownSync(vm.storage, VMM_UID, VMM_UID);
  const script = join(vm.storage, 'fake-ch.cjs');
  writeFileSync(script, FAKE_CH, { mode: 0o644 });
  const sock = `${vm.runtimeDir}/vmm/ch.sock`;
  const record = join(vm.storage, 'requests.jsonl');
  const vmm = service({
    name: 'vmm',
    vmm: true,
    uid: VMM_UID,
    gid: VMM_UID,
    // stderr into the storage, so a failing test can show why the server did not come up
    argv: ['/bin/sh', '-c', `exec /usr/bin/node ${script} ${sock} ${record} ${status} 2>${record}.stderr`],
    storage: 'rw',
    landlock: { read: SYSTEM_READ, write: [] },
    stop: { cloudHypervisorApi: sock },
  });
  return { vmm, sock, record };
}

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function vmmExit(run: Run) {
  return run.events.find((e) => e.type === 'SERVICE_EXITED' && e.service === 'vmm');
}

describe.skipIf(skip)('stop methods (real kernel)', () => {
  let vm: TestVm;
  let current: Run | null = null;
  const startVm = (config: Parameters<typeof start>[0]): Run => (current = start(config, vm));
  beforeAll(() => ensureNative());
  afterEach(async () => {
    // A failed assertion can leave the machine running: force it down before the leak check.
    if (current && current.actor.getSnapshot().status !== 'done') {
      current.actor.send({ type: 'STOP_REQUESTED', signal: 'SIGINT', force: true });
      await current.done;
    }
    current = null;
    try {
      expect(leftovers(vm)).toEqual([]);
    } finally {
      forceCleanup(vm);
    }
  });
  afterAll(() => removeTestParents());

  describe('cloudHypervisorApi (fake API server as the vmm, inside the sandbox)', () => {
    it('PUT /api/v1/vm.power-button, Content-Length: 0; the vmm exits: stopped, exit 0', async () => {
      vm = newTestVm();
      const { vmm, record } = fakeCloudHypervisor(vm, 204);
      const run = startVm(vmConfig(vm, [vmm]));
      await run.waitFor('running');
      await until(() => existsSync(`${record}.ready`) || vmmExit(run) !== undefined, 10_000, 'the fake API server to listen');
      expect(vmmExit(run), existsSync(`${record}.stderr`) ? readFileSync(`${record}.stderr`, 'utf8') : '').toBeUndefined();
      const out = await stop(run);
      expect(out, JSON.stringify(out)).toMatchObject({ outcome: 'stopped', exitCode: 0, errors: [] });
      expect(vmmExit(run)).toMatchObject({ code: 0, signal: null });
      const requests = readFileSync(record, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      expect(requests).toHaveLength(1);
      expect(requests[0]).toMatchObject({ method: 'PUT', url: '/api/v1/vm.power-button', version: '1.1', body: '' });
      expect(requests[0].headers['content-length']).toBe('0');
      expect(requests[0].headers['transfer-encoding']).toBeUndefined();
    });

    it('a non-2xx answer: forced stop, the error names the socket and the status', async () => {
      vm = newTestVm();
      const { vmm, sock, record } = fakeCloudHypervisor(vm, 500);
      const run = startVm(vmConfig(vm, [vmm]));
      await run.waitFor('running');
      await until(() => existsSync(`${record}.ready`) || vmmExit(run) !== undefined, 10_000, 'the fake API server to listen');
      expect(vmmExit(run), existsSync(`${record}.stderr`) ? readFileSync(`${record}.stderr`, 'utf8') : '').toBeUndefined();
      const out = await stop(run);
      expect(out.outcome).toBe('forced');
      expect(out.exitCode).toBe(2);
      expect(out.errors.join('\n')).toContain(`cloud-hypervisor API ${sock}`);
      expect(out.errors.join('\n')).toContain('HTTP 500');
    });

    it('the socket is missing: forced stop at once (not after stopMs), the reason names the socket', async () => {
      vm = newTestVm();
      const sock = `${vm.runtimeDir}/vmm/ch.sock`;
      const vmm = service({ name: 'vmm', vmm: true, argv: ['/bin/sleep', '1000'], stop: { cloudHypervisorApi: sock } });
      const run = startVm(vmConfig(vm, [vmm], { timeouts: { setupMs: 10_000, stopMs: 20_000, killMs: 3000 } }));
      await run.waitFor('running');
      const t0 = Date.now();
      const out = await stop(run);
      expect(Date.now() - t0).toBeLessThan(10_000);
      expect(out.outcome).toBe('forced');
      expect(out.exitCode).toBe(2);
      expect(out.errors.join('\n')).toMatch(new RegExp(`requestStop.*ENOENT.*${sock.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`));
    });
  });

  describe('command (on the host, as root, unsandboxed)', () => {
    /** A vmm that exits 0 once the file `stop-requested` appears in its runtime directory. */
    const waiter = (vm: TestVm) =>
      service({ name: 'vmm', vmm: true, argv: ['/bin/sh', '-c', `while [ ! -e ${vm.runtimeDir}/vmm/stop-requested ]; do sleep 0.05; done; exit 0`] });

    it('touches the file the vmm waits for: stopped, exit 0; the command gets the VM in its environment', async () => {
      vm = newTestVm();
      const envFile = join(vm.scratch, 'env');
      const vmm = { ...waiter(vm), stop: { command: ['/bin/sh', '-c', `env > ${envFile}; id -u >> ${envFile}; touch "$VMSANDBOX_RUNTIME_DIR/vmm/stop-requested"`] } };
      const run = startVm(vmConfig(vm, [vmm]));
      await run.waitFor('running');
      const out = await stop(run);
      expect(out, JSON.stringify(out)).toMatchObject({ outcome: 'stopped', exitCode: 0, errors: [] });
      expect(vmmExit(run)).toMatchObject({ code: 0 });
      const env = readFileSync(envFile, 'utf8');
      expect(env).toContain(`VMSANDBOX_VM=${vm.name}\n`);
      expect(env).toContain(`VMSANDBOX_RUNTIME_DIR=${vm.runtimeDir}\n`);
      expect(env).toMatch(/^VMSANDBOX_VMM_PID=\d+$/m);
      expect(env.trim().split('\n').at(-1)).toBe('0'); // root, on the host
    });

    it('a non-zero exit: forced stop, the error carries the exit status and the output', async () => {
      vm = newTestVm();
      const vmm = { ...waiter(vm), stop: { command: ['/bin/sh', '-c', 'echo no such VM >&2; exit 3'] } };
      const run = startVm(vmConfig(vm, [vmm]));
      await run.waitFor('running');
      const out = await stop(run);
      expect(out.outcome).toBe('forced');
      expect(out.exitCode).toBe(2);
      expect(out.errors.join('\n')).toContain('EXIT_3');
      expect(out.errors.join('\n')).toContain('exited with status 3; output: no such VM');
    });

    it('a command that hangs is killed (its whole process group) at the stop deadline', async () => {
      vm = newTestVm();
      const pidFile = join(vm.scratch, 'cmd.pid');
      const vmm = { ...waiter(vm), stop: { command: ['/bin/sh', '-c', `sleep 1000 & echo $! > ${pidFile}; wait`] } };
      const run = startVm(vmConfig(vm, [vmm], { timeouts: { setupMs: 10_000, stopMs: 500, killMs: 3000 } }));
      await run.waitFor('running');
      const t0 = Date.now();
      const out = await stop(run);
      expect(Date.now() - t0).toBeLessThan(5000);
      expect(out.outcome).toBe('forced');
      expect(out.errors).toEqual([]); // the deadline, not the command, ended the graceful stop
      const pid = Number(readFileSync(pidFile, 'utf8'));
      await until(() => {
        try {
          return /^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
        } catch {
          return true;
        }
      }, 2000, `the command's background sleep (pid ${pid}) to die`);
    });

    it('a command that does not exist: forced stop with ENOENT', async () => {
      vm = newTestVm();
      const vmm = { ...waiter(vm), stop: { command: ['/nonexistent/vm-stop'] } };
      const run = startVm(vmConfig(vm, [vmm]));
      await run.waitFor('running');
      const out = await stop(run);
      expect(out.outcome).toBe('forced');
      expect(out.errors.join('\n')).toMatch(/requestStop.*ENOENT.*\/nonexistent\/vm-stop/);
    });
  });
});
