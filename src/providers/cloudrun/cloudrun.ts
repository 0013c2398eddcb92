import type { Duplex } from 'node:stream';
import {
  ConflictError,
  InterruptedError,
  NotFoundError,
  type OnmemosError,
  ProviderError,
  UnavailableError,
} from '../../errors.js';
import { openExec } from '../../exec/client.js';
import type { ExecSpec, RemoteProcess } from '../../exec/process.js';
import { jsonBody, openTunnelSocket } from '../../exec/tunnel.js';
import { V5 } from '../../exec/v5.js';
import {
  type ConnectInfo,
  type CreateSessionRequest,
  newSessionId,
  type Session,
  type SessionFilter,
  sessionsAmong,
  validateSessionId,
  validateTtl,
} from '../../session/model.js';
import { type AuthLike, abortable, clientOptions, googleCredentials, googleError } from '../google.js';
import { accessHeaders, apiBase, googleCall } from '../google-rest.js';
import { type Capabilities, type CreateOptions, capabilities, type Provider } from '../provider.js';
import { type CloudRunConfig, cloudRunConfig } from './config.js';
import {
  type ExecutionLike,
  executionDone,
  executionExit,
  type JobRun,
  jobObject,
  jobProcess,
  runOverrides,
  type ServiceTemplateLike,
  type TaskLike,
} from './job.js';
import { jobName, serviceName } from './names.js';

import { newNonce, secretKey, sessionSecret } from './secret.js';
import { ANNOTATION, LABEL, type ServiceLike, serviceObject, sessionOf, sha256Hex } from './service.js';

type RunModule = typeof import('@google-cloud/run');
type ServicesClient = import('@google-cloud/run').ServicesClient;
/** The Admin API's clients, all alike: the jobs', executions' and tasks' are made at their first use. */
interface Clients {
  services: ServicesClient;
  jobs(): import('@google-cloud/run').JobsClient;
  executions(): import('@google-cloud/run').ExecutionsClient;
  tasks(): import('@google-cloud/run').TasksClient;
}

/**
 * A service per session: no stop/start (scale to zero stands in), a workspace that outlives a scale to zero only
 * on a Filestore volume, background processes between requests only with instance-based CPU (`cpu_always`), CPU
 * and memory limits only, no nested user namespaces (gVisor/gen2 sandbox); commands through the agent, or once
 * each as a Cloud Run job (job.ts).
 */
export const CLOUDRUN_CAPABILITIES: Capabilities = capabilities({
  networks: ['outbound'],
  storage: ['bucket', 'filestore'],
  limits: ['cpus', 'memoryBytes'],
  persistentWorkspace: false,
  backgroundWhileIdle: 'cpu_always',
  lifecycle: { start: false, stop: false, extend: true },
  exec: ['websocket', 'job'],
  nestedUserns: false,
});

export async function loadCloudRunProvider(env: NodeJS.ProcessEnv): Promise<CloudRunProvider> {
  const r = cloudRunConfig(env);
  if (!r.ok) throw new UnavailableError(`provider cloud_run is not configured: ${r.reason}`);
  return new CloudRunProvider(r.config, env);
}

/** How long an exec may use the service as get() read it, instead of reading it again. */
const READ_REUSE_MS = 2_000;

export class CloudRunProvider implements Provider {
  readonly kind = 'cloud_run' as const;
  readonly capabilities = CLOUDRUN_CAPABILITIES;
  readonly parent: string;
  private clients?: Promise<Clients & { auth: AuthLike }>;

  constructor(
    readonly config: CloudRunConfig,
    private readonly env: NodeJS.ProcessEnv,
    /** Where ID tokens come from (tests inject one); Application Default Credentials by default. */
    private readonly idTokens?: (audience: string) => Promise<string>,
  ) {
    this.parent = `projects/${config.project}/locations/${config.region}`;
  }

  private where(): string {
    return `Cloud Run (${this.parent})`;
  }

  /** The client and credentials, loaded on first use: a static token from CLOUDSDK_AUTH_ACCESS_TOKEN_FILE, else ADC. */
  private api() {
    this.clients ??= (async () => {
      const [run, auth] = await Promise.all([import('@google-cloud/run'), googleCredentials(this.config)]);
      const options = clientOptions(auth, `${this.config.region}-run.googleapis.com`, this.config.endpoint) as never;
      const once = <K extends 'JobsClient' | 'ExecutionsClient' | 'TasksClient'>(k: K) => {
        let c: InstanceType<RunModule[K]> | undefined;
        return () => (c ??= new run[k](options) as InstanceType<RunModule[K]>);
      };
      return {
        services: new run.ServicesClient(options),
        jobs: once('JobsClient'),
        executions: once('ExecutionsClient'),
        tasks: once('TasksClient'),
        auth,
      };
    })();
    return this.clients;
  }

  private name(id: string): string {
    return `${this.parent}/services/${serviceName(id)}`;
  }

  /** An API error as an onmemos error that names the service and says what was being done. */
  private apiError(what: string, e: unknown): OnmemosError {
    return googleError(this.where(), what, e);
  }

  private async call<T>(what: string, fn: (s: ServicesClient, all: Clients) => Promise<T>): Promise<T> {
    try {
      const clients = await this.api();
      return await fn(clients.services, clients);
    } catch (e) {
      throw this.apiError(what, e);
    }
  }

  async create(req: CreateSessionRequest, opts: CreateOptions = {}): Promise<Session> {
    const { signal, onProgress } = opts;
    const now = Date.now();
    const id = newSessionId(req.namespace, req.user, now);
    const name = serviceName(id);
    const nonce = newNonce();
    const secret = sessionSecret(secretKey(this.env), name, nonce);
    const service = serviceObject(id, req, this.config, { secretSha256: sha256Hex(secret), nonce, now });
    const progress = (step: string, message: string) => onProgress?.({ step, message, id });
    let made = false;
    try {
      if (signal?.aborted) throw new InterruptedError('interrupted');
      progress('service', `service ${name} in ${this.parent} (image ${service.template.containers[0]!.image})`);
      const [op] = await this.call('creating the service', (s) =>
        s.createService({ parent: this.parent, serviceId: name, service: service as never }),
      );
      made = true;
      progress('deploy', `deploying ${name}: waiting for its first revision to be ready`);
      const done = this.call('deploying the service', async () => (await op.promise())[0] as ServiceLike);
      done.catch(() => {}); // after an abort, the operation fails as its service is removed: nobody waits for it
      const result = await abortable(done, signal);
      const session = sessionOf(result);
      if (!session) throw new ProviderError(`service ${name} lost its onmemos labels`);
      progress('ready', `service ${name} is ready at ${result.uri}`);
      return session;
    } catch (e) {
      if (made) await this.remove(id).catch(() => {});
      if (signal?.aborted) throw new InterruptedError(`create of ${id} interrupted; what it made was removed`);
      throw e;
    }
  }

  private async service(id: string): Promise<ServiceLike> {
    validateSessionId(id);
    try {
      const [s] = await this.call('reading the service', (c) => c.getService({ name: this.name(id) }));
      return s as ServiceLike;
    } catch (e) {
      if (e instanceof NotFoundError)
        throw new NotFoundError(`no such session: ${id}`, { hint: 'list sessions with: onmemos ls' });
      throw e;
    }
  }

  /** The light path (google-rest.ts), made on first use: what get, exec and shell read, without the client library. */
  private rest?: { base: string; headers: ReturnType<typeof accessHeaders> };
  /**
   * Services this provider read in the last READ_REUSE_MS, by session id: an exec's own read of the service
   * follows the one its locate() just made (a command on one session reads it first: `onmemos exec`, the server's
   * routes), and on Cloud Run each read is a round trip to the regional endpoint.
   */
  private readonly recent = new Map<string, { at: number; service: ServiceLike }>();

  /**
   * The service, as `service` reads it but through one plain REST GET (google-rest.ts), errors mapped alike. What get and
   * the agent's lookup use; extend keeps the client's read, whose object it sends back to the client.
   */
  private async lookup(id: string): Promise<ServiceLike> {
    validateSessionId(id);
    this.rest ??= {
      base: apiBase(this.config.endpoint, `${this.config.region}-run.googleapis.com`),
      headers: accessHeaders(this.config),
    };
    try {
      const service: ServiceLike = await googleCall(this.rest.base, this.rest.headers, `v2/${this.name(id)}`, {
        timeoutMs: this.config.apiTimeoutMs,
      });
      const now = Date.now();
      for (const [k, v] of this.recent) if (now - v.at >= READ_REUSE_MS) this.recent.delete(k);
      this.recent.set(id, { at: now, service });
      return service;
    } catch (e) {
      this.recent.delete(id);
      const mapped = this.apiError('reading the service', e);
      if (mapped instanceof NotFoundError)
        throw new NotFoundError(`no such session: ${id}`, { hint: 'list sessions with: onmemos ls' });
      throw mapped;
    }
  }

  async get(id: string): Promise<Session> {
    const s = sessionOf(await this.lookup(id));
    if (!s || s.id !== id) throw new NotFoundError(`no such session: ${id}`);
    return s;
  }

  async list(filter: SessionFilter = {}): Promise<Session[]> {
    const [items] = await this.call('listing services', (c) =>
      c.listServices({ parent: this.parent }, { autoPaginate: true }),
    );
    return sessionsAmong(items as ServiceLike[], (s) => sessionOf(s), filter);
  }

  /** Removes the session's service and its job (the job, if it was ever made). */
  private async remove(id: string): Promise<void> {
    this.recent.delete(id);
    const service = async () => {
      const [op] = await this.call('removing the service', (c) => c.deleteService({ name: this.name(id) }));
      await this.call('removing the service', () => op.promise());
    };
    await Promise.all([service(), this.removeJob(this.jobPath(id))]);
  }

  private jobPath(id: string): string {
    return `${this.parent}/jobs/${jobName(id)}`;
  }

  /** Deletes a job (running executions are cancelled by the API); one that is not there is fine. */
  private async removeJob(name: string): Promise<void> {
    try {
      const [op] = await this.call('removing the job', (_s, c) => c.jobs().deleteJob({ name }));
      await this.call('removing the job', () => op.promise());
    } catch (e) {
      if (!(e instanceof NotFoundError)) throw e;
    }
  }

  async delete(id: string): Promise<void> {
    await this.get(id);
    await this.remove(id);
  }

  async extend(id: string, minutes: number): Promise<Session> {
    validateTtl(minutes);
    const s = await this.service(id);
    const annotations = {
      ...(s.annotations ?? {}),
      [ANNOTATION.expires]: new Date(Date.now() + minutes * 60_000).toISOString(),
      [ANNOTATION.ttl]: String(minutes),
    };
    const [op] = await this.call('extending the session', (c) =>
      // The API is declarative: the whole service goes back, with its annotations changed (no new revision).
      c.updateService({ service: { ...s, annotations } as never }),
    );
    const [updated] = await this.call('extending the session', () => op.promise());
    const session = sessionOf(updated as ServiceLike);
    if (!session) throw new NotFoundError(`no such session: ${id}`);
    return session;
  }

  /** Removes expired sessions, and jobs whose session's service is gone (a remove that was cut short). */
  async reapExpired(): Promise<string[]> {
    const removed: string[] = [];
    const sessions = await this.list();
    for (const s of sessions) {
      if (s.status === 'expired')
        await this.remove(s.id).then(
          () => removed.push(s.id),
          () => {},
        );
    }
    // A caller allowed services but not jobs still reaps its sessions: the sweep of jobs is best effort.
    const jobs = await this.call('listing jobs', (_s, c) =>
      c.jobs().listJobs({ parent: this.parent }, { autoPaginate: true }),
    ).then(
      ([j]) => j,
      () => [],
    );
    const live = new Set(sessions.filter((s) => s.status !== 'expired').map((s) => this.jobPath(s.id)));
    for (const j of jobs) {
      const id = j.annotations?.[ANNOTATION.session];
      if (j.labels?.[LABEL.managedBy] !== 'onmemos' || !id || !j.name || live.has(j.name)) continue;
      if (j.name !== this.jobPath(id)) continue; // not a name this provider gives
      await this.service(id)
        .then(
          () => {}, // the session is there after all (made after the list)
          (e) => (e instanceof NotFoundError ? this.removeJob(j.name as string) : undefined),
        )
        .catch(() => {});
    }
    return removed;
  }

  /** The agent's address and what it takes to be let in: an ID token for the URL, and the session's secret. */
  private async agent(id: string): Promise<{ url: string; headers: Record<string, string> }> {
    const read = this.recent.get(id);
    const s = read && Date.now() - read.at < READ_REUSE_MS ? read.service : await this.lookup(id);
    const session = sessionOf(s);
    if (!session || !s.uri) throw new NotFoundError(`no such session: ${id}`);
    if (session.status !== 'running') throw new UnavailableError(`session ${id} is ${session.status}, not running`);
    const nonce = s.annotations?.[ANNOTATION.nonce] ?? '';
    const secret = sessionSecret(secretKey(this.env), serviceName(id), nonce);
    const token = await this.idToken(s.uri);
    return {
      url: s.uri.replace(/\/+$/, '').replace(/^http/, 'ws'),
      headers: { authorization: `Bearer ${token}`, 'x-onmemos-secret': secret },
    };
  }

  /**
   * An ID token for the service's URL (Cloud Run's invoker check), from the first source that gives one:
   * ONMEMOS_ID_TOKEN_COMMAND (run with AUDIENCE set; prints a token, as a kubectl credential plugin does),
   * Application Default Credentials that can make one (a service account's key, the metadata server), or
   * `gcloud auth print-identity-token` (a gcloud user). Kept for 50 minutes per audience in this process.
   */
  private async idToken(audience: string): Promise<string> {
    if (this.idTokens) return this.idTokens(audience);
    const cached = this.tokenCache.get(audience);
    if (cached && cached.until > Date.now()) return cached.token;
    const tried: string[] = [];
    const command = this.env.ONMEMOS_ID_TOKEN_COMMAND;
    let token: string | undefined;
    if (command) {
      token = await runForToken('/bin/sh', ['-c', command], { ...this.env, AUDIENCE: audience }).catch((e) => {
        throw new UnavailableError(`ONMEMOS_ID_TOKEN_COMMAND failed: ${(e as Error).message}`);
      });
    } else {
      try {
        const gal = await import('google-auth-library');
        // The project given: else GoogleAuth first runs `gcloud config config-helper` to find one (google-rest.ts).
        const client = await new gal.GoogleAuth({ projectId: this.config.project }).getIdTokenClient(audience);
        token = await client.idTokenProvider.fetchIdToken(audience);
      } catch (e) {
        tried.push(`Application Default Credentials: ${(e as Error).message.split('\n')[0]}`);
      }
      if (!token) {
        token = await runForToken('gcloud', ['auth', 'print-identity-token'], this.env).catch((e) => {
          tried.push(`gcloud auth print-identity-token: ${(e as Error).message}`);
          return undefined;
        });
      }
    }
    if (!token) {
      throw new UnavailableError(`cannot get an ID token for ${audience} (${tried.join('; ')})`, {
        hint: 'use a service account (GOOGLE_APPLICATION_CREDENTIALS), gcloud auth login, or ONMEMOS_ID_TOKEN_COMMAND',
      });
    }
    this.tokenCache.set(audience, { token, until: Date.now() + 50 * 60_000 });
    return token;
  }
  private readonly tokenCache = new Map<string, { token: string; until: number }>();

  async exec(id: string, spec: ExecSpec): Promise<RemoteProcess> {
    if (spec.via === 'job') return this.execJob(id, spec);
    const { url, headers } = await this.agent(id);
    return openExec(spec, {
      url: `${url}/v1/exec`,
      headers,
      peer: `the agent of session ${id}`,
      refused: (status, body) => agentRefusal(id, status, body),
    });
  }

  /** A TCP port inside the session's container, through its agent's `/v1/tunnel` (`onmemos tunnel`). */
  async tunnel(id: string, port: number): Promise<Duplex> {
    const { url, headers } = await this.agent(id);
    return openTunnelSocket(`${url}/v1/tunnel?port=${port}`, {
      headers,
      refused: (status, text) => agentRefusal(id, status, jsonBody(text)),
      unreachable: (e) => new UnavailableError(`cannot reach the agent of session ${id}: ${e.message}`),
    });
  }

  /** A command as a run of the session's job (job.ts), made from its service at the first one. */
  private async execJob(id: string, spec: ExecSpec): Promise<RemoteProcess> {
    const s = (await this.service(id)) as ServiceTemplateLike;
    const session = sessionOf(s);
    if (!session) throw new NotFoundError(`no such session: ${id}`);
    if (session.status === 'expired') throw new UnavailableError(`session ${id} has expired`);
    const name = this.jobPath(id);
    const short = jobName(id);
    try {
      const [op] = await this.call("making the session's job", (_s, c) =>
        c.jobs().createJob({ parent: this.parent, jobId: short, job: jobObject(id, s) as never }),
      );
      await this.call("making the session's job", () => op.promise());
    } catch (e) {
      if (!(e instanceof ConflictError)) throw e; // made by an earlier command
    }
    const overrides = runOverrides(spec, spec.timeoutSeconds);
    const [op] = await this.call('running the job', (_s, c) =>
      c.jobs().runJob({ name, overrides: overrides as never }),
    );
    const execution = (op.metadata as { name?: string } | null)?.name;
    if (!execution) throw new ProviderError(`the run of job ${short} named no execution`);
    // Cloud Run ends the run by its task timeout; past that (and a margin for the API), the wait gives up.
    const bound = Date.now() + (overrides.timeout.seconds + 600) * 1000;
    const wait: JobRun['wait'] = async (cancelledWith) => {
      let delay = 200;
      let failures = 0;
      while (Date.now() < bound) {
        let e: ExecutionLike | undefined;
        try {
          [e] = await this.call('reading the execution', (_s, c) => c.executions().getExecution({ name: execution }));
          failures = 0;
        } catch (err) {
          // A blip of the API is waited out; a run that is gone, or an API that stays away, ends the wait.
          if (err instanceof NotFoundError || !(err instanceof UnavailableError) || ++failures > 5) throw err;
        }
        if (e && executionDone(e)) {
          let task: TaskLike | undefined;
          if ((e.failedCount ?? 0) > 0) {
            const [tasks] = await this.call('reading the task', (_s, c) =>
              c.tasks().listTasks({ parent: execution }, { autoPaginate: false }),
            ).catch(() => [[] as TaskLike[]]);
            task = (tasks as TaskLike[])[0];
          }
          return { ...executionExit(e, task, cancelledWith()), logUri: e.logUri || null };
        }
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(2000, Math.round(delay * 1.5));
      }
      throw new UnavailableError(`execution ${execution} did not end within its timeout`);
    };
    // The wait sees the cancel through (the execution ends cancelled): its operation is not polled.
    const cancel = async () => {
      await this.call('cancelling the execution', (_s, c) => c.executions().cancelExecution({ name: execution }));
    };
    return jobProcess({ execution, wait, cancel }, short);
  }

  async connect(id: string): Promise<ConnectInfo> {
    const s = await this.get(id);
    const ws = s.url ? s.url.replace(/\/+$/, '').replace(/^http/, 'ws') : null;
    return {
      id,
      provider: 'cloud_run',
      status: s.status,
      url: s.url,
      exec: ws ? { url: `${ws}/v1/exec`, protocol: V5 } : null,
      shell: { argv: ['/bin/bash', '-l'] },
      json_shell: ws ? `${ws}/v1/shell` : null,
      ssh: null,
    };
  }
}

/** Runs a command that prints a token on stdout (bounded: 30 s, 64 KiB); rejects with its stderr's last line. */
async function runForToken(file: string, args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  const { execFile } = await import('node:child_process');
  return new Promise((resolve, reject) => {
    execFile(file, args, { env, timeout: 30_000, maxBuffer: 64 * 1024 }, (err, stdout, stderr) => {
      const token = String(stdout).trim();
      if (err || !/^[A-Za-z0-9._-]+$/.test(token)) {
        const why = String(stderr).trim().split('\n').pop() || (err ? err.message.split('\n')[0] : 'no token printed');
        reject(new Error(why));
      } else resolve(token);
    });
  });
}

/** An answer of a session's agent that is not the upgrade, as onmemos' error: its own message, in one line. */
function agentRefusal(id: string, status: number, body: unknown): OnmemosError {
  const message = (body as { error?: { message?: string } })?.error?.message ?? `HTTP ${status}`;
  if (status === 401 || status === 403) {
    return new ProviderError(`the agent of session ${id} refused the call (${status}): ${message}`);
  }
  if (status === 429) return new UnavailableError(`the agent of session ${id} is busy: ${message}`);
  return new UnavailableError(`the agent of session ${id} answered ${status}: ${message}`);
}
