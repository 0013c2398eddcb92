/**
 * The remote provider: the Provider contract over an onmemos server's /v1 API (undici for HTTP, ws for the
 * v5.channel.k8s.io exec stream), so every command works the same against a server as locally.
 */
import { PassThrough, Writable } from 'node:stream';
import {
  AuthError,
  ConflictError,
  ForbiddenError,
  NotFoundError,
  type OnmemosError,
  ProviderError,
  UnavailableError,
  UserError,
} from '../errors.js';
import type { CreateSessionRequest, Session, SessionFilter } from '../session/model.js';
import { CHANNEL, closeFrame, exitFromStatus, frame, parseFrame, resizeFrame, V5 } from '../tty/channel.js';
import type { Capabilities, ExecSpec, ExitStatus, Provider, RemoteProcess } from './provider.js';

export interface RemoteOptions {
  server: string;
  apiKey?: string;
}

/** The typed error for an error response of the API. */
export function errorFromResponse(status: number, body: unknown): OnmemosError {
  const e = (body as { error?: { code?: string; message?: string } } | undefined)?.error;
  const message = e?.message ?? `the server answered HTTP ${status}`;
  if (status === 401) return new AuthError(message, { hint: 'set ONMEMOS_API_KEY or --api-key' });
  if (status === 403) return new ForbiddenError(message);
  if (status === 404) return new NotFoundError(message);
  if (status === 409) return new ConflictError(message);
  if (status === 400 || status === 413 || status === 422) return new UserError(message);
  if (status === 503) return new UnavailableError(message);
  return new ProviderError(message);
}

export class RemoteProvider implements Provider {
  readonly kind = 'remote' as const;
  readonly capabilities: Capabilities = {
    oneShot: true,
    shell: true,
    tty: true,
    persistentStorage: true,
  };
  private readonly base: URL;

  constructor(private readonly opts: RemoteOptions) {
    try {
      this.base = new URL(opts.server);
    } catch {
      throw new UserError(`invalid server URL ${JSON.stringify(opts.server)}`);
    }
    if (this.base.protocol !== 'http:' && this.base.protocol !== 'https:') {
      throw new UserError(`the server URL must be http:// or https://, not ${this.base.protocol}`);
    }
  }

  private url(path: string, query?: URLSearchParams): URL {
    const u = new URL(path.replace(/^\//, ''), this.base.href.endsWith('/') ? this.base.href : `${this.base.href}/`);
    if (query) u.search = query.toString();
    return u;
  }

  /** One API call: JSON in and out, errors as typed errors. */
  async call<T>(method: string, path: string, body?: unknown, query?: URLSearchParams): Promise<T> {
    const { request } = await import('undici');
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.opts.apiKey) headers['x-api-key'] = this.opts.apiKey;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res: Awaited<ReturnType<typeof request>>;
    try {
      res = await request(this.url(path, query), {
        method: method as 'GET',
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw new UnavailableError(`cannot reach the onmemos server at ${this.base.origin}: ${(e as Error).message}`, {
        cause: e,
      });
    }
    const text = await res.body.text();
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      throw new ProviderError(
        `the server at ${this.base.origin} answered HTTP ${res.statusCode} with something that is not JSON`,
      );
    }
    if (res.statusCode >= 400) throw errorFromResponse(res.statusCode, json);
    return json as T;
  }

  create(req: CreateSessionRequest): Promise<Session> {
    return this.call('POST', '/v1/sessions', req);
  }

  get(id: string): Promise<Session> {
    return this.call('GET', `/v1/sessions/${encodeURIComponent(id)}`);
  }

  list(filter: SessionFilter = {}): Promise<Session[]> {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(filter)) if (v) q.set(k, v);
    return this.call('GET', '/v1/sessions', undefined, q);
  }

  async delete(id: string): Promise<void> {
    await this.call('DELETE', `/v1/sessions/${encodeURIComponent(id)}`);
  }

  /** The server knows its provider's login shell; /connect says which. */
  async loginShell(id: string): Promise<string[]> {
    const info = await this.call<{ shell?: string[] }>('GET', `/v1/sessions/${encodeURIComponent(id)}/connect`);
    return Array.isArray(info.shell) && info.shell.length > 0 ? info.shell : ['/bin/sh', '-l'];
  }

  async exec(id: string, spec: ExecSpec): Promise<RemoteProcess> {
    const { default: WebSocket } = await import('ws');
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
    const u = this.url(`/v1/sessions/${encodeURIComponent(id)}/exec`, q);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(u, [V5], {
      headers: this.opts.apiKey ? { 'x-api-key': this.opts.apiKey } : {},
      perMessageDeflate: false,
    });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('unexpected-response', (_req, res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d));
        res.on('end', () => {
          let body: unknown;
          try {
            body = JSON.parse(text);
          } catch {}
          reject(errorFromResponse(res.statusCode ?? 500, body));
        });
      });
      ws.once('error', (e) =>
        reject(new UnavailableError(`cannot reach the onmemos server at ${this.base.origin}: ${e.message}`)),
      );
    });

    const stdout = new PassThrough();
    const stderr = new PassThrough();
    let status: ExitStatus | undefined;
    const deliver = (to: PassThrough, payload: Buffer) => {
      if (payload.length > 0 && !to.write(payload)) {
        ws.pause();
        to.once('drain', () => ws.resume());
      }
    };
    ws.on('message', (d: Buffer) => {
      const f = parseFrame(d);
      if (!f) return;
      if (f.channel === CHANNEL.stdout) deliver(stdout, f.payload);
      else if (f.channel === CHANNEL.stderr) deliver(stderr, f.payload);
      else if (f.channel === CHANNEL.status) {
        const s = exitFromStatus(f.payload);
        if (s.message && s.code !== 0) stderr.write(`onmemos: ${s.message}\n`);
        status = { code: s.code };
      }
    });
    let closing = false;
    // Output already received is delivered before the exit is reported, to whoever is reading it.
    const drained = (st: PassThrough) =>
      st.readableEnded || st.destroyed || st.listenerCount('data') === 0
        ? Promise.resolve()
        : new Promise((r) => {
            st.once('end', r);
            st.once('close', r);
          });
    const exit = new Promise<ExitStatus>((resolve) => {
      ws.once('close', async () => {
        if (!status && !closing)
          stderr.write('onmemos: the connection to the server closed before the command ended\n');
        stdout.end();
        stderr.end();
        await Promise.all([drained(stdout), drained(stderr)]);
        resolve(status ?? { code: 255 });
      });
    });
    const send = (data: Buffer, cb?: (e?: Error | null) => void) => {
      if (ws.readyState === ws.OPEN) ws.send(data, cb);
      else cb?.();
    };
    const stdin = new Writable({
      write: (chunk: Buffer, _enc, cb) => send(frame(CHANNEL.stdin, chunk), () => cb()),
      final: (cb) => send(closeFrame(CHANNEL.stdin), () => cb()),
    });
    stdin.on('error', () => {});
    return {
      stdin,
      stdout,
      stderr,
      resize: (cols, rows) => send(resizeFrame(cols, rows)),
      // The protocol has no signal channel: closing the stream makes the server kill the process and its tree.
      kill: (signal = 'SIGKILL') => {
        closing = true;
        if (signal === 'SIGKILL') ws.terminate();
        else ws.close(1000);
      },
      exit,
    };
  }
}
