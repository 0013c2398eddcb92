/**
 * What every request and upgrade must pass before anything else, so that a web page cannot drive the server
 * (DNS rebinding, a blind cross-origin request, a cross-origin WebSocket):
 *
 * - Host: on a loopback listener, the Host header must name it: localhost, 127.0.0.1 or [::1] (or the listening
 *   address itself) with its port. A page on a rebound name (evil.example → 127.0.0.1) carries that name. On other
 *   addresses any Host is accepted: names and proxies front them, and such a server always has API keys.
 * - Origin: browsers send it (CLI, SDK, kubectl and curl do not); a request or upgrade whose Origin is neither the
 *   server's own nor one given with `serve --allow-origin` is refused, with or without API keys.
 * - A request with a body must say `Content-Type: application/json`: a form or `text/plain` body is what a page
 *   can send cross-origin without asking first.
 *
 * The concurrency cap per API key (serve --max-concurrent) is here too: it guards memory and processes the same way.
 */
import type { IncomingMessage, Server } from 'node:http';
import { apiError } from './http.js';

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|::ffff:127\.\d+\.\d+\.\d+)$/;

export class RequestGuard {
  private hosts: string[] | null | undefined;

  constructor(
    private readonly server: Server,
    /** Origins (scheme://host[:port], as browsers send them) accepted besides the server's own. */
    private readonly allowOrigins: readonly string[] = [],
  ) {}

  /** The Host values a loopback listener answers to; null when any Host is accepted. */
  private allowedHosts(): string[] | null {
    if (this.hosts !== undefined) return this.hosts;
    const a = this.server.address();
    if (!a || typeof a === 'string' || !LOOPBACK.test(a.address)) {
      this.hosts = null;
      return null;
    }
    const names = new Set(['localhost', '127.0.0.1', '[::1]', a.address.includes(':') ? `[${a.address}]` : a.address]);
    const hosts = [...names].map((n) => `${n}:${a.port}`);
    if (a.port === 80) hosts.push(...names); // the default port may go unsaid
    this.hosts = hosts;
    return hosts;
  }

  /** Whether the request's Origin is this server's own (false without one). */
  ownOrigin(req: IncomingMessage): boolean {
    const origin = req.headers.origin;
    return origin !== undefined && isOwnOrigin(origin, this.allowedHosts() ?? [(req.headers.host ?? '').toLowerCase()]);
  }

  /** Throws the error that refuses `req` (421 wrong Host, 403 foreign Origin, 415 a body that is not JSON). */
  check(req: IncomingMessage, opts: { body: boolean }): void {
    const host = (req.headers.host ?? '').toLowerCase();
    const allowed = this.allowedHosts();
    if (allowed && !allowed.includes(host)) {
      throw apiError(
        'misdirected_request',
        `this server answers to Host ${allowed[0]} (or localhost, 127.0.0.1, [::1] with its port), not ${JSON.stringify(host)}`,
      );
    }
    const origin = req.headers.origin;
    if (origin !== undefined && !this.allowOrigins.includes(origin) && !isOwnOrigin(origin, allowed ?? [host])) {
      throw apiError(
        'forbidden',
        `requests from web pages of other origins are refused (Origin ${JSON.stringify(origin)}); serve --allow-origin allows one`,
      );
    }
    if (opts.body && hasBody(req) && !isJson(req.headers['content-type'])) {
      throw apiError('unsupported_media_type', 'a request body must be JSON, sent with Content-Type: application/json');
    }
  }
}

function isOwnOrigin(origin: string, hosts: string[]): boolean {
  let u: URL;
  try {
    u = new URL(origin);
  } catch {
    return false; // "null" (a sandboxed frame, a file) and anything malformed
  }
  return (u.protocol === 'http:' || u.protocol === 'https:') && u.origin === origin && hosts.includes(u.host);
}

function hasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return (length !== undefined && length !== '0') || req.headers['transfer-encoding'] !== undefined;
}

function isJson(contentType: string | undefined): boolean {
  return contentType !== undefined && /^application\/json\s*(;|$)/i.test(contentType.trim());
}

/** How many executes, exec streams and JSON shells each API key has in flight, against a cap. */
export class ConcurrencyLimit {
  private readonly inFlight = new Map<string, number>();

  constructor(readonly max: number) {}

  /** Takes a slot for this key, or throws 429; the function returned gives it back (once). */
  acquire(key: string): () => void {
    const n = this.inFlight.get(key) ?? 0;
    if (n >= this.max) {
      throw apiError(
        'too_many_requests',
        `this API key already has ${n} executes, exec streams and shells in flight, the most serve --max-concurrent allows; retry when one ends`,
      );
    }
    this.inFlight.set(key, n + 1);
    let given = false;
    return () => {
      if (given) return;
      given = true;
      const left = (this.inFlight.get(key) ?? 1) - 1;
      if (left > 0) this.inFlight.set(key, left);
      else this.inFlight.delete(key);
    };
  }
}
