// The vmsandbox command line: one subcommand per job, each in its own module.

import { runCommand, type Command } from './command.js';

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
  vmsandbox status [NAME...] [--json]    each VM's state, readiness, services (pid, uid, memory, pids)
                                         and last run; exit 3 if a NAME is not running
  vmsandbox log [FILE|-] [--follow]      the manager's JSON records (run's output, an s6-log file) as text
  vmsandbox s6-service CONFIG DIR [--down]
                                         write the VM's s6 service directory (run, finish, notification-fd,
                                         timeout-kill from the config, config.json, log/run)
  vmsandbox check CONFIG [--json] [--quiet] [--no-host]
                                         validate a config file, and whether this host can enforce it
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

  vmsandbox COMMAND --help                usage of one command
  vmsandbox --version                    the version

exit codes: 2 usage error (every command), 100 invalid config;
  check: 0 ok, 111 valid config this host cannot enforce;
  run: 0 stopped, 2 forced, 3 powered off, 4 service crashed, 5 init died, 6 supervisor died,
  7 teardown failed, 101 already running (another manager owns the VM), 111 setup failed;
  finish: 0, 1 refused (the VM is live), 125 do not restart; status: 3 a NAME is not running;
  sim: 1 an invariant was violated; demo, s6-service, log, inspect: 1 failed (the output says why).
docs: docs/architecture.md, docs/config.md, docs/s6.md, docs/linux-backend.md, docs/threat-model.md,
  docs/simulation.md, docs/visualizer.md, docs/vm.md, docs/lab.md
`;

const commands: Record<string, () => Promise<Command>> = {
  demo: async () => (await import('./demo.js')).demoMain,
  run: async () => (await import('../s6/run.js')).runMain,
  finish: async () => (await import('../s6/finish.js')).finishMain,
  check: async () => (await import('./check.js')).checkMain,
  schema: async () => (await import('./schema.js')).schemaMain,
  sim: async () => (await import('./sim.js')).simMain,
  graph: async () => (await import('./graph.js')).graphMain,
  inspect: async () => (await import('../visualizer/inspect.js')).inspectMain,
  's6-service': async () => (await import('./s6Service.js')).s6ServiceMain,
  status: async () => (await import('./status.js')).statusMain,
  log: async () => (await import('./logView.js')).logMain,
};

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    process.stdout.write(HELP);
    return name === undefined ? 2 : 0;
  }
  if (name === '--version' || name === 'version') {
    process.stdout.write(`vmsandbox ${await version()}\n`);
    return 0;
  }
  const load = commands[name];
  if (!load) {
    process.stderr.write(`vmsandbox: unknown command "${name}"; run "vmsandbox help"\n`);
    return 2;
  }
  return runCommand(name, await load(), rest);
}

/** The package's version (package.json, next to dist/ and to the sources). */
async function version(): Promise<string> {
  const { readFileSync } = await import('node:fs');
  const { join } = await import('node:path');
  for (const up of ['..', '../..']) {
    try {
      const pkg = JSON.parse(readFileSync(join(import.meta.dirname, up, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'vmsandbox' && pkg.version) return pkg.version;
    } catch {
      /* not there */
    }
  }
  return 'unknown';
}

