/**
 * The fakes' stand-in for Cloud Storage: a directory per bucket under the fake's own directory (`{dir}/buckets/NAME`).
 * Which buckets exist is the fake's configuration (`buckets` option, `npm run fake -- kube|cloudrun --bucket NAME`,
 * or `add` later); a pod or revision that mounts one sees that directory (the local provider's internal host binds,
 * src/providers/local/local.ts HostBind), and one that names another fails as GKE and Cloud Run fail it.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

/**
 * GCS's bucket-name rules (3 to 63 characters of lowercase letters, digits, `-`, `_` and `.`, beginning and ending
 * with a letter or digit; names with dots may be up to 222, which the fake does not take): the reason a name is not
 * one, else undefined.
 */
export function bucketNameProblem(name: string): string | undefined {
  if (!/^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$/.test(name)) {
    return 'a bucket name has 3 to 63 lowercase letters, digits, "-", "_" and ".", and begins and ends with a letter or digit';
  }
  if (name.includes('..')) return 'a bucket name has no ".." in it';
  if (name.startsWith('goog')) return 'a bucket name does not begin with "goog"';
  return undefined;
}

export class Buckets {
  private readonly names = new Set<string>();

  /** `root` is made (0700) if it is not there; each name becomes a directory in it. */
  constructor(
    readonly root: string,
    names: readonly string[] = [],
    /** Called after `add` (the kube fake then tries its waiting pods' mounts again). */
    private readonly onAdd: () => void = () => {},
  ) {
    mkdirSync(root, { recursive: true, mode: 0o700 });
    for (const n of names) this.add(n);
  }

  /** Makes a bucket (its directory); a name that is already one is fine. Throws on a name GCS would refuse. */
  add(name: string): string {
    const why = bucketNameProblem(name);
    if (why) throw new Error(`invalid bucket name ${JSON.stringify(name)}: ${why}`);
    const dir = join(this.root, name);
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    this.names.add(name);
    this.onAdd();
    return dir;
  }

  has(name: string): boolean {
    return this.names.has(name);
  }

  /** The bucket's directory on the host (whether or not the bucket exists). */
  dir(name: string): string {
    if (bucketNameProblem(name)) throw new Error(`invalid bucket name ${JSON.stringify(name)}`);
    return join(this.root, name);
  }

  list(): string[] {
    return [...this.names].sort();
  }
}
