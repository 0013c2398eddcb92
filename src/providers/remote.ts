/**
 * The remote provider: the Provider contract over an onmemos server's /v1 API (undici for HTTP, ws for the
 * v5.channel.k8s.io exec stream), so every command works the same against a server as locally.
 */
import { errorFromResponse, ProviderError, UnavailableError, UserError } from '../errors.js';
import { type CreateSessionRequest, limitsInput, type Session, type SessionFilter } from '../session/model.js';
import { openExec } from '../tty/exec-client.js';
import type { Capabilities, ExecSpec, Provider, RemoteProcess } from './provider.js';

export interface RemoteOptions {
  server: string;
  apiKey?: string;
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

  /** The API's create request: the document's fields, plus limits as `cpu`, `memory`, `pids`, `disk`. */
  create(req: CreateSessionRequest): Promise<Session> {
    const { limits, ...rest } = req;
    return this.call('POST', '/v1/sessions', { ...rest, ...limitsInput(limits) });
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
