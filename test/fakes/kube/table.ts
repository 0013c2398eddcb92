/**
 * Server-side printing: `kubectl get` asks for `application/json;as=Table;v=v1;g=meta.k8s.io` and prints the
 * columns the server chooses, so the fake answers with the columns a real API server has for these resources
 * (upper-cased by kubectl: NAME READY STATUS RESTARTS AGE for pods). Each row carries the object's metadata
 * (PartialObjectMetadata), from which kubectl takes the namespace for `-A` and labels for `--show-labels`.
 */
import type { KObject, Namespace, Pod, Pvc, Resource } from './objects.js';

interface Column {
  name: string;
  type: string;
  format: string;
  description: string;
  priority: number;
}
const col = (name: string, description: string, priority = 0, format = ''): Column => ({
  name,
  type: 'string',
  format,
  description,
  priority,
});
const NAME = col(
  'Name',
  'Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated.',
  0,
  'name',
);
const AGE = col(
  'Age',
  'CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.',
);

const COLUMNS: Record<Resource, Column[]> = {
  pods: [
    NAME,
    col('Ready', 'The aggregate readiness state of this pod for accepting traffic.'),
    col('Status', 'The aggregate status of the containers in this pod.'),
    col(
      'Restarts',
      'The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.',
    ),
    AGE,
    col('IP', 'IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.', 1),
    col('Node', 'NodeName is a request to schedule this pod onto a specific node.', 1),
    col('Nominated Node', 'nominatedNodeName is set only when this pod preempts other pods on the node.', 1),
    col('Readiness Gates', 'If specified, all readiness gates will be evaluated for pod readiness.', 1),
  ],
  namespaces: [NAME, col('Status', 'The status of the namespace'), AGE],
  persistentvolumeclaims: [
    NAME,
    col('Status', 'Phase represents the current phase of PersistentVolumeClaim.'),
    col('Volume', 'VolumeName is the binding reference to the PersistentVolume backing this claim.'),
    col('Capacity', 'capacity represents the actual resources of the underlying volume.'),
    col('Access Modes', 'AccessModes contains the desired access modes the volume should have.'),
    col('StorageClass', 'StorageClassName is the name of the StorageClass required by the claim.'),
    col(
      'VolumeAttributesClass',
      'VolumeAttributesClassName may be used to set the VolumeAttributesClass used by this claim.',
    ),
    AGE,
    col('VolumeMode', 'volumeMode defines what type of volume is required by the claim.', 1),
  ],
};

/** Whether an Accept header asks for a Table (kubectl get does; -o json/yaml and client libraries do not). */
export function wantsTable(accept: string | undefined): 'v1' | 'v1beta1' | undefined {
  for (const part of (accept ?? '').split(',')) {
    const params = new Map(
      part
        .split(';')
        .slice(1)
        .map((p) => p.trim().split('=') as [string, string]),
    );
    if (params.get('as') === 'Table' && params.get('g') === 'meta.k8s.io') {
      const v = params.get('v');
      if (v === 'v1' || v === 'v1beta1') return v;
    }
  }
  return undefined;
}

export function toTable(resource: Resource, objects: KObject[], version: 'v1' | 'v1beta1', resourceVersion: string) {
  return {
    kind: 'Table',
    apiVersion: `meta.k8s.io/${version}`,
    metadata: { resourceVersion },
    columnDefinitions: COLUMNS[resource],
    rows: objects.map((o) => ({
      cells: cells(resource, o),
      object: { kind: 'PartialObjectMetadata', apiVersion: `meta.k8s.io/${version}`, metadata: o.metadata },
    })),
  };
}

function cells(resource: Resource, o: KObject): (string | number)[] {
  const age = humanDuration(Date.now() - Date.parse(o.metadata.creationTimestamp ?? ''));
  const name = o.metadata.name ?? '';
  if (resource === 'namespaces') return [name, (o as Namespace).status.phase, age];
  if (resource === 'persistentvolumeclaims') {
    const p = o as Pvc;
    const modes = (p.status.accessModes ?? p.spec.accessModes ?? []).map((m) => ACCESS[m] ?? m).join(',');
    const bound = p.status.phase === 'Bound';
    return [
      name,
      p.status.phase ?? 'Pending',
      p.spec.volumeName ?? '',
      bound ? (p.status.capacity?.storage ?? '') : '',
      bound ? modes : '',
      p.spec.storageClassName ?? '<unset>',
      '<unset>',
      age,
      p.spec.volumeMode ?? 'Filesystem',
    ];
  }
  const pod = o as Pod;
  const statuses = pod.status.containerStatuses ?? [];
  const ready = statuses.filter((s) => s.ready).length;
  const restarts = statuses.reduce((n, s) => n + s.restartCount, 0);
  return [
    name,
    `${ready}/${pod.spec.containers.length}`,
    podStatus(pod),
    String(restarts),
    age,
    pod.status.podIP ?? '<none>',
    pod.spec.nodeName ?? '<none>',
    '<none>',
    '<none>',
  ];
}

const ACCESS: Record<string, string> = {
  ReadWriteOnce: 'RWO',
  ReadOnlyMany: 'ROX',
  ReadWriteMany: 'RWX',
  ReadWriteOncePod: 'RWOP',
};

/** The STATUS column: a waiting container's reason (ContainerCreating, ImagePullBackOff…), else the phase. */
export function podStatus(pod: Pod): string {
  if (pod.metadata.deletionTimestamp) return 'Terminating';
  let reason = (pod.status.reason as string | undefined) ?? pod.status.phase;
  for (const s of pod.status.containerStatuses ?? []) {
    if (s.state.waiting?.reason) reason = s.state.waiting.reason;
    else if (s.state.terminated?.reason) reason = s.state.terminated.reason;
  }
  return reason;
}

/** Ages as kubectl shows them: 45s, 3m2s, 25m, 5h3m, 20h, 3d4h, 20d, 1y30d. */
export function humanDuration(ms: number): string {
  const s = Math.floor(ms / 1000);
  if (s < -1) return '<invalid>';
  if (s < 0) return '0s';
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  const both = (a: number, ua: string, b: number, ub: string) => (b === 0 ? `${a}${ua}` : `${a}${ua}${b}${ub}`);
  if (m < 10) return both(m, 'm', s % 60, 's');
  if (m < 180) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 8) return both(h, 'h', m % 60, 'm');
  if (h < 48) return `${h}h`;
  if (h < 192) return both(Math.floor(h / 24), 'd', h % 24, 'h');
  const d = Math.floor(h / 24);
  if (d < 730) return `${d}d`;
  if (d < 2920) return both(Math.floor(d / 365), 'y', d % 365, 'd');
  return `${Math.floor(d / 365)}y`;
}
