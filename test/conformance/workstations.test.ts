/**
 * The conformance suite against the workstations provider: `@google-cloud/workstations`' v1 client over its REST
 * fallback, and the machine's ssh through `onmemos tunnel --stdio` (the built binary), against the Cloud
 * Workstations fake (test/fakes/workstations), whose running workstations are real sshd servers in local sandboxes.
 */
import { join } from 'node:path';
import { tableRegistry } from '../../src/providers/index.js';
import { workstationsConfig } from '../../src/providers/workstations/config.js';
import { WorkstationsProvider } from '../../src/providers/workstations/workstations.js';
import { startWorkstationsFake } from '../fakes/workstations/server.js';
import { providerConformance } from './suite.js';

providerConformance('workstations', async () => {
  // onmemos' config directory (its SSH key) is in the test run's directory; the fake's sshd takes that key.
  const config = join(process.env.ONMEMOS_TEST_TMP ?? '/tmp', `ws-conformance-${process.pid}-${Date.now()}`);
  const fake = await startWorkstationsFake({ authorizedKeyFiles: [join(config, 'ssh')] });
  const env = { ...process.env, ...fake.env, ONMEMOS_CONFIG_DIR: config };
  const r = workstationsConfig(env);
  if (!r.ok) throw new Error(r.reason);
  const provider = new WorkstationsProvider(r.config, env);
  const registry = tableRegistry(
    [{ kind: 'workstations', configured: () => ({ ok: true }), load: async () => provider }],
    env,
  );
  return { provider, registry, expects: { stop: true, tty: true }, teardown: () => fake.close() };
});
