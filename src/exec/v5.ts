/**
 * The Kubernetes remotecommand framing over WebSocket (../shared/PROTOCOLS.md §1), the one streaming protocol
 * of onmemos: every binary message is one channel byte and a payload. 0 stdin, 1 stdout, 2 stderr, 3 status
 * (a metav1.Status, then the server closes), 4 resize, and (v5, client to server only) `[255, channel]` to
 * half-close a stream, `[255, 0]` being stdin EOF. Channel 16 is onmemos' own (client to server only): a signal
 * name (`SIGINT`) for the remote process; servers that do not know it ignore it, as kubectl never sends it.
 */
import type { ExitStatus } from './process.js';

export const CHANNEL = { stdin: 0, stdout: 1, stderr: 2, status: 3, resize: 4, signal: 16, close: 255 } as const;
export const V5 = 'v5.channel.k8s.io';
export const V4 = 'v4.channel.k8s.io';
/** What a server accepts, best first. Only v5 can say "stdin EOF" without closing the socket. */
export const SERVER_SUBPROTOCOLS = [V5, V4] as const;
/**
 * The largest WebSocket message either side accepts (a larger one closes the connection with 1009). A frame is at
 * most what one read of a pipe or pty produces, plus slack; senders split anything larger.
 */
export const MAX_MESSAGE_BYTES = 1 << 20;

export function frame(channel: number, payload: Buffer | string = Buffer.alloc(0)): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
  const out = Buffer.allocUnsafe(body.length + 1);
  out[0] = channel;
  body.copy(out, 1);
  return out;
}

export interface Frame {
  channel: number;
  payload: Buffer;
}

/** Splits a binary message; undefined for an empty message (which carries no channel). */
export function parseFrame(data: Buffer): Frame | undefined {
  if (data.length === 0) return undefined;
  return { channel: data[0]!, payload: data.subarray(1) };
}

/** `[255, channel]`: the client closed its side of `channel` (v5). */
export function closeFrame(channel: number): Buffer {
  return Buffer.from([CHANNEL.close, channel]);
}

/**
 * The metav1.Status a server sends on channel 3 when the process has ended (128+N for signal N). Given the argv,
 * the message is word for word the kubelet's (PROTOCOLS.md §1); clients read only the cause.
 */
export function statusFor(code: number, argv?: readonly string[]): Record<string, unknown> {
  if (code === 0) return { metadata: {}, status: 'Success' };
  const command = argv ? `error executing command [${argv.join(' ')}], ` : '';
  return {
    metadata: {},
    status: 'Failure',
    message: `command terminated with non-zero exit code: ${command}exit code ${code}`,
    reason: 'NonZeroExitCode',
    details: { causes: [{ reason: 'ExitCode', message: String(code) }] },
  };
}

/**
 * The metav1.Status for a command that could not be started at all (the API server's wording for its own
 * failures): the client reports the message and exits 125, onmemos' own failure code.
 */
export function startFailureStatus(message: string): Record<string, unknown> {
  return { metadata: {}, status: 'Failure', message, reason: 'InternalError', code: 500 };
}

/** The exit code in a metav1.Status from channel 3 (client-go reads it as an 8-bit unsigned integer). */
export function exitFromStatus(payload: Buffer | string): ExitStatus & { message?: string } {
  let status: {
    status?: string;
    reason?: string;
    message?: string;
    details?: { causes?: { reason?: string; message?: string }[] };
  };
  try {
    status = JSON.parse(payload.toString());
  } catch {
    return { code: 1, message: `unreadable status: ${payload.toString().slice(0, 200)}` };
  }
  if (status.status === 'Success') return { code: 0 };
  const cause = status.details?.causes?.find((c) => c.reason === 'ExitCode');
  const code = cause ? Number.parseInt(cause.message ?? '', 10) : Number.NaN;
  if (status.reason === 'NonZeroExitCode' && Number.isInteger(code) && code >= 0 && code <= 255) return { code };
  if (status.reason === 'InternalError') return { code: 125, message: status.message ?? 'the command could not start' };
  return { code: 1, message: status.message ?? 'the remote side reported a failure' };
}

/** A resize message: `{"Width":..,"Height":..}` from client-go, lower case from client-node; case-insensitive. */
export function parseResize(payload: Buffer | string): { cols: number; rows: number } | undefined {
  let raw: unknown;
  try {
    raw = JSON.parse(payload.toString());
  } catch {
    return undefined;
  }
  if (!raw || typeof raw !== 'object') return undefined;
  const get = (name: string) => {
    for (const [k, v] of Object.entries(raw as Record<string, unknown>)) if (k.toLowerCase() === name) return v;
    return undefined;
  };
  const cols = get('width');
  const rows = get('height');
  const ok = (n: unknown): n is number => Number.isInteger(n) && (n as number) > 0 && (n as number) <= 0xffff;
  return ok(cols) && ok(rows) ? { cols, rows } : undefined;
}

export function resizeFrame(cols: number, rows: number): Buffer {
  return frame(CHANNEL.resize, JSON.stringify({ Width: cols, Height: rows }));
}

/** `[16, "SIGINT"]`: deliver a signal to the remote process (an onmemos extension). */
export function signalFrame(signal: NodeJS.Signals): Buffer {
  return frame(CHANNEL.signal, signal);
}

/** The signals a client may ask for (never SIGKILL/SIGSTOP: closing the stream kills). */
export const FORWARDED_SIGNALS: readonly NodeJS.Signals[] = [
  'SIGINT',
  'SIGTERM',
  'SIGHUP',
  'SIGQUIT',
  'SIGUSR1',
  'SIGUSR2',
  'SIGWINCH',
  'SIGPIPE',
];
