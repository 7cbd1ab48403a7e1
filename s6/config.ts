// Loading the config for a command s6 runs (run, finish): an invalid one becomes one JSON error
// record on stdout, which s6-log keeps, named after the file (the config's own name is unknown).

import { basename } from 'node:path';
import { ConfigError, loadConfig } from '../config/load.js';
import type { VmConfig } from '../config/types.js';
import { createLogger } from '../cli/log.js';

/** The config, or null after logging every problem with `what` and the exit code to end with. */
export function loadConfigOrLog(file: string, exitCode: number, what: string): VmConfig | null {
  try {
    return loadConfig(file);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    createLogger(basename(file).replace(/\.json$/, '')).error({ config: file, problems: e.problems, exitCode }, `${what}: ${e.problems.join('; ')}`);
    return null;
  }
}
