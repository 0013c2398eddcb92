/**
 * What the fake's "kubelet" needs to know of a pod spec, and the status shapes it writes: a pod maps to one local
 * sandbox (src/providers/local), so this is where a pod's image, resources and containers become a local
 * session's request and an exec's environment.
 */
import { createHash, randomBytes } from 'node:crypto';
import { type CreateSessionRequest, type NetworkMode, normalizeCreateRequest } from '../../../src/session/model.js';
import { type Condition, type Container, type ContainerStatus, now, type Pod } from './objects.js';

export const NODE_NAME = 'onmemos-fake-node';
export const HOST_IP = '10.128.0.2';

/** The session template for an image: python, node or go images, else python. */
export function templateFor(image: string): 'python' | 'nodejs' | 'go' {
  const name = image.split('@')[0]!.toLowerCase();
  if (name.includes('node')) return 'nodejs';
  if (/golang|(^|\/)go[:]|(^|\/)go$/.test(name)) return 'go';
  return 'python';
}

/** An image reference as containerd spells it: docker.io/library/python:latest for `python`. */
export function fullImage(image: string): string {
  let ref = image;
  const first = ref.split('/')[0]!;
  if (!ref.includes('/')) ref = `docker.io/library/${ref}`;
  else if (!first.includes('.') && !first.includes(':') && first !== 'localhost') ref = `docker.io/${ref}`;
  const last = ref.split('/').pop()!;
  if (!last.includes(':') && !last.includes('@')) ref += ':latest';
  return ref;
}

const UNITS: Record<string, number> = {
  '': 1,
  m: 1e-3,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
};

/** A resource.Quantity (`500m`, `2`, `512Mi`, `1G`) as a number; undefined when it is not one. */
export function quantity(q: string | undefined): number | undefined {
  if (q === undefined) return undefined;
  const m = /^([0-9.]+)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$/.exec(String(q).trim());
  if (!m) return undefined;
  return Number(m[1]) * UNITS[m[2] ?? '']!;
}

/** A DNS-label piece of at most `max` characters, for the local session's namespace and user. */
function labelPart(s: string, max: number): string {
  const out = s
    .replace(/[^a-z0-9-]/g, '-')
    .slice(0, max)
    .replace(/^-+|-+$/g, '');
  return out || 'x';
}

/**
 * How many characters a local session id under `stateDir` can give its namespace and user together: the id is part
 * of the agent's socket path, `{stateDir}/local/sessions/ws-{ns}-{user}-{10 digits}-{4}/agent.sock.{pid}` while it is
 * made, which must fit in a unix socket address (107 bytes and a NUL).
 */
export function idBudget(stateDir: string): number {
  return 107 - stateDir.length - '/local/sessions/'.length - 'ws---0123456789-abcd'.length - '/agent.sock.'.length - 7;
}

/**
 * The local session a pod runs as. Its namespace and user are short forms of the pod's, within `budget` characters
 * together (idBudget). Limits come from the first container's resource limits, clamped to what the local provider
 * accepts; a pod never expires (the longest TTL the local provider has).
 */
export function sessionRequest(pod: Pod, network: NetworkMode, budget: number): CreateSessionRequest {
  const ns = pod.metadata.namespace ?? 'default';
  const name = pod.metadata.name ?? 'pod';
  const nsMax = Math.max(1, Math.min(ns.length, Math.floor(budget / 2)));
  const main = pod.spec.containers[0]!;
  const limits = main.resources?.limits ?? {};
  const cpu = quantity(limits.cpu);
  const memory = quantity(limits.memory);
  const disk = quantity(limits['ephemeral-storage']);
  return normalizeCreateRequest({
    provider: 'local',
    template: templateFor(main.image),
    namespace: labelPart(ns, nsMax),
    user: labelPart(name, Math.max(1, budget - labelPart(ns, nsMax).length)),
    ttl_minutes: 7 * 24 * 60,
    network,
    limits: {
      cpu: cpu === undefined ? undefined : Math.min(64, Math.max(0.01, cpu)),
      memory: memory === undefined ? undefined : Math.max(64 * 2 ** 20, Math.floor(memory)),
      // A smaller disk than the local default: each pod's is made as it starts.
      disk: disk === undefined ? 2 ** 30 : Math.max(16 * 2 ** 20, Math.floor(disk)),
    },
  });
}

/**
 * The environment of an exec in `container`: its `env` (values, and the fieldRefs a pod can name about itself),
 * and HOSTNAME as the pod's name, as a container runtime sets it.
 */
export function containerEnv(pod: Pod, container: Container): Record<string, string> {
  const env: Record<string, string> = { HOSTNAME: pod.metadata.name ?? '' };
  const fields: Record<string, string | undefined> = {
    'metadata.name': pod.metadata.name,
    'metadata.namespace': pod.metadata.namespace,
    'metadata.uid': pod.metadata.uid,
    'spec.nodeName': pod.spec.nodeName,
    'status.podIP': pod.status.podIP,
    'status.hostIP': pod.status.hostIP,
  };
  for (const e of container.env ?? []) {
    if (e.value !== undefined) env[e.name] = e.value;
    else {
      const path = (e.valueFrom as { fieldRef?: { fieldPath?: string } } | undefined)?.fieldRef?.fieldPath;
      env[e.name] = (path && fields[path]) ?? '';
    }
  }
  return env;
}

export const workingDir = (c: Container) => c.workingDir || '/workspace';

export function condition(type: string, ok: boolean, reason?: string, message?: string): Condition {
  return {
    type,
    status: ok ? 'True' : 'False',
    lastProbeTime: null,
    lastTransitionTime: now(),
    ...(reason ? { reason } : {}),
    ...(message ? { message } : {}),
  };
}

/** Conditions keep their lastTransitionTime while their status stays the same. */
export function mergeConditions(old: Condition[] | undefined, next: Condition[]): Condition[] {
  return next.map((c) => {
    const was = old?.find((o) => o.type === c.type);
    return was && was.status === c.status ? { ...c, lastTransitionTime: was.lastTransitionTime } : c;
  });
}

export function waitingStatus(c: Container, reason: string, message?: string): ContainerStatus {
  return {
    name: c.name,
    state: { waiting: { reason, ...(message ? { message } : {}) } },
    lastState: {},
    ready: false,
    restartCount: 0,
    image: c.image,
    imageID: '',
    started: false,
  };
}

export function runningStatus(c: Container, startedAt: string, ready: boolean, containerID: string): ContainerStatus {
  const digest = createHash('sha256').update(c.image).digest('hex');
  return {
    name: c.name,
    state: { running: { startedAt } },
    lastState: {},
    ready,
    restartCount: 0,
    image: c.image,
    imageID: `${fullImage(c.image).replace(/:[^:/]+$/, '')}@sha256:${digest}`,
    containerID,
    started: true,
  };
}

export const newContainerId = () => `containerd://${randomBytes(32).toString('hex')}`;

/** BestEffort without requests or limits, Guaranteed when every container's cpu and memory limits equal requests. */
export function qosClass(pod: Pod): string {
  const rs = pod.spec.containers.map((c) => c.resources ?? {});
  if (rs.every((r) => Object.keys(r.limits ?? {}).length === 0 && Object.keys(r.requests ?? {}).length === 0)) {
    return 'BestEffort';
  }
  const guaranteed = rs.every((r) =>
    ['cpu', 'memory'].every((k) => r.limits?.[k] !== undefined && (r.requests?.[k] ?? r.limits[k]) === r.limits[k]),
  );
  return guaranteed ? 'Guaranteed' : 'Burstable';
}

/** The messages a real scheduler and containerd give. */
export const MESSAGES = {
  unschedulable:
    '0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.',
  missingClaim: (claim: string) =>
    `0/1 nodes are available: persistentvolumeclaim "${claim}" not found. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.`,
  pullFailed: (image: string) => {
    const ref = fullImage(image);
    return `failed to pull and unpack image "${ref}": failed to resolve reference "${ref}": pull access denied, repository does not exist or may require authorization: server message: insufficient_scope: authorization failed`;
  },
  backOff: (image: string) => `Back-off pulling image "${image}"`,
  notReady: (names: string[]) => `containers with unready status: [${names.join(' ')}]`,
};
