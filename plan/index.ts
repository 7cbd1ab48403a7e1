// planSandbox: config + host facts → every operation of a sandbox's setup, or every refusal.
// One rule, one place: `check` reports these refusals, `run` refuses exactly these before it
// creates anything, and both backends (effects/linux, sim/) execute the plan's operations.
// Pure: no I/O; the host facts are probed by the caller (effects/linux/hostFacts.ts, the
// simulator's kernel).

import type { ServiceConfig, VmConfig } from '../config/types.js';
import { networkOf, readyOf, vmmOf } from '../config/types.js';
import { planCgroups } from './cgroup.js';
import { planLandlockAbi } from './landlock.js';
import { planMounts } from './mounts.js';
import { planService, serviceRuntimeDir } from './service.js';
import type { HostFacts, NamespacesPlan, PlanResult, Refusal, SandboxPlan } from './types.js';

/** The services whose handed-over sockets `service` is a client of. */
function socketOwners(config: VmConfig, service: ServiceConfig): ServiceConfig[] {
  return config.services.filter((o) => o !== service && (o.sockets ?? []).some((k) => (k.clients ?? []).includes(service.name)));
}

/**
 * Launch order: the other services in config order, the vmm last (it connects to their sockets),
 * and every service after the owners of the sockets it is a client of (a socket is bound when its
 * owner is launched, and placed in a client's view when the client is). A cycle is refused by
 * planSandbox; here its services keep the preferred order.
 */
export function launchOrder(config: VmConfig): ServiceConfig[] {
  const preferred = [...config.services.filter((s) => !s.vmm), ...config.services.filter((s) => s.vmm)];
  const order: ServiceConfig[] = [];
  while (order.length < preferred.length) {
    const next = preferred.find((s) => !order.includes(s) && socketOwners(config, s).every((o) => order.includes(o)));
    if (!next) return [...order, ...preferred.filter((s) => !order.includes(s))];
    order.push(next);
  }
  return order;
}

/**
 * A VM's IPC namespace is always its own (nothing in a VMM or virtiofsd needs the host's SysV IPC);
 * its network namespace is its own, with loopback up, unless the config asks for the host's.
 */
export function planNamespaces(config: VmConfig): NamespacesPlan {
  const net = networkOf(config) === 'none';
  return { clone: net ? ['ipc', 'net'] : ['ipc'], loopback: net };
}

export function planSandbox(config: VmConfig, facts: HostFacts): PlanResult {
  const refusals: Refusal[] = [];
  const refuse = (field: string, message: string) => void refusals.push({ field, message });
  const ll = planLandlockAbi(config, facts.landlockAbi);
  if ('field' in ll) refusals.push(ll);
  const abi = 'field' in ll ? facts.landlockAbi : ll.abi;
  // Sharing the host's network is safe only with Landlock's TCP control (ABI 4): refused below it
  // unless degrading is allowed (then TCP is open to the host's network, as the uid allows).
  if (networkOf(config) === 'host' && facts.landlockAbi < 4 && !config.landlock.allowDegraded) {
    refuse('network', `"host" shares the host's network, and this kernel's Landlock ABI ${facts.landlockAbi} cannot restrict TCP bind/connect (ABI 4): use network "none", a newer kernel, or set landlock.allowDegraded`);
  }
  const vmm = config.services.filter((s) => s.vmm);
  if (vmm.length !== 1) refuse('services', `exactly one service must be the vmm (vmm: true), found ${vmm.length}`);
  const mounts = planMounts(config, refuse);
  const cgroup = planCgroups(config, facts, refuse);
  const order = launchOrder(config);
  order.forEach((s, k) => {
    const late = socketOwners(config, s).filter((o) => order.indexOf(o) > k);
    if (late.length) refuse(`services[${config.services.indexOf(s)}]`, `${s.name} is a client of a socket of ${late.map((o) => o.name).join(', ')}, which waits (through the clients of its own sockets) for ${s.name}: a socket is bound when its owner starts, so who connects to whom cannot form a cycle`);
  });
  const services = order.map((s) => planService(config, s, config.services.indexOf(s), abi, refuse));
  if (refusals.length) return { ok: false, refusals };
  const plan: SandboxPlan = {
    vm: config.name,
    runtimeDir: config.runtimeDir,
    namespaces: planNamespaces(config),
    // Each service's directory is its own (0700): another service of the VM neither lists it nor
    // reaches a socket in it; sockets shared with others are handed over in the runtime dir itself.
    dirs: config.services.map((s) => ({ path: serviceRuntimeDir(config, s), mode: 0o700, uid: s.uid, gid: s.gid })),
    mounts,
    landlock: 'field' in ll ? { abi, degraded: [] } : ll,
    cgroup,
    services,
    stop: vmmOf(config).stop,
    ready: readyOf(vmmOf(config)),
  };
  return { ok: true, plan };
}

/** The plan, or an Error listing every refusal (for callers that already checked, e.g. tests). */
export function mustPlan(config: VmConfig, facts: HostFacts): SandboxPlan {
  const r = planSandbox(config, facts);
  if (r.ok) return r.plan;
  throw new PlanRefused(config.name, r.refusals);
}

export class PlanRefused extends Error {
  constructor(
    readonly vm: string,
    readonly refusals: Refusal[],
  ) {
    super(`vm ${vm}: this host cannot enforce the config: ${refusals.map((r) => `${r.field}: ${r.message}`).join('; ')}`);
    this.name = 'PlanRefused';
  }
}

export type { HostFacts, NamespacesPlan, PlanResult, Refusal, SandboxPlan } from './types.js';
