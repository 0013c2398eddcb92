/**
 * The client side of the exec WebSocket (v5.channel.k8s.io, v5.ts): one function that turns a WebSocket URL
 * into a RemoteProcess. The remote provider uses it against `onmemos serve`, the local provider against the agent
 * inside each sandbox (over a unix socket, `ws+unix:` URLs). The peer is not trusted: frames are parsed with
 * bounds, and a peer that floods output is paused, not buffered without bound.
 */
import { PassThrough, Writable } from 'node:stream';
import type { WebSocket } from 'ws';
import { type OnmemosError, UnavailableError } from '../errors.js';
import type { ExecSpec, ExitStatus, RemoteProcess } from './process.js';
import { parseUnixUrl, UpgradeRefused, unixWebSocket } from './unix-ws.js';
import {
  CHANNEL,
  closeFrame,
  exitFromStatus,
  FORWARDED_SIGNALS,
  frame,
  MAX_MESSAGE_BYTES,
  parseFrame,
  resizeFrame,
  signalFrame,
  V5,
} from './v5.js';

/** stdin goes in frames of at most this much payload, so that no frame exceeds what the server accepts. */
const STDIN_FRAME_PAYLOAD = MAX_MESSAGE_BYTES - 1;

export interface ExecClientOptions {
  /** `ws:`, `wss:` or `ws+unix:` URL of the exec endpoint, without the query. */
  url: string;
  headers?: Record<string, string>;
  /** Names the peer in messages ("the onmemos server at http://…", "the session's agent"). */
  peer: string;
  /** The typed error for a refused upgrade (status and JSON body). */
  refused: (status: number, body: unknown) => OnmemosError;
  /** The query, when not onmemos' own (execQuery): the Kubernetes API takes no env=, workdir=, cols=, rows=. */
  query?: URLSearchParams;
  /**
   * For a `ws+unix:` URL, a connection to the peer already made (the local provider's descriptor socket, its
   * descriptors sent): the WebSocket goes over it instead of a new connection to `url` (which still names the path).
   */
  socket?: import('node:net').Socket;
  /** TLS for a `wss:` peer with its own CA or client certificate (a kubeconfig's cluster and user). */
  tls?: {
    ca?: string | Buffer;
    cert?: string | Buffer;
    key?: string | Buffer;
    rejectUnauthorized?: boolean;
    servername?: string;
  };
}

/** The exec query of the Kubernetes API (command= once per argv element, stdin, tty) plus onmemos' env=, workdir=, cols=, rows=, term=, and via= (with timeout=). */
export function execQuery(spec: ExecSpec): URLSearchParams {
  const q = new URLSearchParams();
  for (const a of spec.argv) q.append('command', a);
  if (spec.stdin) q.set('stdin', '1');
  if (spec.tty) q.set('tty', '1');
  for (const [k, v] of Object.entries(spec.env ?? {})) q.append('env', `${k}=${v}`);
  if (spec.cwd) q.set('workdir', spec.cwd);
  if (spec.tty && spec.cols && spec.rows) {
    q.set('cols', String(spec.cols));
    q.set('rows', String(spec.rows));
  }
  if (spec.tty && spec.term) q.set('term', spec.term);
  if (spec.via) q.set('via', spec.via);
  if (spec.via && spec.timeoutSeconds) q.set('timeout', String(Math.ceil(spec.timeoutSeconds)));
  return q;
}

export async function openExec(spec: ExecSpec, opts: ExecClientOptions): Promise<RemoteProcess> {
  const query = (opts.query ?? execQuery(spec)).toString();
  const unix = parseUnixUrl(opts.url);
  let ws: WebSocket;
  /** Settles once the upgrade is done, or with the typed error of a refusal or of a peer out of reach. */
  let opened: Promise<void>;
  const unreachable = (e: Error) => new UnavailableError(`cannot reach ${opts.peer}: ${e.message}`);
  if (unix) {
    // A local agent: the upgrade without node:http and node:crypto (unix-ws.ts), over the connection the caller
    // made (its descriptors sent first) or a new one.
    const socket = opts.socket ?? (await import('node:net')).connect(unix.socketPath);
    const made = await unixWebSocket(socket, {
      path: `${unix.path}?${query}`,
      protocols: [V5],
      maxPayload: MAX_MESSAGE_BYTES,
    });
    ws = made.ws;
    opened = made.opened.catch((e: Error) => {
      if (!(e instanceof UpgradeRefused)) throw unreachable(e);
      let body: unknown;
      try {
        body = JSON.parse(e.body);
      } catch {}
      throw opts.refused(e.status, body);
    });
  } else {
    const { default: WebSocketClass } = await import('ws');
    const client = new WebSocketClass(`${opts.url}?${query}`, [V5], {
      ...opts.tls,
      headers: opts.headers ?? {},
      perMessageDeflate: false,
      maxPayload: MAX_MESSAGE_BYTES,
    });
    ws = client;
    opened = new Promise<void>((resolve, reject) => {
      client.once('open', () => resolve());
      client.once('unexpected-response', (_req, res) => {
        let text = '';
        res.on('data', (d: Buffer) => {
          if (text.length < 65536) text += d;
        });
        res.on('end', () => {
          let body: unknown;
          try {
            body = JSON.parse(text);
          } catch {}
          reject(opts.refused(res.statusCode ?? 500, body));
        });
        res.on('error', () => reject(opts.refused(res.statusCode ?? 500, undefined)));
      });
      client.once('error', (e) => reject(unreachable(e)));
    });
    opened.catch(() => {}); // awaited below, once every handler is in place
  }
  // Output is held up to 1 MiB before the socket is paused: with the default 16 KiB, each 64 KiB frame would
  // pause and resume the socket (two syscalls and a wake-up per frame).
  const stdout = new PassThrough({ highWaterMark: 1 << 20 });
  const stderr = new PassThrough({ highWaterMark: 1 << 20 });
  let status: ExitStatus | undefined;
  const deliver = (to: PassThrough, payload: Buffer) => {
    if (to.destroyed || to.writableEnded) return; // the reader went away: output is dropped, the status still comes
    if (payload.length > 0 && !to.write(payload) && !ws.isPaused) {
      ws.pause();
      // A stream destroyed while full (the reader went away: `| head -1`) never drains: read on all the same, or
      // the exit status and the close behind the output would never be seen.
      const resume = () => {
        to.off('drain', resume);
        to.off('close', resume);
        ws.resume();
      };
      to.once('drain', resume);
      to.once('close', resume);
    }
  };
  let closing = false;
  let settle: (s: ExitStatus) => void = () => {};
  /** The exit, once the output received before it has been delivered to whoever reads it. */
  const finish = async (s: ExitStatus) => {
    stdout.end();
    stderr.end();
    // A reader that takes its listener on just after the exec opened (the status may come with the upgrade's
    // answer) still gets what is buffered first: its data flows on the next tick, before this turn ends.
    await new Promise((r) => setImmediate(r));
    await Promise.all([drained(stdout), drained(stderr)]);
    settle(s);
  };
  ws.on('message', (d: Buffer, isBinary: boolean) => {
    if (!isBinary || status) return;
    const f = parseFrame(d);
    if (!f) return;
    if (f.channel === CHANNEL.stdout) deliver(stdout, f.payload);
    else if (f.channel === CHANNEL.stderr) deliver(stderr, f.payload);
    else if (f.channel === CHANNEL.status) {
      const s = exitFromStatus(f.payload);
      if (s.message && s.code !== 0) stderr.write(`onmemos: ${s.message}\n`);
      status = { code: s.code };
      // The status comes after all the output (the server sends it once both streams ended): the exit is known
      // now, without waiting for the closing handshake that follows (a round trip to a server that may be busy
      // starting the next command). The server closes the connection; nothing of the command is left to kill.
      void finish(status);
    }
  });
  // Output already received is delivered before the exit is reported, to whoever is reading it.
  const drained = (st: PassThrough) =>
    st.readableEnded || st.destroyed || st.listenerCount('data') === 0
      ? Promise.resolve()
      : new Promise((r) => {
          st.once('end', r);
          st.once('close', r);
        });
  const exit = new Promise<ExitStatus>((resolve) => {
    settle = resolve;
    ws.once('close', () => {
      if (status) return; // settled by the status
      if (!closing) stderr.write(`onmemos: the connection to ${opts.peer} closed before the command ended\n`);
      void finish({ code: 255, lost: true });
    });
  });
  const send = (data: Buffer, cb?: (e?: Error | null) => void) => {
    if (ws.readyState === ws.OPEN) ws.send(data, cb);
    else cb?.();
  };
  const stdin = new Writable({
    // A large write (an SDK caller's one big Buffer) goes in several frames; the last one's callback is the drain.
    write: (chunk: Buffer, _enc, cb) => {
      for (let at = 0; at + STDIN_FRAME_PAYLOAD < chunk.length; at += STDIN_FRAME_PAYLOAD) {
        send(frame(CHANNEL.stdin, chunk.subarray(at, at + STDIN_FRAME_PAYLOAD)));
      }
      const last = Math.floor(Math.max(0, chunk.length - 1) / STDIN_FRAME_PAYLOAD) * STDIN_FRAME_PAYLOAD;
      send(frame(CHANNEL.stdin, chunk.subarray(last)), () => cb());
    },
    final: (cb) => send(closeFrame(CHANNEL.stdin), () => cb()),
  });
  stdin.on('error', () => {});
  // Every handler is in place before the upgrade completes: frames that arrive with the upgrade response (a
  // fast command's output, status and close) are emitted at once, before an await after 'open' would resume.
  await opened;

  // After the upgrade, socket errors end the stream like a close does (the exit says so); never unhandled.
  ws.on('error', () => {});
  return {
    stdin,
    stdout,
    stderr,
    resize: (cols, rows) => send(resizeFrame(cols, rows)),
    // SIGKILL closes the stream, which makes the server kill the process and everything it started. Other
    // signals travel on onmemos' signal channel; a server that ignores it still kills on the close that follows.
    kill: (signal = 'SIGKILL') => {
      if (signal !== 'SIGKILL' && FORWARDED_SIGNALS.includes(signal)) return send(signalFrame(signal));
      closing = true;
      ws.terminate();
    },
    exit,
  };
}
