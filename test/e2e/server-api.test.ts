/**
 * The /v1 API over the in-process FakeProvider, so it needs no root: start/stop/extend, the create that streams its
 * progress (NDJSON) and its abort, connect, lists with partial results, the routes of the split server (execute,
 * the exec WebSocket, the JSON shell), and the remote provider and the SDK against it. Every server listens on 127.0.0.1 port 0 and is closed in afterAll.
 */
import { request, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import {
  ConflictError,
  InterruptedError,
  NotFoundError,
  ProviderError,
  UnavailableError,
  UnsupportedError,
  UserError,
} from '../../src/errors.js';
import { V5 } from '../../src/exec/v5.js';
import { type ProviderRegistry, tableRegistry } from '../../src/providers/index.js';
import type { Provider } from '../../src/providers/provider.js';
import { RemoteProvider } from '../../src/providers/remote.js';
import { OnMemOSClient } from '../../src/sdk/client.js';
import { Auth, parseApiKeys } from '../../src/server/auth.js';
import { createOnmemosServer } from '../../src/server/server.js';
import {
  MAX_TTL_MINUTES,
  NDJSON,
  type ProgressEvent,
  type Session,
  UNREACHABLE_HEADER,
} from '../../src/session/model.js';
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

/** Polls `check` every 20 ms until it holds, for at most `ms`. */
async function eventually(check: () => boolean, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`not so within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

// biome-ignore lint/suspicious/noExplicitAny: lines are JSON whose shape the assertions check
type Line = any;
interface Streamed {
  status: number;
  type: string;
  lines: Line[];
}

/**
 * A create over node:http, with `Accept: application/x-ndjson` unless told otherwise: the status, the content type
 * and the lines as they arrive (a plain JSON answer is one line). `onLine` sees each line as it comes and may
 * `stop()`: the request is destroyed there, as a client that goes away (so does aborting `signal`). Bounded: 15 s without an answer fails.
 */
function streamCreate(
  base: string,
  path: string,
  body: unknown,
  opts: {
    accept?: string | null;
    key?: string | null;
    onLine?: (line: Line, stop: () => void) => void;
    /** Aborting it stops the request, as `stop()` does. */
    signal?: AbortSignal;
  } = {},
): Promise<Streamed> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    const accept = opts.accept === undefined ? NDJSON : opts.accept;
    if (accept) headers.accept = accept;
    const key = opts.key === undefined ? KEY : opts.key;
    if (key) headers['x-api-key'] = key;
    const out: Streamed = { status: 0, type: '', lines: [] };
    let stopped = false;
    let pending = '';
    const done = () => resolve(out);
    const stop = () => {
      stopped = true;
      req.destroy();
      done();
    };
    const req = request(`${base}${path}`, { method: 'POST', headers, timeout: 15_000 }, (res) => {
      out.status = res.statusCode ?? 0;
      out.type = String(res.headers['content-type'] ?? '');
      res.on('data', (d: Buffer) => {
        pending += d.toString('utf8');
        for (let nl = pending.indexOf('\n'); nl >= 0 && !stopped; nl = pending.indexOf('\n')) {
          const line = JSON.parse(pending.slice(0, nl));
          pending = pending.slice(nl + 1);
          out.lines.push(line);
          opts.onLine?.(line, stop);
        }
      });
      res.on('end', () => {
        if (pending.trim()) out.lines.push(JSON.parse(pending));
        done();
      });
      res.on('error', () => (stopped ? done() : reject(new Error(`${path}: the answer broke off`))));
    });
    req.on('timeout', () => req.destroy(new Error(`${path}: no answer in 15 s`)));
    req.on('error', (e) => (stopped ? done() : reject(e)));
    opts.signal?.addEventListener('abort', stop);
    req.end(JSON.stringify(body));
  });
}

const inNamespace = (f: FakeProvider, ns: string) => [...f.sessions.values()].filter((s) => s.namespace === ns);

describe('create with streamed progress (Accept: application/x-ndjson)', () => {
  let base = '';
  let local: FakeProvider;
  let slow: FakeProvider;
  let failing: FakeProvider;

  beforeAll(async () => {
    local = fake();
    slow = fake({ kind: 'gke', createMs: 400 });
    failing = fake({ kind: 'workstations' });
    failing.create = async (_req, o = {}) => {
      o.onProgress?.({ step: 'prepare', message: 'asking the backend' });
      throw new ProviderError('the backend said no');
    };
    base = await serveApi(fakeRegistry(local, slow, failing));
  });

  it('streams each progress line as it happens, then the session line', async () => {
    const statusAtStep1: (string | undefined)[] = [];
    const r = await streamCreate(
      base,
      '/v1/sessions',
      { provider: 'gke', namespace: 'team-a', user: 'kim' },
      {
        onLine: (line) => {
          if (line.progress?.step === 'step1') statusAtStep1.push(slow.sessions.get(line.progress.id)?.status);
        },
      },
    );
    expect(r.status).toBe(200);
    expect(r.type).toBe(NDJSON);
    // The first step reached the client while the session was still being made.
    expect(statusAtStep1).toEqual(['creating']);
    const progress = r.lines.slice(0, -1);
    expect(progress.map((l) => Object.keys(l))).toEqual(progress.map(() => ['progress']));
    expect(progress.map((l) => l.progress.step)).toEqual(['provider', 'step1', 'step2', 'step3', 'step4']);
    expect(progress[0].progress).toEqual({ step: 'provider', message: 'provider gke (requested)' });
    const last = r.lines.at(-1);
    expect(Object.keys(last)).toEqual(['session']);
    const s = last.session;
    expect(progress[1].progress).toEqual({ step: 'step1', message: 'fake step 1 of 4', id: s.id });
    expect(s).toMatchObject({
      provider: 'gke',
      namespace: 'team-a',
      user: 'kim',
      status: 'running',
      websocket: `/v1/sessions/${s.id}/shell`,
      details: { provider_reason: 'requested' },
    });
    // The same object the plain answer gives: GET shows the session, the create adds why its provider was chosen.
    const { provider_reason, ...details } = s.details;
    expect((await api(base, 'GET', `/v1/sessions/${s.id}`)).body).toEqual({ ...s, details });
  });

  it('without that Accept (or with q=0), the answer is the document’s plain JSON', async () => {
    for (const accept of [null, 'application/json', `${NDJSON};q=0, application/json`]) {
      const r = await streamCreate(base, '/v1/sessions', { namespace: 'team-a', user: 'lee' }, { accept });
      expect([accept, r.status, r.type]).toEqual([accept, 200, 'application/json']);
      expect(r.lines).toHaveLength(1);
      expect(r.lines[0]).toMatchObject({ provider: 'local', status: 'running', user: 'lee' });
      expect(r.lines[0].details.provider_reason).toMatch(/^auto picks cloud_run .* local stands in$/);
    }
  });

  it('the legacy create streams the same way, with its own shell path', async () => {
    const r = await streamCreate(base, '/v1/cloudrun/workspaces', { namespace: 'team-a', user: 'max' });
    expect([r.status, r.type]).toEqual([200, NDJSON]);
    expect(r.lines.slice(0, -1).map((l) => l.progress.step)).toEqual(['provider', 'step1', 'step2', 'step3', 'step4']);
    const s = r.lines.at(-1).session;
    expect(s).toMatchObject({ provider: 'local', websocket: `/v1/cloudrun/workspaces/${s.id}/shell` });
  });

  it('refusals before anything starts are plain HTTP errors, and nothing is made', async () => {
    const before = local.sessions.size + slow.sessions.size;
    const cases: [unknown, string | null, number, string][] = [
      ['{not json', KEY, 400, 'bad_request'],
      [{ namespace: 7 }, KEY, 400, 'bad_request'],
      [{ namespace: 'Bad_Name' }, KEY, 422, 'invalid_argument'],
      [{ storage: { bucket: 'my-bucket' } }, KEY, 422, 'unsupported'],
      [{ provider: 'cloud_run' }, KEY, 503, 'unavailable'],
      [{ namespace: 'team-b' }, SCOPED, 403, 'forbidden'],
      [{}, null, 401, 'auth'],
    ];
    for (const [body, key, status, code] of cases) {
      const r = await streamCreate(base, '/v1/sessions', body, { key });
      expect([JSON.stringify(body), r.status, r.type, r.lines[0]?.error?.code]).toEqual([
        JSON.stringify(body),
        status,
        'application/json',
        code,
      ]);
    }
    expect(local.sessions.size + slow.sessions.size).toBe(before);
  });

  it('a failure after the stream began is its last line; plain JSON and the SDK get it as an error', async () => {
    const r = await streamCreate(base, '/v1/sessions', { provider: 'workstations' });
    expect([r.status, r.type]).toEqual([200, NDJSON]);
    expect(r.lines.map((l) => l.progress?.step ?? Object.keys(l)[0])).toEqual(['provider', 'prepare', 'error']);
    expect(r.lines.at(-1)).toEqual({ error: { code: 'provider_error', message: 'the backend said no' } });

    const plain = await streamCreate(base, '/v1/sessions', { provider: 'workstations' }, { accept: null });
    expect([plain.status, plain.lines[0]]).toEqual([502, { error: r.lines.at(-1).error }]);

    const steps: string[] = [];
    const sdk = new OnMemOSClient(base, KEY).createSession(
      { provider: 'workstations' },
      { onProgress: (e) => steps.push(e.step) },
    );
    await expect(sdk).rejects.toBeInstanceOf(ProviderError);
    await expect(sdk).rejects.toThrow('the backend said no');
    expect(steps).toEqual(['provider', 'prepare']);
  });

  it('a client that goes away mid-create aborts it, and the provider removes what it made (NDJSON and plain)', async () => {
    const r = await streamCreate(
      base,
      '/v1/sessions',
      { provider: 'gke', namespace: 'abort-stream' },
      { onLine: (line, stop) => line.progress?.step === 'step1' && stop() },
    );
    expect(r.lines.map((l) => l.progress.step)).toEqual(['provider', 'step1']);
    const id = r.lines[1].progress.id;
    await eventually(() => !slow.sessions.has(id));
    expect(inNamespace(slow, 'abort-stream')).toEqual([]);

    // The plain create: the client goes away once the provider has begun.
    const ac = new AbortController();
    const plain = streamCreate(
      base,
      '/v1/sessions',
      { provider: 'gke', namespace: 'abort-plain' },
      { accept: null, signal: ac.signal },
    );
    await eventually(() => inNamespace(slow, 'abort-plain').length === 1);
    const [half] = inNamespace(slow, 'abort-plain');
    expect(half!.status).toBe('creating');
    ac.abort();
    expect((await plain).lines).toEqual([]);
    await eventually(() => inNamespace(slow, 'abort-plain').length === 0);
  });

  it('the SDK: createSession reports progress; aborting its signal removes the session being made', async () => {
    const client = new OnMemOSClient(base, KEY);
    const events: ProgressEvent[] = [];
    const s = await client.createSession(
      { provider: 'gke', namespace: 'team-a' },
      { onProgress: (e) => events.push(e) },
    );
    expect(events.map((e) => e.step)).toEqual(['provider', 'step1', 'step2', 'step3', 'step4']);
    expect(events.slice(1).every((e) => e.id === s.id)).toBe(true);
    expect(s).toMatchObject({ provider: 'gke', status: 'running', details: { provider_reason: 'requested' } });

    const ac = new AbortController();
    let id = '';
    const aborted = client.createSession(
      { provider: 'gke', namespace: 'abort-sdk' },
      {
        signal: ac.signal,
        onProgress: (e) => {
          if (e.step === 'step1') {
            id = e.id ?? '';
            ac.abort();
          }
        },
      },
    );
    await expect(aborted).rejects.toBeInstanceOf(InterruptedError);
    expect(id).toMatch(/^ws-abort-sdk-/);
    await eventually(() => inNamespace(slow, 'abort-sdk').length === 0);
  });
});

describe('a provider that finishes a create its client left', () => {
  it('has the session removed by the server, since nobody has its id', async () => {
    const ignoring = fake({ createMs: 400 });
    const create = ignoring.create.bind(ignoring);
    ignoring.create = (req, o = {}) => create(req, { onProgress: o.onProgress }); // never sees the abort
    const base = await serveApi(fakeRegistry(ignoring));
    const r = await streamCreate(
      base,
      '/v1/sessions',
      { namespace: 'team-a' },
      { onLine: (line, stop) => line.progress?.step === 'step1' && stop() },
    );
    const id = r.lines[1].progress.id;
    expect(ignoring.sessions.has(id)).toBe(true);
    await eventually(() => ignoring.calls.includes('delete'));
    expect(ignoring.sessions.size).toBe(0);
  });
});

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

  it('answers the ConnectInfo of the model, the exec, JSON shell and web terminal paths on this server', async () => {
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
      web_terminal: `/sessions/${s.id}/terminal`,
    });
    const port = new URL(base).port;
    const info = await new OnMemOSClient(base, KEY).connectSession(s.id);
    expect(info).toEqual({
      ...r.body,
      exec: { url: `ws://127.0.0.1:${port}/v1/sessions/${s.id}/exec`, protocol: V5 },
      json_shell: `ws://127.0.0.1:${port}/v1/sessions/${s.id}/shell`,
      web_terminal: `http://127.0.0.1:${port}/sessions/${s.id}/terminal`,
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
