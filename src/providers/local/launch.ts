/**
 * The launch of one sandbox: given a session directory and its record, write the files the sandbox receives by
 * descriptor, start the launcher (native/launcher.c, built to dist/launcher) with the agent's listening socket, and wait until the
 * sandbox runs (bwrap's child is up, and its network). The agent's socket is made here and listens from the start,
 * so nothing waits for the agent itself: a first exec's connection waits in the socket's backlog while the agent
 * starts (which overlaps that exec's own start-up), and an agent that cannot start ends the sandbox (it is its
 * first process), which the session's status then shows. The local provider (local.ts) owns the record and what
 * happens around this; nothing here decides a session's state.
 */
import type { ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { InterruptedError, ProviderError, UnavailableError } from '../../errors.js';
import { fdexecPath, fdpassPath } from '../../native/fdpass.js';
import { binPath, packageRoot } from '../../paths.js';
import { sessionEnvironment } from '../../session/model.js';
import type { CgroupSystem } from './cgroups.js';
import { DATA_DIRS, MKFS, mkfsArgv } from './disk.js';
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
  let launcher: ChildProcess | undefined;
  let logFd: number | undefined;
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
      mkfs = mkfsArgv(plan.image!, rec.host_uid);
      // The launcher's own mount namespace: what it mounts after the sandbox's is made (the disk) reaches it.
      env.ONMEMOS_PROPAGATION = 'slave';
      if (rec.network === 'outbound' && !tunOpenToAll()) env.ONMEMOS_TUN_NODE = '1';
    } else {
      env.ONMEMOS_DATA_TMPFS = String(plan.diskBytes);
      env.ONMEMOS_DATA_DIRS = DATA_DIRS.map(([name, mode]) => `${name}:${mode.toString(8)}`).join(' ');
      // The host's mount namespace: nothing mounted there later reaches the session.
      env.ONMEMOS_PROPAGATION = 'private';
    }
    const argv = [String(mkfs.length), ...mkfs, BIN.bwrap, ...bwrap];
    logFd = openSync(join(dir, 'sandbox.log'), 'a', 0o600);
    const stdio: (number | 'pipe' | 'ignore')[] = ['pipe', logFd, logFd, 'ignore', 'ignore', 'ignore'];
    stdio[FD.info] = 'pipe';
    stdio[FD.netReady] = 'pipe';
    const { spawn } = await import('node:child_process');
    launcher = spawn(launcherPath(), argv, { argv0: 'onmemos-launcher', detached: true, stdio, env });
    launcher.on('error', () => {});
    // A launcher killed meanwhile (an `rm` that claimed the session) makes the go-ahead an EPIPE: its exit then
    // fails the start below, in one line; the write's error must not be an unhandled one.
    launcher.stdin?.on('error', () => {});
    closeSync(logFd);
    logFd = undefined;
    const ref = procRef(launcher.pid ?? -1);
    if (!ref) throw new ProviderError(`the launcher did not start: ${sandboxLog(dir)}`);
    plan.onLauncher(ref); // a claim by `rm` from now on finds the launcher and kills it
    writeSessionFiles(plan, !!fdpassNode, !!fdexec);
    const pipes = launcher.stdio as unknown as (Readable | null)[];
    launcher.stdin!.end('go\n');
    const [started, net] = await Promise.all([
      readJson(launcher, pipes[FD.info]!, plan.signal),
      readUntil(launcher, pipes[FD.netReady]!, (s) => s.includes('1'), plan.signal, true),
    ]).catch((e: Error) => {
      if (e instanceof InterruptedError) throw e;
      throw new ProviderError(`${e.message}: ${sandboxLog(dir)}`, { cause: e });
    });
    const init = procRef(Number(started['child-pid']));
    if (init) plan.onInit(init);
    if (rec.network === 'outbound' && !net.includes('1')) {
      throw new ProviderError(`could not start the session network: ${sandboxLog(dir)}`);
    }
    launcher.unref();
  } catch (e) {
    if (logFd !== undefined) closeSync(logFd);
    if (launcher?.pid) killTree(launcher.pid, { includeRoot: true, group: true }); // bwrap is in its group
    throw e;
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
function launcherPath(): string {
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

/** Reads `stream` until `done` holds; with `eofOk`, the end of the stream resolves with what came. */
function readUntil(
  child: ChildProcess,
  stream: Readable,
  done: (s: string) => boolean,
  signal: AbortSignal | undefined,
  eofOk = false,
): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const finish = (err?: Error) => {
      clearTimeout(timer);
      stream.off('data', onData);
      stream.off('end', onEnd);
      child.off('exit', onExit);
      signal?.removeEventListener('abort', onAbort);
      stream.destroy();
      if (err) reject(err);
      else resolve(buf);
    };
    const onData = (d: Buffer) => {
      if (buf.length < 65536) buf += d.toString('utf8');
      if (done(buf)) finish();
    };
    const onEnd = () =>
      finish(
        done(buf) || eofOk ? undefined : new ProviderError('the sandbox closed its status pipe before it started'),
      );
    const onExit = (code: number | null) => {
      if (!done(buf) && !eofOk) finish(new ProviderError(`the sandbox's launcher exited with ${code}`));
    };
    const onAbort = () => finish(interrupted());
    const timer = setTimeout(
      () => finish(new ProviderError(`the sandbox did not start within ${START_TIMEOUT_MS / 1000}s`)),
      START_TIMEOUT_MS,
    );
    stream.on('data', onData);
    stream.on('end', onEnd);
    child.on('exit', onExit);
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort, { once: true });
  });
}

async function readJson(child: ChildProcess, stream: Readable, signal?: AbortSignal): Promise<Record<string, unknown>> {
  const isJson = (s: string) => {
    try {
      JSON.parse(s);
      return true;
    } catch {
      return false;
    }
  };
  return JSON.parse(await readUntil(child, stream, isJson, signal)) as Record<string, unknown>;
}
