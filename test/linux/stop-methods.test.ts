// Real-kernel tests of the vmm's stop methods beyond signal/qmp: cloud-hypervisor's HTTP API
// (a fake API server that IS the vmm, running inside the sandbox) and a command run on the host;
// and the stop request repeated to a guest that has not armed its power button yet (QMP, the
// QEMU stand-in examples/fake-vmm.mjs under `vmsandbox run`).

import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ServiceConfig } from '../../config/types.js';
import { failuresPath } from '../../effects/linux/owner.js';
import { start, stop, type Run } from './helpers/inprocess.js';
import { forceCleanup, leftovers, removeTestParents } from './helpers/leftovers.js';
import { spawnRun, type RunningManager } from './helpers/manager.js';
import { ensureNative } from './helpers/native.js';
import { CGROUP_PARENT, repoRoot } from './helpers/paths.js';
import { skipReason } from './helpers/skip.js';
import { newTestVm, service, SYSTEM_READ, vmConfig, type TestVm } from './helpers/vm.js';

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

/** The process exists and is not a zombie. */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
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

    it('a command that hangs is killed (its whole process group, and what left it with setsid) at the stop deadline', async () => {
      vm = newTestVm();
      const pidFile = join(vm.scratch, 'cmd.pid');
      const setsidPidFile = join(vm.scratch, 'setsid.pid');
      const vmm = { ...waiter(vm), stop: { command: ['/bin/sh', '-c', `setsid sleep 1001 & echo $! > ${setsidPidFile}; sleep 1000 & echo $! > ${pidFile}; wait`] } };
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
      // In another session, so not in the process group: the cgroup takes it.
      const escaped = Number(readFileSync(setsidPidFile, 'utf8'));
      await until(() => !alive(escaped), 2000, `the command's setsid sleep (pid ${escaped}) to die`);
    });

    /** Host pids whose argv is exactly `sleep <n>` (n: a number no other process uses). */
    const sleepers = (n: number): number[] =>
      readdirSync('/proc')
        .filter((d) => /^\d+$/.test(d))
        .filter((d) => {
          try {
            return readFileSync(`/proc/${d}/cmdline`, 'utf8') === `sleep\0${n}\0` && !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${d}/stat`, 'utf8'));
          } catch {
            return false;
          }
        })
        .map(Number);

    it('a manager SIGKILLed while its stop command runs: the command dies with it, and finish kills what it started, setsid included (control: the same command started outside survives)', async () => {
      vm = newTestVm();
      // Markers no other process has: one sleep stays in the command's process group, one leaves
      // it (and its session) with setsid, as a command's helper daemon might.
      const base = 700_000 + Math.floor(Math.random() * 200_000) * 4;
      const [inGroup, escaped, ctlInGroup, ctlEscaped] = [base, base + 1, base + 2, base + 3];
      const script = (pidFile: string, a: number, b: number) => `echo $$ > ${pidFile}; setsid sleep ${b} & sleep ${a} & wait`;
      const cmdPidFile = join(vm.scratch, 'cmd.pid');
      const ctlPidFile = join(vm.scratch, 'control.pid');
      const raw = {
        name: vm.name,
        storage: vm.storage,
        runtimeDir: vm.runtimeDir,
        // stopMs far away: the stop command is still running when the manager is SIGKILLed.
        timeouts: { setupMs: 10_000, stopMs: 60_000, killMs: 2000 },
        cgroup: { parent: CGROUP_PARENT },
        landlock: { minAbi: 1 },
        services: [
          { name: 'vmm', vmm: true, argv: ['/bin/sleep', '1000'], uid: VMM_UID, gid: VMM_UID, landlock: { read: SYSTEM_READ, write: [] }, stop: { command: ['/bin/sh', '-c', script(cmdPidFile, inGroup, escaped)] } },
        ],
      };
      const file = join(vm.scratch, 'vm.json');
      writeFileSync(file, JSON.stringify(raw));
      const m = spawnRun(file);
      let control: ReturnType<typeof spawn> | null = null;
      try {
        await m.waitForState('running');
        m.kill('SIGTERM'); // the graceful stop runs the stop command
        // The control: the same command, started on the host as the manager did before, in its own
        // process group, and put through the same sequence.
        control = spawn('/bin/sh', ['-c', script(ctlPidFile, ctlInGroup, ctlEscaped)], { stdio: 'ignore', detached: true });
        await until(() => existsSync(cmdPidFile) && existsSync(ctlPidFile) && [inGroup, escaped, ctlInGroup, ctlEscaped].every((n) => sleepers(n).length === 1), 10_000, `the stop command and the control to start; log:\n${m.log()}`);
        const cmdPid = Number(readFileSync(cmdPidFile, 'utf8'));
        const [sleepIn, sleepOut] = [sleepers(inGroup)[0]!, sleepers(escaped)[0]!];
        // The one that left the command's session is in the VM's stop-command leaf all the same.
        expect(readFileSync(`/proc/${sleepOut}/stat`, 'utf8').split(' ')[5]).not.toBe(String(cmdPid)); // another session
        for (const pid of [cmdPid, sleepIn, sleepOut]) expect(readFileSync(`/proc/${pid}/cgroup`, 'utf8')).toContain(`/${CGROUP_PARENT}/${vm.name}/stop-command\n`);

        m.kill('SIGKILL');
        await m.exited;
        // PR_SET_PDEATHSIG: the command itself dies with the manager.
        await until(() => !alive(cmdPid), 2000, `the stop command (pid ${cmdPid}) to die with the manager`);
        // What it started outlives both (only the cgroup can find them now) until finish.
        expect(alive(sleepIn) && alive(sleepOut)).toBe(true);

        const fin = spawnSync(join(repoRoot, 'bin', 'vmsandbox'), ['finish', file, '256', '9'], { encoding: 'utf8' });
        expect(fin.status, `${fin.stdout}${fin.stderr}`).toBe(0);
        expect(sleepers(inGroup)).toEqual([]);
        expect(sleepers(escaped)).toEqual([]);
        expect(alive(sleepIn) || alive(sleepOut)).toBe(false);
        // Control: the same processes started outside the stop method are all still there, so the
        // checks above would have seen a survivor.
        expect(alive(Number(readFileSync(ctlPidFile, 'utf8')))).toBe(true);
        expect(sleepers(ctlInGroup)).toHaveLength(1);
        expect(sleepers(ctlEscaped)).toHaveLength(1);
      } finally {
        m.kill('SIGKILL');
        if (control?.pid) {
          try {
            process.kill(-control.pid, 'SIGKILL');
          } catch {
            /* gone */
          }
        }
        for (const pid of [...sleepers(ctlInGroup), ...sleepers(ctlEscaped)]) process.kill(pid, 'SIGKILL');
        rmSync(failuresPath(vm.name), { force: true });
      }
      // The init and the command died orphaned: the host's PID 1 reaps their zombies in its own time
      // (until then they still show the VM's cgroup), before the leak check in afterEach.
      await until(() => leftovers(vm).length === 0, 3000, `the VM's zombies to be reaped: ${leftovers(vm).join('; ')}`);
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

  describe('qmp: a guest that arms its power button late (fake-vmm --arm-ms, under `vmsandbox run`)', () => {
    /** The QEMU stand-in as the vmm, stopped and probed over QMP, its guest arming after armMs. */
    function startStandIn(vmmArgs: string[], stopMs: number): RunningManager {
      vm = newTestVm();
      chmodSync(vm.storage, 0o755);
      copyFileSync(join(repoRoot, 'examples', 'fake-vmm.mjs'), join(vm.storage, 'fake-vmm.mjs'));
      const qmp = `${vm.runtimeDir}/vmm/qmp.sock`;
      const raw = {
        name: vm.name,
        storage: vm.storage,
        runtimeDir: vm.runtimeDir,
        timeouts: { setupMs: 10_000, stopMs, killMs: 2000 },
        cgroup: { parent: 'vmsandbox-test' },
        landlock: { minAbi: 1 },
        services: [
          { name: 'helper', argv: ['/bin/sleep', '1000'], uid: 62001, gid: 62001, landlock: { read: SYSTEM_READ, write: [] } },
          {
            name: 'vmm',
            vmm: true,
            argv: [process.execPath, `${vm.storage}/fake-vmm.mjs`, '--qmp', qmp, '--boot-ms', '100', ...vmmArgs],
            env: { PATH: '/usr/bin:/bin', OPENSSL_CONF: '/dev/null' },
            uid: VMM_UID,
            gid: VMM_UID,
            storage: 'ro',
            landlock: { read: [...SYSTEM_READ, vm.storage], write: [] },
            stop: { qmp },
            ready: { qmp },
          },
        ],
      };
      const file = join(vm.scratch, 'vm.json');
      writeFileSync(file, JSON.stringify(raw));
      return spawnRun(file);
    }

    async function readyThenTerm(m: RunningManager): Promise<number> {
      await until(() => m.lines.some((l) => l.event === 'ready'), 15_000, `the ready record; log:\n${m.log()}`);
      m.kill('SIGTERM');
      return Date.now();
    }

    it('stopped right after ready, before the guest arms: the request is repeated until it takes; exit 0, the log counts them', async () => {
      const m = startStandIn(['--arm-ms', '3000', '--powerdown-ms', '150'], 20_000);
      try {
        const t0 = await readyThenTerm(m);
        const code = await m.exited;
        const ms = Date.now() - t0;
        expect(code, m.log()).toBe(0);
        const last = m.lines.at(-1)!;
        expect(last, m.log()).toMatchObject({ outcome: 'stopped', exitCode: 0, errors: [] });
        const n = last.stopRequests as number;
        // The stand-in's own output: records tagged with the service (docs/linux-backend.md, "Service output").
        const raw = m.lines.map((l) => (l.service === 'vmm' ? String(l.msg) : ''));
        const dropped = raw.filter((l) => /system_powerdown #\d+ received .*: dropped/.test(l)).length;
        console.log(`stop-methods: --arm-ms 3000: SIGTERM → exit 0 in ${ms} ms, ${n} stop requests (${dropped} dropped by the guest)`);
        expect(n, m.log()).toBeGreaterThanOrEqual(3);
        expect(dropped, m.log()).toBe(n - 1);
        expect(raw.some((l) => l.includes(`system_powerdown received: guest shutting down`) && l.includes(`(request #${n},`)), m.log()).toBe(true);
        // Every request is in the log, numbered; the deadline (20 s) was never near.
        for (let i = 1; i <= n; i++) expect(m.lines.some((l) => l.reason === `stop request ${i} sent (qmp)`), `request ${i}\n${m.log()}`).toBe(true);
        expect(ms).toBeLessThan(3000 + 1000 + 150 + 2000);
      } finally {
        m.kill('SIGKILL');
        await m.exited;
      }
    });

    it('a repeat that finds the QMP socket gone (the vmm exiting) is aborted by the exit: no forced stop, no delay', async () => {
      // The guest takes the first request and powers off 2.5 s later; 2 s before that the stand-in
      // removes its QMP socket, as an exiting QEMU does. The repeat at about 1 s gets ENOENT and is
      // retried until the vmm's exit aborts it; the teardown queued behind it then runs at once.
      const m = startStandIn(['--powerdown-ms', '2500', '--qmp-gone-ms', '2000'], 20_000);
      try {
        const t0 = await readyThenTerm(m);
        const code = await m.exited;
        const ms = Date.now() - t0;
        expect(code, m.log()).toBe(0);
        const last = m.lines.at(-1)!;
        expect(last, m.log()).toMatchObject({ outcome: 'stopped', exitCode: 0, errors: [], stopRequests: 1 });
        expect(m.lines.some((l) => l.service === 'vmm' && String(l.msg).includes('QMP socket closed and removed')), m.log()).toBe(true);
        // The repeat was under way (requesting) when the vmm exited, and did not hold up the rest.
        const at = (l: Record<string, unknown>) => Date.parse(String(l.time));
        const exitIndex = m.lines.findIndex((l) => typeof l.reason === 'string' && /^vmm \(pid \d+\) exit code 0$/.test(l.reason));
        expect(exitIndex, m.log()).toBeGreaterThan(0);
        const before = m.lines.slice(0, exitIndex).filter((l) => typeof l.state === 'string').at(-1);
        expect(before?.state, m.log()).toBe('gracefulStop.vmm.requesting');
        const teardownMs = at(last) - at(m.lines[exitIndex]!);
        console.log(`stop-methods: QMP socket gone 2 s before the exit: SIGTERM → exit 0 in ${ms} ms; vmm exit → the manager's last record ${teardownMs} ms`);
        expect(teardownMs, m.log()).toBeLessThan(500);
      } finally {
        m.kill('SIGKILL');
        await m.exited;
      }
    });
  });
});
