/**
 * Pure builders for the local sandbox: the descriptors and layout the launcher (native/launcher.c) passes down,
 * the bubblewrap argv of the sandbox itself, the session's /etc/passwd, and the host toolchain a template maps
 * to. Kept free of I/O except toolchain lookup, so their shapes have unit tests.
 */
import { accessSync, constants, realpathSync, statSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { UnavailableError } from '../../errors.js';
import type { NetworkMode, Template } from '../../session/model.js';

/** uid/gid of every process inside a session, as seen from inside. */
export const SANDBOX_UID = 1000;
export const SANDBOX_HOME_ROOT = '/home';
export const TOOLCHAIN_MOUNT = '/opt/onmemos/toolchain';
export const SESSION_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Where a session's template command names (`python` for python3, ...) are linked, when the host lacks them. */
export const COMMANDS_DIR = '/opt/onmemos/bin';

/**
 * Each template's toolchain, and the other command names its sessions have: an `alias` is another name of the
 * tool itself (`python` runs python3), a `sibling` a command installed beside it (`gofmt` beside `go`).
 */
const TEMPLATE_TOOLS: Record<
  Template,
  { tool: string; label: string; install: string; aliases: string[]; siblings: string[] }
> = {
  python: { tool: 'python3', label: 'Python', install: 'apt-get install python3', aliases: ['python'], siblings: [] },
  nodejs: {
    tool: 'node',
    label: 'Node.js',
    install: 'apt-get install nodejs',
    aliases: ['nodejs'],
    siblings: ['npm', 'npx'],
  },
  go: { tool: 'go', label: 'Go', install: 'apt-get install golang-go', aliases: [], siblings: ['gofmt'] },
};

export interface Toolchain {
  template: Template;
  /** Host directory bound read-only at TOOLCHAIN_MOUNT, when the toolchain lives outside /usr. */
  hostPrefix?: string;
  /** Extra PATH entries inside the session. */
  path: string[];
  /** Command names the session gets as symlinks in COMMANDS_DIR (`python` → `/usr/bin/python3`). */
  links?: { name: string; target: string }[];
}

function isExecutableFile(p: string): boolean {
  try {
    accessSync(p, constants.X_OK);
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

/** The host directories of SESSION_PATH (inside, /bin and /sbin are links into /usr). */
const SESSION_HOST_DIRS = SESSION_PATH.split(':').map((d) => (d === '/bin' || d === '/sbin' ? `/usr${d}` : d));

/**
 * Finds the host toolchain for a template on the host PATH. Under /usr it is visible in every session as is;
 * elsewhere (say /opt/go) its prefix is bound read-only at TOOLCHAIN_MOUNT. Version-manager shims are
 * skipped: they are scripts that need the manager's home, which a session cannot see. The template's other
 * command names that the session would not find on its PATH become links (`sessionDirs`: the host directories
 * the session's PATH shows).
 */
export function resolveToolchain(
  template: Template,
  hostPath = process.env.PATH ?? '',
  alwaysLook: string[] = ['/usr/local/bin', '/usr/bin'],
  sessionDirs: string[] = SESSION_HOST_DIRS,
): Toolchain {
  const { tool, label, install } = TEMPLATE_TOOLS[template];
  const candidates: { dir: string; real: string }[] = [];
  for (const dir of [...hostPath.split(delimiter), ...alwaysLook]) {
    if (!dir.startsWith('/') || dir.includes('/shims')) continue;
    const p = join(dir, tool);
    if (!isExecutableFile(p)) continue;
    try {
      candidates.push({ dir, real: realpathSync.native(p) });
    } catch {}
  }
  const underUsr = candidates.find((c) => c.dir.startsWith('/usr/') && c.real.startsWith('/usr/'));
  if (underUsr) {
    const path = SESSION_PATH.split(':').includes(underUsr.dir) ? [] : [underUsr.dir];
    const tc: Toolchain = { template, path };
    const found = { path: join(underUsr.dir, tool), real: underUsr.real };
    return { ...tc, links: commandLinks(tc, found, [underUsr.dir, ...sessionDirs]) };
  }
  const other = candidates.find((c) => !/^\/(root|home)(\/|$)/.test(c.real));
  if (other) {
    const hostPrefix = dirname(dirname(other.real));
    const tc: Toolchain = { template, hostPrefix, path: [`${TOOLCHAIN_MOUNT}/bin`] };
    const found = { path: other.real, real: other.real };
    return { ...tc, links: commandLinks(tc, found, [join(hostPrefix, 'bin'), ...sessionDirs]) };
  }
  throw new UnavailableError(
    `template ${template} needs ${label} (\`${tool}\`), which is not installed on this machine`,
    {
      hint: `install it (${install}) or choose another --template`,
    },
  );
}

/** Where a host file shows inside the session (under /usr, or the toolchain prefix), if it does. */
function insidePath(tc: Toolchain, host: string): string | undefined {
  if (tc.hostPrefix && host.startsWith(`${tc.hostPrefix}/`)) return TOOLCHAIN_MOUNT + host.slice(tc.hostPrefix.length);
  return host.startsWith('/usr/') ? host : undefined;
}

/**
 * The template's aliases and siblings that the session would not find in `hostDirs` (the host directories its
 * PATH shows), as links: an alias to the tool, a sibling to the file of that name beside the tool or beside its
 * real file. A name the session already has (a real `python`) is never shadowed.
 */
function commandLinks(
  tc: Toolchain,
  tool: { path: string; real: string },
  hostDirs: string[],
): { name: string; target: string }[] {
  const { aliases, siblings } = TEMPLATE_TOOLS[tc.template];
  /** The path inside the session of an executable host file, if the session sees it (and the file it links to). */
  const inside = (host: string): string | undefined => {
    if (!isExecutableFile(host)) return undefined;
    let real: string;
    try {
      real = realpathSync.native(host);
    } catch {
      return undefined;
    }
    if (insidePath(tc, real) === undefined) return undefined;
    return insidePath(tc, host) ?? insidePath(tc, real);
  };
  const wanted: [string, string[]][] = [
    ...aliases.map((name): [string, string[]] => [name, [tool.path]]),
    ...siblings.map((name): [string, string[]] => [
      name,
      [join(dirname(tool.path), name), join(dirname(tool.real), name)],
    ]),
  ];
  const links: { name: string; target: string }[] = [];
  for (const [name, sources] of wanted) {
    if (hostDirs.some((d) => inside(join(d, name)))) continue;
    const target = sources.map(inside).find((t) => t !== undefined);
    if (target) links.push({ name, target });
  }
  return links;
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

/** Where things are inside a session. */
export const INSIDE = {
  runDir: '/run/onmemos',
  agent: '/run/onmemos/agent.cjs',
  /** node-pty looks for its native module at ./build/Release/ next to the bundle that loads it. */
  ptyNode: '/run/onmemos/build/Release/pty.node',
  /** The fdpass native module (src/native/fdpass.ts), next to the agent, which loads it from there. */
  fdpassNode: '/run/onmemos/fdpass.node',
  /** native/fdexec.c: how a parked process (src/agent/warm.ts) takes an exec's passed descriptors. */
  fdexec: '/run/onmemos/fdexec',
  config: '/run/onmemos/config.json',
  nodePrefix: '/opt/onmemos/node',
  cgroupRoot: '/sys/fs/cgroup',
} as const;

/**
 * The descriptors bwrap starts with: the agent's listening socket at 3, INFO (bwrap reports on it) and NET_READY
 * (slirp4netns' ready pipe) from the creator, and the data descriptors (bwrap copies them into the sandbox), which
 * the launcher opens and hands the sandbox with its go (native/launcher.c).
 */
export const FD = {
  listen: 3,
  info: 4,
  netReady: 5,
  agent: 6,
  ptyNode: 7,
  config: 8,
  passwd: 9,
  group: 10,
  resolvConf: 11,
  seccomp: 12,
  profile: 13,
  /**
   * The agent's second listening socket, for execs that pass their output descriptors (local.ts passOutput), and
   * the fdpass module that receives them; both only where that module was built. No command sees fd 14: the
   * agent makes it close-on-exec (the exec prologue's sh cannot name a descriptor above 9).
   */
  fdListen: 14,
  fdpassNode: 15,
  fdexec: 16,
} as const;

/** How much of the sandbox's own output reaches the session log on the host. */
export const LOG_BYTES = 256 * 1024;

/** The session's data filesystem (workspace, home, tmp) inside the launcher's and the sandbox's mount namespaces. */
export const DATA_MOUNT = '/mnt';

export interface SandboxLayout {
  hostname: string;
  user: string;
  network: NetworkMode;
  toolchain: Toolchain;
  /** Host prefix of node when it is not under /usr (bound read-only at INSIDE.nodePrefix). */
  nodePrefix?: string;
  /** Give /etc/resolv.conf naming slirp4netns' DNS (outbound mode); otherwise the host's is seen. */
  ownResolvConf: boolean;
  /** Host directories of the session's delegated cgroup, bound where the agent makes exec groups. */
  cgroupDirs: { controller: string | null; dir: string }[];
  allowNestedUserns: boolean;
  shmBytes: number;
  runBytes: number;
  /**
   * Host directories mounted into the session (internal: the cloud fakes' stand-in for buckets; see local.ts
   * HostBind). The i-th is staged at `${BINDS_DIR}/i` in the data mount (native/launcher.c) and bound at its target.
   */
  binds?: { target: string; readOnly: boolean }[];
  /** The fdpass module comes in at FD.fdpassNode (and the agent's second socket at FD.fdListen). */
  fdpass?: boolean;
  /** fdexec comes in at FD.fdexec (with fdpass only). */
  fdexec?: boolean;
}

/**
 * Where the launcher (as root) or the sandbox's outer namespace (rootless) mounts each host directory bound into
 * the session before bwrap runs: bwrap, as the session's uid, could not reach a path below a directory only root
 * may enter. Never visible inside: only DATA_MOUNT's own directories are bound there.
 */
export const BINDS_DIR = `${DATA_MOUNT}/.binds`;

/** Host directories a session sees, read-only. Nothing else of the host is mounted. */
const HOST_RO = ['/usr', '/etc'];
const USR_MERGED_LINKS: [string, string][] = [
  ['usr/bin', '/bin'],
  ['usr/sbin', '/sbin'],
  ['usr/lib', '/lib'],
  ['usr/lib64', '/lib64'],
];

/**
 * The bubblewrap argv (after `bwrap`). It runs as root of the session's outer user namespace (native/launcher.c)
 * and makes the inner one in which everything runs as SANDBOX_UID with no capabilities and (unless asked) no
 * further user namespaces. The root is bwrap's own tmpfs built from read-only binds: the host root is never
 * bound, so /root, /home, /opt, /var and the onmemos state stay invisible; the session's own files come from
 * descriptors (no host path appears in /proc/self/mountinfo) and from its data filesystem at DATA_MOUNT.
 */
export function bwrapArgs(l: SandboxLayout): string[] {
  const a: string[] = ['--unshare-user', '--uid', String(SANDBOX_UID), '--gid', String(SANDBOX_UID)];
  if (!l.allowNestedUserns) a.push('--disable-userns');
  a.push('--unshare-pid', '--unshare-ipc', '--unshare-uts', '--unshare-cgroup');
  // Outbound and host share the outer namespace's network (slirp4netns' tap0, or the host's); isolated gets
  // one of its own with only loopback.
  if (l.network === 'isolated') a.push('--unshare-net');
  a.push('--die-with-parent', '--new-session', '--clearenv', '--hostname', l.hostname);
  for (const p of HOST_RO) a.push('--ro-bind', p, p);
  for (const [target, link] of USR_MERGED_LINKS) a.push('--symlink', target, link);
  a.push('--ro-bind-data', String(FD.passwd), '/etc/passwd', '--ro-bind-data', String(FD.group), '/etc/group');
  if (l.ownResolvConf) a.push('--ro-bind-data', String(FD.resolvConf), '/etc/resolv.conf');
  // The host's /etc/profile with the session's PATH restored at its end: Debian's resets PATH in login shells.
  a.push('--ro-bind-data', String(FD.profile), '/etc/profile');
  a.push('--proc', '/proc', '--dev', '/dev');
  a.push('--size', String(l.shmBytes), '--perms', '1777', '--tmpfs', '/dev/shm');
  a.push('--size', String(l.runBytes), '--tmpfs', '/run', '--dir', INSIDE.runDir);
  a.push('--ro-bind-data', String(FD.agent), INSIDE.agent, '--ro-bind-data', String(FD.config), INSIDE.config);
  a.push('--ro-bind-data', String(FD.ptyNode), INSIDE.ptyNode);
  if (l.fdpass) a.push('--ro-bind-data', String(FD.fdpassNode), INSIDE.fdpassNode);
  if (l.fdpass && l.fdexec) a.push('--perms', '0555', '--ro-bind-data', String(FD.fdexec), INSIDE.fdexec);
  a.push('--dir', '/var', '--bind', `${DATA_MOUNT}/vartmp`, '/var/tmp');
  a.push('--bind', `${DATA_MOUNT}/tmp`, '/tmp');
  a.push('--bind', `${DATA_MOUNT}/workspace`, '/workspace');
  a.push('--size', '65536', '--tmpfs', SANDBOX_HOME_ROOT);
  a.push('--bind', `${DATA_MOUNT}/home`, `${SANDBOX_HOME_ROOT}/${l.user}`);
  // After /workspace and the home, so that a target below them is mounted on top (bwrap makes the directory).
  for (const [i, b] of (l.binds ?? []).entries())
    a.push(b.readOnly ? '--ro-bind' : '--bind', `${BINDS_DIR}/${i}`, b.target);
  // The template's command names the host lacks (python for python3, ...), in a directory last on the PATH.
  const links = l.toolchain.links ?? [];
  if (links.length > 0) a.push('--dir', COMMANDS_DIR);
  for (const link of links) a.push('--symlink', link.target, `${COMMANDS_DIR}/${link.name}`);
  if (l.toolchain.hostPrefix) a.push('--ro-bind', l.toolchain.hostPrefix, TOOLCHAIN_MOUNT);
  if (l.nodePrefix) a.push('--ro-bind', l.nodePrefix, INSIDE.nodePrefix);
  for (const c of l.cgroupDirs)
    a.push('--bind', c.dir, c.controller ? `${INSIDE.cgroupRoot}/${c.controller}` : INSIDE.cgroupRoot);
  // The root and /dev are bwrap's own tmpfs, which belong to the session user: read-only, so nothing is written
  // outside the session's sized filesystems (its disk, /dev/shm, /run).
  a.push('--remount-ro', '/dev', '--remount-ro', '/');
  a.push('--chdir', '/workspace', '--info-fd', String(FD.info), '--seccomp', String(FD.seccomp));
  const node = l.nodePrefix ? `${INSIDE.nodePrefix}/bin/node` : '/usr/bin/node';
  a.push('--', node, INSIDE.agent, INSIDE.config);
  return a;
}

/** The session's /etc/profile: the host's, then the session's PATH (what `onmemos shell`, a login shell, sees). */
export function profileFile(hostProfile: string, path: string): string {
  const quoted = `'${path.replaceAll("'", "'\\''")}'`;
  return `${hostProfile.replace(/\n?$/, '\n')}# onmemos: the session's PATH, which the lines above may have reset\nPATH=${quoted}\nexport PATH\n`;
}

export function sessionPath(tc: Toolchain): string {
  return [...tc.path, SESSION_PATH, ...(tc.links?.length ? [COMMANDS_DIR] : [])].join(':');
}
