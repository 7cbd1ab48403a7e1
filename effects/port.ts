// The effects port: every operation the sandbox machine performs, and the event stream it consumes.
// Two backends implement it: effects/linux (real syscalls) and sim/ (a model kernel).
//
// Contract that both backends honour, because the machine relies on it:
// - Every operation takes an AbortSignal. The machine aborts an operation when it leaves the
//   state that started it (a stop request, parent death or deadline interrupts setup). An aborted
//   operation settles promptly and creates nothing after it settled.
// - Operations are serialized by the backend: a teardown operation (killAll, cleanup) starts only
//   after every earlier operation, aborted or not, has settled. So cleanup never races creation.
// - killAll and cleanup are idempotent and work from what exists, not from what the machine
//   believes it built: they are also what `vmsandbox finish` runs after a SIGKILLed manager.
// - Failures reject with an EffectError carrying the syscall-level reason (errno name).

import type { Observable } from 'rxjs';
import type { StopMethod } from '../config/types.js';
import type { CgroupPlan, DirPlan, NamespacesPlan, PlanResult, SandboxPlan, ServicePlan } from '../plan/types.js';
import type { MountOp } from '../plan/mounts.js';

// Each operation's input is its slice of the plan (plan/types.ts), taken by the machine from its
// context: what the operation does is what the plan says, visible in the machine and its logs.
export interface NamespacesInput {
  cgroup: Pick<CgroupPlan, 'vm' | 'init'>;
  /** The IPC and network namespaces the init gets besides PID + mount, and whether lo is brought up. */
  namespaces: NamespacesPlan;
}
export interface MountInput {
  runtimeDir: string;
  dirs: DirPlan[];
  mounts: MountOp[];
}
export interface LandlockInput {
  landlock: SandboxPlan['landlock'];
  services: ServicePlan[];
}
export interface CgroupsInput {
  cgroup: CgroupPlan;
}
export interface LaunchInput {
  service: ServicePlan;
}
export interface StopInput {
  /** The vmm's name, its uid (its QMP/API socket must be its own) and how to ask it to stop. */
  vmm: string;
  uid: number;
  stop: StopMethod;
}
export interface OthersInput {
  /** The vmm's name: terminateServices signals every other service. */
  vmm: string;
}
/** killAll and cleanup act on the VM's journal (effects/owner.ts), not on the plan. */
export type JournalInput = Record<string, never>;

export interface LaunchResult {
  service: string;
  pid: number;
}

export interface LandlockReport {
  /** ABI the kernel offers (0 = Landlock unavailable). */
  abi: number;
  /** Protections that this kernel cannot enforce and the config allowed to degrade. */
  degraded: string[];
}

export interface SandboxEffects {
  /** Start the sandbox's PID 1 in new PID + mount namespaces, and the IPC/network ones the plan names. */
  createNamespaces(input: NamespacesInput, signal: AbortSignal): Promise<{ initPid: number }>;
  /** Build the sandbox's mount tree (read-only root, /proc, /sys, /dev, runtime dir, storage). */
  mount(input: MountInput, signal: AbortSignal): Promise<void>;
  /** Probe the Landlock ABI and prepare one ruleset per service (enforced at exec). */
  prepareLandlock(input: LandlockInput, signal: AbortSignal): Promise<LandlockReport>;
  /** Create the VM's cgroup and one leaf per service, with limits written. */
  createCgroups(input: CgroupsInput, signal: AbortSignal): Promise<void>;
  /** Launch one service: own uid, mounts, caps, Landlock and cgroup leaf in place before exec. */
  launch(input: LaunchInput, signal: AbortSignal): Promise<LaunchResult>;
  /** Ask the vmm to shut the VM down gracefully (its configured stop method). */
  requestStop(input: StopInput, signal: AbortSignal): Promise<void>;
  /** SIGTERM every live service other than the vmm; resolves when all of them have exited. */
  terminateServices(input: OthersInput, signal: AbortSignal): Promise<void>;
  /** cgroup.kill, SIGKILL the init, and wait until nothing of the VM runs any more. */
  killAll(input: JournalInput, signal: AbortSignal): Promise<void>;
  /** Remove the VM's cgroups and runtime directory (bounded retries). Idempotent. */
  cleanup(input: JournalInput, signal: AbortSignal): Promise<void>;
}

export type KernelEvent =
  | { type: 'SERVICE_EXITED'; service: string; pid: number; code: number | null; signal: string | null; oomKill?: boolean }
  | { type: 'INIT_EXITED'; code: number | null; signal: string | null }
  | { type: 'STOP_REQUESTED'; signal: string; force: boolean }
  | { type: 'PARENT_DIED' };

export interface Backend {
  /**
   * The plan this backend executes (plan/index.ts), from its host's facts: the runner refuses a
   * refused plan before the machine starts, so nothing is created for it.
   */
  plan(): PlanResult;
  effects: SandboxEffects;
  /** Kernel events for this VM: exits reported by the init, the manager's signals, parent death. */
  events$: Observable<KernelEvent>;
}

export class EffectError extends Error {
  constructor(
    readonly op: string,
    readonly errno: string,
    message: string,
  ) {
    super(`${op}: ${errno}: ${message}`);
    this.name = 'EffectError';
  }
}

export function describeError(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
