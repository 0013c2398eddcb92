/**
 * `onmemos serve` (the real bin/onmemos.js) against what a web page or another tenant could try: a foreign Host
 * (DNS rebinding) or Origin, bodies that are not JSON, keys in URLs, malformed ids, probing another namespace's
 * ids, environments too large to run anything.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { V5 } from '../../src/exec/v5.js';
import { StateDir } from '../helpers/cli.js';
import { rawHttp, rawUpgrade, type Served, startServe } from '../helpers/serve.js';

const KEY = 'security-key-all-0123456789abcdef';
const SCOPED = 'security-key-team-a-0123456789ab';
const state = new StateDir();
/** --insecure-no-auth on 127.0.0.1, with one extra allowed origin. */
let open: Served;
/** API keys, one scoped to team-a. */
let keyed: Served;
const JSON_TYPE = { 'content-type': 'application/json' };

beforeAll(async () => {
  open = await startServe({ ...state.env, ONMEMOS_API_KEYS: '' }, [
    '--insecure-no-auth',
    '--allow-origin',
    'http://app.example:3000',
  ]);
  keyed = await startServe({ ...state.env, ONMEMOS_API_KEYS: `${KEY};${SCOPED} team-a` });
});
afterAll(async () => {
  await open?.stop();
  await keyed?.stop();
  await state.cleanup();
});

const count = async (srv: Served) =>
  (await rawHttp(srv.port, 'GET', '/v1/sessions', srv === keyed ? { 'x-api-key': KEY } : {})).json().length as number;

/** Every refusal is the API's one-line JSON error. */
function expectError(r: { status: number; text: string }, status: number, code?: string) {
  expect(r.status, r.text).toBe(status);
  const body = JSON.parse(r.text);
  expect(body).toEqual({ error: { code: code ?? expect.any(String), message: expect.any(String) } });
  expect(body.error.message).not.toContain('\n');
}

describe('Host and Origin (a web page cannot drive the server)', () => {
  it('a loopback server answers only to localhost, 127.0.0.1 and [::1] with its own port', async () => {
    const p = open.port;
    for (const host of [`localhost:${p}`, `127.0.0.1:${p}`, `[::1]:${p}`, `LOCALHOST:${p}`]) {
      expect((await rawHttp(p, 'GET', '/health', { host })).status, host).toBe(200);
    }
    const before = await count(open);
    for (const host of ['evil.example', `evil.example:${p}`, `127.0.0.1:${p + 1}`, `localhost.evil.example:${p}`]) {
      expectError(await rawHttp(p, 'GET', '/v1/sessions', { host }), 421);
      expectError(await rawHttp(p, 'POST', '/v1/sessions', { host, ...JSON_TYPE }, '{}'), 421);
    }
    expect(await count(open)).toBe(before);
    const up = await rawUpgrade(p, '/v1/sessions/ws-any-u-1-abcd/shell', { Host: `rebound.example:${p}` });
    expect(up.status).toBe(421);
    up.close();
  });

  it('refuses requests and upgrades from pages of other origins, with and without API keys', async () => {
    const p = open.port;
    const made = await rawHttp(p, 'POST', '/v1/sessions', JSON_TYPE, '{"namespace":"origin","user":"u"}');
    expect(made.status).toBe(200);
    const id = made.json().id as string;
    const before = await count(open);
    for (const origin of ['http://evil.example', `http://evil.example:${p}`, 'null', `http://localhost:${p + 1}`]) {
      expectError(await rawHttp(p, 'GET', '/v1/sessions', { origin }), 403, 'forbidden');
      expectError(await rawHttp(p, 'POST', '/v1/sessions', { origin, ...JSON_TYPE }, '{}'), 403, 'forbidden');
      expectError(
        await rawHttp(p, 'POST', `/v1/sessions/${id}/execute`, { origin, ...JSON_TYPE }, '{"command":"id"}'),
        403,
      );
      // The cross-origin WebSocket that ran `id`: refused before the upgrade.
      for (const path of [`/v1/sessions/${id}/shell`, `/v1/cloudrun/workspaces/${id}/shell`]) {
        const up = await rawUpgrade(p, path, { Origin: origin });
        expect(up.status, `${path} from ${origin}`).toBe(403);
        expect(JSON.parse(up.response.slice(up.response.indexOf('\r\n\r\n') + 4))).toMatchObject({
          error: { code: 'forbidden' },
        });
        up.close();
      }
      const exec = await rawUpgrade(p, `/v1/sessions/${id}/exec?command=id`, {
        Origin: origin,
        'Sec-WebSocket-Protocol': V5,
      });
      expect(exec.status).toBe(403);
      exec.close();
    }
    expect(await count(open)).toBe(before);
    // The server's own origin and the one --allow-origin named are served.
    for (const origin of [`http://127.0.0.1:${p}`, `http://localhost:${p}`, 'http://app.example:3000']) {
      expect((await rawHttp(p, 'GET', '/v1/sessions', { origin })).status, origin).toBe(200);
      const up = await rawUpgrade(p, `/v1/sessions/${id}/shell`, { Origin: origin });
      expect(up.status, origin).toBe(101);
      up.close();
    }
    // With API keys, a valid key does not make a foreign page welcome.
    expectError(
      await rawHttp(keyed.port, 'GET', '/v1/sessions', { 'x-api-key': KEY, origin: 'http://evil.example' }),
      403,
    );
    expect((await rawHttp(keyed.port, 'GET', '/v1/sessions', { 'x-api-key': KEY })).status).toBe(200);
    await rawHttp(p, 'DELETE', `/v1/sessions/${id}`);
  });

  it('a request body must be JSON and say so (415 otherwise)', async () => {
    const p = open.port;
    const before = await count(open);
    for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x']) {
      expectError(await rawHttp(p, 'POST', '/v1/sessions', { 'content-type': type }, '{}'), 415);
    }
    expectError(await rawHttp(p, 'POST', '/v1/sessions', {}, '{}'), 415);
    expect(await count(open)).toBe(before);
    const made = await rawHttp(p, 'POST', '/v1/sessions', { 'content-type': 'application/json; charset=utf-8' }, '{}');
    expect(made.status).toBe(200);
    const id = made.json().id as string;
    expectError(
      await rawHttp(
        p,
        'POST',
        `/v1/cloudrun/workspaces/${id}/execute?command=id`,
        { 'content-type': 'text/plain' },
        'x',
      ),
      415,
    );
    // No body: nothing to label (the legacy execute takes its command in the query).
    expect((await rawHttp(p, 'POST', `/v1/cloudrun/workspaces/${id}/execute?command=true`)).status).toBe(200);
    expect((await rawHttp(p, 'DELETE', `/v1/sessions/${id}`)).status).toBe(200);
  });
});

describe('keys, ids and namespaces', () => {
  const auth = { 'x-api-key': KEY };
  const scoped = { 'x-api-key': SCOPED };
  let other = '';
  beforeAll(async () => {
    const r = await rawHttp(keyed.port, 'POST', '/v1/sessions', { ...auth, ...JSON_TYPE }, '{"namespace":"team-b"}');
    expect(r.status, r.text).toBe(200);
    other = r.json().id;
  });

  it('?api_key= is accepted on WebSocket upgrades only, never on plain HTTP routes', async () => {
    const r = await rawHttp(keyed.port, 'GET', `/v1/sessions?api_key=${KEY}`);
    expectError(r, 401, 'auth');
    expect(r.json().error.message).toMatch(/X-API-Key/);
    expectError(await rawHttp(keyed.port, 'GET', `/v1/sessions/${other}?api_key=${KEY}`, auth), 401);
    const ws = new WebSocket(`ws://127.0.0.1:${keyed.port}/v1/sessions/${other}/shell?api_key=${KEY}`);
    ws.on('error', () => {});
    const opened = await new Promise((r) => {
      ws.once('open', () => r(true));
      ws.once('unexpected-response', () => r(false));
    });
    ws.terminate();
    expect(opened).toBe(true);
  });

  it('malformed percent-encoding in an id is a 400, on every route', async () => {
    const bad = '%E0%A4%A';
    for (const [method, path] of [
      ['GET', `/v1/sessions/${bad}`],
      ['DELETE', `/v1/sessions/${bad}`],
      ['GET', `/v1/sessions/${bad}/connect`],
      ['POST', `/v1/sessions/${bad}/execute`],
      ['GET', `/v1/cloudrun/workspaces/${bad}`],
      ['POST', `/v1/cloudrun/workspaces/${bad}/execute?command=true`],
    ] as const) {
      expectError(await rawHttp(keyed.port, method, path, auth), 400, 'bad_request');
    }
    for (const path of [`/v1/sessions/${bad}/shell`, `/v1/cloudrun/workspaces/${bad}/shell`]) {
      const up = await rawUpgrade(keyed.port, path, { 'X-API-Key': KEY });
      expect(up.status, path).toBe(400);
      up.close();
    }
    const up = await rawUpgrade(keyed.port, `/v1/sessions/${bad}/exec?command=true`, {
      'X-API-Key': KEY,
      'Sec-WebSocket-Protocol': V5,
    });
    expect(up.status).toBe(400);
    up.close();
  });

  it('a scoped key gets the same 404 for another namespace’s session as for one that does not exist', async () => {
    const none = other.replace(/-[0-9a-z]{4}$/, '-zzzz');
    const answers = async (id: string) => {
      const out: string[] = [];
      for (const [method, path, body] of [
        ['GET', `/v1/sessions/${id}`],
        ['DELETE', `/v1/sessions/${id}`],
        ['GET', `/v1/sessions/${id}/connect`],
        ['POST', `/v1/sessions/${id}/execute`, '{"command":"true"}'],
        ['GET', `/v1/cloudrun/workspaces/${id}`],
        ['DELETE', `/v1/cloudrun/workspaces/${id}`],
        ['POST', `/v1/cloudrun/workspaces/${id}/execute?command=true`],
      ] as const) {
        const r = await rawHttp(keyed.port, method, path, { ...scoped, ...JSON_TYPE }, body);
        out.push(`${method} ${path.replace(id, '{id}')}: ${r.status} ${r.text.replace(id, '{id}')}`);
      }
      for (const [path, headers] of [
        [`/v1/sessions/${id}/shell`, {}],
        [`/v1/cloudrun/workspaces/${id}/shell`, {}],
        [`/v1/sessions/${id}/exec?command=true`, { 'Sec-WebSocket-Protocol': V5 }],
      ] as const) {
        const up = await rawUpgrade(keyed.port, path, { 'X-API-Key': SCOPED, ...headers });
        out.push(
          `upgrade ${path.replace(id, '{id}')}: ${up.status} ${up.response.split('\r\n\r\n')[1]?.replace(id, '{id}')}`,
        );
        up.close();
      }
      return out;
    };
    const forOther = await answers(other);
    expect(forOther).toEqual(await answers(none));
    for (const line of forOther)
      expect(line).toMatch(/: 404 \{"error":\{"code":"not_found","message":"no such session: \{id\}"\}\}$/);
    // Nothing happened to it.
    expect((await rawHttp(keyed.port, 'GET', `/v1/sessions/${other}`, auth)).status).toBe(200);
  });

  it('refuses at create an environment no process could start with (422), and a command too long for sh -c', async () => {
    const before = await count(keyed);
    const create = (env: Record<string, string>) =>
      rawHttp(keyed.port, 'POST', '/v1/sessions', { ...auth, ...JSON_TYPE }, JSON.stringify({ namespace: 'env', env }));
    const one = await create({ BIG: 'x'.repeat(128 * 1024) });
    expectError(one, 422, 'invalid_argument');
    expect(one.json().error.message).toMatch(/BIG .*131071 bytes/);
    const all = await create({ A: 'x'.repeat(100_000), B: 'x'.repeat(100_000), C: 'x'.repeat(100_000) });
    expectError(all, 422, 'invalid_argument');
    expect(all.json().error.message).toMatch(/262144 bytes/);
    expect(await count(keyed)).toBe(before);
    // Under the limits, the session runs commands that see it.
    const ok = await create({ BIG: 'y'.repeat(100_000) });
    expect(ok.status, ok.text).toBe(200);
    const id = ok.json().id as string;
    const run = async (command: string) =>
      rawHttp(keyed.port, 'POST', `/v1/sessions/${id}/execute`, { ...auth, ...JSON_TYPE }, JSON.stringify({ command }));
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell parameter expansion, not a template
    expect((await run('echo ${#BIG}')).json()).toMatchObject({ stdout: '100000\n', returncode: 0 });
    const long = await run(`true ${'x'.repeat(128 * 1024)}`);
    expectError(long, 422, 'invalid_argument');
    expect(long.json().error.message).toMatch(/the command is \d+ bytes/);
    expect((await rawHttp(keyed.port, 'DELETE', `/v1/sessions/${id}`, auth)).status).toBe(200);
  });

  it("refuses a session on the host's network unless serve --allow-host-network (it would reach the host's loopback)", async () => {
    const before = await count(keyed);
    const body = JSON.stringify({ namespace: 'net', network: 'host' });
    for (const path of ['/v1/sessions', '/v1/cloudrun/workspaces']) {
      const r = await rawHttp(keyed.port, 'POST', path, { ...auth, ...JSON_TYPE }, body);
      expectError(r, 403, 'forbidden');
      expect(r.json().error.message).toMatch(/network host is refused by this server.*--allow-host-network/);
    }
    expect(await count(keyed)).toBe(before);
    const allowing = await startServe({ ...state.env, ONMEMOS_API_KEYS: KEY }, ['--allow-host-network']);
    try {
      const ok = await rawHttp(allowing.port, 'POST', '/v1/sessions', { ...auth, ...JSON_TYPE }, body);
      expect(ok.status, ok.text).toBe(200);
      expect(ok.json().details.network).toBe('host');
      expect((await rawHttp(allowing.port, 'DELETE', `/v1/sessions/${ok.json().id}`, auth)).status).toBe(200);
    } finally {
      await allowing.stop();
    }
  });
});
