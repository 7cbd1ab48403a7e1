// effects/linux/sha256.ts against node:crypto: the runtime-dir lock's name (owner.ts) must not
// change with the implementation that computes it.

import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { runtimeDirLockPath } from '../effects/linux/owner.js';
import { sha256Hex } from '../effects/linux/sha256.js';

const reference = (s: string) => createHash('sha256').update(s).digest('hex');

describe('sha256Hex', () => {
  it('gives the FIPS 180-4 test vectors', () => {
    expect(sha256Hex('')).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
    expect(sha256Hex('abc')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    expect(sha256Hex('abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq')).toBe('248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1');
  });

  it('agrees with node:crypto at every length around the block and padding edges, and on any text', () => {
    for (let n = 0; n < 200; n++) expect(sha256Hex('x'.repeat(n)), `length ${n}`).toBe(reference('x'.repeat(n)));
    fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 300 }), (s) => sha256Hex(s) === reference(s)), { numRuns: 500 });
  });

  it('names a runtime dir\'s lock as node:crypto did', () => {
    expect(runtimeDirLockPath('/run/vmsandbox/vm1/', '/locks')).toBe(`/locks/dir.${reference('/run/vmsandbox/vm1').slice(0, 24)}.lock`);
  });
});
