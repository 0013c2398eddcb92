/**
 * A Cloud Workstations API v1 (and v1beta) fake for the real clients over REST (`@google-cloud/workstations`'
 * fallback, gcloud 528): plain HTTP on 127.0.0.1, Google's JSON errors, a bearer token required on every request,
 * one cluster and one config, workstations whose start and stop are long-running operations with Cloud
 * Workstations' states, and, for each workstation, a `host` that is a local TLS endpoint serving the TCP tunnel
 * (`wss://{host}/_workstation/tcp/{port}` with an access token from generateAccessToken) to a real sshd running in
 * a local sandbox, in a network of its own, while the workstation runs.
 *
 *   const ws = await startWorkstationsFake({ authorizedKeys: [publicKey] });
 *   fetch(`${ws.url}/v1/${ws.configName}/workstations?workstationId=w1`, { method: 'POST', headers: bearer, body: '{}' })
 *   ws.workstations.get('w1')?.state;            // STATE_STOPPED → (start) → STATE_STARTING → STATE_RUNNING
 *   await ws.close();                            // every sandbox removed, every file gone
 *
 * Files: api.ts (routes), workstations.ts (resources and states), operations.ts, tunnel.ts (the host endpoint and
 * access tokens), runtime.ts (sandbox + sshd), tls.ts (the CA), faults.ts, errors.ts; README.md says it all.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { handleApi, methodOf } from './api.js';
import { badCredentials, credentialsMissing, GoogleApiError, invalidArgument } from './errors.js';
import { type FaultSpec, Faults } from './faults.js';
import { type Json, Operations } from './operations.js';
import { WorkstationRuntime } from './runtime.js';
import { makeTls } from './tls.js';
import { AccessTokens, type TunnelRequest } from './tunnel.js';
import { Workstations, type WorkstationView } from './workstations.js';

export interface WorkstationsFakeOptions {
  /** Default 0 (any free port). Always 127.0.0.1. */
  port?: number;
  /** The API access token the fake accepts (default: random). */
  token?: string;
  project?: string;
  region?: string;
  cluster?: string;
  config?: string;
  faults?: FaultSpec;
  /** A line per request, and what sshd logs; default none. */
  log?: (line: string) => void;
  /** How long STATE_STARTING lasts at least (default 500 ms; the sandbox and sshd take ~0.3 s anyway). */
  startTimeMs?: number;
  /** Access tokens live at most this long, whatever was asked (for expiry tests; default: as asked). */
  accessTokenTtlCapSeconds?: number;
  /** Public keys (authorized_keys lines) every workstation's sshd accepts for `user`. */
  authorizedKeys?: string[];
  /**
   * Files of public keys, or directories whose `*.pub` files are (say `~/.ssh`), read again before each tunnel
   * connection to port 22, so a key made after the fake started counts. Default none.
   */
  authorizedKeyFiles?: string[];
  /** What `host` names: `127.0.0.1` (default) or `localhost`; the certificate is valid for both. */
  hostname?: '127.0.0.1' | 'localhost';
  /** The config's `disableTcpConnections` (default false); `fake.workstations.disableTcpConnections` changes it. */
  disableTcpConnections?: boolean;
  /** Each sandbox's disk (home, /workspace, /tmp), default 1 GiB. */
  diskBytes?: number;
  /**
   * Each workstation's network, a namespace of its own either way (never the host's): `outbound` (default; as a
   * pod of the kube fake: slirp4netns, the host's loopback out of reach) or `isolated` (loopback only).
   */
  network?: 'outbound' | 'isolated';
  /** Request bodies over this are refused (default 1 MiB). */
  maxBodyBytes?: number;
}

export interface RequestRecord {
  method: string;
  url: string;
  auth: 'bearer' | 'none' | 'refused';
  userAgent?: string;
  apiClient?: string;
  status?: number;
}

/** A test's access to the workstations: live views by id (or full name). */
export interface WorkstationsAccess {
  get(id: string): WorkstationView | undefined;
  list(): WorkstationView[];
  /** The config's disableTcpConnections (read and set). */
  disableTcpConnections: boolean;
}

export interface WorkstationsFake {
  url: string;
  port: number;
  token: string;
  /** A 0600 file holding the token (for CLOUDSDK_AUTH_ACCESS_TOKEN_FILE), in the fake's 0700 directory. */
  tokenFile: string;
  project: string;
  region: string;
  cluster: string;
  config: string;
  /** `projects/{p}/locations/{r}/workstationClusters/{c}/workstationConfigs/{cfg}`. */
  configName: string;
  /** The CA (PEM file) that signed every workstation host's certificate. */
  caFile: string;
  /** The variables that point gcloud (and onmemos) at the fake, and keep gcloud from asking anything else. */
  env: Record<string, string>;
  dir: string;
  faults: Faults;
  workstations: WorkstationsAccess;
  operations: Operations;
  runtime: WorkstationRuntime;
  /** The latest API requests (at most 2000), oldest first. */
  requests: RequestRecord[];
  /** The latest requests to workstation hosts (tunnel upgrades and others, at most 2000). */
  tunnelRequests: TunnelRequest[];
  /** Authorizes one more public key (an authorized_keys line) on every workstation, running ones included. */
  authorizeKey(line: string): void;
  close(): Promise<void>;
}

/** Characters the local sessions' namespace and user have together, for their socket paths (107 bytes). */
function idBudget(stateDir: string): number {
  return 107 - stateDir.length - '/local/sessions/'.length - 'ws---0123456789-abcd'.length - '/agent.sock.'.length - 7;
}

/** Under the test run's directory when its paths leave room for readable session ids, else the system's. */
function fakeDir(): string {
  const run = process.env.ONMEMOS_TEST_TMP;
  const base = run && idBudget(join(run, 'w-XXXXXX', 's')) >= 16 ? run : tmpdir();
  const dir = mkdtempSync(join(base, 'w-'));
  chmodSync(dir, 0o700);
  return dir;
}

/** The public key lines of a file, or of a directory's `*.pub` files (missing ones: none). */
function readKeys(path: string): string[] {
  let files: string[];
  try {
    files = statSync(path).isDirectory()
      ? readdirSync(path)
          .filter((f) => f.endsWith('.pub'))
          .sort()
          .map((f) => join(path, f))
      : [path];
  } catch {
    return [];
  }
  const lines: string[] = [];
  for (const f of files) {
    try {
      for (const l of readFileSync(f, 'utf8').split('\n'))
        if (/^(ssh-|ecdsa-|sk-)\S+ \S+/.test(l.trim())) lines.push(l.trim());
    } catch {}
  }
  return lines;
}

export async function startWorkstationsFake(opts: WorkstationsFakeOptions = {}): Promise<WorkstationsFake> {
  const log = opts.log ?? (() => {});
  const token = opts.token ?? `ya29.fake-${randomBytes(24).toString('base64url')}`;
  const project = opts.project ?? 'onmemos-fake';
  const region = opts.region ?? 'us-central1';
  const cluster = opts.cluster ?? 'onmemos-cluster';
  const config = opts.config ?? 'onmemos-config';
  const maxBody = opts.maxBodyBytes ?? 1 << 20;
  const dir = fakeDir();
  const stateDir = join(dir, 's');
  const homesDir = join(dir, 'homes');
  mkdirSync(homesDir, { mode: 0o700 });
  let closing: Promise<void> | undefined;
  try {
    const tls = await makeTls(dir);
    const faults = new Faults(opts.faults);
    const operations = new Operations();
    const tokens = new AccessTokens();
    const runtime = new WorkstationRuntime({
      stateDir,
      log,
      idBudget: idBudget(stateDir),
      diskBytes: opts.diskBytes,
      network: opts.network,
    });
    const requests: RequestRecord[] = [];
    const tunnelRequests: TunnelRequest[] = [];
    const extraKeys = [...(opts.authorizedKeys ?? [])];
    const authorizedKeys = () => {
      const all = [...extraKeys, ...(opts.authorizedKeyFiles ?? []).flatMap(readKeys)];
      return [...new Set(all.map((l) => l.trim()).filter(Boolean))].map((l) => `${l}\n`).join('');
    };
    const workstations = new Workstations({
      project,
      region,
      cluster,
      config,
      ops: operations,
      faults,
      runtime,
      tokens,
      tls,
      homesDir,
      hostname: opts.hostname ?? '127.0.0.1',
      startTimeMs: opts.startTimeMs ?? 500,
      disableTcpConnections: opts.disableTcpConnections ?? false,
      authorizedKeys,
      onTunnelRequest: (r) => {
        tunnelRequests.push(r);
        if (tunnelRequests.length > 2000) tunnelRequests.splice(0, 1000);
        log(
          `host ${r.workstation.split('/').pop()}: ${r.upgrade ? `tunnel to ${r.port}` : 'http'} ${r.auth} -> ${r.status}`,
        );
      },
      log,
    });
    const deps = { workstations, ops: operations, accessTokenTtlCapSeconds: opts.accessTokenTtlCapSeconds };

    const send = (res: ServerResponse, code: number, body: unknown) => {
      if (res.headersSent) return void res.end();
      const data = JSON.stringify(body);
      res.writeHead(code, {
        'content-type': 'application/json; charset=UTF-8',
        'content-length': Buffer.byteLength(data),
        vary: 'Origin, X-Origin, Referer',
      });
      res.end(data);
    };

    const readBody = (req: IncomingMessage) => {
      let parsed: Promise<Json | undefined> | undefined;
      return () =>
        (parsed ??= new Promise((resolve, reject) => {
          const chunks: Buffer[] = [];
          let size = 0;
          req.on('data', (d: Buffer) => {
            size += d.length;
            if (size > maxBody) {
              req.pause();
              reject(invalidArgument(`Request payload size exceeds the limit: ${maxBody} bytes.`));
            } else chunks.push(d);
          });
          req.on('error', reject);
          req.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            if (text.trim() === '') return resolve(undefined);
            try {
              const v = JSON.parse(text);
              if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('not an object');
              resolve(v);
            } catch (e) {
              reject(invalidArgument(`Invalid JSON payload received. ${(e as Error).message}`));
            }
          });
        }));
    };

    const server = createServer(async (req, res) => {
      const method = req.method ?? 'GET';
      const u = new URL(req.url ?? '/', 'http://x');
      const h = req.headers.authorization;
      const rec: RequestRecord = {
        method,
        url: req.url ?? '/',
        auth: h === undefined ? 'none' : h === `Bearer ${token}` ? 'bearer' : 'refused',
        ...(req.headers['user-agent'] ? { userAgent: req.headers['user-agent'] } : {}),
        ...(req.headers['x-goog-api-client'] ? { apiClient: String(req.headers['x-goog-api-client']) } : {}),
      };
      requests.push(rec);
      if (requests.length > 2000) requests.splice(0, 1000);
      res.once('finish', () => {
        rec.status = res.statusCode;
        log(`${method} ${rec.url} ${rec.auth} -> ${res.statusCode}`);
      });
      try {
        const latency = faults.current.latencyMs ?? 0;
        if (latency > 0) await new Promise((r) => setTimeout(r, latency));
        const rpc = methodOf(method, u.pathname) ?? 'google.cloud.workstations.v1.Workstations.Unknown';
        if (rec.auth === 'none') throw credentialsMissing(rpc);
        if (rec.auth === 'refused') throw badCredentials(rpc);
        const injected = faults.apiError(method, u.pathname);
        if (injected) throw injected;
        const reply = await handleApi(deps, { method, path: u.pathname, query: u.searchParams, body: readBody(req) });
        send(res, reply.code, reply.body);
      } catch (e) {
        if (e instanceof GoogleApiError) return send(res, e.httpCode, e.body());
        log(`error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
        send(res, 500, new GoogleApiError('INTERNAL', 'Internal error encountered.').body());
      }
    });
    server.on('clientError', (_e, socket) => socket.destroy());

    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(opts.port ?? 0, '127.0.0.1', () => resolve());
    });
    const port = (server.address() as { port: number }).port;
    const url = `http://127.0.0.1:${port}`;
    const tokenFile = join(dir, 'access-token');
    writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });

    const access: WorkstationsAccess = {
      get: (id) => workstations.view(id),
      list: () => workstations.views(),
      get disableTcpConnections() {
        return workstations.disableTcpConnections;
      },
      set disableTcpConnections(v: boolean) {
        workstations.disableTcpConnections = v;
      },
    };

    return {
      url,
      port,
      token,
      tokenFile,
      project,
      region,
      cluster,
      config,
      configName: workstations.configName,
      caFile: tls.caFile,
      env: {
        CLOUDSDK_API_ENDPOINT_OVERRIDES_WORKSTATIONS: `${url}/`,
        CLOUDSDK_AUTH_ACCESS_TOKEN_FILE: tokenFile,
        CLOUDSDK_CORE_PROJECT: project,
        // gcloud's trust for the workstations' hosts (it replaces gcloud's CA bundle) and Node's (read at start).
        CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE: tls.caFile,
        NODE_EXTRA_CA_CERTS: tls.caFile,
        PROJECT_ID: project,
        WORKSTATIONS_REGION: region,
        WORKSTATIONS_CLUSTER: cluster,
        WORKSTATIONS_CONFIG: config,
        // gcloud's own properties for them: `gcloud workstations start-tcp-tunnel W 22` needs no more flags.
        CLOUDSDK_WORKSTATIONS_REGION: region,
        CLOUDSDK_WORKSTATIONS_CLUSTER: cluster,
        CLOUDSDK_WORKSTATIONS_CONFIG: config,
        // Without these two gcloud looks up metadata.google.internal (is this a GCE VM?) before each command.
        CLOUDSDK_CORE_CHECK_GCE_METADATA: 'false',
        CLOUDSDK_METRICS_ENVIRONMENT: 'onmemos-fake',
      },
      dir,
      faults,
      workstations: access,
      operations,
      runtime,
      requests,
      tunnelRequests,
      authorizeKey(line) {
        extraKeys.push(line);
      },
      close() {
        closing ??= (async () => {
          const stopped = new Promise<void>((r) => server.close(() => r()));
          operations.wakeAll();
          server.closeAllConnections();
          await stopped;
          await workstations.close();
          await runtime.close();
          rmSync(dir, { recursive: true, force: true });
        })();
        return closing;
      },
    };
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}
