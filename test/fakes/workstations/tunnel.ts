/**
 * A workstation's `host`: a TLS listener on 127.0.0.1 (one per workstation, made with it, closed at its delete) with
 * the fake CA's certificate for 127.0.0.1 and localhost, serving the TCP tunnel as Cloud Workstations does
 * (PROTOCOLS.md §3): `GET /_workstation/tcp/{port}` upgraded to a WebSocket (no subprotocol) with
 * `Authorization: Bearer {accessToken}` from generateAccessToken, then raw bytes both ways: text and binary frames
 * are both taken as bytes (gcloud sends text frames holding arbitrary bytes, so UTF-8 is not checked), and every
 * frame sent is binary.
 *
 * Before the upgrade: no token, an unknown one, one for another workstation or port, or an expired one → 401; a
 * workstation not running → 409 `workstation … is not running (STATE_STOPPED)`; a config with
 * `disableTcpConnections` → 403; nothing listening on the port → 503 (gcloud: "The workstation does not have a
 * server running on port N."). Port 22 is the workstation's sshd; any other port P is 127.0.0.1:P inside the
 * workstation, which has a network of its own: each connection is one through the local provider's `tunnel` (the
 * sandbox agent's `/tunnel`, see runtime.ts), never one to a port of the host. Plain HTTP requests (the IDE on
 * port 80 on Cloud Workstations) are not served: 401 without a valid token, else 503.
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { Duplex } from 'node:stream';
import { createWebSocketStream, WebSocketServer } from 'ws';
import type { FakeTls } from './tls.js';

export interface TokenGrant {
  workstation: string;
  expiresAt: number;
  port?: number;
}

/** The access tokens generateAccessToken issued (kept until they expire, plus a minute). */
export class AccessTokens {
  private readonly grants = new Map<string, TokenGrant>();

  issue(workstation: string, ttlMs: number, port?: number): { accessToken: string; expireTime: string } {
    const now = Date.now();
    for (const [t, g] of this.grants) if (g.expiresAt + 60_000 < now) this.grants.delete(t);
    const accessToken = `wst.fake-${randomBytes(32).toString('base64url')}`;
    const expiresAt = now + ttlMs;
    this.grants.set(accessToken, { workstation, expiresAt, ...(port ? { port } : {}) });
    return { accessToken, expireTime: new Date(expiresAt).toISOString() };
  }

  /** Why `header` does not open `port` of `workstation`, or 'ok'. */
  check(header: string | undefined, workstation: string, port: number): TunnelAuth {
    if (!header) return 'none';
    const m = /^Bearer\s+(\S+)$/i.exec(header);
    const g = m ? this.grants.get(m[1]!) : undefined;
    if (!g) return 'unknown';
    if (g.workstation !== workstation || (g.port !== undefined && g.port !== port)) return 'other';
    if (g.expiresAt <= Date.now()) return 'expired';
    return 'ok';
  }

  /** Forgets every token of a workstation (it was deleted). */
  revoke(workstation: string): void {
    for (const [t, g] of this.grants) if (g.workstation === workstation) this.grants.delete(t);
  }
}

export type TunnelAuth = 'ok' | 'none' | 'unknown' | 'other' | 'expired';

const AUTH_MESSAGE: Record<Exclude<TunnelAuth, 'ok'>, string> = {
  none: 'Unauthorized: the request has no Authorization header (Bearer access token from generateAccessToken)',
  unknown: 'Unauthorized: the access token is not valid',
  other: 'Unauthorized: the access token was not issued for this workstation and port',
  expired: 'Unauthorized: the access token has expired',
};

export interface TunnelRequest {
  workstation: string;
  /** The workstation port asked for (undefined for a request that is not a tunnel). */
  port?: number;
  upgrade: boolean;
  auth: TunnelAuth;
  status: number;
}

/** What the host needs to know of its workstation, at each request. */
export interface TunnelTarget {
  /** The workstation's full name (tokens are issued for it). */
  name: string;
  /** STATE_RUNNING or another state. */
  state(): string;
  tcpDisabled(): boolean;
  /**
   * A connection to `port` inside the workstation (22: its sshd), or undefined when nothing listens there (or the
   * workstation does not run).
   */
  connect(port: number): Promise<Duplex | undefined>;
  /** Called before a connection to `port` (the fake brings sshd's authorized keys up to date). */
  beforeConnect?(port: number): Promise<void>;
}

export class WorkstationHost {
  private readonly server: Server;
  private readonly wss = new WebSocketServer({
    noServer: true,
    perMessageDeflate: false,
    skipUTF8Validation: true,
    maxPayload: 16 << 20,
  });
  private readonly open = new Set<{ destroy(): void }>();
  host = '';

  constructor(
    tls: FakeTls,
    private readonly tokens: AccessTokens,
    private readonly target: TunnelTarget,
    private readonly opts: { hostname: string; onRequest: (r: TunnelRequest) => void; log: (line: string) => void },
  ) {
    this.server = createServer({ key: tls.key, cert: tls.cert }, (req, res) => {
      const auth = this.tokens.check(req.headers.authorization, this.target.name, 80);
      const status = auth === 'ok' ? 503 : 401;
      this.record({ upgrade: false, auth, status });
      res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' });
      res.end(
        auth === 'ok'
          ? 'The fake serves only the TCP tunnel (/_workstation/tcp/{port}), not HTTP on port 80.\n'
          : `${AUTH_MESSAGE[auth]}\n`,
      );
    });
    this.server.on('upgrade', (req, socket, head) => {
      this.upgrade(req, socket, head).catch((e) => {
        this.opts.log(`tunnel: ${(e as Error).message}`);
        refuse(socket, 500, 'Internal error');
      });
    });
    this.server.on('tlsClientError', (_e, socket) => socket.destroy());
    this.server.on('clientError', (_e, socket) => socket.destroy());
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => resolve());
    });
    this.host = `${this.opts.hostname}:${(this.server.address() as { port: number }).port}`;
    return this.host;
  }

  private record(r: Omit<TunnelRequest, 'workstation'>) {
    this.opts.onRequest({ workstation: this.target.name, ...r });
  }

  private async upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on('error', () => socket.destroy());
    const m = /^\/_workstation\/tcp\/(\d{1,5})$/.exec((req.url ?? '').split('?')[0]!);
    const port = m ? Number(m[1]) : undefined;
    const auth = this.tokens.check(req.headers.authorization, this.target.name, port ?? 80);
    const fail = (status: number, message: string) => {
      this.record({ ...(port !== undefined ? { port } : {}), upgrade: true, auth, status });
      refuse(socket, status, message);
    };
    if (auth !== 'ok') return fail(401, AUTH_MESSAGE[auth]);
    if (port === undefined || port < 1 || port > 65535)
      return fail(404, 'Not found: expected /_workstation/tcp/{port}');
    if (this.target.tcpDisabled())
      return fail(403, 'Forbidden: TCP connections are disabled for this workstation configuration');
    const state = this.target.state();
    if (state !== 'STATE_RUNNING') {
      return fail(409, `Workstation ${this.target.name} is not running (${state}): start it first`);
    }
    await this.target.beforeConnect?.(port);
    const conn = await this.target.connect(port);
    if (!conn) return fail(503, `The workstation does not have a server running on port ${port}`);
    if (socket.destroyed) return void conn.destroy();
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      this.record({ port, upgrade: true, auth, status: 101 });
      const stream = createWebSocketStream(ws);
      const entry = {
        destroy: () => {
          conn.destroy();
          ws.terminate();
        },
      };
      this.open.add(entry);
      const done = () => {
        this.open.delete(entry);
        conn.destroy();
        stream.destroy();
      };
      stream.on('error', done);
      conn.on('error', done);
      stream.on('close', done);
      conn.on('close', () => {
        this.open.delete(entry);
        if (ws.readyState === ws.OPEN) ws.close(1000);
      });
      stream.pipe(conn);
      conn.pipe(stream);
    });
  }

  /** Ends every tunnel open now (the workstation stops). */
  closeConnections(): void {
    for (const c of this.open) c.destroy();
    this.open.clear();
  }

  async close(): Promise<void> {
    this.closeConnections();
    const closed = new Promise<void>((r) => this.server.close(() => r()));
    this.server.closeAllConnections();
    this.wss.close();
    await closed;
  }
}

const REASONS: Record<number, string> = {
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  409: 'Conflict',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

/** An HTTP answer instead of the upgrade, then the connection closed. */
function refuse(socket: Duplex, status: number, message: string): void {
  if (socket.destroyed) return;
  const body = `${message}\n`;
  socket.end(
    `HTTP/1.1 ${status} ${REASONS[status] ?? 'Error'}\r\nContent-Type: text/plain; charset=utf-8\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}
