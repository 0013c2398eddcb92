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
 *                                            WebSocket, v5.channel.k8s.io (src/exec/v5.ts)
 *
 * Clients are not trusted. Every request and upgrade passes the guard (guard.ts: Host, Origin, content type);
 * every socket, stream and process has its errors handled, so a client's fault ends that client's connection only;
 * WebSocket messages are at most 1 MiB; stdin and output are passed with backpressure; buffered output is capped;
 * and each API key has at most --max-concurrent executes, exec streams and JSON shells in flight.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { WebSocket, WebSocketServer } from 'ws';
import { ConflictError, NotFoundError, UserError } from '../errors.js';
import { execSpecFromQuery, execWebSocketServer, serveExec } from '../exec/server.js';
import { SERVER_SUBPROTOCOLS, V5 } from '../exec/v5.js';
import { createSession, type ProviderRegistry } from '../providers/index.js';
import type { Provider } from '../providers/provider.js';
import {
  type ConnectInfo,
  parseCreateRequest,
  type Session,
  type SessionFilter,
  UNREACHABLE_HEADER,
  validateArgument,
  validateName,
  validateSessionId,
} from '../session/model.js';
import { VERSION } from '../version.js';
import { type Auth, allows, type Principal } from './auth.js';
import { executeBuffered } from './execute.js';
import { ConcurrencyLimit, RequestGuard } from './guard.js';
import { apiError, errorStatus, readJsonBody, sendError, sendJson } from './http.js';

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
}

export const DEFAULT_MAX_CONCURRENT = 32;
const MAX_EXECUTE_TIMEOUT = 24 * 3600;
/** JSON shell commands that may wait behind the running one; more are answered too_many_requests. */
const SHELL_MAX_WAITING = 8;

/** What the handlers share: the options, the WebSocket server, the guard and the concurrency limit. */
interface State {
  opts: ServerOptions;
  wss: WebSocketServer;
  guard: RequestGuard;
  limit: ConcurrencyLimit;
}

/** A session as the API shows it: with the path of its JSON shell WebSocket. */
function shown(session: Session, websocket = `/v1/sessions/${session.id}/shell`): Session {
  return { ...session, websocket: session.websocket ?? websocket };
}

export async function createOnmemosServer(opts: ServerOptions): Promise<Server> {
  const wss = await execWebSocketServer();
  const server = createServer((req, res) => {
    // A client that resets its connection mid-request fails that request; it is never an unhandled 'error'.
    req.on('error', () => {});
    res.on('error', () => {});
    handle(state, req, res).catch((e) => sendError(res, e));
  });
  const state: State = {
    opts,
    wss,
    guard: new RequestGuard(server, opts.allowOrigins),
    limit: new ConcurrencyLimit(opts.maxConcurrent ?? DEFAULT_MAX_CONCURRENT),
  };
  server.on('upgrade', (req, socket, head) => {
    // Node hands the raw socket over without an 'error' listener: until ws owns it, a reset must not be fatal.
    socket.on('error', () => socket.destroy());
    upgrade(state, req, socket, head).catch((e) => refuseUpgrade(socket, e));
  });
  server.on('close', () => wss.close());
  return server;
}

/** The request target as a URL: 400 for anything but a path (and for what URL cannot parse). */
function requestUrl(req: IncomingMessage): URL {
  const target = req.url ?? '/';
  if (target.startsWith('/')) {
    try {
      return new URL(`http://onmemos${target}`);
    } catch {}
  }
  throw apiError('bad_request', 'the request target must be a path');
}

/** The API key's principal. `?api_key=` is for WebSocket upgrades only (browsers cannot set headers there). */
function principalOf(opts: ServerOptions, req: IncomingMessage, url: URL, upgrade: boolean): Principal {
  const header = req.headers['x-api-key'];
  const queryKey = url.searchParams.get('api_key');
  if (queryKey !== null && !upgrade && opts.auth.enabled) {
    throw apiError('auth', '?api_key= is accepted on WebSocket upgrades only: send the key as X-API-Key');
  }
  const key = (Array.isArray(header) ? header[0] : header) ?? queryKey ?? undefined;
  const p = opts.auth.check(key);
  if (!p) throw apiError('auth', key ? 'invalid API key' : 'an API key is required (X-API-Key)');
  return p;
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
async function authorizedSession(
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

async function handle(state: State, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const { opts } = state;
  const url = requestUrl(req);
  const path = url.pathname.replace(/\/+$/, '') || '/';
  const method = req.method ?? 'GET';
  state.guard.check(req, { body: true });

  if (path === '/health' && method === 'GET') {
    const providers = (await opts.registry.all()).map((p) => p.kind);
    return sendJson(res, 200, { status: 'ok', version: VERSION, providers });
  }

  const principal = principalOf(opts, req, url, false);

  if (path === '/v1/sessions') {
    if (method === 'POST') {
      const body = await readJsonBody(req, opts.maxBodyBytes ?? 1 << 20);
      const request = parseCreateRequest(body);
      if (!allows(principal, request.namespace)) {
        throw apiError('forbidden', `this API key may not use namespace ${request.namespace}`);
      }
      const session = await createSession(opts.registry, request, { signal: gone(res) });
      return sendJson(res, 200, shown(session));
    }
    if (method === 'GET') {
      const { sessions, unreachable } = await opts.registry.list(filterFrom(url));
      if (unreachable.length > 0) res.setHeader(UNREACHABLE_HEADER, encodeURIComponent(JSON.stringify(unreachable)));
      return sendJson(
        res,
        200,
        sessions.filter((s) => allows(principal, s.namespace)).map((s) => shown(s)),
      );
    }
    throw apiError('method_not_allowed', `${method} is not allowed on ${path}`);
  }

  if (path.startsWith('/v1/cloudrun/workspaces')) return legacy(state, principal, req, res, url, path, method);

  const m = /^\/v1\/sessions\/([^/]+)(?:\/(execute|connect))?$/.exec(path);
  if (!m) throw apiError('not_found', `no route for ${method} ${path}`);
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
      throw apiError('bad_request', '"command" must be a non-empty string');
    }
    return execute(state, principal, res, provider, session.id, command, checkTimeout(body.timeout ?? 120));
  }
  if (action === 'connect' && method === 'GET') {
    const info = await provider.connect(session.id);
    // The provider's own exec URL (a socket on this host) is not the client's: it reaches the session through here.
    return sendJson(res, 200, {
      ...info,
      exec: { url: `/v1/sessions/${session.id}/exec`, protocol: V5 },
      json_shell: `/v1/sessions/${session.id}/shell`,
    } satisfies ConnectInfo);
  }
  throw apiError('method_not_allowed', `${method} is not allowed on ${path}`);
}

/** The buffered execute of both APIs, counted against the key's concurrency limit. */
async function execute(
  state: State,
  principal: Principal,
  res: ServerResponse,
  provider: Provider,
  id: string,
  command: string,
  timeout: number,
): Promise<void> {
  const release = state.limit.acquire(principal.id);
  try {
    sendJson(res, 200, await executeBuffered(provider, id, command, timeout, state.opts.outputCap, gone(res)));
  } finally {
    release();
  }
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
  state: State,
  principal: Principal,
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
  path: string,
  method: string,
): Promise<void> {
  const { opts } = state;
  const legacyShell = (id: string) => `/v1/cloudrun/workspaces/${id}/shell`;
  if (path === '/v1/cloudrun/workspaces' && method === 'POST') {
    const body = await readJsonBody(req, opts.maxBodyBytes ?? 1 << 20);
    const { storage_options, ...rest } = body;
    const request = parseCreateRequest({ ...rest, storage: storage_options });
    if (!allows(principal, request.namespace)) {
      throw apiError('forbidden', `this API key may not use namespace ${request.namespace}`);
    }
    // Cloud Run where it is configured; where it is not, the auto rule's stand-in, and the reason says so.
    const configured = opts.registry.kinds().some((k) => k.kind === 'cloud_run' && k.configured);
    const session = await createSession(
      opts.registry,
      { ...request, provider: configured ? 'cloud_run' : 'auto' },
      { signal: gone(res) },
    );
    return sendJson(res, 200, shown(session, legacyShell(session.id)));
  }
  const m = /^\/v1\/cloudrun\/workspaces\/([^/]+)(?:\/(execute))?$/.exec(path);
  if (!m) throw apiError('not_found', `no route for ${method} ${path}`);
  const { provider, session } = await authorizedSession(opts, principal, m[1]!);
  if (!m[2] && method === 'GET') return sendJson(res, 200, shown(session, legacyShell(session.id)));
  if (!m[2] && method === 'DELETE') {
    await provider.delete(session.id);
    return sendJson(res, 200, { id: session.id, deleted: true });
  }
  if (m[2] === 'execute' && method === 'POST') {
    const command = url.searchParams.get('command');
    if (!command) throw apiError('bad_request', 'give the command as ?command=');
    const raw = url.searchParams.get('timeout');
    return execute(
      state,
      principal,
      res,
      provider,
      session.id,
      command,
      checkTimeout(raw === null ? 120 : Number(raw)),
    );
  }
  throw apiError('method_not_allowed', `${method} is not allowed on ${path}`);
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
  if (socket.destroyed || !socket.writable) return void socket.destroy();
  const { status, code, message } = errorStatus(e);
  const body = JSON.stringify({ error: { code, message } });
  socket.end(
    `HTTP/1.1 ${status} ${code}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}

/**
 * Completes a WebSocket upgrade. Resolves with the socket, or undefined when the connection closed first (ws then
 * never calls back). The 'error' listener is there before any frame is read: a malformed frame (bad opcode,
 * invalid UTF-8, an unmasked or oversize frame) makes ws close that connection with its code and report it here.
 */
function accept(
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
 * The WebSocket routes: the streaming exec, `GET /v1/sessions/{id}/exec?command=a&command=b&stdin=1&tty=1`
 * speaking v5.channel.k8s.io (the process is killed if the client goes away before it ends), and the document's
 * JSON shell on `/v1/sessions/{id}/shell` and `/v1/cloudrun/workspaces/{id}/shell`. Everything is checked before
 * the upgrade, so a refusal is a plain HTTP answer; each connection holds one of its key's concurrency slots.
 */
async function upgrade(state: State, req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
  const { opts } = state;
  const url = requestUrl(req);
  state.guard.check(req, { body: false });
  const shell = /^\/v1\/(?:sessions|cloudrun\/workspaces)\/([^/]+)\/shell\/?$/.exec(url.pathname);
  const m = shell ?? /^\/v1\/sessions\/([^/]+)\/exec\/?$/.exec(url.pathname);
  if (!m) throw apiError('not_found', `no WebSocket route for ${url.pathname}`);
  const principal = principalOf(opts, req, url, true);
  const { provider, session } = await authorizedSession(opts, principal, m[1]!);
  if (session.status !== 'running') {
    throw new ConflictError(`session ${session.id} is not running (${session.status})`);
  }
  const spec = shell ? undefined : execSpecFromQuery(url.searchParams);
  if (spec) {
    const protocols = String(req.headers['sec-websocket-protocol'] ?? '');
    if (!SERVER_SUBPROTOCOLS.some((p) => protocols.split(/\s*,\s*/).includes(p))) {
      throw apiError('bad_request', `offer the ${V5} subprotocol`);
    }
  }
  const release = state.limit.acquire(principal.id);
  let ws: WebSocket | undefined;
  try {
    ws = await accept(state.wss, req, socket, head);
  } finally {
    if (!ws) release();
  }
  if (!ws) return;
  if (!spec) return jsonShell(ws, opts, provider, session.id, release);
  const open = ws;
  // From here the connection is a WebSocket: a failure closes it, never writes HTTP onto it.
  await serveExec(open, spec, () => provider.exec(session.id, spec))
    .catch(() => open.terminate())
    .finally(release);
}

type ShellReply = Record<string, unknown> & { type: string };
/** A JSON shell message, checked as it arrives: a command to run, or the reply a bad message gets. */
type ShellJob = { command: string; timeout: number } | { reply: ShellReply };

/**
 * Checks a message at once, so that what waits is a command of at most 128 KiB (validateArgument), never the
 * message of up to 1 MiB it came in.
 */
function shellJob(data: Buffer): ShellJob {
  let msg: { type?: unknown; command?: unknown; timeout?: unknown };
  try {
    msg = JSON.parse(data.toString('utf8'));
  } catch {
    return { reply: { type: 'error', error: { code: 'bad_request', message: 'messages must be JSON' } } };
  }
  if (msg?.type !== 'command' || typeof msg.command !== 'string' || msg.command === '') {
    const message = 'expected {"type":"command","command":"..."}';
    return { reply: { type: 'error', error: { code: 'bad_request', message } } };
  }
  try {
    return { command: validateArgument('the command', msg.command), timeout: checkTimeout(msg.timeout ?? 120) };
  } catch (e) {
    const { code, message } = errorStatus(e);
    return { reply: { type: 'error', error: { code, message } } };
  }
}
const REFUSED: ShellReply = {
  type: 'error',
  error: {
    code: 'too_many_requests',
    message: `more than ${SHELL_MAX_WAITING} commands are waiting on this shell: this one was not run`,
  },
};

/**
 * The document's JSON shell protocol: `{"type":"command","command":"..."}` is run under `/bin/sh -c` and answered
 * with `{"type":"command_result","stdout","stderr","returncode","success"}`, one command at a time, in order.
 * A bad message is answered with `{"type":"error","error":{"code","message"}}`.
 *
 * Bounded: at most SHELL_MAX_WAITING commands (each at most 128 KiB) wait behind the running one. A message past
 * that is not kept: it is answered too_many_requests in its turn (replies stay one per message, in order, which
 * is all this protocol has to match them), and only a count is kept until then. This rather than pausing the
 * socket: reading never pauses, so a client that goes away is seen at once and its command killed. The next reply
 * is sent only once the last has gone out, so a client that does not read its replies holds up its own shell, not
 * the server's memory.
 */
function jsonShell(ws: WebSocket, opts: ServerOptions, provider: Provider, id: string, release: () => void): void {
  const closed = new AbortController();
  const waiting: { job: ShellJob; refusedAfter: number }[] = [];
  let busy = false;
  // The slot is given back once the connection is closed and its last command has ended (killed on close).
  const onClose = () => {
    closed.abort();
    waiting.length = 0;
    if (!busy) release();
  };
  if (ws.readyState !== ws.OPEN) {
    onClose();
    return;
  }
  ws.once('close', onClose);
  const reply = (body: ShellReply) =>
    new Promise<void>((resolve) => {
      if (ws.readyState !== ws.OPEN) return resolve();
      ws.send(JSON.stringify(body), () => resolve());
    });
  const answer = async (job: ShellJob): Promise<ShellReply> => {
    if ('reply' in job) return job.reply;
    try {
      const result = await executeBuffered(provider, id, job.command, job.timeout, opts.outputCap, closed.signal);
      return { type: 'command_result', ...result };
    } catch (e) {
      const { code, message } = errorStatus(e);
      return { type: 'error', error: { code, message } };
    }
  };
  const work = async () => {
    busy = true;
    while (waiting.length > 0 && !closed.signal.aborted) {
      const next = waiting.shift()!;
      await reply(await answer(next.job));
      for (let i = 0; i < next.refusedAfter && !closed.signal.aborted; i++) await reply(REFUSED);
    }
    busy = false;
    if (closed.signal.aborted) release();
  };
  ws.on('message', (data: Buffer) => {
    if (waiting.length >= SHELL_MAX_WAITING) {
      waiting[waiting.length - 1]!.refusedAfter++;
      return;
    }
    waiting.push({ job: shellJob(data), refusedAfter: 0 });
    if (!busy) void work();
  });
}
