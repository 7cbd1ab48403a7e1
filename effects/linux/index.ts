export { createLinuxBackend } from './backend.js';
export type { LinuxBackend, LinuxBackendOptions, ServiceState } from './backend.js';
export { findCgroup2Mount, vmCgroupDir } from './cgroup.js';
export { spawnFields } from './spawnRequest.js';
