/** The conformance suite against the in-process fake provider (no root, no sandbox). */
import { FakeProvider, fakeRegistry } from '../helpers/fake-provider.js';
import { providerConformance } from './suite.js';

providerConformance('the in-process fake', async () => {
  const provider = new FakeProvider({ kind: 'gke', createMs: 200 });
  return {
    provider,
    registry: fakeRegistry(provider),
    expects: { stop: true, tty: true },
    teardown: async () => provider.dispose(),
  };
});
