// The machine as a drawable graph (nodes, edges) and its renderings: JSON, mermaid, Graphviz dot.
// Read straight from the machine definition, so the picture can never drift from the code.

import type { AnyStateMachine, AnyStateNode } from 'xstate';

export interface GraphNode {
  id: string;
  parent: string | null;
  type: string;
  description: string | null;
  invokes: string[];
  /** A compound state's initial child (where entering it goes); absent in graphs from before it was drawn. */
  initial?: string | null;
}

export interface GraphEdge {
  from: string;
  to: string;
  event: string;
  guard: string | null;
}

export interface MachineGraph {
  id: string;
  /** The machine's initial state (the start marker points at it); absent in graphs from before it was drawn. */
  initial?: string | null;
  nodes: GraphNode[];
  edges: GraphEdge[];
}

/** Short, readable event labels: "done: mount", "after: stopDeadline", "always". */
export function eventLabel(type: string): string {
  if (type === '') return 'always';
  let m = /^xstate\.done\.actor\.(.+)$/.exec(type);
  if (m) return `done: ${m[1]}`;
  m = /^xstate\.error\.actor\.(.+)$/.exec(type);
  if (m) return `error: ${m[1]}`;
  m = /^xstate\.after\.([^.]+)\./.exec(type);
  if (m) return `after: ${m[1]}`;
  return type;
}

function stateId(node: AnyStateNode, rootId: string): string {
  return node.path.length ? node.path.join('.') : rootId;
}

function guardName(guard: unknown): string | null {
  if (!guard) return null;
  if (typeof guard === 'string') return guard;
  const g = guard as { type?: string; name?: string; guards?: unknown[] };
  if (g.type) return g.type;
  if (g.guards) return g.guards.map(guardName).join(' & ');
  return g.name ?? 'guard';
}

function initialOf(node: AnyStateNode, rootId: string): string | null {
  const target = (node.initial as { target?: readonly AnyStateNode[] } | undefined)?.target?.[0];
  return target ? stateId(target, rootId) : null;
}

export function machineGraph(machine: AnyStateMachine): MachineGraph {
  const nodes: GraphNode[] = [];
  const edges: GraphEdge[] = [];
  const rootId = machine.root.id;
  const walk = (node: AnyStateNode) => {
    const id = stateId(node, rootId);
    if (node.path.length) {
      nodes.push({
        id,
        parent: node.path.length > 1 ? node.path.slice(0, -1).join('.') : null,
        type: node.type,
        description: node.description ?? null,
        invokes: node.invoke.map((i: { src: unknown; id: string }) => (typeof i.src === 'string' ? i.src : i.id)),
        initial: initialOf(node, rootId),
      });
    }
    const transitions = [...node.transitions.values()].flat();
    for (const t of [...transitions, ...(node.always ?? [])]) {
      for (const target of t.target ?? []) {
        edges.push({ from: id, to: stateId(target, rootId), event: t.eventType, guard: guardName(t.guard) });
      }
    }
    for (const child of Object.values(node.states) as AnyStateNode[]) walk(child);
  };
  walk(machine.root);
  return { id: rootId, initial: initialOf(machine.root, rootId), nodes, edges };
}

const mermaidId = (id: string) => id.replace(/\./g, '_');

export function toMermaid(g: MachineGraph): string {
  const lines = ['stateDiagram-v2'];
  const emit = (parent: string | null, indent: string) => {
    const kids = g.nodes.filter((n) => n.parent === parent);
    if (parent === null && kids.length) lines.push(`${indent}[*] --> ${mermaidId(g.initial ?? kids[0]!.id)}`);
    for (const n of kids) {
      const grand = g.nodes.filter((c) => c.parent === n.id);
      if (grand.length) {
        lines.push(`${indent}state ${mermaidId(n.id)} {`);
        lines.push(`${indent}  [*] --> ${mermaidId(n.initial ?? grand[0]!.id)}`);
        emit(n.id, indent + '  ');
        lines.push(`${indent}}`);
      }
      if (n.type === 'final') lines.push(`${indent}${mermaidId(n.id)} --> [*]`);
    }
  };
  emit(null, '  ');
  for (const e of g.edges) {
    const label = eventLabel(e.event) + (e.guard ? ` [${e.guard}]` : '');
    lines.push(`  ${mermaidId(e.from)} --> ${mermaidId(e.to)}: ${label.replace(/:/g, '')}`);
  }
  return lines.join('\n') + '\n';
}

const q = (s: string) => `"${s.replace(/"/g, '\\"')}"`;

export function toDot(g: MachineGraph): string {
  const lines = [`digraph ${q(g.id)} {`, '  rankdir=TB;', '  node [shape=box, style=rounded, fontname="sans-serif"];', '  edge [fontname="sans-serif", fontsize=10];'];
  const emit = (parent: string | null, indent: string) => {
    for (const n of g.nodes.filter((x) => x.parent === parent)) {
      const kids = g.nodes.filter((c) => c.parent === n.id);
      if (kids.length) {
        lines.push(`${indent}subgraph ${q('cluster_' + n.id)} {`, `${indent}  label=${q(n.id)};`);
        emit(n.id, indent + '  ');
        lines.push(`${indent}}`);
      } else {
        const shape = n.type === 'final' ? ', peripheries=2' : '';
        const label = n.invokes.length ? `${n.id}\\n(${n.invokes.join(', ')})` : n.id;
        lines.push(`${indent}${q(n.id)} [label=${q(label)}${shape}];`);
      }
    }
  };
  emit(null, '  ');
  // Edges from a compound state leave from its first child, so dot can draw them.
  const leaf = (id: string): string => {
    const kid = g.nodes.find((n) => n.parent === id);
    return kid ? leaf(kid.id) : id;
  };
  for (const e of g.edges) {
    const label = eventLabel(e.event) + (e.guard ? ` [${e.guard}]` : '');
    lines.push(`  ${q(leaf(e.from))} -> ${q(leaf(e.to))} [label=${q(label)}];`);
  }
  lines.push('}');
  return lines.join('\n') + '\n';
}
