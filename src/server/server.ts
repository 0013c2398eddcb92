/**
 * `onmemos serve`: the OnMemOS /v1 API as a thin HTTP/WebSocket adapter over Providers. It keeps no session
 * state of its own (each provider's backend is the source of truth), so a restarted server loses nothing.
 *
 *   GET    /health
 *   POST   /v1/sessions                      create (the document's request fields and defaults)
 *   GET    /v1/sessions?namespace=&user=&provider=
 *   GET    /v1/sessions/{id}
 *   DELETE /v1/sessions/{id}
 *   POST   /v1/sessions/{id}/execute         {command, timeout} → {stdout, stderr, returncode, success}
 *   GET    /v1/sessions/{id}/connect
 *   GET    /v1/sessions/{id}/exec?command=…&stdin=1&tty=1&env=K=V&workdir=/dir&cols=&rows=
 *                                            WebSocket, v5.channel.k8s.io (src/tty/channel.ts)
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { WebSocket, WebSocketServer } from 'ws';
import { ConflictError, UserError } from '../errors.js';
import { findSession, type ProviderRegistry } from '../providers/index.js';
import type { Provider } from '../providers/provider.js';
import {
  type CreateSessionRequest,
  normalizeCreateRequest,
  type Session,
  type SessionFilter,
  validateName,
  validateSessionId,
} from '../session/model.js';
import { SERVER_SUBPROTOCOLS, V5 } from '../tty/channel.js';
import { execSpecFromQuery, serveExec } from '../tty/exec-server.js';
import { VERSION } from '../version.js';
import { type Auth, allows, type Principal } from './auth.js';
import { executeBuffered } from './execute.js';
import { errorStatus, HttpError, readJsonBody, sendError, sendJson } from './http.js';

export interface ServerOptions {
  registry: ProviderRegistry;
  auth: Auth;
  /** Largest request body (default 1 MiB). */
  maxBodyBytes?: number;
  /** Cap on each of stdout and stderr of a buffered execute (default 16 MiB). */
  outputCap?: number;
}

const MAX_EXECUTE_TIMEOUT = 24 * 3600;

/** A session as the API shows it: with the path of its JSON shell WebSocket. */
function shown(session: Session, websocket = `/v1/sessions/${session.id}/shell`): Session {
  return { ...session, websocket: session.websocket ?? websocket };
}

export async function createOnmemosServer(opts: ServerOptions): Promise<Server> {
  const { WebSocketServer } = await import('ws');
  const wss = new WebSocketServer({
    noServer: true,
    perMessageDeflate: false,
    handleProtocols: (offered) => SERVER_SUBPROTOCOLS.find((p) => offered.has(p)) ?? false,
  });
  const server = createServer((req, res) => {
    handle(opts, req, res).catch((e) => sendError(res, e));
  });
  server.on('upgrade', (req, socket, head) => {
    upgrade(opts, wss, req, socket, head).catch((e) => refuseUpgrade(socket, e));
  });
  server.on('close', () => wss.close());
  return server;
}

function principalOf(opts: ServerOptions, req: IncomingMessage, url: URL): Principal {
  const header = req.headers['x-api-key'];
  const key = (Array.isArray(header) ? header[0] : header) ?? url.searchParams.get('api_key') ?? undefined;
  const p = opts.auth.check(key);
  if (!p) throw new HttpError(401, 'auth', key ? 'invalid API key' : 'an API key is required (X-API-Key)');
  return p;
}

/** The session, if this principal may see its namespace (403 otherwise; 404 when it does not exist). */
async function authorizedSession(
  opts: ServerOptions,
  p: Principal,
  rawId: string,
): Promise<{ provider: Provider; session: Session }> {
  const id = validateSessionId(decodeURIComponent(rawId));
  const found = await findSession(opts.registry, id);
  if (!allows(p, found.session.namespace)) {
    throw new HttpError(403, 'forbidden', `this API key may not use namespace ${found.session.namespace}`);
  }
  return found;
}

async function handle(opts: ServerOptions, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://onmemos');
  const path = url.pathname.replace(/\/+$/, '') || '/';
  const method = req.method ?? 'GET';

  if (path === '/health' && method === 'GET') {
    const providers = (await opts.registry.all()).map((p) => p.kind);
    return sendJson(res, 200, { status: 'ok', version: VERSION, providers });
  }

  const principal = principalOf(opts, req, url);

  if (path === '/v1/sessions') {
    if (method === 'POST') {
      const body = await readJsonBody(req, opts.maxBodyBytes ?? 1 << 20);
      const request = createRequestFrom(body);
      if (!allows(principal, request.namespace)) {
        throw new HttpError(403, 'forbidden', `this API key may not use namespace ${request.namespace}`);
      }
      const { provider, reason } = await opts.registry.forCreate(request);
      const session = await provider.create(request);
      return sendJson(res, 200, shown({ ...session, details: { ...session.details, provider_reason: reason } }));
    }
    if (method === 'GET') {
      const filter = filterFrom(url);
      const all: Session[] = [];
      for (const p of await opts.registry.all()) {
        if (filter.provider && p.kind !== filter.provider) continue;
        all.push(...(await p.list(filter)));
      }
      return sendJson(
        res,
        200,
        all.filter((s) => allows(principal, s.namespace)).map((s) => shown(s)),
      );
    }
    throw new HttpError(405, 'method_not_allowed', `${method} is not allowed on ${path}`);
  }

  if (path.startsWith('/v1/cloudrun/workspaces')) return legacy(opts, principal, req, res, url, path, method);

  const m = /^\/v1\/sessions\/([^/]+)(?:\/(execute|connect))?$/.exec(path);
  if (!m) throw new HttpError(404, 'not_found', `no route for ${method} ${path}`);
  const [, rawId, action] = m;
  const { provider, session } = await authorizedSession(opts, principal, rawId!);

  if (!action && method === 'GET') return sendJson(res, 200, shown(session));
  if (!action && method === 'DELETE') {
    await provider.delete(session.id);
    return sendJson(res, 200, { id: session.id, deleted: true });
  }
  if (action === 'execute' && method === 'POST') {
    const body = await readJsonBody(req, opts.maxBodyBytes ?? 1 << 20);
    const command = body.command;
    if (typeof command !== 'string' || command.length === 0) {
      throw new HttpError(400, 'bad_request', '"command" must be a non-empty string');
    }
    const timeout = body.timeout ?? 120;
    const result = await executeBuffered(
      provider,
      session.id,
      command,
      checkTimeout(timeout),
      opts.outputCap,
      gone(res),
    );
    return sendJson(res, 200, result);
  }
  if (action === 'connect' && method === 'GET') {
    return sendJson(res, 200, {
      id: session.id,
      provider: session.provider,
      status: session.status,
      url: session.url,
      ssh: session.ssh,
      exec: `/v1/sessions/${session.id}/exec`,
      exec_protocol: V5,
      shell: provider.loginShell ? await provider.loginShell(session.id) : null,
    });
  }
  throw new HttpError(405, 'method_not_allowed', `${method} is not allowed on ${path}`);
}

/** Aborts when the client goes away before the response is complete. */
function gone(res: ServerResponse): AbortSignal {
  const ac = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) ac.abort();
  });
  return ac.signal;
}

function checkTimeout(timeout: unknown): number {
  if (typeof timeout !== 'number' || !(timeout > 0) || timeout > MAX_EXECUTE_TIMEOUT) {
    throw new UserError(`"timeout" must be a number of seconds, more than 0 and at most ${MAX_EXECUTE_TIMEOUT}`);
  }
  return timeout;
}

/**
 * The document's legacy Cloud Run routes. Where Cloud Run is not configured, the provider `auto` picks stands in,
 * and the response says so.
 */
async function legacy(
  opts: ServerOptions,
  principal: Principal,
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
  path: string,
  method: string,
): Promise<void> {
  const legacyShell = (id: string) => `/v1/cloudrun/workspaces/${id}/shell`;
  if (path === '/v1/cloudrun/workspaces' && method === 'POST') {
    const body = await readJsonBody(req, opts.maxBodyBytes ?? 1 << 20);
    const { storage_options, ...rest } = body;
    const request = createRequestFrom({ ...rest, storage: storage_options, provider: 'cloud_run' });
    if (!allows(principal, request.namespace)) {
      throw new HttpError(403, 'forbidden', `this API key may not use namespace ${request.namespace}`);
    }
    let chosen: { provider: Provider; reason: string };
    try {
      chosen = await opts.registry.forCreate(request);
    } catch {
      const local = await opts.registry.forCreate({ ...request, provider: 'local' });
      chosen = { provider: local.provider, reason: 'Cloud Run is not configured: the local sandbox stands in' };
    }
    const session = await chosen.provider.create({
      ...request,
      provider: chosen.provider.kind as CreateSessionRequest['provider'],
    });
    return sendJson(
      res,
      200,
      shown({ ...session, details: { ...session.details, provider_reason: chosen.reason } }, legacyShell(session.id)),
    );
  }
  const m = /^\/v1\/cloudrun\/workspaces\/([^/]+)(?:\/(execute))?$/.exec(path);
  if (!m) throw new HttpError(404, 'not_found', `no route for ${method} ${path}`);
  const { provider, session } = await authorizedSession(opts, principal, m[1]!);
  if (!m[2] && method === 'GET') return sendJson(res, 200, shown(session, legacyShell(session.id)));
  if (!m[2] && method === 'DELETE') {
    await provider.delete(session.id);
    return sendJson(res, 200, { id: session.id, deleted: true });
  }
  if (m[2] === 'execute' && method === 'POST') {
    const command = url.searchParams.get('command');
    if (!command) throw new HttpError(400, 'bad_request', 'give the command as ?command=');
    const raw = url.searchParams.get('timeout');
    const timeout = checkTimeout(raw === null ? 120 : Number(raw));
    return sendJson(res, 200, await executeBuffered(provider, session.id, command, timeout, opts.outputCap, gone(res)));
  }
  throw new HttpError(405, 'method_not_allowed', `${method} is not allowed on ${path}`);
}

/** The document's request fields, with types checked here (400) and values by the session model (422). */
function createRequestFrom(body: Record<string, unknown>): CreateSessionRequest {
  const str = (k: string) => {
    const v = body[k];
    if (v !== undefined && typeof v !== 'string') throw new HttpError(400, 'bad_request', `"${k}" must be a string`);
    return v as string | undefined;
  };
  const num = (k: string) => {
    const v = body[k];
    if (v !== undefined && typeof v !== 'number') throw new HttpError(400, 'bad_request', `"${k}" must be a number`);
    return v as number | undefined;
  };
  const bool = (k: string) => {
    const v = body[k];
    if (v !== undefined && typeof v !== 'boolean') throw new HttpError(400, 'bad_request', `"${k}" must be a boolean`);
    return v as boolean | undefined;
  };
  const env = body.env;
  if (env !== undefined && (typeof env !== 'object' || env === null || Array.isArray(env))) {
    throw new HttpError(400, 'bad_request', '"env" must be an object of strings');
  }
  for (const v of Object.values((env as Record<string, unknown>) ?? {})) {
    if (typeof v !== 'string') throw new HttpError(400, 'bad_request', '"env" must be an object of strings');
  }
  const storage = body.storage;
  if (storage !== undefined && (typeof storage !== 'object' || storage === null || Array.isArray(storage))) {
    throw new HttpError(400, 'bad_request', '"storage" must be an object');
  }
  const size = (k: string) => {
    const v = body[k];
    if (v !== undefined && typeof v !== 'number' && typeof v !== 'string') {
      throw new HttpError(400, 'bad_request', `"${k}" must be a number or a string such as "2g"`);
    }
    return v as number | string | undefined;
  };
  return normalizeCreateRequest({
    provider: str('provider') as CreateSessionRequest['provider'] | undefined,
    template: str('template') as CreateSessionRequest['template'] | undefined,
    namespace: str('namespace'),
    user: str('user'),
    ttl_minutes: num('ttl_minutes'),
    env: env as Record<string, string> | undefined,
    network: str('network') as CreateSessionRequest['network'] | undefined,
    storage: storage as CreateSessionRequest['storage'],
    needs_ssh: bool('needs_ssh'),
    long_lived: bool('long_lived'),
    expected_duration_minutes: num('expected_duration_minutes'),
    limits: { cpu: size('cpu'), memory: size('memory'), pids: size('pids'), disk: size('disk') },
    require_limits: bool('require_limits'),
    nested_userns: bool('nested_userns'),
  });
}

function filterFrom(url: URL): SessionFilter {
  const f: SessionFilter = {};
  const ns = url.searchParams.get('namespace');
  const user = url.searchParams.get('user');
  const provider = url.searchParams.get('provider');
  if (ns) f.namespace = validateName('namespace', ns);
  if (user) f.user = validateName('user', user);
  if (provider) f.provider = provider as SessionFilter['provider'];
  return f;
}

function refuseUpgrade(socket: Duplex, e: unknown): void {
  const { status, code, message } = errorStatus(e);
  const body = JSON.stringify({ error: { code, message } });
  socket.end(
    `HTTP/1.1 ${status} ${code}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}

/**
 * The streaming exec: `GET /v1/sessions/{id}/exec?command=a&command=b&stdin=1&tty=1` upgraded to a WebSocket
 * speaking v5.channel.k8s.io. The process is killed if the client goes away before it ends.
 */
async function upgrade(
  opts: ServerOptions,
  wss: WebSocketServer,
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://onmemos');
  const shell = /^\/v1\/(?:sessions|cloudrun\/workspaces)\/([^/]+)\/shell\/?$/.exec(url.pathname);
  const m = shell ?? /^\/v1\/sessions\/([^/]+)\/exec\/?$/.exec(url.pathname);
  if (!m) throw new HttpError(404, 'not_found', `no WebSocket route for ${url.pathname}`);
  const principal = principalOf(opts, req, url);
  const { provider, session } = await authorizedSession(opts, principal, m[1]!);
  if (session.status !== 'running') {
    throw new ConflictError(`session ${session.id} is not running (${session.status})`);
  }
  if (shell) {
    const ws = await new Promise<WebSocket>((resolve) => wss.handleUpgrade(req, socket, head, resolve));
    return jsonShell(ws, opts, provider, session.id);
  }
  const spec = execSpecFromQuery(url.searchParams);
  const protocols = String(req.headers['sec-websocket-protocol'] ?? '');
  if (!SERVER_SUBPROTOCOLS.some((p) => protocols.split(/\s*,\s*/).includes(p))) {
    throw new HttpError(400, 'bad_request', `offer the ${V5} subprotocol`);
  }
  const ws = await new Promise<WebSocket>((resolve) => wss.handleUpgrade(req, socket, head, resolve));
  await serveExec(ws, spec, () => provider.exec(session.id, spec));
}

/**
 * The document's JSON shell protocol: `{"type":"command","command":"..."}` is run under `/bin/sh -c` and answered
 * with `{"type":"command_result","stdout","stderr","returncode","success"}`, one command at a time, in order.
 * A bad message is answered with `{"type":"error","error":{"code","message"}}`.
 */
function jsonShell(ws: WebSocket, opts: ServerOptions, provider: Provider, id: string): void {
  let queue = Promise.resolve();
  const closed = new AbortController();
  ws.once('close', () => closed.abort());
  const reply = (body: unknown) => {
    if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(body));
  };
  ws.on('message', (data: Buffer) => {
    queue = queue.then(async () => {
      let msg: { type?: unknown; command?: unknown; timeout?: unknown };
      try {
        msg = JSON.parse(data.toString('utf8'));
      } catch {
        return reply({ type: 'error', error: { code: 'bad_request', message: 'messages must be JSON' } });
      }
      if (msg?.type !== 'command' || typeof msg.command !== 'string' || msg.command === '') {
        return reply({
          type: 'error',
          error: { code: 'bad_request', message: 'expected {"type":"command","command":"..."}' },
        });
      }
      try {
        const timeout = checkTimeout(msg.timeout ?? 120);
        if (closed.signal.aborted) return;
        const result = await executeBuffered(provider, id, msg.command, timeout, opts.outputCap, closed.signal);
        reply({ type: 'command_result', ...result });
      } catch (e) {
        const { code, message } = errorStatus(e);
        reply({ type: 'error', error: { code, message } });
      }
    });
  });
}
