/**
 * Cloud Run jobs on the fake through the real JobsClient and ExecutionsClient: run with overrides, the Execution
 * through runningCount to succeededCount / failedCount / cancelledCount with its conditions, the run's operation
 * (the Execution, or an error when a task failed), logUri, retries, parallel tasks, the task timeout, cancel and
 * delete. Every task runs in a fresh local sandbox (root, bwrap), removed when it ends.
 */
import { protos } from '@google-cloud/run';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CloudRunFake, startCloudRunFake } from '../fakes/cloudrun/server.js';
import { waitFor } from '../helpers/cli.js';
import { clients, failure, parentOf, sandboxes, shellJob } from '../helpers/cloudrun.js';

const State = protos.google.cloud.run.v2.Condition.State;
let fake: CloudRunFake;
let c: ReturnType<typeof clients>;
let parent: string;

beforeAll(async () => {
  fake = await startCloudRunFake({ network: 'isolated' });
  c = clients(fake);
  parent = parentOf(fake);
});
afterAll(async () => {
  await Promise.all([c?.services.close(), c?.jobs.close(), c?.executions.close(), c?.tasks.close()]);
  await fake?.close();
});

async function createJob(id: string, job: ReturnType<typeof shellJob>): Promise<string> {
  const [op] = await c.jobs.createJob({ parent, jobId: id, job });
  const [done] = await op.promise();
  return done.name!;
}

const logsOf = async (logUri: string) => {
  const r = await fetch(logUri, { headers: { authorization: `Bearer ${fake.token}` } });
  expect(r.status).toBe(200);
  return r.text();
};

// Later steps use the jobs earlier ones made (delete takes them all): the run never shuffles them.
describe('jobs', { shuffle: false }, () => {
  it('create, get, list; run with args and env overrides; the operation ends with the Execution', async () => {
    const name = await createJob(
      'greet',
      shellJob('echo "hello $WHO $CLOUD_RUN_JOB $CLOUD_RUN_TASK_INDEX/$CLOUD_RUN_TASK_COUNT" "$@"; echo to stderr >&2'),
    );
    const [job] = await c.jobs.getJob({ name });
    expect(job).toMatchObject({
      name: `${parent}/jobs/greet`,
      generation: '1',
      launchStage: 'GA',
      terminalCondition: { type: 'Ready', state: 'CONDITION_SUCCEEDED' },
      template: { taskCount: 1, template: { maxRetries: 0, timeout: { seconds: '600' } } },
    });
    const [jobs] = await c.jobs.listJobs({ parent });
    expect(jobs.map((j) => j.name)).toContain(name);
    const [op] = await c.jobs.runJob({
      name,
      overrides: {
        containerOverrides: [{ args: ['sh', 'extra-arg'], env: [{ name: 'WHO', value: 'world' }] }],
      },
    });
    const [done] = await op.promise();
    const [e] = await c.executions.getExecution({ name: done.name! });
    expect(e.name).toMatch(new RegExp(`^${name}/executions/greet-[a-z0-9]{5}$`));
    expect(e).toMatchObject({
      job: 'greet',
      taskCount: 1,
      succeededCount: 1,
      failedCount: 0,
      runningCount: 0,
      reconciling: false,
    });
    expect(e.completionTime?.seconds).toBeDefined();
    expect(e.conditions?.map((x) => [x.type, x.state])).toEqual([
      ['Completed', 'CONDITION_SUCCEEDED'],
      ['ResourcesAvailable', 'CONDITION_SUCCEEDED'],
      ['Started', 'CONDITION_SUCCEEDED'],
    ]);
    expect(e.template?.containers?.[0]?.env).toMatchObject([{ name: 'WHO', value: 'world' }]);
    expect(await logsOf(e.logUri!)).toBe('hello world greet 0/1 extra-arg\nto stderr\n');
    const [after] = await c.jobs.getJob({ name });
    expect(after.executionCount).toBe(1);
    expect(after.latestCreatedExecution).toMatchObject({ name: e.name, completionStatus: 'EXECUTION_SUCCEEDED' });
    expect(await sandboxes(fake)).toEqual([]);
  });

  it('a failing task: the operation ends with an error naming the task, the Execution counts it failed', async () => {
    const name = await createJob('fails', shellJob('echo about to fail; exit 3'));
    const [op] = await c.jobs.runJob({ name });
    const e = await failure(op.promise());
    expect(e.code).toBe(9);
    expect(e.message).toMatch(
      /^Task fails-[a-z0-9]{5}-task0 failed with message: The container exited with an error\.$/,
    );
    const [[execution]] = await c.executions.listExecutions({ parent: name });
    expect(execution).toMatchObject({ failedCount: 1, succeededCount: 0 });
    expect(execution!.conditions?.[0]).toMatchObject({
      type: 'Completed',
      state: 'CONDITION_FAILED',
      executionReason: 'NON_ZERO_EXIT_CODE',
      message: e.message,
    });
    expect(await logsOf(execution!.logUri!)).toBe('about to fail\n');
    // The task (TasksClient) has the attempt's own exit code.
    const [tasks] = await c.tasks.listTasks({ parent: execution!.name! });
    expect(tasks).toHaveLength(1);
    expect(tasks[0]).toMatchObject({
      name: `${execution!.name}/tasks/${execution!.name!.split('/').pop()}-task0`,
      index: 0,
      lastAttemptResult: { exitCode: 3, status: { code: 2 } },
    });
    const [task] = await c.tasks.getTask({ name: tasks[0]!.name! });
    expect(task.lastAttemptResult?.exitCode).toBe(3);
    const [job] = await c.jobs.getJob({ name });
    expect(job.latestCreatedExecution?.completionStatus).toBe('EXECUTION_FAILED');
    expect(await sandboxes(fake)).toEqual([]);
  });

  it('retries a failing task up to maxRetries, each attempt in a new sandbox', async () => {
    const name = await createJob(
      'retry',
      shellJob('echo attempt $CLOUD_RUN_TASK_ATTEMPT; [ "$CLOUD_RUN_TASK_ATTEMPT" = 2 ]', { maxRetries: 3 }),
    );
    const [op] = await c.jobs.runJob({ name });
    const [done] = await op.promise();
    const [e] = await c.executions.getExecution({ name: done.name! });
    expect(e).toMatchObject({ succeededCount: 1, failedCount: 0, retriedCount: 2 });
    expect(await logsOf(e.logUri!)).toBe('attempt 0\nattempt 1\nattempt 2\n');
  });

  it('runs taskCount tasks, parallelism at a time, each with its index', async () => {
    const job = shellJob('echo task $CLOUD_RUN_TASK_INDEX of $CLOUD_RUN_TASK_COUNT', { taskCount: 3 });
    (job.template as Record<string, unknown>).parallelism = 2;
    const name = await createJob('fanout', job);
    const [op] = await c.jobs.runJob({ name });
    const [done] = await op.promise();
    expect(done.succeededCount).toBe(3);
    const [e] = await c.executions.getExecution({ name: done.name! });
    expect(e).toMatchObject({ taskCount: 3, parallelism: 2, succeededCount: 3 });
    expect(await logsOf(e.logUri!)).toBe('task 0 of 3\ntask 1 of 3\ntask 2 of 3\n');
    // An override of the task count.
    const [op2] = await c.jobs.runJob({ name, overrides: { taskCount: 1 } });
    expect((await op2.promise())[0].succeededCount).toBe(1);
  });

  it('a task past its timeout is stopped and fails with the timeout message', async () => {
    const name = await createJob('slow', shellJob('echo started; sleep 30', { timeout: '1s' }));
    const started = Date.now();
    const [op] = await c.jobs.runJob({ name });
    const e = await failure(op.promise());
    expect(e.message).toMatch(
      /^Task slow-[a-z0-9]{5}-task0 failed with message: The configured timeout was reached\.$/,
    );
    expect(Date.now() - started).toBeLessThan(20_000);
    expect(await sandboxes(fake)).toEqual([]);
  });

  it('runningCount while it runs; cancel stops the task, and the run ends (no error) with cancelledCount', async () => {
    const name = await createJob('long', shellJob('echo running; sleep 60'));
    const [op] = await c.jobs.runJob({ name });
    const execution = (op.metadata as { name?: string } | null)?.name;
    expect(execution).toMatch(/\/executions\/long-[a-z0-9]{5}$/);
    const running = await waitFor(
      async () => {
        const [e] = await c.executions.getExecution({ name: execution! });
        return e.runningCount === 1 ? e : undefined;
      },
      20_000,
      50,
    );
    expect(running?.conditions?.[0]).toMatchObject({ type: 'Completed', state: 'CONDITION_RECONCILING' });
    expect(running?.reconciling).toBe(true);
    const [cancel] = await c.executions.cancelExecution({ name: execution! });
    const [cancelled] = await cancel.promise();
    expect(cancelled.cancelledCount).toBe(1);
    const [ran] = await op.promise();
    expect(ran).toMatchObject({ cancelledCount: 1, succeededCount: 0, failedCount: 0 });
    expect(ran.conditions?.[0]).toMatchObject({ state: State.CONDITION_FAILED, executionReason: 3 /* CANCELLED */ });
    expect(await sandboxes(fake)).toEqual([]);
  });

  it('delete: executions and jobs go (NOT_FOUND after), a running one is stopped first', async () => {
    const name = await createJob('doomed', shellJob('sleep 60'));
    await c.jobs.runJob({ name });
    expect(await waitFor(async () => (await sandboxes(fake)).length === 1, 20_000, 50)).toBe(true);
    const [op] = await c.jobs.deleteJob({ name });
    await op.promise();
    const e = await failure(c.jobs.getJob({ name }));
    expect([e.code, e.message]).toEqual([
      5,
      `Resource 'doomed' of kind 'JOB' in region '${fake.region}' in project '${fake.project}' does not exist.`,
    ]);
    expect(await sandboxes(fake)).toEqual([]);
    const [[first]] = await c.executions.listExecutions({ parent: `${parent}/jobs/greet` });
    const [del] = await c.executions.deleteExecution({ name: first!.name! });
    await del.promise();
    expect((await failure(c.executions.getExecution({ name: first!.name! }))).code).toBe(5);
  });
});
