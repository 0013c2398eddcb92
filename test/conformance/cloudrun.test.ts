/**
 * The conformance suite against the cloud_run provider: `@google-cloud/run` over its REST fallback and the agent
 * at each service's URL, against the Cloud Run Admin API fake (test/fakes/cloudrun), whose services run the real
 * `onmemos agent` in local sandboxes behind an ID-token check. The fake takes CPU away between requests as Cloud Run
 * does with request-based CPU (freezeIdle): sessions without cpu_always have their processes frozen while no exec
 * is open, so what the suite checks of background processes holds only where the capabilities promise it.
 */
import { join } from 'node:path';
import { CloudRunProvider } from '../../src/providers/cloudrun/cloudrun.js';
import { cloudRunConfig } from '../../src/providers/cloudrun/config.js';
import { tableRegistry } from '../../src/providers/index.js';
import { startCloudRunFake } from '../fakes/cloudrun/server.js';
import { providerConformance } from './suite.js';

providerConformance('cloud_run', async () => {
  const run = await startCloudRunFake({ freezeIdle: true });
  const env = { ...process.env, ...run.env, ONMEMOS_CONFIG_DIR: join(run.dir, 'onmemos-config') };
  const r = cloudRunConfig(env);
  if (!r.ok) throw new Error(r.reason);
  const provider = new CloudRunProvider(r.config, env, async (audience) => run.idToken(audience));
  const registry = tableRegistry(
    [{ kind: 'cloud_run', configured: () => ({ ok: true }), load: async () => provider }],
    env,
  );
  return { provider, registry, expects: { stop: false, tty: true }, teardown: () => run.close() };
});
