/**
 * A Cloud Run Admin API v2 fake that the real `@google-cloud/run` clients use unchanged over their REST fallback
 * (and gcloud over v1 for what it reads): plain HTTP on 127.0.0.1, Google's JSON errors, a bearer token required on
 * every request as Google's front end requires one, long-running operations, services whose revisions really run
 * their container (in practice `onmemos agent`) in a local sandbox behind a front end at `uri`, jobs whose tasks
 * really run, and faults a test can switch on.
 *
 *   const run = await startCloudRunFake();       // port 0, its own state directory
 *   new ServicesClient({ apiEndpoint: '127.0.0.1', port: run.port, protocol: 'http', fallback: true, authClient })
 *   run.faults.set({ neverListen: 'svc' });
 *   await run.close();                            // every sandbox removed, every file gone
 *
 * Files: api.ts (routes), services.ts + revisions.ts + frontend.ts (services), jobs.ts + executions.ts (jobs),
 * operations.ts, iam.ts, knative.ts (v1 for gcloud), runtime.ts + image.ts (containers in sandboxes), faults.ts,
 * errors.ts.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NetworkMode } from '../../../src/session/model.js';
import { Buckets } from '../buckets.js';
import { handleApi, methodOf } from './api.js';
import { badCredentials, credentialsMissing, GoogleApiError, invalidArgument } from './errors.js';
import { type FaultSpec, Faults } from './faults.js';
import { type FrontRequest, mintIdToken } from './frontend.js';
import { Policies } from './iam.js';
import { agentRoot, OnmemosImage } from './image.js';
import { Jobs } from './jobs.js';
import { Operations } from './operations.js';
import type { Json } from './resources.js';
import { type ImageDefaults, ONMEMOS_IMAGE } from './revisions.js';
import { type ContainerRuntime, SandboxRuntime } from './runtime.js';
import { Services } from './services.js';

export interface CloudRunFakeOptions {
  /** Default 0 (any free port). Always 127.0.0.1. */
  port?: number;
  /** The access token the fake accepts (default: random). */
  token?: string;
  /** The project and region the printed settings name (any project and location work). */
  project?: string;
  region?: string;
  projectNumber?: string;
  /** Who the caller is (creator, lastModifier). */
  account?: string;
  faults?: FaultSpec;
  /**
   * The network of each service instance and job task, each its own as on Cloud Run (default outbound; isolated:
   * loopback only). Never the host's: the front end reaches an instance's port through its sandbox.
   */
  network?: NetworkMode;
  /** How long a revision's container has to listen on $PORT (default 30 s; Cloud Run's default probe allows 240 s). */
  startupTimeoutMs?: number;
  /** Scale to zero: stop an instance of a service without minimum instances after this long idle (default off). */
  scaleToZeroAfterMs?: number;
  /**
   * Request-based CPU: freeze an instance whose revision has `cpuIdle` (the default) while it serves no request, as
   * Cloud Run takes its CPU away (default off; `cpuIdle: false`, instance-based CPU, is never frozen).
   */
  freezeIdle?: boolean;
  /** What an image runs when a container names no command (default: `onmemos agent`, for every image). */
  images?: (image: string) => ImageDefaults;
  /** A package root with bin/onmemos.js and dist/cloud-agent.cjs (default ONMEMOS_FAKE_AGENT_ROOT, else this one). */
  agentRoot?: string;
  /** Runs containers (default: local sandboxes). */
  runtime?: ContainerRuntime;
  /** A line per request, and the containers' output; default none. */
  log?: (line: string) => void;
  /** Request bodies over this are refused (default 4 MiB). */
  maxBodyBytes?: number;
  /**
   * The Cloud Storage buckets there are (each a directory, `{dir}/buckets/NAME`), which `gcs` volumes mount; a
   * revision naming another fails. Default none; `buckets.add` makes more.
   */
  buckets?: string[];
}

export interface RequestRecord {
  method: string;
  url: string;
  auth: 'bearer' | 'none' | 'refused';
  userAgent?: string;
  apiClient?: string;
  status?: number;
}

export interface CloudRunFake {
  url: string;
  port: number;
  token: string;
  /** A 0600 file holding the token (for CLOUDSDK_AUTH_ACCESS_TOKEN_FILE), in the fake's 0700 directory. */
  tokenFile: string;
  project: string;
  region: string;
  /** The variables that point gcloud (and onmemos) at the fake, and keep gcloud from asking anything else. */
  env: Record<string, string>;
  dir: string;
  faults: Faults;
  services: Services;
  jobs: Jobs;
  operations: Operations;
  runtime: ContainerRuntime;
  image: OnmemosImage;
  /** The fake's Cloud Storage: `buckets.dir(name)` is a bucket's directory, `buckets.add(name)` makes one. */
  buckets: Buckets;
  /** The latest API requests (at most 2000), oldest first. */
  requests: RequestRecord[];
  /** The latest requests to services' front ends (at most 2000). */
  serviceRequests: FrontRequest[];
  /** An (unsigned) ID token for `audience`, which the front ends accept. */
  idToken(audience: string): string;
  close(): Promise<void>;
}

/**
 * A script that prints an ID token for $AUDIENCE which the front ends accept (the fake's `idToken`): what
 * ONMEMOS_ID_TOKEN_COMMAND runs, so that onmemos (and anyone with curl) can call a service's uri.
 */
function mintScript(dir: string, account: string): string {
  const file = join(dir, 'mint-id-token.mjs');
  writeFileSync(
    file,
    `const b = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
const iat = Math.floor(Date.now() / 1000);
const aud = process.env.AUDIENCE;
if (!aud) { process.stderr.write('AUDIENCE is not set\\n'); process.exit(2); }
const claims = { iss: 'https://accounts.google.com', aud, sub: '1', email: ${JSON.stringify(account)}, iat, exp: iat + 3600 };
process.stdout.write(\`\${b({ alg: 'RS256', typ: 'JWT', kid: 'onmemos-fake' })}.\${b(claims)}.\${Buffer.from('unsigned').toString('base64url')}\\n\`);
`,
    { mode: 0o600 },
  );
  return file;
}

/** Characters the local sessions' namespace and user have together, for their socket paths (107 bytes). */
function idBudget(stateDir: string): number {
  return 107 - stateDir.length - '/local/sessions/'.length - 'ws---0123456789-abcd'.length - '/agent.sock.'.length - 7;
}

/** Under the test run's directory when its paths leave room for readable session ids, else the system's. */
function fakeDir(): string {
  const run = process.env.ONMEMOS_TEST_TMP;
  const base = run && idBudget(join(run, 'r-XXXXXX', 's')) >= 16 ? run : tmpdir();
  const dir = mkdtempSync(join(base, 'r-'));
  chmodSync(dir, 0o700);
  return dir;
}

export async function startCloudRunFake(opts: CloudRunFakeOptions = {}): Promise<CloudRunFake> {
  const log = opts.log ?? (() => {});
  const token = opts.token ?? `ya29.fake-${randomBytes(24).toString('base64url')}`;
  const project = opts.project ?? 'onmemos-fake';
  const region = opts.region ?? 'us-central1';
  const projectNumber = opts.projectNumber ?? '123456789012';
  const account = opts.account ?? 'tester@example.com';
  const maxBody = opts.maxBodyBytes ?? 4 << 20;
  const network = opts.network ?? 'outbound';
  if (network === 'host') throw new Error('the Cloud Run fake gives each instance and task a network of its own');
  const dir = fakeDir();
  const stateDir = join(dir, 's');
  const faults = new Faults(opts.faults);
  let buckets: Buckets;
  try {
    buckets = new Buckets(join(dir, 'buckets'), opts.buckets);
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  const image = new OnmemosImage(opts.agentRoot ?? agentRoot(), join(dir, 'image'));
  const runtime = opts.runtime ?? new SandboxRuntime({ stateDir, image, log, idBudget: idBudget(stateDir) });
  const images = opts.images ?? (() => ONMEMOS_IMAGE);
  const operations = new Operations();
  const policies = new Policies();
  const requests: RequestRecord[] = [];
  const serviceRequests: FrontRequest[] = [];
  let url = '';
  const services = new Services({
    ops: operations,
    policies,
    faults,
    account,
    projectNumber,
    host: {
      runtime,
      faults,
      images,
      startupTimeoutMs: opts.startupTimeoutMs ?? 30_000,
      network,
      buckets,
      idleMs: opts.scaleToZeroAfterMs,
      freezeIdle: opts.freezeIdle,
      log,
    },
    onFrontRequest: (r) => {
      serviceRequests.push(r);
      if (serviceRequests.length > 2000) serviceRequests.splice(0, 1000);
      log(`front end ${r.service}: ${r.method} ${r.url.split('?')[0]} ${r.auth}`);
    },
  });
  const jobs = new Jobs({
    ops: operations,
    faults,
    account,
    projectNumber,
    execution: { runtime, faults, images, network, buckets, log },
    logBase: () => `${url}/logs`,
  });
  const deps = { services, jobs, ops: operations, policies, projectNumber };

  const send = (res: ServerResponse, code: number, body: unknown, text = false) => {
    if (res.headersSent) return void res.end();
    const data = text ? String(body) : JSON.stringify(body);
    res.writeHead(code, {
      'content-type': text ? 'text/plain; charset=utf-8' : 'application/json; charset=UTF-8',
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
    const gone = new AbortController();
    res.once('close', () => gone.abort());
    try {
      const latency = faults.current.latencyMs ?? 0;
      if (latency > 0) await new Promise((r) => setTimeout(r, latency));
      const rpc = methodOf(method, u.pathname) ?? 'google.cloud.run.v2.Unknown';
      if (rec.auth === 'none') throw credentialsMissing(rpc);
      if (rec.auth === 'refused') throw badCredentials(rpc);
      const injected = faults.apiError(method, u.pathname);
      if (injected) throw injected;
      const reply = await handleApi(deps, {
        method,
        path: u.pathname,
        query: u.searchParams,
        host: req.headers.host,
        body: readBody(req),
        signal: gone.signal,
      });
      send(res, reply.code, reply.body, reply.text === true);
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
  url = `http://127.0.0.1:${port}`;
  const tokenFile = join(dir, 'access-token');
  writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });

  let closing: Promise<void> | undefined;
  return {
    url,
    port,
    token,
    tokenFile,
    project,
    region,
    env: {
      CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN: `${url}/`,
      CLOUDSDK_AUTH_ACCESS_TOKEN_FILE: tokenFile,
      CLOUDSDK_CORE_PROJECT: project,
      PROJECT_ID: project,
      REGION: region,
      // Without these two gcloud looks up metadata.google.internal (is this a GCE VM?) before each command.
      CLOUDSDK_CORE_CHECK_GCE_METADATA: 'false',
      CLOUDSDK_METRICS_ENVIRONMENT: 'onmemos-fake',
      // onmemos' own: ID tokens for a service's uri (an exec through the agent), as the front ends accept them.
      ONMEMOS_ID_TOKEN_COMMAND: `'${process.execPath}' '${mintScript(dir, account)}'`,
    },
    dir,
    faults,
    services,
    jobs,
    operations,
    runtime,
    image,
    buckets,
    requests,
    serviceRequests,
    idToken: (audience) => mintIdToken(audience, account),
    close() {
      closing ??= (async () => {
        const stopped = new Promise<void>((r) => server.close(() => r()));
        operations.wakeAll();
        server.closeAllConnections();
        await stopped;
        await services.close();
        await jobs.close();
        await runtime.close();
        rmSync(dir, { recursive: true, force: true });
      })();
      return closing;
    },
  };
}
