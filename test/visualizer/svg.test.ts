// `vmsandbox graph --format svg` and the inspect command line.

import { execFile, spawn } from 'node:child_process';
import { request } from 'node:http';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { isLoopback, parseListen, startInspector } from '../../visualizer/inspect.js';
import { eventLabel, machineGraph } from '../../visualizer/graph.js';
import { esc, toSvg } from '../../visualizer/graphSvg.js';
import { sandboxMachine } from '../../machines/sandbox.js';
import { repoRoot, tempRoot } from './helpers.js';

const run = promisify(execFile);
const bin = join(repoRoot, 'bin', 'vmsandbox');

describe('graph --format svg', () => {
  it('draws every state and every transition label', async () => {
    const g = machineGraph(sandboxMachine);
    const svg = await toSvg(g);
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
    for (const n of g.nodes) expect(svg).toContain(`data-state="${n.id}"`);
    for (const e of g.edges) expect(svg).toContain(`>${esc(eventLabel(e.event) + (e.guard ? ` [${e.guard}]` : ''))}<`);
    expect(svg).toContain('class="state compound" data-state="setup"');
    expect(svg).toContain('class="state final" data-state="failed"');
    expect(svg).not.toMatch(/NaN|undefined/);
    // A start marker for the machine and for each compound state, at its initial state.
    expect(g.initial).toBe('setup');
    expect([...svg.matchAll(/<g class="start" data-parent="([^"]*)" data-to="([^"]+)">/g)].map((m) => [m[1], m[2]])).toEqual([
      ['', 'setup'],
      ['setup', 'setup.setupNamespaces'],
      ['gracefulStop', 'gracefulStop.vmm'],
      ['gracefulStop.vmm', 'gracefulStop.vmm.requesting'],
      ['teardown', 'teardown.kill'],
    ]);
  });

  it('is what the command prints', async () => {
    const { stdout } = await run(bin, ['graph', '--format', 'svg']);
    expect(stdout).toBe(await toSvg(machineGraph(sandboxMachine)));
    await expect(run(bin, ['graph', '--format', 'png'])).rejects.toMatchObject({ code: 2 });
  });
});

describe('inspect', () => {
  it('listens on loopback unless told otherwise', async () => {
    expect(parseListen('127.0.0.1:7390')).toEqual({ host: '127.0.0.1', port: 7390 });
    expect(parseListen('[::1]:0')).toEqual({ host: '::1', port: 0 });
    expect(() => parseListen('7390')).toThrow(/HOST:PORT/);
    expect(['127.0.0.1', '127.1.2.3', '::1', 'localhost'].every(isLoopback)).toBe(true);
    expect(['0.0.0.0', '10.0.0.1', '::', 'example.org'].some(isLoopback)).toBe(false);
    await expect(startInspector({ listen: '0.0.0.0:0', roots: [tempRoot()], log: pino({ level: 'silent' }) })).rejects.toThrow(/not a loopback address/);
  });

  it('serves the page read-only and refuses foreign Host headers', async () => {
    const insp = await startInspector({ listen: '127.0.0.1:0', roots: [tempRoot()], log: pino({ level: 'silent' }) });
    try {
      const get = (path: string, host?: string, method = 'GET', token: string | null = insp.token) =>
        new Promise<{ status: number; body: string; headers: Record<string, unknown> }>((resolve, reject) => {
          const u = new URL(path, insp.base);
          if (token !== null) u.searchParams.set('token', token);
          const req = request({ host: u.hostname, port: u.port, path: u.pathname + u.search, method, headers: host ? { host } : {} }, (res) => {
            let body = '';
            res.on('data', (d: Buffer) => (body += d.toString()));
            res.on('end', () => resolve({ status: res.statusCode!, body, headers: res.headers }));
          });
          req.on('error', reject);
          req.end();
        });
      const page = await get('/');
      expect(page.status).toBe(200);
      expect(page.body).toContain(`<script type="module" src="/app.js?token=${insp.token}">`);
      expect(page.body).not.toMatch(/https?:\/\//);
      expect(String(page.headers['content-security-policy'])).toContain("default-src 'self'");
      for (const asset of ['/app.js', '/style.css']) {
        const a = await get(asset);
        expect(a.status).toBe(200);
        expect(a.body).not.toMatch(/https?:\/\/(?!www\.w3\.org)/);
      }
      const state = JSON.parse((await get('/api/state')).body);
      expect(state).toMatchObject({ mode: 'live', sandboxes: [] });
      expect((await get('/api/state', 'evil.example:80')).status).toBe(403);
      expect((await get('/api/state', undefined, 'POST')).status).toBe(405);
      expect((await get('/../package.json')).status).toBe(404);
    } finally {
      await insp.close();
    }
  });

  it('answers nothing without the token printed at start (attack), everything with it (control)', async () => {
    const root = tempRoot();
    const insp = await startInspector({ listen: '127.0.0.1:0', roots: [root], log: pino({ level: 'silent' }) });
    const other = await startInspector({ listen: '127.0.0.1:0', roots: [root], log: pino({ level: 'silent' }) });
    try {
      // ≥ 128 bits, fresh per run, in the printed URL.
      expect(Buffer.from(insp.token, 'base64url').length).toBeGreaterThanOrEqual(16);
      expect(insp.url).toBe(`${insp.base}?token=${insp.token}`);
      expect(other.token).not.toBe(insp.token);
      // Status and headers only: /api/events is a stream that never ends.
      const status = (path: string, token?: string) =>
        new Promise<{ status: number; body: string }>((resolve, reject) => {
          const u = new URL(path, insp.base);
          if (token !== undefined) u.searchParams.set('token', token);
          const req = request({ host: u.hostname, port: u.port, path: u.pathname + u.search }, (res) => {
            if (res.statusCode === 200) {
              res.destroy();
              resolve({ status: 200, body: '' });
              return;
            }
            let body = '';
            res.on('data', (d: Buffer) => (body += d.toString()));
            res.on('end', () => resolve({ status: res.statusCode!, body }));
          });
          req.on('error', reject);
          req.end();
        });
      const paths = ['/', '/index.html', '/app.js', '/style.css', '/api/state', '/api/events'];
      const wrong = [undefined, '', insp.token.slice(0, -1), insp.token + 'x', `${insp.token.slice(0, -1)}${insp.token.endsWith('A') ? 'B' : 'A'}`, other.token];
      for (const path of paths) {
        for (const t of wrong) {
          const r = await status(path, t);
          expect(r.status, `${path} with token ${JSON.stringify(t)}`).toBe(403);
          expect(r.body).toMatch(/printed in its first log line/);
          expect(r.body).not.toContain(insp.token);
        }
        expect((await status(path, insp.token)).status, `${path} with the token`).toBe(200);
      }
      // The page hands the token to its script (which passes it on to the API), not the other way round.
      const page = await (await fetch(insp.url)).text();
      expect(page).toContain(`src="/app.js?token=${insp.token}"`);
      expect(page).toContain(`href="/style.css?token=${insp.token}"`);
      expect((await fetch(insp.url)).headers.get('set-cookie')).toBeNull();
    } finally {
      await insp.close();
      await other.close();
    }
  });

  it('exits with the reason when its port is in use, instead of hanging', async () => {
    const { createServer } = await import('node:net');
    const busy = createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    const port = (busy.address() as { port: number }).port;
    try {
      await expect(startInspector({ listen: `127.0.0.1:${port}`, roots: [tempRoot()], log: pino({ level: 'silent' }) })).rejects.toThrow(
        new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}: the address is in use`),
      );
      const t0 = Date.now();
      const err = await run(bin, ['inspect', '--listen', `127.0.0.1:${port}`, '--runtime-root', tempRoot()], { timeout: 15_000 }).catch((e: unknown) => e as { code: number; stderr: string; killed: boolean });
      expect(err).toMatchObject({ code: 1, killed: false });
      expect((err as { stderr: string }).stderr).toMatch(/address is in use.*--listen/);
      expect(Date.now() - t0).toBeLessThan(10_000);
    } finally {
      busy.close();
    }
  });

  it('runs from the command line with --replay and stops on SIGTERM', async () => {
    const text = (await run(bin, ['sim', '--seed', '5', '--trace'])).stdout;
    const file = join(tempRoot(), 'seed5.trace');
    (await import('node:fs')).writeFileSync(file, text);
    const child = spawn(bin, ['inspect', '--replay', file, '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    // A failed assertion must not leave the server running after the test.
    try {
      const printed = await new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          const i = out.indexOf('\n');
          if (i >= 0) resolve(out.slice(0, i));
        });
        child.on('exit', (code) => reject(new Error(`exited ${code}`)));
      });
      // Text for a person (pino-pretty): the URL in the message, the record's fields after it.
      const m = /^\[[^\]]+\] INFO: vmsandbox inspect: (\S+) (\{.*\})$/.exec(printed);
      expect(m, printed).not.toBeNull();
      const line = JSON.parse(m![2]!) as Record<string, unknown>;
      expect(line).toMatchObject({ mode: 'replay', url: m![1] });
      expect(String(line.url)).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/\?token=[A-Za-z0-9_-]{43}$/);
      const api = new URL(String(line.url));
      api.pathname = '/api/state';
      // The printed URL is the key: without its token the same request is refused.
      expect((await fetch(`${api.origin}/api/state`)).status).toBe(403);
      const state = await (await fetch(api)).json();
      expect(state.mode).toBe('replay');
      expect(state.sandboxes[0].history.at(-1).state).toBe('failed');
      const code = new Promise((resolve) => child.on('exit', resolve));
      child.kill('SIGTERM');
      expect(await code).toBe(0);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
    await expect(run(bin, ['inspect', '--replay', '/nonexistent'])).rejects.toMatchObject({ code: 2 });
  });
});
