// The vmm's stop methods that talk to something outside the sandbox's init: cloud-hypervisor's HTTP
// API (PUT /api/v1/vm.power-button over its unix socket) and an operator's command run on the host.
// (signal goes through a pidfd or the init; qmp is in qmp.ts.) See docs/config.md, "stop".

import { existsSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { EffectError } from '../port.js';
import { killCgroup } from './cgroup.js';
import { errnoName, nativeBuildDir } from './native.js';
import { vetVmmSocket, type VettedSocket } from './vmmSocket.js';

/**
 * node:http and node:child_process, loaded when a stop method first needs them: most VMs never do,
 * and loading both costs every manager's start about 5 ms.
 */
function builtin<T>(name: string): T {
  return createRequire(import.meta.url)(name) as T;
}

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
export async function cloudHypervisorPowerButton(socketPath: string, signal: AbortSignal, owner: number, retryMs = API_CONNECT_RETRY_MS): Promise<void> {
  const start = Date.now();
  for (;;) {
    try {
      return await powerButtonOnce(socketPath, signal, owner);
    } catch (e) {
      const errno = e instanceof EffectError ? e.errno : '';
      const transient = errno === 'ENOENT' || errno === 'ECONNREFUSED';
      if (!transient || signal.aborted || Date.now() - start >= retryMs) throw e;
      await sleep(50, signal);
      if (signal.aborted) throw new EffectError('requestStop', 'ECANCELED', `cloud-hypervisor API ${socketPath}: aborted`);
    }
  }
}

function powerButtonOnce(socketPath: string, signal: AbortSignal, owner: number): Promise<void> {
  const path = '/api/v1/vm.power-button';
  const fail = (errno: string, why: string) => new EffectError('requestStop', errno, `cloud-hypervisor API ${socketPath}: PUT ${path}: ${why}`);
  if (signal.aborted) return Promise.reject(fail('ECANCELED', 'aborted'));
  // The vmm's socket, as itself: never a symlink the vmm planted (vmmSocket.ts).
  let vetted: VettedSocket;
  try {
    vetted = vetVmmSocket('requestStop', socketPath, owner);
  } catch (e) {
    return Promise.reject(e);
  }
  return new Promise<void>((resolve, reject) => {
    let settled = false;
    const settle = (err: EffectError | null) => {
      if (settled) return;
      settled = true;
      vetted.close();
      signal.removeEventListener('abort', onAbort);
      req.destroy();
      if (err) reject(err);
      else resolve();
    };
    const onAbort = () => settle(fail('ECANCELED', 'aborted'));
    // agent: false → one connection, "Connection: close"; the Host header is required by HTTP/1.1.
    const { request } = builtin<typeof import('node:http')>('node:http');
    const req = request({ socketPath: vetted.path, path, method: 'PUT', agent: false, headers: { Host: 'localhost', 'Content-Length': '0', Accept: '*/*' } });
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
  /**
   * The cgroup directory the command runs in: a leaf of the VM's journalled cgroup (plan/cgroup.ts
   * STOP_COMMAND_LEAF), made here if missing; its parent must exist. Whatever the command starts
   * stays in it, setsid or not, so the VM's cgroup.kill takes it: at teardown, and in `vmsandbox
   * finish` after the manager was SIGKILLed.
   */
  cgroup: string;
}

/** native/build/vmsandbox-stop-exec: pdeathsig, the cgroup leaf, then the command (native/stop-exec.c). */
export function stopExecPath(): string {
  return join(nativeBuildDir(), 'vmsandbox-stop-exec');
}

const OUTPUT_TAIL = 2048;

/**
 * Run the stop command on the HOST, as the manager's user (root), outside the sandbox: argv as
 * given (no shell), cwd /, stdin /dev/null, environment PATH + VMSANDBOX_VM, VMSANDBOX_RUNTIME_DIR,
 * VMSANDBOX_VMM_PID. It is started through vmsandbox-stop-exec, so before its own code runs it has
 * PR_SET_PDEATHSIG(SIGKILL) towards the manager and sits in `ctx.cgroup`; it runs in its own
 * process group; when `signal` aborts (the stop deadline, or the vmm exited first) the group and
 * the cgroup leaf are SIGKILLed and the promise rejects with ECANCELED. A step of the helper that
 * fails (the cgroup, the exec: ENOENT for a missing argv[0]) rejects with its errno.
 * Exit 0 resolves; another status rejects with an EffectError whose errno is `EXIT_<status>` (or
 * the signal's name) and whose message ends with the output's tail.
 */
export function runStopCommand(argv: string[], ctx: StopCommandContext, signal: AbortSignal, log: (msg: string) => void = () => undefined): Promise<void> {
  const [file, ...args] = argv;
  const what = `stop command ${JSON.stringify(argv)}`;
  if (!file) return Promise.reject(new EffectError('requestStop', 'EINVAL', `${what}: empty argv`));
  if (signal.aborted) return Promise.reject(new EffectError('requestStop', 'ECANCELED', `${what}: aborted`));
  const helper = stopExecPath();
  if (!existsSync(helper)) return Promise.reject(new EffectError('requestStop', 'ENOENT', `${what}: ${helper} is missing: build it with \`make -C native\``));
  try {
    // Not recursive: the VM's cgroup must exist (a missing one means teardown already ran, and the
    // command must not run in a cgroup nobody will kill).
    mkdirSync(ctx.cgroup);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'EIO';
    if (code !== 'EEXIST') return Promise.reject(new EffectError('requestStop', code, `${what}: cannot make its cgroup ${ctx.cgroup}: ${(e as Error).message}`));
  }
  return new Promise<void>((resolve, reject) => {
    const env: Record<string, string> = {
      PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      VMSANDBOX_VM: ctx.vm,
      VMSANDBOX_RUNTIME_DIR: ctx.runtimeDir,
    };
    if (ctx.vmmPid !== null) env.VMSANDBOX_VMM_PID = String(ctx.vmmPid);
    // fd 3: the helper's error channel (close-on-exec in it: EOF without data means the exec worked).
    const { spawn } = builtin<typeof import('node:child_process')>('node:child_process');
    const child = spawn(helper, [ctx.cgroup, String(process.pid), file, ...args], { cwd: '/', env, stdio: ['ignore', 'pipe', 'pipe', 'pipe'], detached: true });
    let helperError = '';
    // Pipes, as asked for above (the typings cannot tell from a four-entry stdio).
    const childOut = child.stdio[1] as Readable;
    const childErr = child.stdio[2] as Readable;
    const errPipe = child.stdio[3] as Readable;
    errPipe.on('data', (d: Buffer) => {
      if (helperError.length < 512) helperError += d.toString();
    });
    const errDone = new Promise<void>((res) => {
      errPipe.once('close', () => res());
      errPipe.once('error', () => res());
    });
    let output = '';
    const keep = (d: Buffer) => {
      output = (output + d.toString()).slice(-OUTPUT_TAIL);
    };
    childOut.on('data', keep);
    childErr.on('data', keep);
    let settled = false;
    const settle = (err: EffectError | null) => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', onAbort);
      if (err) reject(err);
      else resolve();
    };
    const killGroup = () => {
      // The leaf also holds what left the process group (setsid) and what earlier runs left behind.
      killCgroup(ctx.cgroup).catch((e: Error) => log(`${what}: cgroup.kill of ${ctx.cgroup}: ${e.message}`));
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
      childOut.destroy();
      childErr.destroy();
      const out = output.trim().slice(-500);
      const m = /^(\d+) (.+)\n/.exec(helperError);
      if (code === 127 && m) {
        const errno = errnoName(Number(m[1]));
        const step = m[2] === 'execve' ? `execve ${file}` : `vmsandbox-stop-exec: ${m[2]}`;
        return settle(new EffectError('requestStop', errno, `${what}: ${step}: ${errno}; not run`));
      }
      if (code === 0) {
        if (out) log(`${what}: ${out}`);
        return settle(null);
      }
      const status = sig ? `was killed by ${sig}` : `exited with status ${code}`;
      settle(new EffectError('requestStop', sig ?? `EXIT_${code}`, `${what} ${status}${out ? `; output: ${out}` : ''}`));
    };
    child.on('exit', (code, sig) => {
      // The error channel ends at the exec or the helper's exit, whatever else holds the output.
      void errDone.then(() => after(code, sig));
    });
    const after = (code: number | null, sig: NodeJS.Signals | null) => {
      const t = setTimeout(() => finish(code, sig), 100);
      child.once('close', () => {
        clearTimeout(t);
        finish(code, sig);
      });
    };
  });
}
