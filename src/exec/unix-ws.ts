/**
 * The client side of a WebSocket over a local unix socket (`ws+unix:` URLs: a local session's agent), with the
 * upgrade done here instead of through node:http, and no node:crypto: those two are ~4 ms of every local exec's
 * start-up, for what a unix socket to our own agent does not need. The frames are still ws's (its Receiver and
 * Sender, through WebSocket.setSocket, as ws's own server and client use them), so only the handshake is ours:
 *
 * - Sec-WebSocket-Key comes from Math.random, not node:crypto, and Sec-WebSocket-Accept is not checked: both guard
 *   against caching intermediaries, and there are none on a unix socket. The peer is not trusted all the same (a
 *   session process can take its agent over): the answer's head is bounded, the body of a refusal too, and frames
 *   are ws's to parse.
 * - Frames to the peer carry a zero mask (which ws then skips applying): masking, too, is for intermediaries.
 */
import type { Socket } from 'node:net';
import type { WebSocket } from 'ws';

/** The answer's status line and headers may take this much; more is a broken peer. */
const MAX_HEAD_BYTES = 16 * 1024;
/** A refusal's body is read up to this much (the rest is not waited for). */
const MAX_BODY_BYTES = 64 * 1024;

/** An upgrade the peer answered with something other than 101. */
export class UpgradeRefused extends Error {
  constructor(
    readonly status: number,
    readonly body: string,
  ) {
    super(`the upgrade was answered ${status}`);
  }
}

export interface UnixWebSocketOptions {
  /** The request's path and query (`/exec?command=…`). */
  path: string;
  protocols: string[];
  maxPayload: number;
  /** How long the upgrade may take (default 30 s). */
  timeoutMs?: number;
}

/** `ws+unix:///run/x.sock:/exec` → the socket's path and the request's path; undefined for other URLs. */
export function parseUnixUrl(url: string): { socketPath: string; path: string } | undefined {
  if (!url.startsWith('ws+unix://')) return undefined;
  const rest = url.slice('ws+unix://'.length);
  const at = rest.indexOf(':');
  if (at <= 0) return undefined;
  return { socketPath: rest.slice(0, at), path: rest.slice(at + 1) || '/' };
}

/**
 * A WebSocket over `socket` (connecting or connected), returned at once so that the caller's listeners are in
 * place before anything arrives; `opened` settles when the upgrade is done ('open' has been emitted) or refused
 * (UpgradeRefused), or the connection failed (its error).
 */
export async function unixWebSocket(
  socket: Socket,
  o: UnixWebSocketOptions,
): Promise<{ ws: WebSocket; opened: Promise<void> }> {
  const { default: WebSocketClass } = await import('ws');
  // A WebSocket without an address is ws's own server-side shape; made a client here (masked frames out, unmasked
  // in), as initAsClient would have made it. ws's internals: covered by every local exec test.
  const ws = new (WebSocketClass as unknown as new (a: null, p: undefined, o: object) => WebSocket)(null, undefined, {
    autoPong: true,
    closeTimeout: 30_000,
    maxPendingAutoPongs: 60,
  });
  const internal = ws as unknown as {
    _isServer: boolean;
    _protocol: string;
    setSocket(socket: Socket, head: Buffer, options: object): void;
  };
  internal._isServer = false;
  const key = Buffer.from(Array.from({ length: 16 }, () => Math.floor(Math.random() * 256))).toString('base64');
  const opened = new Promise<void>((resolve, reject) => {
    let head: Buffer = Buffer.alloc(0);
    let refused: { status: number; length: number; body: Buffer[]; size: number } | undefined;
    const timer = setTimeout(() => fail(new Error('the upgrade took too long')), o.timeoutMs ?? 30_000);
    const done = () => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('error', fail);
      socket.off('close', onClose);
    };
    function fail(e: Error) {
      done();
      socket.destroy();
      reject(e);
    }
    const endRefused = () => {
      if (!refused) return;
      done();
      socket.destroy();
      reject(new UpgradeRefused(refused.status, Buffer.concat(refused.body).toString('utf8')));
    };
    function onClose() {
      if (refused) endRefused();
      else fail(new Error('the connection closed during the upgrade'));
    }
    function onData(d: Buffer) {
      if (refused) {
        refused.body.push(d);
        refused.size += d.length;
        if (refused.size >= Math.min(refused.length, MAX_BODY_BYTES)) endRefused();
        return;
      }
      head = head.length === 0 ? d : Buffer.concat([head, d]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) {
        if (head.length > MAX_HEAD_BYTES) fail(new Error('the upgrade answer is too long'));
        return;
      }
      if (end > MAX_HEAD_BYTES) return fail(new Error('the upgrade answer is too long'));
      const lines = head.subarray(0, end).toString('latin1').split('\r\n');
      const status = /^HTTP\/1\.1 (\d{3})(?: |$)/.exec(lines[0] ?? '');
      if (!status) return fail(new Error('the upgrade answer is not HTTP/1.1'));
      const headers = new Map<string, string>();
      for (const line of lines.slice(1)) {
        const colon = line.indexOf(':');
        if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
      }
      const rest = head.subarray(end + 4);
      const code = Number(status[1]);
      if (code !== 101) {
        const length = Number(headers.get('content-length') ?? Number.NaN);
        refused = {
          status: code,
          length: Number.isSafeInteger(length) && length >= 0 ? length : MAX_BODY_BYTES,
          body: [],
          size: 0,
        };
        onData(rest);
        return;
      }
      if (headers.get('upgrade')?.toLowerCase() !== 'websocket') {
        return fail(new Error('the upgrade answer is not a WebSocket upgrade'));
      }
      const protocol = headers.get('sec-websocket-protocol') ?? '';
      if (protocol !== '' && !o.protocols.includes(protocol)) {
        return fail(new Error(`the peer chose a subprotocol not offered: ${protocol.slice(0, 64)}`));
      }
      done();
      socket.pause(); // nothing is emitted between this listener going and ws's coming
      internal._protocol = protocol;
      internal.setSocket(socket, rest, {
        allowSynchronousEvents: true,
        generateMask: (mask: Buffer) => mask.fill(0),
        maxBufferedChunks: 256 * 1024,
        maxFragments: 16 * 1024,
        maxPayload: o.maxPayload,
        skipUTF8Validation: false,
      });
      socket.resume(); // paused explicitly above, it stays so for a new 'data' listener
      resolve();
    }
    socket.on('data', onData);
    socket.on('error', fail);
    socket.on('close', onClose);
    const request = [
      `GET ${o.path} HTTP/1.1`,
      'Host: localhost',
      'Upgrade: websocket',
      'Connection: Upgrade',
      `Sec-WebSocket-Key: ${key}`,
      'Sec-WebSocket-Version: 13',
      ...(o.protocols.length > 0 ? [`Sec-WebSocket-Protocol: ${o.protocols.join(', ')}`] : []),
      '',
      '',
    ].join('\r\n');
    socket.write(request);
  });
  opened.catch(() => {}); // the caller awaits it; a failure before it does is not unhandled
  return { ws, opened };
}
