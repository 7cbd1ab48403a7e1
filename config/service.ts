// One entry of `services`: validation and defaults. Rules that span services (unique names,
// exactly one vmm) are checked by parseConfig, which needs to know which entries it can trust.

import { parseLimits } from './limits.js';
import {
  type Problems, IDENTIFIER_EXPECTED, absolutePath, at, boolean, checkKeys, choice, commandLine, cString,
  expectObject, fail, field, got, list, matching, pathList,
} from './fields.js';
import {
  ALLOWED_CAPABILITIES, CAPABILITIES, MAX_EXEC_BYTES, DEFAULT_STOP_SIGNAL, EXIT_POLICIES, FORBIDDEN_CAPABILITIES, ID_MAX,
  IDENTIFIER_PATTERN, TCP_PORT_MAX, READY_IMMEDIATE, READY_METHODS, SERVICE_KEYS, SERVICE_LANDLOCK_KEYS, STOP_METHODS, STOP_SIGNALS, STORAGE_ACCESS,
  TMPFS_DEFAULT_SIZE, TMPFS_SIZE_PATTERN, canonicalCapability,
} from './rules.js';
import {
  SECUREBIT_NAMES, SECUREBITS, SOCKET_FD_MAX, SOCKET_FD_MIN, SOCKET_KEYS, SOCKET_MODE_DEFAULT, SOCKET_MODE_PATTERN,
  canonicalSecurebit,
} from './rules.js';
import { integer } from './fields.js';
import { SERVICE_SECCOMP_KEYS } from './rules.js';
import { SECCOMP_DENIABLE } from '../plan/seccomp.js';
import type { ReadyCondition, ServiceConfig, SocketConfig, StopMethod } from './types.js';

export interface ParsedService {
  config: ServiceConfig;
  /** False when `vmm` was invalid: then whether this is the vmm is unknown. */
  vmmKnown: boolean;
  /** False when `name` was invalid, so it takes no part in the uniqueness check. */
  nameValid: boolean;
}

const identifierRe = new RegExp(IDENTIFIER_PATTERN);
const tmpfsSizeRe = new RegExp(TMPFS_SIZE_PATTERN);
const envNameRe = /^[^=\0]+$/;

function id(p: Problems, path: string, v: unknown, zeroReason: string): number {
  if (typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= ID_MAX) return v;
  if (v === 0) p.add(path, `must be an integer ≥ 1 (${zeroReason})`);
  else fail(p, path, v, `an integer from 1 to ${ID_MAX}`);
  return 1;
}

const ROOT_UID = 'root is not allowed for services';
const ROOT_GID = "group 0 is root's group and is not allowed for services";

function tmpfs(p: Problems, path: string, v: unknown): false | string {
  if (v === undefined || v === false) return false;
  if (v === true) return TMPFS_DEFAULT_SIZE;
  if (typeof v === 'string' && tmpfsSizeRe.test(v)) return v;
  fail(p, path, v, `true (${TMPFS_DEFAULT_SIZE}), false (none), or a non-zero size like "16M" or "1G" (suffix K, M or G)`);
  return false;
}

function env(p: Problems, path: string, v: unknown): Record<string, string> {
  const obj = expectObject(p, path, v);
  if (!obj) return {};
  const entries = Object.keys(obj).map((name): [string, string] => {
    if (!envNameRe.test(name)) p.add(at(path, name), 'environment variable names must be non-empty and contain no "=" or NUL');
    return [name, cString(p, at(path, name), field(obj, name))];
  });
  // fromEntries defines own properties, so a variable named "__proto__" stays a variable.
  return Object.fromEntries(entries);
}

function landlock(p: Problems, path: string, v: unknown): ServiceConfig['landlock'] {
  const obj = expectObject(p, path, v);
  if (!obj) return { read: [], write: [] };
  checkKeys(p, path, obj, SERVICE_LANDLOCK_KEYS);
  const paths = (key: string) => (field(obj, key) === undefined ? [] : pathList(p, at(path, key), field(obj, key)));
  const out: ServiceConfig['landlock'] = { read: paths('read'), write: paths('write') };
  for (const key of ['bindTcp', 'connectTcp'] as const) {
    const raw = field(obj, key);
    if (raw === undefined) continue;
    out[key] = list(p, at(path, key), raw, 'an array of TCP port numbers', (itemPath, x) => integer(p, itemPath, x, 0, TCP_PORT_MAX));
  }
  return out;
}

function capability(p: Problems, path: string, v: unknown): string {
  if (typeof v !== 'string') {
    fail(p, path, v, 'a capability name like "CAP_DAC_READ_SEARCH"');
    return '';
  }
  const name = canonicalCapability(v);
  const forbidden = Object.hasOwn(FORBIDDEN_CAPABILITIES, name) ? FORBIDDEN_CAPABILITIES[name] : undefined;
  if (forbidden !== undefined) {
    p.add(path, `CAP_${name} is not allowed: ${forbidden}`);
  } else if (!(CAPABILITIES as readonly string[]).includes(name)) {
    const known = ALLOWED_CAPABILITIES.map((c) => `CAP_${c}`).join(', ');
    p.add(path, `unknown capability ${got(v)}; known capabilities are: ${known}`);
  }
  return `CAP_${name}`;
}

function device(p: Problems, path: string, v: unknown): string {
  const before = p.list.length;
  const normal = absolutePath(p, path, v);
  if (p.list.length === before && !normal.startsWith('/dev/')) fail(p, path, v, 'a device path under /dev/');
  return normal;
}

function stop(p: Problems, path: string, v: unknown): StopMethod {
  const fallback: StopMethod = { signal: DEFAULT_STOP_SIGNAL };
  const obj = expectObject(p, path, v);
  if (!obj) return fallback;
  checkKeys(p, path, obj, STOP_METHODS);
  const present = STOP_METHODS.filter((k) => field(obj, k) !== undefined);
  const unknown = Object.keys(obj).length > present.length;
  if (present.length > 1 || (present.length === 0 && !unknown)) {
    p.add(path, `must have exactly one of the keys ${STOP_METHODS.join(', ')} (got ${present.join(', ') || 'none'})`);
  }
  let method: StopMethod = fallback;
  for (const key of present) {
    const value = field(obj, key);
    const keyPath = at(path, key);
    if (key === 'signal') method = { signal: choice(p, keyPath, value, STOP_SIGNALS) };
    else if (key === 'qmp') method = { qmp: absolutePath(p, keyPath, value) };
    else if (key === 'cloudHypervisorApi') method = { cloudHypervisorApi: absolutePath(p, keyPath, value) };
    else method = { command: commandLine(p, keyPath, value) };
  }
  return method;
}

function ready(p: Problems, path: string, v: unknown): ReadyCondition {
  if (v === READY_IMMEDIATE) return READY_IMMEDIATE;
  const expected = `"${READY_IMMEDIATE}" or an object with exactly one of the keys ${READY_METHODS.join(', ')}`;
  if (typeof v === 'string') {
    fail(p, path, v, expected);
    return READY_IMMEDIATE;
  }
  const obj = expectObject(p, path, v);
  if (!obj) return READY_IMMEDIATE;
  checkKeys(p, path, obj, READY_METHODS);
  const present = READY_METHODS.filter((k) => field(obj, k) !== undefined);
  const unknown = Object.keys(obj).length > present.length;
  if (present.length > 1 || (present.length === 0 && !unknown)) {
    p.add(path, `must have exactly one of the keys ${READY_METHODS.join(', ')} (got ${present.join(', ') || 'none'})`);
  }
  let condition: ReadyCondition = READY_IMMEDIATE;
  for (const key of present) {
    const value = absolutePath(p, at(path, key), field(obj, key));
    condition = key === 'socket' ? { socket: value } : { qmp: value };
  }
  return condition;
}

function capabilities(p: Problems, path: string, v: unknown): string[] {
  const names = list(p, path, v, 'an array of capability names', (itemPath, x) => capability(p, itemPath, x));
  return [...new Set(names)];
}

function devices(p: Problems, path: string, v: unknown): string[] {
  return list(p, path, v, 'an array of device paths under /dev/', (itemPath, x) => device(p, itemPath, x));
}

const socketModeRe = new RegExp(SOCKET_MODE_PATTERN);

function socket(p: Problems, path: string, v: unknown, serviceGid: number): SocketConfig {
  const obj = expectObject(p, path, v);
  if (!obj) return { path: '/', fd: SOCKET_FD_MIN, mode: SOCKET_MODE_DEFAULT, gid: serviceGid, clients: [] };
  checkKeys(p, path, obj, SOCKET_KEYS);
  const mode = field(obj, 'mode') === undefined
    ? SOCKET_MODE_DEFAULT
    : matching(p, at(path, 'mode'), field(obj, 'mode'), socketModeRe, 'permission bits as an octal string like "0660"');
  return {
    path: absolutePath(p, at(path, 'path'), field(obj, 'path')),
    fd: integer(p, at(path, 'fd'), field(obj, 'fd'), SOCKET_FD_MIN, SOCKET_FD_MAX),
    mode: mode.length === 3 ? `0${mode}` : mode,
    gid: field(obj, 'gid') === undefined ? serviceGid : id(p, at(path, 'gid'), field(obj, 'gid'), ROOT_GID),
    clients: field(obj, 'clients') === undefined
      ? []
      : list(p, at(path, 'clients'), field(obj, 'clients'), 'an array of service names (the services that may connect)', (itemPath, x) =>
          typeof x === 'string' ? x : (fail(p, itemPath, x, 'a service name'), '')),
  };
}

function sockets(p: Problems, path: string, v: unknown, serviceGid: number): SocketConfig[] {
  const out = list(p, path, v, 'an array of sockets ({"path", "fd", "mode"?, "gid"?, "clients"?})', (itemPath, x) => socket(p, itemPath, x, serviceGid));
  const firstFd = new Map<number, number>();
  out.forEach((s, i) => {
    const first = firstFd.get(s.fd);
    if (first === undefined) firstFd.set(s.fd, i);
    else p.add(`${path}[${i}].fd`, `fd ${s.fd} is already used by ${path}[${first}]`);
  });
  return out;
}

function securebit(p: Problems, path: string, v: unknown): string {
  if (typeof v !== 'string' || !Object.hasOwn(SECUREBITS, canonicalSecurebit(v))) {
    fail(p, path, v, `a securebit name: ${SECUREBIT_NAMES.map((n) => `SECBIT_${n}`).join(', ')}`);
    return '';
  }
  return `SECBIT_${canonicalSecurebit(v)}`;
}

function securebits(p: Problems, path: string, v: unknown): string[] {
  return [...new Set(list(p, path, v, 'an array of securebit names', (itemPath, x) => securebit(p, itemPath, x)))];
}

/** seccomp: { allow: [names] }: each a syscall the default filter denies (plan/seccomp.ts). */
function seccomp(p: Problems, path: string, v: unknown): { allow: string[] } {
  const obj = expectObject(p, path, v);
  if (!obj) return { allow: [] };
  checkKeys(p, path, obj, SERVICE_SECCOMP_KEYS);
  const allowPath = at(path, 'allow');
  const raw = field(obj, 'allow');
  if (raw === undefined) return { allow: [] };
  const names = list(p, allowPath, raw, 'an array of syscall names', (itemPath, x) => {
    if (typeof x === 'string' && SECCOMP_DENIABLE.includes(x)) return x;
    fail(p, itemPath, x, `a syscall the default seccomp filter denies: ${SECCOMP_DENIABLE.join(', ')}`);
    return '';
  });
  return { allow: [...new Set(names.filter((n) => n !== ''))] };
}

function groups(p: Problems, path: string, v: unknown): number[] {
  return list(p, path, v, 'an array of group ids', (itemPath, x) => id(p, itemPath, x, ROOT_GID));
}

export function parseService(p: Problems, path: string, raw: unknown): ParsedService | undefined {
  const obj = expectObject(p, path, raw);
  if (!obj) return undefined;
  checkKeys(p, path, obj, SERVICE_KEYS);
  const get = (key: string) => field(obj, key);
  const optional = <T>(key: string, fallback: T, parse: (p: Problems, path: string, v: unknown) => T): T =>
    get(key) === undefined ? fallback : parse(p, at(path, key), get(key));

  const errorsBefore = p.list.length;
  const name = matching(p, at(path, 'name'), get('name'), identifierRe, IDENTIFIER_EXPECTED);
  const nameValid = p.list.length === errorsBefore;
  const vmmKnown = get('vmm') === undefined || typeof get('vmm') === 'boolean';
  const vmm = optional('vmm', false, boolean);

  const stopMethod = (): StopMethod => {
    if (get('stop') !== undefined && vmmKnown && !vmm) {
      const why = `other services are always stopped with ${DEFAULT_STOP_SIGNAL}`;
      p.add(at(path, 'stop'), `only the vmm service may set "stop" (${why})`);
      return { signal: DEFAULT_STOP_SIGNAL };
    }
    return optional('stop', { signal: DEFAULT_STOP_SIGNAL }, stop);
  };
  const readyCondition = (): ReadyCondition => {
    if (get('ready') !== undefined && vmmKnown && !vmm) {
      p.add(at(path, 'ready'), 'only the vmm service may set "ready" (the VM is ready when its vmm is; the others count as ready once launched)');
      return READY_IMMEDIATE;
    }
    return optional('ready', READY_IMMEDIATE as ReadyCondition, ready);
  };
  const exitPolicy = () => {
    const onExit = optional('onExit', 'stop' as const, (p, fieldPath, v) => choice(p, fieldPath, v, EXIT_POLICIES));
    if (vmm && onExit === 'ignore') p.add(at(path, 'onExit'), 'the vmm cannot use "ignore": the VM ends when its vmm exits');
    return onExit;
  };

  const config: ServiceConfig = {
    name,
    argv: commandLine(p, at(path, 'argv'), get('argv')),
    env: optional('env', {}, env),
    uid: id(p, at(path, 'uid'), get('uid'), ROOT_UID),
    gid: id(p, at(path, 'gid'), get('gid'), ROOT_GID),
    groups: optional('groups', [], groups),
    vmm,
    storage: optional('storage', 'none' as const, (p, fieldPath, v) => choice(p, fieldPath, v, STORAGE_ACCESS)),
    tmp: tmpfs(p, at(path, 'tmp'), get('tmp')),
    shm: tmpfs(p, at(path, 'shm'), get('shm')),
    landlock: optional('landlock', { read: [], write: [] }, landlock),
    limits: optional('limits', {}, parseLimits),
    caps: optional('caps', [], capabilities),
    devices: optional('devices', [], devices),
    sockets: optional('sockets', [], (p2, fieldPath, v) => sockets(p2, fieldPath, v, typeof get('gid') === 'number' ? (get('gid') as number) : 1)),
    securebits: optional('securebits', [], securebits),
    seccomp: optional('seccomp', { allow: [] }, seccomp),
    stop: stopMethod(),
    ready: readyCondition(),
    onExit: exitPolicy(),
  };
  const execBytes =
    config.argv.reduce((n, a) => n + Buffer.byteLength(a) + 1, 0) +
    Object.entries(config.env).reduce((n, [k, v]) => n + Buffer.byteLength(`${k}=${v}`) + 1, 0);
  if (execBytes > MAX_EXEC_BYTES) {
    p.add(at(path, 'argv'), `argv and env together are ${execBytes} bytes, over ${MAX_EXEC_BYTES} (what one request to the sandbox init can carry): shorten them, e.g. move options into a file the program reads`);
  }
  return { config, vmmKnown, nameValid };
}
