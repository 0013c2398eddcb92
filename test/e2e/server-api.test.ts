/**
 * The /v1 API over the in-process FakeProvider, so it needs no root: start/stop/extend, connect, lists with
 * partial results, the routes of the split server (execute, the exec WebSocket, the JSON shell), and the remote
 * provider and the SDK against it. Every server listens on 127.0.0.1 port 0 and is closed in afterAll.
 */
import type { Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { ConflictError, NotFoundError, UnavailableError, UnsupportedError, UserError } from '../../src/errors.js';
import { V5 } from '../../src/exec/v5.js';
import { type ProviderRegistry, tableRegistry } from '../../src/providers/index.js';
import type { Provider } from '../../src/providers/provider.js';
import { RemoteProvider } from '../../src/providers/remote.js';
import { OnMemOSClient } from '../../src/sdk/client.js';
import { Auth, parseApiKeys } from '../../src/server/auth.js';
import { createOnmemosServer } from '../../src/server/server.js';
import { MAX_TTL_MINUTES, type Session, UNREACHABLE_HEADER } from '../../src/session/model.js';
import { FakeProvider, fakeRegistry } from '../helpers/fake-provider.js';

const KEY = 'api-test-key-all-namespaces-0123';
const SCOPED = 'api-test-key-team-a-only-012345';
const auth = new Auth(parseApiKeys(`${KEY}\n${SCOPED} team-a\n`));

const servers: Server[] = [];
const fakes: FakeProvider[] = [];

/** A server over this registry on 127.0.0.1 port 0; closed in afterAll. */
async function serveApi(registry: ProviderRegistry): Promise<string> {
  const server = await createOnmemosServer({ registry, auth });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
}

function fake(opts: ConstructorParameters<typeof FakeProvider>[0] = {}): FakeProvider {
  const f = new FakeProvider(opts);
  fakes.push(f);
  return f;
}

afterAll(async () => {
  await Promise.all(
    servers.map(
      (s) =>
        new Promise<void>((r) => {
          s.close(() => r());
          s.closeAllConnections();
        }),
    ),
  );
  for (const f of fakes) f.dispose();
});

/** One JSON request; the answer's status, headers and parsed body. */
async function api(
  base: string,
  method: string,
  path: string,
  body?: unknown,
  opts: { key?: string | null; headers?: Record<string, string> } = {},
) {
  const headers: Record<string, string> = { ...opts.headers };
  const key = opts.key === undefined ? KEY : opts.key;
  if (key) headers['x-api-key'] = key;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${base}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(15_000),
  });
  const text = await res.text();
  // biome-ignore lint/suspicious/noExplicitAny: response bodies are JSON whose shape the assertions check
  const json: any = text ? JSON.parse(text) : undefined;
  return { status: res.status, headers: res.headers, body: json };
}

describe('start, stop and extend', () => {
  let base = '';
  let local: FakeProvider;
  let noLifecycle: FakeProvider;
  let shortTtl: FakeProvider;
  let limitedBase = '';

  beforeAll(async () => {
    local = fake();
    base = await serveApi(fakeRegistry(local));
    noLifecycle = fake({ capabilities: { lifecycle: { start: false, stop: false, extend: false } } });
    shortTtl = fake({ kind: 'gke', capabilities: { maxTtlMinutes: 120 } });
    limitedBase = await serveApi(fakeRegistry(noLifecycle, shortTtl));
  });

  it('stop and start change the status; each answers the session as GET does', async () => {
    const { body: s } = await api(base, 'POST', '/v1/sessions', { namespace: 'team-a', user: 'alice' });
    expect(s.status).toBe('running');

    const stopped = await api(base, 'POST', `/v1/sessions/${s.id}/stop`, {});
    expect(stopped.status).toBe(200);
    expect(stopped.body).toMatchObject({ id: s.id, status: 'stopped', websocket: `/v1/sessions/${s.id}/shell` });
    expect((await api(base, 'GET', `/v1/sessions/${s.id}`)).body).toEqual(stopped.body);
    // A stopped session runs nothing: 409 on execute and on the WebSocket routes.
    const exec = await api(base, 'POST', `/v1/sessions/${s.id}/execute`, { command: 'true' });
    expect(exec.status).toBe(409);
    expect(exec.body.error.code).toBe('conflict');

    const started = await api(base, 'POST', `/v1/sessions/${s.id}/start`);
    expect(started.status).toBe(200);
    expect(started.body).toMatchObject({ id: s.id, status: 'running' });
    expect((await api(base, 'GET', `/v1/sessions/${s.id}`)).body).toEqual(started.body);
    expect((await api(base, 'POST', `/v1/sessions/${s.id}/execute`, { command: 'echo up' })).body.stdout).toBe('up\n');
  });

  it('extend moves the expiry to ttl_minutes from now', async () => {
    const { body: s } = await api(base, 'POST', '/v1/sessions', { namespace: 'team-a', user: 'bob', ttl_minutes: 5 });
    const before = Date.now();
    const r = await api(base, 'POST', `/v1/sessions/${s.id}/extend`, { ttl_minutes: 600 });
    const after = Date.now();
    expect(r.status).toBe(200);
    const expires = Date.parse(r.body.expires_at);
    expect(expires).toBeGreaterThan(Date.parse(s.expires_at));
    expect(expires).toBeGreaterThanOrEqual(before + 600 * 60_000 - 1_000);
    expect(expires).toBeLessThanOrEqual(after + 600 * 60_000 + 1_000);
    expect((await api(base, 'GET', `/v1/sessions/${s.id}`)).body.expires_at).toBe(r.body.expires_at);
  });

  it('extend checks ttl_minutes: 400 for a wrong type or none, 422 for a bad value', async () => {
    const { body: s } = await api(base, 'POST', '/v1/sessions', { namespace: 'team-a', user: 'carol' });
    const cases: [unknown, number, string][] = [
      [{ ttl_minutes: '60' }, 400, 'bad_request'],
      [{}, 400, 'bad_request'],
      [{ ttl_minutes: null }, 400, 'bad_request'],
      ['[60]', 400, 'bad_request'],
      ['{not json', 400, 'bad_request'],
      [{ ttl_minutes: 0 }, 422, 'invalid_argument'],
      [{ ttl_minutes: -5 }, 422, 'invalid_argument'],
      [{ ttl_minutes: MAX_TTL_MINUTES + 1 }, 422, 'invalid_argument'],
    ];
    for (const [body, status, code] of cases) {
      const r = await api(base, 'POST', `/v1/sessions/${s.id}/extend`, body);
      expect([JSON.stringify(body), r.status, r.body.error.code]).toEqual([JSON.stringify(body), status, code]);
    }
    // Nothing moved.
    expect((await api(base, 'GET', `/v1/sessions/${s.id}`)).body.expires_at).toBe(s.expires_at);
  });

  it('a provider that cannot: 422 unsupported, naming the provider and the verb', async () => {
    const { body: s } = await api(limitedBase, 'POST', '/v1/sessions', { provider: 'local', user: 'dave' });
    expect(s.provider).toBe('local');
    for (const verb of ['start', 'stop', 'extend']) {
      const r = await api(limitedBase, 'POST', `/v1/sessions/${s.id}/${verb}`, { ttl_minutes: 30 });
      expect(r.status).toBe(422);
      expect(r.body).toEqual({ error: { code: 'unsupported', message: `provider local cannot ${verb} a session` } });
    }
    expect((await api(limitedBase, 'GET', `/v1/sessions/${s.id}`)).body).toMatchObject({
      status: 'running',
      expires_at: s.expires_at,
    });
    // Past the provider's longest TTL: refused the same way, before the provider is asked.
    const { body: g } = await api(limitedBase, 'POST', '/v1/sessions', { provider: 'gke', user: 'dave' });
    const long = await api(limitedBase, 'POST', `/v1/sessions/${g.id}/extend`, { ttl_minutes: 121 });
    expect([long.status, long.body.error.code]).toEqual([422, 'unsupported']);
    expect(long.body.error.message).toBe('provider gke allows a TTL of at most 120 minutes');
    expect((await api(limitedBase, 'POST', `/v1/sessions/${g.id}/extend`, { ttl_minutes: 120 })).status).toBe(200);
  });

  it('a provider whose capabilities say yes but that lacks the method: 422 unsupported', async () => {
    const lacking = fake({ kind: 'workstations' });
    (lacking as Partial<Provider>).stop = undefined;
    const lackingBase = await serveApi(fakeRegistry(lacking));
    const { body: s } = await api(lackingBase, 'POST', '/v1/sessions', { provider: 'workstations' });
    const r = await api(lackingBase, 'POST', `/v1/sessions/${s.id}/stop`);
    expect(r.status).toBe(422);
    expect(r.body.error).toEqual({ code: 'unsupported', message: 'provider workstations cannot stop a session' });
  });

  it('scoped keys: 404 outside their namespaces, exactly as for an unknown id; their own work', async () => {
    const { body: other } = await api(base, 'POST', '/v1/sessions', { namespace: 'team-b', user: 'eve' });
    const { body: own } = await api(base, 'POST', '/v1/sessions', { namespace: 'team-a', user: 'eve' });
    const none = other.id.replace(/-[0-9a-z]{4}$/, '-zzzz');
    for (const verb of ['start', 'stop', 'extend']) {
      const body = { ttl_minutes: 30 };
      const forOther = await api(base, 'POST', `/v1/sessions/${other.id}/${verb}`, body, { key: SCOPED });
      const forNone = await api(base, 'POST', `/v1/sessions/${none}/${verb}`, body, { key: SCOPED });
      expect(forOther.status).toBe(404);
      expect(JSON.stringify(forOther.body).replace(other.id, '{id}')).toBe(
        JSON.stringify(forNone.body).replace(none, '{id}'),
      );
      expect((await api(base, 'POST', `/v1/sessions/${own.id}/${verb}`, body, { key: SCOPED })).status).toBe(200);
    }
    expect((await api(base, 'GET', `/v1/sessions/${other.id}`)).body.status).toBe('running');
    expect((await api(base, 'POST', `/v1/sessions/${own.id}/stop`, {}, { key: null })).status).toBe(401);
  });

  it('only POST: other methods are 405', async () => {
    const { body: s } = await api(base, 'POST', '/v1/sessions', { user: 'frank' });
    for (const verb of ['start', 'stop', 'extend']) {
      const r = await api(base, 'GET', `/v1/sessions/${s.id}/${verb}`);
      expect([r.status, r.body.error.code]).toEqual([405, 'method_not_allowed']);
    }
  });

  it('the remote provider and the SDK: startSession, stopSession, extendSession, and unsupported as a typed error', async () => {
    const client = new OnMemOSClient(base, KEY);
    const s = await client.createSession({ namespace: 'team-a', user: 'grace' });
    expect((await client.stopSession(s.id)).status).toBe('stopped');
    expect((await client.startSession(s.id)).status).toBe('running');
    const extended = await client.extendSession(s.id, 90);
    expect(Date.parse(extended.expires_at)).toBeGreaterThan(Date.now() + 80 * 60_000);
    await expect(client.extendSession(s.id, -1)).rejects.toBeInstanceOf(UserError);

    const limited = new OnMemOSClient(limitedBase, KEY);
    const l = await limited.createSession({ provider: 'local' });
    await expect(limited.stopSession(l.id)).rejects.toBeInstanceOf(UnsupportedError);
    await expect(limited.stopSession(l.id)).rejects.toThrow('provider local cannot stop a session');
    const remote = new RemoteProvider({ server: limitedBase, apiKey: KEY });
    await expect(remote.extend(l.id, 30)).rejects.toMatchObject({ code: 'unsupported', status: 422 });
    await expect(remote.start('ws-x-y-1-abcd')).rejects.toBeInstanceOf(NotFoundError);
  });
});

describe('connect', () => {
  let base = '';
  beforeAll(async () => {
    base = await serveApi(fakeRegistry(fake()));
  });

  it('answers the ConnectInfo of the model, the exec and JSON shell paths on this server', async () => {
    const { body: s } = await api(base, 'POST', '/v1/sessions', { namespace: 'team-a', user: 'ivan' });
    const r = await api(base, 'GET', `/v1/sessions/${s.id}/connect`);
    expect(r.status).toBe(200);
    expect(r.body).toEqual({
      id: s.id,
      provider: 'local',
      status: 'running',
      url: null,
      exec: { url: `/v1/sessions/${s.id}/exec`, protocol: V5 },
      shell: { argv: ['/bin/sh'] },
      json_shell: `/v1/sessions/${s.id}/shell`,
      ssh: null,
    });
    const port = new URL(base).port;
    const info = await new OnMemOSClient(base, KEY).connectSession(s.id);
    expect(info).toEqual({
      ...r.body,
      exec: { url: `ws://127.0.0.1:${port}/v1/sessions/${s.id}/exec`, protocol: V5 },
      json_shell: `ws://127.0.0.1:${port}/v1/sessions/${s.id}/shell`,
    });
    expect((await api(base, 'GET', `/v1/sessions/${s.id}/connect`, undefined, { key: SCOPED })).status).toBe(200);
    const { body: b } = await api(base, 'POST', '/v1/sessions', { namespace: 'team-b', user: 'ivan' });
    expect((await api(base, 'GET', `/v1/sessions/${b.id}/connect`, undefined, { key: SCOPED })).status).toBe(404);
  });
});

describe('lists with partial results', () => {
  let base = '';
  let local: FakeProvider;
  let gke: FakeProvider;
  let localDown = false;

  beforeAll(async () => {
    local = fake();
    gke = fake({ kind: 'gke' });
    const localList = local.list.bind(local);
    local.list = async (f) => {
      if (localDown) throw new UnavailableError('the local fake is down');
      return localList(f);
    };
    gke.list = async () => {
      throw new UnavailableError('the gke fake is down');
    };
    const entry = (p: Provider) => ({ kind: p.kind, configured: () => ({ ok: true as const }), load: async () => p });
    base = await serveApi(tableRegistry([entry(local), entry(gke)], {}));
  });

  it('answers 200 with what answered, and names what did not in x-onmemos-unreachable', async () => {
    const { body: a } = await api(base, 'POST', '/v1/sessions', { provider: 'local', namespace: 'team-a' });
    const { body: b } = await api(base, 'POST', '/v1/sessions', { provider: 'local', namespace: 'team-b' });
    const r = await api(base, 'GET', '/v1/sessions');
    expect(r.status).toBe(200);
    expect((r.body as Session[]).map((s) => s.id).sort()).toEqual([a.id, b.id].sort());
    expect(JSON.parse(decodeURIComponent(r.headers.get(UNREACHABLE_HEADER) ?? ''))).toEqual([
      { provider: 'gke', message: 'the gke fake is down' },
    ]);
    // A scoped key sees its namespaces only, and the same header.
    const scoped = await api(base, 'GET', '/v1/sessions', undefined, { key: SCOPED });
    expect((scoped.body as Session[]).map((s) => s.id)).toEqual([a.id]);
    expect(scoped.headers.get(UNREACHABLE_HEADER)).toBe(r.headers.get(UNREACHABLE_HEADER));
    // Asking one provider only: nothing is unreachable.
    const onlyLocal = await api(base, 'GET', '/v1/sessions?provider=local');
    expect(onlyLocal.headers.get(UNREACHABLE_HEADER)).toBeNull();
    expect(onlyLocal.body).toHaveLength(2);
    // The remote provider reads it.
    const listed = await new RemoteProvider({ server: base, apiKey: KEY }).listAll();
    expect(listed.unreachable).toEqual([{ provider: 'gke', message: 'the gke fake is down' }]);
    expect(listed.sessions.map((s) => s.id).sort()).toEqual([a.id, b.id].sort());
  });

  it('when no provider answers, that is the error (503), not an empty list', async () => {
    localDown = true;
    try {
      const r = await api(base, 'GET', '/v1/sessions');
      expect(r.status).toBe(503);
      expect(r.body.error.code).toBe('unavailable');
      await expect(new OnMemOSClient(base, KEY).listSessions()).rejects.toBeInstanceOf(UnavailableError);
    } finally {
      localDown = false;
    }
  });
});

describe('the routes of the split server, without root', () => {
  let base = '';
  let local: FakeProvider;
  beforeAll(async () => {
    local = fake();
    base = await serveApi(fakeRegistry(local));
  });

  it('execute, the exec WebSocket, the JSON shell (both paths), the legacy routes and /health', async () => {
    const client = new OnMemOSClient(base, KEY);
    const s = await client.createSession({ namespace: 'team-a', user: 'judy' });
    expect(await client.executeSession(s.id, 'echo $NAMESPACE; echo oops >&2; exit 3')).toEqual({
      stdout: 'team-a\n',
      stderr: 'oops\n',
      returncode: 3,
      success: false,
    });
    const p = await client.exec(s.id, ['sh', '-c', 'cat; echo done >&2'], { stdin: true });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    p.stdout.on('data', (d: Buffer) => out.push(d));
    p.stderr.on('data', (d: Buffer) => err.push(d));
    p.stdin.end('hello\n');
    expect(await p.wait()).toBe(0);
    expect([Buffer.concat(out).toString(), Buffer.concat(err).toString()]).toEqual(['hello\n', 'done\n']);

    const port = new URL(base).port;
    for (const path of [`/v1/sessions/${s.id}/shell`, `/v1/cloudrun/workspaces/${s.id}/shell`]) {
      const ws = new WebSocket(`ws://127.0.0.1:${port}${path}?api_key=${KEY}`);
      const reply = await new Promise<Record<string, unknown>>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`${path}: no reply in 10 s`)), 10_000);
        ws.on('open', () => ws.send(JSON.stringify({ type: 'command', command: 'echo shell' })));
        ws.on('message', (d: Buffer) => {
          clearTimeout(t);
          resolve(JSON.parse(d.toString()));
        });
        ws.on('error', reject);
      });
      ws.close();
      expect(reply).toEqual({ type: 'command_result', stdout: 'shell\n', stderr: '', returncode: 0, success: true });
    }

    const legacy = await api(base, 'POST', '/v1/cloudrun/workspaces', { namespace: 'team-a', user: 'judy' });
    expect(legacy.body).toMatchObject({
      provider: 'local',
      websocket: `/v1/cloudrun/workspaces/${legacy.body.id}/shell`,
    });
    expect(legacy.body.details.provider_reason).toMatch(/^auto picks cloud_run .*local stands in$/);
    const ran = await api(base, 'POST', `/v1/cloudrun/workspaces/${legacy.body.id}/execute?command=pwd`);
    expect(ran.body.returncode).toBe(0);
    expect((await api(base, 'DELETE', `/v1/cloudrun/workspaces/${legacy.body.id}`)).body).toEqual({
      id: legacy.body.id,
      deleted: true,
    });
    expect((await api(base, 'GET', '/health', undefined, { key: null })).body).toMatchObject({
      status: 'ok',
      providers: ['local'],
    });
    await client.stopSession(s.id);
    await expect(client.exec(s.id, ['true'])).rejects.toBeInstanceOf(ConflictError);
    await client.deleteSession(s.id);
    expect(local.sessions.has(s.id)).toBe(false);
  });
});
