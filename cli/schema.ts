// `vmsandbox schema`: print the config v1 JSON Schema, e.g. for an editor's JSON validation.

import { configSchema } from '../config/schema.js';
import { type CliIo, processIo } from './io.js';

const USAGE_ERROR = 2;

const USAGE = 'usage: vmsandbox schema\n  Print the JSON Schema of the VM config format (config v1).\n';

/** argv: the arguments after "schema". Returns the exit status. */
export async function schemaMain(argv: string[], io: CliIo = processIo): Promise<number> {
  if (argv.length === 1 && (argv[0] === '--help' || argv[0] === '-h')) {
    io.out(USAGE);
    return 0;
  }
  if (argv.length > 0) {
    io.err(`vmsandbox schema: unexpected argument ${JSON.stringify(argv[0])}\n${USAGE}`);
    return USAGE_ERROR;
  }
  io.out(`${JSON.stringify(configSchema, null, 2)}\n`);
  return 0;
}
