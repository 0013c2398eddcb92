/** The web UI's browser sign-ins (src/server/web-auth.ts): tokens, their end, their bound, the cookie's parsing. */
import type { IncomingMessage } from 'node:http';
import { describe, expect, it } from 'vitest';
import { checkCookieRequest, cookieToken, MAX_SIGN_INS_PER_KEY, WebSignIns } from '../../src/server/web-auth.js';

const req = (headers: Record<string, string>, method = 'GET') => ({ headers, method }) as unknown as IncomingMessage;
const principal = { id: 'k1', namespaces: ['team-a'] };

describe('web sign-ins', () => {
  it('gives a random 43-character token per sign-in, standing for the principal until it ends or is removed', () => {
    let now = 1_000;
    const s = new WebSignIns(() => now);
    const a = s.add(principal);
    const b = s.add(principal);
    expect(a).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(a).not.toBe(b);
    expect(s.get(a)).toEqual(principal);
    expect(s.get(undefined)).toBeUndefined();
    expect(s.get('A'.repeat(43))).toBeUndefined();
    s.remove(b);
    expect(s.get(b)).toBeUndefined();
    now += 12 * 60 * 60 * 1000; // twelve hours on: gone
    expect(s.get(a)).toBeUndefined();
  });

  it("keeps at most 50 sign-ins per key, dropping that key's oldest and never another key's", () => {
    let now = 1_000;
    const s = new WebSignIns(() => now);
    const other = { id: 'k2', namespaces: null };
    const theirs = s.add(other);
    const first = s.add(principal);
    const rest = Array.from({ length: MAX_SIGN_INS_PER_KEY }, () => s.add(principal));
    expect(s.get(first)).toBeUndefined();
    expect(s.get(rest[0])).toEqual(principal);
    expect(s.get(rest.at(-1))).toEqual(principal);
    // A flood of sign-ins with one key leaves the other key's browser signed in.
    for (let i = 0; i < 10 * MAX_SIGN_INS_PER_KEY; i++) s.add(principal);
    expect(s.get(theirs)).toEqual(other);
    expect(s.get(rest.at(-1))).toBeUndefined();
    // Ended and signed-out sign-ins make room first.
    s.remove(theirs);
    now += 12 * 60 * 60 * 1000;
    const fresh = Array.from({ length: MAX_SIGN_INS_PER_KEY }, () => s.add(principal));
    expect(fresh.every((t) => s.get(t)?.id === 'k1')).toBe(true);
    expect((s as unknown as { tokens: Map<string, unknown> }).tokens.size).toBe(MAX_SIGN_INS_PER_KEY);
  });

  it('reads only a well-formed onmemos_ui cookie among others', () => {
    const t = 'a'.repeat(43);
    expect(cookieToken(req({ cookie: `x=1; onmemos_ui=${t}; y=2` }))).toBe(t);
    expect(cookieToken(req({ cookie: 'onmemos_ui=short' }))).toBeUndefined();
    expect(cookieToken(req({ cookie: `onmemos_ui=${t}!` }))).toBeUndefined();
    expect(cookieToken(req({ cookie: `xonmemos_ui=${t}` }))).toBeUndefined();
    expect(cookieToken(req({}))).toBeUndefined();
  });

  it('refuses a cookie request without Origin when it changes anything or upgrades, or from another origin', () => {
    expect(() => checkCookieRequest(req({}, 'GET'), false, false)).not.toThrow();
    expect(() => checkCookieRequest(req({}, 'POST'), false, false)).toThrow(/must come from the web UI/);
    expect(() => checkCookieRequest(req({}, 'DELETE'), false, false)).toThrow(/must come from the web UI/);
    expect(() => checkCookieRequest(req({}, 'GET'), true, false)).toThrow(/must come from the web UI/);
    const own = req({ origin: 'http://127.0.0.1:8080' }, 'POST');
    expect(() => checkCookieRequest(own, false, true)).not.toThrow();
    // An origin serve --allow-origin lets in (the guard passed it) may use API keys, not the cookie.
    const allowed = req({ origin: 'https://app.example.com' }, 'GET');
    expect(() => checkCookieRequest(allowed, false, false)).toThrow(/own pages only, not https:\/\/app\.example\.com/);
  });
});
