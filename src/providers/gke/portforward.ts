/**
 * A TCP port in a pod over the Kubernetes port-forward API, as the kubelet serves it over WebSocket (the protocol
 * of `pods/{name}/portforward` that the API server hands on to the kubelet; client-node's PortForward speaks it):
 *
 *   GET /api/v1/namespaces/{ns}/pods/{pod}/portforward?ports=N   Upgrade: websocket, subprotocol v4.channel.k8s.io
 *
 * Every message is one channel byte and its payload, both ways. Port i has the data channel 2i and the error
 * channel 2i+1; the server's first message on each is the port as 2 little-endian bytes. Bytes for the pod go on
 * the data channel; the error channel carries the kubelet's message when the connection inside the pod fails (as
 * `error forwarding port 7411 to pod …: … connection refused`), then the server closes. One WebSocket per
 * connection, one port each (channels 0 and 1). There is no half-close: the stream ends when the socket does.
 *
 * (kubectl ≥ 1.31 instead tunnels SPDY through the WebSocket, subprotocol `SPDY/3.1+portforward.k8s.io`, which the
 * API server itself unwraps; this client does not need SPDY.)
 */
import { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';

export const PORT_FORWARD_PROTOCOL = 'v4.channel.k8s.io';
const DATA = 0;
const ERROR = 1;
/** Bytes for the pod go in messages of at most this much payload. */
const MAX_PAYLOAD = 64 * 1024;

export interface PortForwardOptions {
  /** `ws:` or `wss:` URL of `…/pods/{pod}/portforward`, without the query. */
  url: string;
  port: number;
  headers?: Record<string, string>;
  tls?: Record<string, unknown>;
  /** How long the upgrade may take. */
  timeoutMs: number;
  /** The error for a refused upgrade (status and the body's text). */
  refused(status: number, body: string): Error;
  /** The error for a connection that could not be made at all. */
  unreachable(e: Error): Error;
  /** The error for the kubelet's message on the error channel (one line). */
  failed(message: string): Error;
}

/** The port in the pod as a byte stream: open once the upgrade is accepted, ended when the pod's side closes. */
export async function openPortForward(o: PortForwardOptions): Promise<Duplex> {
  const { default: WebSocketClass } = await import('ws');
  const ws = new WebSocketClass(`${o.url}?ports=${o.port}`, [PORT_FORWARD_PROTOCOL], {
    ...o.tls,
    headers: o.headers ?? {},
    perMessageDeflate: false,
    handshakeTimeout: o.timeoutMs,
    maxPayload: 16 << 20,
  });
  // Listening from the start: the first messages may come in the same read as the upgrade's answer.
  const stream = new PortForwardStream(ws, o.failed);
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => {
      stream.opened = true;
      resolve();
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
  return stream;
}

class PortForwardStream extends Duplex {
  /** Bytes of the port prefix still to skip on the data and error channels. */
  private readonly prefix = [2, 2];
  private errorText = '';
  /** Set once the upgrade is accepted; before that a close is the refusal's, reported by openPortForward. */
  opened = false;

  constructor(
    private readonly ws: WebSocket,
    private readonly failed: (message: string) => Error,
  ) {
    super({ allowHalfOpen: true });
    ws.on('message', (d: Buffer, isBinary: boolean) => {
      if (!isBinary || d.length === 0) return;
      const channel = d[0]!;
      if (channel !== DATA && channel !== ERROR) return;
      let payload = d.subarray(1);
      const skip = Math.min(this.prefix[channel]!, payload.length);
      this.prefix[channel]! -= skip;
      payload = payload.subarray(skip);
      if (payload.length === 0) return;
      if (channel === ERROR) {
        if (this.errorText.length < 4096) this.errorText += payload.toString('utf8');
        return;
      }
      if (!this.push(payload)) ws.pause();
    });
    ws.on('error', () => {}); // the close that follows ends the stream
    ws.once('close', () => {
      if (!this.opened) return void this.destroy();
      const message = this.errorText.replace(/\s+/g, ' ').trim();
      if (message) this.destroy(this.failed(message));
      else if (!this.readableEnded) this.push(null);
    });
  }

  override _read(): void {
    if (this.ws.isPaused) this.ws.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (e?: Error | null) => void): void {
    if (this.ws.readyState !== this.ws.OPEN) {
      done(new Error('the port-forward connection is closed'));
      return;
    }
    let left = chunk.length;
    if (left === 0) {
      done();
      return;
    }
    let failed: Error | undefined;
    for (let at = 0; at < chunk.length; at += MAX_PAYLOAD) {
      const piece = chunk.subarray(at, at + MAX_PAYLOAD);
      const frame = Buffer.allocUnsafe(piece.length + 1);
      frame[0] = DATA;
      piece.copy(frame, 1);
      this.ws.send(frame, { binary: true }, (e) => {
        if (e) failed ??= e;
        left -= piece.length;
        if (left === 0) done(failed);
      });
    }
  }

  override _destroy(e: Error | null, done: (e?: Error | null) => void): void {
    if (this.ws.readyState === this.ws.OPEN) this.ws.close(1000);
    else if (this.ws.readyState === this.ws.CONNECTING) this.ws.terminate();
    done(e);
  }
}
