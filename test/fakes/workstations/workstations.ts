/**
 * The fake's one cluster, one config and their workstations, and each workstation's state machine:
 * created STATE_STOPPED (as on Cloud Workstations); start → STATE_STARTING (reconciling) → STATE_RUNNING once its
 * sandbox runs sshd and `startTimeMs` has passed; stop → STATE_STOPPING (reconciling) → STATE_STOPPED, the home
 * saved; delete → gone, with its home. Every change is a long-running operation; the changes of one workstation run
 * one after another, except that a stop or delete cancels a start in progress (its operation then fails ABORTED).
 */
import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  alreadyExists,
  failedPrecondition,
  fieldViolation,
  GoogleApiError,
  invalidArgument,
  notFound,
  type RpcStatus,
} from './errors.js';
import { type Faults, type LroMethod, matches } from './faults.js';
import type { ApiVersion, Json, Operations } from './operations.js';
import type { RunningMachine, WorkstationRuntime } from './runtime.js';
import type { FakeTls } from './tls.js';
import { type AccessTokens, type TunnelRequest, WorkstationHost } from './tunnel.js';

export type State = 'STATE_STARTING' | 'STATE_RUNNING' | 'STATE_STOPPING' | 'STATE_STOPPED';

export const STATE_NUMBERS: Record<string, number> = {
  STATE_UNSPECIFIED: 0,
  STATE_STARTING: 1,
  STATE_RUNNING: 2,
  STATE_STOPPING: 3,
  STATE_STOPPED: 4,
};

/** The most generateAccessToken grants (24 h), and its default (1 h). */
export const MAX_TOKEN_TTL_S = 24 * 3600;
export const DEFAULT_TOKEN_TTL_S = 3600;

interface Ws {
  id: string;
  name: string;
  uid: string;
  displayName?: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  env: Record<string, string>;
  createTime: string;
  updateTime: string;
  startTime?: string;
  etag: string;
  state: State;
  reconciling: boolean;
  deleting: boolean;
  endpoint: WorkstationHost;
  machine?: RunningMachine;
  /** The authorized_keys text its sshd has now. */
  keys?: string;
  /** Key updates run one after another (connections come at once; each would rewrite the file). */
  keySync?: Promise<void>;
  /** Transitions run one after another. */
  queue: Promise<void>;
  /** Aborts the start in progress (a stop or delete came). */
  startAbort?: AbortController;
}

/** What a test sees of a workstation (`fake.workstations.get(id)`), live. */
export interface WorkstationView {
  readonly id: string;
  readonly name: string;
  readonly state: State;
  readonly reconciling: boolean;
  /** `127.0.0.1:PORT`: the TLS tunnel endpoint. */
  readonly host: string;
  /** The local session (sandbox) it runs in, while running. */
  readonly session: string | undefined;
  /** The port its sshd listens on inside the workstation (127.0.0.1 there; the tunnel's 22), while running. */
  readonly sshPort: number | undefined;
  /** Stops it as the API's stop does (STATE_STOPPING, then STATE_STOPPED), behind any client's back. */
  stop(): Promise<void>;
}

export interface WorkstationsDeps {
  project: string;
  region: string;
  cluster: string;
  config: string;
  ops: Operations;
  faults: Faults;
  runtime: WorkstationRuntime;
  tokens: AccessTokens;
  tls: FakeTls;
  /** Where stopped workstations' homes are kept. */
  homesDir: string;
  hostname: string;
  startTimeMs: number;
  disableTcpConnections: boolean;
  /** The authorized_keys text every workstation's sshd should have now. */
  authorizedKeys: () => string;
  onTunnelRequest: (r: TunnelRequest) => void;
  log: (line: string) => void;
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (ms <= 0) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });

const ts = () => new Date().toISOString();
const etag = () => `"${randomUUID().replaceAll('-', '').slice(0, 20)}"`;

/** Workstation ids: RFC 1035 labels of at most 63 characters (the resource-name rule every Workstations id follows). */
export function checkWorkstationId(id: string | null): string {
  if (!id) throw invalidArgument('workstation_id is required');
  if (!/^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/.test(id)) {
    throw fieldViolation(
      'workstation_id',
      `"${id}" must be 1 to 63 characters long, made of lowercase letters, digits and hyphens, start with a letter and not end with a hyphen`,
    );
  }
  return id;
}

/** `3600s`, `1.5s` → seconds. */
export function parseDuration(v: unknown, field: string): number {
  const m = typeof v === 'string' ? /^(\d+(?:\.\d{1,9})?)s$/.exec(v) : null;
  if (!m) throw fieldViolation(field, `"${String(v)}" is not a duration (like "3600s")`);
  return Number(m[1]);
}

function stringMap(v: unknown, field: string): Record<string, string> {
  if (v === undefined || v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v)) throw fieldViolation(field, 'must be a map of strings');
  for (const [k, x] of Object.entries(v)) {
    if (typeof x !== 'string') throw fieldViolation(`${field}[${k}]`, 'must be a string');
  }
  return { ...(v as Record<string, string>) };
}

export class Workstations {
  private readonly all = new Map<string, Ws>();
  readonly clusterCreateTime = ts();
  readonly clusterUid = randomUUID();
  readonly configUid = randomUUID();
  /** The config's `disableTcpConnections` (the tunnel refuses every connection while true). */
  disableTcpConnections: boolean;

  constructor(private readonly d: WorkstationsDeps) {
    this.disableTcpConnections = d.disableTcpConnections;
  }

  get location() {
    return `projects/${this.d.project}/locations/${this.d.region}`;
  }
  get clusterName() {
    return `${this.location}/workstationClusters/${this.d.cluster}`;
  }
  get configName() {
    return `${this.clusterName}/workstationConfigs/${this.d.config}`;
  }

  cluster(): Json {
    return {
      name: this.clusterName,
      uid: this.clusterUid,
      createTime: this.clusterCreateTime,
      updateTime: this.clusterCreateTime,
      etag: '"cluster"',
      network: `projects/${this.d.project}/global/networks/default`,
      subnetwork: `projects/${this.d.project}/regions/${this.d.region}/subnetworks/default`,
      controlPlaneIp: '10.128.0.2',
      privateClusterConfig: {},
    };
  }

  config(): Json {
    return {
      name: this.configName,
      uid: this.configUid,
      createTime: this.clusterCreateTime,
      updateTime: this.clusterCreateTime,
      etag: '"config"',
      idleTimeout: '1200s',
      runningTimeout: '43200s',
      host: {
        gceInstance: {
          machineType: 'e2-standard-4',
          poolSize: 0,
          bootDiskSizeGb: 50,
          shieldedInstanceConfig: {},
          confidentialInstanceConfig: {},
        },
      },
      persistentDirectories: [
        {
          mountPath: '/home',
          gcePd: { sizeGb: 200, fsType: 'ext4', diskType: 'pd-standard', reclaimPolicy: 'DELETE' },
        },
      ],
      container: { image: 'us-central1-docker.pkg.dev/cloud-workstations-images/predefined/base:latest' },
      ...(this.disableTcpConnections ? { disableTcpConnections: true } : {}),
    };
  }

  /** The config of `parent` (`…/workstationConfigs/{cfg}`), or NOT_FOUND naming what is missing. */
  checkConfig(name: string): void {
    if (name === this.configName) return;
    const cluster = name.replace(/\/workstationConfigs\/[^/]+$/, '');
    throw notFound(cluster === this.clusterName ? name : cluster);
  }

  /** The workstations under `parent`, where `-` stands for any cluster or config. */
  list(parent: string): Json[] {
    const re = new RegExp(
      `^${parent
        .split('/')
        .map((p) => (p === '-' ? '[^/]+' : p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
        .join('/')}/workstations/[^/]+$`,
    );
    if (!parent.includes('/-')) this.checkConfig(parent);
    return [...this.all.values()].filter((w) => re.test(w.name)).map((w) => this.json(w));
  }

  get(name: string): Json {
    return this.json(this.find(name));
  }

  private find(name: string): Ws {
    const w = this.all.get(name);
    if (!w) {
      this.checkConfig(name.replace(/\/workstations\/[^/]+$/, ''));
      throw notFound(name);
    }
    return w;
  }

  json(w: Ws): Json {
    return {
      name: w.name,
      ...(w.displayName ? { displayName: w.displayName } : {}),
      uid: w.uid,
      ...(w.reconciling ? { reconciling: true } : {}),
      ...(Object.keys(w.annotations).length ? { annotations: { ...w.annotations } } : {}),
      ...(Object.keys(w.labels).length ? { labels: { ...w.labels } } : {}),
      createTime: w.createTime,
      updateTime: w.updateTime,
      ...(w.startTime ? { startTime: w.startTime } : {}),
      etag: w.etag,
      state: w.state,
      host: w.endpoint.host,
      ...(Object.keys(w.env).length ? { env: { ...w.env } } : {}),
    };
  }

  /** A test's view of a workstation, by id or full name. */
  view(idOrName: string): WorkstationView | undefined {
    const w =
      this.all.get(idOrName) ??
      [...this.all.values()].find((x) => x.id === idOrName && x.name.startsWith(this.configName));
    if (!w) return undefined;
    // biome-ignore lint/complexity/noUselessThisAlias: the view's getters read the fake's live record
    const self = this;
    return {
      id: w.id,
      name: w.name,
      get state() {
        return w.state;
      },
      get reconciling() {
        return w.reconciling;
      },
      host: w.endpoint.host,
      get session() {
        return w.machine?.session;
      },
      get sshPort() {
        return w.machine?.sshPort;
      },
      stop: () => self.transition(w, 'stop').settled,
    };
  }

  views(): WorkstationView[] {
    return [...this.all.keys()].map((n) => this.view(n)!);
  }

  private homeTar(w: Ws) {
    return join(this.d.homesDir, `${w.uid}.tar`);
  }

  private touch(w: Ws, patch: Partial<Ws> = {}) {
    Object.assign(w, patch, { updateTime: ts(), etag: etag() });
  }

  private failure(method: LroMethod, id: string): RpcStatus | undefined {
    const f = this.d.faults.takeOperationFailure(method, id);
    return f ? new GoogleApiError(f.code, f.message).rpcStatus() : undefined;
  }

  // --- the API's methods: each answers the operation as first returned ---

  async create(
    parent: string,
    id: string | null,
    body: Json,
    version: ApiVersion,
    validateOnly: boolean,
  ): Promise<Json> {
    this.checkConfig(parent);
    checkWorkstationId(id);
    const name = `${parent}/workstations/${id}`;
    if (this.all.has(name)) throw alreadyExists(name);
    const fields = {
      labels: stringMap(body.labels, 'workstation.labels'),
      annotations: stringMap(body.annotations, 'workstation.annotations'),
      env: stringMap(body.env, 'workstation.env'),
      ...(typeof body.displayName === 'string' && body.displayName ? { displayName: body.displayName } : {}),
    };
    const op = this.d.ops.start({ location: this.location, target: name, verb: 'create', version });
    if (validateOnly) {
      op.done({});
      return op.get();
    }
    const endpoint = new WorkstationHost(
      this.d.tls,
      this.d.tokens,
      {
        name,
        state: () => w.state,
        tcpDisabled: () => this.disableTcpConnections,
        connect: async (port) => (w.machine ? w.machine.connect(port) : undefined),
        beforeConnect: (port) => (port === 22 ? this.syncKeys(w) : Promise.resolve()),
      },
      { hostname: this.d.hostname, onRequest: this.d.onTunnelRequest, log: this.d.log },
    );
    const now = ts();
    const w: Ws = {
      id: id!,
      name,
      uid: randomUUID(),
      ...fields,
      createTime: now,
      updateTime: now,
      etag: etag(),
      state: 'STATE_STOPPED',
      reconciling: true,
      deleting: false,
      endpoint,
      queue: Promise.resolve(),
    };
    await endpoint.listen();
    this.all.set(name, w);
    w.queue = (async () => {
      await sleep(50);
      const failed = this.failure('createWorkstation', w.id);
      if (failed) {
        this.all.delete(name);
        await endpoint.close();
        return op.fail(failed);
      }
      this.touch(w, { reconciling: false });
      op.done(this.json(w));
    })();
    return op.get();
  }

  async update(name: string, body: Json, mask: string | null, version: ApiVersion): Promise<Json> {
    const w = this.find(name);
    const paths = (mask ?? '')
      .split(',')
      .map((p) => p.trim())
      .filter(Boolean);
    if (paths.length === 0) throw invalidArgument('update_mask is required');
    const allowed = ['display_name', 'displayName', 'labels', 'annotations', 'env'];
    const bad = paths.find((p) => !allowed.includes(p));
    if (bad) throw fieldViolation('update_mask', `"${bad}" cannot be updated`);
    const op = this.d.ops.start({ location: this.location, target: name, verb: 'update', version });
    this.enqueue(w, async () => {
      const failed = this.failure('updateWorkstation', w.id);
      if (failed) return op.fail(failed);
      const patch: Partial<Ws> = {};
      for (const p of paths) {
        if (p === 'labels') patch.labels = stringMap(body.labels, 'workstation.labels');
        if (p === 'annotations') patch.annotations = stringMap(body.annotations, 'workstation.annotations');
        if (p === 'env') patch.env = stringMap(body.env, 'workstation.env');
        if (p === 'display_name' || p === 'displayName') {
          patch.displayName = typeof body.displayName === 'string' ? body.displayName : undefined;
        }
      }
      this.touch(w, patch);
      op.done(this.json(w));
    });
    return op.get();
  }

  start(name: string, version: ApiVersion, validateOnly: boolean): Json {
    const w = this.find(name);
    if (w.deleting) throw failedPrecondition(`Workstation ${name} is being deleted`);
    return this.transition(w, 'start', version, validateOnly).json;
  }

  stop(name: string, version: ApiVersion, validateOnly: boolean): Json {
    const w = this.find(name);
    if (w.deleting) throw failedPrecondition(`Workstation ${name} is being deleted`);
    return this.transition(w, 'stop', version, validateOnly).json;
  }

  delete(name: string, version: ApiVersion, validateOnly: boolean): Json {
    const w = this.find(name);
    const op = this.d.ops.start({ location: this.location, target: name, verb: 'delete', version });
    if (validateOnly) {
      op.done(this.json(w));
      return op.get();
    }
    w.startAbort?.abort();
    this.enqueue(w, async () => {
      const failed = this.failure('deleteWorkstation', w.id);
      if (failed) return op.fail(failed);
      w.deleting = true;
      this.touch(w, { reconciling: true });
      w.endpoint.closeConnections();
      const m = w.machine;
      w.machine = undefined;
      await m?.stop();
      rmSync(this.homeTar(w), { force: true });
      await w.endpoint.close();
      this.d.tokens.revoke(name);
      this.all.delete(name);
      op.done({ ...this.json(w), reconciling: undefined });
    });
    return op.get();
  }

  generateAccessToken(name: string, body: Json, capSeconds: number | undefined): Json {
    const w = this.find(name);
    let seconds = DEFAULT_TOKEN_TTL_S;
    if (body.ttl !== undefined && body.expireTime !== undefined) {
      throw invalidArgument('Only one of ttl and expire_time may be set');
    }
    if (body.ttl !== undefined) seconds = parseDuration(body.ttl, 'ttl');
    if (body.expireTime !== undefined) {
      const at = typeof body.expireTime === 'string' ? Date.parse(body.expireTime) : Number.NaN;
      if (Number.isNaN(at)) throw fieldViolation('expire_time', `"${String(body.expireTime)}" is not a timestamp`);
      seconds = (at - Date.now()) / 1000;
    }
    if (seconds <= 0 || seconds > MAX_TOKEN_TTL_S) {
      throw invalidArgument('The access token lifetime must be positive and at most 24 hours');
    }
    let port: number | undefined;
    if (body.port !== undefined) {
      port = Number(body.port);
      if (!Number.isInteger(port) || port < 1 || port > 65535)
        throw fieldViolation('port', 'must be within [1, 65535]');
    }
    if (capSeconds !== undefined) seconds = Math.min(seconds, capSeconds);
    return this.d.tokens.issue(w.name, Math.round(seconds * 1000), port);
  }

  // --- transitions ---

  private enqueue(w: Ws, task: () => Promise<void>): void {
    w.queue = w.queue.then(task).catch((e) => this.d.log(`${w.id}: ${(e as Error).message}`));
  }

  /** start or stop through an operation: the operation as first answered, and when the change is done. */
  private transition(w: Ws, kind: 'start' | 'stop', version: ApiVersion = 'v1', validateOnly = false) {
    const op = this.d.ops.start({ location: this.location, target: w.name, verb: kind, version });
    if (validateOnly) {
      op.done(this.json(w));
      return { json: op.get(), settled: Promise.resolve() };
    }
    if (kind === 'stop') w.startAbort?.abort();
    let finished!: () => void;
    const settled = new Promise<void>((r) => (finished = r));
    this.enqueue(w, async () => {
      try {
        if (kind === 'start') await this.doStart(w, op);
        else await this.doStop(w, op);
      } finally {
        finished();
      }
    });
    return { json: op.get(), settled };
  }

  private async doStart(w: Ws, op: ReturnType<Operations['start']>): Promise<void> {
    if (w.deleting) return op.fail(failedPrecondition(`Workstation ${w.name} is being deleted`).rpcStatus());
    if (w.state === 'STATE_RUNNING') return op.done(this.json(w));
    const abort = new AbortController();
    w.startAbort = abort;
    const began = Date.now();
    this.touch(w, { state: 'STATE_STARTING', reconciling: true });
    const aborted = () =>
      op.fail(
        new GoogleApiError(
          'ABORTED',
          `The start of workstation ${w.name} was cancelled by a stop or delete.`,
        ).rpcStatus(),
      );
    try {
      const failed = this.failure('startWorkstation', w.id);
      if (failed) {
        await sleep(this.d.startTimeMs, abort.signal);
        this.touch(w, { state: 'STATE_STOPPED', reconciling: false });
        return op.fail(failed);
      }
      if (matches(this.d.faults.current.neverRunning, w.id)) {
        await new Promise<void>((r) => abort.signal.addEventListener('abort', () => r(), { once: true }));
        this.touch(w, { state: 'STATE_STOPPED', reconciling: false });
        return aborted();
      }
      const keys = this.d.authorizedKeys();
      let machine: RunningMachine;
      try {
        machine = await this.d.runtime.start(
          {
            id: w.id,
            homeTar: this.homeTar(w),
            authorizedKeys: keys,
            sshd: !matches(this.d.faults.current.noSshd, w.id),
            onLine: (l) => this.d.log(`${w.id}: sshd: ${l}`),
          },
          abort.signal,
        );
      } catch (e) {
        this.touch(w, { state: 'STATE_STOPPED', reconciling: false });
        if (abort.signal.aborted) return aborted();
        this.d.log(`${w.id}: start failed: ${(e as Error).message}`);
        return op.fail(
          new GoogleApiError('INTERNAL', `Workstation failed to start: ${(e as Error).message}`).rpcStatus(),
        );
      }
      w.keys = keys;
      await sleep(this.d.startTimeMs - (Date.now() - began), abort.signal);
      if (abort.signal.aborted) {
        await machine.stop(this.homeTar(w));
        this.touch(w, { state: 'STATE_STOPPED', reconciling: false });
        return aborted();
      }
      w.machine = machine;
      void machine.exit.then((s) => {
        if (w.machine === machine) this.d.log(`${w.id}: sshd ended (${s.code ?? s.signal}); port 22 answers 503`);
      });
      this.touch(w, { state: 'STATE_RUNNING', reconciling: false, startTime: ts() });
      this.d.log(
        `${w.id}: running in ${machine.session}, sshd on 127.0.0.1:${machine.sshPort ?? '-'} inside (network ${machine.netns ?? 'of its own'}) (${Date.now() - began} ms)`,
      );
      op.done(this.json(w));
    } finally {
      if (w.startAbort === abort) w.startAbort = undefined;
    }
  }

  private async doStop(w: Ws, op: ReturnType<Operations['start']>): Promise<void> {
    if (w.state === 'STATE_STOPPED') return op.done(this.json(w));
    const failed = this.failure('stopWorkstation', w.id);
    if (failed) return op.fail(failed);
    this.touch(w, { state: 'STATE_STOPPING', reconciling: true });
    w.endpoint.closeConnections();
    const m = w.machine;
    w.machine = undefined;
    w.keys = undefined;
    try {
      await m?.stop(this.homeTar(w));
    } catch (e) {
      this.d.log(`${w.id}: stop: ${(e as Error).message}`);
    }
    this.touch(w, { state: 'STATE_STOPPED', reconciling: false });
    op.done(this.json(w));
  }

  /** Brings a running workstation's authorized keys up to date (before a connection to its sshd). */
  private syncKeys(w: Ws): Promise<void> {
    const sync = async () => {
      const m = w.machine;
      if (!m?.sshPort) return;
      const keys = this.d.authorizedKeys();
      if (keys === w.keys) return;
      await m.writeKeys(keys);
      if (w.machine === m) w.keys = keys;
    };
    const next = (w.keySync ?? Promise.resolve()).then(sync, sync);
    w.keySync = next.catch(() => {});
    return next;
  }

  /** Stops every workstation (no home saved) and closes every endpoint. */
  async close(): Promise<void> {
    await Promise.all(
      [...this.all.values()].map(async (w) => {
        w.startAbort?.abort();
        w.endpoint.closeConnections();
        await w.machine?.stop().catch(() => {});
        w.machine = undefined;
        await w.endpoint.close();
      }),
    );
    this.all.clear();
  }
}
