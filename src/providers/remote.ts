/**
 * The remote provider: the Provider contract over an onmemos server's /v1 API (undici for HTTP, ws for the
 * v5.channel.k8s.io exec stream), so every command works the same against a server as locally.
 */
import type { Duplex } from 'node:stream';
import {
  errorFromResponse,
  InterruptedError,
  type OnmemosError,
  ProviderError,
  UnavailableError,
  UserError,
} from '../errors.js';
import { openExec } from '../exec/client.js';
import { jsonBody, openTunnelSocket } from '../exec/tunnel.js';
import {
  type ConnectInfo,
  type CreateSessionRequest,
  limitsInput,
  NDJSON,
  type ProviderKind,
  type Session,
  type SessionFilter,
  UNREACHABLE_HEADER,
} from '../session/model.js';
import {
  type Capabilities,
  type CreateOptions,
  capabilities,
  type ExecSpec,
  type Provider,
  type RemoteProcess,
} from './provider.js';

/** How long an abandoned create's removal may take (see RemoteProvider.create). */
const REMOVE_ABANDONED_MS = 5_000;

export interface RemoteOptions {
  server: string;
  apiKey?: string;
}

export class RemoteProvider implements Provider {
  readonly kind = 'remote' as const;
  /** The server checks each request against the provider it picks; here everything is passed on, jobs included. */
  readonly capabilities: Capabilities = capabilities({ exec: ['websocket', 'ssh', 'job'] });
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

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    const h: Record<string, string> = { accept: 'application/json', ...extra };
    if (this.opts.apiKey) h['x-api-key'] = this.opts.apiKey;
    return h;
  }

  private async send(
    method: string,
    path: string,
    body: unknown,
    query?: URLSearchParams,
    extra: { headers?: Record<string, string>; signal?: AbortSignal } = {},
  ) {
    const { request } = await import('undici');
    const headers = this.headers(extra.headers);
    if (body !== undefined) headers['content-type'] = 'application/json';
    try {
      return await request(this.url(path, query), {
        method: method as 'GET',
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: extra.signal,
      });
    } catch (e) {
      if (extra.signal?.aborted) throw new InterruptedError('interrupted: the request to the server was abandoned');
      throw new UnavailableError(`cannot reach the onmemos server at ${this.base.origin}: ${(e as Error).message}`, {
        cause: e,
      });
    }
  }

  private parse(status: number, text: string): unknown {
    try {
      return text ? JSON.parse(text) : undefined;
    } catch {
      throw new ProviderError(
        `the server at ${this.base.origin} answered HTTP ${status} with something that is not JSON`,
      );
    }
  }

  /** One API call: JSON in and out, errors as typed errors. */
  async call<T>(method: string, path: string, body?: unknown, query?: URLSearchParams): Promise<T> {
    const res = await this.send(method, path, body, query);
    const json = this.parse(res.statusCode, await res.body.text());
    if (res.statusCode >= 400) throw errorFromResponse(res.statusCode, json);
    return json as T;
  }

  /**
   * The API's create request (the document's fields, plus limits as `cpu`, `memory`, `pids`, `disk`). With a
   * progress listener it asks for the streamed form, so the server's progress reaches this terminal; an abort
   * closes the connection, and the server removes what it had made. The server may finish the create before it
   * sees the connection close (the answer then goes nowhere): so an abort also removes the session whose id the
   * progress named, before it throws.
   */
  async create(req: CreateSessionRequest, opts: CreateOptions = {}): Promise<Session> {
    const { limits, ...rest } = req;
    const body = { ...rest, ...limitsInput(limits) };
    const res = await this.send('POST', '/v1/sessions', body, undefined, {
      headers: { accept: `${NDJSON}, application/json;q=0.5` },
      signal: opts.signal,
    });
    const type = String(res.headers['content-type'] ?? '');
    if (res.statusCode >= 400 || !type.startsWith(NDJSON)) {
      const json = this.parse(res.statusCode, await res.body.text());
      if (res.statusCode >= 400) throw errorFromResponse(res.statusCode, json);
      return this.absolute(json as Session);
    }
    let session: Session | undefined;
    let failure: OnmemosError | undefined;
    let pending = '';
    let named: string | undefined;
    const line = (text: string) => {
      if (!text.trim()) return;
      const msg = this.parse(res.statusCode, text) as {
        progress?: Parameters<NonNullable<CreateOptions['onProgress']>>[0];
        session?: Session;
        error?: unknown;
      };
      if (msg.progress) {
        if (typeof msg.progress.id === 'string') named = msg.progress.id;
        opts.onProgress?.(msg.progress);
      } else if (msg.session) session = msg.session;
      else if (msg.error) failure = errorFromResponse(500, msg);
    };
    try {
      for await (const chunk of res.body) {
        pending += (chunk as Buffer).toString('utf8');
        let nl = pending.indexOf('\n');
        while (nl >= 0) {
          line(pending.slice(0, nl));
          pending = pending.slice(nl + 1);
          nl = pending.indexOf('\n');
        }
        if (pending.length > 1 << 20) throw new ProviderError('the server sent a create progress line over 1 MiB');
      }
      line(pending);
    } catch (e) {
      if (opts.signal?.aborted) {
        if (named) await this.removeAbandoned(named);
        throw new InterruptedError('interrupted: the server removes the session it was making');
      }
      throw e;
    }
    if (failure) throw failure;
    if (!session) throw new ProviderError(`the server at ${this.base.origin} ended the create without a session`);
    return this.absolute(session);
  }

  /** Removes a session whose create was abandoned (see create); gone already, or unreachable, is no error. */
  private async removeAbandoned(id: string): Promise<void> {
    const signal = AbortSignal.timeout(REMOVE_ABANDONED_MS);
    await this.send('DELETE', `/v1/sessions/${encodeURIComponent(id)}`, undefined, undefined, { signal })
      .then((res) => res.body.dump())
      .catch(() => {});
  }

  /** A session as the server shows it, with the path of its web terminal made a URL of this server. */
  private absolute(s: Session): Session {
    return s.web_terminal ? { ...s, web_terminal: new URL(s.web_terminal, this.base).href } : s;
  }

  async get(id: string): Promise<Session> {
    return this.absolute(await this.call<Session>('GET', `/v1/sessions/${encodeURIComponent(id)}`));
  }

  async list(filter: SessionFilter = {}): Promise<Session[]> {
    return (await this.listAll(filter)).sessions;
  }

  /** The server's list and the providers it could not reach. */
  async listAll(
    filter: SessionFilter = {},
  ): Promise<{ sessions: Session[]; unreachable: { provider: ProviderKind; message: string }[] }> {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(filter)) if (v) q.set(k, v);
    const res = await this.send('GET', '/v1/sessions', undefined, q);
    const json = this.parse(res.statusCode, await res.body.text());
    if (res.statusCode >= 400) throw errorFromResponse(res.statusCode, json);
    let unreachable: { provider: ProviderKind; message: string }[] = [];
    const header = res.headers[UNREACHABLE_HEADER];
    if (typeof header === 'string') {
      try {
        const parsed = JSON.parse(decodeURIComponent(header));
        if (Array.isArray(parsed)) unreachable = parsed;
      } catch {}
    }
    return { sessions: (json as Session[]).map((s) => this.absolute(s)), unreachable };
  }

  async delete(id: string): Promise<void> {
    await this.call('DELETE', `/v1/sessions/${encodeURIComponent(id)}`);
  }

  async start(id: string): Promise<Session> {
    return this.absolute(await this.call<Session>('POST', `/v1/sessions/${encodeURIComponent(id)}/start`, {}));
  }

  async stop(id: string): Promise<Session> {
    return this.absolute(await this.call<Session>('POST', `/v1/sessions/${encodeURIComponent(id)}/stop`, {}));
  }

  async extend(id: string, minutes: number): Promise<Session> {
    const path = `/v1/sessions/${encodeURIComponent(id)}/extend`;
    return this.absolute(await this.call<Session>('POST', path, { ttl_minutes: minutes }));
  }

  /** The server's ConnectInfo, with its paths made absolute URLs of this server. */
  async connect(id: string): Promise<ConnectInfo> {
    const info = await this.call<ConnectInfo>('GET', `/v1/sessions/${encodeURIComponent(id)}/connect`);
    const ws = (path: string) => {
      const u = new URL(path, this.base);
      u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
      return u.href;
    };
    return {
      ...info,
      exec: info.exec ? { ...info.exec, url: ws(info.exec.url) } : null,
      json_shell: info.json_shell ? ws(info.json_shell) : null,
      web_terminal: info.web_terminal ? new URL(info.web_terminal, this.base).href : null,
    };
  }

  /** A TCP port inside the session through the server's tunnel route (the server opens the provider's tunnel). */
  async tunnel(id: string, port: number): Promise<Duplex> {
    const u = this.url(`/v1/sessions/${encodeURIComponent(id)}/tunnel`);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    u.searchParams.set('port', String(port));
    return openTunnelSocket(u.href, {
      headers: this.opts.apiKey ? { 'x-api-key': this.opts.apiKey } : {},
      refused: (status, body) => errorFromResponse(status, jsonBody(body)),
      unreachable: (e) => new UnavailableError(`cannot reach the onmemos server at ${this.base.origin}: ${e.message}`),
    });
  }

  async exec(id: string, spec: ExecSpec): Promise<RemoteProcess> {
    const u = this.url(`/v1/sessions/${encodeURIComponent(id)}/exec`);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    return openExec(spec, {
      url: u.href,
      headers: this.opts.apiKey ? { 'x-api-key': this.opts.apiKey } : {},
      peer: `the onmemos server at ${this.base.origin}`,
      refused: errorFromResponse,
    });
  }
}
