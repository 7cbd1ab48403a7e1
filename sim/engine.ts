// A lean interpreter of the sandbox machine, for bulk simulation only.
//
// XState's actor runtime costs about 0.35 ms per lifecycle here (an Actor, a system entry, an
// AbortController and inspection objects per invoked effect), which caps the simulator near
// 2,000 runs/s on one core. This engine walks the same StateNode tree XState built from the same
// config, with the same guard, action and delay implementations, and follows XState v5's
// algorithm step for step where it is observable from outside: which transition is selected
// (innermost first, first passing guard), exit set then transition actions then entry set in
// document order, effects started and timers scheduled after the macrostep in the order XState
// defers them, a child stopped in the same macrostep never started, results of a stopped child
// dropped, one snapshot record per processed event.
//
// It is not a general statechart engine: it refuses, when compiling, any feature the sandbox
// machine does not use (parallel or history states, wildcard events, reentering transitions,
// actions other than assign/raise/cancel, stateIn guards), so a machine change that needs one
// fails loudly instead of being interpreted differently. test/engine.test.ts runs seeds on both
// engines and requires byte-identical traces; `vmsandbox sim` re-runs every failing seed, and
// every 100th, on XState (sim/bulk.ts). The Linux backend and the paths tests use XState itself.

import type { AnyStateMachine, InspectionEvent } from 'xstate';
import type { SandboxEffects } from '../effects/port.js';
import type { VirtualClock } from './clock.js';
import { LeanSignal } from './signal.js';

type Fn = (...args: never[]) => unknown;
interface Transition {
  source: Node;
  target?: Node[];
  actions: unknown[];
  guard?: unknown;
  reenter?: boolean;
}
interface Invoke {
  id: string;
  src: string;
  input?: unknown;
}
interface Node {
  id: string;
  key: string;
  type: string;
  order: number;
  parent?: Node;
  path: string[];
  states: Record<string, Node>;
  entry: unknown[];
  exit: unknown[];
  transitions: Map<string, Transition[]>;
  always?: Transition[];
  invoke: Invoke[];
  initial?: { target: Node[]; actions: unknown[] };
  output?: unknown;
}

interface Child {
  id: string;
  src: string;
  input: unknown;
  state: 'notStarted' | 'active' | 'stopped' | 'settled';
  signal: LeanSignal | null;
}

export interface LeanSnapshot {
  status: 'active' | 'done' | 'error' | 'stopped';
  readonly value: unknown;
  context: Record<string, unknown>;
  output: unknown;
}

export interface LeanOptions {
  input: unknown;
  clock: VirtualClock;
  effects: SandboxEffects;
  inspect?: (ev: InspectionEvent) => void;
}

const checked = new WeakSet<AnyStateMachine>();
const STOPPED = Object.freeze(new Error('stopped by the machine'));

/** Refuse, once per machine, anything this engine does not interpret the way XState does. */
function validate(machine: AnyStateMachine): void {
  if (checked.has(machine)) return;
  const visit = (n: Node) => {
    const where = `state ${n.id}`;
    if (n.type === 'parallel' || n.type === 'history') throw unsupported(`${where}: ${n.type} states`);
    for (const [type, ts] of n.transitions) {
      if (type.includes('*')) throw unsupported(`${where}: wildcard event "${type}"`);
      ts.forEach((t) => validateTransition(machine, t, where));
    }
    (n.always ?? []).forEach((t) => {
      validateTransition(machine, t, where);
      if (!t.target?.length) throw unsupported(`${where}: an eventless transition without a target`);
    });
    for (const a of [...n.entry, ...n.exit]) {
      const type = (a as { type?: string }).type;
      if (type !== 'xstate.raise' && type !== 'xstate.cancel') throw unsupported(`${where}: entry/exit action ${String(type)}`);
    }
    if (n.type === 'compound' && n.initial?.actions.length) throw unsupported(`${where}: initial actions`);
    if (n.type === 'final' && n.output !== undefined && n.parent) throw unsupported(`${where}: a final state's output`);
    for (const inv of n.invoke) if (typeof inv.src !== 'string') throw unsupported(`${where}: inline invoke source`);
    Object.values(n.states).forEach(visit);
  };
  visit(machine.root as unknown as Node);
  checked.add(machine);
}

function validateTransition(machine: AnyStateMachine, t: Transition, where: string): void {
  if (t.reenter) throw unsupported(`${where}: reentering transition`);
  if ((t.target?.length ?? 0) > 1) throw unsupported(`${where}: transition with several targets`);
  const impl = machine.implementations as { actions: Record<string, unknown>; guards: Record<string, unknown> };
  for (const a of t.actions) {
    const resolved = (typeof a === 'function' ? a : impl.actions[typeof a === 'string' ? a : (a as { type: string }).type]) as
      | Record<string, unknown>
      | undefined;
    // Built-in actions carry resolve(); of those only assign, raise and cancel are interpreted here.
    if (resolved && 'resolve' in resolved && !['xstate.assign', 'xstate.raise', 'xstate.cancel'].includes(resolved.type as string)) {
      throw unsupported(`${where}: the built-in action ${String(resolved.type)}`);
    }
  }
  if (t.guard !== undefined) validateGuard(impl.guards, t.guard, where);
}

/** Guards run through XState's own check(); stateIn() would need a full snapshot, so it is refused. */
function validateGuard(guards: Record<string, unknown>, g: unknown, where: string): void {
  const resolved = (typeof g === 'function' ? g : guards[typeof g === 'string' ? g : (g as { type: string }).type]) as
    | (Fn & { stateValue?: unknown; guards?: unknown[] })
    | undefined;
  if (typeof resolved !== 'function') return;
  if ('stateValue' in resolved) throw unsupported(`${where}: the stateIn() guard`);
  // and(), or() and not() keep their operands in .guards.
  for (const inner of resolved.guards ?? []) {
    validateGuard(guards, inner, where);
  }
}

function unsupported(what: string): Error {
  return new Error(`the lean simulation engine does not support ${what}; run with --engine xstate`);
}

function isDescendant(child: Node, parent: Node): boolean {
  for (let n = child.parent; n; n = n.parent) if (n === parent) return true;
  return false;
}

export class LeanActor {
  private readonly root: Node;
  private readonly impl: { actions: Record<string, unknown>; guards: Record<string, unknown>; delays: Record<string, unknown> };
  private readonly opts: LeanOptions;
  private readonly guardSnapshot: { machine: AnyStateMachine };
  private nodes: Node[] = [];
  private context: Record<string, unknown> = {};
  private status: LeanSnapshot['status'] = 'active';
  private output: unknown = undefined;
  private children = new Map<string, Child>();
  private timers = new Map<string, number>();
  private deferred: (() => void)[] = [];
  private mailbox: { type: string }[] = [];
  private processing = false;
  private started = false;
  private changed = false;
  private snapshot: Snapshot | null = null;

  constructor(machine: AnyStateMachine, opts: LeanOptions) {
    validate(machine);
    this.root = machine.root as unknown as Node;
    this.impl = machine.implementations as never;
    this.opts = opts;
    this.guardSnapshot = { machine };
    const init = { type: 'xstate.init', input: opts.input };
    const ctx = (machine.config as { context?: unknown }).context;
    this.context = (typeof ctx === 'function' ? (ctx as Fn)({ input: opts.input } as never) : ctx ?? {}) as Record<string, unknown>;
    // The initial microstep: enter the root and its initial descendants, then settle.
    this.nodes = [];
    const entry = [this.root];
    for (let n = this.root; n.type === 'compound'; n = n.initial!.target[0]!) entry.push(n.initial!.target[0]!);
    const internal: { type: string }[] = [];
    this.enter(entry, init, internal);
    this.settle(init, internal);
  }

  /** Like XState's, a snapshot is immutable: a new one after each change, the same one between. */
  getSnapshot(): LeanSnapshot {
    const s = this.snapshot;
    const atomic = this.atomic();
    if (s && s.status === this.status && s.context === this.context && s.output === this.output && s.atomic === atomic) return s;
    return (this.snapshot = new Snapshot(this.status, this.context, this.output, atomic));
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    // XState starts the initial children first, then runs what the initial step deferred; events
    // sent meanwhile wait in the mailbox until the start is complete.
    this.processing = true;
    try {
      for (const c of this.children.values()) this.startChild(c);
      this.flush();
      this.record({ type: 'xstate.init' });
    } finally {
      this.processing = false;
    }
    this.drainMailbox();
  }

  send(event: { type: string }): void {
    if (this.status !== 'active') return;
    this.mailbox.push(event);
    if (this.started) this.drainMailbox();
  }

  stop(): void {
    if (this.status !== 'active') return;
    this.status = 'stopped';
    this.stopAllChildren();
    this.flush();
    this.cancelAllTimers();
    this.record({ type: 'xstate.stop' });
  }

  private drainMailbox(): void {
    if (this.processing) return;
    this.processing = true;
    try {
      while (this.mailbox.length && this.status === 'active') this.macrostep(this.mailbox.shift()!);
    } finally {
      this.processing = false;
    }
    this.mailbox.length = 0;
  }

  private macrostep(event: { type: string }): void {
    const internal: { type: string }[] = [];
    const t = this.select(event);
    if (!t && event.type.startsWith('xstate.error.actor')) {
      // An unhandled child error puts XState's machine in its error state.
      this.status = 'error';
      this.output = (event as { error?: unknown }).error;
    } else if (t) {
      this.microstep(t, event, internal);
    }
    this.settle(event, internal);
    if (this.status !== 'active') this.stopAllChildren();
    this.flush();
    if (this.status !== 'active') this.cancelAllTimers();
    this.record(event);
  }

  /** Eventless transitions and internal events until nothing more is enabled (XState's loop). */
  private settle(event: { type: string }, internal: { type: string }[]): void {
    let eventless = true;
    let current = event;
    while (this.status === 'active') {
      let t = eventless ? this.selectEventless(current) : null;
      if (!t) {
        const next = internal.shift();
        if (!next) break;
        current = next;
        t = this.select(current);
        this.changed = false;
        if (t) this.microstep(t, current, internal);
        eventless = true;
        continue;
      }
      this.changed = false;
      this.microstep(t, current, internal);
      eventless = this.changed;
    }
  }

  private atomic(): Node {
    return this.nodes[this.nodes.length - 1]!;
  }

  private select(event: { type: string }): Transition | null {
    for (let n: Node | undefined = this.atomic(); n; n = n.parent) {
      const candidates = n.transitions.get(event.type);
      if (!candidates) continue;
      for (const c of candidates) if (c.guard === undefined || this.guard(c.guard, event)) return c;
    }
    return null;
  }

  private selectEventless(event: { type: string }): Transition | null {
    for (let n: Node | undefined = this.atomic(); n; n = n.parent) {
      if (!n.always) continue;
      for (const c of n.always) if (c.guard === undefined || this.guard(c.guard, event)) return c;
    }
    return null;
  }

  private guard(guard: unknown, event: { type: string }): boolean {
    const args = { context: this.context, event };
    const inline = typeof guard === 'function';
    const resolved = (inline ? guard : this.impl.guards[typeof guard === 'string' ? guard : (guard as { type: string }).type]) as
      | (Fn & { check?: Fn })
      | undefined;
    if (!resolved) throw new Error(`Guard '${String(typeof guard === 'string' ? guard : (guard as { type?: string }).type)}' is not implemented.`);
    if (typeof resolved !== 'function') return this.guard(resolved, event);
    if (resolved.check) return resolved.check(this.guardSnapshot as never, args as never, resolved as never) as boolean;
    const params = inline || typeof guard === 'string' ? undefined : resolveParams(guard, args);
    return (resolved as Fn)(args as never, params as never) as boolean;
  }

  private microstep(t: Transition, event: { type: string }, internal: { type: string }[]): void {
    const target = t.target?.[0];
    let domain: Node | null = null;
    if (target) {
      domain = target === t.source || isDescendant(target, t.source) ? t.source : null;
      // Otherwise the nearest proper ancestor of the target that contains the source (XState's LCCA).
      if (!domain) for (let a = target.parent; a && !domain; a = a.parent) if (isDescendant(t.source, a)) domain = a;
      domain ??= this.root;
      // The active nodes are one path from the root, so the exit set (the domain's active
      // descendants, deepest first) is the path's tail after the domain, walked backwards.
      const keep = this.nodes.indexOf(domain) + 1;
      while (this.nodes.length > keep) {
        const s = this.nodes[this.nodes.length - 1]!;
        this.runActions(s.exit, event, internal);
        for (const inv of s.invoke) this.stopChild(inv.id);
        this.nodes.pop();
        this.changed = true;
      }
    }
    this.runActions(t.actions, event, internal);
    if (target) {
      const entry: Node[] = [];
      for (let a: Node | undefined = target; a && a !== domain; a = a.parent) entry.unshift(a);
      for (let n = target; n.type === 'compound'; n = n.initial!.target[0]!) entry.push(n.initial!.target[0]!);
      this.enter(entry, event, internal);
    }
  }

  private enter(entry: Node[], event: { type: string }, internal: { type: string }[]): void {
    for (const s of entry) {
      this.nodes.push(s);
      this.changed = true;
      this.runActions(s.entry, event, internal);
      for (const inv of s.invoke) this.spawn(inv, event);
      if (s.type !== 'final') continue;
      const parent = s.parent!;
      internal.push({ type: `xstate.done.state.${parent.id}`, output: undefined } as { type: string });
      if (parent.parent) continue;
      this.status = 'done';
      const rootOutput = this.root.output as Fn | undefined;
      if (rootOutput !== undefined) {
        const doneEvent = { type: `xstate.done.state.${s.id}`, output: undefined };
        this.output = typeof rootOutput === 'function' ? rootOutput({ context: this.context, event: doneEvent } as never) : rootOutput;
      }
      const rest = [...this.nodes].sort((a, b) => b.order - a.order);
      for (const n of rest) this.runActions(n.exit, event, internal);
    }
  }

  private runActions(actions: unknown[], event: { type: string }, internal: { type: string }[]): void {
    for (const action of actions) {
      const inline = typeof action === 'function';
      const resolved = (inline ? action : this.impl.actions[typeof action === 'string' ? action : (action as { type: string }).type]) as
        | (Fn & Record<string, unknown>)
        | undefined;
      const args = { context: this.context, event };
      const params = inline || typeof action === 'string' ? undefined : resolveParams(action, args);
      if (!resolved) continue; // XState runs an unimplemented action as a no-op too
      switch (resolved.type) {
        case 'xstate.assign': {
          const assignment = resolved.assignment as Fn | Record<string, unknown>;
          let partial: Record<string, unknown>;
          if (typeof assignment === 'function') partial = assignment(args as never, params as never) as Record<string, unknown>;
          else {
            partial = {};
            for (const key of Object.keys(assignment)) {
              const v = assignment[key];
              partial[key] = typeof v === 'function' ? (v as Fn)(args as never, params as never) : v;
            }
          }
          this.context = Object.assign({}, this.context, partial);
          this.changed = true;
          break;
        }
        case 'xstate.raise': {
          const ev = (typeof resolved.event === 'function' ? (resolved.event as Fn)(args as never, params as never) : resolved.event) as { type: string };
          const d = resolved.delay;
          const named = typeof d === 'string' ? this.impl.delays[d] : d;
          const delay = typeof named === 'function' ? (named as Fn)(args as never, params as never) : named;
          if (typeof delay !== 'number') internal.push(ev);
          else this.defer(() => this.schedule(resolved.id as string, ev, delay));
          break;
        }
        case 'xstate.cancel': {
          const id = (typeof resolved.sendId === 'function' ? (resolved.sendId as Fn)(args as never, params as never) : resolved.sendId) as string;
          this.defer(() => this.cancel(id));
          break;
        }
        default:
          if ('resolve' in resolved) throw unsupported(`the built-in action ${String(resolved.type)}`);
          // A custom action: XState runs it at once when started, deferred during the initial step.
          if (this.started) resolved(args as never, params as never);
          else this.defer(() => resolved(args as never, params as never));
      }
    }
  }

  private defer(fn: () => void): void {
    this.deferred.push(fn);
  }

  private flush(): void {
    for (let fn = this.deferred.shift(); fn; fn = this.deferred.shift()) fn();
  }

  private spawn(inv: Invoke, event: { type: string }): void {
    const input = typeof inv.input === 'function' ? (inv.input as Fn)({ context: this.context, event } as never) : inv.input;
    const child: Child = { id: inv.id, src: inv.src, input, state: 'notStarted', signal: null };
    this.children.set(inv.id, child);
    this.changed = true;
    if (this.started) this.defer(() => this.startChild(child));
  }

  private startChild(child: Child): void {
    if (child.state !== 'notStarted') return;
    const op = this.opts.effects[child.src as keyof SandboxEffects] as ((i: unknown, s: AbortSignal) => Promise<unknown>) | undefined;
    if (!op) throw new Error(`effect ${child.src} was not provided by the backend`);
    child.state = 'active';
    child.signal = new LeanSignal();
    Promise.resolve(op(child.input, child.signal.asAbortSignal())).then(
      (output) => {
        if (child.state !== 'active') return;
        child.state = 'settled';
        this.send({ type: `xstate.done.actor.${child.id}`, output, actorId: child.id } as { type: string });
      },
      (error: unknown) => {
        if (child.state !== 'active') return;
        child.state = 'settled';
        this.send({ type: `xstate.error.actor.${child.id}`, error, actorId: child.id } as { type: string });
      },
    );
  }

  private stopChild(id: string): void {
    const child = this.children.get(id);
    this.changed = true;
    if (!child) return;
    this.children.delete(id);
    // Never started (exited in the same macrostep it was entered): it never will be.
    if (child.state === 'notStarted') {
      child.state = 'stopped';
      return;
    }
    this.defer(() => {
      if (child.state !== 'active') return;
      child.state = 'stopped';
      child.signal!.abort(STOPPED);
    });
  }

  private stopAllChildren(): void {
    for (const id of [...this.children.keys()]) this.stopChild(id);
  }

  private schedule(id: string, event: { type: string }, delay: number): void {
    this.timers.set(
      id,
      this.opts.clock.setTimeout(() => {
        this.timers.delete(id);
        this.send(event);
      }, delay),
    );
  }

  private cancel(id: string): void {
    const timer = this.timers.get(id);
    this.timers.delete(id);
    if (timer !== undefined) this.opts.clock.clearTimeout(timer);
  }

  private cancelAllTimers(): void {
    for (const id of [...this.timers.keys()]) this.cancel(id);
  }

  private record(event: { type: string }): void {
    if (!this.opts.inspect) return;
    this.opts.inspect({
      type: '@xstate.snapshot',
      rootId: 'lean',
      actorRef: { sessionId: 'lean' },
      event,
      snapshot: this.getSnapshot(),
    } as unknown as InspectionEvent);
  }
}

class Snapshot implements LeanSnapshot {
  constructor(
    readonly status: LeanSnapshot['status'],
    readonly context: Record<string, unknown>,
    readonly output: unknown,
    readonly atomic: Node,
  ) {}

  /** XState's state value: "running", or { setup: "mount" } for a nested state. */
  get value(): unknown {
    const path = this.atomic.path;
    let v: unknown = path[path.length - 1];
    for (let i = path.length - 2; i >= 0; i--) v = { [path[i]!]: v };
    return v;
  }
}

function resolveParams(ref: unknown, args: { context: unknown; event: unknown }): unknown {
  if (typeof ref !== 'object' || ref === null || !('params' in ref)) return undefined;
  const p = (ref as { params: unknown }).params;
  return typeof p === 'function' ? (p as Fn)(args as never) : p;
}
