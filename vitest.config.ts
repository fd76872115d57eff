import { defineConfig } from 'vitest/config';

// Integration tests build network namespaces and time live connections: they run one
// file at a time so that two of them never compete for the machine's two cores.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ['default'],
  },
});
