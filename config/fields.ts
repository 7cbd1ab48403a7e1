// Building blocks of the config loader: the problem list, field paths, and validators for the
// value kinds that recur (identifiers, absolute paths, bounded integers, enums, lists).
//
// Validators record a problem and return a fallback instead of throwing, so one pass reports
// every problem; parseConfig throws when the list is non-empty, so fallbacks never escape.

import { posix } from 'node:path';

export type Obj = Record<string, unknown>;

export class Problems {
  readonly list: string[] = [];

  add(path: string, message: string): void {
    this.list.push(`${path === '' ? '(root)' : path}: ${message}`);
  }
}

const plainKey = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

/** Field path of `key` in the object at `path`: `cgroup.parent`, `cgroup.limits["memory.max"]`. */
export function at(path: string, key: string): string {
  if (!plainKey.test(key)) return `${path}[${JSON.stringify(key)}]`;
  return path === '' ? key : `${path}.${key}`;
}

export function index(path: string, i: number): string {
  return `${path}[${i}]`;
}

function show(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return 'an object';
  if (typeof v !== 'string') return String(v);
  const s = JSON.stringify(v);
  return s.length > 60 ? `${s.slice(0, 56)}..."` : s;
}

/** "(got ...)": the offending value, short and on one line (strings are JSON-escaped). */
export function got(v: unknown): string {
  return `(got ${show(v)})`;
}

/** Record that `v` is not `expected` ("must be ..."), or that it is missing altogether. */
export function fail(p: Problems, path: string, v: unknown, expected: string): void {
  p.add(path, v === undefined ? `is required; it must be ${expected}` : `must be ${expected} ${got(v)}`);
}

export function isObject(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Own properties only: a config key named "constructor" must not find Object.prototype's. */
export function field(obj: Obj, key: string): unknown {
  return Object.hasOwn(obj, key) ? obj[key] : undefined;
}

export function expectObject(p: Problems, path: string, v: unknown): Obj | undefined {
  if (isObject(v)) return v;
  fail(p, path, v, 'an object');
  return undefined;
}

export function checkKeys(p: Problems, path: string, obj: Obj, allowed: readonly string[]): void {
  for (const key of Object.keys(obj)) {
    if (!allowed.includes(key)) p.add(at(path, key), `unknown key; allowed keys are: ${allowed.join(', ')}`);
  }
}

export function matching(p: Problems, path: string, v: unknown, re: RegExp, expected: string): string {
  if (typeof v === 'string' && re.test(v)) return v;
  fail(p, path, v, expected);
  return '';
}

export const IDENTIFIER_EXPECTED =
  "a short identifier: a lowercase letter, then up to 30 lowercase letters, digits or '-'";

export function integer(p: Problems, path: string, v: unknown, min: number, max: number): number {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= min && v <= max) return v;
  fail(p, path, v, max === Number.MAX_SAFE_INTEGER ? `an integer ≥ ${min}` : `an integer from ${min} to ${max}`);
  return min;
}

export function boolean(p: Problems, path: string, v: unknown): boolean {
  if (typeof v === 'boolean') return v;
  fail(p, path, v, 'true or false');
  return false;
}

export function choice<T extends string>(p: Problems, path: string, v: unknown, values: readonly T[]): T {
  if (typeof v === 'string' && (values as readonly string[]).includes(v)) return v as T;
  fail(p, path, v, `one of ${values.map((x) => JSON.stringify(x)).join(', ')}`);
  return values[0] as T;
}

/** Each element checked by `item`; a non-array is one problem, not one per element. */
export function list<T>(p: Problems, path: string, v: unknown, expected: string, item: (path: string, v: unknown) => T): T[] {
  if (!Array.isArray(v)) {
    fail(p, path, v, expected);
    return [];
  }
  return v.map((x, i) => item(index(path, i), x));
}

/** Why `v` is not an acceptable absolute path, or undefined if it is one. */
function pathError(v: unknown): string | undefined {
  if (typeof v !== 'string' || !v.startsWith('/')) return 'an absolute path';
  if (v.includes('\0')) return 'an absolute path without NUL characters';
  // ".." is refused rather than resolved: it would resolve differently once symlinks are involved.
  if (v.split('/').includes('..')) return 'an absolute path without ".." segments';
  return undefined;
}

/** An absolute path without ".." segments or NUL, normalized ("//a/./b/" → "/a/b"). */
export function absolutePath(p: Problems, path: string, v: unknown): string {
  const error = pathError(v);
  if (error !== undefined) {
    fail(p, path, v, error);
    return '/';
  }
  const normal = posix.normalize(v as string);
  return normal.length > 1 && normal.endsWith('/') ? normal.slice(0, -1) : normal;
}

export function pathList(p: Problems, path: string, v: unknown): string[] {
  return list(p, path, v, 'an array of absolute paths', (at, x) => absolutePath(p, at, x));
}

/** Strings handed to execve() or the environment: C strings, so NUL cannot be represented. */
export function cString(p: Problems, path: string, v: unknown): string {
  if (typeof v === 'string' && !v.includes('\0')) return v;
  fail(p, path, v, 'a string without NUL characters');
  return '';
}

/** A command line: argv[0] an absolute path to the program, then any arguments. */
export function commandLine(p: Problems, path: string, v: unknown): string[] {
  if (!Array.isArray(v) || v.length === 0) {
    fail(p, path, v, 'a non-empty array of strings whose first element is the absolute path of the program');
    return [];
  }
  // argv[0] stays as written (not normalized): programs such as busybox dispatch on it.
  return v.map((x, i) => {
    const itemPath = index(path, i);
    if (i > 0) return cString(p, itemPath, x);
    const error = pathError(x);
    if (error !== undefined) fail(p, itemPath, x, error);
    return typeof x === 'string' ? x : '';
  });
}

/** A directory vmsandbox creates or hands out: "/" itself would expose or remove the whole host. */
export function ownDirectory(p: Problems, path: string, v: unknown): string {
  const before = p.list.length;
  const normal = absolutePath(p, path, v);
  if (p.list.length === before && normal === '/') fail(p, path, v, 'an absolute path other than "/"');
  return normal;
}
