/**
 * The workstations provider: a session is a Cloud Workstation (API v1 through `@google-cloud/workstations`' v1
 * client over its REST fallback) in the configured cluster and config; its labels and annotations are the whole
 * session. It has a disk that outlives stop/start, and is reached over SSH through the workstation's TCP tunnel
 * (tunnel.ts, ssh.ts), as `gcloud workstations ssh` reaches it.
 */
import type { Duplex } from 'node:stream';
import { ConflictError, InterruptedError, NotFoundError, type OnmemosError, UnavailableError } from '../../errors.js';
import type { ExecSpec, RemoteProcess } from '../../exec/process.js';
import {
  type ConnectInfo,
  type CreateSessionRequest,
  newSessionId,
  type Session,
  type SessionFilter,
  sessionEnvironment,
  sessionsAmong,
  validateSessionId,
  validateTtl,
} from '../../session/model.js';
import { type AuthLike, abortable, clientOptions, googleCredentials, googleError } from '../google.js';
import { accessHeaders, apiBase, googleCall } from '../google-rest.js';
import { type Capabilities, type CreateOptions, capabilities, type Provider } from '../provider.js';
import { configName, type WorkstationsConfig, workstationsConfig } from './config.js';
import { closeShared, keyPath, type SshTarget, sshExec } from './ssh.js';
import { openTunnel } from './tunnel.js';
import {
  ANNOTATION,
  sessionOf,
  statusOf,
  type WorkstationLike,
  workstationId,
  workstationObject,
} from './workstation.js';

type WorkstationsClient = import('@google-cloud/workstations').v1.WorkstationsClient;

/**
 * A workstation per session: start and stop (the disk stays), SSH for commands and shells (a tty, no exec
 * WebSocket), background processes while it runs; the config decides image, machine, network and disk, so a
 * request may not ask for storage, limits or an image of its own.
 */
export const WORKSTATIONS_CAPABILITIES: Capabilities = capabilities({
  networks: ['outbound'],
  storage: [],
  limits: [],
  persistentWorkspace: true,
  lifecycle: { start: true, stop: true, extend: true },
  exec: ['ssh'],
  nestedUserns: false,
  images: false,
});

export async function loadWorkstationsProvider(env: NodeJS.ProcessEnv): Promise<WorkstationsProvider> {
  const r = workstationsConfig(env);
  if (!r.ok) throw new UnavailableError(`provider workstations is not configured: ${r.reason}`);
  return new WorkstationsProvider(r.config, env);
}

/** How long a workstation may take to reach RUNNING or STOPPED (WORKSTATIONS_START_TIMEOUT seconds; 10 minutes). */
const STATE_TIMEOUT_MS = 600_000;
/** generateAccessToken's lifetime, and how long before its end a fresh one is fetched (gcloud: every 2700 s). */
const TOKEN_TTL_S = 3600;
const TOKEN_REFRESH_MS = 2700_000;
/** How long an exec may use the workstation as get() just read it, instead of reading it again. */
const READ_REUSE_MS = 2_000;

export class WorkstationsProvider implements Provider {
  readonly kind = 'workstations' as const;
  readonly capabilities = WORKSTATIONS_CAPABILITIES;
  readonly parent: string;
  private client?: Promise<{ ws: WorkstationsClient; auth: AuthLike }>;
  private readonly tokens = new Map<string, { token: string; until: number }>();

  constructor(
    readonly config: WorkstationsConfig,
    private readonly env: NodeJS.ProcessEnv,
  ) {
    this.parent = configName(config);
  }

  private where(): string {
    return `Cloud Workstations (${this.parent})`;
  }

  private api() {
    this.client ??= (async () => {
      const [{ v1 }, auth] = await Promise.all([import('@google-cloud/workstations'), googleCredentials(this.config)]);
      const options = clientOptions(auth, 'workstations.googleapis.com', this.config.endpoint);
      return { ws: new v1.WorkstationsClient(options as never), auth };
    })();
    return this.client;
  }

  private async call<T>(what: string, fn: (c: WorkstationsClient) => Promise<T>): Promise<T> {
    try {
      return await fn((await this.api()).ws);
    } catch (e) {
      throw this.apiError(what, e);
    }
  }

  private apiError(what: string, e: unknown): OnmemosError {
    return googleError(this.where(), what, e);
  }

  private name(id: string): string {
    return `${this.parent}/workstations/${workstationId(id)}`;
  }

  /** Polls the workstation until its state is `want` (bounded), with a progress line per change. */
  private async waitFor(
    id: string,
    want: 'running' | 'stopped',
    op: Promise<unknown>,
    signal?: AbortSignal,
    progress?: (step: string, message: string) => void,
  ): Promise<WorkstationLike> {
    // The operation that moves it (start, stop): its failure ends the wait at once, with the API's message.
    let failure: unknown;
    op.catch((e) => {
      failure = e;
    });
    const limit = Number(this.env.WORKSTATIONS_START_TIMEOUT) * 1000 || STATE_TIMEOUT_MS;
    const deadline = Date.now() + limit;
    let seen = '';
    let delay = 200;
    while (Date.now() < deadline) {
      if (signal?.aborted) throw new InterruptedError('interrupted');
      if (failure !== undefined) throw failure;
      const w = await this.lookup(id);
      const status = statusOf(w);
      if (status === want) return w;
      if (status !== seen) {
        seen = status;
        progress?.(status, `workstation ${workstationId(id)} is ${status}`);
      }
      await abortable(new Promise((r) => setTimeout(r, delay)), signal);
      delay = Math.min(2000, Math.round(delay * 1.5));
    }
    throw new UnavailableError(`workstation ${workstationId(id)} did not become ${want} within ${limit / 1000} s`);
  }

  async create(req: CreateSessionRequest, opts: CreateOptions = {}): Promise<Session> {
    const { signal, onProgress } = opts;
    const now = Date.now();
    const id = newSessionId(req.namespace, req.user, now);
    const wid = workstationId(id);
    const progress = (step: string, message: string) => onProgress?.({ step, message, id });
    let made = false;
    try {
      if (signal?.aborted) throw new InterruptedError('interrupted');
      progress('workstation', `workstation ${wid} in ${this.parent}`);
      const [op] = await this.call('creating the workstation', (c) =>
        c.createWorkstation({ parent: this.parent, workstationId: wid, workstation: workstationObject(id, req, now) }),
      );
      made = true;
      await abortable(
        this.call('creating the workstation', () => op.promise()),
        signal,
      );
      progress('start', `starting workstation ${wid}`);
      const [start] = await this.call('starting the workstation', (c) => c.startWorkstation({ name: this.name(id) }));
      const started = this.call('starting the workstation', () => start.promise());
      const w = await this.waitFor(id, 'running', started, signal, progress);
      const session = sessionOf(w);
      if (!session) throw new UnavailableError(`workstation ${wid} lost its onmemos labels`);
      progress('ready', `workstation ${wid} is running at ${w.host}`);
      return session;
    } catch (e) {
      if (made) await this.remove(id).catch(() => {});
      if (signal?.aborted) throw new InterruptedError(`create of ${id} interrupted; what it made was removed`);
      throw e;
    }
  }

  async get(id: string): Promise<Session> {
    const s = sessionOf(await this.lookup(id));
    if (!s || s.id !== id) throw new NotFoundError(`no such session: ${id}`);
    return s;
  }

  async list(filter: SessionFilter = {}): Promise<Session[]> {
    const [items] = await this.call('listing workstations', (c) =>
      c.listWorkstations({ parent: this.parent }, { autoPaginate: true }),
    );
    return sessionsAmong(items as WorkstationLike[], (w) => sessionOf(w), filter);
  }

  private async remove(id: string): Promise<void> {
    this.tokens.delete(id);
    this.recent.delete(id);
    await closeShared(this.sshTarget(id)).catch(() => {});
    const [op] = await this.call('removing the workstation', (c) => c.deleteWorkstation({ name: this.name(id) }));
    await this.call('removing the workstation', () => op.promise());
  }

  async delete(id: string): Promise<void> {
    await this.get(id);
    await this.remove(id);
  }

  async start(id: string): Promise<Session> {
    const s = await this.get(id);
    if (s.status === 'running') return s;
    const [op] = await this.call('starting the workstation', (c) => c.startWorkstation({ name: this.name(id) }));
    const w = await this.waitFor(
      id,
      'running',
      this.call('starting the workstation', () => op.promise()),
    );
    return sessionOf(w) ?? s;
  }

  async stop(id: string): Promise<Session> {
    const s = await this.get(id);
    if (s.status === 'stopped') return s;
    this.tokens.delete(id);
    this.recent.delete(id);
    await closeShared(this.sshTarget(id)).catch(() => {});
    const [op] = await this.call('stopping the workstation', (c) => c.stopWorkstation({ name: this.name(id) }));
    const w = await this.waitFor(
      id,
      'stopped',
      this.call('stopping the workstation', () => op.promise()),
    );
    return sessionOf(w) ?? s;
  }

  async extend(id: string, minutes: number): Promise<Session> {
    validateTtl(minutes);
    const w = await this.lookup(id);
    const annotations = {
      ...(w.annotations ?? {}),
      [ANNOTATION.expires]: new Date(Date.now() + minutes * 60_000).toISOString(),
      [ANNOTATION.ttl]: String(minutes),
    };
    const [op] = await this.call('extending the session', (c) =>
      c.updateWorkstation({
        workstation: { name: this.name(id), annotations },
        updateMask: { paths: ['annotations'] },
      }),
    );
    const [updated] = await this.call('extending the session', () => op.promise());
    const s = sessionOf(updated as WorkstationLike);
    if (!s) throw new NotFoundError(`no such session: ${id}`);
    return s;
  }

  async reapExpired(): Promise<string[]> {
    const removed: string[] = [];
    for (const s of await this.list()) {
      if (s.status === 'expired')
        await this.remove(s.id).then(
          () => removed.push(s.id),
          () => {},
        );
    }
    return removed;
  }

  /** The light path (google-rest.ts): what exec, shell and tunnel call, without loading the client library. */
  private rest?: { base: string; headers: ReturnType<typeof accessHeaders> };
  private restCall(path: string, body?: unknown): Promise<Record<string, unknown>> {
    this.rest ??= {
      base: apiBase(this.config.endpoint, 'workstations.googleapis.com'),
      headers: accessHeaders(this.config),
    };
    return googleCall(this.rest.base, this.rest.headers, path, body === undefined ? {} : { body });
  }

  /** Workstations read in the last READ_REUSE_MS: an exec's read follows the one its locate() just made. */
  private readonly recent = new Map<string, { at: number; w: WorkstationLike }>();

  /** The workstation through one REST GET (no client library loaded), errors as the client's. */
  private async lookup(id: string): Promise<WorkstationLike> {
    validateSessionId(id);
    try {
      const w = (await this.restCall(`v1/${this.name(id)}`)) as WorkstationLike;
      this.recent.set(id, { at: Date.now(), w });
      return w;
    } catch (e) {
      this.recent.delete(id);
      const mapped = this.apiError('reading the workstation', e);
      if (mapped instanceof NotFoundError)
        throw new NotFoundError(`no such session: ${id}`, { hint: 'list sessions with: onmemos ls' });
      throw mapped;
    }
  }

  /** An access token for the workstation's host (generateAccessToken), kept until 15 minutes before its end. */
  private async accessToken(id: string): Promise<string> {
    const kept = this.tokens.get(id);
    if (kept && kept.until > Date.now()) return kept.token;
    let r: { accessToken?: unknown; expireTime?: unknown };
    try {
      r = await this.restCall(`v1/${this.name(id)}:generateAccessToken`, { ttl: `${TOKEN_TTL_S}s` });
    } catch (e) {
      throw this.apiError('getting an access token for the workstation', e);
    }
    if (typeof r.accessToken !== 'string' || !r.accessToken) {
      throw new UnavailableError(`no access token for workstation ${workstationId(id)}`);
    }
    // Kept until a minute before it ends, as the API says (a token may be given a shorter life than asked for), and
    // for at most TOKEN_REFRESH_MS, as gcloud refreshes it.
    const expires = typeof r.expireTime === 'string' ? Date.parse(r.expireTime) : Number.NaN;
    const until = Math.min(Date.now() + TOKEN_REFRESH_MS, Number.isNaN(expires) ? Infinity : expires - 60_000);
    if (until > Date.now()) this.tokens.set(id, { token: r.accessToken, until });
    return r.accessToken;
  }

  /** The workstation, refused in one line unless it is running (a stopped one says how to start it). */
  private async running(id: string): Promise<WorkstationLike> {
    const read = this.recent.get(id);
    const w = read && Date.now() - read.at < READ_REUSE_MS ? read.w : await this.lookup(id);
    const status = statusOf(w);
    if (status !== 'running' || !w.host) {
      throw new ConflictError(`session ${id} is ${status}, not running`, {
        hint: status === 'stopped' ? `start it with: onmemos start ${id}` : undefined,
      });
    }
    return w;
  }

  /** One connection to `port` inside the workstation, through its TCP tunnel. */
  async tunnel(id: string, port: number): Promise<Duplex> {
    const w = await this.running(id);
    const open = async () =>
      openTunnel({ host: w.host as string, port, accessToken: await this.accessToken(id), caFile: this.config.caFile });
    try {
      return await open();
    } catch (e) {
      // A token the host no longer takes (it ended, or was revoked) is dropped, and a fresh one tried once.
      if ((e as { hostStatus?: number }).hostStatus !== 401) throw e;
      this.tokens.delete(id);
      return open();
    }
  }

  private sshTarget(id: string): SshTarget {
    const reuse = this.env.ONMEMOS_SSH_REUSE;
    return {
      id,
      user: this.config.user,
      key: keyPath(this.env),
      env: this.env,
      reuseSeconds: reuse === undefined || reuse === '' ? 60 : Math.max(0, Number(reuse) || 0),
    };
  }

  async exec(id: string, spec: ExecSpec): Promise<RemoteProcess> {
    const w = await this.running(id);
    const s = sessionOf(w);
    if (!s) throw new NotFoundError(`no such session: ${id}`);
    return sshExec(this.sshTarget(id), spec, sessionEnvironment(s));
  }

  async connect(id: string): Promise<ConnectInfo> {
    const s = await this.get(id);
    const host = typeof s.details.host === 'string' ? s.details.host : null;
    return {
      id,
      provider: 'workstations',
      status: s.status,
      url: s.url,
      exec: null,
      shell: { argv: ['/bin/bash', '-l'] },
      json_shell: null,
      ssh: host
        ? {
            host,
            port: 22,
            user: this.config.user,
            tunnel: `onmemos tunnel ${id} --local-port 2222   # then: ssh -p 2222 ${this.config.user}@localhost`,
          }
        : null,
    };
  }
}
