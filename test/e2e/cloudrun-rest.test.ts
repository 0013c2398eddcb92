/**
 * The cloud_run provider's light path (src/providers/google-rest.ts): get, exec and shell read the session's
 * service with one plain REST GET instead of @google-cloud/run. Against small servers on 127.0.0.1 (what it sends,
 * how each answer maps: Google's JSON errors, UNAVAILABLE asked again, no answer), Application Default Credentials
 * through the CLI (a metadata server of the test's own), and the Cloud Run fake (an exec through the agent).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CloudRunProvider } from '../../src/providers/cloudrun/cloudrun.js';
import { type CloudRunConfig, cloudRunConfig } from '../../src/providers/cloudrun/config.js';
import { parseCreateRequest } from '../../src/session/model.js';
import { type CloudRunFake, startCloudRunFake } from '../fakes/cloudrun/server.js';
import { run as runCli } from '../helpers/cli.js';

const PROJECT = 'onmemos-test';
const REGION = 'us-central1';
const ID = 'ws-team-alice-1700000000-abcd';
const NAME = `projects/${PROJECT}/locations/${REGION}/services/${ID}`;
const TOKEN = 'ya29.rest-test-token';

/** A service as the API answers it (enums as names: no $alt), that is an onmemos session. */
function serviceJson(id = ID) {
  return {
    name: `projects/${PROJECT}/locations/${REGION}/services/${id}`,
    uri: 'http://127.0.0.1:9',
    labels: { 'managed-by': 'onmemos', 'onmemos-namespace': 'team', 'onmemos-user': 'alice', 'onmemos-template': 'go' },
    annotations: {
      'onmemos.dev/session-id': id,
      'onmemos.dev/created': '2026-01-01T00:00:00.000Z',
      'onmemos.dev/ttl-minutes': '60',
      'onmemos.dev/expires-at': new Date(Date.now() + 3600_000).toISOString(),
      'onmemos.dev/secret-nonce': 'nonce',
    },
    terminalCondition: { type: 'Ready', state: 'CONDITION_SUCCEEDED' },
    createTime: '2026-01-01T00:00:00.000000Z',
  };
}

const googleError = (code: number, status: string, message: string) => ({ error: { code, message, status } });

interface Seen {
  method?: string;
  url?: string;
  headers: IncomingMessage['headers'];
  at: number;
}

/** A server on 127.0.0.1:0 that records each request and answers with `answer` (or never, when it returns null). */
async function serve(
  answer: (req: IncomingMessage, n: number) => { code: number; body: unknown; headers?: Record<string, string> } | null,
) {
  const seen: Seen[] = [];
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    seen.push({ method: req.method, url: req.url, headers: req.headers, at: Date.now() });
    const a = answer(req, seen.length);
    if (!a) return; // no answer
    const text = typeof a.body === 'string';
    res
      .writeHead(a.code, { 'content-type': text ? 'text/plain' : 'application/json; charset=UTF-8', ...a.headers })
      .end(text ? a.body : JSON.stringify(a.body));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  return {
    port,
    url: `http://127.0.0.1:${port}/`,
    seen,
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}

let dir: string;
let tokenFile: string;
beforeAll(() => {
  dir = mkdtempSync(join(process.env.ONMEMOS_TEST_TMP ?? tmpdir(), 'cloudrun-rest-'));
  tokenFile = join(dir, 'access-token');
  writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A provider pointed at `endpoint` with the token file, its service reads bounded by `timeoutMs`. */
function providerAt(endpoint: string, timeoutMs?: number): CloudRunProvider {
  const env = {
    PROJECT_ID: PROJECT,
    REGION,
    CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN: endpoint,
    CLOUDSDK_AUTH_ACCESS_TOKEN_FILE: tokenFile,
    ONMEMOS_CLOUDRUN_KEY: 'k'.repeat(40),
  };
  const r = cloudRunConfig(env);
  if (!r.ok) throw new Error(r.reason);
  const config: CloudRunConfig = { ...r.config, apiTimeoutMs: timeoutMs };
  return new CloudRunProvider(config, env, async () => 'id-token');
}

const failure = async (p: Promise<unknown>) => {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(Error);
  expect((e as Error).message.split('\n')).toHaveLength(1);
  return e as Error & { code: string };
};

describe('the light path to one service', () => {
  it("is one GET of /v2/{name} with the token file's bearer token, and the session comes from it", async () => {
    const api = await serve(() => ({ code: 200, body: serviceJson() }));
    try {
      const s = await providerAt(api.url).get(ID);
      expect(s).toMatchObject({
        id: ID,
        provider: 'cloud_run',
        status: 'running',
        template: 'go',
        url: 'http://127.0.0.1:9',
      });
      expect(s.details).toMatchObject({ service_name: NAME });
      expect(api.seen).toHaveLength(1);
      expect(api.seen[0]).toMatchObject({ method: 'GET', url: `/v2/${NAME}` });
      expect(api.seen[0]!.headers.authorization).toBe(`Bearer ${TOKEN}`);
      // Not the client library's request (it sends x-goog-api-client and its own user agent).
      expect(api.seen[0]!.headers['x-goog-api-client']).toBeUndefined();
      expect(api.seen[0]!.headers['user-agent']).toBe('onmemos');
    } finally {
      await api.close();
    }
  });

  it('a 404 answer: no such session, for get and for exec, without asking again', async () => {
    const message = `Resource '${ID}' of kind 'SERVICE' in region '${REGION}' in project '${PROJECT}' does not exist.`;
    const api = await serve(() => ({ code: 404, body: googleError(404, 'NOT_FOUND', message) }));
    try {
      const p = providerAt(api.url);
      const g = await failure(p.get(ID));
      expect(g).toMatchObject({ code: 'not_found', message: `no such session: ${ID}` });
      const x = await failure(p.exec(ID, { argv: ['true'] }));
      expect(x).toMatchObject({ code: 'not_found', message: `no such session: ${ID}` });
      expect(api.seen).toHaveLength(2);
    } finally {
      await api.close();
    }
  });

  it("a 503 answer is asked again after 1 s (as the client's GetService retries); then unavailable, with Google's message", async () => {
    const api = await serve(() => ({
      code: 503,
      body: googleError(503, 'UNAVAILABLE', 'The service is currently unavailable.'),
    }));
    try {
      // 1.5 s: room for the first retry (at 1 s), not for the second (1.3 s after it).
      const e = await failure(providerAt(api.url, 1_500).exec(ID, { argv: ['true'] }));
      expect(e.code).toBe('unavailable');
      expect(e.message).toBe(
        `Cloud Run (projects/${PROJECT}/locations/${REGION}) failed (reading the service): The service is currently unavailable.`,
      );
      expect(api.seen).toHaveLength(2);
      expect(api.seen[1]!.at - api.seen[0]!.at).toBeGreaterThanOrEqual(950);
    } finally {
      await api.close();
    }
  });

  it('a 503 then the service: the retry answers', async () => {
    const api = await serve((_req, n) =>
      n === 1
        ? { code: 503, body: googleError(503, 'UNAVAILABLE', 'The service is currently unavailable.') }
        : { code: 200, body: serviceJson() },
    );
    try {
      expect((await providerAt(api.url).get(ID)).id).toBe(ID);
      expect(api.seen).toHaveLength(2);
    } finally {
      await api.close();
    }
  });

  it("a 403: refused, in Google's words, not asked again", async () => {
    const message = `Permission 'run.services.get' denied on resource '${NAME}' (or resource may not exist).`;
    const api = await serve(() => ({ code: 403, body: googleError(403, 'PERMISSION_DENIED', message) }));
    try {
      const e = await failure(providerAt(api.url).get(ID));
      expect(e.code).toBe('provider_error');
      expect(e.message).toBe(
        `Cloud Run (projects/${PROJECT}/locations/${REGION}) refused reading the service: ${message}`,
      );
      expect(api.seen).toHaveLength(1);
    } finally {
      await api.close();
    }
  });

  it('no answer: unavailable once the time is up', async () => {
    const api = await serve(() => null);
    try {
      const e = await failure(providerAt(api.url, 300).get(ID));
      expect(e.code).toBe('unavailable');
      expect(e.message).toMatch(/^cannot reach Cloud Run \(.*\) \(reading the service\): no answer within 0\.3 s$/);
    } finally {
      await api.close();
    }
  });

  it('nothing listening: unavailable, at once', async () => {
    const api = await serve(() => null);
    await api.close();
    const e = await failure(providerAt(api.url).get(ID));
    expect(e.code).toBe('unavailable');
    expect(e.message).toMatch(/ECONNREFUSED/);
  });
});

describe('Application Default Credentials (no token file), through the CLI', () => {
  it("the access token comes from google-auth-library (here: a metadata server's), and the GET carries it", async () => {
    // The metadata server of a GCE VM or Cloud Run, as gcp-metadata asks it (GCE_METADATA_HOST points it here).
    const flavor = { 'metadata-flavor': 'Google' };
    const metadata = await serve((req) =>
      req.url?.startsWith('/computeMetadata/v1/instance/service-accounts/default/token')
        ? {
            code: 200,
            body: { access_token: 'ya29.from-metadata', expires_in: 3599, token_type: 'Bearer' },
            headers: flavor,
          }
        : { code: 404, body: {}, headers: flavor },
    );
    const api = await serve(() => ({ code: 200, body: serviceJson() }));
    const home = mkdtempSync(join(dir, 'home-'));
    try {
      const r = await runCli(['get', ID, '--json'], {
        env: {
          HOME: home, // no gcloud application_default_credentials.json
          GOOGLE_APPLICATION_CREDENTIALS: '',
          GCE_METADATA_HOST: `127.0.0.1:${metadata.port}`,
          METADATA_SERVER_DETECTION: 'assume-present',
          PROJECT_ID: PROJECT,
          REGION,
          CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN: api.url,
          ONMEMOS_STATE_DIR: join(home, 'state'),
        },
      });
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({ id: ID, provider: 'cloud_run', status: 'running' });
      expect(metadata.seen.length).toBeGreaterThanOrEqual(1);
      expect(metadata.seen.at(-1)!.headers['metadata-flavor']).toBe('Google');
      expect(api.seen).toHaveLength(1);
      expect(api.seen[0]!.headers.authorization).toBe('Bearer ya29.from-metadata');
      expect(api.seen[0]!.headers['user-agent']).toBe('onmemos');
    } finally {
      await Promise.all([metadata.close(), api.close()]);
    }
  });
});

describe('against the Cloud Run fake', () => {
  let fake: CloudRunFake;
  let provider: CloudRunProvider;
  let id = '';
  /** A provider of its own (one remembers the services it read in the last 2 s). */
  const fresh = () => {
    const env = { ...process.env, ...fake.env, ONMEMOS_CONFIG_DIR: join(fake.dir, 'onmemos-config') };
    const r = cloudRunConfig(env);
    if (!r.ok) throw new Error(r.reason);
    return new CloudRunProvider(r.config, env, async (audience) => fake.idToken(audience));
  };
  beforeAll(async () => {
    fake = await startCloudRunFake();
    provider = fresh();
    id = (await provider.create(parseCreateRequest({ provider: 'cloud_run', namespace: 'rest', ttl_minutes: 5 }))).id;
  });
  afterAll(async () => {
    if (id) await provider.delete(id).catch(() => {});
    await fake.close();
  });

  it('an exec reads the service with the light GET (bearer token, no client library) and runs through the agent', async () => {
    const before = fake.requests.length;
    const p = await fresh().exec(id, { argv: ['sh', '-c', 'echo $WORKSPACE_ID'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.resume();
    expect(await p.exit).toMatchObject({ code: 0 });
    expect(out).toBe(`${id}\n`);
    const reads = fake.requests.slice(before);
    expect(reads.map((r) => [r.method, r.url.split('?')[0], r.auth, r.status])).toEqual([
      ['GET', `/v2/projects/${fake.project}/locations/${fake.region}/services/${id}`, 'bearer', 200],
    ]);
    expect(reads[0]!.apiClient).toBeUndefined();
  });

  it("the fake's 503 (UNAVAILABLE) on the GET is asked again, and the exec goes on", async () => {
    fake.faults.set({ apiErrors: [{ path: `/services/${id}`, method: 'GET', code: 503, count: 1 }] });
    try {
      const before = fake.requests.length;
      const p = await fresh().exec(id, { argv: ['true'] });
      p.stdout.resume();
      p.stderr.resume();
      expect(await p.exit).toMatchObject({ code: 0 });
      expect(fake.requests.slice(before).map((r) => r.status)).toEqual([503, 200]);
    } finally {
      fake.faults.clear();
    }
  });

  it('an exec right after a get (as `onmemos exec` does: locate, then exec) reads the service once', async () => {
    const p1 = fresh();
    const before = fake.requests.length;
    await p1.get(id);
    const p = await p1.exec(id, { argv: ['true'] });
    p.stdout.resume();
    p.stderr.resume();
    expect(await p.exit).toMatchObject({ code: 0 });
    expect(fake.requests.slice(before).map((r) => r.method)).toEqual(['GET']);
    // Once the read is 2 s old, an exec reads the service again.
    await new Promise((r) => setTimeout(r, 2_050));
    const q = await p1.exec(id, { argv: ['true'] });
    q.stdout.resume();
    q.stderr.resume();
    expect(await q.exit).toMatchObject({ code: 0 });
    expect(fake.requests.slice(before).map((r) => r.method)).toEqual(['GET', 'GET']);
  });

  it('with Application Default Credentials (a metadata server): the CLI gets both tokens there, and no project lookup', async () => {
    const flavor = { 'metadata-flavor': 'Google' };
    const metadata = await serve((req) => {
      const u = new URL(req.url ?? '/', 'http://x');
      if (u.pathname === '/computeMetadata/v1/instance/service-accounts/default/token')
        return {
          code: 200,
          body: { access_token: fake.token, expires_in: 3599, token_type: 'Bearer' },
          headers: flavor,
        };
      if (u.pathname === '/computeMetadata/v1/instance/service-accounts/default/identity')
        return { code: 200, body: fake.idToken(u.searchParams.get('audience') ?? ''), headers: flavor };
      return { code: 404, body: 'not here', headers: flavor };
    });
    const home = mkdtempSync(join(dir, 'home-'));
    try {
      const before = fake.requests.length;
      const r = await runCli(['exec', id, '--', 'sh', '-c', 'echo via-adc'], {
        env: {
          HOME: home,
          GOOGLE_APPLICATION_CREDENTIALS: '',
          GCE_METADATA_HOST: `127.0.0.1:${metadata.port}`,
          METADATA_SERVER_DETECTION: 'assume-present',
          PROJECT_ID: fake.project,
          REGION: fake.region,
          CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN: fake.env.CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN,
          ONMEMOS_CONFIG_DIR: join(fake.dir, 'onmemos-config'), // the key the session's secret is made with
          ONMEMOS_STATE_DIR: join(home, 'state'),
        },
      });
      expect(r, r.stderr).toMatchObject({ code: 0, stdout: 'via-adc\n' });
      const paths = metadata.seen.map((x) => new URL(x.url ?? '/', 'http://x').pathname);
      expect(paths).toContain('/computeMetadata/v1/instance/service-accounts/default/token');
      expect(paths).toContain('/computeMetadata/v1/instance/service-accounts/default/identity');
      // The project is given to google-auth-library, which then neither asks for one here nor runs gcloud.
      expect(paths).not.toContain('/computeMetadata/v1/project/project-id');
      // locate's get, whose read the exec then uses: the light GET, with the metadata server's access token.
      const reads = fake.requests.slice(before);
      expect(reads.map((x) => [x.method, x.auth, x.apiClient])).toEqual([['GET', 'bearer', undefined]]);
    } finally {
      await metadata.close();
    }
  });

  it('a session that is not there: no such session', async () => {
    const gone = 'ws-rest-nobody-1700000000-zzzz';
    const e = await failure(provider.exec(gone, { argv: ['true'] }));
    expect(e).toMatchObject({ code: 'not_found', message: `no such session: ${gone}` });
  });
});
