/**
 * `onmemos serve`: the OnMemOS /v1 API as a thin HTTP/WebSocket adapter over Providers. It keeps no session
 * state of its own (each provider's backend is the source of truth), so a restarted server loses nothing.
 *
 * This file assembles the server and sends each request to its room:
 *
 *   GET /health                       here
 *   /, /sessions/{id}/terminal, /ui/… web.ts (the web UI: dashboard, terminal, assets, browser sign-in)
 *   /v1/sessions…                     sessions.ts (create and its NDJSON stream: create.ts; execute: execute.ts)
 *   /v1/cloudrun/workspaces…          legacy.ts
 *   WebSocket …/{id}/exec             exec-route.ts (v5.channel.k8s.io, src/exec/server.ts)
 *   WebSocket …/{id}/shell            json-shell.ts (the document's JSON shell)
 *   WebSocket …/{id}/tunnel?port=N    tunnel-route.ts (raw bytes to a TCP port inside the session)
 *
 * What the rooms share (options, principal, authorizedSession, accept, refuseUpgrade) is in context.ts.
 *
 * Clients are not trusted. Every request and upgrade passes the guard (guard.ts: Host, Origin, content type);
 * every socket, stream and process has its errors handled, so a client's fault ends that client's connection only;
 * WebSocket messages are at most 1 MiB; stdin and output are passed with backpressure; buffered output is capped;
 * and each API key has at most --max-concurrent executes, exec streams and JSON shells in flight.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { ConflictError } from '../errors.js';
import { execWebSocketServer } from '../exec/server.js';
import { VERSION } from '../version.js';
import {
  authorizedSession,
  bodyLimit,
  principalOf,
  refuseUpgrade,
  requestUrl,
  type ServerContext,
  type ServerOptions,
} from './context.js';
import { execRoute } from './exec-route.js';
import { ConcurrencyLimit, RequestGuard } from './guard.js';
import { apiError, sendError, sendJson } from './http.js';
import { shellRoute } from './json-shell.js';
import { legacyRoutes } from './legacy.js';
import { sessionRoutes } from './sessions.js';
import { tunnelRoute } from './tunnel-route.js';
import { webRoutes } from './web.js';
import { WebSignIns } from './web-auth.js';

export type { ServerOptions } from './context.js';

export const DEFAULT_MAX_CONCURRENT = 32;

export async function createOnmemosServer(opts: ServerOptions): Promise<Server> {
  const wss = await execWebSocketServer();
  const server = createServer((req, res) => {
    // A client that resets its connection mid-request fails that request; it is never an unhandled 'error'.
    req.on('error', () => {});
    res.on('error', () => {});
    handle(ctx, req, res).catch((e) => sendError(res, e));
  });
  const ctx: ServerContext = {
    opts,
    wss,
    guard: new RequestGuard(server, opts.allowOrigins),
    limit: new ConcurrencyLimit(opts.maxConcurrent ?? DEFAULT_MAX_CONCURRENT),
    signIns: new WebSignIns(),
  };
  server.on('upgrade', (req, socket, head) => {
    // Node hands the raw socket over without an 'error' listener: until ws owns it, a reset must not be fatal.
    socket.on('error', () => socket.destroy());
    upgrade(ctx, req, socket, head).catch((e) => refuseUpgrade(socket, e));
  });
  server.on('close', () => wss.close());
  return server;
}

/** A plain HTTP request: the guard, /health, the key, then the room its path belongs to. */
async function handle(ctx: ServerContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = requestUrl(req);
  const path = url.pathname.replace(/\/+$/, '') || '/';
  const method = req.method ?? 'GET';
  ctx.guard.check(req, { body: true });

  if (path === '/health' && method === 'GET') {
    const providers = (await ctx.opts.registry.all()).map((p) => p.kind);
    return sendJson(res, 200, { status: 'ok', version: VERSION, providers });
  }

  const web = {
    req,
    res,
    path,
    method,
    auth: ctx.opts.auth,
    signIns: ctx.signIns,
    maxBodyBytes: bodyLimit(ctx),
    ownOrigin: ctx.guard.ownOrigin(req),
  };
  if (!path.startsWith('/v1/') && (await webRoutes(web))) return;

  const principal = principalOf(ctx, req, url, false);
  const a = { ctx, req, res, url, path, method, principal };
  if (path.startsWith('/v1/cloudrun/workspaces')) return legacyRoutes(a);
  return sessionRoutes(a);
}

/**
 * A WebSocket upgrade: the streaming exec (`/v1/sessions/{id}/exec`), the JSON shell (`/v1/sessions/{id}/shell`,
 * `/v1/cloudrun/workspaces/{id}/shell`), or a tunnel (`/v1/sessions/{id}/tunnel?port=N`). The guard, the route, the key and a running session are checked here,
 * before the upgrade, so a refusal is a plain HTTP answer; the route checks the rest and takes the connection.
 */
async function upgrade(ctx: ServerContext, req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
  const url = requestUrl(req);
  ctx.guard.check(req, { body: false });
  const shell = /^\/v1\/(?:sessions|cloudrun\/workspaces)\/([^/]+)\/shell\/?$/.exec(url.pathname);
  const tunnel = /^\/v1\/sessions\/([^/]+)\/tunnel\/?$/.exec(url.pathname);
  const m = shell ?? tunnel ?? /^\/v1\/sessions\/([^/]+)\/exec\/?$/.exec(url.pathname);
  if (!m) throw apiError('not_found', `no WebSocket route for ${url.pathname}`);
  const principal = principalOf(ctx, req, url, true);
  const { provider, session } = await authorizedSession(ctx.opts, principal, m[1]!);
  if (session.status !== 'running') {
    throw new ConflictError(`session ${session.id} is not running (${session.status})`);
  }
  const u = { ctx, req, socket, head, url, principal, provider, session };
  return shell ? shellRoute(u) : tunnel ? tunnelRoute(u) : execRoute(u);
}
