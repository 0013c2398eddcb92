/**
 * The local provider: sessions are bubblewrap sandboxes on this machine that live across onmemos invocations.
 * It runs for an ordinary user (rootless) and, as root, drops to a host uid of the session's own first, so no
 * process that touches a session runs with privileges (see README: Security).
 *
 * This file is the provider and its record's state machine; launch.ts starts a sandbox.
 *
 *   creating ──launch──► running ──(sandbox gone)──► exited
 *       │                   │ (past expires_at)
 *       └──(abort/failure: everything made is removed)   └──► expired ──reapExpired/rm/launcher──► (removed)
 *
 * create: a record, a host uid (as root), a cgroup, a disk (as root), then the launch; an abort or a failure at any
 *   step removes all of it. exec: a WebSocket to the agent's socket (src/exec/client.ts). delete: the record is
 *   claimed atomically, the session's cgroup and the launcher are killed, the directories removed.
 */
import {
  closeSync,
  existsSync,
  constants as fsConstants,
  fstatSync,
  lstatSync,
  openSync,
  readlinkSync,
  realpathSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import type { Socket } from 'node:net';
import { cpus } from 'node:os';
import { basename, dirname, join, posix, resolve } from 'node:path';
import type { Duplex } from 'node:stream';
import {
  ConflictError,
  errorFromResponse,
  InterruptedError,
  NotFoundError,
  ProviderError,
  UnavailableError,
  UnsupportedError,
  UserError,
} from '../../errors.js';
import { execQuery, openExec } from '../../exec/client.js';
import { jsonBody, openTunnelSocket } from '../../exec/tunnel.js';
import { V5 } from '../../exec/v5.js';
import { handleFd, loadFdPass, type OutputStream, preambleByte } from '../../native/fdpass.js';
import {
  type ConnectInfo,
  type CreateSessionRequest,
  isExpired,
  type Limits,
  MAX_TTL_MINUTES,
  newSessionId,
  type Session,
  type SessionFilter,
  sessionEnvironment,
  sessionsAmong,
  validateSessionId,
  validateTtl,
} from '../../session/model.js';
import {
  type Capabilities,
  type CreateOptions,
  capabilities,
  type ExecSpec,
  type Provider,
  type RemoteProcess,
} from '../provider.js';
import {
  type CgroupSystem,
  detectCgroups,
  makeChildParent,
  removeEmptyParent,
  SessionGroup,
  sessionParent,
} from './cgroups.js';
import { prepareDiskImage } from './disk.js';
import { tunOpenToAll, UID_SLOTS_DIR, UidSlots, uidBase } from './host.js';
import { AGENT_SOCKET, checkHost, FDPASS_SOCKET, launchSandbox, sandboxLog } from './launch.js';
import { isAlive, killTree, processUids, procRef, signalRef, trySignal } from './proc.js';
import { INSIDE, resolveToolchain } from './sandbox.js';
import { seccompFilter } from './seccomp.js';
import { withSocketPath } from './socket-path.js';
import { claimedWithin, type LocalRecord, LocalStore, replaceFile, stateDir } from './store.js';

const REAP_EVERY_MS = 10_000;
/** How long a claimed session is left to its background removal before the reaper takes what is left. */
const REMOVAL_MS = 60_000;

export interface LocalProviderOptions {
  stateDir?: string;
  env?: NodeJS.ProcessEnv;
  /**
   * INTERNAL, for the cloud fakes' own providers (test/fakes): lets create() take `binds`. No request field, flag
   * or API route reaches it; the provider the CLI and the server make never has it, and a request's `storage` is
   * refused here as by the capabilities.
   */
  hostBinds?: boolean;
}

/**
 * A host directory mounted into a session: the cloud fakes' stand-in for a bucket (GCS FUSE on GKE, a `gcs` volume
 * on Cloud Run). Writable by the session's user unless `readOnly`: as root, where each session runs as a host uid
 * of its own, the directory and everything in it are handed to that uid when the session starts (chown -R, links
 * not followed), as gcsfuse shows every object as the mounting user's; so of two sessions that share one, the
 * later owns the files there were. Unlike the session's own files, its host path shows in /proc/self/mountinfo.
 */
export interface HostBind {
  /** An existing directory on the host (not a symbolic link). */
  source: string;
  /** Where the session sees it: an absolute path, not /, nor in /proc, /dev, /sys or /run. */
  target: string;
  readOnly?: boolean;
}

export interface LocalCreateOptions extends CreateOptions {
  /** Only with the provider's `hostBinds` option (internal: the fakes). */
  binds?: HostBind[];
}

/** The local sandbox mounts no storage, runs the host's toolchains (no images), and cannot stop a session: a rootless session's disk is a tmpfs. */
export const LOCAL_CAPABILITIES: Capabilities = capabilities({
  storage: [],
  persistentWorkspace: false,
  lifecycle: { start: false, stop: false, extend: true },
  images: false,
});

export class LocalProvider implements Provider {
  readonly kind = 'local' as const;
  readonly capabilities = LOCAL_CAPABILITIES;
  readonly store: LocalStore;
  private readonly env: NodeJS.ProcessEnv;
  private readonly root = process.getuid?.() === 0;
  private readonly hostBinds: boolean;
  private lastReap = Number.NEGATIVE_INFINITY;

  constructor(opts: LocalProviderOptions = {}) {
    this.env = opts.env ?? process.env;
    this.store = new LocalStore(opts.stateDir ?? stateDir(this.env));
    this.hostBinds = opts.hostBinds === true;
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

  /**
   * Removes expired sessions, the leftovers of creates that died (their creating process is gone, or nothing was
   * written for two minutes while still "creating": a create takes seconds), and anything of a session whose
   * record is gone (its cgroup, its host uid). At most every REAP_EVERY_MS in one process; with `ifDue`, not when
   * any process swept this state directory within REAP_EVERY_MS (the mtime of its `swept` file says when).
   */
  async reapExpired(opts: { ifDue?: boolean } = {}): Promise<string[]> {
    const now = Date.now();
    if (now - this.lastReap < REAP_EVERY_MS) return [];
    const swept = join(this.store.root, 'local', 'swept');
    if (opts.ifDue) {
      try {
        if (now - statSync(swept).mtimeMs < REAP_EVERY_MS) return [];
      } catch {}
    }
    this.lastReap = now;
    try {
      const t = new Date(now);
      utimesSync(swept, t, t);
    } catch {
      try {
        writeFileSync(swept, '', { mode: 0o600 });
      } catch {} // no state directory yet: nothing to sweep either
    }
    const removed: string[] = [];
    for (const id of this.store.ids()) {
      const rec = this.store.read(id);
      // A create whose process is gone (a CLI or a server killed half-way) never finishes: its session goes at
      // once. A record without a creator (an older onmemos) waits for the age rule.
      const orphaned = rec?.status === 'creating' && !!rec.procs.creator && !isAlive(rec.procs.creator);
      const abandoned = orphaned || ((!rec || rec.status === 'creating') && this.store.dirAgeMs(id) > 120_000);
      if ((abandoned || (rec && isExpired(rec, now))) && (await this.destroy(id))) removed.push(id);
    }
    this.store.emptyTrash();
    this.reapOrphans();
    return removed;
  }

  /**
   * cgroups and uid slots that belong to no session (a remover or creator that died half-way). A create makes
   * its session directory before either, so one whose directory exists now is someone's, perhaps still in the
   * making; only those without one, and not new, are taken.
   */
  private reapOrphans(): void {
    const sys = this.cgroups();
    const parent = sys && this.cgroupParent(sys, false);
    // A session claimed less than a minute ago is its remover's (destroy hands its cgroup and uid slot to a
    // background removal that frees them once its processes are gone).
    const removing = this.store.claimedWithin(REMOVAL_MS);
    if (sys && parent) {
      for (const name of SessionGroup.list(sys, parent)) {
        if (existsSync(this.store.dir(name)) || removing.has(name)) continue;
        try {
          SessionGroup.open(sys, parent, name).remove();
        } catch {}
      }
      if (this.store.ids().length === 0) removeEmptyParent(sys, parent);
    }
    if (this.root) {
      // A slot goes back only once no process has its uid: a new session must never share a uid with a dying one.
      const slots = this.slots;
      const candidates: number[] = [];
      for (const [slot, sessionDir] of slots.list()) {
        if (sessionDir === '' ? slots.ageMs(slot) <= 60_000 : existsSync(sessionDir)) continue;
        const trash = join(dirname(dirname(sessionDir)), 'trash');
        if (sessionDir !== '' && claimedWithin(trash, REMOVAL_MS).has(basename(sessionDir))) continue;
        candidates.push(slot);
      }
      const inUse = candidates.length > 0 ? processUids() : new Set<number>();
      for (const slot of candidates) if (!inUse.has(slots.uid(slot))) slots.release(slot);
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

  async create(req: CreateSessionRequest, opts: LocalCreateOptions = {}): Promise<Session> {
    const { signal, onProgress } = opts;
    const checkAbort = () => {
      if (signal?.aborted) throw new InterruptedError('interrupted: the session was not created');
    };
    // As checkRequest (providers/index.ts) says for every create that goes through the registry; a caller that
    // holds the provider itself gets the same answer.
    if (req.storage?.bucket || req.storage?.filestore || req.storage?.volume) {
      throw new UnsupportedError('provider local cannot mount storage (a bucket, a Filestore share or a volume)', {
        hint: 'drop the storage (--bucket, storage), or use gke or cloud_run',
      });
    }
    const binds = this.checkBinds(opts.binds ?? []);
    checkHost(this.root, this.store.root);
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
    checkAbort();

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
    const progress = (step: string, message: string) => onProgress?.({ step, message, id });
    progress('prepare', `creating local session ${id} (template ${req.template}, network ${req.network})`);
    /** As root, the session's disk image: a sparse file, which the launcher makes a filesystem. */
    let image: string | undefined;
    try {
      this.store.write(rec);
      this.writeExpiry(rec);
      if (this.root) {
        const { slot, uid } = this.slots.claim(dir);
        rec.uid_slot = slot;
        rec.host_uid = uid;
        this.store.write(rec);
        progress('disk', `making its ${shownLimits(req.limits).disk} disk`);
        image = join(dir, 'disk.img');
        prepareDiskImage(image, req.limits.diskBytes);
        for (const b of binds) if (!b.readOnly) await handOver(b.source, uid);
      }
      let cgroups: Parameters<typeof launchSandbox>[0]['cgroups'];
      if (limitsPlan.parent && limitsPlan.sys) {
        progress('limits', 'applying limits (cgroup)');
        const group = SessionGroup.create(limitsPlan.sys, limitsPlan.parent, id, cgroupLimits(req.limits), {
          delegateTo: rec.host_uid,
        });
        rec.cgroup_parent = limitsPlan.parent;
        rec.unapplied.push(...group.unapplied);
        this.store.write(rec);
        // The agent makes exec groups in freezer and pids (v1) or the one v2 hierarchy; it sees nothing else.
        cgroups = {
          sandboxDirs: group
            .sandboxDirs()
            .filter((d) => d.controller === null || ['freezer', 'pids'].includes(d.controller)),
          joinFiles: group.joinFiles(),
          inside: this.insideCgroups()!,
        };
      }
      // Only the limits count here: a missing freezer (kills then stop forks with pids.max instead) is a note.
      const unenforced = rec.unapplied.filter((u) => /^(cpu|memory|pids|cgroup2)\b/.test(u));
      if (req.require_limits && unenforced.length > 0) {
        throw new UnavailableError(`--require-limits: cannot enforce ${unenforced.join('; ')}`);
      }
      checkAbort();
      progress('launch', 'starting the sandbox');
      await launchSandbox({
        dir,
        rec,
        stateRoot: this.store.root,
        root: this.root,
        toolchain,
        seccomp,
        userEnv: req.env,
        cgroups,
        image,
        diskBytes: req.limits.diskBytes,
        binds,
        signal,
        onLauncher: (ref) => {
          rec.procs.launcher = ref;
          this.store.write(rec);
        },
        onInit: (ref) => {
          rec.procs.init = ref; // written with the status, below
        },
      });
      checkAbort();
      rec.status = 'running';
      this.store.write(rec);
      progress('ready', `session ${id} is running`);
    } catch (e) {
      // An `rm` (or the reaper) that claimed the session meanwhile is why it failed (ENOENT, or EACCES from binding
      // the agent's socket in a directory that is gone): say so rather than the symptom.
      const removedMeanwhile = !existsSync(dir);
      await this.destroy(id, rec); // what this process knows of it, which may be more than the record on disk
      if (e instanceof InterruptedError) throw new InterruptedError(`interrupted: session ${id} was removed`);
      if (removedMeanwhile) throw new ConflictError(`session ${id} was removed while it was being created`);
      throw e;
    }
    return this.toSession(rec);
  }

  /** The binds of a create, checked (sources resolved); none unless the provider was made with `hostBinds`. */
  private checkBinds(binds: HostBind[]): { source: string; target: string; readOnly: boolean }[] {
    if (binds.length === 0) return [];
    if (!this.hostBinds) throw new UnsupportedError('provider local mounts no host directories into sessions');
    const targets = new Set<string>();
    return binds.map((b) => {
      const t = b.target;
      const reserved = ['/proc', '/dev', '/sys', '/run'].some((p) => t === p || t.startsWith(`${p}/`));
      if (!t.startsWith('/') || posix.normalize(t) !== t || t === '/' || t.endsWith('/') || reserved) {
        throw new UserError(`cannot mount a directory at ${JSON.stringify(t)}: not an absolute path one may mount at`);
      }
      if (targets.has(t)) throw new UserError(`two directories mounted at ${t}`);
      targets.add(t);
      let source: string;
      try {
        if (!lstatSync(b.source).isDirectory()) throw new Error('not a directory');
        source = realpathSync(b.source);
      } catch (e) {
        throw new UserError(`cannot mount ${b.source}: ${(e as Error).message}`);
      }
      return { source, target: t, readOnly: b.readOnly === true };
    });
  }

  /**
   * The launcher reads the expiry (unix seconds) from this file whenever its timer ends, and takes anything but a
   * number for an expiry now: the file is replaced whole, so it never reads one half-written.
   */
  private writeExpiry(rec: LocalRecord): void {
    replaceFile(join(this.store.dir(rec.id), 'expires'), String(Math.ceil(Date.parse(rec.expires_at) / 1000)));
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

  /** The session's cgroups as the agent sees them: the delegated group bound at /sys/fs/cgroup[/controller]. */
  private insideCgroups(): CgroupSystem | undefined {
    const sys = this.cgroups();
    if (!sys) return undefined;
    return sys.version === 2
      ? { version: 2, mount: INSIDE.cgroupRoot }
      : { version: 1, mounts: { freezer: `${INSIDE.cgroupRoot}/freezer`, pids: `${INSIDE.cgroupRoot}/pids` } };
  }

  async get(id: string): Promise<Session> {
    return this.toSession(this.record(id));
  }

  /** The record of a session that exists (expired or not). */
  private record(id: string): LocalRecord {
    validateSessionId(id);
    const rec = this.store.read(id);
    if (!rec) throw notFound(id);
    return rec;
  }

  async list(filter?: SessionFilter): Promise<Session[]> {
    return sessionsAmong(
      this.store.ids(),
      (id) => {
        const rec = this.store.read(id);
        return rec ? this.toSession(rec) : undefined;
      },
      filter,
    );
  }

  async delete(id: string): Promise<void> {
    this.record(id);
    if (!(await this.destroy(id))) throw notFound(id);
  }

  /** Moves the expiry to `minutes` from now; the launcher's timer follows. */
  async extend(id: string, minutes: number): Promise<Session> {
    validateTtl(minutes);
    const rec = this.running(id);
    const createdMs = Date.parse(rec.created_at);
    const expires = Date.now() + minutes * 60_000;
    if (expires - createdMs > MAX_TTL_MINUTES * 60_000) {
      throw new UserError(
        `a session lives at most ${MAX_TTL_MINUTES} minutes from its creation: --ttl may be at most ${Math.floor((createdMs + MAX_TTL_MINUTES * 60_000 - Date.now()) / 60_000)} now`,
      );
    }
    rec.expires_at = new Date(expires).toISOString();
    this.writeExpiry(rec);
    this.store.write(rec);
    return this.toSession(rec);
  }

  /**
   * Idempotent removal; returns false when the session was not there. Every process of the session has its
   * SIGKILL when this returns; their exit (tens of ms: the kernel tears down their namespaces) is waited for by a
   * background removal, which then removes the cgroup and frees the uid slot (see SessionGroup.removeInBackground).
   */
  private async destroy(id: string, known?: LocalRecord): Promise<boolean> {
    const claimed = this.store.claim(id);
    if (!claimed) return false;
    const rec = known ?? this.store.readClaimed(claimed);
    if (rec) {
      // Everything of the session is in its cgroup (with the launcher outside it); without cgroups, everything is
      // in the launcher's process group (bwrap included), and bwrap's death takes its sandbox's pid 1 and with it
      // every process of the session.
      const sys = rec.cgroup_parent ? this.cgroups() : undefined;
      const group = sys && rec.cgroup_parent ? SessionGroup.open(sys, rec.cgroup_parent, rec.id) : undefined;
      group?.kill({ wait: false });
      // At the expiry this removal runs as the launcher itself (it execs onmemos rm), which must not kill itself.
      const launcher = rec.procs.launcher;
      if (launcher && launcher.pid !== process.pid && isAlive(launcher)) {
        // With a cgroup, the launcher's process group (it is a session leader, and its children stay in its group)
        // holds all it ran outside the cgroup: one kill, which no fork escapes. Without one, its whole tree.
        // Its whole tree too, and the group again each round: a process forked between a scan and a kill, or one
        // whose parent died first (bwrap, before its --die-with-parent took hold), is still in the group.
        if (group) trySignal(-launcher.pid, 'SIGKILL');
        else killTree(launcher.pid, { includeRoot: true, group: true });
      }
      signalRef(rec.procs.init, 'SIGKILL');
      const slot = rec.uid_slot !== undefined ? [this.slots.path(rec.uid_slot)] : [];
      // The slot and the session's files go after the cgroup: only an empty cgroup shows no process is left.
      // A session that never ran a process (a create that failed early) has an empty cgroup: removed at once.
      const ran = rec.procs.launcher !== undefined;
      if (group && (ran || !group.tryRemove()) && group.removeInBackground(group.parentDirs(), [...slot, claimed])) {
        return true;
      }
      if (sys && group && rec.cgroup_parent) {
        group.remove();
        removeEmptyParent(sys, rec.cgroup_parent);
      }
      if (rec.uid_slot !== undefined) this.slots.release(rec.uid_slot);
    }
    rmSync(claimed, { recursive: true, force: true });
    return true;
  }

  async connect(id: string): Promise<ConnectInfo> {
    const rec = this.record(id);
    return {
      id,
      provider: 'local',
      status: this.statusOf(rec),
      url: null,
      exec: { url: this.execUrl(id), protocol: V5 },
      // bash if present, else sh; a login shell, whose pty the agent takes from the session's own devpts.
      shell: { argv: existsSync('/usr/bin/bash') ? ['/bin/bash', '-l'] : ['/bin/sh', '-l'] },
      json_shell: null,
      ssh: null,
    };
  }

  private execUrl(id: string): string {
    return `ws+unix://${join(this.store.dir(id), AGENT_SOCKET)}:/exec`;
  }

  /** The record of a running session; ConflictError, saying what it is instead, otherwise. */
  private running(id: string): LocalRecord {
    const rec = this.record(id);
    const status = this.statusOf(rec);
    if (status !== 'running') {
      throw new ConflictError(`session ${id} is not running (${status})`, {
        hint: `remove it with: onmemos rm ${id}`,
      });
    }
    return rec;
  }

  /** A TCP port on the session's own loopback, through its agent (`/tunnel`): `onmemos tunnel` for local sessions. */
  async tunnel(id: string, port: number): Promise<Duplex> {
    this.running(id);
    return this.agentCall(id, (sock) =>
      openTunnelSocket(`ws+unix://${sock}:/tunnel?port=${port}`, {
        refused: (status, body) => errorFromResponse(status, jsonBody(body)),
        unreachable: (e) => new UnavailableError(`cannot reach the agent of session ${id}: ${e.message}`),
      }),
    );
  }

  async exec(id: string, spec: ExecSpec): Promise<RemoteProcess> {
    const rec = this.running(id);
    // The caller's own output pipes go to the command itself where that is safe (passOutput). Only on the root
    // path: there the session runs as a host uid of its own, which cannot reopen the caller's pipe through
    // /proc/<pid>/fd (a pipe is its creator's, mode 0600); a rootless session shares the caller's uid and could
    // open it for reading, and so read what the caller's pipeline carries after the exec.
    const pass =
      spec.outputFds && !spec.tty && !spec.via && rec.uid_slot !== undefined
        ? await passOutput(this.store.dir(id), spec.outputFds)
        : undefined;
    try {
      return await this.agentCall(id, (sock) => {
        const query = execQuery(spec);
        for (const stream of pass?.streams ?? []) query.set(stream, 'fd');
        return openExec(spec, {
          url: `ws+unix://${sock}:/exec`,
          peer: `the agent of session ${id}`,
          refused: errorFromResponse,
          ...(pass ? { socket: pass.socket, query } : {}),
        });
      });
    } catch (e) {
      pass?.socket.destroy();
      throw e;
    }
  }

  /**
   * A call to the session's agent. Its socket listens from the sandbox's start, so a connection made before the
   * agent runs waits for it; one refused means the agent is gone (it did not start, or the sandbox ended): the
   * error then says what the sandbox logged.
   */
  private async agentCall<T>(id: string, call: (socket: string) => Promise<T>): Promise<T> {
    try {
      return await withSocketPath(join(this.store.dir(id), AGENT_SOCKET), call);
    } catch (e) {
      if (!(e instanceof UnavailableError)) throw e;
      throw new UnavailableError(`${e.message} (the sandbox's log: ${sandboxLog(this.store.dir(id))})`, { cause: e });
    }
  }

  private statusOf(rec: LocalRecord): Session['status'] {
    if (isExpired(rec)) return 'expired';
    if (rec.status === 'creating')
      return isAlive(rec.procs.launcher) || isAlive(rec.procs.creator) ? 'creating' : 'failed';
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

/**
 * Gives a directory and everything in it to `uid` (as root, for a bind writable by a session's own host uid).
 * chown -R -P -h: symbolic links are changed themselves and never followed, and the walk is relative to each
 * directory it has open, so a session that swaps a directory for a link meanwhile cannot send it elsewhere.
 */
async function handOver(dir: string, uid: number): Promise<void> {
  const { execFile } = await import('node:child_process');
  await new Promise<void>((ok, fail) =>
    execFile('/usr/bin/chown', ['-R', '-P', '-h', `${uid}:${uid}`, '--', dir], (e, _out, err) =>
      e ? fail(new ProviderError(`could not give ${dir} to the session: ${String(err).trim() || e.message}`)) : ok(),
    ),
  );
}

function notFound(id: string): NotFoundError {
  return new NotFoundError(`no such session: ${id}`, { hint: 'list sessions with: onmemos ls' });
}

/**
 * Passes the caller's output pipes (ExecSpec.outputFds) to the session's agent over its descriptor socket
 * (FDPASS_SOCKET): the command then writes to them itself, with no copy through the agent and this process. Only
 * anonymous pipes go (never a tty, where a command could push input with TIOCSTI; never a file, socket or named
 * FIFO), each as a file description of its own (reopened through /proc/self/fd, blocking: node made the caller's
 * own non-blocking, which a command must not inherit). Returns the connection, its descriptors sent, or undefined
 * when nothing can be passed (no fdpass module, a session made before it, no pipe, its reader gone): then the exec
 * is relayed as ever.
 */
async function passOutput(
  dir: string,
  outputFds: NonNullable<ExecSpec['outputFds']>,
): Promise<{ socket: Socket; streams: OutputStream[] } | undefined> {
  const fdpass = loadFdPass();
  if (!fdpass) return undefined;
  const own: number[] = [];
  const streams: OutputStream[] = [];
  try {
    for (const stream of ['stdout', 'stderr'] as const) {
      const fd = outputFds[stream];
      if (fd === undefined) continue;
      let fresh: number;
      try {
        if (!fstatSync(fd).isFIFO() || !readlinkSync(`/proc/self/fd/${fd}`).startsWith('pipe:')) continue;
        // O_NONBLOCK: a pipe whose reader is gone fails (ENXIO) rather than waiting for one.
        const flags = fsConstants.O_WRONLY | fsConstants.O_NONBLOCK; // close-on-exec: node opens every file so
        fresh = openSync(`/proc/self/fd/${fd}`, flags);
      } catch {
        continue;
      }
      own.push(fresh); // closed below whatever happens next
      if (!fdpass.outputFifo(fresh)) {
        closeSync(own.pop()!);
        continue;
      }
      streams.push(stream);
    }
    if (own.length === 0) return undefined;
    const { connect } = await import('node:net'); // not at the top: every local command would load it
    const socket = await withSocketPath(
      join(dir, FDPASS_SOCKET),
      (path) =>
        new Promise<Socket | undefined>((resolve) => {
          const s = connect(path);
          s.on('error', () => {});
          s.once('connect', () => resolve(s));
          s.once('error', () => {
            s.destroy();
            resolve(undefined);
          });
        }),
    );
    if (!socket) return undefined; // a session made before its agent had the socket, or no module inside
    const fd = handleFd(socket);
    try {
      if (fd === undefined) throw new Error('no descriptor');
      fdpass.sendFds(fd, preambleByte(streams), own);
    } catch {
      socket.destroy();
      return undefined;
    }
    return { socket, streams };
  } finally {
    for (const fd of own) closeSync(fd); // the agent has its own copies now
  }
}
