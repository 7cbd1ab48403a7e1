// The vmm's stop methods that talk to something outside the sandbox's init: cloud-hypervisor's HTTP
// API (PUT /api/v1/vm.power-button over its unix socket) and an operator's command run on the host.
// (signal goes through a pidfd or the init; qmp is in qmp.ts.) See docs/config.md, "stop".

import { spawn } from 'node:child_process';
import { request } from 'node:http';
import { EffectError } from '../port.js';

/** How long a missing or not yet listening API socket is retried before the stop request fails. */
export const API_CONNECT_RETRY_MS = 1000;

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
  });
}

/**
 * cloud-hypervisor: `PUT /api/v1/vm.power-button` (HTTP/1.1, Content-Length: 0) on the API socket.
 * Success is any 2xx (cloud-hypervisor answers 204). A socket that is missing (ENOENT) or not yet
 * listening (ECONNREFUSED) is retried for API_CONNECT_RETRY_MS, then the request fails naming the
 * socket; so does a non-2xx status (with the start of the response body).
 */
export async function cloudHypervisorPowerButton(socketPath: string, signal: AbortSignal, retryMs = API_CONNECT_RETRY_MS): Promise<void> {
  const start = Date.now();
  for (;;) {
    try {
      return await powerButtonOnce(socketPath, signal);
    } catch (e) {
      const errno = e instanceof EffectError ? e.errno : '';
      const transient = errno === 'ENOENT' || errno === 'ECONNREFUSED';
      if (!transient || signal.aborted || Date.now() - start >= retryMs) throw e;
      await sleep(50, signal);
      if (signal.aborted) throw new EffectError('requestStop', 'ECANCELED', `cloud-hypervisor API ${socketPath}: aborted`);
    }
  }
}

function powerButtonOnce(socketPath: string, signal: AbortSignal): Promise<void> {
  const path = '/api/v1/vm.power-button';
  const fail = (errno: string, why: string) => new EffectError('requestStop', errno, `cloud-hypervisor API ${socketPath}: PUT ${path}: ${why}`);
  if (signal.aborted) return Promise.reject(fail('ECANCELED', 'aborted'));
  return new Promise<void>((resolve, reject) => {
    let settled = false;
    const settle = (err: EffectError | null) => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', onAbort);
      req.destroy();
      if (err) reject(err);
      else resolve();
    };
    const onAbort = () => settle(fail('ECANCELED', 'aborted'));
    // agent: false → one connection, "Connection: close"; the Host header is required by HTTP/1.1.
    const req = request({ socketPath, path, method: 'PUT', agent: false, headers: { Host: 'localhost', 'Content-Length': '0', Accept: '*/*' } });
    req.on('error', (e: NodeJS.ErrnoException) => settle(fail(e.code ?? 'EIO', e.message)));
    req.on('response', (res) => {
      const status = res.statusCode ?? 0;
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        if (body.length < 512) body += d;
      });
      const finish = () => {
        if (status >= 200 && status < 300) settle(null);
        else settle(fail('EPROTO', `HTTP ${status}${res.statusMessage ? ` ${res.statusMessage}` : ''}${body.trim() ? `: ${body.trim().slice(0, 200)}` : ''}`));
      };
      res.on('end', finish);
      // The VMM may exit right after answering: a closed connection after the status line is enough.
      res.on('close', finish);
      res.on('error', finish);
    });
    signal.addEventListener('abort', onAbort, { once: true });
    req.end();
  });
}

/** The environment of a stop command: a fixed PATH and what identifies the VM (nothing inherited). */
export interface StopCommandContext {
  vm: string;
  runtimeDir: string;
  /** The vmm's pid as the host sees it, if known. */
  vmmPid: number | null;
}

const OUTPUT_TAIL = 2048;

/**
 * Run the stop command on the HOST, as the manager's user (root), outside the sandbox: argv as
 * given (no shell), cwd /, stdin /dev/null, environment PATH + VMSANDBOX_VM, VMSANDBOX_RUNTIME_DIR,
 * VMSANDBOX_VMM_PID. It runs in its own process group; when `signal` aborts (the stop deadline, or
 * the vmm exited first) the whole group is SIGKILLed and the promise rejects with ECANCELED.
 * Exit 0 resolves; another status rejects with an EffectError whose errno is `EXIT_<status>` (or
 * the signal's name) and whose message ends with the output's tail.
 */
export function runStopCommand(argv: string[], ctx: StopCommandContext, signal: AbortSignal, log: (msg: string) => void = () => undefined): Promise<void> {
  const [file, ...args] = argv;
  const what = `stop command ${JSON.stringify(argv)}`;
  if (!file) return Promise.reject(new EffectError('requestStop', 'EINVAL', `${what}: empty argv`));
  if (signal.aborted) return Promise.reject(new EffectError('requestStop', 'ECANCELED', `${what}: aborted`));
  return new Promise<void>((resolve, reject) => {
    const env: Record<string, string> = {
      PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      VMSANDBOX_VM: ctx.vm,
      VMSANDBOX_RUNTIME_DIR: ctx.runtimeDir,
    };
    if (ctx.vmmPid !== null) env.VMSANDBOX_VMM_PID = String(ctx.vmmPid);
    const child = spawn(file, args, { cwd: '/', env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let output = '';
    const keep = (d: Buffer) => {
      output = (output + d.toString()).slice(-OUTPUT_TAIL);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    let settled = false;
    const settle = (err: EffectError | null) => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', onAbort);
      if (err) reject(err);
      else resolve();
    };
    const killGroup = () => {
      if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    };
    const onAbort = () => {
      killGroup();
      settle(new EffectError('requestStop', 'ECANCELED', `${what}: aborted (stop deadline or the vmm exited); killed`));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    child.on('error', (e: NodeJS.ErrnoException) => settle(new EffectError('requestStop', e.code ?? 'EIO', `${what}: ${e.message}`)));
    // The status comes with 'exit'; the output's tail with 'close', which a background process
    // holding the pipes could delay forever: wait for it briefly only.
    const finish = (code: number | null, sig: NodeJS.Signals | null) => {
      child.stdout.destroy();
      child.stderr.destroy();
      const out = output.trim().slice(-500);
      if (code === 0) {
        if (out) log(`${what}: ${out}`);
        return settle(null);
      }
      const status = sig ? `was killed by ${sig}` : `exited with status ${code}`;
      settle(new EffectError('requestStop', sig ?? `EXIT_${code}`, `${what} ${status}${out ? `; output: ${out}` : ''}`));
    };
    child.on('exit', (code, sig) => {
      const t = setTimeout(() => finish(code, sig), 100);
      child.once('close', () => {
        clearTimeout(t);
        finish(code, sig);
      });
    });
  });
}
