/**
 * `onmemos agent` in a workspace container (a Cloud Run service's, images/): the exec endpoint of one session,
 * on a TCP port, behind a front end that anyone on the internet may reach. So it refuses every caller but the one
 * holding the session's secret (made at create, sent as X-OnMemOS-Secret: the front end consumes Authorization for
 * its own ID token), and serves what `onmemos serve` serves for one session, with the same code:
 *
 *   GET  /health      {"status":"ok"}; no secret needed, nothing revealed
 *   GET  /v1/exec     WebSocket, v5.channel.k8s.io (src/exec/server.ts), the query of serve's exec route
 *   GET  /v1/shell    WebSocket, the document's JSON shell (src/server/json-shell.ts)
 *   POST /v1/execute  {"command","timeout"} → {stdout, stderr, returncode, success} (src/server/execute.ts)
 *   GET  /v1/tunnel   WebSocket, raw bytes to 127.0.0.1:port= in the container (src/exec/tunnel.ts)
 *
 * Each command is spawned through the local agent's prologue (spawn.ts), in a process group and session of its own,
 * as the workspace user; a client that goes away kills its whole group. At most MAX_CONCURRENT execs, shells and
 * executes at once; messages and bodies at most 1 MiB, as in serve.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { WebSocket, WebSocketServer } from 'ws';
import { OnmemosError, UnavailableError } from '../errors.js';
import type { ExecSpec, RemoteProcess } from '../exec/process.js';
import { execSpecFromQuery, execWebSocketServer, serveExec } from '../exec/server.js';
import { connectLoopback, joinTunnel, tunnelPort } from '../exec/tunnel.js';
import { SERVER_SUBPROTOCOLS, V5 } from '../exec/v5.js';
import { accept, gone, refuseUpgrade, requestUrl } from '../server/context.js';
import { checkTimeout, DEFAULT_OUTPUT_CAP, runBuffered, type StartProcess } from '../server/execute.js';
import { ConcurrencyLimit } from '../server/guard.js';
import { apiError, errorStatus, readJsonBody, sendError, sendJson } from '../server/http.js';
import { jsonShell } from '../server/json-shell.js';
import { type RunAs, spawnPiped, spawnTty, treeGroup } from './spawn.js';

/** The header that carries the session's secret. */
export const SECRET_HEADER = 'X-OnMemOS-Secret';
/** Execs, JSON shells and executes in flight at once; one more is answered 429. */
export const MAX_CONCURRENT = 64;
/** Request bodies (POST /v1/execute), as serve's. */
const MAX_BODY_BYTES = 1 << 20;
/** After SIGTERM, how long commands have to exit before they are killed. */
const STOP_GRACE_MS = 2_000;

export interface CloudAgentOptions {
  /** SHA-256 of the session's secret; null serves anyone (--insecure-no-secret). */
  secretSha256: Buffer | null;
  /** Where a command starts unless it asks for another directory. */
  workdir: string;
  /** The environment of every command (an exec's own env= comes on top). */
  env: Record<string, string>;
  /** The user commands run as (the agent is root and drops to it); absent: the agent's own. */
  runAs?: RunAs;
  maxConcurrent?: number;
  /** Cap on each of stdout and stderr of an execute (default 1 MiB). */
  outputCap?: number;
  /** One line per refused request (never the secret, the query or a body). */
  log(line: string): void;
}

export interface CloudAgent {
  server: Server;
  /** Stops listening, ends running commands (SIGTERM, then SIGKILL after a grace) and every connection. */
  close(): Promise<void>;
}

export const sha256 = (text: string): Buffer => createHash('sha256').update(text).digest();

export async function startCloudAgent(
  o: CloudAgentOptions,
  listen: { port: number; host: string },
): Promise<CloudAgent> {
  const limit = new ConcurrencyLimit(o.maxConcurrent ?? MAX_CONCURRENT);
  const running = new Set<RemoteProcess>();
  const sockets = new Set<WebSocket>();
  let stopping = false;
  // ws is evaluated once the first request has its answer (or by the first upgrade): /health at start-up, which
  // Cloud Run's startup probe waits for, does not need it.
  let wss: Promise<WebSocketServer> | undefined;
  const webSockets = () => {
    wss ??= execWebSocketServer();
    return wss;
  };

  const start: StartProcess = async (spec: ExecSpec) => {
    if (stopping) throw new UnavailableError('the agent is stopping');
    const env: Record<string, string> = { ...o.env, ...spec.env };
    if (spec.tty) env.TERM = spec.term || 'xterm-256color';
    const cwd = spec.cwd ?? o.workdir;
    const group = treeGroup();
    const proc = spec.tty ? await spawnTty(spec, env, cwd, group, o.runAs) : spawnPiped(spec, env, cwd, group, o.runAs);
    running.add(proc);
    void proc.exit.finally(() => running.delete(proc));
    return proc;
  };

  /** The secret, checked in constant time (digests of equal length); 401 without it. */
  const authorize = (req: IncomingMessage) => {
    if (!o.secretSha256) return;
    const raw = req.headers[SECRET_HEADER.toLowerCase()];
    const presented = Array.isArray(raw) ? raw[0] : raw;
    if (!presented) throw apiError('auth', `this agent needs the session's secret in ${SECRET_HEADER}`);
    if (!timingSafeEqual(sha256(presented), o.secretSha256)) throw apiError('auth', 'wrong session secret');
  };

  /** One line per refused request: method, path, peer and code; never the query, which holds the command. */
  const refused = (req: IncomingMessage, e: unknown) => {
    const { status, code } = errorStatus(e);
    if (status >= 500) return;
    const path = JSON.stringify((req.url ?? '').split('?')[0]!.slice(0, 200));
    o.log(`refused ${req.method ?? '?'} ${path} from ${req.socket.remoteAddress ?? '?'}: ${status} ${code}`);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const url = requestUrl(req);
    const path = url.pathname.replace(/\/+$/, '') || '/';
    const method = req.method ?? 'GET';
    if (path === '/health') {
      if (method !== 'GET' && method !== 'HEAD') throw apiError('method_not_allowed', `${method} is not allowed here`);
      return sendJson(res, 200, { status: 'ok' });
    }
    authorize(req);
    if (path === '/v1/execute') {
      if (method !== 'POST') throw apiError('method_not_allowed', `${method} is not allowed on ${path}`);
      const body = await readJsonBody(req, MAX_BODY_BYTES);
      const command = body.command;
      if (typeof command !== 'string' || command.length === 0) {
        throw apiError('bad_request', '"command" must be a non-empty string');
      }
      const timeout = checkTimeout(body.timeout ?? 120);
      const release = limit.acquire('agent');
      try {
        const cap = o.outputCap ?? DEFAULT_OUTPUT_CAP;
        return sendJson(res, 200, await runBuffered(start, command, timeout, cap, gone(res)));
      } finally {
        release();
      }
    }
    if (path === '/v1/exec' || path === '/v1/shell' || path === '/v1/tunnel') {
      throw apiError('bad_request', `${path} is a WebSocket: send the request with Upgrade: websocket`);
    }
    throw apiError('not_found', `no route for ${method} ${path}`);
  };

  /** The secret, the route and the query are checked before the upgrade, so a refusal is a plain HTTP answer. */
  const upgrade = async (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const url = requestUrl(req);
    authorize(req);
    const path = url.pathname.replace(/\/+$/, '');
    if (path === '/v1/tunnel') return tunnel(req, socket, head, tunnelPort(url.searchParams));
    if (path !== '/v1/exec' && path !== '/v1/shell') throw apiError('not_found', `no WebSocket route for ${path}`);
    const spec = path === '/v1/exec' ? execSpecFromQuery(url.searchParams) : undefined;
    if (spec?.via)
      throw apiError('bad_request', 'the agent runs commands in its own container: via= is for the provider');
    if (spec) {
      const offered = String(req.headers['sec-websocket-protocol'] ?? '').split(/\s*,\s*/);
      if (!SERVER_SUBPROTOCOLS.some((p) => offered.includes(p))) {
        throw apiError('bad_request', `offer the ${V5} subprotocol`);
      }
    }
    if (stopping) throw new UnavailableError('the agent is stopping');
    const release = limit.acquire('agent');
    let ws: WebSocket | undefined;
    try {
      ws = await accept(await webSockets(), req, socket, head);
    } finally {
      if (!ws) release();
    }
    if (!ws) return;
    const open = ws;
    sockets.add(open);
    open.once('close', () => sockets.delete(open));
    if (!spec) return jsonShell(open, { start, outputCap: o.outputCap }, release);
    // From here the connection is a WebSocket: a failure closes it, never writes HTTP onto it.
    await serveExec(open, spec, () => start(spec))
      .catch(() => open.terminate())
      .finally(release);
  };

  /**
   * `/v1/tunnel?port=N`: raw bytes over the WebSocket to 127.0.0.1:N in the container (`onmemos tunnel`). The
   * connection is made before the upgrade, so nothing listening there is a plain 503; it holds a concurrency slot.
   */
  const tunnel = async (req: IncomingMessage, socket: Duplex, head: Buffer, port: number) => {
    if (stopping) throw new UnavailableError('the agent is stopping');
    const release = limit.acquire('agent');
    let ws: WebSocket | undefined;
    try {
      const conn = await connectLoopback(port);
      try {
        ws = await accept(await webSockets(), req, socket, head);
      } finally {
        if (!ws) conn.destroy();
      }
      if (!ws) return;
      const open = ws;
      sockets.add(open);
      open.once('close', () => sockets.delete(open));
      await joinTunnel(open, conn);
    } finally {
      release();
    }
  };

  let primed = false;
  const prime = () => {
    if (primed) return;
    primed = true;
    setImmediate(() => webSockets().catch(() => {}));
  };
  const server = createServer((req, res) => {
    req.on('error', () => {});
    res.on('error', () => {});
    res.once('finish', prime);
    handle(req, res).catch((e) => {
      refused(req, e);
      sendError(res, e);
    });
  });
  // A malformed request, or one whose headers and query pass Node's 16 KiB, gets Node's own answer (400, 431).
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    // Until ws owns the socket, a reset must not be fatal.
    socket.on('error', () => socket.destroy());
    upgrade(req, socket, head).catch((e) => {
      refused(req, e);
      refuseUpgrade(socket, e);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) =>
      reject(new OnmemosError(`cannot listen on ${listen.host}:${listen.port}: ${e.message}`, { code: 'unavailable' })),
    );
    server.listen(listen.port, listen.host, resolve);
  });

  let closed: Promise<void> | undefined;
  const close = () => {
    closed ??= (async () => {
      stopping = true;
      const stoppedListening = new Promise<void>((resolve) => server.close(() => resolve()));
      const procs = [...running];
      for (const p of procs) p.kill('SIGTERM');
      const exited = Promise.all(procs.map((p) => p.exit));
      const grace = new Promise<void>((resolve) => setTimeout(resolve, STOP_GRACE_MS).unref());
      if ((await Promise.race([exited.then(() => true), grace.then(() => false)])) === false) {
        for (const p of running) p.kill('SIGKILL');
        await exited;
      }
      // Each exec's status goes out as its command ends; then every connection is closed.
      await new Promise((resolve) => setTimeout(resolve, 50));
      for (const ws of sockets) ws.terminate();
      server.closeAllConnections();
      await stoppedListening;
      (await wss)?.close();
    })();
    return closed;
  };
  return { server, close };
}
