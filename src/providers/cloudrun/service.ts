/**
 * A session as a Cloud Run service, and back: the Service (Admin API v2, proto3 JSON) a create request becomes, and
 * the session its labels and annotations describe, so that list and get rebuild it from the API alone. The
 * service runs the workspace image's `onmemos agent` (README: onmemos agent), private (an ID token is needed),
 * scaled to zero when idle and to at most one instance (a session is one container), with session affinity, and
 * request-based CPU unless the request asks for `cpu_always` (instance-based: `cpuIdle: false`).
 * Pure functions: no client, no I/O.
 */
import { createHash } from 'node:crypto';
import {
  bucketNameFor,
  type CreateSessionRequest,
  type Session,
  type SessionStatus,
  sessionEnvironment,
} from '../../session/model.js';
import { SESSION_ANNOTATION, SESSION_LABEL, sessionLabels } from '../google.js';
import { type CloudRunConfig, defaultImage } from './config.js';
import { serviceName } from './names.js';

export const LABEL = SESSION_LABEL;
export const ANNOTATION = {
  ...SESSION_ANNOTATION,
  nonce: 'onmemos.dev/secret-nonce',
  /** `true` when the session asked for instance-based CPU (`cpu_always`). */
  cpuAlways: 'onmemos.dev/cpu-always',
} as const;
/** Where a bucket is mounted (as `create --bucket` says for every provider that mounts one). */
export const BUCKET_PATH = '/workspace/bucket';
/** The agent's port (the images EXPOSE it; Cloud Run sets PORT to it). */
export const AGENT_PORT = 8080;
/** The longest request Cloud Run allows a service: it bounds an exec's or a shell's life. */
export const REQUEST_TIMEOUT_S = 3600;

export interface ServiceOptions {
  /** The hex SHA-256 of the session's secret (the agent compares against it; the secret itself is never stored). */
  secretSha256: string;
  nonce: string;
  now: number;
}

export function sha256Hex(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}

/** Cloud Run CPU is whole or fractional vCPU (at least 1 with concurrency > 1); memory in Mi. */
function limits(req: CreateSessionRequest): Record<string, string> {
  const cpu = Math.min(8, Math.max(1, Math.ceil(req.limits.cpus)));
  const memory = `${Math.max(512, Math.ceil(req.limits.memoryBytes / 2 ** 20))}Mi`;
  return { cpu: String(cpu), memory };
}

export function serviceObject(id: string, req: CreateSessionRequest, c: CloudRunConfig, o: ServiceOptions) {
  const env: Record<string, string> = {
    ...sessionEnvironment({ id, namespace: req.namespace, user: req.user }),
    ...req.env,
    ONMEMOS_AGENT_SECRET_SHA256: o.secretSha256,
  };
  const volumes: Record<string, unknown>[] = [];
  const volumeMounts: Record<string, unknown>[] = [];
  if (req.storage?.filestore) {
    const { ip, share } = req.storage.filestore;
    volumes.push({ name: 'workspace', nfs: { server: ip, path: `/${share}`, readOnly: false } });
    volumeMounts.push({ name: 'workspace', mountPath: '/workspace' });
  }
  if (req.storage?.bucket) {
    volumes.push({ name: 'bucket', gcs: { bucket: req.storage.bucket, readOnly: false } });
    volumeMounts.push({ name: 'bucket', mountPath: BUCKET_PATH });
  }
  const created = new Date(o.now);
  return {
    labels: {
      [LABEL.managedBy]: 'onmemos',
      [LABEL.namespace]: req.namespace,
      [LABEL.user]: req.user,
      [LABEL.template]: req.template,
    },
    annotations: {
      [ANNOTATION.session]: id,
      [ANNOTATION.created]: created.toISOString(),
      [ANNOTATION.ttl]: String(req.ttl_minutes),
      [ANNOTATION.expires]: new Date(o.now + req.ttl_minutes * 60_000).toISOString(),
      [ANNOTATION.nonce]: o.nonce,
      [ANNOTATION.cpuAlways]: String(req.cpu_always),
    },
    template: {
      containers: [
        {
          image: req.image ?? defaultImage(c, req.template),
          env: Object.entries(env).map(([name, value]) => ({ name, value })),
          // cpuIdle true: CPU only while a request is served (background processes are frozen in between);
          // false: instance-based CPU, for as long as the instance lives. Sent either way: with `limits` set,
          // leaving it out means false.
          resources: { limits: limits(req), cpuIdle: !req.cpu_always },
          ports: [{ containerPort: AGENT_PORT }],
          // Probed every second (Cloud Run's default is every 10 s: a cold start would wait up to 10 s for nothing),
          // for up to two minutes.
          startupProbe: {
            httpGet: { path: '/health', port: AGENT_PORT },
            periodSeconds: 1,
            timeoutSeconds: 1,
            failureThreshold: 120,
          },
          volumeMounts,
        },
      ],
      volumes,
      scaling: { minInstanceCount: 0, maxInstanceCount: 1 },
      sessionAffinity: true,
      maxInstanceRequestConcurrency: 80,
      timeout: { seconds: REQUEST_TIMEOUT_S },
      // Volumes (NFS, Cloud Storage) need the second generation execution environment.
      ...(volumes.length > 0 ? { executionEnvironment: 'EXECUTION_ENVIRONMENT_GEN2' } : {}),
    },
  };
}

/** The parts of a Service this file reads (the client's IService fits). */
export interface ServiceLike {
  name?: string | null;
  uri?: string | null;
  labels?: Record<string, string> | null;
  annotations?: Record<string, string> | null;
  createTime?: { seconds?: number | string | null } | string | null;
  reconciling?: boolean | null;
  deleteTime?: unknown;
  terminalCondition?: { state?: string | number | null; message?: string | null } | null;
  scaling?: { minInstanceCount?: number | null } | null;
  template?: {
    scaling?: { minInstanceCount?: number | null; maxInstanceCount?: number | null } | null;
    containers?:
      | {
          resources?: { limits?: Record<string, string> | null; cpuIdle?: boolean | null } | null;
          volumeMounts?: { name?: string | null; mountPath?: string | null }[] | null;
        }[]
      | null;
    volumes?: { name?: string | null; nfs?: { server?: string | null; path?: string | null } | null }[] | null;
  } | null;
}

/** CONDITION_SUCCEEDED and CONDITION_FAILED, as names or (enum-encoding=int) numbers. */
const SUCCEEDED = new Set<unknown>(['CONDITION_SUCCEEDED', 4]);
const FAILED = new Set<unknown>(['CONDITION_FAILED', 5]);

export function statusOf(s: ServiceLike, now = Date.now()): SessionStatus {
  const expires = s.annotations?.[ANNOTATION.expires];
  if (expires && Date.parse(expires) <= now) return 'expired';
  const state = s.terminalCondition?.state;
  if (FAILED.has(state)) return 'failed';
  if (SUCCEEDED.has(state) && !s.reconciling) return 'running';
  return 'creating';
}

/** The short name of a service's full resource name. */
export function shortName(name: string): string {
  return name.slice(name.lastIndexOf('/') + 1);
}

/**
 * Whether the service has instance-based CPU: asked for at create (the annotation) and not turned off since. A
 * template that says `cpuIdle: true` wins over the annotation; proto3 JSON leaves a false `cpuIdle` out, so its
 * absence proves nothing.
 */
export function cpuAlwaysOf(s: ServiceLike): boolean {
  return s.annotations?.[ANNOTATION.cpuAlways] === 'true' && s.template?.containers?.[0]?.resources?.cpuIdle !== true;
}

/**
 * The service's scaling as Cloud Run applies it: the larger of the service's and the revision template's
 * minInstanceCount (proto3 JSON leaves a 0 out: absent is 0), and the template's maxInstanceCount.
 */
export function scalingOf(s: ServiceLike): { min_instances: number; max_instances: number | null } {
  const min = Math.max(
    Number(s.scaling?.minInstanceCount ?? 0) || 0,
    Number(s.template?.scaling?.minInstanceCount ?? 0) || 0,
  );
  const max = s.template?.scaling?.maxInstanceCount;
  return { min_instances: min, max_instances: max === null || max === undefined ? null : Number(max) };
}

/** `server:/path` of the Filestore (NFS) volume mounted at /workspace, if there is one. */
export function workspaceShareOf(s: ServiceLike): string | undefined {
  const mount = s.template?.containers?.[0]?.volumeMounts?.find((m) => m?.mountPath === '/workspace');
  const nfs = mount && s.template?.volumes?.find((v) => v?.name === mount.name)?.nfs;
  return nfs ? `${nfs.server ?? ''}:${nfs.path ?? '/'}` : undefined;
}

/**
 * What Cloud Run does to a session that other providers do not, in `details`: `cpu_always` and
 * `workspace_persistent` for programs, and a `notes` line each for people.
 */
function semantics(s: ServiceLike) {
  const cpuAlways = cpuAlwaysOf(s);
  const share = workspaceShareOf(s);
  return {
    cpu_always: cpuAlways,
    workspace_persistent: share !== undefined,
    notes: [
      share
        ? `workspace: the Filestore share ${share}, kept when the service scales to zero`
        : 'workspace: in the instance, lost when the service scales to zero (no Filestore volume)',
      cpuAlways
        ? 'cpu: instance-based (--cpu-always): background processes run between requests, while the instance lives'
        : 'cpu: request-based: background processes are frozen between requests (--cpu-always keeps them running)',
    ],
  };
}

/** The session a service describes, or undefined for a service that is not an onmemos session. */
export function sessionOf(s: ServiceLike, now = Date.now()): Session | undefined {
  const base = sessionLabels(s, serviceName, now);
  if (!base) return undefined;
  const id = base.id;
  return {
    ...base,
    provider: 'cloud_run',
    status: statusOf(s, now),
    url: s.uri ?? null,
    websocket: null,
    ssh: false,
    details: {
      service_name: s.name,
      bucket_name: bucketNameFor(id),
      scaling: scalingOf(s),
      ...semantics(s),
      ...(s.terminalCondition?.message && statusOf(s, now) !== 'running'
        ? { reason: s.terminalCondition.message }
        : {}),
    },
  };
}
