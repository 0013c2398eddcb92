/**
 * The Kubernetes fake's Cloud Storage: a pod's GCS FUSE CSI volume (gcsfuse.csi.storage.gke.io, bucketName) is the
 * fake's directory for that bucket, bound at the mountPath: what the pod writes is on the host, what the host puts
 * there the pod reads; read-only volumes are; a bucket the fake does not have leaves the pod ContainerCreating with
 * the driver's FailedMount event (REST and kubectl describe), until the bucket exists.
 */
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Pod } from '../fakes/kube/objects.js';
import { type KubeFake, startKubeFake } from '../fakes/kube/server.js';
import { waitFor } from '../helpers/cli.js';
import { createNamespace, kubectl, podManifest, waitRunning } from '../helpers/kube.js';

let fake: KubeFake;
const NS = 'buckets';
beforeAll(async () => {
  fake = await startKubeFake({ network: 'isolated', buckets: ['data-bucket'] });
  await createNamespace(fake, NS);
});
afterAll(async () => {
  await fake?.close();
});

/** A pod that mounts `bucket` at /workspace/bucket, as the gke provider makes one (src/providers/gke/pod.ts). */
function bucketPod(name: string, bucket: string, o: { readOnly?: boolean; annotate?: boolean } = {}) {
  const p = podManifest(name) as ReturnType<typeof podManifest> & { metadata: { annotations?: object } };
  if (o.annotate !== false) p.metadata.annotations = { 'gke-gcsfuse/volumes': 'true' };
  const spec = p.spec as unknown as Pod['spec'];
  spec.volumes = [
    {
      name: 'bucket',
      csi: {
        driver: 'gcsfuse.csi.storage.gke.io',
        ...(o.readOnly ? { readOnly: true } : {}),
        volumeAttributes: { bucketName: bucket, mountOptions: 'implicit-dirs' },
      },
    },
  ];
  spec.containers[0]!.volumeMounts = [{ name: 'bucket', mountPath: '/workspace/bucket' }];
  return p;
}

async function createPod(manifest: object): Promise<void> {
  const r = await fetch(`${fake.url}/api/v1/namespaces/${NS}/pods`, {
    method: 'POST',
    headers: { authorization: `Bearer ${fake.token}`, 'content-type': 'application/json' },
    body: JSON.stringify(manifest),
  });
  expect(r.status, await r.clone().text()).toBe(201);
}

const sh = (pod: string, script: string) => kubectl(fake, ['exec', '-n', NS, pod, '--', 'sh', '-c', script]);

describe('GCS FUSE volumes on the kube fake', () => {
  it('the pod and the host share the bucket: each sees what the other wrote', async () => {
    const dir = fake.buckets.dir('data-bucket');
    expect(dir).toBe(join(fake.dir, 'buckets', 'data-bucket'));
    writeFileSync(join(dir, 'before.txt'), 'put there before the pod\n');
    await createPod(bucketPod('rw', 'data-bucket'));
    await waitRunning(fake, NS, 'rw');
    const r = await sh(
      'rw',
      'cat /workspace/bucket/before.txt && echo from the pod > /workspace/bucket/pod.txt && mkdir -p /workspace/bucket/d/e && echo deep > /workspace/bucket/d/e/f && id -u',
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('put there before the pod\n1000\n');
    expect(readFileSync(join(dir, 'pod.txt'), 'utf8')).toBe('from the pod\n');
    expect(readFileSync(join(dir, 'd', 'e', 'f'), 'utf8')).toBe('deep\n');
    writeFileSync(join(dir, 'after.txt'), 'put there while the pod runs\n');
    const again = await sh('rw', 'cat /workspace/bucket/after.txt; ls -a /workspace/bucket');
    const [first, ...listed] = again.stdout.trim().split('\n');
    expect(first).toBe('put there while the pod runs');
    // The other tests may have put their own files there first (--sequence.shuffle).
    expect(listed).toEqual(expect.arrayContaining(['.', '..', 'after.txt', 'before.txt', 'd', 'pod.txt']));
    if (process.getuid?.() === 0) {
      // As root each sandbox runs as a host uid of its own, to which the bucket was handed: the pod's files are it.
      const rec = fake.kubelet.provider.store.read(fake.sessionOf(NS, 'rw')!)!;
      expect(statSync(join(dir, 'pod.txt')).uid).toBe(rec.host_uid);
      expect(statSync(dir).uid).toBe(rec.host_uid);
    }
  });

  it('a read-only volume is read, not written', async () => {
    // Its own file: the tests of this file may run in any order (--sequence.shuffle).
    writeFileSync(join(fake.buckets.dir('data-bucket'), 'for-ro.txt'), 'for the read-only pod\n');
    await createPod(bucketPod('ro', 'data-bucket', { readOnly: true }));
    await waitRunning(fake, NS, 'ro');
    const r = await sh('ro', 'cat /workspace/bucket/for-ro.txt; echo x > /workspace/bucket/ro.txt');
    expect(r.stdout).toBe('for the read-only pod\n');
    expect(r.stderr).toMatch(/Read-only file system/);
    expect(r.code).not.toBe(0);
    expect(existsSync(join(fake.buckets.dir('data-bucket'), 'ro.txt'))).toBe(false);
  });

  it('a bucket the fake does not have: ContainerCreating and the FailedMount event, until it is made', async () => {
    await createPod(bucketPod('missing', 'no-such-bucket'));
    const message =
      'MountVolume.SetUp failed for volume "bucket" : rpc error: code = NotFound desc = failed to get GCS bucket "no-such-bucket": storage: bucket doesn\'t exist';
    const events = async () => {
      const q = new URLSearchParams({ fieldSelector: `involvedObject.name=missing,involvedObject.namespace=${NS}` });
      const r = await fetch(`${fake.url}/api/v1/namespaces/${NS}/events?${q}`, {
        headers: { authorization: `Bearer ${fake.token}` },
      });
      expect(r.status).toBe(200);
      return ((await r.json()) as { items: { type: string; reason: string; message: string; count: number }[] }).items;
    };
    expect(await waitFor(async () => (await events()).length > 0, 30_000, 50)).toBe(true);
    expect(await events()).toEqual([expect.objectContaining({ type: 'Warning', reason: 'FailedMount', message })]);
    const pod = fake.store.get('pods', NS, 'missing')!;
    expect(pod.status.phase).toBe('Pending');
    expect(pod.spec.nodeName).toBe('onmemos-fake-node');
    expect(pod.status.containerStatuses?.[0]?.state).toEqual({ waiting: { reason: 'ContainerCreating' } });
    expect(fake.sessionOf(NS, 'missing')).toBeUndefined();
    // Other pods' events are not listed.
    const other = await fetch(`${fake.url}/api/v1/namespaces/${NS}/events?fieldSelector=involvedObject.name%3Drw`, {
      headers: { authorization: `Bearer ${fake.token}` },
    });
    expect(((await other.json()) as { items: unknown[] }).items).toEqual([]);
    const d = await kubectl(fake, ['describe', 'pod', '-n', NS, 'missing']);
    expect(d.code, d.stderr).toBe(0);
    expect(d.stdout).toMatch(/Warning +FailedMount +.* kubelet +MountVolume\.SetUp failed for volume "bucket"/);
    expect(d.stdout).toContain('failed to get GCS bucket "no-such-bucket"');
    // The kubelet tries again: once the bucket exists, the pod starts and mounts it.
    fake.buckets.add('no-such-bucket');
    await waitRunning(fake, NS, 'missing');
    const r = await sh('missing', 'echo now > /workspace/bucket/now.txt');
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(join(fake.buckets.dir('no-such-bucket'), 'now.txt'), 'utf8')).toBe('now\n');
  });

  it('without the gke-gcsfuse/volumes annotation (no sidecar) the mount fails as the driver says', async () => {
    await createPod(bucketPod('nosidecar', 'data-bucket', { annotate: false }));
    const waiting = await waitFor(
      () => fake.kubelet.events.list(NS, 'involvedObject.name=nosidecar').length > 0,
      30_000,
      50,
    );
    expect(waiting).toBe(true);
    expect(fake.kubelet.events.list(NS, 'involvedObject.name=nosidecar')[0]!.message).toBe(
      'MountVolume.SetUp failed for volume "bucket" : rpc error: code = FailedPrecondition desc = failed to find the sidecar container in Pod spec',
    );
    expect(fake.store.get('pods', NS, 'nosidecar')!.status.phase).toBe('Pending');
  });

  it('an invalid bucket name is refused when the fake starts', async () => {
    await expect(startKubeFake({ buckets: ['No_Such'] })).rejects.toThrow(/invalid bucket name "No_Such"/);
  });
});
