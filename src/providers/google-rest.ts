/**
 * The hot path to Google's APIs, without their client libraries: loading one (google-gax, protobufjs, the API's
 * protos) is ~200 ms, and building it and making its first call as much again, more than everything else an
 * `onmemos exec` on a cloud session does. A command on one session needs a GET of its resource (a Cloud Run
 * service: its uri, secret nonce and status; a workstation: its host and state), and for a workstation's tunnel one
 * POST (generateAccessToken): the REST calls the clients make themselves, with the caller's access token. The token
 * is the file's (CLOUDSDK_AUTH_ACCESS_TOKEN_FILE), read once; else Application Default Credentials through
 * google-auth-library alone (~30 ms to load). Everything else (create, list, delete, operations) stays with the
 * clients.
 *
 * As the clients do for their reads (their client config): an UNAVAILABLE answer to a GET is asked again after
 * 1 s, then 1.3 times longer each time, and the whole call, retries included, has 10 s. A refusal rejects with
 * GoogleApiError, whose `code` is the gRPC code the body's `status` names, as google-gax reports it (else the HTTP
 * status), and whose message is Google's; a socket's failure with the socket's error (a string `code`).
 */
import { readFileSync } from 'node:fs';
import type { GoogleEndpoint } from './google.js';

/** A read's own timeout in the clients' config (GetService, GetWorkstation), retries included. */
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
export class GoogleApiError extends Error {
  constructor(
    /** The gRPC code of the body's `status` (as google-gax reports it), else the HTTP status. */
    readonly code: number,
    message: string,
    readonly httpStatus: number,
  ) {
    super(message);
    this.name = 'GoogleApiError';
  }
}

/** The API's base URL: gcloud's override's (CLOUDSDK_API_ENDPOINT_OVERRIDES_…), else `https://{defaultHost}`. */
export function apiBase(endpoint: GoogleEndpoint | undefined, defaultHost: string): string {
  return endpoint ? `${endpoint.protocol}://${endpoint.host}:${endpoint.port}` : `https://${defaultHost}`;
}

type AuthHeaders = () => Promise<Record<string, string>>;

/** Request headers with the caller's access token: the token file's, else Application Default Credentials'. */
export function accessHeaders(c: { tokenFile?: string; project: string }): AuthHeaders {
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

/**
 * One call: GET `{base}/{path}` (UNAVAILABLE asked again while there is time), or POST with a JSON body (never
 * repeated: the clients retry no POST either). The JSON object the API answers.
 */
export async function googleCall(
  base: string,
  headers: AuthHeaders,
  path: string,
  o: RestOptions & { body?: unknown } = {},
): Promise<Record<string, unknown>> {
  const total = o.timeoutMs ?? GET_TIMEOUT_MS;
  const deadline = Date.now() + total;
  const url = `${base}/${path}`;
  let delay = FIRST_RETRY_MS;
  for (;;) {
    try {
      const h = await beforeDeadline(headers(), deadline, total);
      return (await requestJson(url, h, o.body, deadline, total)) as Record<string, unknown>;
    } catch (e) {
      // UNAVAILABLE is asked again while there is time for it; anything else is the answer.
      if (o.body !== undefined || !(e instanceof GoogleApiError) || e.code !== RPC_CODES.UNAVAILABLE) throw e;
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

/** One GET (or POST of `body`), its JSON body; non-2xx rejects with GoogleApiError, no answer in time with ETIMEDOUT. */
async function requestJson(
  url: string,
  headers: Record<string, string>,
  body: unknown,
  deadline: number,
  total: number,
): Promise<unknown> {
  const u = new URL(url);
  const { request } = u.protocol === 'https:' ? await import('node:https') : await import('node:http');
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = request(u, {
      method: payload === undefined ? 'GET' : 'POST',
      headers: {
        ...headers,
        accept: 'application/json',
        'user-agent': 'onmemos',
        ...(payload === undefined ? {} : { 'content-type': 'application/json' }),
      },
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
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        if (status >= 200 && status < 300 && json && typeof json === 'object') return resolve(json);
        if (status >= 200 && status < 300) return reject(new Error(`the API answered ${status} without a JSON object`));
        const err = (json as { error?: { code?: unknown; message?: unknown; status?: unknown } } | undefined)?.error;
        const named = typeof err?.status === 'string' ? RPC_CODES[err.status] : undefined;
        const message =
          typeof err?.message === 'string' && err.message
            ? err.message
            : `HTTP ${status}${text.trim() ? `: ${text.trim().replace(/\s+/g, ' ').slice(0, 200)}` : ''}`;
        reject(new GoogleApiError(named ?? status, message, status));
      });
    });
    req.end(payload);
  });
}
