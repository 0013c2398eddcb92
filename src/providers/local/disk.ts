/** The session's disk: a size-bounded filesystem for /workspace, the home directory and /tmp (as root). */
import { truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ProviderError } from '../../errors.js';

export const MKFS = '/usr/sbin/mkfs.ext4';

/**
 * The directories of a session's data filesystem, with their modes, all owned by the session's uid: the sandbox
 * binds them at /workspace, /home/<user>, /tmp and /var/tmp (sandbox.ts bwrapArgs).
 */
export const DATA_DIRS: [string, number][] = [
  ['workspace', 0o755],
  ['home', 0o700],
  ['tmp', 0o1777],
  ['vartmp', 0o1777],
];

/** mkfs.ext4's options for a session's disk, but for `-E root_owner=…` (MKFS_EXTENDED follows it there). */
export const MKFS_OPTIONS = ['-q', '-F', '-m', '0', '-O', '^has_journal,^resize_inode'];
export const MKFS_EXTENDED = 'lazy_itable_init=1,nodiscard';

/**
 * The session's disk: a sparse file of its disk limit at `path`. The launcher (native/launcher.c) copies the
 * blocks of an empty ext4 filesystem of that size into it from the disk cache (diskCache: made once per size by
 * mkfsArgv; 228 KiB of data for 10 GiB, so a copy is a fraction of a ms where mkfs takes ~5), mounts it (loop,
 * nosuid, nodev), makes DATA_DIRS in it and gives them and its root to the session's host uid: the session's
 * /workspace, home and /tmp. No journal (the data does not outlive the session) and no resize inode (it never
 * grows). Every session's filesystem has the cache's UUID and hash seed: none of them is a secret, and ext4 does
 * not mind two mounts with one UUID.
 */
export function prepareDiskImage(path: string, bytes: number): void {
  writeFileSync(path, '', { mode: 0o600 });
  truncateSync(path, bytes);
}

/**
 * Where the empty filesystem of `bytes` is kept (made by the first launcher that needs it), in the state
 * directory, named by its size and mkfs' options (a change of them makes a new one).
 */
export function diskCache(stateRoot: string, bytes: number): string {
  // FNV-1a of the options: a name, not a secret (node:crypto costs a create ~1 ms to load).
  let h = 0x811c9dc5;
  for (const c of JSON.stringify([MKFS_OPTIONS, MKFS_EXTENDED])) h = Math.imul(h ^ c.charCodeAt(0), 0x01000193) >>> 0;
  return join(stateRoot, 'local', 'disks', `ext4-${bytes}-${h.toString(16).padStart(8, '0')}.img`);
}

/** mkfs.ext4's argv (from its path) that makes the empty filesystem at `path` (a sparse file of the disk's size). */
export function mkfsArgv(path: string): string[] {
  return [MKFS, ...MKFS_OPTIONS, '-E', MKFS_EXTENDED, path];
}

/** A session's disk made at once without the cache: mkfs of a new image (for the benchmark of what limits cost). */
export async function makeDiskImage(path: string, bytes: number): Promise<string> {
  prepareDiskImage(path, bytes);
  const { execFile } = await import('node:child_process');
  const [program, ...args] = mkfsArgv(path);
  await new Promise<void>((resolve, reject) => {
    execFile(program!, args, { env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' } }, (e, _out, err) =>
      e ? reject(new ProviderError(`mkfs.ext4 failed: ${String(err).trim() || e.message}`)) : resolve(),
    );
  });
  return path;
}
