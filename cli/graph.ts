// vmsandbox graph --format mermaid|dot|json|svg: print the sandbox machine.

import { parseArgs } from 'node:util';
import { machineGraph, toDot, toMermaid } from '../visualizer/graph.js';
import { toSvg } from '../visualizer/graphSvg.js';
import { sandboxMachine } from '../machines/sandbox.js';

export async function graphMain(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { format: { type: 'string', default: 'mermaid' } } });
  const g = machineGraph(sandboxMachine);
  switch (values.format) {
    case 'mermaid':
      process.stdout.write(toMermaid(g));
      return 0;
    case 'dot':
      process.stdout.write(toDot(g));
      return 0;
    case 'svg':
      process.stdout.write(await toSvg(g));
      return 0;
    case 'json':
      process.stdout.write(JSON.stringify(g, null, 2) + '\n');
      return 0;
    default:
      process.stderr.write(`--format: unknown format "${values.format}"; use mermaid, dot, json or svg\n`);
      return 2;
  }
}
