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

  it('encodes and decodes exactly as the byte-by-byte loops do (the fast paths change nothing)', () => {
    // The encoding before the fast paths, byte by byte: the reference.
    const SAFE = /^[A-Za-z0-9._/:=,+@-]$/;
    const encodeRef = (s: string) => {
      if (s === '') return '~';
      let out = '';
      for (const byte of Buffer.from(s, 'utf8')) {
        const ch = String.fromCharCode(byte);
        out += byte < 0x80 && SAFE.test(ch) ? ch : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
      }
      return out;
    };
    const decodeRef = (t: string) => {
      if (t === '~') return '';
      const bytes: number[] = [];
      for (let i = 0; i < t.length; i++) {
        if (t[i] === '%') {
          bytes.push(parseInt(t.slice(i + 1, i + 3), 16));
          i += 2;
        } else bytes.push(t.charCodeAt(i));
      }
      return Buffer.from(bytes).toString('utf8');
    };
    const safe = fc.string({ unit: fc.constantFrom(...'aZ09._/:=,+@-'.split('')) });
    const anyText = fc.oneof(safe, fc.string({ unit: 'binary' }), fc.string({ unit: 'grapheme' })).filter((s) => !s.includes('\0'));
    fc.assert(fc.property(anyText, (s) => encodeToken(s) === encodeRef(s)), { numRuns: 2000 });
    // What arrives: the init's tokens, and latin1 text with any byte in it (a misbehaving peer).
    const received = fc.oneof(safe, anyText.map(encodeRef), fc.string({ unit: fc.integer({ min: 1, max: 255 }).map((b) => String.fromCharCode(b)) }));
    fc.assert(fc.property(received, (t) => decodeToken(t) === decodeRef(t)), { numRuns: 2000 });
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
