import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Real-kernel tests create namespaces and cgroups; running files one at a time keeps them from
    // competing for the two cores and makes a leak attributable to one file.
    fileParallelism: false,
    reporters: ['default'],
  },
});
