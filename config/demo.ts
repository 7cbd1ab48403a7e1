// Where the shipped demo config lives. Source runs from config/ and compiled code from
// dist/config/, so the path is found from the package root rather than a fixed "../".

import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

function packageRoot(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    const manifest = join(dir, 'package.json');
    // The name check skips any package.json a build might drop into dist/.
    if (existsSync(manifest) && (JSON.parse(readFileSync(manifest, 'utf8')) as { name?: unknown }).name === 'vmsandbox') {
      return dir;
    }
    if (dirname(dir) === dir) throw new Error(`vmsandbox package root not found above ${from}`);
  }
}

export const demoConfigPath: string = join(packageRoot(dirname(fileURLToPath(import.meta.url))), 'examples', 'demo.json');
