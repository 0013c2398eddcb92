/**
 * The web UI's browser sign-in (web.ts has the routes): random tokens standing for the principal of the API key a
 * browser signed in with, the cookie that carries one, and the rule that a cookie request must come from the
 * server's own page. Kept apart from web.ts so the API's principal check (context.ts) loads nothing of the pages.
 */
import type { IncomingMessage } from 'node:http';
import type { Principal } from './auth.js';
import { apiError } from './http.js';

export const COOKIE = 'onmemos_ui';
/** A sign-in lasts this long at most, even in a browser that is never closed. */
const SIGN_IN_MS = 12 * 60 * 60 * 1000;
/**
 * Sign-ins kept at once per key; that key's oldest goes first. Per key, so that a holder of one key who signs in
 * again and again drops only its own sign-ins, never another key's; the keys are the server's, so the whole is
 * bounded too.
 */
export const MAX_SIGN_INS_PER_KEY = 50;

/** The browser sign-ins: random tokens, each with the principal of the key it was made with. */
export class WebSignIns {
  private readonly tokens = new Map<string, { principal: Principal; until: number }>();
  /** Each key's tokens, oldest first. */
  private readonly byKey = new Map<string, string[]>();

  constructor(private readonly now: () => number = Date.now) {}

  add(principal: Principal): string {
    // Web Crypto's global, loaded on first use: the agents import this module's neighbours at start-up.
    const token = Buffer.from(globalThis.crypto.getRandomValues(new Uint8Array(32))).toString('base64url');
    const now = this.now();
    const own: string[] = [];
    for (const t of this.byKey.get(principal.id) ?? []) {
      if ((this.tokens.get(t)?.until ?? 0) > now) own.push(t);
      else this.tokens.delete(t); // ended (or signed out)
    }
    while (own.length >= MAX_SIGN_INS_PER_KEY) this.tokens.delete(own.shift()!);
    own.push(token);
    this.byKey.set(principal.id, own);
    this.tokens.set(token, { principal, until: now + SIGN_IN_MS });
    return token;
  }

  get(token: string | undefined): Principal | undefined {
    if (!token) return undefined;
    const t = this.tokens.get(token);
    if (!t) return undefined;
    if (t.until <= this.now()) {
      this.tokens.delete(token);
      return undefined;
    }
    return t.principal;
  }

  remove(token: string | undefined): void {
    if (token) this.tokens.delete(token);
  }
}

/** The value of the sign-in cookie, if the request has one. */
export function cookieToken(req: IncomingMessage): string | undefined {
  const header = req.headers.cookie;
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === COOKIE) {
      const v = part.slice(eq + 1).trim();
      return /^[A-Za-z0-9_-]{43}$/.test(v) ? v : undefined;
    }
  }
  return undefined;
}

/**
 * A request signed in with the cookie must come from the server's own page: one that carries an Origin must carry
 * the server's own (`own`: the guard's judgement; an origin allowed with serve --allow-origin may use API keys, not
 * the cookie), and one that changes anything or opens a WebSocket must carry one (browsers always send it there).
 */
export function checkCookieRequest(req: IncomingMessage, upgrade: boolean, own: boolean): void {
  const method = req.method ?? 'GET';
  const origin = req.headers.origin;
  if (origin === undefined && (upgrade || !['GET', 'HEAD'].includes(method))) {
    throw apiError('forbidden', 'a request signed in with the browser cookie must come from the web UI (no Origin)');
  }
  if (origin !== undefined && !own) {
    throw apiError('forbidden', `the browser cookie is accepted from this server's own pages only, not ${origin}`);
  }
}
