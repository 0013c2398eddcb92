/**
 * The Provider contract: every backend (the local sandbox, GKE, Cloud Run, Workstations, a remote onmemos
 * server) implements this, and every command and the server are written against it alone. A new backend is a new
 * folder under src/providers/ that implements it, declares its capabilities as data, has an entry in the registry
 * (index.ts), and passes test/conformance/.
 */
import type { Duplex } from 'node:stream';
import { UnsupportedError, UserError } from '../errors.js';
import type { ExecSpec, RemoteProcess } from '../exec/process.js';
import {
  type ConnectInfo,
  type CreateSessionRequest,
  type Limits,
  MAX_TTL_MINUTES,
  NETWORK_MODES,
  type NetworkMode,
  type ProgressEvent,
  type ProviderKind,
  type Session,
  type SessionFilter,
  TEMPLATES,
  type Template,
} from '../session/model.js';

export type { ExecSpec, ExitStatus, RemoteProcess } from '../exec/process.js';

export type StorageKind = 'bucket' | 'filestore' | 'volume';
/**
 * How commands reach a session: the v5.channel.k8s.io exec WebSocket, SSH (workstations), or a one-shot batch
 * job beside the session (cloud_run: Cloud Run Jobs, `exec --via job`).
 */
export type ExecTransport = 'websocket' | 'ssh' | 'job';
/**
 * Whether a background process started by one exec keeps running while no exec or shell is open: `always` (a
 * sandbox, a pod), `cpu_always` only when the request asks for `cpu_always` (Cloud Run: with request-based CPU an
 * instance gets CPU only while it serves a request, so its processes are frozen in between), or `never`.
 */
export type BackgroundWhileIdle = 'always' | 'cpu_always' | 'never';

/** What a provider can do, as data: a request it cannot honour is refused before anything is made (checkRequest). */
export interface Capabilities {
  templates: readonly Template[];
  networks: readonly NetworkMode[];
  /** Storage a request's `storage` may ask for. The session's own /workspace is always there. */
  storage: readonly StorageKind[];
  /** Limits the backend enforces; asking for another with --require-limits is refused. */
  limits: readonly (keyof Limits)[];
  /** Whether the workspace outlives a stop/start, or a scale to zero. */
  persistentWorkspace: boolean;
  /** Whether background processes run between execs (see BackgroundWhileIdle); a request for `cpu_always` is refused on `never`. */
  backgroundWhileIdle: BackgroundWhileIdle;
  lifecycle: { start: boolean; stop: boolean; extend: boolean };
  exec: readonly ExecTransport[];
  tty: boolean;
  shell: boolean;
  /** The longest TTL a session may have, in minutes. */
  maxTtlMinutes: number;
  /** `nested_userns` (user namespaces inside the session). */
  nestedUserns: boolean;
  /** Runs the container image a request names (`image`, `--image`). */
  images: boolean;
}

/**
 * A provider's capabilities: everything a provider can do, less what `lacks` takes away. Each provider states only
 * where it differs.
 */
export function capabilities(lacks: Partial<Capabilities> = {}): Capabilities {
  return {
    templates: TEMPLATES,
    networks: NETWORK_MODES,
    storage: ['bucket', 'filestore', 'volume'],
    limits: ['cpus', 'memoryBytes', 'pids', 'diskBytes'],
    persistentWorkspace: true,
    backgroundWhileIdle: 'always',
    lifecycle: { start: true, stop: true, extend: true },
    exec: ['websocket'],
    tty: true,
    shell: true,
    maxTtlMinutes: MAX_TTL_MINUTES,
    nestedUserns: true,
    images: true,
    ...lacks,
  };
}

/** Refuses an exec a provider cannot run as asked (`via`), and what a job cannot take (stdin, a tty). */
export function checkExecSpec(kind: ProviderKind, caps: Capabilities, spec: ExecSpec): void {
  if (spec.via !== 'job') return;
  if (!caps.exec.includes('job')) {
    throw new UnsupportedError(`provider ${kind} runs no one-shot jobs`, {
      hint: '--via job is for cloud_run sessions (Cloud Run Jobs); drop it to run the command in the session',
    });
  }
  if (spec.tty || spec.stdin) {
    throw new UserError('a job reads no stdin and has no tty: drop -i/-t (and give no stdin) with --via job', {
      code: 'usage',
    });
  }
}

/** Whether a session made from `req` by a provider with `caps` keeps its background processes running between execs. */
export function runsInBackground(
  caps: Pick<Capabilities, 'backgroundWhileIdle'>,
  req: { cpu_always?: boolean },
): boolean {
  return caps.backgroundWhileIdle === 'always' || (caps.backgroundWhileIdle === 'cpu_always' && !!req.cpu_always);
}

export interface CreateOptions {
  /** Aborting stops the create and removes whatever it made; create then rejects with an InterruptedError. */
  signal?: AbortSignal;
  onProgress?: (e: ProgressEvent) => void;
}

export interface Provider {
  readonly kind: ProviderKind;
  readonly capabilities: Capabilities;
  create(req: CreateSessionRequest, opts?: CreateOptions): Promise<Session>;
  /** NotFoundError when absent. An expired session that is not yet removed is returned, with status `expired`. */
  get(id: string): Promise<Session>;
  list(filter?: SessionFilter): Promise<Session[]>;
  /** Streams a command in a running session. A shell is the exec of `connect(id).shell.argv` with a tty. */
  exec(id: string, spec: ExecSpec): Promise<RemoteProcess>;
  /** How to reach the session: its web URL, exec and shell WebSockets, SSH where the backend has it. */
  connect(id: string): Promise<ConnectInfo>;
  /** NotFoundError when absent. */
  delete(id: string): Promise<void>;
  /** Present when capabilities.lifecycle says so. */
  start?(id: string): Promise<Session>;
  stop?(id: string): Promise<Session>;
  /** Pushes the expiry `minutes` further from now (not from the old expiry), within maxTtlMinutes. */
  extend?(id: string, minutes: number): Promise<Session>;
  /**
   * Removes the expired sessions (and leftovers of creates that died); returns the ids removed. With `ifDue`, a
   * provider may skip a sweep that another process made lately (a create's: it looks at no other session).
   */
  reapExpired?(opts?: { ifDue?: boolean }): Promise<string[]>;
  /** One byte stream to a TCP port inside the session (`onmemos tunnel`), where the backend has a way there. */
  tunnel?(id: string, port: number): Promise<Duplex>;
}
