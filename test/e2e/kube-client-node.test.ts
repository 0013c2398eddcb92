/**
 * @kubernetes/client-node 1.4 against the Kubernetes fake, loaded from the kubeconfig the fake writes: the 1.x
 * call shapes (one object parameter, the object returned, ApiException on non-2xx with the server's Status), the
 * bearer token on every request and on the exec upgrade, selectors, patch, watch, and Exec with its status callback
 * and stdin EOF (v5). Pods run as real local sandboxes (root, bwrap).
 */
import { readFileSync } from 'node:fs';
import { PassThrough } from 'node:stream';
import { ApiException, CoreV1Api, Exec, KubeConfig, type V1Pod, type V1Status, Watch } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type KubeFake, startKubeFake } from '../fakes/kube/server.js';
import { waitFor } from '../helpers/cli.js';
import { podManifest, waitRunning } from '../helpers/kube.js';

let fake: KubeFake;
let kc: KubeConfig;
let api: CoreV1Api;
const NS = 'client-node';

beforeAll(async () => {
  // client-node always sends its token, so this fake refuses requests without one.
  fake = await startKubeFake({ requireToken: true, network: 'isolated' });
  kc = new KubeConfig();
  kc.loadFromFile(fake.kubeconfigPath);
  api = kc.makeApiClient(CoreV1Api);
  await api.createNamespace({ body: { metadata: { name: NS } } });
  await api.createNamespacedPod({ namespace: NS, body: podManifest('box', { labels: { app: 'box' } }) as V1Pod });
  await waitRunning(fake, NS, 'box');
});
afterAll(async () => {
  await fake?.close();
});

/** The ApiException a call rejects with. */
async function failure(p: Promise<unknown>): Promise<ApiException<string>> {
  try {
    await p;
  } catch (e) {
    if (e instanceof ApiException) return e as ApiException<string>;
    throw e;
  }
  throw new Error('expected the call to fail');
}

/** Runs a command through client-node's Exec; the exit code comes from the status callback. */
async function exec(command: string[], input?: Buffer) {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  stdout.on('data', (d) => out.push(d));
  stderr.on('data', (d) => err.push(d));
  const stdin = input === undefined ? null : new PassThrough();
  let status: V1Status | undefined;
  const ws = await new Exec(kc).exec(NS, 'box', 'main', command, stdout, stderr, stdin, false, (s) => {
    status = s;
  });
  const closed = new Promise((r) => ws.on('close', r));
  stdin?.end(input);
  await closed;
  const cause = status?.details?.causes?.find((c) => c.reason === 'ExitCode');
  const code = status?.status === 'Success' ? 0 : Number(cause?.message);
  return { code, status, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString(), protocol: ws.protocol };
}

describe('client-node REST', () => {
  it('sends the kubeconfig token; a request without it, or with another, is a 401 Status', async () => {
    expect(fake.requests.length).toBeGreaterThan(0);
    expect(fake.requests.every((r) => r.auth === 'bearer')).toBe(true);
    const anonymous = await fetch(`${fake.url}/api/v1/namespaces`);
    expect(anonymous.status).toBe(401);
    expect(await anonymous.json()).toEqual({
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: 'Unauthorized',
      reason: 'Unauthorized',
      code: 401,
    });
    const other = new KubeConfig();
    other.loadFromString(readFileSync(fake.kubeconfigPath, 'utf8').replace(fake.token, 'wrong'));
    expect((await failure(other.makeApiClient(CoreV1Api).listNamespace())).code).toBe(401);
  });

  it('reads, lists with selectors and patches pods; the objects come back whole', async () => {
    const pod = await api.readNamespacedPod({ name: 'box', namespace: NS });
    expect(pod.status?.phase).toBe('Running');
    expect(pod.status?.containerStatuses?.[0]?.state?.running?.startedAt).toBeInstanceOf(Date);
    expect(pod.status?.podIP).toMatch(/^10\.88\./);
    const list = await api.listNamespacedPod({ namespace: NS, labelSelector: 'app in (box, other),!missing' });
    expect(list.items.map((p) => p.metadata?.name)).toEqual(['box']);
    expect((await api.listNamespacedPod({ namespace: NS, labelSelector: 'app=nope' })).items).toEqual([]);
    const all = await api.listPodForAllNamespaces({ labelSelector: 'app=box' });
    expect(all.items.map((p) => `${p.metadata?.namespace}/${p.metadata?.name}`)).toEqual([`${NS}/box`]);
    const patched = await api.patchNamespacedPod({
      name: 'box',
      namespace: NS,
      body: [{ op: 'add', path: '/metadata/annotations', value: { 'onmemos.dev/expires-at': '2030-01-01T00:00:00Z' } }],
    });
    expect(patched.metadata?.annotations?.['onmemos.dev/expires-at']).toBe('2030-01-01T00:00:00Z');
    const spec = await failure(
      api.patchNamespacedPod({
        name: 'box',
        namespace: NS,
        body: [{ op: 'replace', path: '/spec/restartPolicy', value: 'Never' }],
      }),
    );
    expect(spec.code).toBe(422);
    expect(JSON.parse(spec.body)).toMatchObject({
      reason: 'Invalid',
      message: expect.stringContaining('pod updates may not change fields'),
    });
  });

  it('gives the Status of 404, 409 and 422 in ApiException, as a real server words it', async () => {
    const missing = await failure(api.readNamespacedPod({ name: 'nope', namespace: NS }));
    expect(missing.code).toBe(404);
    expect(JSON.parse(missing.body)).toEqual({
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: 'pods "nope" not found',
      reason: 'NotFound',
      details: { name: 'nope', kind: 'pods' },
      code: 404,
    });
    const twice = await failure(api.createNamespacedPod({ namespace: NS, body: podManifest('box') as V1Pod }));
    expect(twice.code).toBe(409);
    expect(JSON.parse(twice.body)).toMatchObject({ reason: 'AlreadyExists', message: 'pods "box" already exists' });
    const bad = await failure(api.createNamespacedPod({ namespace: NS, body: podManifest('Bad_Name') as V1Pod }));
    expect(bad.code).toBe(422);
    expect(JSON.parse(bad.body)).toMatchObject({
      reason: 'Invalid',
      message: expect.stringMatching(
        /^Pod "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain/,
      ),
      details: { name: 'Bad_Name', kind: 'Pod', causes: [{ reason: 'FieldValueInvalid', field: 'metadata.name' }] },
    });
    const noNs = await failure(api.createNamespacedPod({ namespace: 'nosuch', body: podManifest('p') as V1Pod }));
    expect(noNs.code).toBe(404);
    expect(JSON.parse(noNs.body)).toMatchObject({ message: 'namespaces "nosuch" not found' });
  });

  it('watches pods: ADDED, MODIFIED up to Running, DELETED', async () => {
    const seen: string[] = [];
    const req = await new Watch(kc).watch(
      `/api/v1/namespaces/${NS}/pods`,
      { labelSelector: 'app=watched' },
      (type: string, obj: V1Pod) => seen.push(`${type} ${obj.status?.phase}`),
      () => {},
    );
    try {
      await api.createNamespacedPod({
        namespace: NS,
        body: podManifest('watched', { labels: { app: 'watched' } }) as V1Pod,
      });
      expect(await waitFor(() => seen.includes('MODIFIED Running'), 30_000, 20)).toBe(true);
      await api.deleteNamespacedPod({ name: 'watched', namespace: NS, gracePeriodSeconds: 1 });
      expect(await waitFor(() => seen.some((s) => s.startsWith('DELETED')), 30_000, 20)).toBe(true);
      expect(seen[0]).toBe('ADDED Pending');
    } finally {
      req.abort();
    }
  });
});

describe('client-node Exec', () => {
  it('negotiates v5, carries the token on the upgrade, and reports the exit code in the status', async () => {
    const ok = await exec(['sh', '-c', 'echo hi; echo there >&2']);
    expect(ok).toMatchObject({ code: 0, protocol: 'v5.channel.k8s.io', stderr: 'there\n' });
    expect(ok.stdout.toString()).toBe('hi\n');
    const upgrade = fake.requests.filter((r) => r.upgrade === 'websocket').at(-1);
    expect(upgrade).toMatchObject({ auth: 'bearer', status: 101 });
    const three = await exec(['sh', '-c', 'exit 3']);
    expect(three.code).toBe(3);
    expect(three.status).toEqual({
      metadata: {},
      status: 'Failure',
      message: 'command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3',
      reason: 'NonZeroExitCode',
      details: { causes: [{ reason: 'ExitCode', message: '3' }] },
    });
  });

  it('ends stdin with the v5 close frame, so cat sees EOF and the exec ends', async () => {
    const data = Buffer.alloc(200_000, 'x');
    const r = await exec(['sh', '-c', 'cat; echo eof >&2'], data);
    expect(r.code).toBe(0);
    expect(r.stdout.equals(data)).toBe(true);
    expect(r.stderr).toBe('eof\n');
  });
});
