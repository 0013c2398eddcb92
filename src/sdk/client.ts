/**
 * The TypeScript SDK: `import { OnMemOSClient } from 'onmemos'`. The document's client methods in TypeScript
 * style, a streaming `exec` that returns a process-like object, and disposable sessions as the port of the
 * document's context managers:
 *
 *   const client = new OnMemOSClient('http://localhost:8080', process.env.ONMEMOS_API_KEY);
 *   await using s = await client.session({ template: 'python', namespace: 'team-a', user: 'alice' });
 *   const r = await s.execute('python3 --version');
 */
import { exitCodeOf, type RemoteProcess } from '../exec/process.js';
import type { CreateOptions } from '../providers/provider.js';
import { RemoteProvider } from '../providers/remote.js';
import {
  type ConnectInfo,
  type CreateSessionRequest,
  type ExecuteResult,
  type LimitsInput,
  parseCreateRequest,
  type Session,
  type SessionFilter,
} from '../session/model.js';

export type { ConnectInfo };

export interface ExecOptions {
  stdin?: boolean;
  tty?: boolean;
  env?: Record<string, string>;
  cwd?: string;
  cols?: number;
  rows?: number;
}

/** A running command: its streams, plus `wait()` for its exit code (128+N when killed by signal N). */
export interface ClientProcess extends RemoteProcess {
  wait(): Promise<number>;
}

/** The API's create request: the document's fields, and limits as `cpu`, `memory`, `pids`, `disk`. */
export type SessionRequest = Partial<Omit<CreateSessionRequest, 'env' | 'limits'>> & {
  env?: Record<string, string>;
} & LimitsInput;

export class OnMemOSClient {
  private readonly remote: RemoteProvider;

  constructor(baseUrl: string, apiKey?: string) {
    this.remote = new RemoteProvider({ server: baseUrl, apiKey });
  }

  /**
   * Creates a session; fields and defaults as the document gives them (provider `auto`, template `python`...).
   * `onProgress` receives the server's progress events; aborting `signal` makes the server remove what it made.
   */
  async createSession(request: SessionRequest = {}, opts: CreateOptions = {}): Promise<Session> {
    return this.remote.create(parseCreateRequest(request), opts);
  }

  startSession(id: string): Promise<Session> {
    return this.remote.start(id);
  }

  stopSession(id: string): Promise<Session> {
    return this.remote.stop(id);
  }

  /** Moves the session's expiry to `minutes` from now. */
  extendSession(id: string, minutes: number): Promise<Session> {
    return this.remote.extend(id, minutes);
  }

  getSession(id: string): Promise<Session> {
    return this.remote.get(id);
  }

  listSessions(filter: SessionFilter = {}): Promise<Session[]> {
    return this.remote.list(filter);
  }

  /** Runs `command` under `/bin/sh -c` and returns its buffered output, as the document's execute does. */
  executeSession(id: string, command: string, opts: { timeout?: number } = {}): Promise<ExecuteResult> {
    return this.remote.call('POST', `/v1/sessions/${encodeURIComponent(id)}/execute`, {
      command,
      ...(opts.timeout === undefined ? {} : { timeout: opts.timeout }),
    });
  }

  deleteSession(id: string): Promise<void> {
    return this.remote.delete(id);
  }

  /** How to reach the session; its WebSocket URLs are absolute URLs of this server. */
  connectSession(id: string): Promise<ConnectInfo> {
    return this.remote.connect(id);
  }

  /** Streams argv (passed exactly) in a session over the v5.channel.k8s.io WebSocket. */
  async exec(id: string, argv: string[], opts: ExecOptions = {}): Promise<ClientProcess> {
    const proc = await this.remote.exec(id, { argv, ...opts });
    if (!opts.stdin) proc.stdin.end();
    return {
      ...proc,
      wait: async () => exitCodeOf(await proc.exit),
    };
  }

  /** A session that is deleted when disposed: `await using s = await client.session({...})`. */
  async session(request: SessionRequest = {}): Promise<ClientSession> {
    return new ClientSession(this, await this.createSession(request));
  }

  /** Creates a session, runs `fn` with it, and deletes it however `fn` ends. */
  async withSession<T>(request: SessionRequest, fn: (s: ClientSession) => Promise<T>): Promise<T> {
    const s = await this.session(request);
    try {
      return await fn(s);
    } finally {
      await s.delete();
    }
  }
}

export class ClientSession {
  private deleted = false;
  constructor(
    private readonly client: OnMemOSClient,
    readonly info: Session,
  ) {}

  get id(): string {
    return this.info.id;
  }

  execute(command: string, opts: { timeout?: number } = {}): Promise<ExecuteResult> {
    return this.client.executeSession(this.id, command, opts);
  }

  exec(argv: string[], opts: ExecOptions = {}): Promise<ClientProcess> {
    return this.client.exec(this.id, argv, opts);
  }

  /** Deletes the session (once; a session already gone is not an error here). */
  async delete(): Promise<void> {
    if (this.deleted) return;
    this.deleted = true;
    await this.client.deleteSession(this.id).catch((e: { code?: string }) => {
      if (e?.code !== 'not_found') throw e;
    });
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.delete();
  }
}
