// Running one subcommand: what every entry point (cli/main.ts, the manager's bundle cli/manager.ts)
// does around it, kept in one place so both end the same way.

import { ConfigError } from '../config/load.js';

export type Command = (argv: string[]) => Promise<number>;

/** Run `command`; a config error ends with 100, a usage error (node:util parseArgs) with 2. */
export async function runCommand(name: string, command: Command, argv: string[]): Promise<number> {
  try {
    return await command(argv);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`${e.message}\n`);
      return 100;
    }
    if (e instanceof Error && 'code' in e && String(e.code).startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`vmsandbox ${name}: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
}

/** An entry point's end: the command's code as the process's exit code; a crash prints and is 1. */
export function exitWith(code: Promise<number>): void {
  code.then(
    (c) => {
      process.exitCode = c;
    },
    (err: unknown) => {
      console.error(err);
      process.exitCode = 1;
    },
  );
}
