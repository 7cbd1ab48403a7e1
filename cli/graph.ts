// vmsandbox graph --format mermaid|dot|json|svg: print the sandbox machine.

import { parseArgs } from 'node:util';
import { printHelp } from './help.js';
import { machineGraph, toDot, toMermaid } from '../visualizer/graph.js';
import { toSvg } from '../visualizer/graphSvg.js';
import { sandboxMachine } from '../machines/sandbox.js';

const USAGE =
  'usage: vmsandbox graph [--format mermaid|dot|json|svg]\n' +
  '  Print the sandbox state machine (every state and transition), in Mermaid (default), Graphviz dot,\n' +
  '  JSON or SVG (laid out with ELK).\n' +
  '  exit: 0, 2 usage (an unknown format)\n';

export async function graphMain(argv: string[]): Promise<number> {
  if (printHelp(argv, USAGE)) return 0;
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
