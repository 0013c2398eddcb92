/**
 * The conformance suite against real Google Cloud projects: skipped unless asked. The test set-up hides this
 * machine's Google variables from every test (test/setup/tmp.ts keeps them as ONMEMOS_TEST_REAL_<NAME>); these
 * suites put them back:
 *
 *   ONMEMOS_TEST_CLOUDRUN=1       cloud_run with PROJECT_ID and REGION (or gcloud's), Application Default
 *                                 Credentials, and the workspace images pushed (README: Real clouds)
 *   ONMEMOS_TEST_WORKSTATIONS=1   workstations with PROJECT_ID, WORKSTATIONS_REGION, _CLUSTER and _CONFIG
 *
 * Sessions are made in namespaces `conf-PID-N` and removed by the suite.
 */
import { describe, it } from 'vitest';
import { loadCloudRunProvider } from '../../src/providers/cloudrun/cloudrun.js';
import { tableRegistry } from '../../src/providers/index.js';
import type { Provider } from '../../src/providers/provider.js';
import { loadWorkstationsProvider } from '../../src/providers/workstations/workstations.js';
import { providerConformance } from './suite.js';

/** This machine's own Google variables, as the set-up kept them. */
function realEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('ONMEMOS_TEST_REAL_') && v !== undefined) env[k.slice('ONMEMOS_TEST_REAL_'.length)] = v;
  }
  return env;
}

function real(
  name: string,
  flag: string,
  kind: 'cloud_run' | 'workstations',
  load: (env: NodeJS.ProcessEnv) => Promise<Provider>,
  expects: { stop: boolean; tty: boolean },
): void {
  if (process.env[flag] !== '1') {
    // Skipped on purpose: no test reaches a real cloud unless its credentials are given (README: Real clouds).
    describe(`${name} against a real project`, () => {
      it.skip(`needs ${flag}=1 and the provider's variables to run`, () => {});
    });
    return;
  }
  providerConformance(`${name} (real project)`, async () => {
    const env = realEnv();
    const provider = await load(env);
    const registry = tableRegistry([{ kind, configured: () => ({ ok: true }), load: async () => provider }], env);
    return { provider, registry, expects, teardown: async () => {} };
  });
}

real('cloud_run', 'ONMEMOS_TEST_CLOUDRUN', 'cloud_run', loadCloudRunProvider, { stop: false, tty: true });
real('workstations', 'ONMEMOS_TEST_WORKSTATIONS', 'workstations', loadWorkstationsProvider, { stop: true, tty: true });
