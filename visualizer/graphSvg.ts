// The machine graph laid out with elkjs (layered, compound states as containers) and rendered as
// a standalone SVG by string building (no DOM). Every state is a <g class="state" data-state=ID>,
// so a page can highlight the active configuration by toggling a class; every edge (all the
// transitions between one pair of states, one label line each) is a <g class="edge">, its label
// written against the side of the box that touches the edge. A start marker (a filled dot and its
// arrow, <g class="start" data-to=ID>) points at the machine's initial state and, inside each
// compound state, at the child it enters first.

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

/** The start marker's node in the layout: one per region (the machine, each compound state). */
const START_PREFIX = '__start__:';
const START_SIZE = 12;
const startId = (parent: string | null) => `${START_PREFIX}${parent ?? ''}`;

interface StartMarker {
  id: string;
  edgeId: string;
  /** The compound state it is drawn in (null: the machine). */
  parent: string | null;
  to: string;
}

/** Where each region starts: the machine's initial state, each compound state's initial child. */
export function startMarkers(g: MachineGraph): StartMarker[] {
  const out: StartMarker[] = [];
  const add = (parent: string | null, to: string | null | undefined) => {
    if (to && g.nodes.some((n) => n.id === to)) out.push({ id: startId(parent), edgeId: `s${out.length}`, parent, to });
  };
  add(null, g.initial);
  for (const n of g.nodes) add(n.id, n.initial);
  return out;
}

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
  const starts = startMarkers(g);
  const build = (parent: string | null): ElkNode[] => [
    ...starts.filter((s) => s.parent === parent).map((s) => ({ id: s.id, width: START_SIZE, height: START_SIZE })),
    ...g.nodes
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
      }),
  ];
  const edges: ElkExtendedEdge[] = starts.map((s) => ({ id: s.edgeId, sources: [s.id], targets: [s.to] }));
  edges.push(...edgeGroups(g).map((e) => ({
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
  })));
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
.edge text { font: ${EDGE_FONT}px system-ui, sans-serif; fill: #475569; paint-order: stroke; stroke: #ffffff; stroke-width: 3px; stroke-linejoin: round; }
.edge rect.bg { fill: #ffffff; fill-opacity: 0; }
.start circle { fill: #1f2937; }
.start path { fill: none; stroke: #1f2937; stroke-width: 1.2; }
`;

type Point = { x: number; y: number };

/**
 * How to write a label inside the box the layout gave it, so that the text touches its edge: the
 * box is sized from an estimate of the text's width, and a font narrower than the estimate would
 * otherwise leave the text floating away from the edge. Beside a vertical stretch of the edge the
 * text is aligned against that stretch (right-aligned when the edge is to its right); along a
 * horizontal stretch it is centred.
 */
export function labelPlacement(
  box: { x: number; y: number; width: number; height: number },
  paths: Point[][],
): { anchor: 'start' | 'middle' | 'end'; x: number } {
  let best: [Point, Point] | null = null;
  let bestD = Infinity;
  for (const pts of paths) {
    for (let i = 1; i < pts.length; i++) {
      const a = pts[i - 1]!, b = pts[i]!;
      const dx = Math.max(0, Math.min(a.x, b.x) - (box.x + box.width), box.x - Math.max(a.x, b.x));
      const dy = Math.max(0, Math.min(a.y, b.y) - (box.y + box.height), box.y - Math.max(a.y, b.y));
      const d = Math.hypot(dx, dy);
      if (d < bestD) {
        bestD = d;
        best = [a, b];
      }
    }
  }
  if (!best) return { anchor: 'start', x: box.x + 3 };
  const [a, b] = best;
  if (Math.abs(a.x - b.x) <= Math.abs(a.y - b.y)) {
    // Vertical: the text against the side that faces the edge.
    return a.x >= box.x + box.width / 2 ? { anchor: 'end', x: box.x + box.width - 3 } : { anchor: 'start', x: box.x + 3 };
  }
  return { anchor: 'middle', x: box.x + box.width / 2 };
}

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
  const starts = new Map(startMarkers(g).map((s) => [s.id, s]));
  const startEdges = new Map([...starts.values()].map((s) => [s.edgeId, s]));
  const startNodes = new Map<string, ElkNode>();
  const nodes = (list: ElkNode[] | undefined) => {
    for (const n of list ?? []) {
      if (starts.has(n.id)) {
        startNodes.set(n.id, n);
        continue;
      }
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
    const start = startEdges.get(e.id);
    const dot = start && startNodes.get(start.id);
    if (start && dot) {
      const r = START_SIZE / 2;
      out.push(`<g class="start" data-parent="${esc(start.parent ?? '')}" data-to="${esc(start.to)}">`);
      out.push(`<title>start${start.parent ? ` of ${esc(start.parent)}` : ''}: ${esc(start.to)}</title>`);
      out.push(`<circle cx="${f((dot.x ?? 0) + r)}" cy="${f((dot.y ?? 0) + r)}" r="${r - 1}"/>`);
      for (const s of e.sections ?? []) {
        const pts = [s.startPoint, ...(s.bendPoints ?? []), s.endPoint];
        out.push(`<path d="M${pts.map((p) => `${f(p.x)},${f(p.y)}`).join(' L')}" marker-end="url(#arrow)"/>`);
      }
      out.push('</g>');
      continue;
    }
    const grp = groups.get(e.id);
    if (!grp) continue;
    out.push(`<g class="edge" data-from="${esc(grp.from)}" data-to="${esc(grp.to)}" data-labels="${esc(grp.labels.join('|'))}">`);
    out.push(`<title>${esc(grp.from)} → ${esc(grp.to)}: ${esc(grp.labels.join(' · '))}</title>`);
    const paths = (e.sections ?? []).map((s) => [s.startPoint, ...(s.bendPoints ?? []), s.endPoint]);
    for (const pts of paths) {
      out.push(`<path d="M${pts.map((p) => `${f(p.x)},${f(p.y)}`).join(' L')}" marker-end="url(#arrow)"/>`);
    }
    for (const l of e.labels ?? []) {
      const box = { x: l.x ?? 0, y: l.y ?? 0, width: l.width ?? 0, height: l.height ?? 0 };
      const at = labelPlacement(box, paths);
      out.push(`<rect class="bg" x="${f(box.x)}" y="${f(box.y)}" width="${f(box.width)}" height="${f(box.height)}" rx="2"/>`);
      grp.labels.forEach((line, i) => {
        out.push(`<text x="${f(at.x)}" y="${f(box.y + 10 + i * LINE)}"${at.anchor === 'start' ? '' : ` text-anchor="${at.anchor}"`}>${esc(line)}</text>`);
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
