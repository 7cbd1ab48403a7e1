// The manager's entry point: `vmsandbox run` and `vmsandbox finish`, the two commands s6 starts for
// every VM, and nothing else (no elkjs, ajv, inspect server or simulator). build/bundle.ts bundles
// it with what it imports into dist/bundle/manager.cjs; bin/vmsandbox starts run and finish from
// that bundle, else from this file in dist/ (docs/architecture.md, "How the manager starts").

import { finishMain } from '../s6/finish.js';
import { runMain } from '../s6/run.js';
import { exitWith, runCommand, type Command } from './command.js';

const commands: Record<string, Command> = { run: runMain, finish: finishMain };

async function managerMain(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  const command = name === undefined ? undefined : commands[name];
  if (name === undefined || command === undefined) {
    process.stderr.write(`vmsandbox: the manager runs only ${Object.keys(commands).join(' and ')} (got ${JSON.stringify(name ?? '')}); run "vmsandbox help"\n`);
    return 2;
  }
  return runCommand(name, command, rest);
}

exitWith(managerMain(process.argv.slice(2)));
