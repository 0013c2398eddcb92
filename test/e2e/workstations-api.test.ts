/**
 * The Cloud Workstations fake's REST API as the proto's http rules give it (the path `@google-cloud/workstations`'
 * REST fallback and gcloud take): the bearer token, the cluster and config, workstations through their
 * long-running operations and states, enums as names or numbers, /v1beta beside /v1, generateAccessToken, Google's
 * errors, the faults; and the tunnel endpoint's answers before any upgrade (TLS from the fake's CA, 401, 403, 503).
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { startWorkstationsFake, type WorkstationsFake } from '../fakes/workstations/server.js';
import {
  accessToken,
  call,
  createWorkstation,
  deleteWorkstation,
  ok,
  sandboxes,
  startWorkstation,
  stopWorkstation,
  waitOperation,
  wsName,
} from '../helpers/workstations.js';

let fake: WorkstationsFake;
beforeAll(async () => {
  fake = await startWorkstationsFake({ startTimeMs: 800 });
});
afterAll(async () => {
  await fake?.close();
});

const INT = '$alt=json%3Benum-encoding%3Dint';

/** Opens the tunnel to `port` of workstation `id`: the upgrade's status and body (101 when it opened). */
function tunnel(id: string, port: number, token?: string): Promise<{ status: number; body: string }> {
  const host = fake.workstations.get(id)!.host;
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`wss://${host}/_workstation/tcp/${port}`, {
      ca: readFileSync(fake.caFile),
      ...(token ? { headers: { authorization: `Bearer ${token}` } } : {}),
    });
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    ws.on('open', () => {
      ws.close();
      resolve({ status: 101, body: '' });
    });
    ws.on('error', reject);
  });
}

// The workstations below are made, started, stopped and deleted in order: the run never shuffles these steps.
describe('the API, step by step', { shuffle: false }, () => {
  describe('auth', () => {
    it('needs the fake token on every request: 401 UNAUTHENTICATED as Google words it', async () => {
      const none = await call(fake, 'GET', `/v1/${fake.configName}`, undefined, null);
      expect(none.status).toBe(401);
      expect(none.body).toMatchObject({
        error: {
          code: 401,
          status: 'UNAUTHENTICATED',
          message: expect.stringMatching(/^Request is missing required authentication credential\./),
          details: [
            {
              reason: 'CREDENTIALS_MISSING',
              metadata: {
                method: 'google.cloud.workstations.v1.Workstations.GetWorkstationConfig',
                service: 'workstations.googleapis.com',
              },
            },
          ],
        },
      });
      const other = await call(fake, 'GET', `/v1/${fake.configName}`, undefined, 'ya29.other');
      expect(other.status).toBe(401);
      expect(other.body).toMatchObject({
        error: { message: expect.stringMatching(/^Request had invalid authentication/) },
      });
      expect(fake.requests.slice(-2).map((r) => r.auth)).toEqual(['none', 'refused']);
    });
  });

  describe('cluster and config', () => {
    it('serves the one cluster and config, under /v1 and /v1beta', async () => {
      expect(fake.configName).toBe(
        'projects/onmemos-fake/locations/us-central1/workstationClusters/onmemos-cluster/workstationConfigs/onmemos-config',
      );
      for (const v of ['v1', 'v1beta']) {
        const cfg = await ok(call(fake, 'GET', `/${v}/${fake.configName}`));
        expect(cfg).toMatchObject({ name: fake.configName, uid: expect.any(String), idleTimeout: '1200s' });
        expect(cfg.disableTcpConnections).toBeUndefined(); // false, left out as proto3 JSON does
        const cluster = await ok(call(fake, 'GET', `/${v}/${fake.configName.replace(/\/workstationConfigs\/.*/, '')}`));
        expect(cluster.name).toBe(`projects/onmemos-fake/locations/us-central1/workstationClusters/onmemos-cluster`);
      }
      const list = await ok(call(fake, 'GET', `/v1/${fake.configName.replace(/\/[^/]+$/, '')}`));
      expect((list.workstationConfigs as unknown[]).length).toBe(1);
      const cfgInt = await ok(call(fake, 'GET', `/v1/${fake.configName}?${INT}`));
      expect(cfgInt.persistentDirectories).toEqual([
        { mountPath: '/home', gcePd: { sizeGb: 200, fsType: 'ext4', diskType: 'pd-standard', reclaimPolicy: 1 } },
      ]);
      const missing = await call(fake, 'GET', `/v1/${fake.configName.replace('onmemos-config', 'nope')}`);
      expect(missing).toEqual({
        status: 404,
        body: {
          error: {
            code: 404,
            message: `Resource '${fake.configName.replace('onmemos-config', 'nope')}' was not found`,
            status: 'NOT_FOUND',
          },
        },
      });
      expect((await call(fake, 'GET', '/v1/projects/p/locations/l/foo')).status).toBe(404);
    });
  });

  describe('workstations', () => {
    it('create: an operation whose response is the workstation, STATE_STOPPED, with its host', async () => {
      const first = await ok(
        call(fake, 'POST', `/v1/${fake.configName}/workstations?workstationId=w1&${INT}`, {
          labels: { 'onmemos-session': 'ws-a-b-1-xyz' },
          annotations: { note: 'hello' },
          displayName: 'W one',
        }),
      );
      expect(first.name).toMatch(
        /^projects\/onmemos-fake\/locations\/us-central1\/operations\/operation-\d+-[0-9a-f]+-[0-9a-f]+-[0-9a-f]+$/,
      );
      expect(first.done).toBeUndefined();
      expect(first.metadata).toMatchObject({
        '@type': 'type.googleapis.com/google.cloud.workstations.v1.OperationMetadata',
        target: wsName(fake, 'w1'),
        verb: 'create',
        apiVersion: 'v1',
      });
      const op = await waitOperation(fake, first);
      expect(op.response).toMatchObject({
        '@type': 'type.googleapis.com/google.cloud.workstations.v1.Workstation',
        name: wsName(fake, 'w1'),
        state: 'STATE_STOPPED',
        labels: { 'onmemos-session': 'ws-a-b-1-xyz' },
        annotations: { note: 'hello' },
        displayName: 'W one',
        host: expect.stringMatching(/^127\.0\.0\.1:\d+$/),
        uid: expect.any(String),
        etag: expect.any(String),
        createTime: expect.any(String),
      });
      expect(op.metadata?.endTime).toEqual(expect.any(String));
      const got = await ok(call(fake, 'GET', `/v1/${wsName(fake, 'w1')}`));
      expect(got.state).toBe('STATE_STOPPED');
      expect(got.reconciling).toBeUndefined();
      expect((await ok(call(fake, 'GET', `/v1/${wsName(fake, 'w1')}?${INT}`))).state).toBe(4);
      expect((await ok(call(fake, 'GET', `/v1beta/${wsName(fake, 'w1')}`))).state).toBe('STATE_STOPPED');
    });

    it('refuses bad and taken ids, and unknown parents', async () => {
      const bad = await call(fake, 'POST', `/v1/${fake.configName}/workstations?workstationId=Bad_Id`, {});
      expect(bad.status).toBe(400);
      expect(bad.body).toMatchObject({
        error: { status: 'INVALID_ARGUMENT', message: expect.stringContaining('Bad_Id') },
      });
      expect((await call(fake, 'POST', `/v1/${fake.configName}/workstations`, {})).status).toBe(400);
      const taken = await call(fake, 'POST', `/v1/${fake.configName}/workstations?workstationId=w1`, {});
      expect(taken.status).toBe(409);
      expect(taken.body).toMatchObject({ error: { status: 'ALREADY_EXISTS' } });
      const elsewhere = fake.configName.replace('us-central1', 'europe-west1');
      expect((await call(fake, 'POST', `/v1/${elsewhere}/workstations?workstationId=w9`, {})).status).toBe(404);
      expect((await call(fake, 'GET', `/v1/${wsName(fake, 'nope')}`)).body).toMatchObject({
        error: { code: 404, message: `Resource '${wsName(fake, 'nope')}' was not found` },
      });
    });

    it('start: STATE_STARTING (reconciling) for startTimeMs, then STATE_RUNNING with startTime; a v1 operation polled at /v1beta', async () => {
      const first = await ok(call(fake, 'POST', `/v1/${wsName(fake, 'w1')}:start?${INT}`, {}));
      const starting = await ok(call(fake, 'GET', `/v1/${wsName(fake, 'w1')}`));
      expect(starting).toMatchObject({ state: 'STATE_STARTING', reconciling: true });
      expect((await ok(call(fake, 'GET', `/v1/${wsName(fake, 'w1')}?${INT}`))).state).toBe(1);
      const op = await waitOperation(fake, first, 'v1beta');
      expect(op.response).toMatchObject({ state: 'STATE_RUNNING', startTime: expect.any(String) });
      expect(op.response?.reconciling).toBeUndefined();
      expect(fake.workstations.get('w1')).toMatchObject({
        state: 'STATE_RUNNING',
        session: expect.stringMatching(/^ws-w1-user-/),
        sshPort: expect.any(Number),
      });
      // Starting a running workstation changes nothing.
      expect((await startWorkstation(fake, 'w1')).response?.state).toBe('STATE_RUNNING');
    });

    it('lists, pages, updates labels; operations are listed and found', async () => {
      await createWorkstation(fake, 'w2');
      const all = await ok(call(fake, 'GET', `/v1/${fake.configName}/workstations`));
      expect((all.workstations as { name: string }[]).map((w) => w.name.split('/').pop())).toEqual(['w1', 'w2']);
      const p1 = await ok(call(fake, 'GET', `/v1/${fake.configName}/workstations?pageSize=1`));
      expect((p1.workstations as unknown[]).length).toBe(1);
      const p2 = await ok(
        call(fake, 'GET', `/v1/${fake.configName}/workstations?pageSize=1&pageToken=${p1.nextPageToken as string}`),
      );
      expect((p2.workstations as { name: string }[])[0]!.name).toBe(wsName(fake, 'w2'));
      expect(p2.nextPageToken).toBeUndefined();
      const any = await ok(
        call(
          fake,
          'GET',
          `/v1/projects/onmemos-fake/locations/us-central1/workstationClusters/-/workstationConfigs/-/workstations`,
        ),
      );
      expect((any.workstations as unknown[]).length).toBe(2);
      const upd = await ok(
        call(fake, 'PATCH', `/v1/${wsName(fake, 'w2')}?updateMask=labels`, {
          labels: { a: 'b' },
          displayName: 'ignored',
        }),
      );
      expect((await waitOperation(fake, upd)).response).toMatchObject({ labels: { a: 'b' } });
      expect((await ok(call(fake, 'GET', `/v1/${wsName(fake, 'w2')}`))).displayName).toBeUndefined();
      const ops = await ok(call(fake, 'GET', '/v1/projects/onmemos-fake/locations/us-central1/operations'));
      expect((ops.operations as unknown[]).length).toBeGreaterThanOrEqual(4);
      expect(
        (await call(fake, 'GET', '/v1/projects/onmemos-fake/locations/us-central1/operations/operation-1-a-b-c'))
          .status,
      ).toBe(404);
    });

    it('generateAccessToken: 1 h by default, as asked up to 24 h, for the tunnel of that workstation', async () => {
      const name = wsName(fake, 'w1');
      const plain = await ok(call(fake, 'POST', `/v1/${name}:generateAccessToken`, {}));
      expect(plain.accessToken).toEqual(expect.any(String));
      const left = Date.parse(plain.expireTime as string) - Date.now();
      expect(left).toBeGreaterThan(3590_000);
      expect(left).toBeLessThanOrEqual(3600_000);
      const short = await accessToken(fake, 'w1', '60s');
      expect(Date.parse(short.expireTime) - Date.now()).toBeLessThanOrEqual(60_000);
      const tooLong = await call(fake, 'POST', `/v1/${name}:generateAccessToken`, { ttl: '86401s' });
      expect(tooLong.status).toBe(400);
      expect((await call(fake, 'POST', `/v1/${name}:generateAccessToken`, { ttl: 'soon' })).status).toBe(400);
      const at = new Date(Date.now() + 120_000).toISOString();
      const byTime = await ok(call(fake, 'POST', `/v1/${name}:generateAccessToken`, { expireTime: at }));
      expect(Date.parse(byTime.expireTime as string)).toBeCloseTo(Date.parse(at), -3);
      expect((await tunnel('w1', 22, plain.accessToken as string)).status).toBe(101);
    });

    it('the host: TLS from the fake CA for 127.0.0.1; 401 without a good token, 403 with TCP disabled, 503 on an empty port', async () => {
      const { accessToken: t } = await accessToken(fake, 'w1');
      expect(await tunnel('w1', 22)).toEqual({
        status: 401,
        body: 'Unauthorized: the request has no Authorization header (Bearer access token from generateAccessToken)\n',
      });
      expect((await tunnel('w1', 22, fake.token)).status).toBe(401); // the API's token is not a workstation's
      expect((await tunnel('w1', 1, t)).status).toBe(503);
      const portToken = await ok(call(fake, 'POST', `/v1/${wsName(fake, 'w1')}:generateAccessToken`, { port: 2222 }));
      expect((await tunnel('w1', 22, portToken.accessToken as string)).status).toBe(401);
      fake.workstations.disableTcpConnections = true;
      try {
        expect((await ok(call(fake, 'GET', `/v1/${fake.configName}`))).disableTcpConnections).toBe(true);
        expect((await tunnel('w1', 22, t)).status).toBe(403);
      } finally {
        fake.workstations.disableTcpConnections = false;
      }
      const host = fake.workstations.get('w1')!.host;
      const plain = await new Promise<number>((resolve, reject) => {
        import('node:https').then(({ get }) =>
          get(
            `https://${host}/`,
            { ca: readFileSync(fake.caFile), headers: { authorization: `Bearer ${t}` } },
            (res) => {
              res.resume();
              resolve(res.statusCode ?? 0);
            },
          ).on('error', reject),
        );
      });
      expect(plain).toBe(503);
      expect(fake.tunnelRequests.at(-1)).toMatchObject({ upgrade: false, auth: 'ok', status: 503 });
    });

    it('stop: STATE_STOPPING then STATE_STOPPED, the sandbox gone', async () => {
      const session = fake.workstations.get('w1')!.session!;
      const first = await ok(call(fake, 'POST', `/v1/${wsName(fake, 'w1')}:stop`, {}));
      expect((await ok(call(fake, 'GET', `/v1/${wsName(fake, 'w1')}`))).state).toBe('STATE_STOPPING');
      expect((await waitOperation(fake, first)).response?.state).toBe('STATE_STOPPED');
      expect(await sandboxes(fake)).not.toContain(session);
      expect((await stopWorkstation(fake, 'w1')).response?.state).toBe('STATE_STOPPED');
    });
  });

  describe('faults', () => {
    it('failOperations: a start fails (INTERNAL 13), the workstation stays STATE_STOPPED', async () => {
      fake.faults.set({ failOperations: { method: 'startWorkstation', name: 'w2', count: 1 } });
      const op = await startWorkstation(fake, 'w2');
      expect(op.error).toEqual({ code: 13, message: 'Internal error encountered.' });
      expect(fake.workstations.get('w2')!.state).toBe('STATE_STOPPED');
      fake.faults.set({
        failOperations: { method: 'createWorkstation', code: 'RESOURCE_EXHAUSTED', message: 'quota' },
      });
      expect((await createWorkstation(fake, 'w3')).error).toEqual({ code: 8, message: 'quota' });
      expect(fake.workstations.get('w3')).toBeUndefined();
      fake.faults.set({ failOperations: undefined });
    });

    it('apiErrors: 503 UNAVAILABLE for as many requests as asked', async () => {
      fake.faults.set({ apiErrors: [{ path: '/workstations/w2', method: 'GET', code: 503, count: 1 }] });
      const r = await call(fake, 'GET', `/v1/${wsName(fake, 'w2')}`);
      expect(r).toEqual({
        status: 503,
        body: { error: { code: 503, message: 'The service is currently unavailable.', status: 'UNAVAILABLE' } },
      });
      expect((await call(fake, 'GET', `/v1/${wsName(fake, 'w2')}`)).status).toBe(200);
      fake.faults.clear();
    });

    it('latencyMs delays every answer', async () => {
      fake.faults.set({ latencyMs: 300 });
      const t0 = Date.now();
      await ok(call(fake, 'GET', `/v1/${wsName(fake, 'w2')}`));
      expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
      fake.faults.clear();
    });

    it('neverRunning: STATE_STARTING until a stop, which aborts the start (ABORTED 10)', async () => {
      fake.faults.set({ neverRunning: 'w2' });
      const first = await ok(call(fake, 'POST', `/v1/${wsName(fake, 'w2')}:start`, {}));
      await new Promise((r) => setTimeout(r, 1_500));
      expect(fake.workstations.get('w2')).toMatchObject({ state: 'STATE_STARTING', reconciling: true });
      expect((await ok(call(fake, 'GET', first.name ? `/v1/${first.name as string}` : ''))).done).toBeUndefined();
      const stopped = await stopWorkstation(fake, 'w2');
      expect(stopped.response?.state).toBe('STATE_STOPPED');
      const start = await waitOperation(fake, first);
      expect(start.error).toMatchObject({ code: 10 });
      fake.faults.clear();
    });

    it('noSshd: the workstation runs, its port 22 answers 503', async () => {
      fake.faults.set({ noSshd: 'w2' });
      expect((await startWorkstation(fake, 'w2')).response?.state).toBe('STATE_RUNNING');
      const { accessToken: t } = await accessToken(fake, 'w2');
      expect(await tunnel('w2', 22, t)).toEqual({
        status: 503,
        body: 'The workstation does not have a server running on port 22\n',
      });
      fake.faults.clear();
    });
  });

  describe('delete', () => {
    it('removes workstations (running ones too), their sandboxes and hosts', async () => {
      const host = fake.workstations.get('w2')!.host;
      for (const id of ['w1', 'w2']) {
        const op = await deleteWorkstation(fake, id);
        expect(op.error).toBeUndefined();
        expect(op.response).toMatchObject({ name: wsName(fake, id) });
      }
      expect((await call(fake, 'GET', `/v1/${wsName(fake, 'w1')}`)).status).toBe(404);
      expect(await sandboxes(fake)).toEqual([]);
      const refused = await fetch(`https://${host}/`).catch((e: Error) => e);
      expect(refused).toBeInstanceOf(Error);
    });
  });
});
