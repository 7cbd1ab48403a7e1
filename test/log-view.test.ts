// `vmsandbox log`: the manager's JSON records as text (pino-pretty), s6-log's timestamp prefixes
// read, other lines kept as they are.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { logMain, renderer, splitPrefix } from '../cli/logView.js';

const render = renderer(false);

describe('vmsandbox log', () => {
  it('renders a record: time, level, the VM, the message, and its other fields on one line', () => {
    const line = JSON.stringify({ level: 'error', time: '2026-11-30T23:50:02.000Z', vm: 'demo', outcome: 'serviceCrashed', exitCode: 4, msg: 'exit 4: serviceCrashed' });
    // The machine's timezone is the system's (SYS:); compare the parts that do not depend on it.
    expect(render(line)).toMatch(/^\[\d{4}-\d\d-\d\d \d\d:\d\d:02\.000\] ERROR: demo: exit 4: serviceCrashed \{"outcome":"serviceCrashed","exitCode":4\}\n$/);
    // A service's line is the message, its service and stream the fields.
    expect(render(JSON.stringify({ level: 'warn', time: '2026-11-30T23:50:01.500Z', vm: 'demo', service: 'vmm', stream: 'stderr', msg: 'Permission denied' })))
      .toMatch(/ WARN: demo: Permission denied \{"service":"vmm","stream":"stderr"\}\n$/);
  });

  it('reads s6-log prefixes: TAI64N (t) and ISO 8601 (T); a line that is no record stays as it is', () => {
    // 2^62 + 1764546601 + 37 (TAI − UTC) seconds, 0.5 s: 2025-11-30T23:50:01.500Z
    const secs = (1n << 62n) + 1764546601n + 37n;
    const label = `@${secs.toString(16).padStart(16, '0')}${(500_000_000).toString(16).padStart(8, '0')}`;
    expect(splitPrefix(`${label} {"msg":"x"}`)).toEqual({ time: '2025-11-30T23:50:01.500Z', rest: '{"msg":"x"}' });
    expect(splitPrefix('2025-11-30 23:50:01.500000000  {"msg":"x"}')).toEqual({ time: '2025-11-30T23:50:01.500Z', rest: '{"msg":"x"}' });
    expect(splitPrefix('plain')).toEqual({ time: null, rest: 'plain' });
    // The prefix's time stands in for a record without one.
    expect(render(`${label} {"level":"info","vm":"demo","msg":"ready"}`)).toMatch(/^\[2025-11-30 \d\d:\d\d:01\.500\] INFO: demo: ready\n$/);
    expect(render('not json at all')).toBe('not json at all\n');
    expect(render('{"no":"msg"}')).toBe('{"no":"msg"}\n');
  });

  it('reads a file; --help prints the usage and exits 0; a missing file is an error', async () => {
    const dir = mkdtempSync('/tmp/vmsandbox-log-');
    try {
      const file = join(dir, 'current');
      writeFileSync(file, `${JSON.stringify({ level: 'info', time: '2026-11-30T23:50:01.123Z', vm: 'demo', state: 'running', msg: 'running' })}\nplain line\n`);
      const io = { stdout: '', stderr: '', out: (t: string) => void (io.stdout += t), err: (t: string) => void (io.stderr += t) };
      expect(await logMain([file, '--no-color'], io)).toBe(0);
      expect(io.stdout.split('\n')).toEqual([expect.stringMatching(/ INFO: demo: running \{"state":"running"\}$/), 'plain line', '']);
      const help = { ...io, stdout: '', out: (t: string) => void (help.stdout += t) };
      expect(await logMain(['--help'], help)).toBe(0);
      expect(help.stdout).toMatch(/^usage: vmsandbox log /);
      expect(await logMain([join(dir, 'nope')], io)).toBe(1);
      expect(io.stderr).toMatch(/does not exist/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
