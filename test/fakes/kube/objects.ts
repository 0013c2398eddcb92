/**
 * The fake's etcd: namespaces, pods and persistent volume claims in memory, one resourceVersion counter for all
 * of them (as etcd's revision), and the recent changes, which watches replay from a resourceVersion and then
 * follow. Objects go in and come out as copies, so nobody holds a reference into the store.
 */
import { randomUUID } from 'node:crypto';

export type Resource = 'namespaces' | 'pods' | 'persistentvolumeclaims';

export interface ObjectMeta {
  name?: string;
  generateName?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  deletionGracePeriodSeconds?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  [k: string]: unknown;
}

export interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: unknown;
}

export interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: EnvVar[];
  workingDir?: string;
  resources?: { limits?: Record<string, string>; requests?: Record<string, string> };
  volumeMounts?: { name: string; mountPath: string }[];
  [k: string]: unknown;
}

export interface Volume {
  name: string;
  persistentVolumeClaim?: { claimName: string; readOnly?: boolean };
  [k: string]: unknown;
}

export interface Condition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  lastProbeTime?: null;
  lastTransitionTime: string;
  reason?: string;
  message?: string;
}

export interface ContainerState {
  waiting?: { reason: string; message?: string };
  running?: { startedAt: string };
  terminated?: { exitCode: number; reason: string; startedAt?: string; finishedAt?: string };
}

export interface ContainerStatus {
  name: string;
  state: ContainerState;
  lastState: ContainerState;
  ready: boolean;
  restartCount: number;
  image: string;
  imageID: string;
  containerID?: string;
  started: boolean;
}

export interface Pod {
  apiVersion: 'v1';
  kind: 'Pod';
  metadata: ObjectMeta;
  spec: {
    containers: Container[];
    volumes?: Volume[];
    nodeName?: string;
    restartPolicy?: string;
    terminationGracePeriodSeconds?: number;
    [k: string]: unknown;
  };
  status: {
    phase: 'Pending' | 'Running' | 'Succeeded' | 'Failed' | 'Unknown';
    conditions?: Condition[];
    hostIP?: string;
    podIP?: string;
    podIPs?: { ip: string }[];
    startTime?: string;
    containerStatuses?: ContainerStatus[];
    qosClass?: string;
    [k: string]: unknown;
  };
}

export interface Namespace {
  apiVersion: 'v1';
  kind: 'Namespace';
  metadata: ObjectMeta;
  spec: { finalizers?: string[] };
  status: { phase: 'Active' | 'Terminating' };
}

export interface Pvc {
  apiVersion: 'v1';
  kind: 'PersistentVolumeClaim';
  metadata: ObjectMeta;
  spec: {
    accessModes?: string[];
    resources?: { requests?: Record<string, string> };
    storageClassName?: string;
    volumeName?: string;
    volumeMode?: string;
    [k: string]: unknown;
  };
  status: { phase?: 'Pending' | 'Bound' | 'Lost'; accessModes?: string[]; capacity?: Record<string, string> };
}

export type KObject = Pod | Namespace | Pvc;
export type ObjectOf<R extends Resource> = R extends 'pods' ? Pod : R extends 'namespaces' ? Namespace : Pvc;

export interface WatchEvent {
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  resource: Resource;
  /** The object after the change (for DELETED, as it was last). */
  object: KObject;
  /** The object before the change, when there was one (a watch with a selector turns "no longer matches" into DELETED). */
  prev?: KObject;
  rv: number;
}

/** How many changes are kept for watches that start from an older resourceVersion (the rest get 410 Expired). */
const HISTORY = 10_000;

export const now = () => new Date().toISOString().replace(/\.\d+Z$/, 'Z');
const clone = <T>(o: T): T => structuredClone(o);

export class Store {
  private rv = 0;
  private readonly objects: Record<Resource, Map<string, KObject>> = {
    namespaces: new Map(),
    pods: new Map(),
    persistentvolumeclaims: new Map(),
  };
  private history: WatchEvent[] = [];
  private readonly watchers = new Set<(e: WatchEvent) => void>();

  static key(namespace: string | undefined, name: string): string {
    return namespace ? `${namespace}/${name}` : name;
  }

  /** The current resourceVersion (what a list reports). */
  version(): string {
    return String(this.rv);
  }

  get<R extends Resource>(resource: R, namespace: string | undefined, name: string): ObjectOf<R> | undefined {
    const o = this.objects[resource].get(Store.key(namespace, name));
    return o ? (clone(o) as ObjectOf<R>) : undefined;
  }

  /** Every object of a resource (in one namespace, or in all), by namespace then name, as the server sorts. */
  list<R extends Resource>(resource: R, namespace?: string): ObjectOf<R>[] {
    const out: ObjectOf<R>[] = [];
    for (const o of this.objects[resource].values()) {
      if (namespace === undefined || o.metadata.namespace === namespace) out.push(clone(o) as ObjectOf<R>);
    }
    const k = (o: KObject) => Store.key(o.metadata.namespace, o.metadata.name ?? '');
    return out.sort((a, b) => (k(a) < k(b) ? -1 : k(a) > k(b) ? 1 : 0));
  }

  /** Stores a new object: uid, creationTimestamp and resourceVersion are set here. */
  create<T extends KObject>(resource: Resource, obj: T): T {
    const o = clone(obj);
    o.metadata.uid = randomUUID();
    o.metadata.creationTimestamp = now();
    return this.write(resource, o, 'ADDED');
  }

  /** Replaces a stored object (which must exist); the resourceVersion moves on. */
  update<T extends KObject>(resource: Resource, obj: T): T {
    return this.write(resource, clone(obj), 'MODIFIED');
  }

  remove(resource: Resource, namespace: string | undefined, name: string): void {
    const key = Store.key(namespace, name);
    const prev = this.objects[resource].get(key);
    if (!prev) return;
    this.objects[resource].delete(key);
    const object = clone(prev);
    object.metadata.resourceVersion = String(++this.rv);
    this.emit({ type: 'DELETED', resource, object, rv: this.rv });
  }

  private write<T extends KObject>(resource: Resource, o: T, type: 'ADDED' | 'MODIFIED'): T {
    const key = Store.key(o.metadata.namespace, o.metadata.name ?? '');
    const prev = this.objects[resource].get(key);
    o.metadata.resourceVersion = String(++this.rv);
    this.objects[resource].set(key, o);
    this.emit({ type, resource, object: clone(o), ...(prev ? { prev: clone(prev) } : {}), rv: this.rv });
    return clone(o);
  }

  private emit(e: WatchEvent): void {
    this.history.push(e);
    if (this.history.length > HISTORY) this.history = this.history.slice(-HISTORY / 2);
    for (const w of this.watchers) w(e);
  }

  /** The changes after resourceVersion `rv`, or undefined when they are no longer all kept. */
  since(rv: number): WatchEvent[] | undefined {
    const first = this.history[0];
    if (first && first.rv > rv + 1) return undefined;
    if (!first && rv < this.rv) return undefined;
    return this.history.filter((e) => e.rv > rv).map(clone);
  }

  oldest(): number {
    return this.history[0]?.rv ?? this.rv;
  }

  subscribe(fn: (e: WatchEvent) => void): () => void {
    this.watchers.add(fn);
    return () => this.watchers.delete(fn);
  }
}
