/**
 * The Provider contract: every backend (the local sandbox, GKE, Cloud Run, Workstations, a remote onmemos
 * server) implements this, and every command is written against it alone.
 */
import type { Readable, Writable } from 'node:stream';
import type { CreateSessionRequest, ProviderKind, Session, SessionFilter } from '../session/model.js';

export interface Capabilities {
  oneShot: boolean;
  shell: boolean;
  tty: boolean;
  persistentStorage: boolean;
}

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
}

export interface ExitStatus {
  /** The exit code, or null when killed by a signal. */
  code: number | null;
  signal?: NodeJS.Signals;
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

export type Progress = (message: string) => void;

export interface Provider {
  readonly kind: ProviderKind;
  readonly capabilities: Capabilities;
  create(req: CreateSessionRequest, progress?: Progress): Promise<Session>;
  /** NotFoundError when absent. */
  get(id: string): Promise<Session>;
  list(filter?: SessionFilter): Promise<Session[]>;
  exec(id: string, spec: ExecSpec): Promise<RemoteProcess>;
  /** NotFoundError when absent. */
  delete(id: string): Promise<void>;
  /** Login shell argv for `onmemos shell` (bash if present, else sh). */
  loginShell?(id: string): Promise<string[]>;
}

/** Exit code of a finished process, the way shells report it: 128+N when killed by signal N. */
export function exitCodeOf(status: ExitStatus, signals: Record<string, number>): number {
  if (status.code !== null) return status.code;
  const n = status.signal ? signals[status.signal] : undefined;
  return 128 + (n ?? 1);
}
