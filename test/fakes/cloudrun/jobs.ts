/**
 * Jobs and their executions as the Admin API v2 serves them: jobs (create, get, list, update, delete, run) and
 * executions (get, list, delete, cancel). `run` starts an Execution (executions.ts) whose tasks really run; its
 * long-running operation is done when the execution ends: `response` the Execution when it succeeded or was
 * cancelled, `error` (code 9 FAILED_PRECONDITION, the Completed condition's message) when a task failed.
 */
import { alreadyExists, fieldViolation, notFound, rpcCode } from './errors.js';
import { applyOverrides, type ExecutionDeps, ExecutionRun, type Overrides } from './executions.js';
import type { Faults } from './faults.js';
import { type Operation, type Operations, TYPE } from './operations.js';
import {
  checkJobId,
  condition,
  encodeEnums,
  type Json,
  newEtag,
  newUid,
  now,
  type Parent,
  page,
  parentName,
  suffix,
  withoutOutputFields,
} from './resources.js';
import type { Container } from './revisions.js';

const OUTPUT_ONLY = [
  'name',
  'uid',
  'generation',
  'createTime',
  'updateTime',
  'deleteTime',
  'expireTime',
  'creator',
  'lastModifier',
  'observedGeneration',
  'terminalCondition',
  'conditions',
  'executionCount',
  'latestCreatedExecution',
  'reconciling',
  'satisfiesPzs',
  'etag',
] as const;

interface JobRecord {
  parent: Parent;
  id: string;
  name: string;
  spec: Json;
  uid: string;
  generation: number;
  createTime: string;
  updateTime: string;
  creator: string;
  lastModifier: string;
  etag: string;
  executions: ExecutionRecord[];
}

export interface ExecutionRecord {
  job: JobRecord;
  id: string;
  name: string;
  uid: string;
  createTime: string;
  etag: string;
  run: ExecutionRun;
  template: Json;
}

export interface JobsDeps {
  ops: Operations;
  faults: Faults;
  execution: ExecutionDeps;
  account: string;
  projectNumber: string;
  /** Where an execution's output is served: logUri = this + the execution's name. */
  logBase: () => string;
}

export class Jobs {
  private readonly byName = new Map<string, JobRecord>();
  constructor(private readonly deps: JobsDeps) {}

  private find(parent: Parent, id: string): JobRecord {
    const rec = this.byName.get(`${parentName(parent)}/jobs/${id}`);
    if (!rec) throw notFound('JOB', id, parent.location, parent.project);
    return rec;
  }

  findExecution(parent: Parent, job: string, id: string): ExecutionRecord {
    const e = this.find(parent, job).executions.find((x) => x.id === id);
    if (!e) throw notFound('EXECUTION', id, parent.location, parent.project);
    return e;
  }

  /** An execution by its full name (for logUri), if it exists. */
  executionByName(name: string): ExecutionRecord | undefined {
    for (const j of this.byName.values()) for (const e of j.executions) if (e.name === name) return e;
    return undefined;
  }

  private withDefaults(spec: Json): Json {
    const t = { ...(spec.template as Json) };
    const task = { ...(t.template as Json) };
    return {
      ...spec,
      template: {
        taskCount: 1,
        ...t,
        template: {
          maxRetries: 3,
          timeout: '600s',
          serviceAccount: `${this.deps.projectNumber}-compute@developer.gserviceaccount.com`,
          ...task,
          containers: ((task.containers as Container[]) ?? []).map((c) => ({
            ...c,
            resources: { ...c.resources, limits: { cpu: '1000m', memory: '512Mi', ...c.resources?.limits } },
          })),
        },
      },
    };
  }

  private input(request: string, body: Json | undefined): Json {
    const s = encodeEnums(body ?? {}, false);
    const t = s.template as Json | undefined;
    if (!t || typeof t !== 'object') throw fieldViolation(request, 'job.template', 'required field not present.');
    const containers = (t.template as Json | undefined)?.containers as Container[] | undefined;
    if (!Array.isArray(containers) || containers.length === 0 || !containers[0]?.image) {
      throw fieldViolation(request, 'job.template.template.containers[0].image', 'required field not present.');
    }
    return this.withDefaults(withoutOutputFields(s, OUTPUT_ONLY));
  }

  jobJson(rec: JobRecord): Json {
    const latest = rec.executions.at(-1);
    const status = latest
      ? {
          succeeded: 'EXECUTION_SUCCEEDED',
          failed: 'EXECUTION_FAILED',
          cancelled: 'EXECUTION_CANCELLED',
          running: 'EXECUTION_RUNNING',
        }[latest.run.outcome]
      : undefined;
    return {
      name: rec.name,
      uid: rec.uid,
      generation: String(rec.generation),
      labels: rec.spec.labels ?? {},
      annotations: rec.spec.annotations ?? {},
      createTime: rec.createTime,
      updateTime: rec.updateTime,
      creator: rec.creator,
      lastModifier: rec.lastModifier,
      ...withoutOutputFields(rec.spec, ['labels', 'annotations']),
      launchStage: rec.spec.launchStage ?? 'GA',
      observedGeneration: String(rec.generation),
      terminalCondition: condition('Ready', 'CONDITION_SUCCEEDED', {}, rec.updateTime),
      conditions: [],
      ...(rec.executions.length > 0 ? { executionCount: rec.executions.length } : {}),
      ...(latest
        ? {
            latestCreatedExecution: {
              name: latest.name,
              createTime: latest.createTime,
              ...(latest.run.completionTime ? { completionTime: latest.run.completionTime } : {}),
              completionStatus: status,
            },
          }
        : {}),
      etag: rec.etag,
    };
  }

  executionJson(e: ExecutionRecord): Json {
    const r = e.run;
    const counts: [string, number][] = [
      ['runningCount', r.count('running')],
      ['succeededCount', r.count('succeeded')],
      ['failedCount', r.count('failed')],
      ['cancelledCount', r.count('cancelled')],
      ['retriedCount', r.retried],
    ];
    return {
      name: e.name,
      uid: e.uid,
      creator: e.job.creator,
      generation: '1',
      labels: { ...((e.job.spec.template as Json).labels as Json), 'run.googleapis.com/jobUid': e.job.uid },
      annotations: (e.job.spec.template as Json).annotations ?? {},
      createTime: e.createTime,
      ...(r.startTime ? { startTime: r.startTime } : {}),
      ...(r.completionTime ? { completionTime: r.completionTime } : {}),
      updateTime: r.completionTime ?? r.startTime ?? e.createTime,
      launchStage: e.job.spec.launchStage ?? 'GA',
      job: e.job.id,
      ...(r.parallelism ? { parallelism: r.parallelism } : {}),
      taskCount: r.taskCount,
      template: e.template,
      ...(r.done ? {} : { reconciling: true }),
      conditions: r.conditions,
      observedGeneration: '1',
      ...Object.fromEntries(counts.filter(([, n]) => n > 0)),
      logUri: `${this.deps.logBase()}/${e.name}`,
      etag: e.etag,
    };
  }

  /** Task `index` of an execution, as the API's Task shows it (its last attempt's exit code or signal included). */
  taskJson(e: ExecutionRecord, index: number): Json {
    const t = e.run.tasks[index]!;
    const id = `${e.id}-task${index}`;
    const last = t.lastAttempt;
    const state =
      t.status === 'succeeded'
        ? 'CONDITION_SUCCEEDED'
        : t.status === 'failed' || t.status === 'cancelled'
          ? 'CONDITION_FAILED'
          : t.status === 'running'
            ? 'CONDITION_RECONCILING'
            : 'CONDITION_PENDING';
    return {
      name: `${e.name}/tasks/${id}`,
      uid: `${e.uid.slice(0, 24)}${String(index).padStart(12, '0')}`,
      generation: '1',
      labels: { 'run.googleapis.com/execution': e.id, 'run.googleapis.com/job': e.job.id },
      createTime: e.createTime,
      ...(t.startTime ? { scheduledTime: t.startTime, startTime: t.startTime } : {}),
      ...(t.completionTime ? { completionTime: t.completionTime } : {}),
      updateTime: t.completionTime ?? t.startTime ?? e.createTime,
      job: e.job.id,
      execution: e.id,
      containers: e.template.containers ?? [],
      volumes: e.template.volumes ?? [],
      maxRetries: e.template.maxRetries ?? 3,
      timeout: e.template.timeout ?? '600s',
      ...(t.status === 'running' || t.status === 'pending' ? { reconciling: true } : {}),
      conditions: [
        condition('Ready', state, t.message ? { message: t.message } : {}, t.completionTime ?? e.createTime),
      ],
      observedGeneration: '1',
      index,
      ...(t.attempts > 1 ? { retried: t.attempts - 1 } : {}),
      ...(last
        ? {
            lastAttemptResult: {
              status: last.ok ? { code: 0, message: '' } : { code: 2, message: last.message },
              ...(last.exitCode !== undefined ? { exitCode: last.exitCode } : {}),
              ...(last.termSignal !== undefined ? { termSignal: last.termSignal } : {}),
            },
          }
        : {}),
      logUri: `${this.deps.logBase()}/${e.name}`,
      etag: newEtag(`${e.name}/tasks/${id}`),
    };
  }

  listTasks(parent: Parent, job: string, execution: string, pageSize: number, pageToken: string): Json {
    const e = this.findExecution(parent, job, execution);
    const p = page(
      e.run.tasks.map((_, i) => i),
      pageSize,
      pageToken,
    );
    return p.items.length === 0
      ? {}
      : {
          tasks: p.items.map((i) => this.taskJson(e, i)),
          ...(p.nextPageToken ? { nextPageToken: p.nextPageToken } : {}),
        };
  }

  getTask(parent: Parent, job: string, execution: string, task: string): Json {
    const e = this.findExecution(parent, job, execution);
    const m = new RegExp(`^${e.id}-task(\\d+)$`).exec(task);
    const index = m ? Number(m[1]) : -1;
    if (!(index >= 0 && index < e.run.tasks.length)) throw notFound('TASK', task, parent.location, parent.project);
    return this.taskJson(e, index);
  }

  /** A long-running operation that is done a moment later (as a job's create, update and delete are). */
  private soon(parent: Parent, type: string, metadata: Json, result: () => Json): Operation {
    const op = this.deps.ops.start(parent, type, metadata);
    setTimeout(() => op.done(result()), 10).unref();
    return op.get();
  }

  private failed(
    parent: Parent,
    type: string,
    metadata: Json,
    f: { code: Parameters<typeof rpcCode>[0]; message: string },
  ) {
    const op = this.deps.ops.start(parent, type, metadata);
    op.fail({ code: rpcCode(f.code), message: f.message });
    return op.get();
  }

  createJob(parent: Parent, jobId: string | null, body: Json | undefined, validateOnly: boolean): Operation {
    const id = checkJobId(jobId);
    const spec = this.input('CreateJobRequest', body);
    const name = `${parentName(parent)}/jobs/${id}`;
    if (this.byName.has(name)) throw alreadyExists();
    const at = now();
    const rec: JobRecord = {
      parent,
      id,
      name,
      spec,
      uid: newUid(),
      generation: 1,
      createTime: at,
      updateTime: at,
      creator: this.deps.account,
      lastModifier: this.deps.account,
      etag: newEtag(name),
      executions: [],
    };
    if (validateOnly) return this.soon(parent, TYPE.job, this.jobJson(rec), () => this.jobJson(rec));
    const fault = this.deps.faults.takeOperationFailure('createJob', id);
    if (fault) return this.failed(parent, TYPE.job, this.jobJson(rec), fault);
    this.byName.set(name, rec);
    return this.soon(parent, TYPE.job, this.jobJson(rec), () => this.jobJson(rec));
  }

  getJob(parent: Parent, id: string): Json {
    return this.jobJson(this.find(parent, id));
  }

  listJobs(parent: Parent, pageSize: number, pageToken: string): Json {
    const mine = [...this.byName.values()]
      .filter(
        (r) =>
          r.parent.project === parent.project && (parent.location === '-' || r.parent.location === parent.location),
      )
      .sort((a, b) => a.name.localeCompare(b.name));
    const p = page(mine, pageSize, pageToken);
    return p.items.length === 0
      ? {}
      : { jobs: p.items.map((r) => this.jobJson(r)), ...(p.nextPageToken ? { nextPageToken: p.nextPageToken } : {}) };
  }

  updateJob(
    parent: Parent,
    id: string,
    body: Json | undefined,
    allowMissing: boolean,
    validateOnly: boolean,
  ): Operation {
    const rec = this.byName.get(`${parentName(parent)}/jobs/${id}`);
    if (!rec) {
      if (allowMissing) return this.createJob(parent, id, body, validateOnly);
      throw notFound('JOB', id, parent.location, parent.project);
    }
    const spec = this.input('UpdateJobRequest', body);
    if (validateOnly) return this.soon(parent, TYPE.job, this.jobJson(rec), () => ({ ...this.jobJson(rec), ...spec }));
    const fault = this.deps.faults.takeOperationFailure('updateJob', id);
    if (fault) return this.failed(parent, TYPE.job, this.jobJson(rec), fault);
    rec.spec = spec;
    rec.generation++;
    rec.updateTime = now();
    rec.lastModifier = this.deps.account;
    rec.etag = newEtag(rec.name);
    return this.soon(parent, TYPE.job, this.jobJson(rec), () => this.jobJson(rec));
  }

  /** Deletes the job; its running executions are cancelled first (their sandboxes go), then all of them go. */
  deleteJob(parent: Parent, id: string, validateOnly: boolean): Operation {
    const rec = this.find(parent, id);
    const fault = validateOnly ? undefined : this.deps.faults.takeOperationFailure('deleteJob', id);
    if (fault) return this.failed(parent, TYPE.job, this.jobJson(rec), fault);
    const op = this.deps.ops.start(parent, TYPE.job, this.jobJson(rec));
    if (validateOnly) {
      op.done(this.jobJson(rec));
      return op.get();
    }
    this.byName.delete(rec.name);
    void Promise.all(rec.executions.map((e) => e.run.cancel())).then(() => op.done(this.jobJson(rec)));
    return op.get();
  }

  runJob(parent: Parent, id: string, body: Json | undefined): Operation {
    const rec = this.find(parent, id);
    const req = encodeEnums(body ?? {}, false) as { overrides?: Overrides; validateOnly?: boolean };
    const { taskCount, parallelism, task } = applyOverrides(rec.spec.template as Json, req.overrides);
    const execId = `${rec.id}-${suffix(5)}`;
    const fault = this.deps.faults.takeOperationFailure('runJob', id);
    if (fault) return this.failed(parent, TYPE.execution, { name: `${rec.name}/executions/${execId}` }, fault);
    let e!: ExecutionRecord;
    const run = new ExecutionRun(rec.id, execId, taskCount, parallelism, task, this.deps.execution, () => {
      e.etag = newEtag(e.name);
    });
    e = {
      job: rec,
      id: execId,
      name: `${rec.name}/executions/${execId}`,
      uid: newUid(),
      createTime: now(),
      etag: newEtag(`${rec.name}/executions/${execId}`),
      run,
      template: task,
    };
    rec.executions.push(e);
    const op = this.deps.ops.start(parent, TYPE.execution, this.executionJson(e));
    void run.finished.then(() => {
      if (run.outcome !== 'failed') return op.done(this.executionJson(e));
      const completed = run.conditions.find((c) => c.type === 'Completed');
      op.fail({ code: rpcCode('FAILED_PRECONDITION'), message: completed?.message ?? 'The execution failed.' });
    });
    return op.get();
  }

  getExecution(parent: Parent, job: string, id: string): Json {
    return this.executionJson(this.findExecution(parent, job, id));
  }

  /** Newest first, as the API lists them. */
  listExecutions(parent: Parent, job: string, pageSize: number, pageToken: string): Json {
    const all = [...this.find(parent, job).executions].reverse();
    const p = page(all, pageSize, pageToken);
    return p.items.length === 0
      ? {}
      : {
          executions: p.items.map((e) => this.executionJson(e)),
          ...(p.nextPageToken ? { nextPageToken: p.nextPageToken } : {}),
        };
  }

  /** Cancels a running execution; the operation is done (the Execution) once its tasks are stopped. */
  cancelExecution(parent: Parent, job: string, id: string): Operation {
    const e = this.findExecution(parent, job, id);
    const fault = this.deps.faults.takeOperationFailure('cancelExecution', id);
    if (fault) return this.failed(parent, TYPE.execution, this.executionJson(e), fault);
    const op = this.deps.ops.start(parent, TYPE.execution, this.executionJson(e));
    void e.run.cancel().then(() => op.done(this.executionJson(e)));
    return op.get();
  }

  deleteExecution(parent: Parent, job: string, id: string): Operation {
    const e = this.findExecution(parent, job, id);
    const fault = this.deps.faults.takeOperationFailure('deleteExecution', id);
    if (fault) return this.failed(parent, TYPE.execution, this.executionJson(e), fault);
    const op = this.deps.ops.start(parent, TYPE.execution, this.executionJson(e));
    void e.run.cancel().then(() => {
      e.job.executions = e.job.executions.filter((x) => x !== e);
      op.done(this.executionJson(e));
    });
    return op.get();
  }

  async close(): Promise<void> {
    await Promise.all([...this.byName.values()].flatMap((j) => j.executions.map((e) => e.run.cancel())));
    this.byName.clear();
  }
}
