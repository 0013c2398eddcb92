/**
 * The launch of one sandbox: given a session directory and its record, start the launcher (native/launcher.c,
 * built to dist/launcher), write the files the sandbox receives by descriptor, give the launcher its go-ahead, and
 * wait until the sandbox runs (bwrap's child is up, and its network). The launcher makes the agent's listening
 * socket before the sandbox starts, so nothing waits for the agent itself: a first exec's connection waits in the
 * socket's backlog while the agent starts (which overlaps that exec's own start-up), and an agent that cannot
 * start ends the sandbox (it is its first process), which the session's status then shows. The local provider (local.ts) owns the record and what
 * happens around this; nothing here decides a session's state.
 */
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  read,
  readFileSync,
  realpathSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { InterruptedError, ProviderError, UnavailableError } from '../../errors.js';
import { fdexecPath, fdpassPath, loadFdPass } from '../../native/fdpass.js';
import { binPath, packageRoot } from '../../paths.js';
import { sessionEnvironment } from '../../session/model.js';
import type { CgroupSystem } from './cgroups.js';
import { DATA_DIRS, diskCache, MKFS, mkfsArgv } from './disk.js';
import { tunOpenToAll } from './host.js';
import { killTree, type ProcRef, procRef } from './proc.js';
import {
  BINDS_DIR,
  bwrapArgs,
  DATA_MOUNT,
  FD,
  groupFile,
  LOG_BYTES,
  passwdFile,
  profileFile,
  type resolveToolchain,
  SANDBOX_HOME_ROOT,
  sessionPath,
} from './sandbox.js';
import type { LocalRecord } from './store.js';

/** The agent's second socket, in the session directory next to agent.sock: execs that pass descriptors. */
export const FDPASS_SOCKET = 'fdpass.sock';

export const BIN = {
  bash: '/bin/bash',
  bwrap: '/usr/bin/bwrap',
  slirp4netns: '/usr/bin/slirp4netns',
};
/**
 * Every program the local provider runs, with the Debian package that has it (for a clear error). bash is the
 * sessions' shell and the agent's parked process (src/agent/warm.ts).
 */
const NEEDED: [string, string][] = [
  [BIN.bwrap, 'bubblewrap'],
  [BIN.slirp4netns, 'slirp4netns'],
  [BIN.bash, 'bash'],
];
const NEEDED_AS_ROOT: [string, string][] = [[MKFS, 'e2fsprogs']];

const START_TIMEOUT_MS = 15_000;
const SHM_BYTES = 64 * 1024 * 1024;
const RUN_BYTES = 16 * 1024 * 1024;

/** Every program the local provider runs as this user (root runs one more), with the Debian package that has it. */
export function hostPrograms(root: boolean): [path: string, pkg: string][] {
  return root ? [...NEEDED, ...NEEDED_AS_ROOT] : NEEDED;
}

/** Throws UnavailableError naming the package for the first program this machine lacks. */
export function checkHost(root: boolean, stateRoot: string): void {
  for (const [path, pkg] of hostPrograms(root)) {
    if (!existsSync(path)) {
      throw new UnavailableError(`the local provider needs ${path}, which is missing`, {
        hint: `apt-get install -y ${pkg}`,
      });
    }
  }
  checkStateRoot(stateRoot);
}

/** Throws UnavailableError when the state directory's path cannot hold the sessions' sockets. */
export function checkStateRoot(stateRoot: string): void {
  if (stateRoot.includes(':')) {
    throw new UnavailableError(`the state directory ${stateRoot} contains ':', which socket URLs cannot carry`, {
      hint: 'set ONMEMOS_STATE_DIR to another directory',
    });
  }
}

export interface LaunchPlan {
  /** The session directory (0700), where the socket, the log and the files go. */
  dir: string;
  rec: LocalRecord;
  stateRoot: string;
  root: boolean;
  toolchain: ReturnType<typeof resolveToolchain>;
  seccomp: Buffer;
  userEnv: Record<string, string>;
  /** The session's cgroup, for the agent (as it sees it) and the launcher (the files it joins). */
  cgroups?: { sandboxDirs: { controller: string | null; dir: string }[]; joinFiles: string[]; inside: CgroupSystem };
  /** As root: the session's disk image (disk.ts prepareDiskImage), made and mounted by the launcher. */
  image?: string;
  diskBytes: number;
  /** Host directories mounted into the session (internal: the cloud fakes' buckets; local.ts HostBind). */
  binds?: { source: string; target: string; readOnly: boolean }[];
  signal?: AbortSignal;
  /** Called as soon as the launcher runs (so a concurrent `rm` can kill it) and once the sandbox's pid is known. */
  onLauncher(ref: ProcRef): void;
  onInit(ref: ProcRef): void;
}

/**
 * Starts the sandbox and resolves once its agent answers; on failure the launcher is killed. The launcher starts
 * first: it makes the disk and the sandbox's namespaces while this process writes the session's files, then at
 * the go-ahead opens them and makes the agent's sockets itself (native/launcher.c).
 */
export async function launchSandbox(plan: LaunchPlan): Promise<void> {
  const { dir, rec } = plan;
  const native = loadFdPass();
  if (!native?.spawnDetached || !native.pipe) {
    throw new UnavailableError('the local provider needs the native module dist/fdpass.node, which did not load', {
      hint: 'run npm run build (its native step needs make and a C compiler: apt-get install -y build-essential)',
    });
  }
  let launcher: number | undefined;
  /** Descriptors of this process's for the launch, until each is closed (release) or handed to its reader. */
  const ours = new Set<number>();
  const release = (fd: number) => {
    if (ours.delete(fd)) closeSync(fd);
  };
  try {
    const node = nodeLayout();
    // Where the fdpass module loads here, the agent gets it and a second socket, for execs that pass descriptors.
    const fdpassNode = fdpassPath();
    const fdexec = fdpassNode ? fdexecPath() : undefined;
    const bwrap = bwrapArgs({
      hostname: rec.id.slice(0, 63),
      user: rec.user,
      network: rec.network,
      toolchain: plan.toolchain,
      nodePrefix: node.hostPrefix,
      ownResolvConf: rec.network === 'outbound',
      cgroupDirs: plan.cgroups?.sandboxDirs ?? [],
      allowNestedUserns: rec.nested_userns,
      shmBytes: SHM_BYTES,
      runBytes: RUN_BYTES,
      binds: plan.binds?.map((b) => ({ target: b.target, readOnly: b.readOnly })),
      fdpass: !!fdpassNode,
      fdexec: !!fdexec,
    });
    const joinFiles = plan.cgroups?.joinFiles ?? [];
    if (joinFiles.some((f) => /\s/.test(f))) throw new UnavailableError('cgroup paths with spaces are not supported');
    // What the go brings the sandbox, by descriptor: files the launcher opens, sockets it makes (in `dir`).
    const data: Record<number, string> = {
      [FD.agent]: agentBundle(),
      [FD.ptyNode]: ptyNative(),
      [FD.config]: join(dir, SESSION_FILES.config),
      [FD.passwd]: join(dir, SESSION_FILES.passwd),
      [FD.group]: join(dir, SESSION_FILES.group),
      [FD.resolvConf]: join(dir, SESSION_FILES.resolvConf),
      [FD.seccomp]: join(dir, SESSION_FILES.seccomp),
      [FD.profile]: join(dir, SESSION_FILES.profile),
    };
    const sockets: Record<number, string> = { [FD.listen]: AGENT_SOCKET };
    if (fdpassNode) {
      sockets[FD.fdListen] = FDPASS_SOCKET;
      data[FD.fdpassNode] = fdpassNode;
      if (fdexec) data[FD.fdexec] = fdexec;
    }
    // The launcher's environment: every value it takes (native/launcher.c). None reaches a shell.
    const env: Record<string, string> = {
      PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
      ONMEMOS_KEEP_FDS: `${FD.info} ${FD.netReady}`,
      ONMEMOS_NET_READY_FD: String(FD.netReady),
      ONMEMOS_NETWORK: rec.network,
      ONMEMOS_UNSHARE_NET: rec.network === 'host' ? '' : '1',
      ONMEMOS_CGROUP_JOIN: joinFiles.join(' '),
      ONMEMOS_DATA_MOUNT: DATA_MOUNT,
      ONMEMOS_DATA_DIRS: DATA_DIRS.map(([name, mode]) => `${name}:${mode.toString(8)}`).join(' '),
      ONMEMOS_LOG_BYTES: String(LOG_BYTES),
      ONMEMOS_SLIRP4NETNS: BIN.slirp4netns,
      ONMEMOS_SESSION_DIR: dir,
      ONMEMOS_EXPIRES_FILE: join(dir, 'expires'),
      ONMEMOS_NODE: process.execPath,
      ONMEMOS_BIN: binPath(),
      ONMEMOS_SESSION: rec.id,
      ONMEMOS_STATE_DIR: plan.stateRoot,
      ...Object.fromEntries(Object.entries(data).map(([n, path]) => [`ONMEMOS_FD_${n}`, path])),
      ...Object.fromEntries(Object.entries(sockets).map(([n, name]) => [`ONMEMOS_SOCKET_${n}`, name])),
      // The sources of the binds, each staged by the launcher (as root) or the sandbox's first process.
      ONMEMOS_BINDS: String(plan.binds?.length ?? 0),
      ONMEMOS_BINDS_DIR: BINDS_DIR,
      ...Object.fromEntries((plan.binds ?? []).map((b, i) => [`ONMEMOS_BIND_${i}`, b.source])),
    };
    let mkfs: string[] = [];
    if (plan.root) {
      env.ONMEMOS_UID = String(rec.host_uid);
      env.ONMEMOS_IMAGE = plan.image!;
      // The disk's filesystem is copied from the cache; a launcher that finds none makes it (at a name of its own,
      // then renamed into place).
      const cache = diskCache(plan.stateRoot, plan.diskBytes);
      mkdirSync(dirname(cache), { recursive: true, mode: 0o700 });
      env.ONMEMOS_DISK_CACHE = cache;
      env.ONMEMOS_DISK_CACHE_NEW = `${cache}.${process.pid}.${rec.id}`;
      mkfs = mkfsArgv(env.ONMEMOS_DISK_CACHE_NEW);
      // The launcher's own mount namespace: what it mounts after the sandbox's is made (the disk) reaches it.
      env.ONMEMOS_PROPAGATION = 'slave';
      if (rec.network === 'outbound' && !tunOpenToAll()) env.ONMEMOS_TUN_NODE = '1';
    } else {
      env.ONMEMOS_DATA_TMPFS = String(plan.diskBytes);
      // The host's mount namespace: nothing mounted there later reaches the session.
      env.ONMEMOS_PROPAGATION = 'private';
    }
    const argv = ['onmemos-launcher', String(mkfs.length), ...mkfs, BIN.bwrap, ...bwrap];
    // The launcher's descriptors: the go-ahead (0), the session log (1, 2), bwrap's info and slirp4netns' ready
    // pipes. posix_spawn, not child_process: loading that costs a create ~4 ms.
    const own = <T extends number[]>(fds: T): T => {
      for (const fd of fds) ours.add(fd);
      return fds;
    };
    const [log] = own([openSync(join(dir, 'sandbox.log'), 'a', 0o600)] as [number]);
    const go = own(native.pipe());
    const info = own(native.pipe());
    const netReady = own(native.pipe());
    const fds = [go[0], log, log, -1, -1, -1];
    fds[FD.info] = info[1];
    fds[FD.netReady] = netReady[1];
    const envList = Object.entries(env).map(([k, v]) => `${k}=${v}`);
    launcher = native.spawnDetached(launcherPath(), argv, envList, fds);
    for (const fd of [log, go[0], info[1], netReady[1]]) release(fd);
    const ref = procRef(launcher);
    if (!ref) throw new ProviderError(`the launcher did not start: ${sandboxLog(dir)}`);
    plan.onLauncher(ref); // a claim by `rm` from now on finds the launcher and kills it
    writeSessionFiles(plan, !!fdpassNode, !!fdexec);
    try {
      writeSync(go[1], 'go\n');
    } catch {
      // The launcher is gone (an `rm` that claimed the session killed it): its status pipe says so, below.
    }
    release(go[1]);
    // Each reader closes its pipe itself, once no read of it is in flight.
    ours.delete(info[0]);
    ours.delete(netReady[0]);
    const [started, net] = await Promise.all([
      readJson(info[0], plan.signal, closeSync),
      readUntil(netReady[0], (s) => s.includes('1'), plan.signal, closeSync, true),
    ]).catch((e: Error) => {
      if (e instanceof InterruptedError) throw e;
      throw new ProviderError(`${e.message}: ${sandboxLog(dir)}`, { cause: e });
    });
    const init = procRef(Number(started['child-pid']));
    if (init) plan.onInit(init);
    if (rec.network === 'outbound' && !net.includes('1')) {
      throw new ProviderError(`could not start the session network: ${sandboxLog(dir)}`);
    }
  } catch (e) {
    if (launcher) killTree(launcher, { includeRoot: true, group: true }); // bwrap is in its group
    throw e;
  } finally {
    for (const fd of ours) release(fd);
  }
}

/** The agent's listening socket, in the session directory (made by the launcher). */
export const AGENT_SOCKET = 'agent.sock';

/** The files bwrap copies into the session from descriptors, by their names in the session directory. */
const SESSION_FILES = {
  config: 'config.json',
  passwd: 'passwd',
  group: 'group',
  resolvConf: 'resolv.conf',
  seccomp: 'seccomp.bpf',
  profile: 'profile',
} as const;

/** Writes SESSION_FILES (so no host path shows inside: bwrap copies them in from descriptors). */
function writeSessionFiles(plan: LaunchPlan, fdpass: boolean, fdexec: boolean): void {
  const { dir, rec } = plan;
  const shell = existsSync('/usr/bin/bash') ? '/bin/bash' : '/bin/sh';
  const env: Record<string, string> = {
    PATH: sessionPath(plan.toolchain),
    HOME: `${SANDBOX_HOME_ROOT}/${rec.user}`,
    LOGNAME: rec.user,
    SHELL: shell,
    LANG: 'C.UTF-8',
    HOSTNAME: rec.id.slice(0, 63),
    ...plan.userEnv,
    ...sessionEnvironment(rec),
  };
  const config = {
    env,
    workdir: '/workspace',
    cgroups: plan.cgroups?.inside,
    ...(fdpass ? { fdpass: true, fdexec } : {}),
  };
  const files = Object.fromEntries(Object.entries(SESSION_FILES).map(([k, name]) => [k, join(dir, name)])) as Record<
    keyof typeof SESSION_FILES,
    string
  >;
  writeFileSync(files.config, JSON.stringify(config), { mode: 0o600 });
  writeFileSync(files.passwd, passwdFile(rec.user), { mode: 0o600 });
  writeFileSync(files.group, groupFile(rec.user), { mode: 0o600 });
  writeFileSync(files.resolvConf, 'nameserver 10.0.2.3\n', { mode: 0o600 });
  writeFileSync(files.seccomp, plan.seccomp, { mode: 0o600 });
  let hostProfile = '';
  try {
    hostProfile = readFileSync('/etc/profile', 'utf8');
  } catch {}
  writeFileSync(files.profile, profileFile(hostProfile, env.PATH!), { mode: 0o600 });
}

const interrupted = () => new InterruptedError('interrupted while the sandbox was starting');

/** The last lines of the sandbox's log, for an error message. */
export function sandboxLog(dir: string): string {
  try {
    const text = readFileSync(join(dir, 'sandbox.log'), 'utf8').trim();
    return text.split('\n').slice(-3).join(' / ') || 'no output';
  } catch {
    return 'no output';
  }
}

/** node inside the session: the host's, at the same path when it is under /usr, else its prefix bound read-only. */
function nodeLayout(): { hostPrefix?: string } {
  const real = realpathSync.native(process.execPath);
  if (real.startsWith('/usr/')) {
    if (real !== '/usr/bin/node')
      throw new UnavailableError(`node at ${real}: the local provider expects /usr/bin/node or a prefix outside /usr`);
    return {};
  }
  return { hostPrefix: dirname(dirname(real)) };
}

/** The launcher (native/launcher.c), which npm's install step builds and `npm run build` copies to dist/. */
export function launcherPath(): string {
  const p = join(packageRoot(), 'dist', 'launcher');
  if (!existsSync(p)) {
    throw new UnavailableError(`${p} is missing`, {
      hint: 'run npm run build (its native step needs make and a C compiler: apt-get install -y build-essential)',
    });
  }
  return p;
}

function agentBundle(): string {
  const p = join(packageRoot(), 'dist', 'agent.cjs');
  if (!existsSync(p)) throw new UnavailableError(`${p} is missing`, { hint: 'run npm run build' });
  return p;
}

/** node-pty's native module, which the agent inside each sandbox loads. */
export function ptyNative(): string {
  const req = createRequire(join(packageRoot(), 'package.json'));
  return join(dirname(req.resolve('node-pty/package.json')), 'build', 'Release', 'pty.node');
}

/**
 * Reads the pipe `fd` until `done` holds; with `eofOk`, the end of the pipe resolves with what came. Each read
 * waits in node's thread pool; the descriptor is handed to `release` once no read of it is in flight (a read
 * left waiting when this settles ends when the launcher's group is killed: its writers are gone then).
 */
function readUntil(
  fd: number,
  done: (s: string) => boolean,
  signal: AbortSignal | undefined,
  release: (fd: number) => void,
  eofOk = false,
): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    let settled = false;
    let reading = false;
    const chunk = Buffer.alloc(4096);
    const finish = (err?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      if (!reading) release(fd);
      if (err) reject(err);
      else resolve(buf);
    };
    const next = () => {
      reading = true;
      read(fd, chunk, 0, chunk.length, null, (err, n) => {
        reading = false;
        if (settled) return release(fd);
        if (err) return finish(err);
        if (n === 0) {
          return finish(
            done(buf) || eofOk ? undefined : new ProviderError('the sandbox closed its status pipe before it started'),
          );
        }
        if (buf.length < 65536) buf += chunk.toString('utf8', 0, n);
        if (done(buf)) finish();
        else next();
      });
    };
    const onAbort = () => finish(interrupted());
    const timer = setTimeout(
      () => finish(new ProviderError(`the sandbox did not start within ${START_TIMEOUT_MS / 1000}s`)),
      START_TIMEOUT_MS,
    );
    if (signal?.aborted) return onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    next();
  });
}

async function readJson(
  fd: number,
  signal: AbortSignal | undefined,
  release: (fd: number) => void,
): Promise<Record<string, unknown>> {
  const isJson = (s: string) => {
    try {
      JSON.parse(s);
      return true;
    } catch {
      return false;
    }
  };
  return JSON.parse(await readUntil(fd, isJson, signal, release)) as Record<string, unknown>;
}
