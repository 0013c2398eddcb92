/**
 * The gke provider when the cluster misbehaves (the Kubernetes fake's faults): each gives one clear line, no hang,
 * and nothing left behind.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadGkeProvider } from '../../src/providers/gke/gke.js';
import { forgetKubeconfig } from '../../src/providers/gke/kubeconfig.js';
import { parseCreateRequest } from '../../src/session/model.js';
import { finish } from '../conformance/suite.js';
import { type KubeFake, startKubeFake } from '../fakes/kube/server.js';

let kube: KubeFake;
let provider: Awaited<ReturnType<typeof loadGkeProvider>>;

beforeAll(async () => {
  kube = await startKubeFake({ network: 'isolated' });
  forgetKubeconfig();
  provider = await loadGkeProvider({
    ...process.env,
    KUBECONFIG: kube.kubeconfigPath,
    GKE_CREATE_TIMEOUT: '3',
    GKE_REQUEST_TIMEOUT: '2',
  });
});
afterAll(async () => {
  for (const s of await provider.list()) await provider.delete(s.id).catch(() => {});
  await kube.close();
});

/** The pods of a namespace, as the cluster has them. */
const podsIn = async (namespace: string) => (await provider.list({ namespace })).map((s) => s.id);
const req = (namespace: string) => parseCreateRequest({ provider: 'gke', namespace, ttl_minutes: 5 });
const oneLine = (e: unknown) => {
  const m = (e as Error).message;
  expect(m.split('\n')).toHaveLength(1);
  return m;
};

describe('gke faults', () => {
  it('a pod that never becomes Ready: the create fails at its timeout with the reason, and the pod is removed', async () => {
    kube.faults.set({ neverReady: 'ws-never-' });
    try {
      const e = await provider.create(req('never')).catch((x) => x);
      expect(oneLine(e)).toMatch(/^pod ws-never-\S+ was not ready within 3s: ContainersNotReady/);
      expect(e.code).toBe('provider_error');
      expect(await podsIn('never')).toEqual([]);
    } finally {
      kube.faults.clear();
    }
  });

  it("an unschedulable pod: the scheduler's own message, and nothing left", async () => {
    kube.faults.set({ unschedulable: 'ws-nonode-' });
    try {
      const e = await provider.create(req('nonode')).catch((x) => x);
      expect(oneLine(e)).toMatch(/was not ready within 3s: Unschedulable: /);
      expect(await podsIn('nonode')).toEqual([]);
    } finally {
      kube.faults.clear();
    }
  });

  it("the API server failing (500) on the pod create: the server's message, nothing made", async () => {
    kube.faults.set({ apiErrors: [{ path: /\/namespaces\/onmemos-err500\/pods$/, method: 'POST', count: 1 }] });
    try {
      const e = await provider.create(req('err500')).catch((x) => x);
      expect(oneLine(e)).toMatch(/failed \(creating the pod\)/);
      expect(e.code).toBe('unavailable');
      expect(await podsIn('err500')).toEqual([]);
    } finally {
      kube.faults.clear();
    }
  });

  it('a slow API server: a request past GKE_REQUEST_TIMEOUT fails in one line instead of hanging', async () => {
    kube.faults.set({ latencyMs: 2500 });
    try {
      const e = await provider.list().catch((x) => x);
      expect(oneLine(e)).toMatch(/did not answer within 2s/);
    } finally {
      kube.faults.clear();
    }
  });

  it('the exec stream dropped mid-way: the command ends with 255 and a line saying so, no hang', async () => {
    const s = await provider.create(req('drop'));
    kube.faults.set({ dropExec: { afterBytes: 4096, pod: s.id, count: 1 } });
    try {
      const r = await finish(
        await provider.exec(s.id, { argv: ['sh', '-c', 'head -c 1000000 /dev/zero; sleep 3000'] }),
      );
      expect(r.code).toBe(255);
      expect(r.stderr).toMatch(/closed before the command ended/);
      // What it had started is ended from here (a broken stream ends nothing in a pod).
      const left = await finish(
        await provider.exec(s.id, { argv: ['sh', '-c', 'cat /proc/[0-9]*/cmdline | tr "\\0" " "'] }),
      );
      expect(left.stdout.toString()).toContain('cmdline');
      expect(left.stdout.toString()).not.toContain('sleep 3000');
      // The pod is fine: the next command runs.
      expect((await finish(await provider.exec(s.id, { argv: ['echo', 'ok'] }))).stdout.toString()).toBe('ok\n');
    } finally {
      kube.faults.clear();
      await provider.delete(s.id);
    }
  });
});
