/** The session's disk: a size-bounded filesystem for /workspace, the home directory and /tmp (as root). */
import { writeFileSync } from 'node:fs';
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

/**
 * A sparse ext4 image of the session's disk limit, its root and DATA_DIRS owned by the session's host uid: the
 * launcher mounts it (loop, nosuid, nodev) as the session's /workspace, home and /tmp. No journal (the data does
 * not outlive the session) and no resize inode (it never grows): mkfs then writes 228 KiB for 10 GiB, in ~6 ms.
 * The directories are written by mkfs itself (-d, from a template made next to the image and removed after), so
 * nothing in the session has to make them.
 */
export async function makeDiskImage(path: string, bytes: number, uid: number): Promise<string> {
  const { chmodSync, chownSync, mkdirSync, rmSync, truncateSync } = await import('node:fs');
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
  try {
    await mkfs(path, uid, template);
  } finally {
    rmSync(template, { recursive: true, force: true });
  }
  return path;
}

async function mkfs(path: string, uid: number, template: string): Promise<void> {
  const { execFile } = await import('node:child_process');
  await new Promise<void>((resolve, reject) => {
    execFile(
      MKFS,
      [
        '-q',
        '-F',
        '-m',
        '0',
        '-O',
        '^has_journal,^resize_inode',
        '-E',
        `root_owner=${uid}:${uid},lazy_itable_init=1,nodiscard`,
        '-d',
        template,
        path,
      ],
      { env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' } },
      (e, _out, err) =>
        e ? reject(new ProviderError(`mkfs.ext4 failed: ${String(err).trim() || e.message}`)) : resolve(),
    );
  });
}
