/**
 * The web UI of `onmemos serve`: the dashboard at `/`, a session's terminal at `/sessions/{id}/terminal`, their
 * assets, and the browser's sign-in.
 *
 *   GET  /                         the dashboard page (dist/web: src/web/dashboard.ts)
 *   GET  /sessions/{id}/terminal   the terminal page (src/web/terminal.ts: xterm over the exec WebSocket, tty)
 *   GET  /ui/assets/{name}         the pages' scripts and styles, named by content hash, cached for good
 *   GET  /ui/me                    {auth_required, signed_in, namespaces}
 *   POST /ui/login   {"key": …}    checks the API key, then sets the sign-in cookie
 *   POST /ui/logout                forgets the sign-in, clears the cookie
 *
 * The pages hold no data and no key: they are the same for everyone, and their scripts call the /v1 API. A browser
 * signs in once with its API key (in a JSON body, never a URL); the server keeps the key's principal under a random
 * token and gives the browser only that token, as a cookie that scripts cannot read (HttpOnly), that no other site's
 * request carries (SameSite=Strict), Secure when the page came over TLS, and that ends with the browser session. A
 * request that signs in with the cookie must come from the server's own page: a state-changing request or a
 * WebSocket upgrade without the server's own Origin is refused (the guard already refuses a foreign one). The
 * pages are served under a Content-Security-Policy that allows only the server's own scripts, styles and
 * connections.
 */
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { packageRoot } from '../paths.js';
import { validateSessionId } from '../session/model.js';
import type { Auth } from './auth.js';
import { apiError, readJsonBody, sendJson } from './http.js';
import { COOKIE, checkCookieRequest, cookieToken, type WebSignIns } from './web-auth.js';

/**
 * The pages' Content-Security-Policy: only the server's own scripts, styles and connections. xterm writes its
 * theme and cell sizes into <style> elements it makes, which a strict policy blocks, so a page's policy also allows
 * style elements that carry its nonce (random per response); the terminal page gives xterm's style elements that
 * nonce (web/terminal.ts), and nothing inline can run or style anything without it.
 */
export function csp(nonce: string): string {
  return [
    "default-src 'none'",
    `script-src 'self' 'nonce-${nonce}'`,
    `style-src 'self' 'nonce-${nonce}'`,
    "connect-src 'self'",
    "img-src 'self' data:",
    "font-src 'self'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
  ].join('; ');
}

interface Manifest {
  /** Entry name (dashboard.js, terminal.css…) → the file in dist/web, named by its content hash. */
  entries: Record<string, string>;
}

/** The built assets (scripts/build.mjs writes dist/web/manifest.json), read once. */
class Assets {
  private manifest?: Manifest;
  private readonly files = new Map<string, Buffer>();
  readonly dir = join(packageRoot(), 'dist', 'web');

  entry(name: string): string {
    this.manifest ??= JSON.parse(readFileSync(join(this.dir, 'manifest.json'), 'utf8')) as Manifest;
    const file = this.manifest.entries[name];
    if (!file) throw new Error(`the web UI's ${name} is not built (npm run build)`);
    return file;
  }

  /** A built file by its hashed name; only names the manifest lists are served. */
  file(name: string): Buffer | undefined {
    this.manifest ??= JSON.parse(readFileSync(join(this.dir, 'manifest.json'), 'utf8')) as Manifest;
    if (!Object.values(this.manifest.entries).includes(name)) return undefined;
    let data = this.files.get(name);
    if (!data) {
      data = readFileSync(join(this.dir, name));
      this.files.set(name, data);
    }
    return data;
  }
}

const assets = new Assets();

const TYPES: Record<string, string> = {
  js: 'text/javascript; charset=utf-8',
  css: 'text/css; charset=utf-8',
  woff2: 'font/woff2',
  png: 'image/png',
  svg: 'image/svg+xml',
};

const PAGE_HEADERS = {
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
};

function page(res: ServerResponse, title: string, script: string, styles: string[]): void {
  const nonce = Buffer.from(globalThis.crypto.getRandomValues(new Uint8Array(18))).toString('base64');
  const links = styles.map((s) => `<link rel="stylesheet" href="/ui/assets/${assets.entry(s)}">`).join('\n');
  const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title}</title>
${links}
<script type="module" nonce="${nonce}" src="/ui/assets/${assets.entry(script)}"></script>
</head>
<body>
<noscript>The onmemos web UI needs JavaScript.</noscript>
</body>
</html>
`;
  res.writeHead(200, {
    ...PAGE_HEADERS,
    'content-security-policy': csp(nonce),
    'content-type': 'text/html; charset=utf-8',
    'content-length': Buffer.byteLength(html),
  });
  res.end(html);
}

function isTls(req: IncomingMessage): boolean {
  return (req.socket as { encrypted?: boolean }).encrypted === true || req.headers['x-forwarded-proto'] === 'https';
}

function setCookie(req: IncomingMessage, res: ServerResponse, value: string, clear = false): void {
  const attrs = [`${COOKIE}=${value}`, 'Path=/', 'HttpOnly', 'SameSite=Strict'];
  if (isTls(req)) attrs.push('Secure');
  if (clear) attrs.push('Max-Age=0');
  res.setHeader('set-cookie', attrs.join('; '));
}

export interface WebRequest {
  req: IncomingMessage;
  res: ServerResponse;
  path: string;
  method: string;
  auth: Auth;
  signIns: WebSignIns;
  maxBodyBytes: number;
  /** Whether the request came from this server's own page (its Origin). */
  ownOrigin: boolean;
}

/** Answers a request for the web UI; false when the path is not one of its. */
export async function webRoutes(w: WebRequest): Promise<boolean> {
  const { req, res, path, method } = w;
  const read = method === 'GET' || method === 'HEAD';
  if (path === '/') {
    if (!read) throw apiError('method_not_allowed', `${method} is not allowed on /`);
    page(res, 'onmemos', 'dashboard.js', ['app.css']);
    return true;
  }
  const terminal = /^\/sessions\/([^/]+)\/terminal$/.exec(path);
  if (terminal) {
    if (!read) throw apiError('method_not_allowed', `${method} is not allowed on ${path}`);
    let raw: string;
    try {
      raw = decodeURIComponent(terminal[1]!);
    } catch {
      throw apiError('bad_request', 'malformed percent-encoding in the session id');
    }
    validateSessionId(raw);
    page(res, 'onmemos terminal', 'terminal.js', ['app.css', 'terminal.css']);
    return true;
  }
  if (!path.startsWith('/ui/')) return false;

  const asset = /^\/ui\/assets\/([A-Za-z0-9_.-]+)$/.exec(path);
  if (asset) {
    if (!read) throw apiError('method_not_allowed', `${method} is not allowed on ${path}`);
    const data = assets.file(asset[1]!);
    if (!data) throw apiError('not_found', `no such asset: ${asset[1]}`);
    res.writeHead(200, {
      'content-type': TYPES[asset[1]!.split('.').pop()!] ?? 'application/octet-stream',
      'content-length': data.length,
      'cache-control': 'public, max-age=31536000, immutable',
      'x-content-type-options': 'nosniff',
    });
    res.end(method === 'HEAD' ? undefined : data);
    return true;
  }
  if (path === '/ui/me' && read) {
    const token = cookieToken(req);
    const p = w.auth.enabled ? w.signIns.get(token) : w.auth.check(undefined);
    sendJson(res, 200, {
      auth_required: w.auth.enabled,
      signed_in: p !== undefined,
      namespaces: p ? p.namespaces : null,
    });
    return true;
  }
  if (path === '/ui/login' && method === 'POST') {
    checkCookieRequest(req, false, w.ownOrigin);
    const body = await readJsonBody(req, Math.min(w.maxBodyBytes, 16 << 10));
    if (typeof body.key !== 'string' || body.key.length === 0)
      throw apiError('bad_request', '"key" must be the API key');
    if (!w.auth.enabled) {
      sendJson(res, 200, { signed_in: true, namespaces: null });
      return true;
    }
    const p = w.auth.check(body.key);
    if (!p) throw apiError('auth', 'invalid API key');
    setCookie(req, res, w.signIns.add(p));
    sendJson(res, 200, { signed_in: true, namespaces: p.namespaces });
    return true;
  }
  if (path === '/ui/logout' && method === 'POST') {
    checkCookieRequest(req, false, w.ownOrigin);
    w.signIns.remove(cookieToken(req));
    setCookie(req, res, '', true);
    sendJson(res, 200, { signed_in: false });
    return true;
  }
  throw apiError('not_found', `no route for ${method} ${path}`);
}
