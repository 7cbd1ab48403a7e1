// The vmsandbox command as a user runs it: the compiled bin/vmsandbox in a child process.

import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('..', import.meta.url));
const bin = `${root}bin/vmsandbox`;

function vmsandbox(...args: string[]) {
  const r = spawnSync(bin, args, { cwd: root, encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe('vmsandbox CLI', () => {
  it('help lists every command; no command is a usage error', () => {
    const help = vmsandbox('--help');
    expect(help.code).toBe(0);
    for (const c of ['demo', 'run', 'finish', 'check', 'schema', 'sim', 'graph', 'inspect', 'status', 'log', 's6-service']) expect(help.out).toContain(`vmsandbox ${c}`);
    expect(vmsandbox().code).toBe(2);
    const bad = vmsandbox('frobnicate');
    expect(bad.code).toBe(2);
    expect(bad.err).toContain('unknown command "frobnicate"');
  });

  it('graph prints the machine as mermaid, dot and json', () => {
    const mermaid = vmsandbox('graph', '--format', 'mermaid');
    expect(mermaid.out).toMatch(/^stateDiagram-v2/);
    expect(mermaid.out).toContain('setup_mount --> setup_landlock');
    // The graceful stop's deadline is the timeout-kill; no state is named for it.
    expect(mermaid.out).toContain('gracefulStop --> teardown: after timeoutKill');
    expect(mermaid.out).not.toMatch(/^\s*state timeoutKill|--> timeoutKill/m);
    const dot = vmsandbox('graph', '--format', 'dot');
    expect(dot.out).toMatch(/^digraph "vmsandbox"/);
    expect(dot.out).toContain('"teardown.kill" -> "teardown.cleanup"');
    const json = JSON.parse(vmsandbox('graph', '--format', 'json').out);
    const ids = json.nodes.map((n: { id: string }) => n.id);
    for (const s of ['setup.setupNamespaces', 'setup.mount', 'setup.landlock', 'setup.cgroup', 'setup.launch', 'running', 'gracefulStop', 'teardown', 'teardown.kill', 'teardown.cleanup', 'stopped', 'failed']) {
      expect(ids).toContain(s);
    }
    const bad = vmsandbox('graph', '--format', 'png');
    expect(bad.code).toBe(2);
    expect(bad.err).toContain('--format');
  });

  it('every command answers --help with its usage on stdout and exit 0, and starts nothing; --version', () => {
    for (const c of ['demo', 'run', 'finish', 'check', 'schema', 'sim', 'graph', 'inspect', 'status', 'log', 's6-service']) {
      const r = vmsandbox(c, '--help');
      expect({ c, code: r.code, err: r.err }).toEqual({ c, code: 0, err: '' });
      expect(r.out, c).toMatch(new RegExp(`^usage: vmsandbox ${c}\\b`));
      expect(vmsandbox(c, '-h').out).toBe(r.out);
    }
    // After "--" it is an argument, not a request for help.
    const dashed = vmsandbox('run', '--', '--help');
    expect(dashed.out).not.toMatch(/^usage:/);
    expect(dashed.code).not.toBe(0);
    const v = vmsandbox('--version');
    expect(v.code).toBe(0);
    expect(v.out).toMatch(/^vmsandbox \d+\.\d+\.\d+\n$/);
    // The main help lists every doc.
    for (const d of ['architecture', 'config', 's6', 'linux-backend', 'threat-model', 'simulation', 'visualizer', 'vm', 'lab']) expect(vmsandbox('help').out).toContain(`docs/${d}.md`);
  });

  it('demo --sim prints text for a person (pino-pretty), --json the JSON records', () => {
    const text = vmsandbox('demo', '--sim');
    expect(text.code).toBe(0);
    expect(text.out).toMatch(/^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\] INFO: demo: demo with 2 services, in the simulator/);
    expect(text.out).toMatch(/ INFO: demo: demo finished: stopped, outcome stopped, exit 0; invariants hold /);
  });

  it('demo --sim --json logs one JSON line per state change, each with the VM name, and ends stopped', () => {
    // The real demo (under s6, as root) is tested in test/s6; --sim is the simulator fallback.
    const r = vmsandbox('demo', '--sim', '--json');
    expect(r.code).toBe(0);
    const lines = r.out.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.every((l) => l.vm === 'demo')).toBe(true);
    // One record per change; consecutive records of one state differ by their reason.
    const states = lines.filter((l) => l.state).map((l) => l.state).filter((s, i, a) => s !== a[i - 1]);
    expect(states).toEqual([
      'setup.setupNamespaces', 'setup.mount', 'setup.landlock', 'setup.cgroup',
      'setup.launch', 'running',
      'gracefulStop.vmm.requesting', 'gracefulStop.vmm.waiting', 'gracefulStop.services', 'teardown.kill', 'teardown.cleanup', 'stopped',
    ]);
    expect(lines.filter((l) => /^launched /.test(l.reason ?? '')).map((l) => l.reason)).toEqual([
      expect.stringMatching(/^launched virtiofsd \(pid \d+\)$/),
      expect.stringMatching(/^launched vmm \(pid \d+\)$/),
    ]);
    expect(lines.at(-1)).toMatchObject({ outcome: 'stopped', exitCode: 0, invariants: 'hold' });
  });
});
