// Why the real-kernel tests cannot run here: they are skipped with the reason printed, not failed.

import { readFileSync } from 'node:fs';
import { findCgroup2Mount } from '../../../effects/linux/cgroup.js';
import { landlockAbi } from '../../../effects/linux/native.js';
import { ensureNative } from './native.js';

/** Why the real-kernel tests cannot run here, or null. */
export function skipReason(): string | null {
  if (process.platform !== 'linux') return 'not Linux';
  if (process.getuid?.() !== 0) return 'not root';
  const status = readFileSync('/proc/self/status', 'utf8');
  const eff = BigInt('0x' + (/^CapEff:\s+([0-9a-f]+)/m.exec(status)?.[1] ?? '0'));
  if ((eff & (1n << 21n)) === 0n) return 'no CAP_SYS_ADMIN';
  if (!findCgroup2Mount()) return 'no cgroup2 mount';
  return null;
}

export function landlockSkipReason(minAbi: number): string | null {
  const r = skipReason();
  if (r) return r;
  const abi = safeAbi();
  return abi < minAbi ? `Landlock ABI ${abi} < ${minAbi}` : null;
}

function safeAbi(): number {
  try {
    ensureNative();
    return landlockAbi();
  } catch {
    return 0;
  }
}
