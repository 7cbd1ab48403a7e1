// Config v1 loader: raw JSON in, a validated VmConfig with every default filled in out.
// It reports every problem it finds in one go, each as "<field path>: <what is wrong>", because
// an operator fixing a config one error per run would be fixing it all afternoon.

import { readFileSync } from 'node:fs';
import { findJsonSyntaxError } from './jsonSyntax.js';
import { parseLimits } from './limits.js';
import {
  type Obj, Problems, IDENTIFIER_EXPECTED, at, boolean, checkKeys, expectObject, fail, field, index, integer,
  matching, ownDirectory,
} from './fields.js';
import {
  CGROUP_KEYS, CGROUP_PARENT_DEFAULT, CGROUP_PARENT_PATTERN, IDENTIFIER_PATTERN, LANDLOCK_ABI_DEFAULT,
  LANDLOCK_ABI_MAX, LANDLOCK_ABI_MIN, NETWORK_DEFAULT, NETWORK_MODES, TIMEOUT_DEFAULTS, TIMEOUT_KEYS, TIMEOUT_MAX_MS, TIMEOUT_MINIMUMS, TOP_KEYS,
  VM_LANDLOCK_KEYS, runtimeDirDefault, KERNEL_FS_PATTERN,
} from './rules.js';
import { type ParsedService, parseService } from './service.js';
import type { ServiceConfig, VmConfig } from './types.js';

export class ConfigError extends Error {
  /** Each "<field path>: <problem>"; for file-level problems (unreadable, not JSON) just the problem. */
  readonly problems: string[];
  /** The file the config came from, when loaded by loadConfig; it prefixes every line of message. */
  readonly file: string | undefined;

  constructor(problems: string[], file?: string) {
    super(problems.map((problem) => (file === undefined ? problem : `${file}: ${problem}`)).join('\n'));
    this.name = 'ConfigError';
    this.problems = problems;
    this.file = file;
  }
}

const identifierRe = new RegExp(IDENTIFIER_PATTERN);
const cgroupParentRe = new RegExp(CGROUP_PARENT_PATTERN);

function section(p: Problems, obj: Obj, key: string, keys: readonly string[]): Obj {
  const v = field(obj, key);
  if (v === undefined) return {};
  const section = expectObject(p, key, v);
  if (section) checkKeys(p, key, section, keys);
  return section ?? {};
}

function timeouts(p: Problems, obj: Obj): VmConfig['timeouts'] {
  const raw = section(p, obj, 'timeouts', TIMEOUT_KEYS);
  const one = (key: keyof typeof TIMEOUT_DEFAULTS) => {
    const v = field(raw, key);
    if (v === undefined) return TIMEOUT_DEFAULTS[key];
    return integer(p, at('timeouts', key), v, TIMEOUT_MINIMUMS[key], TIMEOUT_MAX_MS);
  };
  return { setupMs: one('setupMs'), stopMs: one('stopMs'), killMs: one('killMs') };
}

function cgroup(p: Problems, obj: Obj): VmConfig['cgroup'] {
  const raw = section(p, obj, 'cgroup', CGROUP_KEYS);
  const parent = field(raw, 'parent');
  const limits = field(raw, 'limits');
  const limitsOptional = field(raw, 'limitsOptional');
  return {
    parent:
      parent === undefined
        ? CGROUP_PARENT_DEFAULT
        : matching(p, 'cgroup.parent', parent, cgroupParentRe,
          'a relative cgroup path like "vmsandbox" or "machines/vms": segments of letters, digits, ' +
          "'_', '@', '.' and '-' (not starting with '.') separated by '/'"),
    limits: limits === undefined ? {} : parseLimits(p, 'cgroup.limits', limits),
    limitsOptional: limitsOptional === undefined ? false : boolean(p, 'cgroup.limitsOptional', limitsOptional),
  };
}

function landlock(p: Problems, obj: Obj): VmConfig['landlock'] {
  const raw = section(p, obj, 'landlock', VM_LANDLOCK_KEYS);
  const minAbi = field(raw, 'minAbi');
  const allowDegraded = field(raw, 'allowDegraded');
  return {
    minAbi:
      minAbi === undefined ? LANDLOCK_ABI_DEFAULT : integer(p, 'landlock.minAbi', minAbi, LANDLOCK_ABI_MIN, LANDLOCK_ABI_MAX),
    allowDegraded: allowDegraded === undefined ? false : boolean(p, 'landlock.allowDegraded', allowDegraded),
  };
}

function network(p: Problems, obj: Obj): NonNullable<VmConfig['network']> {
  const v = field(obj, 'network');
  if (v === undefined) return NETWORK_DEFAULT;
  if (typeof v === 'string' && (NETWORK_MODES as readonly string[]).includes(v)) return v as NonNullable<VmConfig['network']>;
  fail(
    p,
    'network',
    v,
    '"none" (the VM\'s own network namespace, loopback only: the default) or "host" (the host\'s network namespace: ' +
      'its interfaces, its loopback services, other VMs\' listeners; docs/config.md)',
  );
  return NETWORK_DEFAULT;
}

function uniqueNames(p: Problems, parsed: (ParsedService | undefined)[]): void {
  const firstIndex = new Map<string, number>();
  parsed.forEach((s, i) => {
    if (!s?.nameValid) return;
    const first = firstIndex.get(s.config.name);
    if (first === undefined) firstIndex.set(s.config.name, i);
    else p.add(`services[${i}].name`, `duplicate name ${JSON.stringify(s.config.name)} (also used by services[${first}])`);
  });
}

function exactlyOneVmm(p: Problems, parsed: (ParsedService | undefined)[]): void {
  // With an entry unreadable or its vmm flag invalid, a count would only add a confusing problem.
  if (!parsed.every((s) => s?.vmmKnown)) return;
  const vmms = parsed.flatMap((s, i) => (s?.config.vmm ? [`services[${i}] ${JSON.stringify(s.config.name)}`] : []));
  if (vmms.length === 0) p.add('services', 'exactly one service must have "vmm": true (found none)');
  if (vmms.length > 1) {
    p.add('services', `exactly one service must have "vmm": true (found ${vmms.length}: ${vmms.join(', ')})`);
  }
}

/** A granted device becomes a node owned by its service: two services cannot both own it. */
function devicesOwnedOnce(p: Problems, parsed: (ParsedService | undefined)[]): void {
  const owner = new Map<string, number>();
  parsed.forEach((s, i) => {
    s?.config.devices.forEach((d, j) => {
      const first = owner.get(d);
      if (first === undefined) owner.set(d, i);
      else if (first !== i) p.add(`services[${i}].devices[${j}]`, `${d} is already granted to services[${first}]: a device node belongs to one service`);
    });
  });
}

/**
 * Handed-over sockets live in the runtime dir (which exists while the VM runs): directly in it (no
 * service can write there) or in the service's own directory there. Not in another service's: that
 * service could replace the socket with its own and take its clients. Paths are unique across the VM.
 * Its clients are other services of the VM: only they see it (plan/service.ts, the service's view).
 */
function socketPlaces(p: Problems, runtimeDir: string, services: ServiceConfig[]): void {
  const seen = new Map<string, string>();
  services.forEach((s, i) => {
    const own = `${runtimeDir}/${s.name}`;
    (s.sockets ?? []).forEach((sock, j) => {
      const path = `services[${i}].sockets[${j}].path`;
      const parent = sock.path.slice(0, sock.path.lastIndexOf('/'));
      if (parent !== runtimeDir && parent !== own) {
        const other = services.find((x) => parent === `${runtimeDir}/${x.name}`);
        p.add(
          path,
          other
            ? `${sock.path} is in ${other.name}'s directory, which ${other.name} can write: it could replace the socket. Put it in ${own}/ or directly in ${runtimeDir}/`
            : `must be a file directly in the runtime dir ${runtimeDir} or in ${s.name}'s own directory ${own}/ (got ${JSON.stringify(sock.path)})`,
        );
      }
      const first = seen.get(sock.path);
      if (first !== undefined) p.add(path, `${sock.path} is already used by ${first}`);
      else seen.set(sock.path, path);
      (sock.clients ?? []).forEach((c, k) => {
        const at = `services[${i}].sockets[${j}].clients[${k}]`;
        if ((sock.clients ?? []).indexOf(c) < k) p.add(at, `${c} is listed twice`);
        else if (c === s.name) p.add(at, `${c} owns the socket (it holds it at fd ${sock.fd}): list the services that connect to it`);
        else if (!services.some((x) => x.name === c)) p.add(at, `no service of this VM is named ${JSON.stringify(c)} (services: ${services.map((x) => x.name).join(', ')})`);
      });
    });
  });
}


function under(path: string, dir: string): boolean {
  return path === dir || path.startsWith(`${dir}/`);
}

/**
 * Where storage and the runtime dir may be: apart (run removes the runtime dir at stop, so storage
 * inside it would be deleted; a runtime dir inside storage would be writable by a service with
 * storage rw), and not in a kernel filesystem (`/proc/self/root` is the host's root). What only the
 * host can tell (symlinks, who can write the parents) is `vmsandbox check`'s (hostCheck.ts).
 */
function placement(p: Problems, config: VmConfig): void {
  const { storage, runtimeDir } = config;
  if (under(storage, runtimeDir)) p.add('storage', `${storage} is inside the runtime dir ${runtimeDir}, which run removes when the VM stops: put the storage elsewhere (e.g. /var/lib/vmsandbox/${config.name})`);
  else if (under(runtimeDir, storage)) p.add('runtimeDir', `${runtimeDir} is inside the storage ${storage}, which a service with storage "rw" can write: use the default /run/vmsandbox/${config.name}`);
  for (const [field, path] of [['storage', storage], ['runtimeDir', runtimeDir]] as const) {
    const k = new RegExp(KERNEL_FS_PATTERN).exec(path)?.[0]?.replace(/\/$/, '');
    if (k) p.add(field, `${path} is in ${k}, a kernel filesystem (${k === '/proc' ? '/proc/self/root is the host\'s root' : 'not a place for a VM\'s files'}): use a directory on a real filesystem`);
  }
}

function services(p: Problems, obj: Obj): ServiceConfig[] {
  const raw = field(obj, 'services');
  if (!Array.isArray(raw) || raw.length === 0) {
    fail(p, 'services', raw, 'a non-empty array of services');
    return [];
  }
  const parsed = raw.map((s, i) => parseService(p, index('services', i), s));
  uniqueNames(p, parsed);
  exactlyOneVmm(p, parsed);
  devicesOwnedOnce(p, parsed);
  return parsed.flatMap((s) => (s ? [s.config] : []));
}

/** Validate a raw (JSON-parsed) config and fill in defaults. Throws ConfigError listing every problem. */
export function parseConfig(raw: unknown): VmConfig {
  const p = new Problems();
  const obj = expectObject(p, '', raw);
  if (!obj) throw new ConfigError(p.list);
  checkKeys(p, '', obj, TOP_KEYS);
  const name = matching(p, 'name', field(obj, 'name'), identifierRe, IDENTIFIER_EXPECTED);
  const runtimeDir = field(obj, 'runtimeDir');
  const config: VmConfig = {
    name,
    storage: ownDirectory(p, 'storage', field(obj, 'storage')),
    runtimeDir: runtimeDir === undefined ? runtimeDirDefault(name) : ownDirectory(p, 'runtimeDir', runtimeDir),
    timeouts: timeouts(p, obj),
    cgroup: cgroup(p, obj),
    landlock: landlock(p, obj),
    network: network(p, obj),
    services: services(p, obj),
  };
  if (p.list.length === 0) {
    placement(p, config);
    socketPlaces(p, config.runtimeDir, config.services);
  }
  if (p.list.length > 0) throw new ConfigError(p.list);
  return config;
}

/** Read, parse and validate a config file. Every failure is a ConfigError naming the file. */
export function loadConfig(path: string): VmConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    // Node appends the syscall (", open '<path>'") to the errno text; the path already prefixes the problem.
    throw new ConfigError([`cannot read the file (${(error as Error).message.replace(/, \w+(?: '.*')?$/s, '')})`], path);
  }
  // Editors on some systems save a byte-order mark; it is not JSON, but it is not a mistake either.
  if (text.startsWith('\uFEFF')) text = text.slice(1);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    const syntax = findJsonSyntaxError(text);
    const problem = syntax
      ? `invalid JSON at line ${syntax.line}, column ${syntax.column}: ${syntax.message}`
      : `invalid JSON: ${(error as Error).message}`;
    throw new ConfigError([problem], path);
  }
  try {
    return parseConfig(raw);
  } catch (error) {
    if (error instanceof ConfigError) throw new ConfigError(error.problems, path);
    throw error;
  }
}
