/**
 * The Cloud Workstations API's REST routes (the proto's http rules, /v1 and /v1beta alike), as the real client and
 * gcloud call them. Enums are names, or numbers when the request asks `$alt=json;enum-encoding=int`.
 */
import { GoogleApiError, invalidArgument, noMethod, notFound } from './errors.js';
import type { ApiVersion, Json, Operations } from './operations.js';
import { STATE_NUMBERS, type Workstations } from './workstations.js';

export interface ApiRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  body: () => Promise<Json | undefined>;
}

export interface ApiReply {
  code: number;
  body: unknown;
}

export interface ApiDeps {
  workstations: Workstations;
  ops: Operations;
  accessTokenTtlCapSeconds?: number;
}

const SEG = '([^/:]+)';
const LOC = `projects/${SEG}/locations/${SEG}`;
const CLUSTER = `${LOC}/workstationClusters/${SEG}`;
const CONFIG = `${CLUSTER}/workstationConfigs/${SEG}`;
const WS = `${CONFIG}/workstations/${SEG}`;

type Route = [method: string, pattern: RegExp, rpc: string];
const ROUTES: Route[] = [
  ['GET', new RegExp(`^(${LOC}/operations/${SEG})$`), 'google.longrunning.Operations.GetOperation'],
  ['DELETE', new RegExp(`^(${LOC}/operations/${SEG})$`), 'google.longrunning.Operations.DeleteOperation'],
  ['POST', new RegExp(`^(${LOC}/operations/${SEG}):cancel$`), 'google.longrunning.Operations.CancelOperation'],
  ['GET', new RegExp(`^(${LOC})/operations$`), 'google.longrunning.Operations.ListOperations'],
  ['GET', new RegExp(`^(${LOC})/workstationClusters$`), 'ListWorkstationClusters'],
  ['GET', new RegExp(`^(${CLUSTER})$`), 'GetWorkstationCluster'],
  ['GET', new RegExp(`^(${CLUSTER})/workstationConfigs$`), 'ListWorkstationConfigs'],
  ['GET', new RegExp(`^(${CLUSTER})/workstationConfigs:listUsable$`), 'ListUsableWorkstationConfigs'],
  ['GET', new RegExp(`^(${CONFIG})$`), 'GetWorkstationConfig'],
  ['GET', new RegExp(`^(${CONFIG})/workstations$`), 'ListWorkstations'],
  ['GET', new RegExp(`^(${CONFIG})/workstations:listUsable$`), 'ListUsableWorkstations'],
  ['POST', new RegExp(`^(${CONFIG})/workstations$`), 'CreateWorkstation'],
  ['GET', new RegExp(`^(${WS})$`), 'GetWorkstation'],
  ['PATCH', new RegExp(`^(${WS})$`), 'UpdateWorkstation'],
  ['DELETE', new RegExp(`^(${WS})$`), 'DeleteWorkstation'],
  ['POST', new RegExp(`^(${WS}):start$`), 'StartWorkstation'],
  ['POST', new RegExp(`^(${WS}):stop$`), 'StopWorkstation'],
  ['POST', new RegExp(`^(${WS}):generateAccessToken$`), 'GenerateAccessToken'],
];

function route(method: string, path: string) {
  const m = /^\/(v1|v1beta)\/(.+)$/.exec(path);
  if (!m) return undefined;
  const version = m[1] as ApiVersion;
  let rest: string;
  try {
    rest = m[2]!
      .split('/')
      .map((s) => decodeURIComponent(s))
      .join('/');
  } catch {
    return undefined;
  }
  for (const [verb, re, rpc] of ROUTES) {
    if (verb !== method) continue;
    const r = re.exec(rest);
    if (r) {
      const full = rpc.includes('.') ? rpc : `google.cloud.workstations.${version}.Workstations.${rpc}`;
      return { version, name: r[1]!, rpc: full, short: rpc.split('.').pop()! };
    }
  }
  return undefined;
}

/** The RPC method a request names (for auth errors' ErrorInfo), if any. */
export function methodOf(method: string, path: string): string | undefined {
  return route(method, path)?.rpc;
}

/** Enum fields as numbers (`$alt=json;enum-encoding=int`). */
const ENUMS: Record<string, Record<string, number>> = {
  state: STATE_NUMBERS,
  reclaimPolicy: { RECLAIM_POLICY_UNSPECIFIED: 0, DELETE: 1, RETAIN: 2 },
};

export function enumsAsNumbers(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(enumsAsNumbers);
  if (v === null || typeof v !== 'object') return v;
  const out: Json = {};
  for (const [k, x] of Object.entries(v)) {
    const map = ENUMS[k];
    out[k] = map && typeof x === 'string' && x in map ? map[x] : enumsAsNumbers(x);
  }
  return out;
}

/** A page of `items`: `pageSize` (default all, at most 1000) from the offset `pageToken` holds. */
function page(items: Json[], query: URLSearchParams, key: string): Json {
  const size = Number(query.get('pageSize') ?? 0);
  if (!Number.isInteger(size) || size < 0) throw invalidArgument('page_size must be a non-negative integer');
  const token = query.get('pageToken');
  let from = 0;
  if (token) {
    from = Number(Buffer.from(token, 'base64url').toString('utf8'));
    if (!Number.isInteger(from) || from < 0) throw invalidArgument('Invalid page token');
  }
  const n = size === 0 ? 1000 : Math.min(size, 1000);
  const slice = items.slice(from, from + n);
  const next = from + n < items.length ? Buffer.from(String(from + n)).toString('base64url') : undefined;
  return { ...(slice.length ? { [key]: slice } : {}), ...(next ? { nextPageToken: next } : {}) };
}

const bool = (q: URLSearchParams, k: string) => q.get(k) === 'true' || q.get(k) === '1';

export async function handleApi(deps: ApiDeps, req: ApiRequest): Promise<ApiReply> {
  const r = route(req.method, req.path);
  if (!r) throw noMethod(req.method, req.path);
  const ints = (req.query.get('$alt') ?? '').includes('enum-encoding=int');
  const ok = (body: unknown): ApiReply => ({ code: 200, body: ints ? enumsAsNumbers(body) : body });
  const ws = deps.workstations;
  const body = async () => (await req.body()) ?? {};
  switch (r.short) {
    case 'GetOperation': {
      const op = deps.ops.get(r.name);
      if (!op) throw notFound(r.name);
      return ok(op);
    }
    case 'DeleteOperation':
      if (!deps.ops.delete(r.name)) throw notFound(r.name);
      return ok({});
    case 'CancelOperation':
      // Workstation operations run to their end; a cancel is accepted and changes nothing.
      if (!deps.ops.get(r.name)) throw notFound(r.name);
      return ok({});
    case 'ListOperations':
      return ok(page(deps.ops.list(r.name).reverse(), req.query, 'operations'));
    case 'ListWorkstationClusters':
      return ok(page(r.name === ws.location ? [ws.cluster()] : [], req.query, 'workstationClusters'));
    case 'GetWorkstationCluster':
      if (r.name !== ws.clusterName) throw notFound(r.name);
      return ok(ws.cluster());
    case 'ListWorkstationConfigs':
    case 'ListUsableWorkstationConfigs':
      if (r.name !== ws.clusterName) throw notFound(r.name);
      return ok(page([ws.config()], req.query, 'workstationConfigs'));
    case 'GetWorkstationConfig':
      ws.checkConfig(r.name);
      return ok(ws.config());
    case 'ListWorkstations':
    case 'ListUsableWorkstations':
      return ok(page(ws.list(r.name), req.query, 'workstations'));
    case 'CreateWorkstation':
      return ok(
        await ws.create(
          r.name,
          req.query.get('workstationId'),
          await body(),
          r.version,
          bool(req.query, 'validateOnly'),
        ),
      );
    case 'GetWorkstation':
      return ok(ws.get(r.name));
    case 'UpdateWorkstation':
      return ok(await ws.update(r.name, await body(), req.query.get('updateMask'), r.version));
    case 'DeleteWorkstation':
      return ok(ws.delete(r.name, r.version, bool(req.query, 'validateOnly')));
    case 'StartWorkstation': {
      const b = await body();
      return ok(ws.start(r.name, r.version, b.validateOnly === true));
    }
    case 'StopWorkstation': {
      const b = await body();
      return ok(ws.stop(r.name, r.version, b.validateOnly === true));
    }
    case 'GenerateAccessToken':
      return ok(ws.generateAccessToken(r.name, await body(), deps.accessTokenTtlCapSeconds));
  }
  throw new GoogleApiError('UNIMPLEMENTED', `Method ${r.rpc} is not implemented by the fake.`);
}
