// cgroup v2 limits: which interface files a config may write and what each accepts.
// One table drives both the loader and the JSON Schema; the cross-check test keeps the
// `accepts` functions and the schema fragments honest with each other.

import type { Limits } from './types.js';
import { type Problems, at, expectObject, got, field } from './fields.js';

export interface LimitRule {
  /** Shown in the schema and docs. */
  description: string;
  /** Completes "must be ..." in an error message. */
  expected: string;
  accepts(value: unknown): boolean;
  schema: Record<string, unknown>;
}

// Suffixes as the kernel's memparse() reads them (powers of 1024).
const MEMORY_PATTERN = '^(?:max|[0-9]+[KMGT]?)$';
// The kernel takes periods of 1 ms to 1 s and quotas of at least 1 ms (microseconds), and
// rejects quotas above ~1.7e13 µs; 13 digits stay below that.
const CPU_MAX_PATTERN = '^(?:max|(?:max|[1-9][0-9]{3,12}) (?:[1-9][0-9]{3,5}|1000000))$';

const memoryRe = new RegExp(MEMORY_PATTERN);
const cpuMaxRe = new RegExp(CPU_MAX_PATTERN);

const isIntIn = (v: unknown, min: number, max: number): v is number =>
  typeof v === 'number' && Number.isSafeInteger(v) && v >= min && v <= max;

function memory(what: string): LimitRule {
  return {
    description: `${what} Bytes as an integer, a string with a K, M, G or T suffix ("512M"), or "max".`,
    expected: 'a byte count: a non-negative integer, a string like "512M" or "1G" (suffix K, M, G or T), or "max"',
    accepts: (v) => isIntIn(v, 0, Number.MAX_SAFE_INTEGER) || (typeof v === 'string' && memoryRe.test(v)),
    schema: {
      anyOf: [
        { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER },
        { type: 'string', pattern: MEMORY_PATTERN },
      ],
    },
  };
}

function weight(what: string): LimitRule {
  return {
    description: `${what} An integer from 1 to 10000 (the kernel's default is 100).`,
    expected: 'an integer from 1 to 10000',
    accepts: (v) => isIntIn(v, 1, 10_000),
    schema: { type: 'integer', minimum: 1, maximum: 10_000 },
  };
}

export const LIMIT_RULES: Readonly<Record<string, LimitRule>> = {
  'memory.max': memory('Hard memory limit; the OOM killer acts above it.'),
  'memory.high': memory('Memory throttling threshold.'),
  'memory.low': memory('Best-effort memory protection.'),
  'memory.min': memory('Hard memory protection.'),
  'memory.swap.max': memory('Swap limit.'),
  'pids.max': {
    description: 'Maximum number of tasks (processes and threads): an integer ≥ 1, or "max".',
    expected: 'an integer ≥ 1 or "max"',
    accepts: (v) => isIntIn(v, 1, Number.MAX_SAFE_INTEGER) || v === 'max',
    schema: {
      anyOf: [{ type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER }, { const: 'max' }],
    },
  },
  'cpu.max': {
    description:
      'CPU bandwidth: "max", "QUOTA PERIOD" or "max PERIOD" in microseconds, with QUOTA ≥ 1000 and ' +
      'PERIOD from 1000 to 1000000 (e.g. "50000 100000" is half a CPU).',
    expected:
      '"max", "QUOTA PERIOD" or "max PERIOD" in microseconds, with QUOTA ≥ 1000 and PERIOD from 1000 ' +
      'to 1000000 (e.g. "50000 100000")',
    accepts: (v) => typeof v === 'string' && cpuMaxRe.test(v),
    schema: { type: 'string', pattern: CPU_MAX_PATTERN },
  },
  'cpu.weight': weight('Relative CPU share.'),
  'io.weight': weight('Relative IO share.'),
};

export const LIMIT_KEYS: readonly string[] = Object.keys(LIMIT_RULES);

export function parseLimits(p: Problems, path: string, raw: unknown): Limits {
  const obj = expectObject(p, path, raw);
  if (!obj) return {};
  const entries: [string, string | number][] = [];
  for (const key of Object.keys(obj)) {
    const rule = Object.hasOwn(LIMIT_RULES, key) ? LIMIT_RULES[key] : undefined;
    const value = field(obj, key);
    if (!rule) {
      p.add(at(path, key), `unknown cgroup limit; allowed limits are: ${LIMIT_KEYS.join(', ')}`);
    } else if (!rule.accepts(value)) {
      p.add(at(path, key), `must be ${rule.expected} ${got(value)}`);
    } else {
      entries.push([key, value as string | number]);
    }
  }
  return Object.fromEntries(entries);
}
