// The machine graph laid out with elkjs (layered, compound states as containers) and rendered as
// a standalone SVG by string building (no DOM). Every state is a <g class="state" data-state=ID>,
// so a page can highlight the active configuration by toggling a class; every edge (all the
// transitions between one pair of states, one label line each) is a <g class="edge">.

import ElkBundled from 'elkjs/lib/elk.bundled.js';
import type { ElkExtendedEdge, ElkNode } from 'elkjs/lib/elk-api.js';
import type { GraphNode, MachineGraph } from './graph.js';
import { eventLabel } from './graph.js';

const NODE_FONT = 12;
const EDGE_FONT = 10;
const NODE_CHAR = 7.0;
const EDGE_CHAR = 5.9;
const LINE = 13;

export const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

const shortName = (id: string) => id.slice(id.lastIndexOf('.') + 1);

interface EdgeGroup {
  id: string;
  from: string;
  to: string;
  labels: string[];
}

/** All the transitions from one state to another as one drawn edge, one label line per event. */
export function edgeGroups(g: MachineGraph): EdgeGroup[] {
  const groups = new Map<string, EdgeGroup>();
  for (const e of g.edges) {
    const key = `${e.from}\u0000${e.to}`;
    let grp = groups.get(key);
    if (!grp) {
      grp = { id: `e${groups.size}`, from: e.from, to: e.to, labels: [] };
      groups.set(key, grp);
    }
    const label = eventLabel(e.event) + (e.guard ? ` [${e.guard}]` : '');
    if (!grp.labels.includes(label)) grp.labels.push(label);
  }
  return [...groups.values()];
}

function nodeSize(n: GraphNode): { width: number; height: number } {
  const lines = [shortName(n.id), ...(n.invokes.length ? [n.invokes.join(', ')] : [])];
  const width = Math.max(96, Math.ceil(Math.max(...lines.map((l) => l.length)) * NODE_CHAR) + 24);
  return { width, height: n.invokes.length ? 42 : 30 };
}

export async function layoutGraph(g: MachineGraph): Promise<ElkNode> {
  const build = (parent: string | null): ElkNode[] =>
    g.nodes
      .filter((n) => n.parent === parent)
      .map((n) => {
        const kids = build(n.id);
        if (kids.length) {
          return {
            id: n.id,
            children: kids,
            layoutOptions: { 'elk.padding': '[top=30,left=14,bottom=14,right=14]' },
          };
        }
        return { id: n.id, ...nodeSize(n) };
      });
  const edges: ElkExtendedEdge[] = edgeGroups(g).map((e) => ({
    id: e.id,
    sources: [e.from],
    targets: [e.to],
    labels: [
      {
        text: e.labels.join('\n'),
        width: Math.ceil(Math.max(...e.labels.map((l) => l.length)) * EDGE_CHAR) + 6,
        height: e.labels.length * LINE + 2,
      },
    ],
  }));
  // A CommonJS module: its default export is module.exports, which carries the class as .default too.
  const elk = new ElkBundled.default();
  return elk.layout({
    id: g.id,
    layoutOptions: {
      'elk.algorithm': 'layered',
      'elk.direction': 'DOWN',
      'elk.hierarchyHandling': 'INCLUDE_CHILDREN',
      'elk.json.edgeCoords': 'ROOT',
      'elk.json.shapeCoords': 'ROOT',
      'elk.edgeRouting': 'ORTHOGONAL',
      'elk.layered.mergeEdges': 'true',
      'elk.layered.nodePlacement.strategy': 'BRANDES_KOEPF',
      'elk.edgeLabels.placement': 'CENTER',
      'elk.layered.spacing.nodeNodeBetweenLayers': '34',
      'elk.spacing.nodeNode': '28',
      'elk.spacing.edgeLabel': '4',
      'elk.spacing.edgeNode': '14',
      'elk.spacing.edgeEdge': '10',
      'elk.layered.spacing.edgeNodeBetweenLayers': '14',
      'elk.padding': '[top=16,left=16,bottom=16,right=16]',
    },
    children: build(null),
    edges,
  });
}

const STYLE = `
.state rect { fill: #ffffff; stroke: #5b6b7f; stroke-width: 1.2; }
.state.compound > rect { fill: #f3f6fa; stroke: #94a3b8; stroke-dasharray: 4 3; }
.state.final > rect.inner { fill: none; stroke: #5b6b7f; }
.state text { font: ${NODE_FONT}px system-ui, sans-serif; fill: #1f2937; }
.state text.name { font-weight: 600; }
.state text.invoke { font-size: ${NODE_FONT - 2}px; fill: #64748b; font-style: italic; }
.state.compound > text.name { fill: #475569; }
.edge path { fill: none; stroke: #8795a8; stroke-width: 1.1; }
.edge text { font: ${EDGE_FONT}px system-ui, sans-serif; fill: #475569; }
.edge rect.bg { fill: #ffffff; fill-opacity: 0.85; }
`;

/** Render a laid-out graph; `g` supplies the node types and invoked operations. */
export function renderSvg(g: MachineGraph, laid: ElkNode): string {
  const byId = new Map(g.nodes.map((n) => [n.id, n]));
  const groups = new Map(edgeGroups(g).map((e) => [e.id, e]));
  const W = Math.ceil(laid.width ?? 0);
  const H = Math.ceil(laid.height ?? 0);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" class="statechart" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${esc(g.id)} state machine">`,
    `<title>${esc(g.id)} state machine</title>`,
    `<style>${STYLE}</style>`,
    '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#8795a8"/></marker></defs>',
  ];
  const f = (n: number | undefined) => Math.round((n ?? 0) * 10) / 10;
  const nodes = (list: ElkNode[] | undefined) => {
    for (const n of list ?? []) {
      const info = byId.get(n.id);
      const compound = !!n.children?.length;
      const type = compound ? 'compound' : info?.type === 'final' ? 'final' : 'atomic';
      const x = f(n.x), y = f(n.y), w = f(n.width), h = f(n.height);
      out.push(`<g class="state ${type}" data-state="${esc(n.id)}" id="state-${esc(n.id)}">`);
      out.push(`<title>${esc(n.id)}${info?.invokes.length ? ` (invokes ${esc(info.invokes.join(', '))})` : ''}</title>`);
      out.push(`<rect x="${x}" y="${y}" width="${w}" height="${h}" rx="${compound ? 10 : 8}"/>`);
      if (type === 'final') out.push(`<rect class="inner" x="${x + 3}" y="${y + 3}" width="${f(w - 6)}" height="${f(h - 6)}" rx="6"/>`);
      if (compound) {
        out.push(`<text class="name" x="${x + 10}" y="${y + 19}">${esc(shortName(n.id))}</text>`);
      } else {
        const cx = f(x + w / 2);
        if (info?.invokes.length) {
          out.push(`<text class="name" x="${cx}" y="${y + 18}" text-anchor="middle">${esc(shortName(n.id))}</text>`);
          out.push(`<text class="invoke" x="${cx}" y="${y + 33}" text-anchor="middle">${esc(info.invokes.join(', '))}</text>`);
        } else {
          out.push(`<text class="name" x="${cx}" y="${f(y + h / 2 + 4)}" text-anchor="middle">${esc(shortName(n.id))}</text>`);
        }
      }
      out.push('</g>');
      nodes(n.children);
    }
  };
  const edges: ElkExtendedEdge[] = [];
  const collect = (n: ElkNode) => {
    edges.push(...(n.edges ?? []));
    for (const c of n.children ?? []) collect(c);
  };
  collect(laid);
  nodes(laid.children);
  for (const e of edges) {
    const grp = groups.get(e.id);
    if (!grp) continue;
    out.push(`<g class="edge" data-from="${esc(grp.from)}" data-to="${esc(grp.to)}" data-labels="${esc(grp.labels.join('|'))}">`);
    out.push(`<title>${esc(grp.from)} → ${esc(grp.to)}: ${esc(grp.labels.join(' · '))}</title>`);
    for (const s of e.sections ?? []) {
      const pts = [s.startPoint, ...(s.bendPoints ?? []), s.endPoint];
      out.push(`<path d="M${pts.map((p) => `${f(p.x)},${f(p.y)}`).join(' L')}" marker-end="url(#arrow)"/>`);
    }
    for (const l of e.labels ?? []) {
      out.push(`<rect class="bg" x="${f(l.x)}" y="${f(l.y)}" width="${f(l.width)}" height="${f(l.height)}" rx="2"/>`);
      grp.labels.forEach((line, i) => {
        out.push(`<text x="${f((l.x ?? 0) + 3)}" y="${f((l.y ?? 0) + 10 + i * LINE)}">${esc(line)}</text>`);
      });
    }
    out.push('</g>');
  }
  out.push('</svg>');
  return out.join('\n') + '\n';
}

export async function toSvg(g: MachineGraph): Promise<string> {
  return renderSvg(g, await layoutGraph(g));
}
