/**
 * What every route of the server shares, in one place: the server's options and state (ServerContext), the request
 * target (requestUrl), who is asking (principalOf), which session they may touch (authorizedSession), how a session
 * is shown, the signal of a client that went away (gone), and the WebSocket upgrade helpers (accept, refuseUpgrade).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { WebSocket, WebSocketServer } from 'ws';
import { NotFoundError } from '../errors.js';
import type { ProviderRegistry } from '../providers/index.js';
import type { Provider } from '../providers/provider.js';
import { type Session, validateSessionId } from '../session/model.js';
import { type Auth, allows, type Principal } from './auth.js';
import type { ConcurrencyLimit, RequestGuard } from './guard.js';
import { apiError, errorStatus } from './http.js';
import { checkCookieRequest, cookieToken, type WebSignIns } from './web-auth.js';

export interface ServerOptions {
  registry: ProviderRegistry;
  auth: Auth;
  /** Largest request body (default 1 MiB). */
  maxBodyBytes?: number;
  /** Cap on each of stdout and stderr of a buffered execute (default 1 MiB, execute.ts). */
  outputCap?: number;
  /** Executes, exec streams and JSON shells in flight per API key (default 32). */
  maxConcurrent?: number;
  /** Origins whose browser requests are accepted besides the server's own (serve --allow-origin). */
  allowOrigins?: string[];
  /** Let clients create sessions on the host's network (serve --allow-host-network); refused (403) otherwise. */
  allowHostNetwork?: boolean;
}

/** What the routes share: the options, the WebSocket server, the guard and the concurrency limit. */
export interface ServerContext {
  opts: ServerOptions;
  wss: WebSocketServer;
  guard: RequestGuard;
  limit: ConcurrencyLimit;
  /** The web UI's browser sign-ins (web.ts). */
  signIns: WebSignIns;
}

/** The request body limit, 1 MiB unless the options say otherwise. */
export const bodyLimit = (ctx: ServerContext): number => ctx.opts.maxBodyBytes ?? 1 << 20;

/** A session as the API shows it: with the paths of its JSON shell WebSocket and its web terminal. */
export function shown(session: Session, websocket = `/v1/sessions/${session.id}/shell`): Session {
  return { ...session, websocket: session.websocket ?? websocket, web_terminal: webTerminalPath(session.id) };
}

/** Where the web UI's terminal of a session is, on this server. */
export const webTerminalPath = (id: string) => `/sessions/${encodeURIComponent(id)}/terminal`;

/** The request target as a URL: 400 for anything but a path (and for what URL cannot parse). */
export function requestUrl(req: IncomingMessage): URL {
  const target = req.url ?? '/';
  if (target.startsWith('/')) {
    try {
      return new URL(`http://onmemos${target}`);
    } catch {}
  }
  throw apiError('bad_request', 'the request target must be a path');
}

/**
 * The API key's principal. `?api_key=` is for WebSocket upgrades only (browsers cannot set headers there). Without
 * a key, the web UI's sign-in cookie stands for the key it was made with (web.ts), from the server's own pages only.
 */
export function principalOf(ctx: ServerContext, req: IncomingMessage, url: URL, upgrade: boolean): Principal {
  const { opts } = ctx;
  const header = req.headers['x-api-key'];
  const queryKey = url.searchParams.get('api_key');
  if (queryKey !== null && !upgrade && opts.auth.enabled) {
    throw apiError('auth', '?api_key= is accepted on WebSocket upgrades only: send the key as X-API-Key');
  }
  const key = (Array.isArray(header) ? header[0] : header) ?? queryKey ?? undefined;
  if (key === undefined && opts.auth.enabled) {
    const signedIn = ctx.signIns.get(cookieToken(req));
    if (signedIn) {
      checkCookieRequest(req, upgrade, ctx.guard.ownOrigin(req));
      return signedIn;
    }
  }
  const p = opts.auth.check(key);
  if (!p) throw apiError('auth', key ? 'invalid API key' : 'an API key is required (X-API-Key)');
  return p;
}

/** Refuses a create in a namespace this key may not use (403). */
export function checkNamespace(p: Principal, namespace: string): void {
  if (!allows(p, namespace)) throw apiError('forbidden', `this API key may not use namespace ${namespace}`);
}

/** A path segment, percent-decoded: 400 for malformed percent-encoding. */
function decodeSegment(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw apiError('bad_request', `malformed percent-encoding in ${JSON.stringify(raw.slice(0, 200))}`);
  }
}

/**
 * The session, if this principal may see its namespace. A session in another namespace is answered exactly as one
 * that does not exist (404, the same message), so a scoped key learns nothing of other namespaces' ids.
 */
export async function authorizedSession(
  opts: ServerOptions,
  p: Principal,
  rawId: string,
): Promise<{ provider: Provider; session: Session }> {
  const id = validateSessionId(decodeSegment(rawId));
  const notFound = () => apiError('not_found', `no such session: ${id}`);
  let found: { provider: Provider; session: Session };
  try {
    found = await opts.registry.locate(id);
  } catch (e) {
    throw e instanceof NotFoundError ? notFound() : e;
  }
  if (!allows(p, found.session.namespace)) throw notFound();
  return found;
}

/** Aborts when the client goes away before the response is complete. */
export function gone(res: ServerResponse): AbortSignal {
  const ac = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) ac.abort();
  });
  return ac.signal;
}

/** Answers a refused upgrade as plain HTTP (`{"error":{"code","message"}}` with its status), then closes. */
export function refuseUpgrade(socket: Duplex, e: unknown): void {
  if (socket.destroyed || !socket.writable) return void socket.destroy();
  const { status, ...error } = errorStatus(e);
  const { code } = error;
  const body = JSON.stringify({ error });
  socket.end(
    `HTTP/1.1 ${status} ${code}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}

/**
 * Completes a WebSocket upgrade. Resolves with the socket, or undefined when the connection closed first (ws then
 * never calls back). The 'error' listener is there before any frame is read: a malformed frame (bad opcode,
 * invalid UTF-8, an unmasked or oversize frame) makes ws close that connection with its code and report it here.
 */
export function accept(
  wss: WebSocketServer,
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
): Promise<WebSocket | undefined> {
  return new Promise((resolve) => {
    if (socket.destroyed) return resolve(undefined);
    const onClose = () => resolve(undefined);
    socket.once('close', onClose);
    wss.handleUpgrade(req, socket, head, (ws) => {
      socket.off('close', onClose);
      ws.on('error', () => {});
      resolve(ws);
    });
  });
}

/**
 * Takes one of the key's concurrency slots (429 when none is left) and completes the upgrade. Resolves with the
 * socket and the slot's release, or undefined (the slot given back) when the connection closed first.
 */
export async function acceptCounted(
  ctx: ServerContext,
  principal: Principal,
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
): Promise<{ ws: WebSocket; release: () => void } | undefined> {
  const release = ctx.limit.acquire(principal.id);
  let ws: WebSocket | undefined;
  try {
    ws = await accept(ctx.wss, req, socket, head);
  } finally {
    if (!ws) release();
  }
  return ws && { ws, release };
}

/** An upgrade request, checked up to the session: what a WebSocket route is given. */
export interface Upgrade {
  ctx: ServerContext;
  req: IncomingMessage;
  socket: Duplex;
  head: Buffer;
  url: URL;
  principal: Principal;
  provider: Provider;
  session: Session;
}

/** A plain HTTP request, checked by the guard and authenticated: what an HTTP route is given. */
export interface ApiRequest {
  ctx: ServerContext;
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  /** The path without trailing slashes. */
  path: string;
  method: string;
  principal: Principal;
}
