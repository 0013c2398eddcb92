/**
 * A byte stream over a WebSocket: both sides of every tunnel (a workstation's TCP tunnel, the local agent's
 * `/tunnel`, the Cloud Run agent's `/v1/tunnel`, an onmemos server's `/v1/sessions/{id}/tunnel`). Raw bytes both
 * ways, sent as binary frames (text frames are taken as bytes too), no subprotocol, no compression. A refused
 * upgrade is the caller's error, from the status and the body's text. ws is loaded only when a tunnel is used.
 */
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';
import { OnmemosError } from '../errors.js';

export interface TunnelSocketOptions {
  headers?: Record<string, string>;
  /** CA certificates for a wss: URL, replacing Node's own. */
  ca?: string[];
  /** How long the upgrade may take (default 30 s). */
  timeoutMs?: number;
  /** The error for an upgrade answered with `status` (body: its first 64 KiB as text). */
  refused(status: number, body: string): Error;
  /** The error for a connection that could not be made at all. */
  unreachable(e: Error): Error;
}

export async function openTunnelSocket(url: string, o: TunnelSocketOptions): Promise<Duplex> {
  const { default: WebSocket, createWebSocketStream } = await import('ws');
  const ws = new WebSocket(url, {
    headers: o.headers ?? {},
    perMessageDeflate: false,
    handshakeTimeout: o.timeoutMs ?? 30_000,
    maxPayload: 16 << 20,
    ...(o.ca ? { ca: o.ca } : {}),
  });
  // The stream is made in the 'open' listener itself: ws emits 'open' and then reads what came with the upgrade's
  // answer (a server that speaks first, as sshd does with its banner, may send it at once), and a message that
  // arrives before the stream listens is dropped (a stream made after an await, a microtask later, missed it).
  return new Promise<Duplex>((resolve, reject) => {
    ws.once('open', () => {
      const stream = createWebSocketStream(ws);
      // A closed or broken tunnel ends the stream; an error is the connection's end, not a crash.
      stream.on('error', () => stream.destroy());
      resolve(stream);
    });
    ws.once('unexpected-response', (_req, res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (d: Buffer) => {
        if (size < 65536) chunks.push(d);
        size += d.length;
      });
      res.on('error', () => {});
      res.on('end', () => {
        ws.terminate();
        reject(o.refused(res.statusCode ?? 0, Buffer.concat(chunks).toString('utf8').slice(0, 65536)));
      });
    });
    ws.once('error', (e) => reject(o.unreachable(e)));
  });
}

/** The JSON error body of an onmemos answer, parsed (undefined when it is not JSON). */
export function jsonBody(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** The `port=` of a tunnel request: 1 to 65535, else a bad_request. */
export function tunnelPort(q: URLSearchParams): number {
  const raw = q.get('port') ?? '';
  const n = Number(raw);
  if (!/^\d{1,5}$/.test(raw) || n < 1 || n > 65535) {
    throw new OnmemosError('port must be a number from 1 to 65535', { code: 'bad_request' });
  }
  return n;
}

/**
 * A TCP connection to 127.0.0.1:port where this process runs (an agent, inside its session): only the loopback,
 * so a tunnel reaches into a session and never through it. Nothing listening there is an `unavailable` error,
 * which the caller answers before the upgrade.
 */
export async function connectLoopback(port: number): Promise<Socket> {
  const { connect } = await import('node:net');
  return new Promise<Socket>((resolve, reject) => {
    const conn = connect({ port, host: '127.0.0.1' });
    conn.once('error', () =>
      reject(new OnmemosError(`nothing listens on port ${port} in the session`, { code: 'unavailable' })),
    );
    conn.once('connect', () => {
      conn.removeAllListeners('error');
      conn.on('error', () => {});
      resolve(conn);
    });
  });
}

/** The server side of a tunnel: `ws` and the byte stream `t` joined both ways, until either ends (then both do). */
export async function joinTunnel(ws: WebSocket, t: Duplex): Promise<void> {
  const { createWebSocketStream } = await import('ws');
  const stream = createWebSocketStream(ws);
  stream.on('error', () => {});
  t.on('error', () => {});
  const done = () => {
    t.destroy();
    stream.destroy();
  };
  stream.on('close', done);
  t.on('close', done);
  stream.pipe(t);
  t.pipe(stream);
  await new Promise<void>((resolve) => {
    if (ws.readyState === ws.CLOSED) resolve();
    else ws.once('close', () => resolve());
  });
  done();
}
