/**
 * A session as Kubernetes objects, and back: the namespace, the pod (and its PVC) that a create request becomes,
 * and the session that a pod's labels and annotations describe, so that any onmemos process (a stateless server,
 * another machine's CLI) rebuilds the session from the cluster alone. Pure functions: no client, no I/O.
 */
import { UserError } from '../../errors.js';
import {
  type CreateSessionRequest,
  type Session,
  type SessionStatus,
  sessionEnvironment,
  TEMPLATES,
  type Template,
} from '../../session/model.js';

export const MANAGED_BY = 'app.kubernetes.io/managed-by';
export const LABEL = {
  session: 'onmemos.dev/session',
  namespace: 'onmemos.dev/namespace',
  user: 'onmemos.dev/user',
  template: 'onmemos.dev/template',
} as const;
export const ANNOTATION = {
  created: 'onmemos.dev/created',
  ttl: 'onmemos.dev/ttl-minutes',
  expires: 'onmemos.dev/expires-at',
  keepStorage: 'onmemos.dev/keep-storage',
} as const;
/** The container every command runs in. */
export const CONTAINER = 'workspace';
/** Where a bucket is mounted (as `create --bucket` says for every provider that mounts one). */
export const BUCKET_PATH = '/workspace/bucket';
/** The uid and gid the workspace runs as: not root, and the owner of /workspace (fsGroup). */
export const WORKSPACE_UID = 1000;

/** Images with python, node or go on PATH; GKE_DEFAULT_IMAGE and `--image` override. */
export const DEFAULT_IMAGES: Record<Template, string> = {
  python: 'python:3.12-slim',
  nodejs: 'node:20-slim',
  go: 'golang:1.23',
};

export interface GkeSettings {
  prefix: string;
  defaultImage?: string;
  shell: string;
  serviceAccount?: string;
}

export function gkeSettings(env: NodeJS.ProcessEnv): GkeSettings {
  const prefix = env.GKE_NAMESPACE_PREFIX || 'onmemos';
  if (!/^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/.test(prefix)) {
    throw new UserError(`GKE_NAMESPACE_PREFIX ${JSON.stringify(prefix)} must be a DNS label of at most 32 characters`);
  }
  const shell = env.GKE_SHELL || '/bin/sh';
  if (!shell.startsWith('/') || /\s/.test(shell))
    throw new UserError('GKE_SHELL must be an absolute path, e.g. /bin/bash');
  return {
    prefix,
    defaultImage: env.GKE_DEFAULT_IMAGE || undefined,
    shell,
    serviceAccount: env.GKE_SERVICE_ACCOUNT || undefined,
  };
}

/** The Kubernetes namespace of an onmemos namespace. */
export function kubeNamespace(prefix: string, namespace: string): string {
  return `${prefix}-${namespace}`;
}

/**
 * The Kubernetes namespaces an id may live in: its namespace and user may both contain '-', so every split of
 * `ws-{namespace}-{user}-{time}-{suffix}` that leaves both non-empty is a candidate (usually one or two).
 */
export function candidateNamespaces(prefix: string, id: string): string[] {
  const m = /^ws-(.+)-\d+-[a-z0-9]+$/.exec(id);
  if (!m) return [];
  const parts = m[1]!.split('-');
  const out: string[] = [];
  for (let i = 1; i < parts.length; i++) {
    const ns = parts.slice(0, i).join('-');
    if (ns !== '' && !ns.endsWith('-') && parts.slice(i).join('-') !== '') out.push(kubeNamespace(prefix, ns));
  }
  return out.filter((n) => n.length <= 63);
}

/** Checks, before anything is made, that the names this session needs are valid Kubernetes names. */
export function checkNames(prefix: string, id: string, namespace: string): void {
  if (id.length > 63) {
    throw new UserError(
      `namespace and user are too long for a gke session: its id ${id} must fit a 63-character pod name and label`,
      { hint: 'use a shorter namespace or user (together at most 43 characters)' },
    );
  }
  const ns = kubeNamespace(prefix, namespace);
  if (ns.length > 63) throw new UserError(`the Kubernetes namespace ${ns} is longer than 63 characters`);
}

export function pvcName(id: string): string {
  return `${id}-workspace`;
}

export function imageFor(req: Pick<CreateSessionRequest, 'image' | 'template'>, s: GkeSettings): string {
  return req.image ?? s.defaultImage ?? DEFAULT_IMAGES[req.template];
}

/** Kubernetes quantities of the request's limits: cores as millicores, bytes as Mi. */
function quantities(req: CreateSessionRequest) {
  const mi = (b: number) => `${Math.max(1, Math.ceil(b / 2 ** 20))}Mi`;
  return {
    cpu: `${Math.max(1, Math.round(req.limits.cpus * 1000))}m`,
    memory: mi(req.limits.memoryBytes),
    'ephemeral-storage': mi(req.limits.diskBytes),
  };
}

export function namespaceObject(name: string) {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels: { [MANAGED_BY]: 'onmemos' } } };
}

function labelsOf(id: string, req: CreateSessionRequest): Record<string, string> {
  return {
    [MANAGED_BY]: 'onmemos',
    [LABEL.session]: id,
    [LABEL.namespace]: req.namespace,
    [LABEL.user]: req.user,
    [LABEL.template]: req.template,
  };
}

export function pvcObject(id: string, req: CreateSessionRequest) {
  const v = req.storage?.volume ?? {};
  return {
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata: { name: pvcName(id), labels: labelsOf(id, req) },
    spec: {
      accessModes: ['ReadWriteOnce'],
      ...(v.storage_class ? { storageClassName: v.storage_class } : {}),
      resources: { requests: { storage: v.size ?? '10Gi' } },
    },
  };
}

/**
 * The pod of a session: one container that sleeps until removed, commands run in it by exec. Hardened as GKE
 * Autopilot accepts it: not root, no privilege escalation, every capability dropped, RuntimeDefault seccomp, no
 * service-account token (unless GKE_SERVICE_ACCOUNT names one), requests equal to limits.
 */
export function podObject(id: string, req: CreateSessionRequest, s: GkeSettings, now: number) {
  const created = new Date(now);
  const expires = new Date(now + req.ttl_minutes * 60_000);
  const env = { ...sessionEnvironment({ id, namespace: req.namespace, user: req.user }), HOME: '/workspace' };
  for (const [k, v] of Object.entries(req.env)) env[k as keyof typeof env] = v;
  const resources = quantities(req);
  const volumes: Record<string, unknown>[] = [
    req.storage?.volume
      ? { name: 'workspace', persistentVolumeClaim: { claimName: pvcName(id) } }
      : { name: 'workspace', emptyDir: { sizeLimit: resources['ephemeral-storage'] } },
    { name: 'tmp', emptyDir: {} },
  ];
  const mounts: Record<string, unknown>[] = [
    { name: 'workspace', mountPath: '/workspace' },
    { name: 'tmp', mountPath: '/tmp' },
  ];
  const annotations: Record<string, string> = {
    [ANNOTATION.created]: created.toISOString(),
    [ANNOTATION.ttl]: String(req.ttl_minutes),
    [ANNOTATION.expires]: expires.toISOString(),
  };
  if (req.storage?.volume?.keep) annotations[ANNOTATION.keepStorage] = 'true';
  if (req.storage?.bucket) {
    // Cloud Storage FUSE CSI: an ephemeral volume; the annotation asks GKE to inject its sidecar.
    annotations['gke-gcsfuse/volumes'] = 'true';
    volumes.push({
      name: 'bucket',
      csi: {
        driver: 'gcsfuse.csi.storage.gke.io',
        volumeAttributes: { bucketName: req.storage.bucket, mountOptions: 'implicit-dirs' },
      },
    });
    mounts.push({ name: 'bucket', mountPath: BUCKET_PATH });
  }
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: id, labels: labelsOf(id, req), annotations },
    spec: {
      restartPolicy: 'Never',
      terminationGracePeriodSeconds: 5,
      enableServiceLinks: false,
      automountServiceAccountToken: !!s.serviceAccount,
      ...(s.serviceAccount ? { serviceAccountName: s.serviceAccount } : {}),
      securityContext: {
        runAsNonRoot: true,
        runAsUser: WORKSPACE_UID,
        runAsGroup: WORKSPACE_UID,
        fsGroup: WORKSPACE_UID,
        seccompProfile: { type: 'RuntimeDefault' },
      },
      containers: [
        {
          name: CONTAINER,
          image: imageFor(req, s),
          // Sleeps until the pod is removed; TERM ends it at once (no 5 s grace wait).
          command: ['/bin/sh', '-c', 'trap "exit 0" TERM; while :; do sleep 3600 & wait $!; done'],
          workingDir: '/workspace',
          env: Object.entries(env).map(([name, value]) => ({ name, value })),
          resources: { requests: resources, limits: resources },
          securityContext: {
            allowPrivilegeEscalation: false,
            privileged: false,
            capabilities: { drop: ['ALL'] },
          },
          volumeMounts: mounts,
        },
      ],
      volumes,
    },
  };
}

/** The parts of a pod this file reads (client-node's V1Pod fits). */
export interface PodLike {
  metadata?: {
    name?: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    deletionTimestamp?: Date | string;
    creationTimestamp?: Date | string;
  };
  spec?: { containers?: { image?: string }[]; nodeName?: string; volumes?: { persistentVolumeClaim?: unknown }[] };
  status?: {
    phase?: string;
    reason?: string;
    message?: string;
    conditions?: { type?: string; status?: string; reason?: string; message?: string }[];
    containerStatuses?: {
      ready?: boolean;
      state?: {
        waiting?: { reason?: string; message?: string };
        terminated?: { reason?: string; message?: string; exitCode?: number };
      };
    }[];
  };
}

/** A session's status from its pod's phase, readiness and expiry. */
export function statusOf(pod: PodLike, now = Date.now()): SessionStatus {
  const expires = pod.metadata?.annotations?.[ANNOTATION.expires];
  if (expires && Date.parse(expires) <= now) return 'expired';
  if (pod.metadata?.deletionTimestamp) return 'stopping';
  switch (pod.status?.phase) {
    case 'Running':
      return isReady(pod) ? 'running' : 'starting';
    case 'Succeeded':
      return 'exited';
    case 'Failed':
    case 'Unknown':
      return 'failed';
    default:
      return 'creating';
  }
}

export function isReady(pod: PodLike): boolean {
  return !!pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');
}

/** Reasons a pod will not become ready by waiting: fail the create at once with it. */
const FATAL_WAITING = new Set([
  'ErrImagePull',
  'ImagePullBackOff',
  'InvalidImageName',
  'ErrImageNeverPull',
  'CreateContainerConfigError',
  'CreateContainerError',
  'CrashLoopBackOff',
  'RunContainerError',
]);

/**
 * Why a pod is not (yet) ready, in one line: `fatal` when waiting longer will not help (a bad image, a container
 * that ended), else the latest reason the cluster gives (Unschedulable while Autopilot adds a node, ...).
 */
export function podProblem(pod: PodLike): { fatal: boolean; reason: string } | undefined {
  const st = pod.status;
  if (!st) return undefined;
  if (st.phase === 'Failed' || st.phase === 'Succeeded') {
    return { fatal: true, reason: oneLine(st.reason ?? st.phase, st.message ?? terminatedMessage(pod)) };
  }
  for (const c of st.containerStatuses ?? []) {
    const w = c.state?.waiting;
    if (w?.reason && FATAL_WAITING.has(w.reason)) return { fatal: true, reason: oneLine(w.reason, w.message) };
    const t = c.state?.terminated;
    if (t) return { fatal: true, reason: oneLine(t.reason ?? 'Terminated', t.message ?? `exit code ${t.exitCode}`) };
  }
  const unscheduled = st.conditions?.find((c) => c.type === 'PodScheduled' && c.status === 'False');
  if (unscheduled) return { fatal: false, reason: oneLine(unscheduled.reason ?? 'Unschedulable', unscheduled.message) };
  for (const c of st.containerStatuses ?? []) {
    const w = c.state?.waiting;
    if (w?.reason) return { fatal: false, reason: oneLine(w.reason, w.message) };
  }
  const notReady = st.conditions?.find((c) => c.type === 'Ready' && c.status === 'False');
  if (st.phase === 'Running' && notReady)
    return { fatal: false, reason: oneLine(notReady.reason ?? 'NotReady', notReady.message) };
  return undefined;
}

function terminatedMessage(pod: PodLike): string | undefined {
  const t = pod.status?.containerStatuses?.find((c) => c.state?.terminated)?.state?.terminated;
  return t ? `${t.reason ?? 'terminated'}, exit code ${t.exitCode}` : undefined;
}

function oneLine(reason: string, message?: string): string {
  const m = message?.replace(/\s+/g, ' ').trim();
  return m ? `${reason}: ${m.length > 300 ? `${m.slice(0, 300)}…` : m}` : reason;
}

const iso = (v: Date | string | undefined) =>
  v === undefined ? undefined : v instanceof Date ? v.toISOString() : new Date(v).toISOString();

/** The session a pod describes, or undefined for a pod that is not an onmemos session. */
export function sessionOf(pod: PodLike, context: string, now = Date.now()): Session | undefined {
  const l = pod.metadata?.labels ?? {};
  const a = pod.metadata?.annotations ?? {};
  const id = l[LABEL.session];
  if (l[MANAGED_BY] !== 'onmemos' || !id || !l[LABEL.namespace] || !l[LABEL.user]) return undefined;
  const template = (TEMPLATES as readonly string[]).includes(l[LABEL.template] ?? '')
    ? (l[LABEL.template] as Template)
    : 'python';
  const created = a[ANNOTATION.created] ?? iso(pod.metadata?.creationTimestamp) ?? new Date(now).toISOString();
  const expires = a[ANNOTATION.expires] ?? created;
  const problem = podProblem(pod);
  return {
    id,
    provider: 'gke',
    namespace: l[LABEL.namespace]!,
    user: l[LABEL.user]!,
    status: statusOf(pod, now),
    url: null,
    websocket: null,
    ssh: false,
    template,
    created_at: created,
    expires_at: expires,
    details: {
      pod: pod.metadata?.name,
      k8s_namespace: pod.metadata?.namespace,
      context,
      image: pod.spec?.containers?.[0]?.image,
      ...(pod.spec?.nodeName ? { node: pod.spec.nodeName } : {}),
      ...(pod.spec?.volumes?.some((v) => v.persistentVolumeClaim) ? { pvc: pvcName(id) } : {}),
      ...(a[ANNOTATION.keepStorage] === 'true' ? { keep_storage: true } : {}),
      ...(problem && statusOf(pod, now) !== 'running' ? { reason: problem.reason } : {}),
    },
  };
}
