/**
 * The gke provider: a session is a pod (labels and annotations carry the session, so the cluster is the only
 * state) in the Kubernetes namespace `{GKE_NAMESPACE_PREFIX}-{namespace}`. Writes and lists go through
 * @kubernetes/client-node (its KubeConfig also authenticates, exec plugins such as gke-gcloud-auth-plugin
 * included); the hot path of a command on one session (a GET of its pod) skips loading it where the kubeconfig
 * allows (http.ts); commands go over the pods/exec WebSocket with onmemos' own v5.channel.k8s.io client (src/exec),
 * and `onmemos tunnel` over the pods/portforward WebSocket (portforward.ts), as kubectl port-forward reaches a pod.
 */
import { readFileSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import {
  InterruptedError,
  NotFoundError,
  OnmemosError,
  ProviderError,
  UnavailableError,
  UserError,
} from '../../errors.js';
import { openExec } from '../../exec/client.js';
import type { ExecSpec, ExitStatus, RemoteProcess } from '../../exec/process.js';
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
import { type Capabilities, type CreateOptions, capabilities, type Provider } from '../provider.js';
import { pidFile, podExecQuery, signalArgv, wrappedArgv } from './exec.js';
import { type KubeConnection, kubeRequest, simpleConnection } from './http.js';
import { type KubeTarget, kubeconfigOptions, resolveKube } from './kubeconfig.js';
import {
  ANNOTATION,
  candidateNamespaces,
  checkNames,
  type GkeSettings,
  gkeSettings,
  kubeNamespace,
  LABEL,
  MANAGED_BY,
  namespaceObject,
  type PodLike,
  podObject,
  podProblem,
  pvcName,
  pvcObject,
  sessionOf,
} from './pod.js';
import { openPortForward } from './portforward.js';

type K8s = typeof import('@kubernetes/client-node');
type CoreV1Api = import('@kubernetes/client-node').CoreV1Api;
type KubeConfig = import('@kubernetes/client-node').KubeConfig;

/** The GCS FUSE CSI driver's FailedMount for a bucket that does not exist (its troubleshooting guide's words). */
const BUCKET_MISSING = /rpc error: code = NotFound desc = failed to get GCS bucket/;

/** A pod per session: no stop/start (a pod does not survive one), no pids limit per pod, no nested userns. */
export const GKE_CAPABILITIES: Capabilities = capabilities({
  networks: ['outbound'],
  storage: ['bucket', 'volume'],
  limits: ['cpus', 'memoryBytes', 'diskBytes'],
  persistentWorkspace: false,
  lifecycle: { start: false, stop: false, extend: true },
  nestedUserns: false,
});

export interface GkeTimings {
  /** One API request, at most (GKE_REQUEST_TIMEOUT seconds; default 15). */
  requestMs: number;
  /** A create waits this long for the pod to be Ready (GKE_CREATE_TIMEOUT seconds; default 300: Autopilot may add a node). */
  createMs: number;
  /** How often a create or a delete looks at the pod. */
  pollMs: number;
  /** rm waits this long for the pod to be gone, then says it is terminating. */
  deleteMs: number;
}

function seconds(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const v = env[name];
  if (v === undefined || v === '') return fallback * 1000;
  const n = Number(v);
  if (!(n > 0) || n > 86_400) throw new UserError(`${name} must be a number of seconds, got ${JSON.stringify(v)}`);
  return n * 1000;
}

export function gkeTimings(env: NodeJS.ProcessEnv): GkeTimings {
  return {
    requestMs: seconds(env, 'GKE_REQUEST_TIMEOUT', 15),
    createMs: seconds(env, 'GKE_CREATE_TIMEOUT', 300),
    pollMs: 250,
    deleteMs: 30_000,
  };
}

export async function loadGkeProvider(env: NodeJS.ProcessEnv): Promise<GkeProvider> {
  const r = resolveKube(env);
  if (!r.ok) throw new UnavailableError(`provider gke is not configured: ${r.reason}`);
  return new GkeProvider(r.target, gkeSettings(env), gkeTimings(env));
}

export class GkeProvider implements Provider {
  readonly kind = 'gke' as const;
  readonly capabilities = GKE_CAPABILITIES;
  /** The Kubernetes namespace of each session this process has seen (saves the lookup before an exec). */
  private readonly where = new Map<string, string>();
  /** The kubeconfig's connection when it needs no client-node (http.ts), else undefined. */
  private readonly simple: KubeConnection | undefined;
  private client?: Promise<{ kc: KubeConfig; core: CoreV1Api }>;

  constructor(
    readonly target: KubeTarget,
    readonly settings: GkeSettings,
    private readonly timings: GkeTimings,
  ) {
    try {
      this.simple = simpleConnection(target);
    } catch (e) {
      throw new UnavailableError(`cannot read the credentials of context ${target.context}: ${(e as Error).message}`);
    }
  }

  /** client-node, loaded on first use: every write and list, and authentication the kubeconfig delegates. */
  private api(): Promise<{ kc: KubeConfig; core: CoreV1Api }> {
    this.client ??= (async () => {
      const k8s: K8s = await import('@kubernetes/client-node');
      const kc = new k8s.KubeConfig();
      const options = kubeconfigOptions(this.target);
      const user = options.users[0]!;
      if (!user.token && this.target.user.tokenFile) {
        (user as { token?: string }).token = readFileSync(this.target.user.tokenFile, 'utf8').trim();
      }
      kc.loadFromOptions(options);
      return { kc, core: kc.makeApiClient(k8s.CoreV1Api) };
    })();
    return this.client;
  }

  private async core(): Promise<CoreV1Api> {
    return (await this.api()).core;
  }

  /** GET of one pod: on the hot path (http.ts) where the kubeconfig allows, else through client-node. */
  private readPod(name: string, namespace: string): Promise<PodLike> {
    return this.call('reading the pod', async () => {
      if (!this.simple) return (await (await this.core()).readNamespacedPod({ name, namespace })) as PodLike;
      const path = `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(name)}`;
      return (await kubeRequest(this.simple, 'GET', path, this.timings.requestMs)) as PodLike;
    });
  }

  /**
   * The latest FailedMount event of a pod (the kubelet cannot mount one of its volumes: a bucket that does not
   * exist, say), as `FailedMount: message`; undefined when there is none or the events cannot be read.
   */
  private async failedMount(name: string, namespace: string): Promise<string | undefined> {
    const fieldSelector = `involvedObject.name=${name},reason=FailedMount`;
    type Events = { items?: { message?: string; lastTimestamp?: Date | string; eventTime?: Date | string }[] };
    try {
      const list = await this.call("reading the pod's events", async () => {
        if (!this.simple) {
          const core = await this.core();
          return (await core.listNamespacedEvent({ namespace, fieldSelector })) as Events;
        }
        const path = `/api/v1/namespaces/${encodeURIComponent(namespace)}/events?${new URLSearchParams({ fieldSelector })}`;
        return (await kubeRequest(this.simple, 'GET', path, this.timings.requestMs)) as Events;
      });
      const at = (e: NonNullable<Events['items']>[number]) => new Date(e.lastTimestamp ?? e.eventTime ?? 0).getTime();
      const latest = (list.items ?? [])
        .filter((e) => e.message)
        .sort((a, b) => at(a) - at(b))
        .at(-1);
      return latest ? `FailedMount: ${latest.message!.replace(/\s+/g, ' ').trim()}` : undefined;
    } catch {
      return undefined; // events are a better reason, not a requirement (a role may not allow reading them)
    }
  }

  private get cluster(): string {
    return `the cluster of context ${this.target.context} (${this.target.cluster.server})`;
  }

  /** One API call, bounded in time, its failures as onmemos errors that name the cluster. */
  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new UnavailableError(`${this.cluster} did not answer within ${this.timings.requestMs / 1000}s (${what})`),
          ),
        this.timings.requestMs,
      );
    });
    try {
      return await Promise.race([fn(), timeout]);
    } catch (e) {
      throw this.apiError(what, e);
    } finally {
      clearTimeout(timer);
    }
  }

  private apiError(what: string, e: unknown): OnmemosError {
    if (e instanceof Error && 'code' in e && typeof (e as { code: unknown }).code === 'number') {
      const code = (e as { code: number }).code;
      const message = statusMessage((e as { body?: unknown }).body) ?? e.message.split('\n')[0];
      if (code === 404) return new NotFoundError(`${what}: ${message}`);
      if (code === 401) {
        return new ProviderError(
          `${this.cluster} refused the credentials of user ${this.target.userName || '(none)'}: ${message}`,
          {
            hint: 'check the kubeconfig user, or run the gcloud get-credentials command again',
          },
        );
      }
      if (code === 403) return new ProviderError(`${this.cluster} forbids ${what}: ${message}`);
      if (code >= 500) return new UnavailableError(`${this.cluster} failed (${what}): ${message}`, { cause: e });
      return new ProviderError(`${this.cluster} refused ${what}: ${message}`, { cause: e });
    }
    if (e instanceof OnmemosError) return e; // already ours (a timeout)
    const detail = e instanceof Error ? e.message : String(e);
    return new UnavailableError(`cannot reach ${this.cluster}: ${detail}`, { cause: e });
  }

  async create(req: CreateSessionRequest, opts: CreateOptions = {}): Promise<Session> {
    const { signal, onProgress } = opts;
    const now = Date.now();
    const id = newSessionId(req.namespace, req.user, now);
    const s = this.settings;
    checkNames(s.prefix, id, req.namespace);
    const ns = kubeNamespace(s.prefix, req.namespace);
    const progress = (step: string, message: string) => onProgress?.({ step, message, id });
    const made = { pod: false, pvc: false };
    const aborted = () => {
      if (signal?.aborted) throw new InterruptedError(`create of ${id} interrupted; nothing of it is left`);
    };
    try {
      aborted();
      progress('namespace', `namespace ${ns} (context ${this.target.context})`);
      await this.ensureNamespace(ns);
      aborted();
      if (req.storage?.volume) {
        const pvc = pvcObject(id, req);
        progress('storage', `volume ${pvc.metadata.name} (${pvc.spec.resources.requests.storage}) at /workspace`);
        await this.call('creating a volume', async () =>
          (await this.core()).createNamespacedPersistentVolumeClaim({ namespace: ns, body: pvc as never }),
        );
        made.pvc = true;
        aborted();
      }
      const body = podObject(id, req, s, now);
      progress('pod', `pod ${id} (image ${body.spec.containers[0]!.image})`);
      await this.call('creating the pod', async () =>
        (await this.core()).createNamespacedPod({ namespace: ns, body: body as never }),
      );
      made.pod = true;
      this.where.set(id, ns);
      const pod = await this.waitReady(id, ns, signal, progress);
      progress('ready', `pod ${id} is ready`);
      const session = sessionOf(pod, this.target.context);
      if (!session) throw new ProviderError(`pod ${id} lost its onmemos labels`);
      return session;
    } catch (e) {
      await this.removeMade(id, ns, made);
      if (signal?.aborted) throw new InterruptedError(`create of ${id} interrupted; what it made was removed`);
      throw e;
    }
  }

  private async ensureNamespace(ns: string): Promise<void> {
    try {
      await this.call(`reading namespace ${ns}`, async () => (await this.core()).readNamespace({ name: ns }));
      return;
    } catch (e) {
      if (!(e instanceof NotFoundError)) throw e;
    }
    try {
      await this.call(`creating namespace ${ns}`, async () =>
        (await this.core()).createNamespace({ body: namespaceObject(ns) as never }),
      );
    } catch (e) {
      // Another create made it in between: that is what was wanted.
      if (!(e instanceof ProviderError && /already exists/i.test(e.message))) throw e;
    }
  }

  /** Polls the pod until Ready; a reason that waiting will not cure fails at once, with the pod's own words. */
  private async waitReady(
    id: string,
    ns: string,
    signal: AbortSignal | undefined,
    progress: (step: string, message: string) => void,
  ): Promise<PodLike> {
    const deadline = Date.now() + this.timings.createMs;
    let said = '';
    /** Since when the pod's containers have been ContainerCreating, and when its events were last read. */
    let creatingSince: number | undefined;
    let eventsReadAt = 0;
    let mountProblem: string | undefined;
    for (;;) {
      const pod = await this.readPod(id, ns);
      const phaseReady =
        pod.status?.phase === 'Running' &&
        pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');
      if (phaseReady) return pod;
      let problem = podProblem(pod);
      // A pod whose volumes the kubelet cannot mount stays ContainerCreating; only its events say why. They are
      // read once it has been so for a second (a pod normally gets past it sooner), then every two seconds.
      if (problem?.reason === 'ContainerCreating' && pod.spec?.nodeName) {
        creatingSince ??= Date.now();
        if (Date.now() - creatingSince >= 1_000 && Date.now() - eventsReadAt >= 2_000) {
          eventsReadAt = Date.now();
          mountProblem = (await this.failedMount(id, ns)) ?? mountProblem;
        }
        // A bucket that does not exist will not come by waiting, as an image that does not exist will not.
        if (mountProblem) problem = { fatal: BUCKET_MISSING.test(mountProblem), reason: mountProblem };
      } else {
        creatingSince = undefined;
      }
      if (problem?.fatal) throw new ProviderError(`pod ${id} cannot start: ${problem.reason}`);
      const now = problem?.reason ?? `pod is ${pod.status?.phase ?? 'Pending'}`;
      if (now !== said) {
        progress('wait', `waiting for pod ${id}: ${now}`);
        said = now;
      }
      if (Date.now() >= deadline) {
        throw new ProviderError(`pod ${id} was not ready within ${this.timings.createMs / 1000}s: ${now}`, {
          hint: 'GKE_CREATE_TIMEOUT sets the wait, in seconds',
        });
      }
      await sleep(this.timings.pollMs, signal);
    }
  }

  private async removeMade(id: string, ns: string, made: { pod: boolean; pvc: boolean }): Promise<void> {
    this.where.delete(id);
    const quiet = (p: Promise<unknown>) => p.catch(() => {});
    if (made.pod) {
      await quiet(
        this.call('removing the pod', async () =>
          (await this.core()).deleteNamespacedPod({ name: id, namespace: ns, gracePeriodSeconds: 0 }),
        ),
      );
    }
    if (made.pvc) {
      await quiet(
        this.call('removing the volume', async () =>
          (await this.core()).deleteNamespacedPersistentVolumeClaim({ name: pvcName(id), namespace: ns }),
        ),
      );
    }
  }

  /** The pod of a session: in one of the namespaces its id allows (asked at once), labelled as that session. */
  private async findPod(id: string): Promise<{ pod: PodLike; ns: string }> {
    validateSessionId(id);
    const known = this.where.get(id);
    const namespaces = known ? [known] : candidateNamespaces(this.settings.prefix, id);
    const answers = await Promise.allSettled(
      namespaces.map(async (ns) => ({
        ns,
        pod: await this.readPod(id, ns),
      })),
    );
    for (const a of answers) {
      if (a.status === 'fulfilled' && a.value.pod.metadata?.labels?.[LABEL.session] === id) {
        this.where.set(id, a.value.ns);
        return a.value;
      }
    }
    for (const a of answers) if (a.status === 'rejected' && !(a.reason instanceof NotFoundError)) throw a.reason;
    this.where.delete(id);
    throw new NotFoundError(`no such session: ${id}`, { hint: 'list sessions with: onmemos ls' });
  }

  async get(id: string): Promise<Session> {
    const { pod } = await this.findPod(id);
    const s = sessionOf(pod, this.target.context);
    if (!s) throw new NotFoundError(`no such session: ${id}`);
    return s;
  }

  async list(filter: SessionFilter = {}): Promise<Session[]> {
    const selector = [`${MANAGED_BY}=onmemos`];
    if (filter.namespace) selector.push(`${LABEL.namespace}=${filter.namespace}`);
    if (filter.user) selector.push(`${LABEL.user}=${filter.user}`);
    const labelSelector = selector.join(',');
    let items: PodLike[];
    if (filter.namespace) {
      const namespace = kubeNamespace(this.settings.prefix, filter.namespace);
      try {
        items = (
          await this.call('listing pods', async () =>
            (await this.core()).listNamespacedPod({ namespace, labelSelector }),
          )
        ).items as PodLike[];
      } catch (e) {
        if (e instanceof NotFoundError) return [];
        throw e;
      }
    } else {
      items = (
        await this.call('listing pods', async () => (await this.core()).listPodForAllNamespaces({ labelSelector }))
      ).items as PodLike[];
    }
    const prefix = `${this.settings.prefix}-`;
    return sessionsAmong(items, (pod) => {
      if (!pod.metadata?.namespace?.startsWith(prefix)) return undefined;
      const s = sessionOf(pod, this.target.context);
      if (s) this.where.set(s.id, pod.metadata.namespace);
      return s;
    });
  }

  async delete(id: string): Promise<void> {
    const { pod, ns } = await this.findPod(id);
    await this.call('removing the pod', async () =>
      (await this.core()).deleteNamespacedPod({ name: id, namespace: ns }),
    );
    const keep = pod.metadata?.annotations?.[ANNOTATION.keepStorage] === 'true';
    const hasPvc = pod.spec?.volumes?.some((v) => v.persistentVolumeClaim);
    if (hasPvc && !keep) {
      await this.call('removing the volume', async () =>
        (await this.core()).deleteNamespacedPersistentVolumeClaim({ name: pvcName(id), namespace: ns }),
      ).catch((e) => {
        if (!(e instanceof NotFoundError)) throw e;
      });
    }
    this.where.delete(id);
    // Gone, or at least terminating: wait a while for the first, so that `rm && ls` does not show it.
    const deadline = Date.now() + this.timings.deleteMs;
    while (Date.now() < deadline) {
      try {
        await this.readPod(id, ns);
      } catch (e) {
        if (e instanceof NotFoundError) return;
        throw e;
      }
      await sleep(this.timings.pollMs);
    }
  }

  async extend(id: string, minutes: number): Promise<Session> {
    validateTtl(minutes);
    const { ns } = await this.findPod(id);
    const expires = new Date(Date.now() + minutes * 60_000).toISOString();
    const esc = (k: string) => k.replace(/~/g, '~0').replace(/\//g, '~1');
    const body = [
      { op: 'replace', path: `/metadata/annotations/${esc(ANNOTATION.expires)}`, value: expires },
      { op: 'replace', path: `/metadata/annotations/${esc(ANNOTATION.ttl)}`, value: String(minutes) },
    ];
    const pod = (await this.call('extending the session', async () =>
      (await this.core()).patchNamespacedPod({ name: id, namespace: ns, body }),
    )) as PodLike;
    const s = sessionOf(pod, this.target.context);
    if (!s) throw new NotFoundError(`no such session: ${id}`);
    return s;
  }

  async reapExpired(): Promise<string[]> {
    const removed: string[] = [];
    for (const s of await this.list()) {
      if (s.status !== 'expired') continue;
      await this.delete(s.id).then(
        () => removed.push(s.id),
        () => {},
      );
    }
    return removed;
  }

  private execUrl(ns: string, id: string, sub: 'exec' | 'portforward' = 'exec'): string {
    const base = (this.target.cluster.server ?? '').replace(/\/+$/, '').replace(/^http/, 'ws');
    return `${base}/api/v1/namespaces/${encodeURIComponent(ns)}/pods/${encodeURIComponent(id)}/${sub}`;
  }

  async connect(id: string): Promise<ConnectInfo> {
    const { pod, ns } = await this.findPod(id);
    const s = sessionOf(pod, this.target.context);
    if (!s) throw new NotFoundError(`no such session: ${id}`);
    return {
      id,
      provider: 'gke',
      status: s.status,
      url: null,
      exec: { url: this.execUrl(ns, id), protocol: V5 },
      shell: { argv: this.shellArgv() },
      json_shell: null,
      ssh: null,
    };
  }

  /** The login shell: GKE_SHELL (the document's variable; default /bin/sh). */
  shellArgv(): string[] {
    return [this.settings.shell, '-l'];
  }

  /** TLS and headers for the exec WebSocket: the kubeconfig's own, or what client-node's KubeConfig makes of it. */
  private async connection(): Promise<{ headers: Record<string, string>; tls: Record<string, unknown> }> {
    if (this.simple) return { headers: this.simple.headers, tls: this.simple.tls };
    const o: Record<string, unknown> = {};
    await (await this.api()).kc.applyToHTTPSOptions(o as never);
    const headers = { ...((o.headers as Record<string, string> | undefined) ?? {}) };
    delete o.headers;
    return { headers, tls: o };
  }

  /** Runs one command over the exec WebSocket; the first frame's failure is the API server's own message. */
  private async openPodExec(id: string, ns: string, argv: string[], o: { stdin: boolean; tty: boolean }) {
    const { headers, tls } = await this.connection();
    return openExec(
      { argv, stdin: o.stdin, tty: o.tty },
      {
        url: this.execUrl(ns, id),
        query: podExecQuery(argv, o),
        headers,
        tls,
        peer: `pod ${id} (context ${this.target.context})`,
        refused: (status, body) => {
          const message = statusMessage(body) ?? `HTTP ${status}`;
          if (status === 404) {
            this.where.delete(id);
            return new NotFoundError(`no such session: ${id} (${message})`);
          }
          if (status === 400) return new UnavailableError(`session ${id} cannot run commands now: ${message}`);
          return this.apiError('running a command', Object.assign(new Error(message), { code: status, body }));
        },
      },
    );
  }

  /**
   * One connection to `port` on the pod's loopback, through the pods/portforward API (one WebSocket each). A pod
   * that is not Running is refused here, as kubectl port-forward refuses it; nothing listening on the port ends
   * the stream with the kubelet's message.
   */
  async tunnel(id: string, port: number): Promise<Duplex> {
    let ns = this.where.get(id);
    if (!ns) {
      const found = await this.findPod(id);
      ns = found.ns;
      const phase = found.pod.status?.phase ?? 'Pending';
      if (phase !== 'Running') {
        throw new UnavailableError(`session ${id} is not running (its pod is ${phase}): no tunnel into it`);
      }
    }
    const { headers, tls } = await this.connection();
    const where = `port ${port} of pod ${id}`;
    return openPortForward({
      url: this.execUrl(ns, id, 'portforward'),
      port,
      headers,
      tls,
      timeoutMs: this.timings.requestMs,
      refused: (status, body) => {
        const message = statusMessage(body) ?? `HTTP ${status}`;
        if (status === 404) {
          this.where.delete(id);
          return new NotFoundError(`no such session: ${id} (${message})`);
        }
        if (status === 400) return new UnavailableError(`session ${id} cannot be reached now: ${message}`);
        return this.apiError(`the tunnel to ${where}`, Object.assign(new Error(message), { code: status, body }));
      },
      unreachable: (e) => this.apiError(`the tunnel to ${where}`, e),
      failed: (message) =>
        /connection refused/i.test(message)
          ? new UnavailableError(`nothing listens on ${where} (${message})`)
          : new UnavailableError(`the tunnel to ${where} failed: ${message}`),
    });
  }

  async exec(id: string, spec: ExecSpec): Promise<RemoteProcess> {
    let ns = this.where.get(id);
    if (!ns) ns = (await this.findPod(id)).ns;
    const pid = pidFile();
    const tty = !!spec.tty;
    const stdin = !!spec.stdin;
    const proc = await this.openPodExec(id, ns, wrappedArgv(spec, pid), { stdin, tty });
    if (tty && spec.cols && spec.rows) proc.resize(spec.cols, spec.rows);
    // Signals go through a second exec that signals the command's process tree (the exec API has no signals,
    // and a closed stream ends nothing). The exit waits for those in flight, so that onmemos does not exit
    // before its Ctrl-C has reached the pod.
    const pending = new Set<Promise<void>>();
    const signalTree = (signal: NodeJS.Signals) => {
      const done = (async () => {
        const p = await this.openPodExec(id, ns, signalArgv(pid, signal), { stdin: false, tty: false });
        p.stdout.resume();
        p.stderr.resume();
        await p.exit;
      })()
        .catch(() => {})
        .finally(() => pending.delete(done));
      pending.add(done);
      return done;
    };
    let killed = false;
    const exit: Promise<ExitStatus> = proc.exit.then(async (status) => {
      // A stream that broke leaves its command running in the pod (nothing there ends it): end it from here.
      if (status.lost && !killed) {
        killed = true;
        void signalTree('SIGKILL');
      }
      await Promise.race([Promise.all(pending), sleep(5_000)]);
      return status;
    });
    return {
      stdin: proc.stdin,
      stdout: proc.stdout,
      stderr: proc.stderr,
      resize: (cols, rows) => proc.resize(cols, rows),
      kill: (signal = 'SIGKILL') => {
        if (signal === 'SIGKILL') {
          if (killed) return;
          killed = true;
          // The stream closes by itself once the tree is gone; if it does not, it is closed.
          void signalTree('SIGKILL').finally(() => setTimeout(() => proc.kill('SIGKILL'), 2_000).unref());
          return;
        }
        void signalTree(signal);
      },
      exit,
    };
  }
}

/** The message of a metav1.Status body (a string or an object), if it has one. */
function statusMessage(body: unknown): string | undefined {
  let b = body;
  if (typeof body === 'string') {
    try {
      b = JSON.parse(body);
    } catch {
      return body.trim().slice(0, 300) || undefined;
    }
  }
  if (b && typeof b === 'object' && typeof (b as { message?: unknown }).message === 'string') {
    return (b as { message: string }).message;
  }
  return undefined;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new InterruptedError('interrupted'));
    const t = setTimeout(done, ms);
    function done() {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }
    function onAbort() {
      clearTimeout(t);
      reject(new InterruptedError('interrupted'));
    }
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
