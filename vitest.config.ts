import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    pool: 'forks',
    // Generous hang guards only: tests never assert on wall time.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    teardownTimeout: 30_000,
    globalSetup: ['test/setup/tmp.ts'],
    projects: [
      { extends: true, test: { name: 'local', include: ['test/**/*.test.ts'] } },
      {
        // The CLI end-to-end suites again, every command going through an `onmemos serve` (remote mode).
        extends: true,
        test: {
          name: 'remote',
          include: [
            'test/e2e/local-exec.test.ts',
            'test/e2e/local-fdpass.test.ts',
            'test/e2e/pty.test.ts',
            'test/e2e/local-lifecycle.test.ts',
          ],
          env: { ONMEMOS_TEST_MODE: 'remote' },
        },
      },
      {
        // The same suites with onmemos run by an ordinary user (the rootless local provider).
        extends: true,
        test: {
          name: 'rootless',
          include: [
            'test/e2e/local-exec.test.ts',
            'test/e2e/local-fdpass.test.ts',
            'test/e2e/pty.test.ts',
            'test/e2e/local-lifecycle.test.ts',
            'test/e2e/local-binds.test.ts',
          ],
          env: { ONMEMOS_TEST_MODE: 'rootless' },
          globalSetup: ['test/setup/tmp.ts', 'test/setup/rootless.ts'],
        },
      },
    ],
  },
});
