/**
 * The local provider: sessions are bubblewrap sandboxes on this machine that live across onmemos invocations.
 *
 * create: bwrap (as an unprivileged host uid, detached) starts the sandbox with a `sleep TTL` main process;
 *   slirp4netns gives it outbound networking; the launcher that waits for bwrap removes it at expiry.
 * exec:   nsenter joins the sandbox's namespaces and runs the command as the sandbox user (see sandbox.ts).
 * delete: the record is claimed atomically, the sandbox's pid 1 is SIGKILLed (the kernel then kills every
 *   process in its pid namespace), helpers are killed, the directories removed.
 */
import type { ChildProcess } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { constants as osConstants } from 'node:os';
import { join } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { ConflictError, NotFoundError, ProviderError, UnavailableError } from '../../errors.js';
import { binPath } from '../../paths.js';
import {
  type CreateSessionRequest,
  isExpired,
  matchesFilter,
  newSessionId,
  type Session,
  type SessionFilter,
  sessionEnvironment,
  validateSessionId,
} from '../../session/model.js';
import type { Capabilities, ExecSpec, ExitStatus, Progress, Provider, RemoteProcess } from '../provider.js';
import { descendants, hasChild, isAlive, killTree, type ProcRef, procRef, signalRef, trySignal } from './proc.js';
import {
  bwrapArgs,
  groupFile,
  LAUNCH_MOUNT,
  launcherArgs,
  nsenterArgs,
  passwdFile,
  resolveToolchain,
  SANDBOX_HOME_ROOT,
  sessionPath,
} from './sandbox.js';
import { type LocalRecord, LocalStore, stateDir } from './store.js';

const BIN = {
  bwrap: '/usr/bin/bwrap',
  setpriv: '/usr/bin/setpriv',
  nsenter: '/usr/bin/nsenter',
  slirp4netns: '/usr/bin/slirp4netns',
  unshare: '/usr/bin/unshare',
};
/** Every program the local provider runs, with the Debian package that has it (for a clear error). */
const NEEDED: [string, string][] = [
  [BIN.bwrap, 'bubblewrap'],
  [BIN.slirp4netns, 'slirp4netns'],
  [BIN.setpriv, 'util-linux'],
  [BIN.nsenter, 'util-linux'],
  [BIN.unshare, 'util-linux'],
  ['/usr/bin/mount', 'mount'],
  ['/bin/sh', 'dash'],
  [LAUNCH_MOUNT, 'base-files'],
];

/** Host uid that session processes run as when onmemos runs as root (ONMEMOS_SANDBOX_UID overrides). */
const DEFAULT_SANDBOX_HOST_UID = 100000;
const START_TIMEOUT_MS = 10_000;
const REAP_EVERY_MS = 10_000;
/** After the main process exits, output still buffered is delivered; background processes keep no exec open. */
const DRAIN_IDLE_MS = 30;
const DRAIN_QUIET_CHECKS = 3;
const DRAIN_MAX_MS = 2000;

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
  private lastReap = Number.NEGATIVE_INFINITY;

  constructor(opts: LocalProviderOptions = {}) {
    this.env = opts.env ?? process.env;
    this.store = new LocalStore(opts.stateDir ?? stateDir(this.env));
  }

  private checkHost(): void {
    if (process.getuid?.() !== 0) {
      throw new UnavailableError('the local provider must run as root (it enters session namespaces with nsenter)', {
        hint: 'run onmemos as root, or use --server to reach an onmemos server',
      });
    }
    for (const [path, pkg] of NEEDED) {
      if (!existsSync(path)) {
        throw new UnavailableError(`the local provider needs ${path}, which is missing`, {
          hint: `apt-get install -y ${pkg}`,
        });
      }
    }
  }

  private hostUid(): number {
    const raw = this.env.ONMEMOS_SANDBOX_UID;
    const uid = raw === undefined ? DEFAULT_SANDBOX_HOST_UID : Number(raw);
    if (!Number.isInteger(uid) || uid <= 0 || uid > 0xfffffffe) {
      throw new UnavailableError(`ONMEMOS_SANDBOX_UID=${raw} is not a valid non-root uid`);
    }
    return uid;
  }

  /**
   * Removes expired sessions and the leftovers of creates that died (nothing written for two minutes while
   * still "creating": a create takes seconds). Runs before an operation, at most every REAP_EVERY_MS: once in a
   * CLI process, periodically in a server.
   */
  reapExpired(): void {
    const now = Date.now();
    if (now - this.lastReap < REAP_EVERY_MS) return;
    this.lastReap = now;
    for (const id of this.store.ids()) {
      const rec = this.store.read(id);
      const abandoned = (!rec || rec.status === 'creating') && this.store.dirAgeMs(id) > 120_000;
      if (abandoned || (rec && isExpired(rec, now))) this.destroy(id);
    }
    this.store.emptyTrash();
  }

  async create(req: CreateSessionRequest, progress?: Progress): Promise<Session> {
    this.checkHost();
    const toolchain = resolveToolchain(req.template, this.env.PATH);
    const hostUid = this.hostUid();
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
      v: 1,
      id,
      namespace: req.namespace,
      user: req.user,
      template: req.template,
      network: req.network,
      env: req.env,
      created_at: new Date(created).toISOString(),
      expires_at: new Date(created + req.ttl_minutes * 60_000).toISOString(),
      status: 'creating',
      host_uid: hostUid,
      toolchain,
      procs: {},
    };
    progress?.(`creating local session ${id} (template ${req.template}, network ${req.network})`);
    try {
      this.store.write(rec);
      this.prepareDirs(dir, rec);
      const initPid = await this.startSandbox(dir, rec);
      this.store.write(rec);
      // The network namespace exists once bwrap reports its pid: slirp4netns comes up while bwrap mounts.
      const [up, net] = await Promise.allSettled([
        this.waitUntilUp(dir, rec, initPid),
        req.network === 'outbound' ? this.startSlirp(dir, initPid) : Promise.resolve(undefined),
      ]);
      if (net.status === 'fulfilled' && net.value) rec.procs.slirp = net.value;
      this.store.write(rec);
      if (up.status === 'rejected') throw up.reason;
      if (net.status === 'rejected') throw net.reason;
      rec.status = 'running';
      this.store.write(rec);
    } catch (e) {
      this.destroy(id, rec); // what this process knows of it, which may be more than the record on disk
      throw e;
    }
    return this.toSession(rec);
  }

  /**
   * <session>/data is 0700 and owned by the sandbox's host uid, so bwrap (running as that uid) can bind its
   * directories, which keep the usual modes inside the session (/tmp 1777, home 0700). The session directory
   * itself is 0711 for bwrap to pass through; the state directories above it are root's alone.
   */
  private prepareDirs(dir: string, rec: LocalRecord): void {
    chmodSync(dir, 0o711);
    const data = join(dir, 'data');
    mkdirSync(data);
    chownSync(data, rec.host_uid, rec.host_uid);
    chmodSync(data, 0o700);
    for (const [name, mode] of [
      ['workspace', 0o755],
      ['home', 0o700],
      ['tmp', 0o1777],
    ] as const) {
      const p = join(data, name);
      mkdirSync(p);
      chownSync(p, rec.host_uid, rec.host_uid);
      chmodSync(p, mode);
    }
    writeFileSync(join(dir, 'passwd'), passwdFile(rec.user), { mode: 0o644 });
    writeFileSync(join(dir, 'group'), groupFile(rec.user), { mode: 0o644 });
    writeFileSync(join(dir, 'resolv.conf'), 'nameserver 10.0.2.3\n', { mode: 0o644 });
  }

  /**
   * Starts bwrap detached, as the sandbox's host uid, from a launcher mount namespace (see LAUNCH_MOUNT).
   * Resolves with the host pid of the sandbox's pid 1 as soon as bwrap reports it.
   */
  private async startSandbox(dir: string, rec: LocalRecord): Promise<number> {
    const logFd = openSync(join(dir, 'sandbox.log'), 'a', 0o600);
    try {
      const args = bwrapArgs({
        hostname: rec.id.slice(0, 63),
        user: rec.user,
        network: rec.network,
        sessionDir: LAUNCH_MOUNT,
        ownResolvConf: rec.network === 'outbound',
        toolchain: rec.toolchain,
        infoFd: 3,
        lifetimeSeconds: (Date.parse(rec.expires_at) - Date.now()) / 1000,
      });
      const setpriv = [BIN.setpriv, `--reuid=${rec.host_uid}`, `--regid=${rec.host_uid}`, '--clear-groups'];
      const { spawn } = await import('node:child_process');
      const child = spawn(BIN.unshare, launcherArgs(dir, [...setpriv, BIN.bwrap, ...args]), {
        detached: true,
        stdio: ['ignore', logFd, logFd, 'pipe'],
        env: {
          PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
          // For the launcher's removal of the session at its expiry.
          ONMEMOS_EXPIRES_AT: String(Math.floor(Date.parse(rec.expires_at) / 1000)),
          ONMEMOS_NODE: process.execPath,
          ONMEMOS_BIN: binPath(),
          ONMEMOS_SESSION: rec.id,
          ONMEMOS_STATE_DIR: this.store.root,
        },
      });
      rec.procs.bwrap = procRef(child.pid ?? -1);
      this.store.write(rec);
      const info = await readJson(child, child.stdio[3] as Readable, START_TIMEOUT_MS);
      child.unref();
      const pid = Number(info['child-pid']);
      rec.procs.init = procRef(pid);
      if (!rec.procs.init) throw new ProviderError(`the sandbox for ${rec.id} did not start: ${this.log(dir)}`);
      return pid;
    } catch (e) {
      if (e instanceof ProviderError) throw e;
      throw new ProviderError(`could not start the sandbox: ${(e as Error).message}; ${this.log(dir)}`, { cause: e });
    } finally {
      closeSync(logFd);
    }
  }

  /** bwrap reports its child before it sets up the mounts: the sandbox is up once its main process runs. */
  private async waitUntilUp(dir: string, rec: LocalRecord, initPid: number): Promise<void> {
    const init = rec.procs.init;
    const up = await pollUntil(() => !isAlive(init) || hasChild(initPid), START_TIMEOUT_MS);
    if (!up || !isAlive(init)) throw new ProviderError(`the sandbox for ${rec.id} did not start: ${this.log(dir)}`);
  }

  private log(dir: string): string {
    try {
      return readFileSync(join(dir, 'sandbox.log'), 'utf8').trim().split('\n').slice(-3).join(' / ') || 'no output';
    } catch {
      return 'no output';
    }
  }

  /** slirp4netns gives the sandbox's network namespace a tap0 with outbound access; host loopback stays out. */
  private async startSlirp(dir: string, initPid: number): Promise<ProcRef> {
    const logFd = openSync(join(dir, 'sandbox.log'), 'a', 0o600);
    try {
      const { spawn } = await import('node:child_process');
      const child = spawn(
        BIN.slirp4netns,
        [
          '--configure',
          '--mtu=65520',
          '--disable-host-loopback',
          '--enable-sandbox',
          '--enable-seccomp',
          '--ready-fd=3',
          '--netns-type=path',
          `/proc/${initPid}/ns/net`,
          'tap0',
        ],
        { detached: true, stdio: ['ignore', logFd, logFd, 'pipe'], env: { PATH: '/usr/bin:/bin' } },
      );
      await readUntil(child, child.stdio[3] as Readable, (s) => s.includes('1'), START_TIMEOUT_MS);
      child.unref();
      const ref = procRef(child.pid ?? -1);
      if (!ref) throw new Error('slirp4netns exited');
      return ref;
    } catch (e) {
      throw new ProviderError(`could not start the session network: ${(e as Error).message}; ${this.log(dir)}`, {
        cause: e,
      });
    } finally {
      closeSync(logFd);
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
      // pid 1 of the sandbox: its death makes the kernel kill every process in the session's pid namespace.
      signalRef(rec.procs.init, 'SIGKILL');
      signalRef(rec.procs.slirp, 'SIGKILL');
      // The launcher and bwrap, should the sandbox's pid 1 never have been known (a create cut short). At the
      // expiry this removal runs as the launcher itself (it execs onmemos rm), which must not kill itself.
      const launcher = rec.procs.bwrap;
      if (launcher && launcher.pid !== process.pid && isAlive(launcher)) {
        killTree(launcher.pid, { includeRoot: true });
      }
    }
    rmSync(claimed, { recursive: true, force: true });
    return true;
  }

  /**
   * The login shell runs under util-linux `script` inside the session, which gives it a pty from the session's
   * own /dev/pts (the pty onmemos holds on the host is not visible there, so `tty` and ttyname() would fail).
   * `script` passes bytes, window-size changes and the shell's exit code (-e) through.
   */
  async loginShell(id: string): Promise<string[]> {
    this.running(id);
    const shell = existsSync('/usr/bin/bash') ? '/bin/bash' : '/bin/sh';
    if (!existsSync('/usr/bin/script')) return [shell, '-l'];
    return ['/usr/bin/script', '--quiet', '--return', '--flush', '--command', `exec ${shell} -l`, '/dev/null'];
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
    const rec = this.running(id);
    const env: Record<string, string> = {
      PATH: sessionPath(rec.toolchain),
      HOME: `${SANDBOX_HOME_ROOT}/${rec.user}`,
      LOGNAME: rec.user,
      SHELL: existsSync('/usr/bin/bash') ? '/bin/bash' : '/bin/sh',
      LANG: 'C.UTF-8',
      HOSTNAME: rec.id.slice(0, 63),
      ...rec.env,
      ...sessionEnvironment(rec),
      ...spec.env,
    };
    if (spec.tty) env.TERM = spec.term || 'xterm-256color';
    const args = nsenterArgs(rec.procs.init!.pid, spec.cwd, spec.argv);
    return spec.tty
      ? await spawnTty(args, env, spec)
      : spawnPiped((await import('node:child_process')).spawn, args, env, spec);
  }

  private statusOf(rec: LocalRecord): Session['status'] {
    if (isExpired(rec)) return 'expired';
    if (rec.status === 'creating') return isAlive(rec.procs.bwrap) ? 'creating' : 'exited';
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
        pid: rec.procs.init?.pid ?? null,
      },
    };
  }
}

/** Polls `cond` every 2 ms; false if it did not hold within `timeoutMs`. */
async function pollUntil(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 2));
  }
  return true;
}

function notFound(id: string): NotFoundError {
  return new NotFoundError(`no such session: ${id}`, { hint: 'list sessions with: onmemos ls' });
}

function readUntil(
  child: ChildProcess,
  stream: Readable,
  done: (s: string) => boolean,
  timeoutMs: number,
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
      buf += d.toString('utf8');
      if (done(buf)) finish();
    };
    const onEnd = () => finish(done(buf) ? undefined : new Error('it closed its status pipe early'));
    const onExit = (code: number | null) => {
      if (!done(buf)) finish(new Error(`it exited with ${code}`));
    };
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      finish(new Error(`it did not start within ${timeoutMs / 1000}s`));
    }, timeoutMs);
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

/** Non-tty exec: nsenter in its own process group (terminal signals reach onmemos, which forwards them). */
function spawnPiped(
  spawn: typeof import('node:child_process').spawn,
  args: string[],
  env: Record<string, string>,
  spec: ExecSpec,
): RemoteProcess {
  const child = spawn(BIN.nsenter, args, {
    detached: true,
    env,
    stdio: [spec.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
  });
  const stdin = child.stdin ?? new PassThrough();
  // A closed remote stdin (the command did not read it all) is not an error of ours.
  stdin.on('error', () => {});
  const stdout = child.stdout!;
  const stderr = child.stderr!;
  const exit = new Promise<ExitStatus>((resolve) => {
    child.on('error', (e) => {
      resolve({ code: 125 });
      stderr.emit('data', Buffer.from(`onmemos: ${e.message}\n`));
    });
    child.on('exit', async (code, signal) => {
      await Promise.all([drain(stdout), drain(stderr)]);
      resolve(signal ? { code: null, signal } : { code: code ?? 125 });
    });
  });
  return {
    stdin,
    stdout,
    stderr,
    resize() {},
    kill(signal = 'SIGKILL') {
      if (child.pid) signalRemote(child.pid, signal);
    },
    exit,
  };
}

/**
 * Signals the remote side of an exec whose host-side nsenter has pid `nsenterPid`. SIGKILL takes the whole tree
 * (and the process group, which catches what was reparented inside the sandbox). Other signals go to the
 * remote processes only: nsenter does not pass signals on, it just reports how its child ended.
 */
function signalRemote(nsenterPid: number, signal: NodeJS.Signals): void {
  if (signal === 'SIGKILL') killTree(nsenterPid, { group: true, includeRoot: true });
  else for (const pid of descendants(nsenterPid)) trySignal(pid, signal);
}

/**
 * Resolves when `stream` has ended, or when the main process is gone and nothing more arrives (a background
 * process may hold the pipe open for ever; docker exec and kubectl exec return all the same). "Nothing more"
 * means DRAIN_QUIET_CHECKS checks in a row, each a separate turn of the event loop (so an I/O poll ran in
 * between and read whatever was waiting), found no new data, and DRAIN_IDLE_MS have passed: time alone is
 * not enough, since after the loop was busy a timer can fire before the pipe is read.
 */
function drain(stream: Readable): Promise<void> {
  if (stream.readableEnded || stream.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const started = Date.now();
    let quiet = 0;
    let timer: NodeJS.Timeout | undefined;
    const onData = () => {
      quiet = 0;
    };
    const done = () => {
      clearTimeout(timer);
      stream.off('data', onData);
      stream.off('end', done);
      stream.off('close', done);
      resolve();
    };
    const check = () => {
      const waiting = stream.isPaused() || stream.readableLength > 0;
      quiet = waiting ? 0 : quiet + 1;
      const elapsed = Date.now() - started;
      if ((quiet >= DRAIN_QUIET_CHECKS && elapsed >= DRAIN_IDLE_MS) || elapsed > DRAIN_MAX_MS) {
        stream.destroy();
        return done();
      }
      timer = setTimeout(check, DRAIN_IDLE_MS / DRAIN_QUIET_CHECKS);
    };
    stream.on('data', onData);
    stream.once('end', done);
    stream.once('close', done);
    timer = setTimeout(check, DRAIN_IDLE_MS / DRAIN_QUIET_CHECKS);
  });
}

/** TTY exec through node-pty (loaded only here). stderr is merged into the tty, so the stream is empty. */
async function spawnTty(args: string[], env: Record<string, string>, spec: ExecSpec): Promise<RemoteProcess> {
  const pty = await import('node-pty');
  const term = pty.spawn(BIN.nsenter, args, {
    name: env.TERM ?? 'xterm-256color',
    cols: spec.cols ?? 80,
    rows: spec.rows ?? 24,
    cwd: '/',
    env,
    encoding: null,
  });
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  stderr.end();
  const dataSub = term.onData((d: string | Buffer) => stdout.write(d));
  const stdin = new PassThrough();
  stdin.on('data', (d: Buffer) => term.write(d as unknown as string));
  const exit = new Promise<ExitStatus>((resolve) => {
    term.onExit(({ exitCode, signal }) => {
      dataSub.dispose();
      stdout.end();
      stdin.removeAllListeners('data');
      resolve(signal ? { code: null, signal: signalName(signal) } : { code: exitCode });
    });
  });
  return {
    stdin,
    stdout,
    stderr,
    resize(cols, rows) {
      try {
        term.resize(Math.max(1, cols), Math.max(1, rows));
      } catch {}
    },
    kill(signal = 'SIGKILL') {
      signalRemote(term.pid, signal);
    },
    exit,
  };
}

function signalName(n: number): NodeJS.Signals | undefined {
  for (const [name, num] of Object.entries(osConstants.signals)) if (num === n) return name as NodeJS.Signals;
  return undefined;
}
