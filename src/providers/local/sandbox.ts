/**
 * Pure builders for the local sandbox: the bubblewrap command that starts a session, the nsenter command
 * that runs a process inside it, the session's /etc/passwd, and the host toolchain a template maps to.
 * Kept free of I/O except toolchain lookup, so the argv shapes have unit tests.
 */
import { accessSync, constants, realpathSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { UnavailableError } from '../../errors.js';
import type { NetworkMode, Template } from '../../session/model.js';

/** uid/gid of every process inside a session, as seen from inside. */
export const SANDBOX_UID = 1000;
export const SANDBOX_HOME_ROOT = '/home';
export const TOOLCHAIN_MOUNT = '/opt/onmemos/toolchain';
export const SESSION_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

const TEMPLATE_TOOLS: Record<Template, { tool: string; label: string; install: string }> = {
  python: { tool: 'python3', label: 'Python', install: 'apt-get install python3' },
  nodejs: { tool: 'node', label: 'Node.js', install: 'apt-get install nodejs' },
  go: { tool: 'go', label: 'Go', install: 'apt-get install golang-go' },
};

export interface Toolchain {
  template: Template;
  /** Host directory bound read-only at TOOLCHAIN_MOUNT, when the toolchain lives outside /usr. */
  hostPrefix?: string;
  /** Extra PATH entries inside the session. */
  path: string[];
}

function isExecutable(p: string): boolean {
  try {
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Finds the host toolchain for a template on the host PATH. Under /usr it is visible in every session as is;
 * elsewhere (say /opt/go) its prefix is bound read-only at TOOLCHAIN_MOUNT. Version-manager shims are
 * skipped: they are scripts that need the manager's home, which a session cannot see.
 */
export function resolveToolchain(
  template: Template,
  hostPath = process.env.PATH ?? '',
  alwaysLook: string[] = ['/usr/local/bin', '/usr/bin'],
): Toolchain {
  const { tool, label, install } = TEMPLATE_TOOLS[template];
  const candidates: { dir: string; real: string }[] = [];
  for (const dir of [...hostPath.split(delimiter), ...alwaysLook]) {
    if (!dir.startsWith('/') || dir.includes('/shims')) continue;
    const p = join(dir, tool);
    if (!isExecutable(p)) continue;
    try {
      candidates.push({ dir, real: realpathSync(p) });
    } catch {}
  }
  const underUsr = candidates.find((c) => c.dir.startsWith('/usr/') && c.real.startsWith('/usr/'));
  if (underUsr) {
    return { template, path: SESSION_PATH.split(':').includes(underUsr.dir) ? [] : [underUsr.dir] };
  }
  const other = candidates.find((c) => !/^\/(root|home)(\/|$)/.test(c.real));
  if (other) return { template, hostPrefix: dirname(dirname(other.real)), path: [`${TOOLCHAIN_MOUNT}/bin`] };
  throw new UnavailableError(
    `template ${template} needs ${label} (\`${tool}\`), which is not installed on this machine`,
    {
      hint: `install it (${install}) or choose another --template`,
    },
  );
}

export function passwdFile(user: string): string {
  return (
    `root:x:0:0:root:/root:/usr/sbin/nologin\n` +
    `${user}:x:${SANDBOX_UID}:${SANDBOX_UID}:${user}:${SANDBOX_HOME_ROOT}/${user}:/bin/bash\n` +
    `nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n`
  );
}

export function groupFile(user: string): string {
  return `root:x:0:\n${user}:x:${SANDBOX_UID}:\nnogroup:x:65534:\n`;
}

export interface SandboxLayout {
  hostname: string;
  user: string;
  network: NetworkMode;
  /**
   * Where bwrap finds the session's own directory (see LAUNCH_MOUNT): `data/{workspace,home,tmp}`, `passwd`,
   * `group`, `resolv.conf`.
   */
  sessionDir: string;
  /** Bind a resolv.conf naming slirp4netns' DNS (outbound mode); otherwise the host's is used. */
  ownResolvConf: boolean;
  toolchain: Toolchain;
  /** fd (in bwrap) to which it writes its info JSON (child-pid and namespace ids). */
  infoFd: number;
  /** How long the session's main process lives: the session ends with it (at its TTL). */
  lifetimeSeconds: number;
}

/** Host directories a session sees, read-only. Nothing else of the host is mounted. */
const HOST_RO = ['/usr', '/etc'];
const USR_MERGED_LINKS: [string, string][] = [
  ['usr/bin', '/bin'],
  ['usr/sbin', '/sbin'],
  ['usr/lib', '/lib'],
  ['usr/lib64', '/lib64'],
];

/**
 * The bubblewrap argv (after `bwrap`) for a session. The root is bwrap's own tmpfs built from read-only binds
 * (the host root itself is never bound, so /root, /home, /opt, /var and the onmemos state stay invisible);
 * all namespaces are new, including the user namespace, in which the session runs as SANDBOX_UID with no
 * capabilities.
 */
export function bwrapArgs(l: SandboxLayout): string[] {
  const a: string[] = ['--unshare-all', '--unshare-user', '--uid', String(SANDBOX_UID), '--gid', String(SANDBOX_UID)];
  a.push('--clearenv'); // the launcher's environment is onmemos' business, not the session's
  if (l.network === 'host') a.push('--share-net');
  a.push('--hostname', l.hostname);
  for (const p of HOST_RO) a.push('--ro-bind', p, p);
  for (const [target, link] of USR_MERGED_LINKS) a.push('--symlink', target, link);
  const d = l.sessionDir;
  a.push('--ro-bind', `${d}/passwd`, '/etc/passwd', '--ro-bind', `${d}/group`, '/etc/group');
  if (l.ownResolvConf) a.push('--ro-bind', `${d}/resolv.conf`, '/etc/resolv.conf');
  a.push(
    '--proc',
    '/proc',
    '--dev',
    '/dev',
    '--tmpfs',
    '/dev/shm',
    '--tmpfs',
    '/run',
    '--dir',
    '/var',
    '--dir',
    '/var/tmp',
  );
  a.push('--bind', `${d}/data/tmp`, '/tmp');
  a.push('--dir', '/workspace', '--bind', `${d}/data/workspace`, '/workspace');
  a.push('--tmpfs', SANDBOX_HOME_ROOT, '--dir', `${SANDBOX_HOME_ROOT}/${l.user}`);
  a.push('--bind', `${d}/data/home`, `${SANDBOX_HOME_ROOT}/${l.user}`);
  if (l.toolchain.hostPrefix) a.push('--dir', '/opt', '--ro-bind', l.toolchain.hostPrefix, TOOLCHAIN_MOUNT);
  a.push('--chdir', '/workspace', '--info-fd', String(l.infoFd));
  a.push('--', '/usr/bin/sleep', String(Math.max(1, Math.ceil(l.lifetimeSeconds))));
  return a;
}

/**
 * bwrap switches to the sandbox's unprivileged host uid before it resolves its bind sources, so it cannot
 * reach a session directory under root's private state directory (say /root/.local/state). It is therefore
 * started from a private mount namespace of its own in which the session directory is bind-mounted here;
 * the host never sees that mount.
 */
export const LAUNCH_MOUNT = '/mnt';

/**
 * The launcher (run by `unshare --mount`): binds the session directory at LAUNCH_MOUNT, runs bwrap and waits
 * for it. bwrap's main process sleeps until the TTL, so the launcher is also the session's expiry timer: when
 * the sandbox has ended at or after its expiry it runs `onmemos rm --force` for it. Values arrive as positional
 * parameters and environment variables; nothing is spliced into the script.
 */
const LAUNCHER = [
  'mount --bind "$0" /mnt || exit 125',
  '"$@"',
  'umount /mnt',
  '[ "$(date +%s)" -lt "$ONMEMOS_EXPIRES_AT" ] || exec "$ONMEMOS_NODE" "$ONMEMOS_BIN" --local rm --force -- "$ONMEMOS_SESSION"',
].join('\n');

/** argv (for `unshare`) of the launcher running `command` with `sessionDir` visible at LAUNCH_MOUNT. */
export function launcherArgs(sessionDir: string, command: string[]): string[] {
  return ['--mount', '--propagation', 'private', '--', '/bin/sh', '-c', LAUNCHER, sessionDir, ...command];
}

/**
 * The argv that runs `argv` inside a running session whose pid 1 has host pid `initPid`: nsenter (as host
 * root) joins every namespace of the session (its user namespace last) and becomes SANDBOX_UID with no
 * supplementary groups, so exec'ing the command leaves it no capabilities. It starts in the session's
 * /workspace; another directory goes through a fixed sh script that takes the directory and the argv as
 * positional parameters (nothing is ever spliced into the script). A missing command exits 127, one that
 * cannot run 126, a missing directory 125 — as docker exec reports them.
 */
export function nsenterArgs(initPid: number, cwd: string | undefined, argv: string[]): string[] {
  const run =
    cwd === undefined
      ? argv
      : [
          '/bin/sh',
          '-c',
          'cd -- "$0" 2>/dev/null || { echo "onmemos: no such directory: $0" >&2; exit 125; }; exec "$@"',
          cwd,
          ...argv,
        ];
  return [
    '-t',
    String(initPid),
    '-U',
    '-m',
    '-p',
    '-i',
    '-u',
    '-n',
    '-C',
    '-r',
    '-w',
    '-S',
    String(SANDBOX_UID),
    '-G',
    String(SANDBOX_UID),
    '--',
    ...run,
  ];
}

export function sessionPath(tc: Toolchain): string {
  return [...tc.path, SESSION_PATH].join(':');
}
