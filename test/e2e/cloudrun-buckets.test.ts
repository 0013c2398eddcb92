/**
 * The Cloud Run fake's Cloud Storage: a `gcs` volume of a revision (or a job's task) is the fake's directory for that
 * bucket, bound at the container's mountPath: what the instance writes is on the host, what the host puts there the
 * instance reads; read-only volumes are; a bucket the fake does not have fails the revision (or the task), through
 * the real ServicesClient and JobsClient.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CloudRunFake, startCloudRunFake } from '../fakes/cloudrun/server.js';
import { clients, failure, NODE, parentOf, sandboxes, shellJob } from '../helpers/cloudrun.js';

let fake: CloudRunFake;
let c: ReturnType<typeof clients>;
let parent: string;

beforeAll(async () => {
  fake = await startCloudRunFake({ network: 'isolated', buckets: ['data-bucket', 'job-bucket'] });
  c = clients(fake);
  parent = parentOf(fake);
});
afterAll(async () => {
  await Promise.all([c?.services.close(), c?.jobs.close(), c?.executions.close(), c?.tasks.close()]);
  await fake?.close();
});

/** node on $PORT: GET /read?f=NAME answers the file in /data/bucket, POST /write?f=NAME writes the body there. */
const FILES = [
  "const http = require('node:http'); const fs = require('node:fs');",
  'http.createServer((q, s) => {',
  "  const u = new URL(q.url, 'http://x'); const f = '/data/bucket/' + u.searchParams.get('f');",
  '  const fail = (e) => { s.statusCode = 500; s.end(String(e.code)); };',
  "  if (u.pathname === '/read') return fs.readFile(f, 'utf8', (e, t) => (e ? fail(e) : s.end(t)));",
  "  let body = ''; q.on('data', (d) => (body += d));",
  "  q.on('end', () => fs.writeFile(f, body, (e) => (e ? fail(e) : s.end('ok'))));",
  "}).listen(Number(process.env.PORT), '127.0.0.1');",
].join('\n');

function filesService(bucket: string, readOnly = false) {
  return {
    invokerIamDisabled: true,
    template: {
      containers: [
        {
          image: 'us-docker.pkg.dev/cloudrun/container/files',
          command: [NODE, '-e', FILES],
          volumeMounts: [{ name: 'bucket', mountPath: '/data/bucket' }],
        },
      ],
      volumes: [{ name: 'bucket', gcs: { bucket, readOnly } }],
    },
  };
}

describe('gcs volumes on the Cloud Run fake', () => {
  it('the instance and the host share the bucket: each sees what the other wrote', async () => {
    const dir = fake.buckets.dir('data-bucket');
    expect(dir).toBe(join(fake.dir, 'buckets', 'data-bucket'));
    writeFileSync(join(dir, 'host.txt'), 'from the host\n');
    const [op] = await c.services.createService({ parent, serviceId: 'files', service: filesService('data-bucket') });
    const [svc] = await op.promise();
    const uri = svc.uri!;
    expect(await (await fetch(`${uri}/read?f=host.txt`)).text()).toBe('from the host\n');
    const w = await fetch(`${uri}/write?f=instance.txt`, { method: 'POST', body: 'from the instance\n' });
    expect([w.status, await w.text()]).toEqual([200, 'ok']);
    expect(readFileSync(join(dir, 'instance.txt'), 'utf8')).toBe('from the instance\n');
    const [del] = await c.services.deleteService({ name: svc.name! });
    await del.promise();
    // The bucket outlives the service, as a bucket does.
    expect(readFileSync(join(dir, 'instance.txt'), 'utf8')).toBe('from the instance\n');
  });

  it('a read-only volume is read, not written', async () => {
    // Its own file: the tests of this file may run in any order (--sequence.shuffle).
    writeFileSync(join(fake.buckets.dir('data-bucket'), 'for-ro.txt'), 'for the read-only instance\n');
    const [op] = await c.services.createService({
      parent,
      serviceId: 'files-ro',
      service: filesService('data-bucket', true),
    });
    const [svc] = await op.promise();
    try {
      expect(await (await fetch(`${svc.uri}/read?f=for-ro.txt`)).text()).toBe('for the read-only instance\n');
      const w = await fetch(`${svc.uri}/write?f=ro.txt`, { method: 'POST', body: 'no' });
      expect([w.status, await w.text()]).toEqual([500, 'EROFS']);
      expect(existsSync(join(fake.buckets.dir('data-bucket'), 'ro.txt'))).toBe(false);
    } finally {
      const [del] = await c.services.deleteService({ name: svc.name! });
      await del.promise();
    }
  });

  it('a bucket the fake does not have fails the revision, naming the volume and the bucket', async () => {
    const [op] = await c.services.createService({
      parent,
      serviceId: 'nobucket',
      service: filesService('no-such-bucket'),
    });
    const e = await failure(op.promise());
    expect(e.code).toBe(9);
    expect(e.message).toMatch(
      /^Revision 'nobucket-00001-[a-z0-9]{3}' is not ready and cannot serve traffic\. Cloud Storage volume 'bucket' could not be mounted: bucket 'no-such-bucket' does not exist/,
    );
    const [svc] = await c.services.getService({ name: `${parent}/services/nobucket` });
    expect(svc.terminalCondition).toMatchObject({ state: 'CONDITION_FAILED', message: e.message });
    // Made later, the bucket mounts in the next revision (a template change makes one).
    fake.buckets.add('no-such-bucket');
    const next = filesService('no-such-bucket');
    (next.template.containers[0] as Record<string, unknown>).env = [{ name: 'TRY', value: '2' }];
    const [up] = await c.services.updateService({ service: { ...next, name: svc.name } });
    const [ok] = await up.promise();
    const w = await fetch(`${ok.uri}/write?f=later.txt`, { method: 'POST', body: 'later' });
    expect(w.status).toBe(200);
    expect(readFileSync(join(fake.buckets.dir('no-such-bucket'), 'later.txt'), 'utf8')).toBe('later');
    const [del] = await c.services.deleteService({ name: svc.name! });
    await del.promise();
    expect((await sandboxes(fake)).filter((s) => s.includes('nobucket'))).toEqual([]);
  });

  it("a job's tasks mount the bucket too; a missing one fails the task", async () => {
    const job = (bucket: string) => {
      const j = shellJob('echo "task $CLOUD_RUN_TASK_INDEX" > /mnt/b/task.txt && cat /mnt/b/host.txt');
      const t = j.template.template as Record<string, unknown> & { containers: Record<string, unknown>[] };
      t.containers[0]!.volumeMounts = [{ name: 'b', mountPath: '/mnt/b' }];
      t.volumes = [{ name: 'b', gcs: { bucket } }];
      return j;
    };
    writeFileSync(join(fake.buckets.dir('job-bucket'), 'host.txt'), 'seen by the task\n');
    const [made] = await c.jobs.createJob({ parent, jobId: 'bucket-job', job: job('job-bucket') });
    const [j] = await made.promise();
    const [run] = await c.jobs.runJob({ name: j.name! });
    const [execution] = await run.promise();
    expect(Number(execution.succeededCount)).toBe(1);
    expect(readFileSync(join(fake.buckets.dir('job-bucket'), 'task.txt'), 'utf8')).toBe('task 0\n');
    const logs = await fetch(execution.logUri!, { headers: { authorization: `Bearer ${fake.token}` } });
    expect(await logs.text()).toBe('seen by the task\n');

    const [made2] = await c.jobs.createJob({ parent, jobId: 'nobucket-job', job: job('not-a-bucket') });
    const [j2] = await made2.promise();
    const [run2] = await c.jobs.runJob({ name: j2.name! });
    const e = await failure(run2.promise());
    expect(e.message).toMatch(
      /^Task nobucket-job-[a-z0-9]{5}-task0 failed with message: Cloud Storage volume 'b' could not be mounted: bucket 'not-a-bucket' does not exist/,
    );
    for (const name of [j.name!, j2.name!]) {
      const [del] = await c.jobs.deleteJob({ name });
      await del.promise();
    }
    expect((await sandboxes(fake)).filter((s) => s.includes('bucket-job'))).toEqual([]);
  });
});
