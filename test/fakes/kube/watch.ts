/**
 * `?watch=1` on a list: one JSON event per line (`{"type":"ADDED|MODIFIED|DELETED|ERROR","object":…}`) on a
 * chunked response, as the API server streams them. Without a resourceVersion (or with "0") it starts with the
 * objects there now, as ADDED; from a resourceVersion it replays what changed since (ERROR 410 Expired when that is
 * no longer kept). An object that stops matching the selectors is DELETED for this watch. `kubectl delete` waits
 * for the deletion this way, and `kubectl wait` for a condition.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { KObject, Resource, Store, WatchEvent } from './objects.js';
import { expired } from './status.js';
import { toTable } from './table.js';

export interface WatchRequest {
  resource: Resource;
  namespace?: string;
  matches: (o: KObject) => boolean;
  resourceVersion: string | null;
  timeoutSeconds: number;
  table?: 'v1' | 'v1beta1';
}

/** The longest a watch stays open (the real server picks 30 to 60 minutes). */
const MAX_WATCH_S = 1800;

const withKind = (resource: Resource, o: KObject): KObject => {
  const kind = { pods: 'Pod', namespaces: 'Namespace', persistentvolumeclaims: 'PersistentVolumeClaim' }[resource];
  return { ...o, apiVersion: 'v1', kind } as KObject;
};

/** Serves one watch until its timeout, the client leaving, or `stop` (the server closing). */
export function serveWatch(
  store: Store,
  w: WatchRequest,
  req: IncomingMessage,
  res: ServerResponse,
  stops: Set<() => void>,
): void {
  res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private' });
  res.flushHeaders();
  const inScope = (o: KObject) => w.namespace === undefined || o.metadata.namespace === w.namespace;
  const send = (type: string, o: KObject) => {
    const object = w.table
      ? toTable(w.resource, [o], w.table, o.metadata.resourceVersion ?? '')
      : withKind(w.resource, o);
    res.write(`${JSON.stringify({ type, object })}\n`);
  };
  const onEvent = (e: WatchEvent) => {
    if (e.resource !== w.resource || !inScope(e.object)) return;
    const now = e.type !== 'DELETED' && w.matches(e.object);
    const before = e.type === 'DELETED' ? w.matches(e.object) : e.prev !== undefined && w.matches(e.prev);
    if (e.type === 'DELETED') {
      if (before) send('DELETED', e.object);
    } else if (now) send(before ? 'MODIFIED' : 'ADDED', e.object);
    else if (before) send('DELETED', e.object);
  };

  const rv = w.resourceVersion;
  if (rv === null || rv === '' || rv === '0') {
    for (const o of store.list(w.resource, w.namespace)) if (w.matches(o)) send('ADDED', o);
  } else {
    const missed = /^\d+$/.test(rv) ? store.since(Number(rv)) : undefined;
    if (!missed) {
      const { kind: _k, apiVersion: _a, ...status } = expired(rv, store.oldest()).status;
      res.end(`${JSON.stringify({ type: 'ERROR', object: { kind: 'Status', apiVersion: 'v1', ...status } })}\n`);
      return;
    }
    for (const e of missed) onEvent(e);
  }

  const unsubscribe = store.subscribe(onEvent);
  const timer = setTimeout(() => stop(), Math.min(w.timeoutSeconds, MAX_WATCH_S) * 1000);
  const stop = () => {
    clearTimeout(timer);
    unsubscribe();
    stops.delete(stop);
    if (!res.writableEnded) res.end();
  };
  stops.add(stop);
  req.once('close', stop);
  res.once('close', stop);
}
