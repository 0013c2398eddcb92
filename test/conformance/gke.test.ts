/**
 * The conformance suite against the gke provider: @kubernetes/client-node and onmemos' exec client talking to the
 * Kubernetes API fake (test/fakes/kube), whose pods are real local sandboxes.
 */

import { loadGkeProvider } from '../../src/providers/gke/gke.js';
import { forgetKubeconfig } from '../../src/providers/gke/kubeconfig.js';
import { tableRegistry } from '../../src/providers/index.js';
import { type KubeFake, startKubeFake } from '../fakes/kube/server.js';
import { providerConformance } from './suite.js';

providerConformance('gke', async () => {
  const kube: KubeFake = await startKubeFake({ network: 'isolated' });
  forgetKubeconfig();
  const env = { ...process.env, KUBECONFIG: kube.kubeconfigPath, GKE_CREATE_TIMEOUT: '60' };
  const provider = await loadGkeProvider(env);
  const registry = tableRegistry([{ kind: 'gke', configured: () => ({ ok: true }), load: async () => provider }], env);
  return {
    provider,
    registry,
    expects: { stop: false, tty: true },
    teardown: () => kube.close(),
  };
});
