/**
 * The REST side of /api/v1 for namespaces, pods and persistentvolumeclaims: list (selectors, Table, watch), get,
 * create, update, patch, delete, deletecollection, pods/status, pods/log. The rules a client can run into are the
 * real server's: pods and claims are refused in a namespace that does not exist (404) or is being deleted (403),
 * a list in a missing namespace is empty, names are unique per namespace until the object is gone, an update from
 * a stale resourceVersion is a 409 Conflict, and a pod's spec cannot change but for its images.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Kubelet } from './kubelet.js';
import { type KObject, type Namespace, now, type Pod, type Pvc, type Resource, type Store } from './objects.js';
import { applyPatch } from './patch.js';
import { fieldSelector, labelSelector } from './selectors.js';
import {
  alreadyExists,
  badRequest,
  conflict,
  forbidden,
  invalid,
  methodNotAllowed,
  noRoute,
  notFound,
} from './status.js';
import { podStatus, toTable, wantsTable } from './table.js';
import { checkUpdatedMeta, prepareNamespace, preparePod, preparePvc } from './validate.js';
import { serveWatch } from './watch.js';

export interface ApiDeps {
  store: Store;
  kubelet: Kubelet;
  /** Open watches, each with its stop (the server ends them on close). */
  watches: Set<() => void>;
  /** Work that outlives its request (a namespace being emptied); close() waits for it. */
  background: Set<Promise<unknown>>;
}

export interface ApiCall {
  method: string;
  path: string;
  query: URLSearchParams;
  accept?: string;
  contentType: string;
  body(): Promise<unknown>;
}

export type Reply = { code: number; body: unknown } | 'streaming';

const KIND: Record<Resource, string> = {
  pods: 'Pod',
  namespaces: 'Namespace',
  persistentvolumeclaims: 'PersistentVolumeClaim',
};
/** Namespaces the API server does not let anyone delete. */
const PROTECTED = new Set(['default', 'kube-system', 'kube-public']);

const FIELDS: Record<Resource, Record<string, (o: KObject) => string | undefined>> = {
  pods: {
    'metadata.name': (o) => o.metadata.name,
    'metadata.namespace': (o) => o.metadata.namespace,
    'spec.nodeName': (o) => (o as Pod).spec.nodeName,
    'spec.restartPolicy': (o) => (o as Pod).spec.restartPolicy,
    'spec.schedulerName': (o) => (o as Pod).spec.schedulerName as string | undefined,
    'spec.serviceAccountName': (o) => (o as Pod).spec.serviceAccountName as string | undefined,
    'status.phase': (o) => (o as Pod).status.phase,
    'status.podIP': (o) => (o as Pod).status.podIP,
    'status.nominatedNodeName': () => undefined,
  },
  namespaces: { 'metadata.name': (o) => o.metadata.name, 'status.phase': (o) => (o as Namespace).status.phase },
  persistentvolumeclaims: {
    'metadata.name': (o) => o.metadata.name,
    'metadata.namespace': (o) => o.metadata.namespace,
  },
};

/** A list item, as lists carry them: without kind and apiVersion. */
const item = ({ kind: _k, apiVersion: _a, ...rest }: KObject) => rest;

function segment(s: string | undefined): string | undefined {
  if (s === undefined) return undefined;
  try {
    return decodeURIComponent(s);
  } catch {
    throw badRequest(`invalid path segment: ${s}`);
  }
}

export async function handleApi(
  deps: ApiDeps,
  call: ApiCall,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<Reply> {
  const m =
    /^\/api\/v1\/(?:namespaces\/([^/]+)\/)?(pods|persistentvolumeclaims|namespaces)(?:\/([^/]+))?(?:\/(status|log|exec))?\/?$/.exec(
      call.path,
    );
  if (!m) throw noRoute();
  const namespace = segment(m[1]);
  const resource = m[2] as Resource;
  const name = segment(m[3]);
  const sub = m[4];
  if (resource === 'namespaces' && namespace !== undefined) throw noRoute();
  if (sub && (!name || (sub !== 'status' && resource !== 'pods'))) throw noRoute();
  const api = new Api(deps, call);
  if (name === undefined) {
    if (call.method === 'GET') return api.list(resource, namespace, req, res);
    if (call.method === 'POST' && (namespace !== undefined || resource === 'namespaces'))
      return api.create(resource, namespace);
    if (call.method === 'DELETE' && namespace !== undefined) return api.deleteCollection(resource, namespace);
    throw methodNotAllowed();
  }
  if (resource !== 'namespaces' && namespace === undefined) throw noRoute();
  if (sub === 'exec') throw badRequest('Upgrade request required');
  if (sub === 'log') {
    if (call.method !== 'GET') throw methodNotAllowed();
    return api.log(namespace!, name);
  }
  if (call.method === 'GET') return api.get(resource, namespace, name);
  if (sub === 'status') throw methodNotAllowed(); // status is the kubelet's to write
  if (call.method === 'DELETE') return api.delete(resource, namespace, name);
  if (call.method === 'PUT' || call.method === 'PATCH') return api.update(resource, namespace, name);
  throw methodNotAllowed();
}

class Api {
  constructor(
    private readonly deps: ApiDeps,
    private readonly call: ApiCall,
  ) {}

  private get store(): Store {
    return this.deps.store;
  }

  private existing<R extends Resource>(resource: R, namespace: string | undefined, name: string) {
    const o = this.store.get(resource, namespace, name);
    if (!o) throw notFound(resource, name);
    return o;
  }

  private one(resource: Resource, o: KObject, code = 200): Reply {
    const table = wantsTable(this.call.accept);
    return { code, body: table ? toTable(resource, [o], table, o.metadata.resourceVersion ?? '') : o };
  }

  private matcher(resource: Resource): (o: KObject) => boolean {
    const labels = labelSelector(this.call.query.get('labelSelector'));
    const fields = fieldSelector(this.call.query.get('fieldSelector'), FIELDS[resource]);
    return (o) => labels(o.metadata.labels) && fields(o);
  }

  list(resource: Resource, namespace: string | undefined, req: IncomingMessage, res: ServerResponse): Reply {
    const matches = this.matcher(resource);
    const q = this.call.query;
    if (q.get('watch') === 'true' || q.get('watch') === '1') {
      const timeout = Number(q.get('timeoutSeconds') ?? '1800');
      serveWatch(
        this.store,
        {
          resource,
          namespace,
          matches,
          resourceVersion: q.get('resourceVersion'),
          timeoutSeconds: Number.isFinite(timeout) && timeout > 0 ? timeout : 1800,
          table: wantsTable(this.call.accept),
        },
        req,
        res,
        this.deps.watches,
      );
      return 'streaming';
    }
    const rv = this.store.version();
    const items = this.store.list(resource, namespace).filter(matches);
    const table = wantsTable(this.call.accept);
    if (table) return { code: 200, body: toTable(resource, items, table, rv) };
    return {
      code: 200,
      body: {
        kind: `${KIND[resource]}List`,
        apiVersion: 'v1',
        metadata: { resourceVersion: rv },
        items: items.map(item),
      },
    };
  }

  get(resource: Resource, namespace: string | undefined, name: string): Reply {
    return this.one(resource, this.existing(resource, namespace, name));
  }

  private async bodyObject(): Promise<KObject> {
    const body = await this.call.body();
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw badRequest('the body of the request must be a JSON object');
    }
    const o = body as KObject;
    if (typeof o.metadata !== 'object' || o.metadata === null) (o as { metadata: object }).metadata = {};
    return o;
  }

  async create(resource: Resource, namespace: string | undefined): Promise<Reply> {
    const o = await this.bodyObject();
    if (namespace !== undefined) {
      if (o.metadata.namespace !== undefined && o.metadata.namespace !== namespace) {
        throw badRequest('the namespace of the provided object does not match the namespace sent on the request');
      }
      o.metadata.namespace = namespace;
    }
    const made =
      resource === 'pods'
        ? preparePod(o as Pod)
        : resource === 'namespaces'
          ? prepareNamespace(o as Namespace)
          : preparePvc(o as Pvc);
    const name = made.metadata.name!;
    if (namespace !== undefined) {
      const ns = this.store.get('namespaces', undefined, namespace);
      if (!ns) throw notFound('namespaces', namespace);
      if (ns.status.phase === 'Terminating') {
        throw forbidden(
          resource,
          name,
          `unable to create new content in namespace ${namespace} because it is being terminated`,
        );
      }
    }
    if (this.store.get(resource, namespace, name)) throw alreadyExists(resource, name);
    if (this.call.query.get('dryRun') === 'All')
      return { code: 201, body: { ...made, metadata: { ...made.metadata, uid: 'dry-run', creationTimestamp: now() } } };
    if (resource === 'persistentvolumeclaims') {
      const pvc = made as Pvc;
      pvc.spec.volumeName = `pvc-${name}`;
      pvc.status = {
        phase: 'Bound',
        accessModes: pvc.spec.accessModes,
        capacity: { storage: pvc.spec.resources!.requests!.storage! },
      };
    }
    const stored = this.store.create(resource, made);
    if (resource === 'pods') this.deps.kubelet.kick(namespace!, name);
    if (resource === 'persistentvolumeclaims') this.deps.kubelet.kickAll();
    return { code: 201, body: stored };
  }

  async update(resource: Resource, namespace: string | undefined, name: string): Promise<Reply> {
    // The body is read first: from here on nothing waits, so no status the kubelet writes meanwhile is lost.
    const patch = this.call.method === 'PATCH' ? await this.call.body() : undefined;
    const replacement = this.call.method === 'PATCH' ? undefined : await this.bodyObject();
    const old = this.existing(resource, namespace, name);
    const body = replacement ?? applyPatch(old, patch, this.call.contentType);
    const next = body as KObject;
    if (typeof next?.metadata !== 'object' || next.metadata === null) throw badRequest('metadata is required');
    if (next.metadata.name !== undefined && next.metadata.name !== name) {
      throw badRequest(`the name of the object (${next.metadata.name}) does not match the name on the URL (${name})`);
    }
    const asked = next.metadata.resourceVersion;
    if (asked !== undefined && asked !== '' && asked !== old.metadata.resourceVersion) throw conflict(resource, name);
    // What the client cannot change through the main resource.
    next.apiVersion = 'v1';
    (next as { kind: string }).kind = KIND[resource];
    for (const k of [
      'name',
      'namespace',
      'uid',
      'creationTimestamp',
      'deletionTimestamp',
      'deletionGracePeriodSeconds',
      'generateName',
    ] as const) {
      const meta = next.metadata as Record<string, unknown>;
      if (old.metadata[k] === undefined) delete meta[k];
      else meta[k] = old.metadata[k];
    }
    (next as { status: unknown }).status = old.status;
    if (resource === 'namespaces') (next as Namespace).spec = (old as Namespace).spec;
    if (resource === 'pods' && specWithoutImages(next as Pod) !== specWithoutImages(old as Pod)) {
      throw invalid('Pod', name, [
        {
          field: 'spec',
          type: 'FieldValueForbidden',
          detail:
            'pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)',
        },
      ]);
    }
    if (resource === 'persistentvolumeclaims') {
      const strip = (p: Pvc) => JSON.stringify({ ...p.spec, resources: undefined });
      if (strip(next as Pvc) !== strip(old as Pvc)) {
        throw invalid('PersistentVolumeClaim', name, [
          {
            field: 'spec',
            type: 'FieldValueForbidden',
            detail:
              'spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims',
          },
        ]);
      }
    }
    checkUpdatedMeta(KIND[resource], next);
    if (this.call.query.get('dryRun') === 'All') return { code: 200, body: next };
    return { code: 200, body: this.store.update(resource, next) };
  }

  /** A grace period from the query or the DeleteOptions body (kubectl sends the latter). */
  private async gracePeriod(): Promise<number | undefined> {
    const fromQuery = this.call.query.get('gracePeriodSeconds');
    let v: unknown = fromQuery === null ? undefined : Number(fromQuery);
    if (v === undefined && ['POST', 'DELETE'].includes(this.call.method)) {
      const body = await this.call.body().catch(() => undefined);
      v = (body as { gracePeriodSeconds?: unknown } | undefined)?.gracePeriodSeconds;
    }
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0)
      throw badRequest('gracePeriodSeconds must be a non-negative integer');
    return v;
  }

  async delete(resource: Resource, namespace: string | undefined, name: string): Promise<Reply> {
    const grace = await this.gracePeriod(); // before the read, as in update()
    const o = this.existing(resource, namespace, name);
    if (this.call.query.get('dryRun') === 'All') return { code: 200, body: o };
    if (resource === 'pods') return { code: 200, body: this.deps.kubelet.delete(o as Pod, grace) };
    if (resource === 'persistentvolumeclaims') {
      this.store.remove(resource, namespace, name);
      return { code: 200, body: o };
    }
    if (PROTECTED.has(name)) throw forbidden('namespaces', name, 'this namespace may not be deleted');
    return { code: 200, body: this.deleteNamespace(o as Namespace) };
  }

  /** The namespace shows Terminating while its pods and claims go, then goes itself. */
  private deleteNamespace(ns: Namespace): Namespace {
    if (ns.status.phase === 'Terminating') return ns;
    const name = ns.metadata.name!;
    ns.metadata.deletionTimestamp = now();
    ns.status.phase = 'Terminating';
    const terminating = this.store.update('namespaces', ns);
    const { store, kubelet } = this.deps;
    const work = (async () => {
      for (const p of store.list('persistentvolumeclaims', name))
        store.remove('persistentvolumeclaims', name, p.metadata.name!);
      for (const p of store.list('pods', name)) kubelet.delete(p, undefined);
      while (store.list('pods', name).length > 0 && !kubelet.isClosed) {
        await kubelet.idle();
        await new Promise((r) => setTimeout(r, 20));
      }
      store.remove('namespaces', undefined, name);
    })();
    this.deps.background.add(work);
    void work.finally(() => this.deps.background.delete(work));
    return terminating;
  }

  async deleteCollection(resource: Resource, namespace: string): Promise<Reply> {
    const matches = this.matcher(resource);
    const grace = await this.gracePeriod();
    const gone: KObject[] = [];
    for (const o of this.store.list(resource, namespace).filter(matches)) {
      if (resource === 'pods') gone.push(this.deps.kubelet.delete(o as Pod, grace));
      else {
        this.store.remove(resource, namespace, o.metadata.name!);
        gone.push(o);
      }
    }
    return {
      code: 200,
      body: {
        kind: `${KIND[resource]}List`,
        apiVersion: 'v1',
        metadata: { resourceVersion: this.store.version() },
        items: gone.map(item),
      },
    };
  }

  /** The containers run no main process (see kubelet.ts), so a running container's log is empty. */
  log(namespace: string, name: string): Reply {
    const pod = this.existing('pods', namespace, name) as Pod;
    const asked = this.call.query.get('container');
    const c = asked ? pod.spec.containers.find((x) => x.name === asked) : pod.spec.containers[0];
    if (!c) throw badRequest(`container ${asked} is not valid for pod ${name}`);
    if (!this.deps.kubelet.sessionOf(pod)) {
      throw badRequest(`container "${c.name}" in pod "${name}" is waiting to start: ${podStatus(pod)}`);
    }
    return { code: 200, body: '' };
  }
}

function specWithoutImages(p: Pod): string {
  return JSON.stringify({
    ...p.spec,
    nodeName: undefined,
    containers: p.spec.containers.map((c) => ({ ...c, image: undefined })),
  });
}
