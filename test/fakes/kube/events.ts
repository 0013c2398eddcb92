/**
 * Events (core/v1) as the kubelet records them about a pod, for `kubectl describe` and clients that read why a pod
 * does not start: only what the fake's kubelet says (FailedMount today), the same event counted again when it
 * repeats, as the kubelet's event recorder aggregates it. Kept in memory, listed (not watched); the latest 1000.
 */
import { randomBytes } from 'node:crypto';
import { now, type Pod } from './objects.js';
import { NODE_NAME } from './pods.js';
import { fieldSelector } from './selectors.js';

export interface KEvent {
  kind: 'Event';
  apiVersion: 'v1';
  metadata: { name: string; namespace: string; uid: string; resourceVersion: string; creationTimestamp: string };
  involvedObject: { kind: 'Pod'; namespace: string; name: string; uid: string; apiVersion: 'v1' };
  reason: string;
  message: string;
  source: { component: string; host: string };
  firstTimestamp: string;
  lastTimestamp: string;
  count: number;
  type: 'Normal' | 'Warning';
  eventTime: null;
  reportingComponent: string;
  reportingInstance: string;
}

/** The field selectors the API server takes on events (core/v1's field label conversions). */
const FIELDS: Record<string, (e: KEvent) => string | undefined> = {
  'metadata.name': (e) => e.metadata.name,
  'metadata.namespace': (e) => e.metadata.namespace,
  'involvedObject.kind': (e) => e.involvedObject.kind,
  'involvedObject.namespace': (e) => e.involvedObject.namespace,
  'involvedObject.name': (e) => e.involvedObject.name,
  'involvedObject.uid': (e) => e.involvedObject.uid,
  'involvedObject.apiVersion': (e) => e.involvedObject.apiVersion,
  'involvedObject.resourceVersion': () => '',
  'involvedObject.fieldPath': () => '',
  reason: (e) => e.reason,
  reportingComponent: (e) => e.reportingComponent,
  source: (e) => e.source.component,
  type: (e) => e.type,
};

export class Events {
  private readonly items: KEvent[] = [];
  private version = 0;

  /** Records an event about a pod from the kubelet (the same reason and message again: its count goes up). */
  record(pod: Pod, type: KEvent['type'], reason: string, message: string): KEvent {
    const uid = pod.metadata.uid ?? '';
    const at = now();
    const same = this.items.find((e) => e.involvedObject.uid === uid && e.reason === reason && e.message === message);
    this.version++;
    if (same) {
      same.count++;
      same.lastTimestamp = at;
      same.metadata.resourceVersion = String(this.version);
      return same;
    }
    const ns = pod.metadata.namespace ?? 'default';
    const e: KEvent = {
      kind: 'Event',
      apiVersion: 'v1',
      metadata: {
        name: `${pod.metadata.name}.${randomBytes(8).toString('hex')}`,
        namespace: ns,
        uid: randomBytes(16).toString('hex'),
        resourceVersion: String(this.version),
        creationTimestamp: at,
      },
      involvedObject: { kind: 'Pod', namespace: ns, name: pod.metadata.name ?? '', uid, apiVersion: 'v1' },
      reason,
      message,
      source: { component: 'kubelet', host: NODE_NAME },
      firstTimestamp: at,
      lastTimestamp: at,
      count: 1,
      type,
      eventTime: null,
      reportingComponent: 'kubelet',
      reportingInstance: NODE_NAME,
    };
    this.items.push(e);
    if (this.items.length > 1000) this.items.splice(0, this.items.length - 1000);
    return e;
  }

  /** The events of a namespace (all with undefined) that `fieldSelector=` selects, oldest first, as copies. */
  list(namespace: string | undefined, selector: string | null): KEvent[] {
    const match = fieldSelector(selector, FIELDS);
    return this.items
      .filter((e) => (namespace === undefined || e.metadata.namespace === namespace) && match(e))
      .map((e) => structuredClone(e));
  }
}
