/**
 * The shape of a running command, shared by every transport (the agent's children, the exec WebSocket's client
 * and server, the SSH transport to come) and by everything that consumes one (the terminal attach, the buffered
 * execute, the SDK). It imports nothing of providers, commands or the server.
 */
import { constants as osConstants } from 'node:os';
import type { Readable, Writable } from 'node:stream';

export interface ExecSpec {
  /** argv, passed exactly: never joined into a string and re-split. */
  argv: string[];
  env?: Record<string, string>;
  cwd?: string;
  tty?: boolean;
  /** Attach stdin; without it the remote process reads EOF at once. */
  stdin?: boolean;
  cols?: number;
  rows?: number;
  /** TERM for a tty. */
  term?: string;
  /**
   * How the command runs, when not over the session's own exec transport: 'job' runs it once as a batch job
   * beside the session (Cloud Run Jobs; no stdin, no tty, output in the backend's logs). Only a provider whose
   * capabilities.exec lists the transport takes it (checkExecSpec).
   */
  via?: 'job';
  /** The caller kills the command after this long; a transport that can also bound it there (a job's task) does. */
  timeoutSeconds?: number;
  /**
   * The local provider only (every other transport ignores it): descriptors of this process that the command may
   * write its stdout / stderr to directly, instead of through the exec stream — the CLI's own fd 1 and 2. The
   * provider passes one only where that is safe and possible (a pipe, never a tty or a file; a session with a host
   * uid of its own; the fdpass module loads); what it does not pass is relayed as ever. In the agent, the
   * descriptors that came with the request (src/agent/main.ts).
   */
  outputFds?: { stdout?: number; stderr?: number };
}

export interface ExitStatus {
  /** The exit code, or null when killed by a signal. */
  code: number | null;
  signal?: NodeJS.Signals;
  /** The connection ended before the exit status came: the code (255) is onmemos', not the command's. */
  lost?: boolean;
}

/** One shape for every transport. Under a tty, stderr is empty (the tty merges it into stdout). */
export interface RemoteProcess {
  stdin: Writable;
  stdout: Readable;
  stderr: Readable;
  resize(cols: number, rows: number): void;
  /** Signals the remote process and, for SIGKILL, its whole process tree. */
  kill(signal?: NodeJS.Signals): void;
  exit: Promise<ExitStatus>;
}

const SIGNAL_NUMBERS = osConstants.signals as unknown as Record<string, number>;

/** Exit code of a finished process, the way shells report it: 128+N when killed by signal N. */
export function exitCodeOf(status: ExitStatus, signals: Record<string, number> = SIGNAL_NUMBERS): number {
  if (status.code !== null) return status.code;
  const n = status.signal ? signals[status.signal] : undefined;
  return 128 + (n ?? 1);
}

/** The name of signal number `n` on this platform (SIGINT for 2), or undefined. */
export function signalName(n: number): NodeJS.Signals | undefined {
  for (const [name, num] of Object.entries(SIGNAL_NUMBERS)) if (num === n) return name as NodeJS.Signals;
  return undefined;
}
