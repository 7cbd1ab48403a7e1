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
      const get = (path: string, host?: string, method = 'GET') =>
        new Promise<{ status: number; body: string; headers: Record<string, unknown> }>((resolve, reject) => {
          const u = new URL(path, insp.url);
          const req = request({ host: u.hostname, port: u.port, path: u.pathname, method, headers: host ? { host } : {} }, (res) => {
            let body = '';
            res.on('data', (d: Buffer) => (body += d.toString()));
            res.on('end', () => resolve({ status: res.statusCode!, body, headers: res.headers }));
          });
          req.on('error', reject);
          req.end();
        });
      const page = await get('/');
      expect(page.status).toBe(200);
      expect(page.body).toContain('<script type="module" src="/app.js">');
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

  it('runs from the command line with --replay and stops on SIGTERM', async () => {
    const text = (await run(bin, ['sim', '--seed', '5', '--trace'])).stdout;
    const file = join(tempRoot(), 'seed5.trace');
    (await import('node:fs')).writeFileSync(file, text);
    const child = spawn(bin, ['inspect', '--replay', file, '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const line = await new Promise<Record<string, unknown>>((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        const i = out.indexOf('\n');
        if (i >= 0) resolve(JSON.parse(out.slice(0, i)));
      });
      child.on('exit', (code) => reject(new Error(`exited ${code}`)));
    });
    expect(line).toMatchObject({ level: 'info', mode: 'replay' });
    const state = await (await fetch(`${line.url}api/state`)).json();
    expect(state.mode).toBe('replay');
    expect(state.sandboxes[0].history.at(-1).state).toBe('failed');
    const code = new Promise((resolve) => child.on('exit', resolve));
    child.kill('SIGTERM');
    expect(await code).toBe(0);
    await expect(run(bin, ['inspect', '--replay', '/nonexistent'])).rejects.toMatchObject({ code: 2 });
  });
});
