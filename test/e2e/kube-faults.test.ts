/**
 * The Kubernetes fake's faults, each as a real cluster shows it (to the REST API and to real kubectl), and the
 * server's own robustness: bounded bodies, bad JSON, unknown routes, auth, exec refusals. Pods run as real local
 * sandboxes (root, bwrap).
 */
import { request } from 'node:http';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type { Pod } from '../fakes/kube/objects.js';
import { type KubeFake, startKubeFake } from '../fakes/kube/server.js';
import { waitFor } from '../helpers/cli.js';
import { createNamespace, kubectl, podManifest, runPods, waitRunning } from '../helpers/kube.js';

let fake: KubeFake;
const NS = 'faults';
beforeAll(async () => {
  fake = await startKubeFake({ network: 'isolated' });
  await createNamespace(fake, NS);
});
afterAll(async () => {
  await fake?.close();
});
afterEach(() => fake.faults.clear());

const k = (args: string[], opts?: Parameters<typeof kubectl>[2]) => kubectl(fake, args, opts);
const pod = (name: string) => fake.store.get('pods', NS, name);
const call = (path: string, init: RequestInit = {}) =>
  fetch(`${fake.url}${path}`, {
    ...init,
    headers: { authorization: `Bearer ${fake.token}`, 'content-type': 'application/json', ...init.headers },
  });
const createPod = async (manifest: ReturnType<typeof podManifest>) => {
  const r = await call(`/api/v1/namespaces/${NS}/pods`, { method: 'POST', body: JSON.stringify(manifest) });
  expect(r.status).toBe(201);
  return (await r.json()) as Pod;
};
/** A POST through node:http, whose response is read even when the server stops reading the body. */
const post = (path: string, body: Buffer, declareLength: boolean) =>
  new Promise<{ status: number; body: string }>((resolve, reject) => {
    const headers: Record<string, string | number> = {
      authorization: `Bearer ${fake.token}`,
      'content-type': 'application/json',
    };
    if (declareLength) headers['content-length'] = body.length;
    const req = request(`${fake.url}${path}`, { method: 'POST', headers }, (res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      res.on('error', reject);
    });
    req.on('error', () => {}); // the server may close while the body is still going out
    req.end(body);
  });
const waiting = (name: string) => pod(name)?.status.containerStatuses?.[0]?.state.waiting;
const condition = (name: string, type: string) => pod(name)?.status.conditions?.find((c) => c.type === type);

describe('pod faults', () => {
  it('imagePull: ErrImagePull, then ImagePullBackOff, Pending; exec cannot reach the container; cleared, it runs', async () => {
    fake.faults.set({ imagePull: 'no-such-image' });
    await createPod(podManifest('pull', { image: 'registry.example/no-such-image:1' }));
    expect(await waitFor(() => waiting('pull')?.reason === 'ErrImagePull', 10_000, 10)).toBe(true);
    expect(waiting('pull')?.message).toBe(
      'failed to pull and unpack image "registry.example/no-such-image:1": failed to resolve reference "registry.example/no-such-image:1": pull access denied, repository does not exist or may require authorization: server message: insufficient_scope: authorization failed',
    );
    expect(await waitFor(() => waiting('pull')?.reason === 'ImagePullBackOff', 10_000, 20)).toBe(true);
    expect(waiting('pull')?.message).toBe('Back-off pulling image "registry.example/no-such-image:1"');
    expect(pod('pull')?.status.phase).toBe('Pending');
    const listed = await k(['get', 'pods', '-n', NS, 'pull']);
    expect(listed.stdout).toMatch(/pull\s+0\/1\s+ImagePullBackOff\s+0\s/);
    const exec = await k(['exec', 'pull', '-n', NS, '--', 'true']);
    expect(exec.code).toBe(1);
    expect(exec.stderr).toContain('unable to upgrade connection: container not found ("main")');
    fake.faults.set({ imagePull: undefined });
    await waitRunning(fake, NS, 'pull');
  });

  it('unschedulable: PodScheduled False with the reason; exec says the pod has no host; cleared, it runs', async () => {
    fake.faults.set({ unschedulable: 'stuck' });
    await createPod(podManifest('stuck-1'));
    expect(await waitFor(() => condition('stuck-1', 'PodScheduled')?.status === 'False', 10_000, 10)).toBe(true);
    expect(condition('stuck-1', 'PodScheduled')).toMatchObject({
      reason: 'Unschedulable',
      message: expect.stringMatching(/^0\/1 nodes are available: 1 Insufficient cpu\./),
    });
    expect(pod('stuck-1')?.spec.nodeName).toBeUndefined();
    const exec = await k(['exec', 'stuck-1', '-n', NS, '--', 'true']);
    expect(exec.code).toBe(1);
    expect(exec.stderr).toContain('Error from server (BadRequest): pod stuck-1 does not have a host assigned');
    fake.faults.clear();
    await waitRunning(fake, NS, 'stuck-1');
  });

  it('a claim that does not exist keeps the pod Pending; once made (Bound), the pod runs', async () => {
    await createPod(podManifest('claims', { claim: 'data' }));
    expect(await waitFor(() => condition('claims', 'PodScheduled')?.status === 'False', 10_000, 10)).toBe(true);
    expect(condition('claims', 'PodScheduled')?.message).toContain('persistentvolumeclaim "data" not found');
    const claim = {
      apiVersion: 'v1',
      kind: 'PersistentVolumeClaim',
      metadata: { name: 'data' },
      spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '1Gi' } } },
    };
    const made = await call(`/api/v1/namespaces/${NS}/persistentvolumeclaims`, {
      method: 'POST',
      body: JSON.stringify(claim),
    });
    expect(made.status).toBe(201);
    expect(((await made.json()) as { status: unknown }).status).toEqual({
      phase: 'Bound',
      accessModes: ['ReadWriteOnce'],
      capacity: { storage: '1Gi' },
    });
    await waitRunning(fake, NS, 'claims');
    const pvc = await k(['get', 'pvc', '-n', NS]);
    expect(pvc.stdout).toMatch(
      /^NAME\s+STATUS\s+VOLUME\s+CAPACITY\s+ACCESS MODES\s+STORAGECLASS\s+VOLUMEATTRIBUTESCLASS\s+AGE\ndata\s+Bound\s+pvc-data\s+1Gi\s+RWO\s/,
    );
  });

  it('neverReady: Running but not Ready, so kubectl wait times out; cleared, it becomes Ready', async () => {
    fake.faults.set({ neverReady: 'lazy' });
    await runPods(fake, NS, [podManifest('lazy')]);
    expect(condition('lazy', 'Ready')).toMatchObject({ status: 'False', reason: 'ContainersNotReady' });
    expect(pod('lazy')?.status.containerStatuses?.[0]).toMatchObject({ ready: false, started: true });
    expect((await k(['get', 'pod', 'lazy', '-n', NS])).stdout).toMatch(/lazy\s+0\/1\s+Running/);
    const timedOut = await k(['wait', '--for=condition=Ready', 'pod/lazy', '-n', NS, '--timeout=2s']);
    expect(timedOut.code).toBe(1);
    expect(timedOut.stderr).toContain('timed out waiting for the condition on pods/lazy');
    const ready = k(['wait', '--for=condition=Ready', 'pod/lazy', '-n', NS, '--timeout=20s']);
    await new Promise((r) => setTimeout(r, 500));
    fake.faults.clear();
    expect(await ready).toMatchObject({ code: 0, stdout: 'pod/lazy condition met\n' });
  });

  it('dropExec: the stream is cut mid-way (the client sees no status), and only as many times as asked', async () => {
    await runPods(fake, NS, [podManifest('chatty')]);
    fake.faults.set({ dropExec: { afterBytes: 1000, count: 1 } });
    const cut = await k(['exec', 'chatty', '-n', NS, '--', 'head', '-c', '200000', '/dev/zero']);
    expect(cut.code).not.toBe(0);
    expect(cut.stdoutBytes.length).toBeLessThanOrEqual(1000);
    const whole = await k(['exec', 'chatty', '-n', NS, '--', 'head', '-c', '200000', '/dev/zero']);
    expect(whole.code).toBe(0);
    expect(whole.stdoutBytes.length).toBe(200_000);
  });

  it('terminatingMs: a deleted pod shows Terminating until its sandbox is gone; kubectl delete waits for that', async () => {
    await runPods(fake, NS, [podManifest('slow')]);
    fake.faults.set({ terminatingMs: 1500 });
    const r = await call(`/api/v1/namespaces/${NS}/pods/slow`, { method: 'DELETE' });
    expect(r.status).toBe(200);
    const body = (await r.json()) as Pod;
    expect(body.metadata.deletionTimestamp).toBeDefined();
    expect(body.metadata.deletionGracePeriodSeconds).toBe(5);
    expect((await k(['get', 'pod', 'slow', '-n', NS])).stdout).toMatch(/slow\s+1\/1\s+Terminating/);
    const waited = await k(['delete', 'pod', 'slow', '-n', NS]);
    expect(waited).toMatchObject({ code: 0, stdout: 'pod "slow" deleted\n' });
    expect(pod('slow')).toBeUndefined();
  });
});

describe('API faults', () => {
  it('apiErrors: the next N matching requests fail with the Status a real server sends, then all is well', async () => {
    fake.faults.set({ apiErrors: [{ path: '/pods', method: 'GET', count: 2 }] });
    for (let i = 0; i < 2; i++) {
      const r = await call(`/api/v1/namespaces/${NS}/pods`);
      expect(r.status).toBe(500);
      expect(await r.json()).toEqual({
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Failure',
        message: 'Internal error occurred: injected fault',
        reason: 'InternalError',
        details: { causes: [{ message: 'injected fault' }] },
        code: 500,
      });
    }
    expect((await call(`/api/v1/namespaces/${NS}/pods`)).status).toBe(200);
    fake.faults.set({
      apiErrors: [
        { path: /\/namespaces$/, code: 503 },
        { path: '/version', code: 429, count: 1 },
      ],
    });
    const unavailable = await call('/api/v1/namespaces');
    expect(unavailable.status).toBe(503);
    expect(await unavailable.json()).toMatchObject({ reason: 'ServiceUnavailable' });
    const busy = await call('/version');
    expect(busy.status).toBe(429);
    expect(busy.headers.get('retry-after')).toBe('1');
    expect(await busy.json()).toMatchObject({ reason: 'TooManyRequests', details: { retryAfterSeconds: 1 } });
    fake.faults.set({ apiErrors: [{ path: '/pods', count: 1 }] });
    const kc = await k(['get', 'pods', '-n', NS]);
    expect(kc.code).toBe(1);
    expect(kc.stderr).toContain('Error from server (InternalError): Internal error occurred: injected fault');
  });

  it('latencyMs: every request is answered that much later', async () => {
    fake.faults.set({ latencyMs: 300 });
    const t = Date.now();
    expect((await call('/version')).status).toBe(200);
    expect(Date.now() - t).toBeGreaterThanOrEqual(290);
  });
});

describe('robustness', () => {
  it('refuses oversized bodies (413), bad JSON (400), unknown routes (404), wrong tokens (401), all as Status', async () => {
    for (const declared of [true, false]) {
      const big = await post(`/api/v1/namespaces/${NS}/pods`, Buffer.alloc(2 << 20, 'x'), declared);
      expect(big.status).toBe(413);
      expect(JSON.parse(big.body)).toMatchObject({ kind: 'Status', reason: 'RequestEntityTooLarge', code: 413 });
    }
    const bad = await call(`/api/v1/namespaces/${NS}/pods`, { method: 'POST', body: '{"metadata":' });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({
      reason: 'BadRequest',
      message: expect.stringContaining('json parse error'),
    });
    for (const path of ['/apis/apps/v1', '/api/v1/services', '/nothing', '/api/v1/namespaces/x/pods/y/portforward']) {
      const r = await call(path);
      expect(r.status).toBe(404);
      expect(await r.json()).toMatchObject({ kind: 'Status', reason: 'NotFound', code: 404 });
    }
    const wrong = await fetch(`${fake.url}/api/v1/namespaces`, { headers: { authorization: 'Bearer nope' } });
    expect(wrong.status).toBe(401);
    const put = await call('/api/v1/namespaces', { method: 'PUT', body: '{}' });
    expect(put.status).toBe(405);
    const ns = await call('/api/v1/namespaces', {
      method: 'POST',
      body: JSON.stringify({ metadata: { name: 'Not_A_Label' } }),
    });
    expect(ns.status).toBe(422);
  });

  it('exec refusals: a missing pod (404), an offer of no supported subprotocol (403), a plain GET (400)', async () => {
    await runPods(fake, NS, [podManifest('target')]);
    const upgrade = (pod: string, protocols: string[]) =>
      new Promise<number>((resolve) => {
        const ws = new WebSocket(
          `${fake.url.replace('http', 'ws')}/api/v1/namespaces/${NS}/pods/${pod}/exec?command=true&stdout=1`,
          protocols,
        );
        ws.on('unexpected-response', (_req, res) => {
          resolve(res.statusCode ?? 0);
          res.resume();
          ws.terminate();
        });
        ws.on('open', () => {
          resolve(101);
          ws.close();
        });
        ws.on('error', () => {});
      });
    expect(await upgrade('nope', ['v5.channel.k8s.io'])).toBe(404);
    expect(await upgrade('target', ['channel.k8s.io', 'base64.channel.k8s.io'])).toBe(403);
    expect(await upgrade('target', ['v4.channel.k8s.io'])).toBe(101);
    const plain = await call(`/api/v1/namespaces/${NS}/pods/target/exec?command=true`);
    expect(plain.status).toBe(400);
    expect(await plain.json()).toMatchObject({ message: 'Upgrade request required' });
  });

  it('deleting a namespace: Terminating (no new pods: 403), then gone with its pods and their sandboxes', async () => {
    await createNamespace(fake, 'doomed');
    await runPods(fake, 'doomed', [podManifest('p')]);
    const session = fake.sessionOf('doomed', 'p');
    const r = await call('/api/v1/namespaces/doomed', { method: 'DELETE' });
    expect(((await r.json()) as { status: { phase: string } }).status.phase).toBe('Terminating');
    const refused = await call('/api/v1/namespaces/doomed/pods', {
      method: 'POST',
      body: JSON.stringify(podManifest('q')),
    });
    expect(refused.status).toBe(403);
    expect(await refused.json()).toMatchObject({
      reason: 'Forbidden',
      message: 'pods "q" is forbidden: unable to create new content in namespace doomed because it is being terminated',
    });
    expect(await waitFor(() => !fake.store.get('namespaces', undefined, 'doomed'), 20_000, 20)).toBe(true);
    await expect(fake.kubelet.provider.get(session!)).rejects.toThrow(/no such session/);
    expect((await call('/api/v1/namespaces/default', { method: 'DELETE' })).status).toBe(403);
  });
});
