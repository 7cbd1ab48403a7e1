// Pure parts of the Linux backend (no root needed): protocol encoding, mountinfo parsing. The plan
// itself is tested in test/plan.test.ts.

import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { findCgroup2Mount } from '../../effects/linux/cgroup.js';
import { decodeToken, encodeToken } from '../../effects/linux/protocol.js';

describe('linux backend: pure parts', () => {
  it('encodes every token (no NUL) so that it decodes back and contains no space or newline', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }).filter((s) => !s.includes('\0')), (s) => {
        const t = encodeToken(s);
        expect(t).not.toMatch(/[ \n\t]/);
        expect(t.length).toBeGreaterThan(0);
        expect(decodeToken(t)).toBe(s);
      }),
    );
    expect(encodeToken('')).toBe('~');
    expect(encodeToken('~')).toBe('%7E');
    expect(() => encodeToken('a\0b')).toThrow(/NUL/);
  });

  it('finds the cgroup2 mount in mountinfo, never a cgroup v1 one', () => {
    const mi = [
      '30 1 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw',
      '31 30 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory',
      '40 30 0:37 / /sys/fs/cgroup/uni\\040fied rw,relatime - cgroup2 cgroup2 rw',
    ].join('\n');
    expect(findCgroup2Mount(mi)).toBe('/sys/fs/cgroup/uni fied');
    expect(findCgroup2Mount(mi.split('\n').slice(0, 2).join('\n'))).toBeNull();
  });
});
