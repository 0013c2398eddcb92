/**
 * The conformance suite against a real cluster: skipped unless ONMEMOS_TEST_GKE_CONTEXT names a context of this
 * machine's kubeconfig (KUBECONFIG or ~/.kube/config). Its pods go in namespaces under the prefix onmemos-test.
 */
import { describe, it } from 'vitest';
import { loadGkeProvider } from '../../src/providers/gke/gke.js';
import { tableRegistry } from '../../src/providers/index.js';
import { providerConformance } from './suite.js';

const context = process.env.ONMEMOS_TEST_GKE_CONTEXT;

if (context) {
  providerConformance(`gke (real cluster, context ${context})`, async () => {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      KUBECONFIG: process.env.ONMEMOS_TEST_REAL_KUBECONFIG || undefined,
      GKE_CONTEXT: context,
      GKE_NAMESPACE_PREFIX: 'onmemos-test',
    };
    const provider = await loadGkeProvider(env);
    const registry = tableRegistry(
      [{ kind: 'gke', configured: () => ({ ok: true }), load: async () => provider }],
      env,
    );
    return { provider, registry, expects: { stop: false, tty: true }, teardown: async () => {} };
  });
} else {
  // Skipped on purpose: no test reaches a real cloud unless its credentials are given (README: Real clouds).
  describe('gke against a real cluster', () => {
    it.skip('needs ONMEMOS_TEST_GKE_CONTEXT (a kubeconfig context) to run', () => {});
  });
}
