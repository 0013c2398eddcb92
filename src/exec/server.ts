/**
 * The serving side of the exec WebSocket (v5.channel.k8s.io, v5.ts), shared by `onmemos serve` and the agent
 * inside each sandbox: the exec query as the Kubernetes API gives it (plus onmemos' env=, workdir=, cols=, rows=,
 * term=), and the pump between one WebSocket and one RemoteProcess. The client is not trusted: every frame is
 * checked, stdin is written with backpressure (reading from the socket pauses while the process's stdin is full),
 * output pauses while the socket is backed up, and the process dies with the connection (unless told to behave as a
 * kubelet: ServeExecOptions).
 */
import type { Readable } from 'node:stream';
import type { WebSocket, WebSocketServer } from 'ws';
import { UserError } from '../errors.js';
import { parseEnvAssignment, validateArgument, validateEnvTotal } from '../session/model.js';
import { type ExecSpec, type ExitStatus, exitCodeOf, type RemoteProcess } from './process.js';
import {
  CHANNEL,
  FORWARDED_SIGNALS,
  frame,
  MAX_MESSAGE_BYTES,
  parseFrame,
  parseResize,
  SERVER_SUBPROTOCOLS,
  startFailureStatus,
  statusFor,
  V5,
} from './v5.js';

/** Pause a process's output while this much is queued on its WebSocket. */
const WS_HIGH_WATER = 1 << 20;
/**
 * While reading from the client is paused (the process's stdin is full), a client that goes away is not seen: its
 * close waits unread behind the data it sent. A ping this often fails on a dead connection, which closes it.
 */
const PAUSED_PING_MS = 2_000;
const truthy = (v: string | null) => v === '1' || v === 'true';

/**
 * The WebSocket server both `onmemos serve` and the agent upgrade exec requests with (no server of its own):
 * messages of at most MAX_MESSAGE_BYTES, no compression, and the best of the exec subprotocols offered.
 */
export async function execWebSocketServer(): Promise<WebSocketServer> {
  const { WebSocketServer } = await import('ws');
  return new WebSocketServer({
    noServer: true,
    perMessageDeflate: false,
    maxPayload: MAX_MESSAGE_BYTES,
    handleProtocols: (offered) => SERVER_SUBPROTOCOLS.find((p) => offered.has(p)) ?? false,
  });
}

/**
 * The ExecSpec of an exec request's query; UserError (400) for anything malformed. `stdout=fd` / `stderr=fd` (the
 * local agent's own: the Kubernetes API's stdout=true is another value, and ignored as before) say the command
 * writes that stream to a descriptor passed with the request: `passed` has the descriptors that came with it (the
 * local agent's descriptor socket; none anywhere else, so there such a request is refused).
 */
export function execSpecFromQuery(q: URLSearchParams, passed?: { stdout?: number; stderr?: number }): ExecSpec {
  const argv = q.getAll('command');
  if (argv.length === 0) throw new UserError('give the command as one or more command= parameters', { code: 'usage' });
  for (const a of argv) {
    if (a.includes('\0')) throw new UserError('a command argument contains a NUL byte');
    validateArgument('a command argument', a);
  }
  const env = validateEnvTotal(Object.fromEntries(q.getAll('env').map((e) => parseEnvAssignment(e))));
  const workdir = q.get('workdir') ?? undefined;
  if (workdir !== undefined && (!workdir.startsWith('/') || workdir.includes('\0'))) {
    throw new UserError('workdir must be an absolute path');
  }
  const size = (name: string) => {
    const v = q.get(name);
    if (v === null) return undefined;
    const n = Number(v);
    if (!/^\d+$/.test(v) || n < 1 || n > 0xffff) throw new UserError(`${name} must be a whole number from 1 to 65535`);
    return n;
  };
  const term = q.get('term') ?? undefined;
  if (term !== undefined && !/^[A-Za-z0-9._+-]{1,64}$/.test(term)) throw new UserError('term must be a terminal name');
  const via = q.get('via') ?? undefined;
  if (via !== undefined && via !== 'job')
    throw new UserError(`via must be job, got ${JSON.stringify(via.slice(0, 20))}`);
  const timeout = q.get('timeout');
  if (timeout !== null && !(via && /^\d{1,6}$/.test(timeout) && Number(timeout) > 0)) {
    throw new UserError('timeout must be a whole number of seconds, with via=job');
  }
  const tty = truthy(q.get('tty'));
  const outputFds: NonNullable<ExecSpec['outputFds']> = {};
  for (const name of ['stdout', 'stderr'] as const) {
    if (!q.getAll(name).includes('fd')) continue;
    const fd = passed?.[name];
    if (fd === undefined) throw new UserError(`the request passes ${name} as a descriptor, but none came with it`);
    outputFds[name] = fd;
  }
  const passing = outputFds.stdout !== undefined || outputFds.stderr !== undefined;
  if (passing && (tty || via)) throw new UserError('output descriptors cannot be passed with tty or via');
  return {
    argv,
    tty,
    stdin: truthy(q.get('stdin')),
    env,
    cwd: workdir,
    cols: size('cols'),
    rows: size('rows'),
    term,
    ...(via ? { via } : {}),
    ...(timeout !== null ? { timeoutSeconds: Number(timeout) } : {}),
    ...(passing ? { outputFds } : {}),
  };
}

/** Where a server differs from onmemos' own: the defaults are onmemos'; test/fakes/kube sets them as a kubelet has them. */
export interface ServeExecOptions {
  /**
   * What becomes of the command when the client goes away before it ends. 'kill' (default): it and everything it
   * started are killed, so nothing is left behind. 'leave', as a Kubernetes kubelet does: without a tty it runs on
   * with its stdin closed and its output discarded; with one it gets SIGHUP, as when its terminal closes.
   */
  onClientGone?: 'kill' | 'leave';
  /** Honour onmemos' signal channel 16 (default true). Kubernetes has no such channel, so a kubelet ignores it. */
  signals?: boolean;
  /** The metav1.Status sent on channel 3 once the command has ended (default: statusFor with the argv). */
  status?: (exit: ExitStatus) => Record<string, unknown>;
}

/**
 * Runs one exec over an open WebSocket: starts the process with `start`, pumps frames both ways, sends the exit
 * status on channel 3 and closes. Frames that arrive while the process starts are held (bounded by the socket
 * being paused). A client that goes away kills the process and everything it started (opts.onClientGone).
 */
export async function serveExec(
  ws: WebSocket,
  spec: ExecSpec,
  start: () => Promise<RemoteProcess>,
  opts: ServeExecOptions = {},
): Promise<void> {
  ws.on('error', () => {}); // a broken client ends with 'close', which kills the process
  const stdin = !!spec.stdin;
  ws.pause(); // nothing is read from the client until the process can take it
  let proc: RemoteProcess;
  try {
    proc = await start();
  } catch (e) {
    ws.resume(); // the closing handshake needs the client's close frame read
    if (ws.readyState === ws.OPEN) {
      const status = startFailureStatus(e instanceof Error ? e.message : String(e));
      ws.send(frame(CHANNEL.status, JSON.stringify(status)), () => ws.close(1000));
    }
    return;
  }
  let ended = false;
  /** A client that forwards a signal is being interrupted: once the command ends, what it started goes too. */
  let interrupted = false;
  const onClose = () => {
    if (ended) return;
    if (opts.onClientGone !== 'leave') return proc.kill('SIGKILL'); // a client that goes away leaves no process behind
    if (spec.tty) proc.kill('SIGHUP');
    else proc.stdin.end();
    // Output goes nowhere from now on (the pumps drop it), but is still read, so that the command never blocks on it.
    proc.stdout.resume();
    proc.stderr.resume();
  };
  ws.once('close', onClose);
  if (ws.readyState !== ws.OPEN) onClose();
  const v5 = ws.protocol === V5;
  proc.stdin.on('error', () => {});
  proc.stdout.on('error', () => {});
  proc.stderr.on('error', () => {});
  /** Set while reading from the client waits for the process's stdin to drain (the bound on buffered stdin). */
  let held: NodeJS.Timeout | undefined;
  const release = () => {
    if (!held) return;
    clearInterval(held);
    held = undefined;
    proc.stdin.off('drain', release);
    if (ws.readyState === ws.OPEN) ws.resume();
  };
  const hold = () => {
    if (held) return;
    ws.pause();
    held = setInterval(() => {
      if (ws.readyState === ws.OPEN) ws.ping();
    }, PAUSED_PING_MS);
    proc.stdin.once('drain', release);
  };
  ws.once('close', release);
  ws.on('message', (d: Buffer, isBinary: boolean) => {
    if (!isBinary) return; // kubectl and client-node send binary frames only
    const f = parseFrame(d);
    if (!f) return;
    if (f.channel === CHANNEL.stdin) {
      if (stdin && f.payload.length > 0 && !proc.stdin.writableEnded && !proc.stdin.write(f.payload)) hold();
    } else if (f.channel === CHANNEL.resize) {
      const size = parseResize(f.payload);
      if (size) proc.resize(size.cols, size.rows);
    } else if (f.channel === CHANNEL.signal && opts.signals !== false) {
      const name = f.payload.toString('latin1') as NodeJS.Signals;
      if (FORWARDED_SIGNALS.includes(name)) {
        interrupted = true;
        proc.kill(name);
      }
    } else if (f.channel === CHANNEL.close && v5 && f.payload[0] === CHANNEL.stdin) proc.stdin.end();
  });
  if (!stdin) proc.stdin.end();
  ws.resume();

  ws.send(frame(CHANNEL.stdout)); // the stream is up
  const pump = (stream: Readable, channel: number) =>
    new Promise<void>((resolve) => {
      // Bytes of this stream handed to the socket and not yet written out: the output pauses above WS_HIGH_WATER
      // and resumes from the write callback that brings it to half of that (no polling: a timer would leave the
      // pipe idle between checks).
      let queued = 0;
      let paused = false;
      stream.on('data', (d: Buffer) => {
        if (ws.readyState !== ws.OPEN) return;
        const f = frame(channel, d);
        queued += f.length;
        ws.send(f, () => {
          queued -= f.length;
          if (paused && queued <= WS_HIGH_WATER / 2) {
            paused = false;
            stream.resume();
          }
        });
        if (queued > WS_HIGH_WATER && !paused) {
          paused = true;
          stream.pause();
        }
      });
      stream.on('error', () => resolve());
      stream.once('end', () => resolve());
      stream.once('close', () => resolve());
    });
  const [status] = await Promise.all([proc.exit, pump(proc.stdout, CHANNEL.stdout), pump(proc.stderr, CHANNEL.stderr)]);
  ended = true;
  release(); // the process is gone: read on, so the closing handshake below is seen
  if (interrupted) proc.kill('SIGKILL');
  const result = opts.status ? opts.status(status) : statusFor(exitCodeOf(status), spec.argv);
  if (ws.readyState === ws.OPEN) ws.send(frame(CHANNEL.status, JSON.stringify(result)), () => ws.close(1000));
}
