/**
 * What the Google Cloud providers (cloud_run, workstations) share: gcloud's endpoint override variables parsed
 * for a client (PROTOCOLS.md §5), the caller's credentials (a static token from CLOUDSDK_AUTH_ACCESS_TOKEN_FILE, else
 * Application Default Credentials), and an API error turned into onmemos' own, in one line.
 */
import { readFileSync } from 'node:fs';
import {
  ConflictError,
  InterruptedError,
  NotFoundError,
  OnmemosError,
  ProviderError,
  UnavailableError,
} from '../errors.js';
import { type Session, TEMPLATES, type Template } from '../session/model.js';

/**
 * The labels that carry a session on a Google resource (a Cloud Run service, a workstation): Google's label
 * values allow lowercase letters, digits, `-` and `_`, which namespaces, users and templates are.
 */
export const SESSION_LABEL = {
  managedBy: 'managed-by',
  namespace: 'onmemos-namespace',
  user: 'onmemos-user',
  template: 'onmemos-template',
} as const;

/** The annotations that carry the rest of a session on a Google resource (ids and times are not label values). */
export const SESSION_ANNOTATION = {
  session: 'onmemos.dev/session-id',
  created: 'onmemos.dev/created',
  ttl: 'onmemos.dev/ttl-minutes',
  expires: 'onmemos.dev/expires-at',
} as const;

/**
 * What a Google resource's labels and annotations say of the session it is: undefined for a resource that is not
 * an onmemos session, or whose name is not the one its session id gives (`expectedName`: a label copied onto
 * another resource).
 */
export function sessionLabels(
  r: { name?: string | null; labels?: Record<string, string> | null; annotations?: Record<string, string> | null },
  expectedName: (id: string) => string,
  now = Date.now(),
): Pick<Session, 'id' | 'namespace' | 'user' | 'template' | 'created_at' | 'expires_at'> | undefined {
  const l = r.labels ?? {};
  const a = r.annotations ?? {};
  const id = a[SESSION_ANNOTATION.session];
  const namespace = l[SESSION_LABEL.namespace];
  const user = l[SESSION_LABEL.user];
  if (l[SESSION_LABEL.managedBy] !== 'onmemos' || !id || !namespace || !user || !r.name) return undefined;
  if (expectedName(id) !== r.name.slice(r.name.lastIndexOf('/') + 1)) return undefined;
  const t = l[SESSION_LABEL.template] ?? '';
  const template = (TEMPLATES as readonly string[]).includes(t) ? (t as Template) : 'python';
  const created = a[SESSION_ANNOTATION.created] ?? new Date(now).toISOString();
  return { id, namespace, user, template, created_at: created, expires_at: a[SESSION_ANNOTATION.expires] ?? created };
}

export interface GoogleEndpoint {
  host: string;
  port: number;
  protocol: 'http' | 'https';
}

/** gcloud's override is a URL (`https://europe-west1-run.googleapis.com/`); a client wants host, port, protocol. */
export function parseEndpoint(variable: string, raw: string): GoogleEndpoint | string {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    return `${variable} is not a URL: ${JSON.stringify(raw.slice(0, 100))}`;
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    return `${variable} must be an http(s) URL, got ${u.protocol}`;
  }
  if (u.pathname !== '/' && u.pathname !== '') {
    return `${variable} must name a host, not a path (${u.pathname})`;
  }
  const protocol = u.protocol === 'http:' ? 'http' : 'https';
  return { host: u.hostname, port: u.port ? Number(u.port) : protocol === 'http' ? 80 : 443, protocol };
}

/** The client options that point a google-gax client at `endpoint` (else `defaultHost`) over its REST fallback. */
export function clientOptions(authClient: unknown, defaultHost: string, endpoint?: GoogleEndpoint) {
  return {
    fallback: true,
    authClient,
    ...(endpoint
      ? { apiEndpoint: endpoint.host, port: endpoint.port, protocol: endpoint.protocol }
      : { apiEndpoint: defaultHost }),
  };
}

/** What both an OAuth2Client (a static token) and GoogleAuth (ADC) give: request headers. */
export interface AuthLike {
  getRequestHeaders(url?: string): Promise<unknown>;
}

/**
 * The caller's credentials for a client: the token in CLOUDSDK_AUTH_ACCESS_TOKEN_FILE, else Application Default
 * Credentials (given the project: without it, GoogleAuth runs `gcloud config config-helper`, ~0.8 s, to find one).
 */
export async function googleCredentials(o: { tokenFile?: string; project: string }): Promise<AuthLike> {
  const gal = await import('google-auth-library');
  if (o.tokenFile) {
    const client = new gal.OAuth2Client();
    const token = readFileSync(o.tokenFile, 'utf8').trim();
    client.setCredentials({ access_token: token, expiry_date: Date.now() + 3600_000 });
    return client as unknown as AuthLike;
  }
  return new gal.GoogleAuth({
    scopes: ['https://www.googleapis.com/auth/cloud-platform'],
    projectId: o.project,
  }) as unknown as AuthLike;
}

/** gRPC codes the REST fallback reports (google-gax maps HTTP statuses onto them), and the HTTP ones. */
const NOT_FOUND = new Set([5, 404]);
const ALREADY_EXISTS = new Set([6, 409]);
const UNAVAILABLE = new Set([4, 13, 14, 500, 502, 503, 504]);

/**
 * An API error as an onmemos error that says what was being done: not found, conflict, unavailable (the service's
 * or the network's), or a refusal; the API's own message, on one line.
 */
export function googleError(where: string, what: string, e: unknown): OnmemosError {
  if (e instanceof OnmemosError) return e;
  const code = (e as { code?: unknown })?.code;
  const raw = e instanceof Error ? e.message : String(e);
  const message = raw.replace(/^\d+ [A-Z_]+: /, '').split('\n')[0];
  if (typeof code === 'number') {
    if (NOT_FOUND.has(code)) return new NotFoundError(`${what}: ${message}`);
    if (ALREADY_EXISTS.has(code)) return new ConflictError(`${what}: ${message}`);
    if (UNAVAILABLE.has(code)) return new UnavailableError(`${where} failed (${what}): ${message}`, { cause: e });
    return new ProviderError(`${where} refused ${what}: ${message}`, { cause: e });
  }
  // A socket's error (ECONNREFUSED, ETIMEDOUT...) is the network's; anything else is ours or the library's.
  if (typeof code === 'string')
    return new UnavailableError(`cannot reach ${where} (${what}): ${message}`, { cause: e });
  return new ProviderError(`${what} failed: ${message}`, { cause: e });
}

/** Resolves as `p` does, or rejects as interrupted when `signal` aborts first. */
export function abortable<T>(p: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!signal) return p;
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(new InterruptedError('interrupted'));
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

/**
 * A resource id from a session id within `max` characters: as it is when it fits, else its first characters and
 * 8 hex characters of its SHA-256 — deterministic (any onmemos finds the resource again from the id alone), and
 * two ids that share the kept characters still get different names.
 */
export function boundedName(id: string, max: number): string {
  if (id.length <= max) return id;
  // node:crypto only here: this module loads with every command (the providers' configuration), crypto ~2 ms.
  const hash = process.getBuiltinModule('node:crypto').createHash('sha256').update(id).digest('hex').slice(0, 8);
  return `${id.slice(0, max - 9).replace(/-+$/, '')}-${hash}`;
}
