// dist/bundle/start.cjs (bundled by build/bundle.ts): what bin/vmsandbox runs for `run` and
// `finish`. It runs the manager's bundle (manager.cjs, beside it) as Node would require it, but
// compiled with the V8 code cache the build made for it (manager.cache: the bytecode of every
// function, so the manager compiles next to nothing as it starts). The cache is used only for the
// bundle it was made from (the stamp in its first line) and only if V8 accepts it (the same V8 and
// flags); otherwise the bundle is compiled as usual. docs/architecture.md, "How the manager starts".

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { Script } from 'node:vm';
import { cacheStamp, wrap } from './codeCache.js';

function cachedData(file: string, bundle: string): Buffer | undefined {
  let data: Buffer;
  try {
    data = readFileSync(file);
  } catch {
    return undefined;
  }
  const stamp = Buffer.from(cacheStamp(bundle));
  return data.subarray(0, stamp.length).equals(stamp) ? data.subarray(stamp.length) : undefined;
}

const bundle = join(__dirname, 'manager.cjs');
const script = new Script(wrap(readFileSync(bundle, 'utf8')), { filename: bundle, cachedData: cachedData(join(__dirname, 'manager.cache'), bundle) });
const run = script.runInThisContext() as (exports: object, require: NodeJS.Require, module: object, filename: string, dirname: string) => void;
const bundleModule = { exports: {} };
run.call(bundleModule.exports, bundleModule.exports, createRequire(bundle), bundleModule, bundle, dirname(bundle));
