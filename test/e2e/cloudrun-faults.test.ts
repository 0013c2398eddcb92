/**
 * The Cloud Run fake's faults, each as the real API shows it to the real clients: an operation that fails, a
 * revision whose container never answers (or exits), an update that fails while the old revision keeps serving, a
 * failing job, API 5xx and 429 (with the client's own retry), latency against the client's timeout. Each ends
 * without a hang and leaves no sandbox behind. Containers run as real local sandboxes (root, bwrap).
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type CloudRunFake, startCloudRunFake } from '../fakes/cloudrun/server.js';
import { waitFor } from '../helpers/cli.js';
import { clients, failure, parentOf, sandboxes, shellJob, webContainer } from '../helpers/cloudrun.js';

const STARTUP_MS = 2_000;
let fake: CloudRunFake;
let c: ReturnType<typeof clients>;
let parent: string;
const lines: string[] = [];

beforeAll(async () => {
  fake = await startCloudRunFake({ network: 'isolated', startupTimeoutMs: STARTUP_MS, log: (l) => lines.push(l) });
  c = clients(fake);
  parent = parentOf(fake);
});
afterAll(async () => {
  await Promise.all([c?.services.close(), c?.jobs.close(), c?.executions.close()]);
  await fake?.close();
});
afterEach(() => fake.faults.clear());

const create = (id: string, container: object = webContainer()) =>
  c.services.createService({
    parent,
    serviceId: id,
    service: { invokerIamDisabled: true, template: { containers: [container] } },
  });

async function remove(id: string): Promise<void> {
  const [op] = await c.services.deleteService({ name: `${parent}/services/${id}` });
  await op.promise();
  expect(await sandboxes(fake)).toEqual([]);
}

const NOT_LISTENING =
  /^Revision '(\S+-00001-[a-z0-9]{3})' is not ready and cannot serve traffic\. The user-provided container failed to start and listen on the port defined provided by the PORT=8080 environment variable within the allocated timeout\. This can happen when the container port is misconfigured or if the timeout is too short\. The health check timeout can be extended\. Logs for this revision might contain more information\.\n\nLogs URL: https:\/\/console\.cloud\.google\.com\/logs\/viewer\?project=onmemos-fake&resource=cloud_run_revision\/service_name\/\S+\nFor more troubleshooting guidance, see https:\/\/cloud\.google\.com\/run\/docs\/troubleshooting#container-failed-to-start$/;

describe('service faults', () => {
  it('failOperations: the create operation ends with the error; the service is there, failed, and can be deleted', async () => {
    fake.faults.set({
      failOperations: {
        method: 'createService',
        code: 'RESOURCE_EXHAUSTED',
        message: 'Quota exceeded for total allowable CPU per project per region.',
      },
    });
    const [op] = await create('quota');
    const e = await failure(op.promise());
    expect([e.code, e.message]).toEqual([8, 'Quota exceeded for total allowable CPU per project per region.']);
    const [svc] = await c.services.getService({ name: `${parent}/services/quota` });
    expect(svc.terminalCondition).toMatchObject({ state: 'CONDITION_FAILED', message: e.message });
    expect(svc.latestReadyRevision).toBe('');
    await remove('quota');
  });

  it('neverListen: RECONCILING until the startup timeout, then FAILED with Cloud Run message; the uri says 503', async () => {
    fake.faults.set({ neverListen: 'silent' });
    const [op] = await create('silent');
    const name = `${parent}/services/silent`;
    const [during] = await c.services.getService({ name });
    expect(during).toMatchObject({ reconciling: true, terminalCondition: { state: 'CONDITION_RECONCILING' } });
    expect((await fetch(`${during.uri}/health`)).status).toBe(503);
    const e = await failure(op.promise());
    expect(e.code).toBe(9);
    expect(e.message).toMatch(NOT_LISTENING);
    const [after] = await c.services.getService({ name });
    expect(after).toMatchObject({
      reconciling: false,
      terminalCondition: { state: 'CONDITION_FAILED', message: e.message, severity: 'ERROR' },
    });
    expect(after.conditions?.map((x) => x.state)).toEqual(['CONDITION_FAILED', 'CONDITION_FAILED']);
    expect(after.latestCreatedRevision).toMatch(/\/revisions\/silent-00001-[a-z0-9]{3}$/);
    expect(after.latestReadyRevision).toBe('');
    const page = await fetch(`${after.uri}/health`);
    expect(page.status).toBe(503);
    expect(await page.text()).toContain('<h1>Error: Service Unavailable</h1>');
    expect(await sandboxes(fake)).toEqual([]);
    await remove('silent');
  });

  it('a delete while a revision is still starting ends the start; both operations end, nothing is left', async () => {
    fake.faults.set({ neverListen: 'abandoned' });
    const [op] = await create('abandoned');
    expect(await waitFor(async () => (await sandboxes(fake)).length === 1, 10_000, 20)).toBe(true);
    const [del] = await c.services.deleteService({ name: `${parent}/services/abandoned` });
    await del.promise();
    expect((await failure(op.promise())).code).toBe(9);
    expect(await sandboxes(fake)).toEqual([]);
  });

  it('a container that exits before it listens fails the same way, its output in the revision log', async () => {
    const [op] = await create('crashy', { image: 'x', command: ['sh', '-c', 'echo cannot start >&2; exit 1'] });
    const e = await failure(op.promise());
    const revision = NOT_LISTENING.exec(e.message)?.[1];
    expect(revision).toBeDefined();
    expect(lines).toContain(`${revision}: cannot start`);
    expect(lines).toContain(`${revision}: container exited (1)`);
    await remove('crashy');
  });

  it('an update whose revision fails: Ready FAILED, while the previous revision still serves', async () => {
    const [op] = await create('steady');
    const [first] = await op.promise();
    const name = `${parent}/services/steady`;
    const [svc] = await c.services.getService({ name });
    fake.faults.set({ neverListen: 'steady' });
    const [up] = await c.services.updateService({
      service: { ...svc, template: { ...svc.template, containers: [webContainer({ V: '2' })] } },
    });
    expect((await failure(up.promise())).message).toMatch(/^Revision 'steady-00002-[a-z0-9]{3}' is not ready/);
    const [after] = await c.services.getService({ name });
    expect(after.terminalCondition?.state).toBe('CONDITION_FAILED');
    expect(after.latestReadyRevision).toBe(first.latestReadyRevision);
    expect(after.latestCreatedRevision).toMatch(/steady-00002-/);
    expect((await fetch(`${after.uri}/health`)).status).toBe(200);
    await remove('steady');
  });

  it('failOperations on delete: the service stays; cleared, it goes', async () => {
    const [op] = await create('sticky');
    await op.promise();
    fake.faults.set({ failOperations: { method: 'deleteService', count: 1 } });
    const [del] = await c.services.deleteService({ name: `${parent}/services/sticky` });
    const e = await failure(del.promise());
    expect([e.code, e.message]).toEqual([13, 'Internal error encountered.']);
    await c.services.getService({ name: `${parent}/services/sticky` });
    await remove('sticky');
  });
});

describe('job faults', () => {
  it('failTasks: every task exits with the code; the run fails, retries included', async () => {
    const [op] = await c.jobs.createJob({ parent, jobId: 'doomed', job: shellJob('echo fine', { maxRetries: 1 }) });
    const [job] = await op.promise();
    fake.faults.set({ failTasks: { job: 'doomed', exitCode: 137 } });
    const [run] = await c.jobs.runJob({ name: job.name! });
    const e = await failure(run.promise());
    expect(e.message).toMatch(
      /^Task doomed-[a-z0-9]{5}-task0 failed with message: The container exited with an error\.$/,
    );
    const [[execution]] = await c.executions.listExecutions({ parent: job.name! });
    expect(execution).toMatchObject({ failedCount: 1, retriedCount: 1 });
    expect(await sandboxes(fake)).toEqual([]);
  });

  it('failOperations on run: the operation fails and no execution starts', async () => {
    const [op] = await c.jobs.createJob({ parent, jobId: 'never', job: shellJob('true') });
    const [job] = await op.promise();
    fake.faults.set({
      failOperations: { method: 'runJob', code: 'FAILED_PRECONDITION', message: 'Job never is not ready.' },
    });
    const [run] = await c.jobs.runJob({ name: job.name! });
    expect((await failure(run.promise())).message).toBe('Job never is not ready.');
    const [executions] = await c.executions.listExecutions({ parent: job.name! });
    expect(executions).toEqual([]);
  });
});

describe('API faults', () => {
  it('503 UNAVAILABLE once: the client retries (as its retry settings say for get) and gets the service', async () => {
    const [op] = await create('flaky');
    await op.promise();
    fake.faults.set({ apiErrors: [{ path: '/services/flaky', method: 'GET', code: 503, count: 1 }] });
    const before = fake.requests.length;
    const [svc] = await c.services.getService({ name: `${parent}/services/flaky` });
    expect(svc.name).toBe(`${parent}/services/flaky`);
    expect(fake.requests.slice(before).map((r) => r.status)).toEqual([503, 200]);
    await remove('flaky');
  });

  it('500 INTERNAL and 429 RESOURCE_EXHAUSTED are not retried: GoogleError with the code; nothing is made', async () => {
    fake.faults.set({
      apiErrors: [
        { method: 'POST', path: '/services', code: 500, count: 1 },
        { method: 'POST', code: 429, count: 1 },
      ],
    });
    const internal = await failure(create('nope'));
    expect([internal.code, internal.httpStatusCode, internal.message]).toEqual([
      13,
      500,
      'Internal error encountered.',
    ]);
    const quota = await failure(create('nope'));
    expect([quota.code, quota.httpStatusCode]).toEqual([8, 429]);
    expect(quota.message).toMatch(/^Quota exceeded for quota metric/);
    expect((await failure(c.services.getService({ name: `${parent}/services/nope` }))).code).toBe(5);
  });

  it('latency: answers come that much later; a call with a shorter timeout ends DEADLINE_EXCEEDED', async () => {
    fake.faults.set({ latencyMs: 1_500 });
    const e = await failure(c.services.listServices({ parent }, { timeout: 300, retry: null }));
    expect(e.code).toBe(4);
    fake.faults.set({ latencyMs: 200 });
    const [list] = await c.services.listServices({ parent });
    expect(list).toEqual([]);
  });

  it('coldStartMs: a revision starts that much later, still within the startup timeout', async () => {
    fake.faults.set({ coldStartMs: 500 });
    const [op] = await create('cold');
    await op.promise();
    expect(await waitFor(() => fake.services.all().some((r) => r.id === 'cold' && r.host.instanceRunning), 1_000)).toBe(
      true,
    );
    await remove('cold');
  });
});
