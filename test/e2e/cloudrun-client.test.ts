/**
 * The real @google-cloud/run 4 clients (REST fallback, on Node 20) against the Cloud Run fake: the bearer token on
 * every request (one google-auth-library in the tree), services through their long-running operations, revisions
 * that really run and answer at `uri` behind the invoker check, the Google errors gax turns into GoogleError, enum
 * encodings, operations. Containers run as real local sandboxes (root, bwrap).
 */
import { createRequire } from 'node:module';
import { connect, createServer } from 'node:net';
import { protos } from '@google-cloud/run';
import { IdTokenClient } from 'google-auth-library';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CloudRunFake, startCloudRunFake } from '../fakes/cloudrun/server.js';
import { clients, failure, NODE, parentOf, sandboxes, webContainer } from '../helpers/cloudrun.js';

type Service = protos.google.cloud.run.v2.IService;
type Obj = Record<string, unknown>;
const State = protos.google.cloud.run.v2.Condition.State;
let fake: CloudRunFake;
let c: ReturnType<typeof clients>;
let parent: string;

beforeAll(async () => {
  fake = await startCloudRunFake({ network: 'isolated', startupTimeoutMs: 10_000 });
  c = clients(fake);
  parent = parentOf(fake);
});
afterAll(async () => {
  await Promise.all([c?.services.close(), c?.jobs.close(), c?.executions.close()]);
  await fake?.close();
});

/** The GoogleError a call rejects with. */

async function deploy(id: string, service: Service = {}): Promise<Service> {
  const [op] = await c.services.createService({
    parent,
    serviceId: id,
    service: { template: { containers: [webContainer()] }, ...service },
  });
  const [svc] = await op.promise();
  return svc;
}

const api = (path: string, init: RequestInit = {}) =>
  fetch(`${fake.url}${path}`, { ...init, headers: { authorization: `Bearer ${fake.token}`, ...init.headers } });

describe('auth', () => {
  it('the client sends the token on every request, from the one google-auth-library in the tree', async () => {
    const before = fake.requests.length; // other tests send unauthenticated requests on purpose
    await c.services.listServices({ parent });
    const mine = fake.requests.slice(before);
    expect(mine.length).toBeGreaterThan(0);
    expect(mine.every((r) => r.auth === 'bearer')).toBe(true);
    expect(fake.requests.at(-1)).toMatchObject({
      apiClient: expect.stringMatching(/gax\/6\.\S+-fallback .*gl-node\/20\./),
      userAgent: expect.stringMatching(/^google-api-nodejs-client\/11\./),
    });
    // google-gax resolves the same copy as this package: an OAuth2Client of ours is one it recognizes.
    const fromGax = createRequire(createRequire(import.meta.url).resolve('google-gax')).resolve('google-auth-library');
    expect(fromGax).toBe(createRequire(import.meta.url).resolve('google-auth-library'));
  });

  it('without a token, or with another, the API answers 401 UNAUTHENTICATED as Google does', async () => {
    const anonymous = await fetch(`${fake.url}/v2/${parent}/services`);
    expect(anonymous.status).toBe(401);
    expect(await anonymous.json()).toEqual({
      error: {
        code: 401,
        message:
          'Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.',
        status: 'UNAUTHENTICATED',
        details: [
          {
            '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
            reason: 'CREDENTIALS_MISSING',
            domain: 'googleapis.com',
            metadata: { method: 'google.cloud.run.v2.Services.ListServices', service: 'run.googleapis.com' },
          },
        ],
      },
    });
    const other = clients(fake, 'ya29.someone-else');
    try {
      const e = await failure(other.services.getService({ name: `${parent}/services/x` }));
      expect(e.code).toBe(16);
      expect(e.message).toMatch(/^Request had invalid authentication credentials\./);
    } finally {
      await other.services.close();
    }
    expect(fake.requests.at(-1)).toMatchObject({ auth: 'refused', status: 401 });
  });
});

// The life of a few services, step by step (create, read, update, delete): its tests run in order, also when
// the run shuffles.
describe('services', { shuffle: false }, () => {
  it('create: an operation that is done once the revision serves; the Service as the API fills it in', async () => {
    const [op] = await c.services.createService({
      parent,
      serviceId: 'hello',
      service: { labels: { team: 'a' }, template: { containers: [webContainer({ GREETING: 'hi' })] } },
    });
    expect(op.name).toMatch(new RegExp(`^${parent}/operations/[0-9a-f-]{36}$`));
    expect(op.done).toBe(false);
    const [done] = await op.promise();
    // An operation's response is decoded as a protobuf message: int64 as Long, enums as numbers.
    expect(String(done.generation)).toBe('1');
    expect(done.terminalCondition?.state).toBe(State.CONDITION_SUCCEEDED);
    // A get returns plain objects: int64 as strings, enums as names.
    const [svc] = await c.services.getService({ name: done.name! });
    expect(svc).toMatchObject({
      name: `${parent}/services/hello`,
      generation: '1',
      observedGeneration: '1',
      labels: { team: 'a' },
      creator: 'tester@example.com',
      ingress: 'INGRESS_TRAFFIC_ALL',
      launchStage: 'GA',
      terminalCondition: { type: 'Ready', state: 'CONDITION_SUCCEEDED' },
      reconciling: false,
      uri: done.uri,
    });
    expect(svc.uri).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(svc.conditions?.map((x) => [x.type, x.state])).toEqual([
      ['RoutesReady', 'CONDITION_SUCCEEDED'],
      ['ConfigurationsReady', 'CONDITION_SUCCEEDED'],
    ]);
    expect(svc.latestReadyRevision).toMatch(new RegExp(`^${parent}/services/hello/revisions/hello-00001-[a-z0-9]{3}$`));
    expect(svc.latestCreatedRevision).toBe(svc.latestReadyRevision);
    expect(svc.urls).toEqual([svc.uri]);
    expect(svc.etag).toMatch(/^".+"$/);
    const container = svc.template?.containers?.[0];
    expect(container?.ports).toEqual([{ name: 'http1', containerPort: 8080 }]);
    expect(container?.resources?.limits).toEqual({ cpu: '1000m', memory: '512Mi' });
    expect(svc.template?.timeout).toEqual({ seconds: '300', nanos: 0 });
    // The client polled the operation until it was done.
    expect(fake.requests.some((r) => r.method === 'GET' && r.url.startsWith(`/v2/${op.name}`))).toBe(true);
  });

  it('the uri answers: the container runs with its env, PORT and K_* (private: an ID token for the uri)', async () => {
    const [svc] = await c.services.getService({ name: `${parent}/services/hello` });
    const uri = svc.uri!;
    expect((await fetch(`${uri}/health`)).status).toBe(403);
    const forbidden = await (await fetch(`${uri}/health`)).text();
    expect(forbidden).toContain('<h1>Error: Forbidden</h1>');
    const wrongAudience = await fetch(`${uri}/health`, {
      headers: { authorization: `Bearer ${fake.idToken('http://elsewhere')}` },
    });
    expect(wrongAudience.status).toBe(401);
    const ok = await fetch(`${uri}/health`, { headers: { authorization: `Bearer ${fake.idToken(uri)}` } });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toMatchObject({ status: 'ok', url: '/health' });
    // google-auth-library's ID token client, as a provider calls a private service.
    const idClient = new IdTokenClient({
      targetAudience: uri,
      idTokenProvider: { fetchIdToken: async (aud) => fake.idToken(aud) },
    });
    const env = (await idClient.request({ url: `${uri}/env` })).data as Record<string, string>;
    expect(env).toMatchObject({
      GREETING: 'hi',
      K_SERVICE: 'hello',
      K_CONFIGURATION: 'hello',
      PORT: '8080', // the container's port, in its own network, as on Cloud Run
    });
    expect(env.K_REVISION).toBe(svc.latestReadyRevision?.split('/').at(-1));
    expect(fake.serviceRequests.at(-1)).toMatchObject({
      service: 'hello',
      url: '/env',
      auth: 'id-token',
      audience: uri,
      status: 200,
    });
  });

  it('get and list (pages, and every location with -), as the client reads them', async () => {
    await deploy('second', { invokerIamDisabled: true });
    const [all] = await c.services.listServices({ parent });
    expect(all.map((s) => s.name?.split('/').at(-1))).toEqual(['hello', 'second']);
    const pages: string[][] = [];
    let pageToken: string | undefined;
    do {
      const [items, , response] = await c.services.listServices(
        { parent, pageSize: 1, pageToken },
        { autoPaginate: false },
      );
      pages.push(items.map((s) => s.name!.split('/').at(-1)!));
      pageToken = response?.nextPageToken || undefined;
    } while (pageToken);
    expect(pages).toEqual([['hello'], ['second']]);
    const [everywhere] = await c.services.listServices({ parent: `projects/${fake.project}/locations/-` });
    expect(everywhere).toHaveLength(2);
    const [elsewhere] = await c.services.listServices({ parent: `projects/${fake.project}/locations/europe-west1` });
    expect(elsewhere).toEqual([]);
    // A public service (invokerIamDisabled) needs no token.
    const [second] = await c.services.getService({ name: `${parent}/services/second` });
    expect((await fetch(`${second.uri}/health`)).status).toBe(200);
  });

  it('update: a new template is a new revision that replaces the instance; labels alone make none', async () => {
    const name = `${parent}/services/second`;
    const [before] = await c.services.getService({ name });
    const [op] = await c.services.updateService({
      service: { ...before, template: { ...before.template, containers: [webContainer({ VERSION: '2' })] } },
    });
    await op.promise();
    const [after] = await c.services.getService({ name });
    expect(after.generation).toBe('2');
    expect(after.latestReadyRevision).toMatch(/\/revisions\/second-00002-[a-z0-9]{3}$/);
    expect(after.uri).toBe(before.uri);
    const env = (await (await fetch(`${after.uri}/env`)).json()) as Record<string, string>;
    expect(env.VERSION).toBe('2');
    const [op2] = await c.services.updateService({ service: { ...after, labels: { tier: 'b' } } });
    await op2.promise();
    const [relabelled] = await c.services.getService({ name });
    expect(relabelled).toMatchObject({ generation: '3', observedGeneration: '3', labels: { tier: 'b' } });
    expect(relabelled.latestReadyRevision).toBe(after.latestReadyRevision);
  });

  it('IAM: allUsers as run.invoker makes the service public, as --allow-unauthenticated does', async () => {
    const resource = `${parent}/services/hello`;
    const [svc] = await c.services.getService({ name: resource });
    const [empty] = await c.services.getIamPolicy({ resource });
    expect(empty).toMatchObject({ version: 1, bindings: [], etag: expect.anything() });
    expect((await fetch(`${svc.uri}/health`)).status).toBe(403);
    const [set] = await c.services.setIamPolicy({
      resource,
      policy: { bindings: [{ role: 'roles/run.invoker', members: ['allUsers'] }], etag: empty.etag },
    });
    expect(set.bindings).toMatchObject([{ role: 'roles/run.invoker', members: ['allUsers'] }]);
    expect((await fetch(`${svc.uri}/health`)).status).toBe(200);
    const stale = await failure(c.services.setIamPolicy({ resource, policy: { bindings: [], etag: empty.etag } }));
    expect(stale.code).toBe(10);
    const [tested] = await c.services.testIamPermissions({ resource, permissions: ['run.routes.invoke'] });
    expect(tested.permissions).toEqual(['run.routes.invoke']);
    await c.services.setIamPolicy({ resource, policy: { bindings: [] } });
    expect((await fetch(`${svc.uri}/health`)).status).toBe(403);
    expect((await failure(c.services.getIamPolicy({ resource: `${parent}/services/nope` }))).code).toBe(5);
  });

  it('delete: the operation ends with the Service; then it is NOT_FOUND and its sandbox is gone', async () => {
    const name = `${parent}/services/second`;
    const [op] = await c.services.deleteService({ name });
    const [deleted] = await op.promise();
    expect(deleted.name).toBe(name);
    const e = await failure(c.services.getService({ name }));
    expect(e.code).toBe(5);
    expect(e.httpStatusCode).toBe(404);
    expect(e.message).toBe(
      `Resource 'second' of kind 'SERVICE' in region '${fake.region}' in project '${fake.project}' does not exist.`,
    );
    expect(await sandboxes(fake)).toHaveLength(1); // hello's
  });

  it('errors: a bad id (INVALID_ARGUMENT with a BadRequest), an id in use (ALREADY_EXISTS), no template', async () => {
    for (const id of ['Upper', '9lives', 'ends-', 'a'.repeat(50), 'under_score']) {
      const e = await failure(
        c.services.createService({ parent, serviceId: id, service: { template: { containers: [webContainer()] } } }),
      );
      expect(e.code).toBe(3);
      expect(e.message).toBe(
        'Violation in CreateServiceRequest.service_id: only lowercase, digits, and hyphens; must begin with letter, and cannot end with hyphen; must be less than 50 characters.',
      );
    }
    const raw = await api(`/v2/${parent}/services?serviceId=Bad`, {
      method: 'POST',
      body: JSON.stringify({ template: { containers: [webContainer()] } }),
    });
    expect(raw.status).toBe(400);
    expect(((await raw.json()) as { error: { details: unknown[] } }).error.details).toEqual([
      {
        '@type': 'type.googleapis.com/google.rpc.BadRequest',
        fieldViolations: [
          {
            field: 'Violation in CreateServiceRequest.service_id',
            description:
              'only lowercase, digits, and hyphens; must begin with letter, and cannot end with hyphen; must be less than 50 characters.',
          },
        ],
      },
    ]);
    const dup = await failure(
      c.services.createService({ parent, serviceId: 'hello', service: { template: { containers: [webContainer()] } } }),
    );
    expect([dup.code, dup.httpStatusCode, dup.message]).toEqual([6, 409, 'Resource already exists.']);
    const noTemplate = await failure(c.services.createService({ parent, serviceId: 'empty', service: {} }));
    expect([noTemplate.code, noTemplate.message]).toEqual([
      3,
      'Violation in CreateServiceRequest.service.template: required field not present.',
    ]);
    const badJson = await api(`/v2/${parent}/services?serviceId=x`, { method: 'POST', body: '{"template":' });
    expect(badJson.status).toBe(400);
    expect(await badJson.json()).toMatchObject({
      error: { status: 'INVALID_ARGUMENT', message: expect.stringMatching(/^Invalid JSON payload received\./) },
    });
    const route = await api('/v2/nothing/here');
    expect(route.status).toBe(404);
    expect(await route.json()).toMatchObject({ error: { code: 404, status: 'NOT_FOUND' } });
  });

  it('enums are numbers under $alt=json;enum-encoding=int (what the client asks), names otherwise', async () => {
    const path = `/v2/${parent}/services/hello`;
    const ints = (await (await api(`${path}?$alt=json%3Benum-encoding=int`)).json()) as Obj;
    expect((ints.terminalCondition as Obj).state).toBe(4);
    expect(ints.ingress).toBe(1);
    expect(ints.launchStage).toBe(4);
    expect(ints.traffic).toEqual([{ type: 1, percent: 100 }]);
    expect((ints.terminalCondition as Obj).type).toBe('Ready');
    const names = (await (await api(path)).json()) as Obj;
    expect((names.terminalCondition as Obj).state).toBe('CONDITION_SUCCEEDED');
    expect(names.traffic).toEqual([{ type: 'TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST', percent: 100 }]);
    expect(names.generation).toBe('1');
  });

  it('operations: get, list and wait, as google.longrunning serves them', async () => {
    const [op] = await c.services.createService({
      parent,
      serviceId: 'third',
      service: { template: { containers: [webContainer()] } },
    });
    const waited = (await (
      await api(`/v2/${op.name}:wait`, { method: 'POST', body: JSON.stringify({ timeout: '30s' }) })
    ).json()) as Obj;
    expect(waited).toMatchObject({
      name: op.name,
      done: true,
      response: { '@type': 'type.googleapis.com/google.cloud.run.v2.Service', name: `${parent}/services/third` },
    });
    expect((waited.metadata as Obj)['@type']).toBe('type.googleapis.com/google.cloud.run.v2.Service');
    const got = await c.services.checkCreateServiceProgress(op.name!);
    expect(got.done).toBe(true);
    const listed = (await (await api(`/v2/${parent}/operations`)).json()) as { operations: { name: string }[] };
    expect(listed.operations.map((o) => o.name)).toContain(op.name);
    const missing = await api(`/v2/${parent}/operations/00000000-0000-0000-0000-000000000000`);
    expect(missing.status).toBe(404);
    const [del] = await c.services.deleteService({ name: `${parent}/services/third` });
    await del.promise();
  });
});

describe('instances in networks of their own', () => {
  /**
   * node answering its service's name on $PORT and on EXTRA_PORT (all addresses), and, on `/reach?port=N`, what a
   * connection from inside the instance to 127.0.0.1:N gives.
   */
  const peer = (extraPort: number, containerPort?: number) => ({
    image: 'us-docker.pkg.dev/cloudrun/container/peer',
    env: [{ name: 'EXTRA_PORT', value: String(extraPort) }],
    ...(containerPort ? { ports: [{ containerPort }] } : {}),
    command: [
      NODE,
      '-e',
      [
        "const http = require('node:http');",
        'const serve = (q, s) => {',
        "  const u = new URL(q.url, 'http://x');",
        "  if (u.pathname !== '/reach') return s.end(process.env.K_SERVICE + ' on ' + process.env.PORT);",
        "  const r = http.get({ host: '127.0.0.1', port: Number(u.searchParams.get('port')), timeout: 2000 }, (res) => {",
        "    let b = ''; res.on('data', (d) => (b += d)); res.on('end', () => s.end('reached ' + b));",
        '  });',
        "  r.on('timeout', () => r.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })));",
        "  r.on('error', (e) => s.end('no ' + e.code));",
        '};',
        "http.createServer(serve).listen(Number(process.env.EXTRA_PORT), '0.0.0.0', () =>",
        "  http.createServer(serve).listen(Number(process.env.PORT), '0.0.0.0'));",
      ].join('\n'),
    ],
  });
  /** A port nothing on the host listens on now. */
  const unusedPort = () =>
    new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const { port } = s.address() as { port: number };
        s.close(() => resolve(port));
      });
    });
  /** Whether the host reaches 127.0.0.1:port. */
  const hostReaches = (port: number) =>
    new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });

  it("a server in one service's instance is out of another's reach (and the host's); each front end serves its own", async () => {
    const [extraA, extraB] = [await unusedPort(), await unusedPort()];
    const [a, b] = await Promise.all([
      deploy('net-a', { invokerIamDisabled: true, template: { containers: [peer(extraA)] } }),
      deploy('net-b', { invokerIamDisabled: true, template: { containers: [peer(extraB, 9090)] } }),
    ]);
    const get = async (uri: string, path = '/') => {
      const r = await fetch(`${uri}${path}`);
      expect(r.status).toBe(200);
      return r.text();
    };
    // Each front end reaches its own instance's port: 8080 (the default) in A, the containerPort 9090 in B.
    expect(await get(a.uri!)).toBe('net-a on 8080');
    expect(await get(b.uri!)).toBe('net-b on 9090');
    // The controls: inside A, A's ports answer; inside B, B's.
    expect(await get(a.uri!, `/reach?port=${extraA}`)).toBe('reached net-a on 8080');
    expect(await get(b.uri!, `/reach?port=${extraB}`)).toBe('reached net-b on 9090');
    // From B, nothing of A: neither its PORT nor its other server; and the other way round.
    expect(await get(b.uri!, '/reach?port=8080')).toBe('no ECONNREFUSED');
    expect(await get(b.uri!, `/reach?port=${extraA}`)).toBe('no ECONNREFUSED');
    expect(await get(a.uri!, `/reach?port=${extraB}`)).toBe('no ECONNREFUSED');
    // Nor does the host reach them at its loopback (only through the front ends).
    expect(await hostReaches(extraA)).toBe(false);
    expect(await hostReaches(extraB)).toBe(false);
    for (const id of ['net-a', 'net-b']) {
      const [del] = await c.services.deleteService({ name: `${parent}/services/${id}` });
      await del.promise();
    }
  });
});

describe('scale to zero', () => {
  it('an idle instance stops; the next request starts another (a cold start, in a new sandbox)', async () => {
    const idle = await startCloudRunFake({ network: 'isolated', scaleToZeroAfterMs: 300 });
    const ic = clients(idle);
    try {
      const [op] = await ic.services.createService({
        parent: parentOf(idle),
        serviceId: 'sleepy',
        service: { invokerIamDisabled: true, template: { containers: [webContainer()] } },
      });
      const [svc] = await op.promise();
      const host = idle.services.find({ project: idle.project, location: idle.region }, 'sleepy').host;
      const first = host.instanceSession;
      expect(first).toBeDefined();
      const { waitFor } = await import('../helpers/cli.js');
      expect(await waitFor(() => !host.instanceRunning, 10_000, 50)).toBe(true);
      const r = await fetch(`${svc.uri}/health`);
      expect(r.status).toBe(200);
      expect(host.instanceSession).toBeDefined();
      expect(host.instanceSession).not.toBe(first);
    } finally {
      await ic.services.close();
      await idle.close();
    }
  });
});

describe('request-based CPU (freezeIdle)', () => {
  /** node counting every 50 ms in the background, and answering the count on any request. */
  const ticker = (cpuIdle?: boolean) => ({
    image: 'us-docker.pkg.dev/cloudrun/container/ticker',
    command: [
      NODE,
      '-e',
      "let n = 0; setInterval(() => n++, 50); require('node:http').createServer((q, s) => s.end(String(n))).listen(Number(process.env.PORT), '127.0.0.1');",
    ],
    ...(cpuIdle === undefined ? {} : { resources: { cpuIdle } }),
  });

  it('an instance with cpuIdle (the default) is frozen between requests; with cpuIdle false it runs on; both stop at once', async () => {
    const frozen = await startCloudRunFake({ network: 'isolated', freezeIdle: true });
    const fc = clients(frozen);
    try {
      const where = { project: frozen.project, location: frozen.region };
      const made: Record<string, { uri: string; ticks(): Promise<number> }> = {};
      for (const [id, cpuIdle] of [
        ['throttled', undefined],
        ['always', false],
      ] as const) {
        const [op] = await fc.services.createService({
          parent: parentOf(frozen),
          serviceId: id,
          service: { invokerIamDisabled: true, template: { containers: [ticker(cpuIdle)] } },
        });
        const [svc] = await op.promise();
        made[id] = { uri: svc.uri!, ticks: async () => Number(await (await fetch(svc.uri!)).text()) };
      }
      const throttled = frozen.services.find(where, 'throttled').host;
      const always = frozen.services.find(where, 'always').host;
      expect(frozen.services.json(frozen.services.find(where, 'throttled')).template).toMatchObject({
        containers: [{ resources: { cpuIdle: true } }],
      });
      const before = { throttled: await made.throttled!.ticks(), always: await made.always!.ticks() };
      expect(throttled.instanceFrozen).toBe(true);
      expect(always.instanceFrozen).toBe(false);
      await new Promise((r) => setTimeout(r, 1_500));
      const gained = {
        throttled: (await made.throttled!.ticks()) - before.throttled,
        always: (await made.always!.ticks()) - before.always,
      };
      // 1.5 s is 30 ticks: frozen, a few at most (those of the requests themselves); running, nearly all.
      expect(gained.throttled).toBeLessThan(8);
      expect(gained.always).toBeGreaterThan(15);
      // A frozen instance is thawed to be stopped: its SIGTERM lands at once, not after the grace period.
      const t0 = Date.now();
      const [del] = await fc.services.deleteService({ name: `${parentOf(frozen)}/services/throttled` });
      await del.promise();
      expect(Date.now() - t0).toBeLessThan(2_000);
    } finally {
      await fc.services.close();
      await frozen.close();
    }
  });
});
