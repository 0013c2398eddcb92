/**
 * The web UI of `onmemos serve` (src/server/web.ts, web/): first over plain HTTP as an attacker would send it (the
 * pages' headers and Content-Security-Policy, hashed assets, the sign-in and its cookie, cookie requests without or
 * with a foreign Origin, the key never in a page), then in a real browser (Debian's chromium driven by
 * playwright-core): sign in, a session made with the CLI appears, its terminal runs a command and follows the
 * window's size, a session removed underneath and a dropped connection are said, remove from the UI and the CLI
 * agrees, a wrong key is refused, a page of another origin cannot open the exec WebSocket. The browser tests are
 * skipped, saying why, where chromium is not installed (.ci/run installs it).
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run, StateDir } from '../helpers/cli.js';
import { type Served, startServe } from '../helpers/serve.js';

const KEY = 'web-ui-test-key-0123456789abcdef';
const SCOPED = 'web-ui-scoped-key-0123456789abcd';
const CHROMIUM = '/usr/bin/chromium';
const DOCS = fileURLToPath(new URL('../../docs/', import.meta.url));

const state = new StateDir();
let server: Served;
let shots: string;

/** onmemos as a client of the test's server. */
const cli = (args: string[], key = KEY) =>
  run(args, { env: { ...state.env, ONMEMOS_SERVER: server.url, ONMEMOS_API_KEY: key }, timeoutMs: 60_000 });

async function createSession(...args: string[]): Promise<string> {
  const r = await cli(['create', '--provider', 'local', '--ttl', '10', ...args]);
  expect(r.code, r.stderr).toBe(0);
  return r.stdout.trim();
}

/** One HTTP request to the server, with exactly these headers. */
function http(
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: string,
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(`${server.url}${path}`, { method, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
    });
    req.on('error', reject);
    req.setTimeout(20_000, () => req.destroy(new Error('no answer in 20 s')));
    req.end(body);
  });
}

const own = () => ({ origin: server.url, 'content-type': 'application/json' });

async function signInCookie(key = KEY): Promise<string> {
  const r = await http('POST', '/ui/login', own(), JSON.stringify({ key }));
  expect(r.status, r.body).toBe(200);
  const cookie = String(r.headers['set-cookie']);
  return cookie.split(';')[0]!;
}

beforeAll(async () => {
  shots = mkdtempSync(join(process.env.ONMEMOS_TEST_TMP ?? tmpdir(), 'onmemos-web-'));
  server = await startServe({ ...state.env, ONMEMOS_API_KEYS: `${KEY};${SCOPED} team-a` });
}, 60_000);

afterAll(async () => {
  await run(['rm', '--all'], { env: state.env });
  await server?.stop();
  await state.cleanup();
  rmSync(shots, { recursive: true, force: true });
});

describe('the web UI over HTTP', () => {
  it('serves the pages with a strict Content-Security-Policy and no data, and hashed assets cached for good', async () => {
    for (const path of ['/', '/sessions/ws-default-user-1-abcd/terminal']) {
      const r = await http('GET', path);
      expect(r.status).toBe(200);
      expect(r.headers['content-type']).toBe('text/html; charset=utf-8');
      const csp = String(r.headers['content-security-policy']);
      expect(csp).toContain("default-src 'none'");
      expect(csp).toContain("script-src 'self'");
      expect(csp).toContain("style-src 'self'");
      expect(csp).toContain("frame-ancestors 'none'");
      expect(csp).not.toContain('unsafe');
      expect(r.headers['cache-control']).toBe('no-store');
      expect(r.headers['x-frame-options']).toBe('DENY');
      expect(r.body).not.toMatch(/<script>|<style>| style=| on[a-z]+=/); // nothing inline
      expect(r.body).not.toContain(KEY);
      const assets = [...r.body.matchAll(/(?:src|href)="(\/ui\/assets\/[^"]+)"/g)].map((m) => m[1]!);
      expect(assets.length).toBeGreaterThanOrEqual(2);
      for (const a of assets) {
        expect(a).toMatch(/-[A-Z0-9]{8}\.(js|css)$/);
        const got = await http('GET', a);
        expect(got.status).toBe(200);
        expect(got.headers['cache-control']).toBe('public, max-age=31536000, immutable');
        expect(got.headers['content-type']).toMatch(/^text\/(javascript|css); charset=utf-8$/);
        expect(got.body).not.toMatch(/https?:\/\/(cdn|unpkg|fonts)\./); // nothing from a CDN
      }
    }
    expect((await http('GET', '/ui/assets/..%2F..%2Fpackage.json')).status).toBe(404);
    expect((await http('GET', '/ui/assets/manifest.json')).status).toBe(404);
    expect((await http('GET', '/sessions/..%2Fetc/terminal')).status).toBe(422);
    expect((await http('GET', '/sessions/%E0%A4%A/terminal')).status).toBe(400);
    expect((await http('POST', '/', own(), '{}')).status).toBe(405);
  });

  it('signs in with the key in a JSON body only: an HttpOnly, SameSite=Strict cookie that stands for the key', async () => {
    const me = JSON.parse((await http('GET', '/ui/me')).body);
    expect(me).toEqual({ auth_required: true, signed_in: false, namespaces: null });
    const wrong = await http('POST', '/ui/login', own(), JSON.stringify({ key: 'not-a-key-of-this-server' }));
    expect(wrong.status).toBe(401);
    expect(wrong.headers['set-cookie']).toBeUndefined();
    // Without the server's own Origin (a form of another site, a script without one): refused.
    expect(
      (await http('POST', '/ui/login', { 'content-type': 'application/json' }, JSON.stringify({ key: KEY }))).status,
    ).toBe(403);
    expect(
      (await http('POST', '/ui/login', { ...own(), origin: 'http://evil.example' }, JSON.stringify({ key: KEY })))
        .status,
    ).toBe(403);
    expect(
      (
        await http(
          'POST',
          '/ui/login',
          { origin: server.url, 'content-type': 'text/plain' },
          JSON.stringify({ key: KEY }),
        )
      ).status,
    ).toBe(415);
    const ok = await http('POST', '/ui/login', own(), JSON.stringify({ key: KEY }));
    expect(ok.status).toBe(200);
    const cookie = String(ok.headers['set-cookie']);
    expect(cookie).toMatch(/^onmemos_ui=[A-Za-z0-9_-]{43}; Path=\/; HttpOnly; SameSite=Strict$/);
    expect(cookie).not.toContain(KEY);
    const c = cookie.split(';')[0]!;
    expect(JSON.parse((await http('GET', '/ui/me', { cookie: c })).body)).toMatchObject({ signed_in: true });
    expect((await http('GET', '/v1/sessions', { cookie: c })).status).toBe(200);
    expect(
      (await http('GET', '/v1/sessions', { cookie: 'onmemos_ui=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' })).status,
    ).toBe(401);
    // Behind a TLS proxy the cookie is Secure.
    const tls = await http(
      'POST',
      '/ui/login',
      { ...own(), 'x-forwarded-proto': 'https' },
      JSON.stringify({ key: KEY }),
    );
    expect(String(tls.headers['set-cookie'])).toContain('; Secure');
    // Signing out forgets the token at once.
    expect((await http('POST', '/ui/logout', { ...own(), cookie: c })).status).toBe(200);
    expect((await http('GET', '/v1/sessions', { cookie: c })).status).toBe(401);
  });

  it("a cookie request that changes anything needs the server's own Origin; a scoped key stays in its namespaces", async () => {
    const c = await signInCookie();
    const body = JSON.stringify({ provider: 'local', namespace: 'web', user: 'u', ttl_minutes: 5 });
    const headers = { cookie: c, 'content-type': 'application/json' };
    expect((await http('POST', '/v1/sessions', headers, body)).status).toBe(403); // no Origin
    expect((await http('POST', '/v1/sessions', { ...headers, origin: 'http://127.0.0.1:1' }, body)).status).toBe(403);
    const made = await http('POST', '/v1/sessions', { ...headers, origin: server.url }, body);
    expect(made.status, made.body).toBe(200);
    const s = JSON.parse(made.body);
    expect(s.web_terminal).toBe(`/sessions/${s.id}/terminal`);
    expect((await http('DELETE', `/v1/sessions/${s.id}`, { cookie: c })).status).toBe(403);

    const scoped = await signInCookie(SCOPED);
    expect(JSON.parse((await http('GET', '/ui/me', { cookie: scoped })).body)).toMatchObject({
      namespaces: ['team-a'],
    });
    const seen = JSON.parse((await http('GET', '/v1/sessions', { cookie: scoped })).body) as { id: string }[];
    expect(seen.map((x) => x.id)).not.toContain(s.id);
    expect((await http('DELETE', `/v1/sessions/${s.id}`, { cookie: scoped, origin: server.url })).status).toBe(404);
    const other = await http(
      'POST',
      '/v1/sessions',
      { cookie: scoped, origin: server.url, 'content-type': 'application/json' },
      body,
    );
    expect(other.status).toBe(403);
    expect((await http('DELETE', `/v1/sessions/${s.id}`, { cookie: c, origin: server.url })).status).toBe(200);
  });

  it('an origin let in with --allow-origin may use API keys, never the cookie', async () => {
    const app = 'http://app.example:3000';
    const other = await startServe({ ...state.env, ONMEMOS_API_KEYS: KEY }, ['--allow-origin', app]);
    try {
      const send = (method: string, path: string, headers: Record<string, string>, body?: string) =>
        new Promise<number>((resolve, reject) => {
          const req = request(`${other.url}${path}`, { method, headers }, (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          });
          req.on('error', reject);
          req.end(body);
        });
      const login = JSON.stringify({ key: KEY });
      const json = { 'content-type': 'application/json' };
      expect(await send('POST', '/ui/login', { ...json, origin: app }, login)).toBe(403);
      expect(await send('GET', '/v1/sessions', { origin: app, 'x-api-key': KEY })).toBe(200);
      const r = await new Promise<string>((resolve, reject) => {
        const req = request(
          `${other.url}/ui/login`,
          { method: 'POST', headers: { ...json, origin: other.url } },
          (res) => {
            res.resume();
            resolve(String(res.headers['set-cookie']).split(';')[0]!);
          },
        );
        req.on('error', reject);
        req.end(login);
      });
      expect(await send('GET', '/v1/sessions', { cookie: r, origin: app })).toBe(403);
      expect(await send('GET', '/v1/sessions', { cookie: r, origin: other.url })).toBe(200);
    } finally {
      await other.stop();
    }
  });

  it('connect, get and create --json give the web terminal; onmemos open prints it (and says where there is none)', async () => {
    const r = await cli(['create', '--provider', 'local', '--ttl', '10', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const s = JSON.parse(r.stdout);
    const url = `${server.url}/sessions/${s.id}/terminal`;
    expect(s.web_terminal).toBe(url);
    const info = JSON.parse((await cli(['connect', s.id, '--json'])).stdout);
    expect(info.web_terminal).toBe(url);
    expect(JSON.parse((await cli(['get', s.id, '--json'])).stdout).web_terminal).toBe(url);
    const open = await cli(['open', s.id]);
    expect(open).toMatchObject({ code: 0, stdout: `${url}\n`, stderr: '' });
    // Local mode has no server, so no web terminal: one line, exit 2.
    const local = await run(['open', s.id], { env: state.env }); // the same state directory, without the server
    expect(local.code).toBe(2);
    expect(local.stderr).toMatch(
      /^onmemos: session \S+ has no web terminal here: onmemos serve serves the web UI \(run onmemos serve, .*\)\n$/,
    );
    expect((await cli(['rm', s.id])).code).toBe(0);
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe.skipIf(!existsSync(CHROMIUM))('the web UI in chromium', { shuffle: false }, () => {
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  const violations: string[] = [];
  let sessionId: string;

  beforeAll(async () => {
    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox'],
      headless: true,
      timeout: 60_000,
    });
    context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
    page = await context.newPage();
    await page.addInitScript({
      content:
        "document.addEventListener('securitypolicyviolation', (e) => " +
        "(window.__violations = window.__violations || []).push(e.violatedDirective + ' ' + e.blockedURI));",
    });
    page.on('pageerror', (e) => violations.push(`page error: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error' && !/Failed to load resource|WebSocket connection/.test(m.text()))
        violations.push(m.text());
    });
  }, 90_000);

  afterAll(async () => {
    await browser?.close();
  });

  const screenText = async () =>
    (await page.locator('.xterm-rows > div').allTextContents()).join('\n').replace(/\u00a0/g, ' ');
  const typeLine = async (line: string) => {
    await page.locator('.xterm-helper-textarea').focus();
    await page.keyboard.type(line);
    await page.keyboard.press('Enter');
  };
  const cspViolations = async () => (await page.evaluate('window.__violations || []')) as string[];

  it('refuses a wrong key, signs in with the right one, and lists a session made with the CLI', async () => {
    await page.goto(server.url);
    await page.locator('#api-key').fill('this-is-not-the-key-at-all');
    await page.locator('#sign-in button[type=submit]').click();
    await expect.poll(() => page.locator('#sign-in-error').textContent(), { timeout: 15_000 }).toContain('not valid');
    await page.locator('#api-key').fill(KEY);
    await page.locator('#sign-in button[type=submit]').click();
    await page.locator('#sessions').waitFor({ timeout: 15_000 });
    const cookies = await context.cookies();
    expect(cookies).toEqual([expect.objectContaining({ name: 'onmemos_ui', httpOnly: true, sameSite: 'Strict' })]);
    expect(await page.content()).not.toContain(KEY);

    sessionId = await createSession('--namespace', 'web-ns');
    const row = page.locator(`tr[data-id="${sessionId}"]`);
    await row.waitFor({ timeout: 15_000 }); // refreshed live, no reload
    expect(await row.textContent()).toContain('web-ns');
    expect(await row.textContent()).toContain('running');
    // The filters narrow the list: another namespace hides it.
    await page.locator('#filter-namespace').fill('nothing-here');
    await row.waitFor({ state: 'detached', timeout: 15_000 });
    await page.locator('#filter-namespace').fill('web-ns');
    await row.waitFor({ timeout: 15_000 });
    await page.screenshot({ path: join(shots, 'dashboard.png') });
    if (process.env.ONMEMOS_UPDATE_SCREENSHOTS === '1') {
      mkdirSync(DOCS, { recursive: true });
      await page.screenshot({ path: join(DOCS, 'dashboard.png') });
    }
    expect(statSync(join(shots, 'dashboard.png')).size).toBeGreaterThan(5000);
    expect(await cspViolations()).toEqual([]);
  }, 90_000);

  it("opens the session's terminal: a login shell, $WORKSPACE_ID on screen, and stty size follows the window", async () => {
    await page.locator(`[data-terminal="${sessionId}"]`).click();
    await page.waitForURL(`**/sessions/${sessionId}/terminal`);
    await page.locator('.xterm-rows').waitFor({ timeout: 15_000 });
    await expect.poll(() => page.locator('#banner').getAttribute('class'), { timeout: 20_000 }).toMatch(/ok|hidden/);
    await typeLine('echo "id=$WORKSPACE_ID"');
    await expect.poll(screenText, { timeout: 20_000 }).toContain(`id=${sessionId}`);

    const size = async () => {
      await typeLine('clear; stty size');
      let got = '';
      await expect
        .poll(
          async () => {
            got = /^(\d+) (\d+)\s*$/m.exec(await screenText())?.[0]?.trim() ?? '';
            return got;
          },
          { timeout: 20_000 },
        )
        .toMatch(/^\d+ \d+$/);
      const [rows, cols] = got.split(' ').map(Number);
      return { rows: rows!, cols: cols! };
    };
    const before = await size();
    expect(before.rows).toBe(await page.locator('.xterm-rows > div').count());
    await page.setViewportSize({ width: 700, height: 420 });
    await expect.poll(async () => (await size()).cols, { timeout: 20_000 }).toBeLessThan(before.cols);
    const after = await size();
    expect(after.rows).toBeLessThan(before.rows);
    expect(after.rows).toBe(await page.locator('.xterm-rows > div').count());
    await page.setViewportSize({ width: 1100, height: 700 });
    await typeLine('clear; ls /workspace >/dev/null && echo "ready in $(pwd)"');
    await expect.poll(screenText, { timeout: 20_000 }).toContain('ready in /workspace');
    await page.screenshot({ path: join(shots, 'terminal.png') });
    if (process.env.ONMEMOS_UPDATE_SCREENSHOTS === '1') await page.screenshot({ path: join(DOCS, 'terminal.png') });
    expect(await cspViolations()).toEqual([]);
  }, 120_000);

  it('pastes from the clipboard, and copies a selection with Ctrl+Shift+C', async () => {
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: server.url });
    await page.evaluate('navigator.clipboard.writeText("echo pasted-$((6*7))")');
    await page.locator('.xterm-helper-textarea').focus();
    await page.keyboard.press('Control+V');
    await page.keyboard.press('Enter');
    await expect.poll(screenText, { timeout: 20_000 }).toMatch(/^pasted-42\s*$/m);
    const line = page.locator('.xterm-rows > div', { hasText: /^pasted-42\s*$/ }).last();
    const box = (await line.boundingBox())!;
    await page.mouse.dblclick(box.x + 10, box.y + box.height / 2); // selects the word
    await page.keyboard.press('Control+Shift+C');
    await expect.poll(() => page.evaluate('navigator.clipboard.readText()'), { timeout: 10_000 }).toBe('pasted-42');
    // Truecolour cells are styled on the cell (through the CSSOM: the policy blocks style attributes).
    await typeLine("printf '\\033[38;2;255;0;0mTRUE%sRED\\033[0m\\n' COLOUR");
    const red = page.locator('.xterm-rows span', { hasText: 'TRUECOLOURRED' });
    await red.waitFor({ timeout: 20_000 });
    const colour = (e: unknown) =>
      (globalThis as unknown as { getComputedStyle(e: unknown): { color: string } }).getComputedStyle(e).color;
    // Polled: xterm renders its rows anew (cursor blink, the selection going), and a cell read in between is
    // detached (no computed style).
    await expect.poll(() => red.evaluate(colour), { timeout: 10_000 }).toBe('rgb(255, 0, 0)');
    expect(await cspViolations()).toEqual([]);
    expect(violations).toEqual([]);
  }, 60_000);

  it('says so, without hanging, when the shell exits and when the session is removed underneath', async () => {
    await typeLine('exit 3');
    await expect
      .poll(() => page.locator('#banner').textContent(), { timeout: 20_000 })
      .toContain('The shell ended (exit 3)');
    await page.locator('.xterm-helper-textarea').focus();
    await page.keyboard.press('Enter'); // a new shell
    await expect.poll(() => page.locator('#banner').getAttribute('class'), { timeout: 20_000 }).toMatch(/ok|hidden/);
    const r = await cli(['rm', sessionId]);
    expect(r.code, r.stderr).toBe(0);
    await expect
      .poll(() => page.locator('#banner').textContent(), { timeout: 30_000 })
      .toContain('This session no longer exists');
  }, 90_000);

  it('removes a session from the dashboard after a confirmation, and the CLI agrees', async () => {
    const id = await createSession();
    await page.goto(server.url);
    const row = page.locator(`tr[data-id="${id}"]`);
    await row.waitFor({ timeout: 15_000 });
    await page.locator(`[data-remove="${id}"]`).click();
    await page.locator(`[data-cancel="${id}"]`).click(); // Keep: nothing happens
    await page.locator(`[data-remove="${id}"]`).click();
    await page.locator(`[data-confirm="${id}"]`).click();
    await row.waitFor({ state: 'detached', timeout: 30_000 });
    const ls = JSON.parse((await cli(['ls', '--json'])).stdout) as { id: string }[];
    expect(ls.map((s) => s.id)).not.toContain(id);
  }, 90_000);

  it('creates a session from the form; a create the server refuses says why', async () => {
    await page.locator('#create-namespace').fill('from-ui');
    await page.locator('#create-provider').selectOption('local');
    await page.locator('#create button[type=submit]').click();
    await expect
      .poll(() => page.locator('#create-status').textContent(), { timeout: 60_000 })
      .toMatch(/^Created ws-from-ui-/);
    const ls = JSON.parse((await cli(['ls', '--namespace', 'from-ui', '--json'])).stdout) as { id: string }[];
    expect(ls).toHaveLength(1);
    await page.locator('#create-namespace').fill('Not_Valid');
    await page.locator('#create button[type=submit]').click();
    await expect
      .poll(() => page.locator('#create-status').textContent(), { timeout: 15_000 })
      .toMatch(/^Not created: .*namespace/);
  }, 90_000);

  it('a page of another origin cannot open the exec WebSocket, though the browser holds the cookie', async () => {
    const id = await createSession();
    const target = new URL(`/v1/sessions/${id}/exec?command=id&stdin=1`, server.url);
    target.protocol = 'ws:';
    const html = `<!doctype html><title>start</title><script>
      const ws = new WebSocket(${JSON.stringify(target.href)}, ['v5.channel.k8s.io']);
      ws.onopen = () => { document.title = 'opened'; };
      ws.onclose = () => { if (document.title !== 'opened') document.title = 'refused'; };
    </script>`;
    const evil: Server = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(html);
    });
    await new Promise<void>((resolve) => evil.listen(0, '127.0.0.1', resolve));
    try {
      const other = await context.newPage();
      await other.goto(`http://127.0.0.1:${(evil.address() as AddressInfo).port}/`);
      await expect.poll(() => other.title(), { timeout: 15_000 }).toBe('refused');
      await other.close();
    } finally {
      await new Promise((r) => evil.close(r));
    }
  }, 60_000);

  it('a dropped connection is said and reconnects; a restarted server asks to sign in again', async () => {
    const id = await createSession();
    await page.goto(`${server.url}/sessions/${id}/terminal`);
    await expect.poll(() => page.locator('#banner').getAttribute('class'), { timeout: 20_000 }).toMatch(/ok|hidden/);
    const port = server.port;
    await server.stop();
    await expect.poll(() => page.locator('#banner').textContent(), { timeout: 20_000 }).toMatch(/dropped|Cannot reach/);
    server = await startServe({ ...state.env, ONMEMOS_API_KEYS: `${KEY};${SCOPED} team-a` }, ['--port', String(port)]);
    await page.locator('#api-key').waitFor({ timeout: 60_000 });
    await page.locator('#api-key').fill(KEY);
    await page.locator('#sign-in button[type=submit]').click();
    await expect.poll(() => page.locator('#banner').getAttribute('class'), { timeout: 30_000 }).toMatch(/ok|hidden/);
    await typeLine('echo "back in $WORKSPACE_ID"');
    await expect.poll(screenText, { timeout: 20_000 }).toContain(`back in ${id}`);
    expect(violations).toEqual([]);
  }, 120_000);
});
