/**
 * A Kubernetes API server fake that real kubectl (1.32) and @kubernetes/client-node (1.4) use unchanged: plain
 * HTTP on 127.0.0.1, a kubeconfig written for it, discovery, namespaces, pods and claims (api.ts), pods that
 * really run as local sandboxes (kubelet.ts), exec and port-forward over WebSocket (exec.ts, portforward.ts), and faults a test can switch on
 * (faults.ts).
 *
 *   const kube = await startKubeFake();          // port 0, its own state directory
 *   new KubeConfig().loadFromFile(kube.kubeconfigPath); spawn('kubectl', ['--kubeconfig', kube.kubeconfigPath, …])
 *   kube.faults.set({ imagePull: 'nosuch' });
 *   await kube.close();                           // every sandbox removed, every file gone
 *
 * Auth: the kubeconfig's user has a bearer token, and a request with a wrong token, or another scheme, is a 401.
 * kubectl sends no credentials at all over plain http (client-go gives them only to TLS transports:
 * rest.IsConfigTransportTLS, "use to determine when to send credentials over the wire"), while client-node sends
 * the token over http too; so a request with no Authorization header is let in unless `requireToken` is set, which
 * only client libraries can then pass. `requests` records what each request carried.
 */

import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import type { NetworkMode } from '../../../src/session/model.js';
import { Buckets } from '../buckets.js';
import { type ApiCall, handleApi } from './api.js';
import {
  apiGroupList,
  apiVersions,
  coreV1Resources,
  openapiV3CoreV1,
  openapiV3Root,
  SERVER_VERSION,
} from './discovery.js';
import { EXEC_SUBPROTOCOLS, handleExec, refuse } from './exec.js';
import { type FaultSpec, Faults } from './faults.js';
import { Kubelet } from './kubelet.js';
import { type Namespace, Store } from './objects.js';
import { idBudget } from './pods.js';
import { handlePortForward, PORT_FORWARD_SUBPROTOCOLS } from './portforward.js';
import { decodeProtobuf, PROTOBUF } from './protobuf.js';
import { ApiError, badRequest, noRoute, type Status, tooLarge, unauthorized } from './status.js';
import { prepareNamespace } from './validate.js';

export const CONTEXT = 'onmemos-fake';
const DEFAULT_MAX_BODY = 1 << 20;
/** The namespaces every cluster starts with. */
const INITIAL_NAMESPACES = ['default', 'kube-system', 'kube-public', 'kube-node-lease'];

export interface KubeFakeOptions {
  /** Default 0 (any free port). Always 127.0.0.1. */
  port?: number;
  /** The bearer token in the kubeconfig (default: random). */
  token?: string;
  /** Refuse requests with no Authorization header (401). kubectl over http cannot then get in (see above). */
  requireToken?: boolean;
  faults?: FaultSpec;
  /** The pods' network (default outbound, as a pod has: slirp4netns, the host's loopback out of reach). */
  network?: NetworkMode;
  /** More namespaces to start with. */
  namespaces?: string[];
  /**
   * The Cloud Storage buckets there are (each a directory, `{dir}/buckets/NAME`), which pods mount with the GCS
   * FUSE CSI driver; a pod naming another stays ContainerCreating (FailedMount). Default none; `buckets.add` makes
   * more.
   */
  buckets?: string[];
  /** A line per request (and the kubelet's notes); default none. */
  log?: (line: string) => void;
  /** Request bodies over this are refused with 413 (default 1 MiB). */
  maxBodyBytes?: number;
}

export interface RequestRecord {
  method: string;
  url: string;
  auth: 'bearer' | 'none' | 'refused';
  accept?: string;
  contentType?: string;
  /** The Upgrade header and the subprotocols offered, for exec. */
  upgrade?: string;
  protocols?: string;
  status?: number;
}

export interface KubeFake {
  url: string;
  port: number;
  token: string;
  kubeconfigPath: string;
  context: string;
  /** The fake's directory: the kubeconfig and the pods' local state. */
  dir: string;
  faults: Faults;
  store: Store;
  kubelet: Kubelet;
  /** The fake's Cloud Storage: `buckets.dir(name)` is a bucket's directory, `buckets.add(name)` makes one. */
  buckets: Buckets;
  /** The latest requests (at most 2000), oldest first. */
  requests: RequestRecord[];
  /** The local session a pod runs as, once its containers run. */
  sessionOf(namespace: string, pod: string): string | undefined;
  close(): Promise<void>;
}

export function kubeconfigYaml(url: string, token: string, namespace = 'default'): string {
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    `- name: ${CONTEXT}`,
    '  cluster:',
    `    server: ${url}`,
    // client-node refuses an http server without it; kubectl ignores it for http.
    '    insecure-skip-tls-verify: true',
    'users:',
    `- name: ${CONTEXT}`,
    '  user:',
    `    token: ${token}`,
    'contexts:',
    `- name: ${CONTEXT}`,
    '  context:',
    `    cluster: ${CONTEXT}`,
    `    user: ${CONTEXT}`,
    `    namespace: ${namespace}`,
    `current-context: ${CONTEXT}`,
    'preferences: {}',
    '',
  ].join('\n');
}

/**
 * The fake's directory: under the test run's directory (test/setup/tmp.ts) when that leaves the pods' socket paths
 * room for readable session ids (idBudget), else under the system's temporary directory.
 */
function fakeDir(): string {
  const run = process.env.ONMEMOS_TEST_TMP;
  const base = run && idBudget(join(run, 'k-XXXXXX', 's')) >= 16 ? run : tmpdir();
  return mkdtempSync(join(base, 'k-'));
}

export async function startKubeFake(opts: KubeFakeOptions = {}): Promise<KubeFake> {
  const log = opts.log ?? (() => {});
  const token = opts.token ?? randomBytes(24).toString('base64url');
  const maxBody = opts.maxBodyBytes ?? DEFAULT_MAX_BODY;
  const dir = fakeDir();
  const store = new Store();
  /** Kicks the kubelet (every pod tries again): after a change of faults, or a bucket made. */
  let kickPods = () => {};
  const faults = new Faults(opts.faults, () => kickPods());
  let buckets: Buckets;
  try {
    buckets = new Buckets(join(dir, 'buckets'), opts.buckets, () => kickPods());
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  const kubelet = new Kubelet(store, faults, {
    stateDir: join(dir, 's'),
    network: opts.network ?? 'outbound',
    buckets,
    log,
  });
  kickPods = () => kubelet.kickAll();
  for (const name of [...INITIAL_NAMESPACES, ...(opts.namespaces ?? [])]) {
    store.create('namespaces', prepareNamespace({ metadata: { name } } as Namespace));
  }
  const { WebSocketServer } = await import('ws');
  const wss = new WebSocketServer({
    noServer: true,
    perMessageDeflate: false,
    handleProtocols: (offered, req) =>
      (/\/portforward(\?|$)/.test(req.url ?? '') ? PORT_FORWARD_SUBPROTOCOLS : EXEC_SUBPROTOCOLS).find((p) =>
        offered.has(p),
      ) ?? false,
  });
  const requests: RequestRecord[] = [];
  const watches = new Set<() => void>();
  const background = new Set<Promise<unknown>>();
  const deps = { store, kubelet, watches, background };
  let address = '';

  const record = (req: IncomingMessage, auth: RequestRecord['auth']): RequestRecord => {
    const r: RequestRecord = { method: req.method ?? 'GET', url: req.url ?? '/', auth };
    if (req.headers.accept) r.accept = req.headers.accept;
    if (req.headers['content-type']) r.contentType = req.headers['content-type'];
    if (req.headers.upgrade) r.upgrade = req.headers.upgrade;
    if (req.headers['sec-websocket-protocol']) r.protocols = req.headers['sec-websocket-protocol'];
    requests.push(r);
    if (requests.length > 2000) requests.splice(0, 1000);
    return r;
  };
  const authOf = (req: IncomingMessage): RequestRecord['auth'] => {
    const h = req.headers.authorization;
    if (h === undefined) return opts.requireToken ? 'refused' : 'none';
    return h === `Bearer ${token}` ? 'bearer' : 'refused';
  };
  /** Latency, auth and injected API errors: what every request goes through first. */
  const admit = async (req: IncomingMessage): Promise<{ rec: RequestRecord; refusal?: Status }> => {
    const latency = faults.current.latencyMs ?? 0;
    if (latency > 0) await new Promise((r) => setTimeout(r, latency));
    const rec = record(req, authOf(req));
    if (rec.auth === 'refused') return { rec, refusal: unauthorized().status };
    const injected = faults.apiError(rec.method, new URL(rec.url, 'http://x').pathname);
    return injected ? { rec, refusal: injected } : { rec };
  };

  const send = (res: ServerResponse, code: number, body: unknown) => {
    if (res.headersSent) return void res.end();
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    const headers: Record<string, string | number> = {
      'Content-Type': typeof body === 'string' ? 'text/plain' : 'application/json',
      'Content-Length': Buffer.byteLength(text),
      'Cache-Control': 'no-cache, private',
    };
    if (code === 429) headers['Retry-After'] = 1;
    res.writeHead(code, headers);
    res.end(text);
  };

  const readBody = (req: IncomingMessage): (() => Promise<unknown>) => {
    let parsed: Promise<unknown> | undefined;
    return () =>
      (parsed ??= new Promise((resolve, reject) => {
        const declared = Number(req.headers['content-length'] ?? 0);
        if (declared > maxBody) return reject(tooLarge());
        const chunks: Buffer[] = [];
        let size = 0;
        req.on('data', (d: Buffer) => {
          size += d.length;
          if (size > maxBody) {
            req.pause();
            reject(tooLarge());
          } else chunks.push(d);
        });
        req.on('error', reject);
        req.on('end', () => {
          const raw = Buffer.concat(chunks);
          try {
            if ((req.headers['content-type'] ?? '').startsWith(PROTOBUF)) return resolve(decodeProtobuf(raw));
            const text = raw.toString('utf8');
            if (text.trim() === '') return resolve(undefined);
            resolve(JSON.parse(text));
          } catch (e) {
            if (e instanceof ApiError) return reject(e);
            reject(badRequest(`couldn't get version/kind; json parse error: ${(e as Error).message}`));
          }
        });
      }));
  };

  const server = createServer(async (req, res) => {
    let rec: RequestRecord | undefined;
    res.once('finish', () => {
      if (rec) rec.status = res.statusCode;
      if (rec) log(`${rec.method} ${rec.url} ${rec.auth} -> ${res.statusCode}`);
    });
    try {
      const admitted = await admit(req);
      rec = admitted.rec;
      if (admitted.refusal) return send(res, admitted.refusal.code, admitted.refusal);
      const url = new URL(req.url ?? '/', 'http://x');
      const path = url.pathname;
      const method = req.method ?? 'GET';
      if (method === 'GET' && path === '/version') return send(res, 200, SERVER_VERSION);
      if (method === 'GET' && path === '/api') return send(res, 200, apiVersions(address));
      if (method === 'GET' && path === '/apis') return send(res, 200, apiGroupList());
      if (method === 'GET' && path === '/api/v1') return send(res, 200, coreV1Resources());
      if (method === 'GET' && path === '/openapi/v3') return send(res, 200, openapiV3Root());
      if (method === 'GET' && path === '/openapi/v3/api/v1') return send(res, 200, openapiV3CoreV1());
      if (method === 'GET' && ['/healthz', '/livez', '/readyz'].includes(path)) return send(res, 200, 'ok');
      // The kubelet's events (FailedMount): what kubectl describe shows under Events.
      const events = /^\/api\/v1\/(?:namespaces\/([^/]+)\/)?events$/.exec(path);
      if (method === 'GET' && events) {
        const ns = events[1] === undefined ? undefined : decodeURIComponent(events[1]);
        return send(res, 200, {
          kind: 'EventList',
          apiVersion: 'v1',
          metadata: { resourceVersion: store.version() },
          items: kubelet.events.list(ns, url.searchParams.get('fieldSelector')),
        });
      }
      if (!path.startsWith('/api/v1/')) throw noRoute();
      const call: ApiCall = {
        method,
        path,
        query: url.searchParams,
        accept: req.headers.accept,
        contentType: req.headers['content-type'] ?? 'application/json',
        body: readBody(req),
      };
      const reply = await handleApi(deps, call, req, res);
      if (reply !== 'streaming') send(res, reply.code, reply.body);
    } catch (e) {
      const status = e instanceof ApiError ? e.status : undefined;
      if (!status) log(`error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      const s =
        status ??
        new ApiError({
          kind: 'Status',
          apiVersion: 'v1',
          metadata: {},
          status: 'Failure',
          message: 'Internal error occurred: the fake failed',
          reason: 'InternalError',
          code: 500,
        }).status;
      if (s.code === 413) res.setHeader('Connection', 'close');
      send(res, s.code, s);
    }
  });

  const sockets = new Set<Duplex>();
  server.on('upgrade', async (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    const { rec, refusal } = await admit(req);
    const done = (code: number) => {
      rec.status = code;
      log(`${rec.method} ${rec.url} ${rec.auth} upgrade ${rec.upgrade} [${rec.protocols ?? ''}] -> ${code}`);
    };
    if (refusal) return done(refuse(socket, refusal.code, JSON.stringify(refusal)));
    const url = new URL(req.url ?? '/', 'http://x');
    const m = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)\/(exec|portforward)$/.exec(url.pathname);
    if (!m || !['GET', 'POST'].includes(req.method ?? ''))
      return done(refuse(socket, 404, JSON.stringify(noRoute().status)));
    let ns: string;
    let pod: string;
    try {
      ns = decodeURIComponent(m[1]!);
      pod = decodeURIComponent(m[2]!);
    } catch {
      done(400);
      return refuse(socket, 400, JSON.stringify(badRequest('invalid path').status));
    }
    if (m[3] === 'portforward') {
      return done(handlePortForward({ store, kubelet, wss, log }, req, socket, head, ns, pod, url.searchParams));
    }
    done(handleExec({ store, kubelet, faults, wss, log }, req, socket, head, ns, pod, url.searchParams));
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as { port: number }).port;
  address = `127.0.0.1:${port}`;
  const url = `http://127.0.0.1:${port}`;
  const kubeconfigPath = join(dir, 'kubeconfig');
  writeFileSync(kubeconfigPath, kubeconfigYaml(url, token), { mode: 0o600 });

  let closing: Promise<void> | undefined;
  return {
    url,
    port,
    token,
    kubeconfigPath,
    context: CONTEXT,
    dir,
    faults,
    store,
    kubelet,
    buckets,
    requests,
    sessionOf(namespace, pod) {
      const p = store.get('pods', namespace, pod);
      return p ? kubelet.sessionOf(p) : undefined;
    },
    close() {
      closing ??= (async () => {
        const stopped = new Promise<void>((r) => server.close(() => r()));
        for (const stop of [...watches]) stop();
        for (const ws of wss.clients) ws.terminate();
        for (const s of sockets) s.destroy();
        server.closeAllConnections();
        await stopped;
        await kubelet.close();
        await Promise.allSettled([...background]);
        wss.close();
        rmSync(dir, { recursive: true, force: true });
      })();
      return closing;
    },
  };
}
