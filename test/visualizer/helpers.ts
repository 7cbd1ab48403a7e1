// Shared helpers for the visualizer tests: a simulated sandbox publishing on a status socket under a
// temp runtime root, a headless chromium (skipped with a reason when missing), an inspector.

import { existsSync, mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { publishStatus, type StatusPublisher } from '../../visualizer/statusSocket.js';
import { loadConfig } from '../../config/load.js';
import type { VmConfig } from '../../config/types.js';
import type { TransitionRecord } from '../../machines/observe.js';
import { demoPlan } from '../../sim/demoPlan.js';
import type { FaultPlan } from '../../sim/faults.js';
import { simulate } from '../../sim/run.js';

export const repoRoot = join(import.meta.dirname, '..', '..');
export const outDir = join(repoRoot, 'test-output', 'visualizer');
export const CHROMIUM = '/usr/bin/chromium';

export function chromiumSkipReason(): string | null {
  if (!existsSync(CHROMIUM)) return `${CHROMIUM} is missing (apt-get install chromium)`;
  return null;
}

export async function launchChromium(): Promise<Browser> {
  const { chromium } = await import('playwright-core');
  // chromium.launch gives every browser a fresh temporary profile; nothing is downloaded.
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    timeout: 20_000,
  });
}

export function tempRoot(prefix = 'vmsandbox-vis-'): string {
  mkdirSync(outDir, { recursive: true });
  return mkdtempSync(join(tmpdir(), prefix));
}

/** The demo config, its runtime dir moved under `root`. */
export function demoConfig(root: string, name = 'demo'): VmConfig {
  const c = loadConfig(join(repoRoot, 'examples', 'demo.json'));
  return { ...c, name, runtimeDir: join(root, name) };
}

/** The real machine's records over the simulator (virtual times), for the given plan. */
export async function simulatedRecords(config: VmConfig, plan: FaultPlan = demoPlan): Promise<{ r: TransitionRecord; at: number }[]> {
  const out: { r: TransitionRecord; at: number }[] = [];
  const res = await simulate(plan.seed, { config, plan, onRecord: (r, at) => out.push({ r, at }) });
  if (!res.ok) throw new Error(`simulation failed: ${res.violations.join('; ')}`);
  return out;
}

/**
 * A simulated sandbox that a test moves on by hand: its records come from the real machine over the
 * simulator and are published on <root>/<name>/status.sock when the test says so.
 */
export class SimulatedSandbox {
  private i = 0;
  private constructor(
    readonly config: VmConfig,
    readonly status: StatusPublisher,
    private readonly records: { r: TransitionRecord; at: number }[],
  ) {}

  static async start(root: string, name = 'demo', plan: FaultPlan = demoPlan, opts: { cgroupRoot?: string | null } = {}): Promise<SimulatedSandbox> {
    const config = demoConfig(root, name);
    const records = await simulatedRecords(config, plan);
    const status = await publishStatus({ config, cgroupRoot: opts.cgroupRoot ?? null, sampleMs: 200 });
    return new SimulatedSandbox(config, status, records);
  }

  get states(): string[] {
    return this.records.map((x) => x.r.state);
  }

  /** Publish records until (and including) the first one in `state`; returns how many were sent. */
  advanceTo(state: string): number {
    const start = this.i;
    while (this.i < this.records.length) {
      const { r, at } = this.records[this.i++]!;
      this.status.record(r, at);
      if (r.state === state) return this.i - start;
    }
    throw new Error(`no record in state ${state} after position ${start} (states: ${this.states.join(', ')})`);
  }

  next(): TransitionRecord {
    const x = this.records[this.i++];
    if (!x) throw new Error('no more records');
    this.status.record(x.r, x.at);
    return x.r;
  }

  close(): Promise<void> {
    return this.status.close();
  }
}
