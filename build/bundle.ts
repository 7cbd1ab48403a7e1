// The manager's bundle, built by `npm run build` (so by `npm ci`) after tsc:
//
//   dist/bundle/manager.cjs        cli/manager.ts (run and finish) and everything it imports, in
//                                  one file: no elkjs, ajv, inspect server or simulator; ffi-rs
//                                  stays outside (a native addon, loaded from node_modules on
//                                  first use, effects/linux/native.ts)
//   dist/bundle/manager.cache      a V8 code cache of it: the bytecode of every function, compiled
//                                  eagerly here, behind a stamp of the bundle it belongs to
//   dist/bundle/start.cjs          build/start.ts: runs manager.cjs with that cache
//   dist/bundle/manager.meta.json  esbuild's metafile: every input and its bytes (the tests read it)
//
// bin/vmsandbox starts run and finish with start.cjs, else dist/cli/manager.js. A V8 startup
// snapshot of the bundle was tried and left out: no faster here, 5 MiB more per manager
// (docs/architecture.md, "How the manager starts").

import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { Script } from 'node:vm';
import { build, type BuildOptions, type Plugin } from 'esbuild';
import { cacheStamp, wrap } from './codeCache.js';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const out = join(repo, 'dist', 'bundle');

/** import.meta.url in the CommonJS bundle: the bundle's own URL (effects/linux/native.ts finds native/build from it). */
const BANNER = 'var __vmsandbox_meta = { url: require("node:url").pathToFileURL(__filename).href };';

/** rxjs's "node" export is CommonJS (nothing tree-shaken); its ES2015 modules shake to what is used. */
const rxjsEsm: Plugin = {
  name: 'rxjs-esm',
  setup(b) {
    b.onResolve({ filter: /^rxjs$/ }, () => ({ path: join(repo, 'node_modules', 'rxjs', 'dist', 'esm', 'index.js') }));
  },
};

/**
 * The code cache: the bundle compiled eagerly (every function, not only those V8 would compile up
 * front), with the flags put back before the cache is written, so that it matches a manager's own
 * (V8 refuses a cache made under other flags, and then start.cjs compiles the bundle as usual).
 */
function codeCache(bundle: string): Buffer {
  setFlagsFromString('--no-lazy');
  let script: Script;
  try {
    script = new Script(wrap(readFileSync(bundle, 'utf8')), { filename: bundle });
  } finally {
    setFlagsFromString('--lazy');
  }
  return Buffer.concat([Buffer.from(cacheStamp(bundle)), script.createCachedData()]);
}

async function main(): Promise<void> {
  const entry = join(repo, 'dist', 'cli', 'manager.js');
  if (!existsSync(entry)) throw new Error(`${entry} is missing: run tsc first (npm run build)`);
  mkdirSync(out, { recursive: true });
  const common: BuildOptions = {
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    minifySyntax: true,
    minifyWhitespace: true,
    legalComments: 'none',
    logLevel: 'warning',
  };
  const bundle = join(out, 'manager.cjs');
  const result = await build({
    ...common,
    entryPoints: [entry],
    outfile: bundle,
    external: ['ffi-rs'],
    define: { 'import.meta.url': '__vmsandbox_meta.url' },
    banner: { js: BANNER },
    plugins: [rxjsEsm],
    metafile: true,
  });
  writeFileSync(join(out, 'manager.meta.json'), JSON.stringify(result.metafile));
  writeFileSync(join(out, 'manager.cache'), codeCache(bundle));
  await build({ ...common, entryPoints: [join(repo, 'dist', 'build', 'start.js')], outfile: join(out, 'start.cjs') });
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
