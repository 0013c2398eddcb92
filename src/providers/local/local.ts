/**
 * The local provider: sessions are bubblewrap sandboxes on this machine that live across onmemos invocations.
 * It runs for an ordinary user (rootless) and, as root, drops to a host uid of the session's own first, so no
 * process that touches a session runs with privileges (see README: Security).
 *
 * create: a launcher (sandbox.ts LAUNCHER) holds the session: it joins the session's cgroup, drops privileges,
 *   makes the user and network namespaces, runs bwrap, whose main process is the agent (src/agent), and in
 *   outbound mode attaches slirp4netns. onmemos made the agent's listening socket and passes it in.
 * exec:   a WebSocket to that socket (src/tty/exec-client.ts); the agent spawns the command inside, applies its
 *   environment there, and kills the command's whole exec group when the connection goes.
 * delete: the record is claimed atomically, the session's cgroup and the launcher are killed (bwrap and
 *   slirp4netns die with the launcher), the directories removed.
 */
import type { ChildProcess } from 'node:child_process';
import {
  closeSync,
  existsSync,
  openSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { ConflictError, errorFromResponse, NotFoundError, ProviderError, UnavailableError } from '../../errors.js';
import { binPath, packageRoot } from '../../paths.js';
import {
  type CreateSessionRequest,
  isExpired,
  type Limits,
  matchesFilter,
  newSessionId,
  type Session,
  type SessionFilter,
  sessionEnvironment,
  validateSessionId,
} from '../../session/model.js';
import { openExec } from '../../tty/exec-client.js';
import type { Capabilities, ExecSpec, Progress, Provider, RemoteProcess } from '../provider.js';
import {
  type CgroupSystem,
  detectCgroups,
  makeChildParent,
  removeEmptyParent,
  SessionGroup,
  sessionParent,
} from './cgroups.js';
import { MKFS, makeDiskImage } from './disk.js';
import { tunOpenToAll, UID_SLOTS_DIR, UidSlots, uidBase } from './host.js';
import { isAlive, killTree, procRef, signalRef } from './proc.js';
import {
  A_SCRIPT,
  bwrapArgs,
  FD,
  groupFile,
  INSIDE,
  LAUNCHER,
  LAUNCHER_FDS,
  passwdFile,
  resolveToolchain,
  SANDBOX_HOME_ROOT,
  sessionPath,
} from './sandbox.js';
import { seccompFilter } from './seccomp.js';
import { type LocalRecord, LocalStore, stateDir } from './store.js';

const BIN = {
  bash: '/bin/bash',
  bwrap: '/usr/bin/bwrap',
  setpriv: '/usr/bin/setpriv',
  slirp4netns: '/usr/bin/slirp4netns',
  unshare: '/usr/bin/unshare',
};
/** Every program the local provider runs, with the Debian package that has it (for a clear error). */
const NEEDED: [string, string][] = [
  [BIN.bwrap, 'bubblewrap'],
  [BIN.slirp4netns, 'slirp4netns'],
  [BIN.setpriv, 'util-linux'],
  [BIN.unshare, 'util-linux'],
  [BIN.bash, 'bash'],
  ['/usr/bin/mount', 'mount'],
  ['/usr/bin/nsenter', 'util-linux'],
];
const NEEDED_AS_ROOT: [string, string][] = [[MKFS, 'e2fsprogs']];

const START_TIMEOUT_MS = 15_000;
const REAP_EVERY_MS = 10_000;
const SHM_BYTES = 64 * 1024 * 1024;
const RUN_BYTES = 16 * 1024 * 1024;

export interface LocalProviderOptions {
  stateDir?: string;
  env?: NodeJS.ProcessEnv;
}

export class LocalProvider implements Provider {
  readonly kind = 'local' as const;
  readonly capabilities: Capabilities = {
    oneShot: true,
    shell: true,
    tty: true,
    persistentStorage: true,
  };
  readonly store: LocalStore;
  private readonly env: NodeJS.ProcessEnv;
  private readonly root = process.getuid?.() === 0;
  private lastReap = Number.NEGATIVE_INFINITY;

  constructor(opts: LocalProviderOptions = {}) {
    this.env = opts.env ?? process.env;
    this.store = new LocalStore(opts.stateDir ?? stateDir(this.env));
  }

  /** The cgroup hierarchies, read from /proc/self/mountinfo once per process. */
  private cgroups(): CgroupSystem | undefined {
    if (this.cgroupSystem === null) this.cgroupSystem = detectCgroups();
    return this.cgroupSystem;
  }
  private cgroupSystem: CgroupSystem | undefined | null = null;

  private get slots(): UidSlots {
    return new UidSlots(UID_SLOTS_DIR, uidBase(this.env));
  }

  private checkHost(): void {
    for (const [path, pkg] of this.root ? [...NEEDED, ...NEEDED_AS_ROOT] : NEEDED) {
      if (!existsSync(path)) {
        throw new UnavailableError(`the local provider needs ${path}, which is missing`, {
          hint: `apt-get install -y ${pkg}`,
        });
      }
    }
    if (this.store.root.includes(':')) {
      throw new UnavailableError(
        `the state directory ${this.store.root} contains ':', which socket URLs cannot carry`,
        {
          hint: 'set ONMEMOS_STATE_DIR to another directory',
        },
      );
    }
  }

  /**
   * Removes expired sessions, the leftovers of creates that died (their creating process is gone, or nothing was
   * written for two minutes while still "creating": a create takes seconds), and anything of a session whose
   * record is gone (its cgroup, its host uid). Runs before an operation, at most every REAP_EVERY_MS: once in a CLI process, periodically in a server.
   */
  reapExpired(): void {
    const now = Date.now();
    if (now - this.lastReap < REAP_EVERY_MS) return;
    this.lastReap = now;
    for (const id of this.store.ids()) {
      const rec = this.store.read(id);
      // A create whose process is gone (a CLI or a server killed half-way) never finishes: its session goes at
      // once. A record without a creator (an older onmemos) waits for the age rule.
      const orphaned = rec?.status === 'creating' && !!rec.procs.creator && !isAlive(rec.procs.creator);
      const abandoned = orphaned || ((!rec || rec.status === 'creating') && this.store.dirAgeMs(id) > 120_000);
      if (abandoned || (rec && isExpired(rec, now))) this.destroy(id);
    }
    this.store.emptyTrash();
    this.reapOrphans();
  }

  /**
   * cgroups and uid slots that belong to no session (a remover or creator that died half-way). A create makes
   * its session directory before either, so one whose directory exists now is someone's, perhaps still in the
   * making; only those without one, and not new, are taken.
   */
  private reapOrphans(): void {
    const sys = this.cgroups();
    const parent = sys && this.cgroupParent(sys, false);
    if (sys && parent) {
      for (const name of SessionGroup.list(sys, parent)) {
        if (existsSync(this.store.dir(name))) continue;
        try {
          SessionGroup.open(sys, parent, name).remove();
        } catch {}
      }
      if (this.store.ids().length === 0) removeEmptyParent(sys, parent);
    }
    if (this.root) {
      const slots = this.slots;
      for (const [slot, sessionDir] of slots.list()) {
        if ((sessionDir === '' || !existsSync(sessionDir)) && slots.ageMs(slot) > 60_000) slots.release(slot);
      }
    }
  }

  /**
   * The cgroup under which this state directory's sessions go: a group of its own below the machine's onmemos
   * parent, so that a reaper only ever collects what its own state directory lost. undefined (with the reason
   * from planLimits) when this user has no cgroup to use.
   */
  private cgroupParent(sys: CgroupSystem, make = true): string | undefined {
    let base: ReturnType<typeof sessionParent>;
    try {
      base = sessionParent(sys, this.env, process.getuid?.() ?? 0);
    } catch {
      return undefined;
    }
    if ('unavailable' in base) return undefined;
    const key = stateKey(this.store.root);
    if (make) return makeChildParent(sys, base.path, key);
    const path = `${base.path}/${key}`;
    const mounts = sys.version === 2 ? [sys.mount] : Object.values(sys.mounts);
    return mounts.some((m) => existsSync(join(m, path))) ? path : undefined;
  }

  async create(req: CreateSessionRequest, progress?: Progress): Promise<Session> {
    this.checkHost();
    const toolchain = resolveToolchain(req.template, this.env.PATH);
    const limitsPlan = this.planLimits(req);
    if (req.network === 'outbound' && !this.root && !tunOpenToAll()) {
      throw new UnavailableError(
        'outbound networking needs /dev/net/tun open to every user (crw-rw-rw-), as udev sets it',
        {
          hint: 'chmod 0666 /dev/net/tun as root, or use --network isolated or host',
        },
      );
    }
    const seccomp = seccompFilter({ allowUserNamespaces: req.nested_userns });
    this.reapExpired();

    const created = Date.now();
    // Ids carry a random suffix; in the unlikely event of a clash, mkdir says so and another is drawn.
    let id = newSessionId(req.namespace, req.user, created);
    let dir: string | undefined;
    for (let attempt = 0; !dir; attempt++) {
      try {
        dir = this.store.makeDir(id);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || attempt >= 5) throw e;
        id = newSessionId(req.namespace, req.user, created);
      }
    }
    const rec: LocalRecord = {
      v: 2,
      id,
      namespace: req.namespace,
      user: req.user,
      template: req.template,
      network: req.network,
      created_at: new Date(created).toISOString(),
      expires_at: new Date(created + req.ttl_minutes * 60_000).toISOString(),
      status: 'creating',
      host_uid: process.getuid?.() ?? 0,
      limits: req.limits,
      unapplied: [...limitsPlan.unapplied],
      nested_userns: req.nested_userns,
      procs: { creator: procRef(process.pid) },
    };
    progress?.(`creating local session ${id} (template ${req.template}, network ${req.network})`);
    const opened: number[] = [];
    let launcher: ChildProcess | undefined;
    try {
      this.store.write(rec);
      if (this.root) {
        const { slot, uid } = this.slots.claim(dir);
        rec.uid_slot = slot;
        rec.host_uid = uid;
        this.store.write(rec);
      }
      let cgroupDirs: { controller: string | null; dir: string }[] = [];
      let joinFiles: string[] = [];
      if (limitsPlan.parent && limitsPlan.sys) {
        const group = SessionGroup.create(limitsPlan.sys, limitsPlan.parent, id, cgroupLimits(req.limits), {
          delegateTo: rec.host_uid,
        });
        rec.cgroup_parent = limitsPlan.parent;
        rec.unapplied.push(...group.unapplied);
        this.store.write(rec);
        // The agent makes exec groups in freezer and pids (v1) or the one v2 hierarchy; it sees nothing else.
        cgroupDirs = group
          .sandboxDirs()
          .filter((d) => d.controller === null || ['freezer', 'pids'].includes(d.controller));
        joinFiles = group.joinFiles();
      }
      // Only the limits count here: a missing freezer (kills then stop forks with pids.max instead) is a note.
      const unenforced = rec.unapplied.filter((u) => /^(cpu|memory|pids|cgroup2)\b/.test(u));
      if (req.require_limits && unenforced.length > 0) {
        throw new UnavailableError(`--require-limits: cannot enforce ${unenforced.join('; ')}`);
      }
      const image = this.root
        ? await makeDiskImage(join(dir, 'disk.img'), req.limits.diskBytes, rec.host_uid)
        : undefined;

      const node = nodeLayout();
      const files = this.sessionFiles(dir, rec, toolchain, seccomp, req.env);
      const fd = (path: string) => {
        const n = openSync(path, 'r');
        opened.push(n);
        return n;
      };
      const listen = await listenSocket(join(dir, 'agent.sock'));
      const stdio: (number | 'pipe' | 'ignore')[] = Array(13).fill('ignore');
      const logFd = openSync(join(dir, 'sandbox.log'), 'a', 0o600);
      opened.push(logFd);
      stdio[0] = 'pipe';
      stdio[1] = logFd;
      stdio[2] = logFd;
      stdio[FD.listen] = listen.fd;
      stdio[FD.info] = 'pipe';
      stdio[FD.netReady] = 'pipe';
      stdio[FD.agent] = fd(agentBundle());
      stdio[FD.ptyNode] = fd(ptyNative());
      stdio[FD.config] = fd(files.config);
      stdio[FD.passwd] = fd(files.passwd);
      stdio[FD.group] = fd(files.group);
      stdio[FD.resolvConf] = fd(files.resolvConf);
      stdio[FD.seccomp] = fd(files.seccomp);
      const bwrap = bwrapArgs({
        hostname: rec.id.slice(0, 63),
        user: rec.user,
        network: rec.network,
        toolchain,
        nodePrefix: node.hostPrefix,
        ownResolvConf: rec.network === 'outbound',
        cgroupDirs,
        allowNestedUserns: req.nested_userns,
        shmBytes: SHM_BYTES,
        runBytes: RUN_BYTES,
      });
      const expiresAt = Date.parse(rec.expires_at);
      const env: Record<string, string> = {
        PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
        ONMEMOS_KEEP_FDS: LAUNCHER_FDS.join(' '),
        ONMEMOS_A_SCRIPT: A_SCRIPT,
        ONMEMOS_NETWORK: rec.network,
        ONMEMOS_UNSHARE_NET: rec.network === 'host' ? '' : '--net',
        ONMEMOS_CGROUP_JOIN: joinFiles.join(' '),
        ONMEMOS_TTL_SECONDS: String(Math.max(1, Math.ceil((expiresAt - Date.now()) / 1000))),
        ONMEMOS_EXPIRES_AT: String(Math.floor(expiresAt / 1000)),
        ONMEMOS_NODE: process.execPath,
        ONMEMOS_BIN: binPath(),
        ONMEMOS_SESSION: rec.id,
        ONMEMOS_STATE_DIR: this.store.root,
      };
      if (joinFiles.some((f) => /\s/.test(f))) throw new UnavailableError('cgroup paths with spaces are not supported');
      if (this.root) {
        env.ONMEMOS_UID = String(rec.host_uid);
        env.ONMEMOS_IMAGE = image!;
        if (rec.network === 'outbound' && !tunOpenToAll()) env.ONMEMOS_TUN_NODE = '1';
      } else {
        env.ONMEMOS_DATA_TMPFS = String(req.limits.diskBytes);
      }
      // --norc: bash reads ~/.bashrc when its stdin is a socket (it guesses rshd), and ours is one.
      const bash = [BIN.bash, '--norc', '--noprofile', '-c', LAUNCHER, 'onmemos-launcher'];
      const argv = this.root
        ? [BIN.unshare, '--mount', '--propagation', 'private', '--', ...bash, ...bwrap]
        : [...bash, ...bwrap];
      const { spawn } = await import('node:child_process');
      launcher = spawn(argv[0]!, argv.slice(1), { detached: true, stdio, env });
      launcher.on('error', () => {});
      for (const n of opened.splice(0)) closeSync(n);
      listen.close();
      rec.procs.launcher = procRef(launcher.pid ?? -1);
      if (!rec.procs.launcher) throw new ProviderError(`the launcher did not start: ${this.log(dir)}`);
      this.store.write(rec); // a claim by `rm` from now on finds the launcher and kills it
      const pipes = launcher.stdio as unknown as (Readable | null)[];
      const info = pipes[FD.info]!;
      const netReady = pipes[FD.netReady]!;
      launcher.stdin!.end('go\n');
      const [started, net] = await Promise.all([
        readJson(launcher, info, START_TIMEOUT_MS),
        readUntil(launcher, netReady, (s) => s.includes('1'), START_TIMEOUT_MS, true),
      ]).catch((e: Error) => {
        throw new ProviderError(`${e.message}: ${this.log(dir)}`, { cause: e });
      });
      rec.procs.init = procRef(Number(started['child-pid']));
      this.store.write(rec);
      if (rec.network === 'outbound' && !net.includes('1')) {
        throw new ProviderError(`could not start the session network: ${this.log(dir)}`);
      }
      await this.waitForAgent(dir, rec);
      launcher.unref();
      rec.status = 'running';
      this.store.write(rec);
    } catch (e) {
      // An `rm` (or the reaper) that claimed the session meanwhile is why it failed (ENOENT, or EACCES from binding
      // the agent's socket in a directory that is gone): say so rather than the symptom.
      const removedMeanwhile = !existsSync(dir);
      for (const n of opened) closeSync(n);
      if (launcher && !rec.procs.launcher) killTree(launcher.pid ?? -1, { includeRoot: true });
      this.destroy(id, rec); // what this process knows of it, which may be more than the record on disk
      if (removedMeanwhile) throw new ConflictError(`session ${id} was removed while it was being created`);
      throw e;
    }
    return this.toSession(rec);
  }

  /** Where the session's cgroup goes, or why it cannot have one (then every limit but disk is unapplied). */
  private planLimits(req: CreateSessionRequest): {
    sys?: CgroupSystem;
    parent?: string;
    unapplied: string[];
  } {
    const sys = this.cgroups();
    const why = (reason: string) => [`cpu, memory and pids: ${reason}`];
    if (!sys) return { unapplied: why('no cgroup filesystem is mounted') };
    const base = sessionParent(sys, this.env, process.getuid?.() ?? 0);
    if ('unavailable' in base) {
      if (req.require_limits) {
        throw new UnavailableError(`--require-limits: cannot enforce cpu, memory and pids: ${base.unavailable}`);
      }
      return { unapplied: why(base.unavailable) };
    }
    const parent = this.cgroupParent(sys);
    if (!parent) return { unapplied: why(`could not create a cgroup below ${base.path}`) };
    return { sys, parent, unapplied: [] };
  }

  /** The files bwrap copies into the session from descriptors (so no host path shows inside). */
  private sessionFiles(
    dir: string,
    rec: LocalRecord,
    toolchain: ReturnType<typeof resolveToolchain>,
    seccomp: Buffer,
    userEnv: Record<string, string>,
  ): Record<'config' | 'passwd' | 'group' | 'resolvConf' | 'seccomp', string> {
    const shell = existsSync('/usr/bin/bash') ? '/bin/bash' : '/bin/sh';
    const env: Record<string, string> = {
      PATH: sessionPath(toolchain),
      HOME: `${SANDBOX_HOME_ROOT}/${rec.user}`,
      LOGNAME: rec.user,
      SHELL: shell,
      LANG: 'C.UTF-8',
      HOSTNAME: rec.id.slice(0, 63),
      ...userEnv,
      ...sessionEnvironment(rec),
    };
    const config = { env, workdir: '/workspace', cgroups: rec.cgroup_parent ? this.insideCgroups() : undefined };
    const files = {
      config: join(dir, 'config.json'),
      passwd: join(dir, 'passwd'),
      group: join(dir, 'group'),
      resolvConf: join(dir, 'resolv.conf'),
      seccomp: join(dir, 'seccomp.bpf'),
    };
    writeFileSync(files.config, JSON.stringify(config), { mode: 0o600 });
    writeFileSync(files.passwd, passwdFile(rec.user), { mode: 0o600 });
    writeFileSync(files.group, groupFile(rec.user), { mode: 0o600 });
    writeFileSync(files.resolvConf, 'nameserver 10.0.2.3\n', { mode: 0o600 });
    writeFileSync(files.seccomp, seccomp, { mode: 0o600 });
    return files;
  }

  /** The session's cgroups as the agent sees them: the delegated group bound at /sys/fs/cgroup[/controller]. */
  private insideCgroups(): CgroupSystem | undefined {
    const sys = this.cgroups();
    if (!sys) return undefined;
    return sys.version === 2
      ? { version: 2, mount: INSIDE.cgroupRoot }
      : { version: 1, mounts: { freezer: `${INSIDE.cgroupRoot}/freezer`, pids: `${INSIDE.cgroupRoot}/pids` } };
  }

  /** The agent answers /health once it serves; until then the connection waits in the socket's backlog. */
  private async waitForAgent(dir: string, rec: LocalRecord): Promise<void> {
    const { request } = await import('node:http');
    const ok = await new Promise<boolean>((resolve) => {
      const req = request(
        { socketPath: join(dir, 'agent.sock'), path: '/health', timeout: START_TIMEOUT_MS },
        (res) => {
          res.resume();
          resolve(res.statusCode === 200);
        },
      );
      req.on('timeout', () => req.destroy());
      req.on('error', () => resolve(false));
      req.end();
    });
    if (!ok) throw new ProviderError(`the sandbox for ${rec.id} did not start: ${this.log(dir)}`);
  }

  private log(dir: string): string {
    try {
      const text = readFileSync(join(dir, 'sandbox.log'), 'utf8').trim();
      return text.split('\n').slice(-3).join(' / ') || 'no output';
    } catch {
      return 'no output';
    }
  }

  async get(id: string): Promise<Session> {
    return this.toSession(this.live(id));
  }

  /** The record of a session that exists and has not expired; an expired one is removed on the spot. */
  private live(id: string): LocalRecord {
    validateSessionId(id);
    this.reapExpired();
    const rec = this.store.read(id);
    if (!rec) throw notFound(id);
    if (isExpired(rec)) {
      this.destroy(id);
      throw notFound(id);
    }
    return rec;
  }

  async list(filter?: SessionFilter): Promise<Session[]> {
    this.reapExpired();
    const out: Session[] = [];
    for (const id of this.store.ids()) {
      const rec = this.store.read(id);
      if (!rec) continue;
      const s = this.toSession(rec);
      if (matchesFilter(s, filter)) out.push(s);
    }
    return out.sort((a, b) => a.created_at.localeCompare(b.created_at) || a.id.localeCompare(b.id));
  }

  async delete(id: string): Promise<void> {
    this.live(id);
    if (!this.destroy(id)) throw notFound(id);
  }

  /** Idempotent removal; returns false when the session was not there. */
  private destroy(id: string, known?: LocalRecord): boolean {
    const claimed = this.store.claim(id);
    if (!claimed) return false;
    const rec = known ?? this.store.readClaimed(claimed);
    if (rec) {
      // Everything of the session is in its cgroup (with the launcher outside it); without cgroups, the launcher's
      // death takes bwrap (--die-with-parent), whose sandbox's pid 1 takes every process of the session.
      const sys = rec.cgroup_parent ? this.cgroups() : undefined;
      if (sys && rec.cgroup_parent) SessionGroup.open(sys, rec.cgroup_parent, rec.id).kill();
      // At the expiry this removal runs as the launcher itself (it execs onmemos rm), which must not kill itself.
      const launcher = rec.procs.launcher;
      if (launcher && launcher.pid !== process.pid && isAlive(launcher)) {
        killTree(launcher.pid, { includeRoot: true });
      }
      signalRef(rec.procs.init, 'SIGKILL');
      if (sys && rec.cgroup_parent) {
        SessionGroup.open(sys, rec.cgroup_parent, rec.id).remove();
        removeEmptyParent(sys, rec.cgroup_parent);
      }
      if (rec.uid_slot !== undefined) this.slots.release(rec.uid_slot);
    }
    rmSync(claimed, { recursive: true, force: true });
    return true;
  }

  /** bash if present, else sh; a login shell, whose pty the agent takes from the session's own devpts. */
  async loginShell(id: string): Promise<string[]> {
    this.running(id);
    return existsSync('/usr/bin/bash') ? ['/bin/bash', '-l'] : ['/bin/sh', '-l'];
  }

  private running(id: string): LocalRecord {
    const rec = this.live(id);
    if (rec.status !== 'running' || !isAlive(rec.procs.init)) {
      throw new ConflictError(`session ${id} is not running (${this.statusOf(rec)})`, {
        hint: `remove it with: onmemos rm ${id}`,
      });
    }
    return rec;
  }

  async exec(id: string, spec: ExecSpec): Promise<RemoteProcess> {
    this.running(id);
    return openExec(spec, {
      url: `ws+unix://${join(this.store.dir(id), 'agent.sock')}:/exec`,
      peer: `the agent of session ${id}`,
      refused: errorFromResponse,
    });
  }

  private statusOf(rec: LocalRecord): Session['status'] {
    if (isExpired(rec)) return 'expired';
    if (rec.status === 'creating') return isAlive(rec.procs.launcher) ? 'creating' : 'exited';
    return isAlive(rec.procs.init) ? 'running' : 'exited';
  }

  private toSession(rec: LocalRecord): Session {
    return {
      id: rec.id,
      provider: 'local',
      namespace: rec.namespace,
      user: rec.user,
      status: this.statusOf(rec),
      url: null,
      websocket: null,
      ssh: false,
      template: rec.template,
      created_at: rec.created_at,
      expires_at: rec.expires_at,
      details: {
        template: rec.template,
        network: rec.network,
        workspace: '/workspace',
        bucket_name: sessionEnvironment(rec).BUCKET_NAME,
        limits: shownLimits(rec.limits),
        ...(rec.unapplied.length > 0 ? { limits_not_enforced: rec.unapplied } : {}),
        ...(rec.nested_userns ? { nested_userns: true } : {}),
      },
    };
  }
}

/**
 * A short name, stable for a state directory, for its cgroup parent: FNV-1a (64 bits, 48 shown), since loading
 * node:crypto would cost every command a few ms.
 */
export function stateKey(stateRoot: string): string {
  let h = 0xcbf29ce484222325n;
  for (const b of Buffer.from(resolve(stateRoot))) h = ((h ^ BigInt(b)) * 0x100000001b3n) & 0xffffffffffffffffn;
  return `s${h.toString(16).padStart(16, '0').slice(0, 12)}`;
}

function cgroupLimits(l: Limits) {
  return { cpus: Math.min(l.cpus, cpus().length), memoryBytes: l.memoryBytes, pids: l.pids };
}

/** `cpu: 2`, `memory: 2g` …: what get and ls show. */
function shownLimits(l: Limits): Record<string, string | number> {
  const size = (n: number) => (n % 2 ** 30 === 0 ? `${n / 2 ** 30}g` : `${Math.round(n / 2 ** 20)}m`);
  return { cpu: l.cpus, memory: size(l.memoryBytes), pids: l.pids, disk: size(l.diskBytes) };
}

/** node inside the session: the host's, at the same path when it is under /usr, else its prefix bound read-only. */
function nodeLayout(): { hostPrefix?: string } {
  const real = realpathSync(process.execPath);
  if (real.startsWith('/usr/')) {
    if (real !== '/usr/bin/node')
      throw new UnavailableError(`node at ${real}: the local provider expects /usr/bin/node or a prefix outside /usr`);
    return {};
  }
  return { hostPrefix: dirname(dirname(real)) };
}

function agentBundle(): string {
  const p = join(packageRoot(), 'dist', 'agent.cjs');
  if (!existsSync(p)) throw new UnavailableError(`${p} is missing`, { hint: 'run npm run build' });
  return p;
}

function ptyNative(): string {
  const req = createRequire(join(packageRoot(), 'package.json'));
  return join(dirname(req.resolve('node-pty/package.json')), 'build', 'Release', 'pty.node');
}

/**
 * The agent's listening socket, made here so its path stays in the host's session directory. libuv unlinks a
 * socket's path when its server closes, so it is bound under a temporary name and renamed before that.
 */
async function listenSocket(path: string): Promise<{ fd: number; close(): void }> {
  const { createServer } = await import('node:net');
  const tmp = `${path}.${process.pid}`;
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ path: tmp, backlog: 128 }, resolve);
  });
  const fd = (server as unknown as { _handle: { fd: number } })._handle.fd;
  return {
    fd,
    close() {
      renameSync(tmp, path);
      server.close();
    },
  };
}

function notFound(id: string): NotFoundError {
  return new NotFoundError(`no such session: ${id}`, { hint: 'list sessions with: onmemos ls' });
}

/** Reads `stream` until `done` holds; with `eofOk`, the end of the stream resolves with what came. */
function readUntil(
  child: ChildProcess,
  stream: Readable,
  done: (s: string) => boolean,
  timeoutMs: number,
  eofOk = false,
): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const finish = (err?: Error) => {
      clearTimeout(timer);
      stream.off('data', onData);
      stream.off('end', onEnd);
      child.off('exit', onExit);
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
    const timer = setTimeout(
      () => finish(new ProviderError(`the sandbox did not start within ${timeoutMs / 1000}s`)),
      timeoutMs,
    );
    stream.on('data', onData);
    stream.on('end', onEnd);
    child.on('exit', onExit);
  });
}

async function readJson(child: ChildProcess, stream: Readable, timeoutMs: number): Promise<Record<string, unknown>> {
  const isJson = (s: string) => {
    try {
      JSON.parse(s);
      return true;
    } catch {
      return false;
    }
  };
  return JSON.parse(await readUntil(child, stream, isJson, timeoutMs)) as Record<string, unknown>;
}
