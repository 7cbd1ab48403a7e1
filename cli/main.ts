// The vmsandbox command line: one subcommand per job, each in its own module.

import { ConfigError } from '../config/load.js';

const HELP = `vmsandbox — per-VM sandbox manager for VM host daemons (s6-supervised)

usage:
  vmsandbox demo [--sim | --stand-in]    the demo VM under a real s6 supervision tree (root + s6): the
                                         real guest under QEMU when installed, else (or with --stand-in)
                                         a QMP stand-in vmm; without root/s6 (or with --sim) the simulator
  vmsandbox run CONFIG [--notify-fd N] [--supervisor-pid PID]
                                         build the VM's sandbox, run its services (root): s6's run script;
                                         readiness on fd N; SIGTERM stops, SIGINT or a second SIGTERM forces
  vmsandbox finish CONFIG [EXITCODE [SIGNAL]] [--force]
                                         s6's finish script: remove what a dead manager left (refuses a
                                         live VM; --force kills it); 125 = do not restart (config
                                         invalid, or 3 early failures in a row: a crash loop)
  vmsandbox check CONFIG [--json]        validate a config file
  vmsandbox schema                       print the config's JSON Schema
  vmsandbox sim [--seed N] [--runs M] [--jobs J] [--json] [--config FILE]
                                         simulate seeds N..N+M-1 with fault injection, check invariants;
                                         J worker threads (default: one per core); counts per outcome
  vmsandbox sim --seed N --trace         print one seed's full state/event trace (replay a failure)
  vmsandbox graph [--format mermaid|dot|json|svg]
                                         print the sandbox state machine
  vmsandbox inspect [--listen HOST:PORT] [--runtime-root DIR ...] [--replay FILE]
                                         the state visualizer: live sandboxes, or a recorded run (web page)
  vmsandbox help                         this text

exit codes: 0 ok, 1 a check failed, 2 usage error, 100 invalid config;
  run: 0 stopped, 2 forced, 3 powered off, 4 service crashed, 5 init died, 6 supervisor died,
  7 teardown failed, 100 config invalid, 101 already running (another manager owns the VM),
  111 setup failed (docs/s6.md); finish: 0, 1 refused (the VM is live), 125 do not restart.
docs: docs/architecture.md, docs/config.md, docs/s6.md, docs/simulation.md
`;

type Command = (argv: string[]) => Promise<number>;

const commands: Record<string, () => Promise<Command>> = {
  demo: async () => (await import('./demo.js')).demoMain,
  run: async () => (await import('../s6/run.js')).runMain,
  finish: async () => (await import('../s6/finish.js')).finishMain,
  check: async () => (await import('./check.js')).checkMain,
  schema: async () => (await import('./schema.js')).schemaMain,
  sim: async () => (await import('./sim.js')).simMain,
  graph: async () => (await import('./graph.js')).graphMain,
  inspect: async () => (await import('../visualizer/inspect.js')).inspectMain,
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
