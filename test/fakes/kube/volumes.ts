/**
 * A pod's Cloud Storage FUSE volumes (`csi.driver: gcsfuse.csi.storage.gke.io`, `volumeAttributes.bucketName`) as
 * the fake mounts them: each bucket's directory (test/fakes/buckets.ts) bound at the container's mountPath, writable
 * unless the volume or the mount is read-only. What the GKE driver refuses, the fake refuses with its words (the
 * FailedMount event's message; the pod stays ContainerCreating): a bucket that does not exist
 * (`rpc error: code = NotFound desc = failed to get GCS bucket "x": storage: bucket doesn't exist`, from the driver's
 * troubleshooting guide) and a pod without the `gke-gcsfuse/volumes: "true"` annotation that injects its sidecar
 * (`code = FailedPrecondition desc = failed to find the sidecar container in Pod spec`).
 */
import type { HostBind } from '../../../src/providers/local/local.js';
import type { Buckets } from '../buckets.js';
import type { Pod } from './objects.js';

export const GCSFUSE_DRIVER = 'gcsfuse.csi.storage.gke.io';
export const GCSFUSE_ANNOTATION = 'gke-gcsfuse/volumes';

interface CsiVolume {
  driver?: string;
  readOnly?: boolean;
  volumeAttributes?: Record<string, string>;
}

/** The kubelet's FailedMount message for a volume. */
const setUpFailed = (volume: string, code: string, desc: string) =>
  `MountVolume.SetUp failed for volume "${volume}" : rpc error: code = ${code} desc = ${desc}`;

/** The host directories a pod's containers mount, or why the kubelet cannot mount them (a FailedMount message). */
export function podBinds(pod: Pod, buckets: Buckets): { binds: HostBind[] } | { failedMount: string } {
  const binds: HostBind[] = [];
  const byName = new Map((pod.spec.volumes ?? []).map((v) => [v.name, v]));
  for (const c of pod.spec.containers) {
    for (const m of (c.volumeMounts ?? []) as { name: string; mountPath: string; readOnly?: boolean }[]) {
      const csi = byName.get(m.name)?.csi as CsiVolume | undefined;
      if (csi?.driver !== GCSFUSE_DRIVER) continue;
      if (pod.metadata.annotations?.[GCSFUSE_ANNOTATION] !== 'true') {
        return {
          failedMount: setUpFailed(m.name, 'FailedPrecondition', 'failed to find the sidecar container in Pod spec'),
        };
      }
      const bucket = csi.volumeAttributes?.bucketName ?? '';
      if (!bucket) {
        return {
          failedMount: setUpFailed(
            m.name,
            'InvalidArgument',
            'NodePublishVolume VolumeContext "bucketName" must be provided',
          ),
        };
      }
      if (!buckets.has(bucket)) {
        return {
          failedMount: setUpFailed(
            m.name,
            'NotFound',
            `failed to get GCS bucket "${bucket}": storage: bucket doesn't exist`,
          ),
        };
      }
      const readOnly = csi.readOnly === true || m.readOnly === true;
      const same = binds.find((b) => b.target === m.mountPath);
      if (same) same.readOnly &&= readOnly;
      else binds.push({ source: buckets.dir(bucket), target: m.mountPath, readOnly });
    }
  }
  return { binds };
}
