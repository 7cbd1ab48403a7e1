// The vmsandbox command line: one subcommand per job, each in its own module.

import { ConfigError } from '../config/load.js';

const HELP = `vmsandbox — per-VM sandbox manager for VM host daemons (s6-supervised)

usage:
  vmsandbox demo                         run the built-in demo config's lifecycle (simulator)
  vmsandbox run CONFIG                   build the VM's sandbox, run its services; stop on SIGTERM (root)
  vmsandbox check CONFIG [--json]        validate a config file
  vmsandbox schema                       print the config's JSON Schema
  vmsandbox sim [--seed N] [--runs M] [--json] [--config FILE]
                                         simulate seeds N..N+M-1 with fault injection, check invariants
  vmsandbox sim --seed N --trace         print one seed's full state/event trace (replay a failure)
  vmsandbox graph [--format mermaid|dot|json]
                                         print the sandbox state machine
  vmsandbox help                         this text

exit codes: 0 ok, 1 a check failed, 2 usage error, 100 invalid config.
docs: docs/architecture.md, docs/config.md, docs/simulation.md
`;

type Command = (argv: string[]) => Promise<number>;

const commands: Record<string, () => Promise<Command>> = {
  demo: async () => (await import('./demo.js')).demoMain,
  run: async () => (await import('./run.js')).runMain,
  check: async () => (await import('./check.js')).checkMain,
  schema: async () => (await import('./schema.js')).schemaMain,
  sim: async () => (await import('./sim.js')).simMain,
  graph: async () => (await import('./graph.js')).graphMain,
};

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    process.stdout.write(HELP);
    return name === undefined ? 2 : 0;
  }
  const load = commands[name];
  if (!load) {
    process.stderr.write(`vmsandbox: unknown command "${name}"; run "vmsandbox help"\n`);
    return 2;
  }
  try {
    return await (await load())(rest);
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
