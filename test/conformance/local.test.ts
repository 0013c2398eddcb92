/** The conformance suite against the local provider: real bubblewrap sandboxes, in this process. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tableRegistry } from '../../src/providers/index.js';
import { LocalProvider } from '../../src/providers/local/local.js';
import { providerConformance } from './suite.js';

providerConformance('local', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'onmemos-conf-'));
  const env = { ...process.env, ONMEMOS_STATE_DIR: dir };
  const provider = new LocalProvider({ env });
  const registry = tableRegistry(
    [{ kind: 'local', configured: () => ({ ok: true }), load: async () => provider }],
    env,
  );
  return {
    provider,
    registry,
    expects: { stop: false, tty: true },
    teardown: async () => {
      for (const s of await provider.list()) await provider.delete(s.id).catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };
});
