/**
 * A service's revisions and instances: deploying a revision starts its container (runtime.ts) in a network of its
 * own, with PORT the container's port (8080 unless `ports` says otherwise), and waits, as Cloud Run's default
 * startup probe does, until something accepts connections on that port (or answers the container's
 * startupProbe.httpGet path), reached through the container's own loopback (`RunningContainer.connect`); a
 * container that exits first or stays silent past the startup timeout fails the revision with Cloud Run's own
 * message. The ready revision's instance serves the front end (frontend.ts), which reaches it the same way; when it
 * is gone (scaled to zero after an idle time, or crashed) the next request starts another: a cold start, in a new
 * sandbox (so, as on Cloud Run, nothing written to the instance's disk survives it).
 */
import { request } from 'node:http';
import type { Duplex } from 'node:stream';
import type { NetworkMode } from '../../../src/session/model.js';
import type { Buckets } from '../buckets.js';
import type { Faults } from './faults.js';
import { matches } from './faults.js';
import type { FrontendTarget, Lease } from './frontend.js';
import type { Json, Parent } from './resources.js';
import type { ContainerRuntime, RunningContainer } from './runtime.js';
import { gcsMounts, revisionMountFailed } from './volumes.js';

/** What an image brings: its ENTRYPOINT and CMD, ENV and WORKDIR. */
export interface ImageDefaults {
  entrypoint: string[];
  cmd?: string[];
  env?: Record<string, string>;
  workingDir?: string;
}
/**
 * The onmemos workspace images (images/*\/Dockerfile): ENTRYPOINT tini (here nothing: the sandbox reaps), CMD
 * `onmemos agent`, HOME and WORKDIR /workspace, the document's variables empty. The fake treats every image as one
 * of them unless told otherwise (`images`). So, as on Cloud Run, a container's `args` replace `onmemos agent` and its
 * `command` replaces both.
 */
export const ONMEMOS_IMAGE: ImageDefaults = {
  entrypoint: [],
  cmd: ['onmemos', 'agent'],
  env: { HOME: '/workspace', WORKSPACE_ID: '', NAMESPACE: '', USER: '', BUCKET_NAME: '' },
  workingDir: '/workspace',
};

export interface Container {
  name?: string;
  image?: string;
  command?: string[];
  args?: string[];
  env?: { name: string; value?: string; valueSource?: unknown }[];
  workingDir?: string;
  resources?: { limits?: Record<string, string>; cpuIdle?: boolean };
  ports?: { name?: string; containerPort?: number }[];
  startupProbe?: { httpGet?: { path?: string } };
  volumeMounts?: { name?: string; mountPath?: string }[];
}

/** command + args as a container runtime resolves them against the image (Docker's ENTRYPOINT/CMD rules). */
export function containerArgv(c: Container, image: ImageDefaults): string[] {
  if (c.command && c.command.length > 0) return [...c.command, ...(c.args ?? [])];
  return [...image.entrypoint, ...(c.args && c.args.length > 0 ? c.args : (image.cmd ?? []))];
}

/** The variables a container sets (`value` ones; secret references are not supported by the fake). */
export function containerEnv(c: Container): Record<string, string> {
  const env: Record<string, string> = {};
  for (const e of c.env ?? [])
    if (typeof e.value === 'string' || e.valueSource === undefined) env[e.name] = e.value ?? '';
  return env;
}

export interface Revision {
  id: string;
  name: string;
  generation: number;
  template: Json;
  createTime: string;
  state: 'deploying' | 'ready' | 'failed';
  message?: string;
}

export interface HostDeps {
  runtime: ContainerRuntime;
  faults: Faults;
  images: (image: string) => ImageDefaults;
  startupTimeoutMs: number;
  /** The instances' network (`outbound` or `isolated`: each instance has its own, as on Cloud Run). */
  network: NetworkMode;
  /** The fake's Cloud Storage: what `gcs` volumes mount (volumes.ts). */
  buckets: Buckets;
  /** Stop an instance of a service without minimum instances after this long without requests. */
  idleMs?: number;
  /**
   * Request-based CPU as Cloud Run gives it, to the letter: an instance of a revision with `cpuIdle` (the default)
   * is frozen (cgroup freezer) while it serves no request, and thawed when one comes (default off).
   */
  freezeIdle?: boolean;
  log(line: string): void;
}

interface Instance {
  revision: Revision;
  container: RunningContainer;
  /** The port the container listens on (its PORT), in its own network. */
  port: number;
  gone: boolean;
  frozen?: boolean;
}

/** Whether a revision's CPU is request-based: `cpuIdle` true, Cloud Run's default (services.ts fills it in). */
export function requestBasedCpu(rev: Revision): boolean {
  return (rev.template.containers as Container[] | undefined)?.[0]?.resources?.cpuIdle !== false;
}

/** The port a container listens on: its first `containerPort`, 8080 by default (Cloud Run's PORT). */
export function containerPort(c: Container | undefined): number {
  return c?.ports?.[0]?.containerPort ?? 8080;
}

/** A connection from `open` within `ms`, else a rejection (a connection that comes after is closed). */
export function openWithin(open: () => Promise<Duplex>, ms: number): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    let late = false;
    const timer = setTimeout(() => {
      late = true;
      reject(new Error(`no connection within ${ms} ms`));
    }, ms);
    open().then(
      (d) => {
        clearTimeout(timer);
        if (late) d.destroy();
        else resolve(d);
      },
      (e: Error) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}

/**
 * Whether the container's port accepts a connection (and, with `path`, answers a GET of it with a status below 400),
 * within a second; `open` connects to the port inside the container's network.
 */
function probe(open: () => Promise<Duplex>, path: string | undefined): Promise<boolean> {
  if (path === undefined) {
    return openWithin(open, 1_000).then(
      (d) => {
        d.destroy();
        return true;
      },
      () => false,
    );
  }
  return new Promise((resolve) => {
    const req = request(
      {
        host: '127.0.0.1',
        path,
        createConnection: (_o, done) => {
          openWithin(open, 1_000).then(
            (d) => done(null, d),
            (e: Error) => done(e, undefined as never),
          );
          return undefined;
        },
      },
      (res) => {
        clearTimeout(timer);
        res.resume();
        req.destroy();
        resolve((res.statusCode ?? 500) < 400);
      },
    );
    const timer = setTimeout(() => {
      req.destroy();
      resolve(false);
    }, 2_000);
    req.once('error', () => {
      clearTimeout(timer);
      resolve(false);
    });
    req.end();
  });
}

export class ServiceHost implements FrontendTarget {
  readonly revisions: Revision[] = [];
  private serving?: Instance;
  private starting?: Promise<Instance>;
  private readonly all = new Set<Instance>();
  private active = 0;
  private idleTimer?: NodeJS.Timeout;
  private readonly abort = new AbortController();
  private closed = false;

  constructor(
    readonly id: string,
    private readonly parent: Parent,
    private readonly deps: HostDeps,
    /** The invoker rule and the service's minimum instances, read at each request from the service as it is then. */
    private readonly settings: () => { invoker: { required: boolean; audiences: string[] }; minInstances: number },
  ) {}

  invoker() {
    return this.settings().invoker;
  }

  get readyRevision(): Revision | undefined {
    return this.revisions.findLast((r) => r.state === 'ready');
  }

  /** Deploys `rev`: resolves once it serves (its instance replaces the previous one) or has failed (`message`). */
  async deploy(rev: Revision): Promise<{ ok: true } | { ok: false; message: string }> {
    this.revisions.push(rev);
    try {
      const inst = await this.startInstance(rev);
      if (this.closed) throw new Error('the fake is closing');
      rev.state = 'ready';
      const old = this.serving;
      this.serving = inst;
      if (old && old !== inst) void this.stopInstance(old);
      this.scheduleIdle();
      this.freezeIfIdle();
      return { ok: true };
    } catch (e) {
      rev.state = 'failed';
      rev.message = e instanceof StartFailure ? this.failedToListen(rev) : (e as Error).message;
      return { ok: false, message: rev.message };
    }
  }

  /** Cloud Run's words for a container that did not listen in time (the port named is the container's, 8080 by default). */
  private failedToListen(rev: Revision): string {
    const port = containerPort((rev.template.containers as Container[] | undefined)?.[0]);
    const { project } = this.parent;
    const filter = encodeURIComponent(
      `resource.type="cloud_run_revision"\nresource.labels.service_name="${this.id}"\nresource.labels.revision_name="${rev.id}"`,
    );
    return [
      `Revision '${rev.id}' is not ready and cannot serve traffic. The user-provided container failed to start and listen on the port defined provided by the PORT=${port} environment variable within the allocated timeout. This can happen when the container port is misconfigured or if the timeout is too short. The health check timeout can be extended. Logs for this revision might contain more information.`,
      '',
      `Logs URL: https://console.cloud.google.com/logs/viewer?project=${project}&resource=cloud_run_revision/service_name/${this.id}/revision_name/${rev.id}&advancedFilter=${filter}`,
      'For more troubleshooting guidance, see https://cloud.google.com/run/docs/troubleshooting#container-failed-to-start',
    ].join('\n');
  }

  private async startInstance(rev: Revision): Promise<Instance> {
    const c = ((rev.template.containers as Container[] | undefined) ?? [])[0] ?? {};
    // The container's own port, in a network of its own (as on Cloud Run: every instance may listen on 8080).
    const port = containerPort(c);
    const image = this.deps.images(c.image ?? '');
    const volumes = gcsMounts(rev.template, c, this.deps.buckets);
    if ('problem' in volumes) throw new Error(revisionMountFailed(rev.id, volumes.problem));
    let argv = containerArgv(c, image);
    if (matches(this.deps.faults.current.neverListen, this.id)) argv = ['sleep', 'infinity'];
    const cold = this.deps.faults.current.coldStartMs ?? 0;
    if (cold > 0) await new Promise((r) => setTimeout(r, cold));
    const begun = performance.now();
    const env = {
      ...image.env,
      ...containerEnv(c),
      PORT: String(port),
      K_SERVICE: this.id,
      K_REVISION: rev.id,
      K_CONFIGURATION: this.id,
    };
    const log = (line: string) => this.deps.log(`${rev.id}: ${line}`);
    const container = await this.deps.runtime.start(
      {
        argv,
        env,
        workingDir: c.workingDir ?? image.workingDir,
        limits: c.resources?.limits,
        network: this.deps.network,
        label: this.id,
        onLine: log,
        mounts: volumes.mounts,
      },
      this.abort.signal,
    );
    const inst: Instance = { revision: rev, container, port, gone: false };
    this.all.add(inst);
    if (this.closed) {
      await this.stopInstance(inst);
      throw new Error('the fake is closing');
    }
    void container.exit.then((s) => {
      inst.gone = true;
      if (!this.closed) log(`container exited (${s.code ?? s.signal})`);
      if (this.serving === inst) this.serving = undefined;
      void this.stopInstance(inst);
    });
    const started = performance.now();
    const deadline = Date.now() + this.deps.startupTimeoutMs;
    const path = c.startupProbe?.httpGet ? (c.startupProbe.httpGet.path ?? '/') : undefined;
    // Every 10 ms for the first second (so that the time a container takes to answer is seen to within ~10 ms),
    // then every 100 ms. Cloud Run probes every periodSeconds (default 10 s) instead: see README, Known gaps.
    while (!inst.gone && !this.closed && Date.now() < deadline) {
      if (await probe(() => container.connect(port), path)) {
        // What the bench reads (bench/cloudrun.mjs): the sandbox's making, then the container's own start.
        const ms = (a: number, b: number) => (b - a).toFixed(1);
        const now = performance.now();
        log(
          `instance ready in ${ms(begun, now)} ms: sandbox ${ms(begun, started)} ms, then container start to startup probe answered ${ms(started, now)} ms`,
        );
        return inst;
      }
      await new Promise((r) => setTimeout(r, performance.now() - started < 1_000 ? 10 : 100));
    }
    await this.stopInstance(inst);
    throw new StartFailure();
  }

  private async stopInstance(inst: Instance): Promise<void> {
    this.thaw(inst); // a frozen container would not see its SIGTERM
    inst.gone = true;
    if (this.serving === inst) this.serving = undefined;
    await inst.container.stop();
    this.all.delete(inst);
  }

  async acquire(): Promise<Lease> {
    const rev = this.readyRevision;
    if (this.closed || !rev) throw new Error('no revision serves');
    let inst = this.serving;
    if (!inst || inst.gone) {
      this.starting ??= this.startInstance(rev).finally(() => {
        this.starting = undefined;
      });
      inst = await this.starting;
      if (this.closed) throw new Error('closing');
      this.serving = inst;
    }
    this.thaw(inst);
    this.active++;
    clearTimeout(this.idleTimer);
    let released = false;
    return {
      connect: () => inst.container.connect(inst.port),
      release: () => {
        if (released) return;
        released = true;
        this.active--;
        this.scheduleIdle();
        this.freezeIfIdle();
      },
    };
  }

  /** With freezeIdle: the serving instance of a request-based revision is frozen once no request is open. */
  private freezeIfIdle(): void {
    const inst = this.serving;
    if (!this.deps.freezeIdle || !inst || inst.gone || inst.frozen || this.active > 0 || this.closed) return;
    if (requestBasedCpu(inst.revision) && inst.container.freeze?.(true)) inst.frozen = true;
  }

  private thaw(inst: Instance): void {
    if (!inst.frozen) return;
    inst.frozen = false;
    inst.container.freeze?.(false);
  }

  /** Whether the serving instance is frozen now (freezeIdle, request-based CPU, no request open). */
  get instanceFrozen(): boolean {
    return !!this.serving && !this.serving.gone && !!this.serving.frozen;
  }

  /** Scale to zero: with an idle time set and no minimum instances, the instance stops once no request is open. */
  private scheduleIdle(): void {
    const idle = this.deps.idleMs;
    clearTimeout(this.idleTimer);
    if (idle === undefined || this.active > 0 || this.closed) return;
    this.idleTimer = setTimeout(() => {
      const inst = this.serving;
      if (!inst || this.active > 0 || this.settings().minInstances > 0) return;
      this.deps.log(`${inst.revision.id}: idle for ${idle} ms: instance stopped (scale to zero)`);
      void this.stopInstance(inst);
    }, idle);
    this.idleTimer.unref();
  }

  /** Whether an instance runs now (for tests of scale to zero). */
  get instanceRunning(): boolean {
    return !!this.serving && !this.serving.gone;
  }

  /** The local session the serving instance runs in. */
  get instanceSession(): string | undefined {
    return this.serving && !this.serving.gone ? this.serving.container.session : undefined;
  }

  /** Stops every instance (a deploy in progress ends failed). */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.idleTimer);
    this.abort.abort();
    await this.starting?.catch(() => {});
    await Promise.all([...this.all].map((i) => this.stopInstance(i)));
  }
}

class StartFailure extends Error {}
