/**
 * A service's front end, at its `uri`: one HTTP listener per service on 127.0.0.1, which checks the caller as
 * Cloud Run's does and forwards each request and WebSocket upgrade to the service's instance, starting one when none
 * runs (a cold start: scaled to zero, or crashed). The instance is a container in a local sandbox with a network of
 * its own, whose port the front end reaches through the sandbox (`Lease.connect`: the local provider's tunnel,
 * runtime.ts), never through the host's network; the uri stays the same across instances, as a real service's does.
 *
 * Invoker check: unless the service has `invokerIamDisabled`, a request needs `Authorization: Bearer <ID token>`
 * whose audience is the service's uri (or one of its urls or customAudiences) and which has not expired: none is a
 * 403, anything else a 401, each with Google's HTML page. The token's signature is not checked (a test mints one:
 * `fake.idToken(uri)`, or google-auth-library's IdTokenClient with an idTokenProvider). Headers pass on unchanged.
 */
import { createServer, type IncomingMessage, request, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';

/** One request's hold on an instance: it is not scaled down nor frozen until released. */
export interface Lease {
  /** A connection to the port the instance listens on, inside its own network. */
  connect(): Promise<Duplex>;
  release(): void;
}

export interface FrontendTarget {
  readonly id: string;
  /** The instance to send this request to (started if need be); throws when none can serve. */
  acquire(): Promise<Lease>;
  /** Whether callers need an ID token, and the audiences it may name. */
  invoker(): { required: boolean; audiences: string[] };
}

export interface FrontRequest {
  service: string;
  method: string;
  url: string;
  auth: 'id-token' | 'none' | 'refused' | 'public';
  audience?: string;
  upgrade?: boolean;
  status?: number;
}

const PAGES: Record<number, [string, (path: string) => string]> = {
  401: ['Unauthorized', (p) => `Your client does not have permission to the requested URL <code>${p}</code>.`],
  403: ['Forbidden', (p) => `Your client does not have permission to get URL <code>${p}</code> from this server.`],
  503: [
    'Service Unavailable',
    () => 'The service you requested is not available yet.<p>Please try again in 30 seconds.</p>',
  ],
};

/** Google's HTML error page. */
export function errorPage(code: 401 | 403 | 503, path: string): string {
  const [title, text] = PAGES[code]!;
  return `<html><head>\n<meta http-equiv="content-type" content="text/html;charset=utf-8">\n<title>${code} ${title}</title>\n</head>\n<body text=#000000 bgcolor=#ffffff>\n<h1>Error: ${title}</h1>\n<h2>${text(path.replace(/[<>&"]/g, ''))}</h2>\n<h2></h2>\n</body></html>\n`;
}

/** The payload of a JWT (unverified), or undefined when `token` is not one. */
export function jwtPayload(token: string): Record<string, unknown> | undefined {
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  try {
    const p = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8'));
    return p && typeof p === 'object' ? p : undefined;
  } catch {
    return undefined;
  }
}

/** An unsigned ID token as Google's would read: iss, aud, sub, email, iat, exp. */
export function mintIdToken(audience: string, email = 'tester@example.com', ttlSeconds = 3600): string {
  const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const iat = Math.floor(Date.now() / 1000);
  const payload = { iss: 'https://accounts.google.com', aud: audience, sub: '1', email, iat, exp: iat + ttlSeconds };
  return `${b64({ alg: 'RS256', typ: 'JWT', kid: 'onmemos-fake' })}.${b64(payload)}.${Buffer.from('unsigned').toString('base64url')}`;
}

function checkCaller(target: FrontendTarget, req: IncomingMessage): Pick<FrontRequest, 'auth' | 'audience'> {
  const { required, audiences } = target.invoker();
  if (!required) return { auth: 'public' };
  const h = req.headers.authorization;
  if (!h) return { auth: 'none' };
  const m = /^Bearer\s+(\S+)$/i.exec(h);
  const p = m ? jwtPayload(m[1]!) : undefined;
  const aud = typeof p?.aud === 'string' ? p.aud : undefined;
  const fresh = typeof p?.exp !== 'number' || p.exp * 1000 > Date.now();
  return aud && audiences.includes(aud.replace(/\/$/, '')) && fresh
    ? { auth: 'id-token', audience: aud }
    : { auth: 'refused', ...(aud ? { audience: aud } : {}) };
}

export interface Frontend {
  port: number;
  url: string;
  close(): Promise<void>;
}

export async function startFrontend(target: FrontendTarget, record: (r: FrontRequest) => void): Promise<Frontend> {
  const sockets = new Set<Socket | Duplex>();
  const refuse = (res: ServerResponse, rec: FrontRequest, code: 401 | 403 | 503) => {
    rec.status = code;
    const headers: Record<string, string> = { 'content-type': 'text/html; charset=UTF-8' };
    if (code === 401)
      headers['www-authenticate'] =
        'Bearer error="invalid_token" error_description="The access token could not be verified"';
    res.writeHead(code, headers).end(errorPage(code, (res.req.url ?? '/').split('?')[0]!));
  };

  const server: Server = createServer(async (req, res) => {
    const rec: FrontRequest = {
      service: target.id,
      method: req.method ?? 'GET',
      url: req.url ?? '/',
      ...checkCaller(target, req),
    };
    record(rec);
    if (rec.auth === 'none') return refuse(res, rec, 403);
    if (rec.auth === 'refused') return refuse(res, rec, 401);
    let lease: Lease;
    try {
      lease = await target.acquire();
    } catch {
      return refuse(res, rec, 503);
    }
    const up = request(
      {
        host: '127.0.0.1',
        method: req.method,
        path: req.url,
        headers: req.headers,
        // One connection per request, to the instance's port inside its sandbox (no agent: nothing is pooled).
        createConnection: (_o, done) => {
          lease.connect().then(
            (d) => done(null, d),
            (e: Error) => done(e, undefined as never),
          );
          return undefined;
        },
      },
      (ur) => {
        rec.status = ur.statusCode;
        res.writeHead(ur.statusCode ?? 502, ur.rawHeaders);
        ur.pipe(res);
      },
    );
    up.on('error', () => {
      if (!res.headersSent) refuse(res, rec, 503);
      else res.destroy();
    });
    res.once('close', () => {
      lease.release();
      up.destroy();
    });
    req.pipe(up);
  });

  server.on('upgrade', async (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    const rec: FrontRequest = {
      service: target.id,
      method: req.method ?? 'GET',
      url: req.url ?? '/',
      upgrade: true,
      ...checkCaller(target, req),
    };
    record(rec);
    const answer = (code: 401 | 403 | 503) => {
      rec.status = code;
      const body = errorPage(code, (req.url ?? '/').split('?')[0]!);
      socket.end(
        `HTTP/1.1 ${code} ${PAGES[code]![0]}\r\ncontent-type: text/html; charset=UTF-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
      );
    };
    if (rec.auth === 'none') return answer(403);
    if (rec.auth === 'refused') return answer(401);
    let lease: Lease;
    try {
      lease = await target.acquire();
    } catch {
      return answer(503);
    }
    let released = false;
    let up: Duplex | undefined;
    const done = () => {
      if (released) return;
      released = true;
      if (up) sockets.delete(up);
      lease.release();
      up?.destroy();
      if (up) socket.destroy(); // else the 503 page is on its way
    };
    socket.once('close', done);
    try {
      const conn = await lease.connect();
      if (released) return void conn.destroy();
      up = conn;
    } catch {
      if (!released) answer(503);
      done();
      return;
    }
    sockets.add(up);
    up.on('error', done);
    up.once('close', done);
    // The instance's own answer (101, or its refusal).
    up.once('data', (d: Buffer) => {
      rec.status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(d.toString('latin1', 0, 16))?.[1]) || undefined;
    });
    const lines = [`${req.method} ${req.url} HTTP/1.1`];
    for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
    up.write(`${lines.join('\r\n')}\r\n\r\n`);
    if (head.length > 0) up.write(head);
    up.pipe(socket);
    socket.pipe(up);
  });
  server.on('clientError', (_e, socket) => socket.destroy());

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as { port: number }).port;
  let closing: Promise<void> | undefined;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
