// How the manager starts (build/bundle.ts, build/start.ts, bin/vmsandbox): run and finish from one
// bundle that holds only what they need, compiled from its code cache; every other command from
// the tsc output. Each child here is started with NODE_OPTIONS=--require HOOK, a hook that prints,
// as the process exits, its main script and every module it loaded through require (the bundle is
// CommonJS: what it does not hold, such as ffi-rs, is required at run time and shows up there).

import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Script } from 'node:vm';
import { afterAll, describe, expect, it } from 'vitest';
import { cacheStamp, wrap } from '../build/codeCache.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const bin = join(root, 'bin', 'vmsandbox');
const bundleDir = join(root, 'dist', 'bundle');
const start = join(bundleDir, 'start.cjs');
const scratch = mkdtempSync(join(tmpdir(), 'vmsandbox-bundle-test-'));
const hook = join(scratch, 'hook.cjs');
writeFileSync(
  hook,
  `process.on('exit', () => process.stderr.write('\\nLOADED ' + JSON.stringify({ main: process.argv[1], modules: Object.keys(require.cache), builtins: process.moduleLoadList.filter((m) => m.startsWith('NativeModule ')).map((m) => m.slice(13)) }) + '\\n'));\n`,
);

afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** bin/vmsandbox ARGS under the hook: exit code, output, and what the process loaded. */
function traced(...args: string[]) {
  const r = spawnSync(bin, args, { cwd: root, encoding: 'utf8', timeout: 60_000, env: { ...process.env, NODE_OPTIONS: `--require ${hook}` } });
  const line = r.stderr.split('\n').find((l) => l.startsWith('LOADED '));
  if (!line) throw new Error(`no LOADED line (exit ${r.status}):\n${r.stdout}${r.stderr}`);
  return { code: r.status, out: r.stdout, err: r.stderr, ...(JSON.parse(line.slice('LOADED '.length)) as { main: string; modules: string[]; builtins: string[] }) };
}

/** Inputs of the manager's bundle, from esbuild's metafile. */
function bundleInputs(): string[] {
  const meta = JSON.parse(readFileSync(join(root, 'dist', 'bundle', 'manager.meta.json'), 'utf8')) as { inputs: Record<string, unknown> };
  return Object.keys(meta.inputs);
}

const NOT_FOR_THE_MANAGER = [
  /node_modules\/elkjs\//,
  /node_modules\/ajv\//,
  /dist\/sim\//,
  /dist\/visualizer\/(inspect|server|graphSvg|replay)/,
  /dist\/cli\/(demo|sim|graph|schema|check|main)\.js$/,
  /dist\/config\/schema\.js$/,
];

describe('the manager bundle', () => {
  it('holds run and finish and what they import, and none of elkjs, ajv, the simulator, the inspect server or the other commands', () => {
    const inputs = bundleInputs();
    for (const needed of ['dist/cli/manager.js', 'dist/s6/run.js', 'dist/s6/finish.js', 'dist/machines/sandbox.js', 'dist/effects/linux/backend.js']) {
      expect(inputs).toContain(needed);
    }
    expect(inputs.some((i) => i.includes('node_modules/xstate/'))).toBe(true);
    for (const re of NOT_FOR_THE_MANAGER) expect(inputs.filter((i) => re.test(i)), String(re)).toEqual([]);
    // ffi-rs is a native addon: outside the bundle, loaded at run time.
    expect(inputs.filter((i) => i.includes('ffi-rs'))).toEqual([]);
  });

  it('bin/vmsandbox starts finish from the bundle, which loads nothing else for a config error', () => {
    const file = join(scratch, 'bad.json');
    writeFileSync(file, '{ "name": "bundle-test" }');
    const r = traced('finish', file);
    expect(r.code, r.err).toBe(125);
    expect(r.out).toContain('config invalid');
    expect(r.main).toBe(start);
    // The hook and start.cjs (which runs the bundle), nothing more: no ffi-rs before its first syscall.
    expect(r.modules.filter((m) => m !== hook)).toEqual([start]);
  });

  it('bin/vmsandbox starts run from the bundle; the only module it requires at run time is ffi-rs', () => {
    const file = join(scratch, 'run.json');
    // A valid config on a host that refuses it before anything is created: its storage is missing,
    // which the preflight reports after the host's facts (Landlock through ffi-rs) were probed.
    writeFileSync(
      file,
      JSON.stringify({
        name: 'bundle-test',
        storage: join(scratch, 'no-such-storage'),
        runtimeDir: join(scratch, 'run'),
        services: [{ name: 'vmm', vmm: true, argv: ['/bin/sleep', '1'], uid: 62002, gid: 62002 }],
      }),
    );
    const r = traced('run', file);
    expect(r.main).toBe(start);
    expect(r.code, r.out + r.err).toBe(111);
    const others = r.modules.filter((m) => m !== hook && m !== r.main);
    for (const m of others) expect(m).toMatch(/node_modules\/(ffi-rs|@yuuang\/ffi-rs-[^/]+)\//);
    // As root the preflight probes the host through ffi-rs (not root: refused before that).
    if (process.getuid?.() === 0) {
      expect(r.out).toContain('storage');
      expect(others.some((m) => m.endsWith('.node'))).toBe(true);
    }
    for (const re of NOT_FOR_THE_MANAGER) expect(r.modules.filter((m) => re.test(m))).toEqual([]);
    // Node's own modules that cost every manager its start and memory for nothing it needs there:
    // crypto (OpenSSL's initialisation: the runtime-dir lock's sha256 is plain JS), fs/promises
    // (its synchronous calls are local and at once), perf_hooks (the start-up marks use
    // process.uptime()). They were all loaded before (docs/architecture.md, "How the manager starts").
    expect(r.builtins).toContain('net'); // the hook did see what the bundle loads
    expect(r.builtins.filter((m) => ['crypto', 'fs/promises', 'perf_hooks'].includes(m))).toEqual([]);
  });

  it('its code cache belongs to it and V8 takes it', () => {
    const bundle = join(bundleDir, 'manager.cjs');
    const data = readFileSync(join(bundleDir, 'manager.cache'));
    const stamp = Buffer.from(cacheStamp(bundle));
    expect(data.subarray(0, stamp.length).equals(stamp)).toBe(true);
    const script = new Script(wrap(readFileSync(bundle, 'utf8')), { filename: bundle, cachedData: data.subarray(stamp.length) });
    expect(script.cachedDataRejected).toBe(false);
  });

  it('every other command starts from the tsc output (dist/cli/bin.js)', () => {
    const r = traced('schema');
    expect(r.code).toBe(0);
    expect(r.main).toBe(join(root, 'dist', 'cli', 'bin.js'));
  });
});
