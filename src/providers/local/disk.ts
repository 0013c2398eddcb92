/** The session's disk: a size-bounded filesystem for /workspace, the home directory and /tmp (as root). */
import { chmodSync, chownSync, mkdirSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
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
 * A sparse file of the session's disk limit at `path`, and next to it (`path.d`) the template of its directories:
 * DATA_DIRS, owned by the session's host uid. The launcher makes the image an ext4 filesystem from them (mkfsArgv,
 * native/launcher.c), so nothing in the session has to make them, and mounts it (loop, nosuid, nodev) as the
 * session's /workspace, home and /tmp. No journal (the data does not outlive the session) and no resize inode (it
 * never grows): mkfs then writes 228 KiB for 10 GiB, in ~4 ms. The template goes with the session's directory.
 */
export function prepareDiskImage(path: string, bytes: number, uid: number): void {
  writeFileSync(path, '', { mode: 0o600 });
  truncateSync(path, bytes);
  const template = `${path}.d`;
  rmSync(template, { recursive: true, force: true });
  mkdirSync(template, { mode: 0o700 });
  for (const [name, mode] of DATA_DIRS) {
    const d = `${template}/${name}`;
    mkdirSync(d);
    chmodSync(d, mode);
    chownSync(d, uid, uid);
  }
}

/** The session's disk image made at once, as the launcher makes it (for the benchmark of what limits cost). */
export async function makeDiskImage(path: string, bytes: number, uid: number): Promise<string> {
  prepareDiskImage(path, bytes, uid);
  try {
    await mkfs(path, uid);
  } finally {
    rmSync(`${path}.d`, { recursive: true, force: true });
  }
  return path;
}

/** mkfs.ext4's argv (from its path) for the image at `path`, from its template (prepareDiskImage), owned by `uid`. */
export function mkfsArgv(path: string, uid: number): string[] {
  return [MKFS, ...MKFS_OPTIONS, '-E', `root_owner=${uid}:${uid},${MKFS_EXTENDED}`, '-d', `${path}.d`, path];
}

async function mkfs(path: string, uid: number): Promise<void> {
  const { execFile } = await import('node:child_process');
  const [program, ...args] = mkfsArgv(path, uid);
  await new Promise<void>((resolve, reject) => {
    execFile(program!, args, { env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' } }, (e, _out, err) =>
      e ? reject(new ProviderError(`mkfs.ext4 failed: ${String(err).trim() || e.message}`)) : resolve(),
    );
  });
}
