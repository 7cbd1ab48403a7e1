// Virtual time for a simulation run: one queue for the machine's timers (it is the actor's xstate
// Clock) and for everything the model kernel schedules. Ties break by insertion order, so a run is
// a pure function of its seed.

interface Entry {
  at: number;
  seq: number;
  fn: () => void;
  cancelled: boolean;
}

export class VirtualClock {
  private heap: Entry[] = [];
  private byId = new Map<number, Entry>();
  private seq = 0;
  private current = 0;

  now(): number {
    return this.current;
  }

  /** xstate Clock interface. */
  setTimeout(fn: (...args: unknown[]) => void, timeout: number): number {
    return this.schedule(timeout, fn);
  }

  clearTimeout(id: unknown): void {
    const e = this.byId.get(id as number);
    if (e) {
      e.cancelled = true;
      this.byId.delete(id as number);
    }
  }

  schedule(delay: number, fn: () => void): number {
    const id = this.seq++;
    const e: Entry = { at: this.current + Math.max(0, delay), seq: id, fn, cancelled: false };
    this.byId.set(id, e);
    this.push(e);
    return id;
  }

  /** Time of the next live entry, or null when nothing is scheduled. */
  peek(): number | null {
    while (this.heap.length && this.heap[0]!.cancelled) this.pop();
    return this.heap.length ? this.heap[0]!.at : null;
  }

  /** Advance to the next entry and run it. Returns false when nothing is scheduled. */
  step(): boolean {
    if (this.peek() === null) return false;
    const e = this.pop()!;
    this.byId.delete(e.seq);
    this.current = e.at;
    e.fn();
    return true;
  }

  private less(a: Entry, b: Entry): boolean {
    return a.at < b.at || (a.at === b.at && a.seq < b.seq);
  }

  private push(e: Entry): void {
    const h = this.heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(h[i]!, h[p]!)) break;
      [h[i], h[p]] = [h[p]!, h[i]!];
      i = p;
    }
  }

  private pop(): Entry | undefined {
    const h = this.heap;
    const top = h[0];
    const last = h.pop();
    if (h.length && last) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && this.less(h[l]!, h[m]!)) m = l;
        if (r < h.length && this.less(h[r]!, h[m]!)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m]!, h[i]!];
        i = m;
      }
    }
    return top;
  }
}
