/**
 * Cloud Storage volumes (`template.volumes[{name, gcs: {bucket, readOnly}}]`, mounted by a container's
 * `volumeMounts[{name, mountPath}]`) as the fake mounts them: the fake's directory for the bucket
 * (test/fakes/buckets.ts) bound at the mountPath in the instance's or task's sandbox, writable unless `readOnly`.
 * Other volume kinds (NFS, secrets, in-memory) are not mounted (README: Known gaps).
 *
 * A bucket the fake does not have fails the revision (or the task) before its container starts. Cloud Run's own
 * words for it were not found in a public source: the fake's message is its best wording (README says so).
 */
import type { HostBind } from '../../../src/providers/local/local.js';
import type { Buckets } from '../buckets.js';
import type { Json } from './resources.js';

interface GcsVolume {
  name?: string;
  gcs?: { bucket?: string; readOnly?: boolean };
}

/**
 * The host directories `container` mounts from the template's `gcs` volumes, or why they cannot be mounted (a
 * sentence naming the volume and the bucket).
 */
export function gcsMounts(
  template: Json,
  container: { volumeMounts?: { name?: string; mountPath?: string }[] },
  buckets: Buckets,
): { mounts: HostBind[] } | { problem: string } {
  const volumes = (template.volumes as GcsVolume[] | undefined) ?? [];
  const mounts: HostBind[] = [];
  for (const m of container.volumeMounts ?? []) {
    const gcs = volumes.find((v) => v.name === m.name)?.gcs;
    if (!gcs || !m.mountPath) continue;
    const bucket = gcs.bucket ?? '';
    if (!buckets.has(bucket)) {
      return {
        problem: `Cloud Storage volume '${m.name}' could not be mounted: bucket '${bucket}' does not exist, or the revision's service account has no access to it.`,
      };
    }
    mounts.push({ source: buckets.dir(bucket), target: m.mountPath, readOnly: gcs.readOnly === true });
  }
  return { mounts };
}

/** The revision's failure for a volume that could not be mounted (its `Ready` condition and operation error). */
export function revisionMountFailed(revision: string, problem: string): string {
  return `Revision '${revision}' is not ready and cannot serve traffic. ${problem}`;
}
