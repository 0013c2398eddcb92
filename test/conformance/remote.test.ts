/** The conformance suite against the remote provider, through a real `onmemos serve` over the local provider. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { remoteRegistry } from '../../src/providers/index.js';
import { RemoteProvider } from '../../src/providers/remote.js';
import { startServe } from '../helpers/serve.js';
import { providerConformance } from './suite.js';

const KEY = 'conformance-remote-key-0123456789';

providerConformance('remote ∘ serve ∘ local', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'onmemos-conf-'));
  const served = await startServe({ ONMEMOS_STATE_DIR: dir, ONMEMOS_API_KEYS: KEY });
  const opts = { server: served.url, apiKey: KEY };
  return {
    provider: new RemoteProvider(opts),
    registry: remoteRegistry(opts),
    expects: { stop: false, tty: true },
    teardown: async () => {
      const provider = new RemoteProvider(opts);
      for (const s of await provider.list()) await provider.delete(s.id).catch(() => {});
      await served.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
});
