/**
 * A byte stream over a WebSocket: the client side of every tunnel (a workstation's TCP tunnel, the local agent's
 * `/tunnel`, an onmemos server's `/v1/sessions/{id}/tunnel`). Raw bytes both ways, sent as binary frames (text
 * frames are taken as bytes too), no subprotocol, no compression. A refused upgrade is the caller's error, from the
 * status and the body's text.
 */
import type { Duplex } from 'node:stream';

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
