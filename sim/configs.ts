// The VM configs simulated runs use: drawn from the seed so that thousands of runs cover
// different service counts, stop methods, exit policies, deadlines and Landlock/cgroup options.

import type { ServiceConfig, StopMethod, VmConfig } from '../config/types.js';
import { Prng } from './prng.js';

function service(name: string, uid: number, extra: Partial<ServiceConfig>): ServiceConfig {
  return {
    name, argv: [`/usr/bin/${name}`], env: {}, uid, gid: uid, groups: [], vmm: false, storage: 'none',
    tmp: false, shm: false, landlock: { read: ['/usr', '/lib'], write: [] }, limits: {}, caps: [],
    devices: [], stop: { signal: 'SIGTERM' }, onExit: 'stop', ...extra,
  };
}

export function configFromSeed(seed: number): VmConfig {
  const r = new Prng(seed ^ 0xc0ff1e);
  const name = 'sim';
  const runtimeDir = `/run/vmsandbox/${name}`;
  const stops: StopMethod[] = [{ signal: 'SIGTERM' }, { signal: 'SIGUSR1' }, { qmp: `${runtimeDir}/qmp.sock` }, { cloudHypervisorApi: `${runtimeDir}/ch.sock` }];
  const services: ServiceConfig[] = [];
  if (r.chance(0.8)) {
    services.push(service('virtiofsd', 62001, { storage: 'rw', tmp: '64M', shm: '64M', caps: ['CAP_DAC_READ_SEARCH'], limits: r.chance(0.5) ? { 'memory.max': '256M' } : {} }));
  }
  if (r.chance(0.3)) services.push(service('gpu', 62003, { onExit: r.pick(['stop', 'ignore'] as const) }));
  services.push(service('vmm', 62002, { vmm: true, stop: r.pick(stops), devices: ['/dev/kvm'], tmp: r.chance(0.5) ? '16M' : false }));
  return {
    name,
    storage: '/var/lib/vms/sim',
    runtimeDir,
    timeouts: { setupMs: r.pick([2000, 5000, 30000]), stopMs: r.pick([500, 2000, 10000]), killMs: r.pick([200, 2000]) },
    cgroup: { parent: 'vmsandbox', limits: r.chance(0.5) ? { 'pids.max': 512 } : {}, limitsOptional: r.chance(0.3) },
    landlock: { minAbi: r.pick([1, 6]), allowDegraded: r.chance(0.3) },
    services,
  };
}
