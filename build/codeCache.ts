// The manager's V8 code cache (dist/bundle/manager.cache): shared by build/bundle.ts, which makes
// it, and build/start.ts, which uses it.

import { statSync } from 'node:fs';

/** The cache's first line: which bundle it was made from (V8 itself checks little more than the source's length). */
export function cacheStamp(bundle: string): string {
  const s = statSync(bundle);
  return `vmsandbox-code-cache ${s.size} ${s.mtimeMs}\n`;
}

/** The CommonJS wrapper around the bundle's source, the same when the cache is made and used. */
export function wrap(source: string): string {
  return `(function (exports, require, module, __filename, __dirname) {${source}\n})`;
}
