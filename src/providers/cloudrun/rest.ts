/**
 * The hot path to the Cloud Run Admin API, without @google-cloud/run: loading that client (google-gax, protobufjs,
 * the API's protos) is ~200 ms, and building it and making its first call as much again, more than everything else
 * an `onmemos exec` on cloud_run does. A command on one session needs one GET of its service (its uri, its
 * secret's nonce, its status): `GET {endpoint}/v2/{name}` with the caller's access token, the REST call the client
 * makes itself. The token is the file's (CLOUDSDK_AUTH_ACCESS_TOKEN_FILE), read once; else Application Default
 * Credentials through google-auth-library alone (~30 ms to load, and the ID token for the agent loads it anyway).
 * Everything else (create, list, delete, extend, operations) stays with the client (cloudrun.ts).
 *
 * As the client does for GetService (its client config): an UNAVAILABLE answer is asked again after 1 s, then
 * 1.3 times longer each time, and the whole call, retries included, has 10 s. A refusal rejects with
 * CloudRunApiError, whose `code` is the gRPC code the body's `status` names, as google-gax reports it (else the
 * HTTP status), and whose message is Google's; a socket's failure with the socket's error (a string `code`).
 */
import { readFileSync } from 'node:fs';
import type { CloudRunConfig } from './config.js';
import type { ServiceLike } from './service.js';

/** GetService's own timeout in @google-cloud/run's client config, retries included. */
export const GET_TIMEOUT_MS = 10_000;
const FIRST_RETRY_MS = 1_000;
const RETRY_MULTIPLIER = 1.3;
const MAX_BODY = 4 << 20;

/** google.rpc.Code by name: what a Google JSON error's `status` says. */
const RPC_CODES: Record<string, number> = {
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
};

/** A refusal of the API: `{"error": {"code", "message", "status"}}`. */
export class CloudRunApiError extends Error {
  constructor(
    /** The gRPC code of the body's `status` (as google-gax reports it), else the HTTP status. */
    readonly code: number,
    message: string,
    readonly httpStatus: number,
  ) {
    super(message);
    this.name = 'CloudRunApiError';
  }
}

/** The API's base URL: the override's (gcloud's CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN), else the regional endpoint. */
export function apiBase(c: CloudRunConfig): string {
  const e = c.endpoint;
  return e ? `${e.protocol}://${e.host}:${e.port}` : `https://${c.region}-run.googleapis.com`;
}

type AuthHeaders = () => Promise<Record<string, string>>;

/** Request headers with the caller's access token: the token file's, else Application Default Credentials'. */
export function accessHeaders(c: CloudRunConfig): AuthHeaders {
  if (c.tokenFile) {
    const file = c.tokenFile;
    let token: string | undefined;
    return async () => {
      token ??= readFileSync(file, 'utf8').trim();
      return { authorization: `Bearer ${token}` };
    };
  }
  let auth: Promise<{ getRequestHeaders(url?: string): Promise<Headers> }> | undefined;
  return async () => {
    // With the project given, GoogleAuth does not look for one: without it, every first use runs `gcloud config
    // config-helper` (where gcloud is installed: ~0.8 s here) and asks the metadata server.
    auth ??= import('google-auth-library').then(
      (gal) => new gal.GoogleAuth({ scopes: ['https://www.googleapis.com/auth/cloud-platform'], projectId: c.project }),
    );
    // GoogleAuth keeps the token and refreshes it when it expires.
    const headers = await (await auth).getRequestHeaders();
    const out: Record<string, string> = {};
    headers.forEach((v, k) => {
      out[k] = v;
    });
    return out;
  };
}

export interface RestOptions {
  /** The whole call, retries included (default GET_TIMEOUT_MS). */
  timeoutMs?: number;
}

/** GET of one service by its full name (`projects/p/locations/l/services/s`). */
export async function getService(
  base: string,
  headers: AuthHeaders,
  name: string,
  o: RestOptions = {},
): Promise<ServiceLike> {
  const total = o.timeoutMs ?? GET_TIMEOUT_MS;
  const deadline = Date.now() + total;
  const url = `${base}/v2/${name}`;
  let delay = FIRST_RETRY_MS;
  for (;;) {
    try {
      const h = await beforeDeadline(headers(), deadline, total);
      return (await getJson(url, h, deadline, total)) as ServiceLike;
    } catch (e) {
      // UNAVAILABLE is asked again while there is time for it; anything else is the answer.
      if (!(e instanceof CloudRunApiError) || e.code !== RPC_CODES.UNAVAILABLE) throw e;
      if (Date.now() + delay >= deadline) throw e;
      await new Promise((r) => setTimeout(r, delay));
      delay *= RETRY_MULTIPLIER;
    }
  }
}

function timedOut(ms: number): Error {
  return Object.assign(new Error(`no answer within ${Math.round(ms / 100) / 10} s`), { code: 'ETIMEDOUT' });
}

/** `p`, or ETIMEDOUT once the deadline passes (getting a token from the metadata server, say). */
function beforeDeadline<T>(p: Promise<T>, deadline: number, total: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(timedOut(total)), Math.max(1, deadline - Date.now()));
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** One GET, its JSON body; a non-2xx answer rejects with CloudRunApiError, no answer in time with ETIMEDOUT. */
async function getJson(
  url: string,
  headers: Record<string, string>,
  deadline: number,
  total: number,
): Promise<unknown> {
  const u = new URL(url);
  const { request } = u.protocol === 'https:' ? await import('node:https') : await import('node:http');
  return new Promise((resolve, reject) => {
    const req = request(u, {
      method: 'GET',
      headers: { ...headers, accept: 'application/json', 'user-agent': 'onmemos' },
    });
    const timer = setTimeout(() => req.destroy(timedOut(total)), Math.max(1, deadline - Date.now()));
    req.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (d: Buffer) => {
        size += d.length;
        if (size > MAX_BODY) req.destroy(new Error(`the API sent more than ${MAX_BODY >> 20} MiB`));
        else chunks.push(d);
      });
      res.on('error', () => {}); // req's error says it
      res.on('end', () => {
        clearTimeout(timer);
        const status = res.statusCode ?? 0;
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown;
        try {
          body = JSON.parse(text);
        } catch {
          body = undefined;
        }
        if (status >= 200 && status < 300 && body && typeof body === 'object') return resolve(body);
        if (status >= 200 && status < 300) return reject(new Error(`the API answered ${status} without a JSON object`));
        const err = (body as { error?: { code?: unknown; message?: unknown; status?: unknown } } | undefined)?.error;
        const named = typeof err?.status === 'string' ? RPC_CODES[err.status] : undefined;
        const message =
          typeof err?.message === 'string' && err.message
            ? err.message
            : `HTTP ${status}${text.trim() ? `: ${text.trim().replace(/\s+/g, ' ').slice(0, 200)}` : ''}`;
        reject(new CloudRunApiError(named ?? status, message, status));
      });
    });
    req.end();
  });
}
