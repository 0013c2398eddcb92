/**
 * One execution of a job: its tasks really run, each as a container in a fresh local sandbox (runtime.ts), up to
 * `parallelism` at once, each retried up to `maxRetries` times (3 when the template says nothing, as on Cloud Run),
 * each stopped at the task `timeout` (600s by default). The execution goes through `runningCount` to
 * `succeededCount` / `failedCount` / `cancelledCount` with its `Completed`, `ResourcesAvailable` and `Started`
 * conditions, and its output (every task's stdout and stderr, in task order) is served at `logUri`.
 *
 * Tasks see the container's env, the run's overrides, and Cloud Run's CLOUD_RUN_JOB, CLOUD_RUN_EXECUTION,
 * CLOUD_RUN_TASK_INDEX, CLOUD_RUN_TASK_ATTEMPT and CLOUD_RUN_TASK_COUNT.
 */
import { constants } from 'node:os';
import type { NetworkMode } from '../../../src/session/model.js';
import type { Buckets } from '../buckets.js';
import type { Faults } from './faults.js';
import { type Condition, condition, type Json, keepTransition, now } from './resources.js';
import { type Container, containerArgv, containerEnv, type ImageDefaults } from './revisions.js';
import type { ContainerRuntime, RunningContainer } from './runtime.js';
import { gcsMounts } from './volumes.js';

export interface ExecutionDeps {
  runtime: ContainerRuntime;
  faults: Faults;
  images: (image: string) => ImageDefaults;
  network: NetworkMode;
  /** The fake's Cloud Storage: what the task template's `gcs` volumes mount (volumes.ts). */
  buckets: Buckets;
  log(line: string): void;
}

/** RunJobRequest.overrides. */
export interface Overrides {
  containerOverrides?: {
    name?: string;
    args?: string[];
    env?: { name: string; value?: string }[];
    clearArgs?: boolean;
  }[];
  taskCount?: number;
  timeout?: string;
}

/** `"600s"`, `"1.5s"` → ms. */
export function durationMs(d: unknown, fallback: number): number {
  const m = typeof d === 'string' ? /^(\d+(?:\.\d+)?)s$/.exec(d) : null;
  return m ? Math.round(Number(m[1]) * 1000) : fallback;
}

/** The task template with a run's overrides applied (args, env, task count, timeout), as the Execution shows it. */
export function applyOverrides(
  template: Json,
  o: Overrides | undefined,
): { taskCount: number; parallelism: number; task: Json } {
  const task = structuredClone((template.template as Json) ?? {});
  const containers = ((task.containers as Container[]) ?? []).map((c, i) => {
    const over = o?.containerOverrides?.find((x) => (x.name ? x.name === c.name : i === 0));
    if (!over) return c;
    const env = [...(c.env ?? []).filter((e) => !over.env?.some((x) => x.name === e.name)), ...(over.env ?? [])];
    const args = over.clearArgs ? [] : over.args && over.args.length > 0 ? over.args : c.args;
    return { ...c, env, ...(args ? { args } : {}) };
  });
  task.containers = containers;
  if (o?.timeout) task.timeout = o.timeout;
  const taskCount = o?.taskCount || Number(template.taskCount) || 1;
  return { taskCount, parallelism: Number(template.parallelism) || 0, task };
}

type TaskStatus = 'pending' | 'running' | 'succeeded' | 'failed' | 'cancelled';

/** A task as its execution runs it; `lastAttempt` is what Task.lastAttemptResult reports. */
export interface TaskRecord {
  status: TaskStatus;
  attempts: number;
  output: string;
  message?: string;
  startTime?: string;
  completionTime?: string;
  /** The exit code, or the signal number when a signal ended the container. */
  lastAttempt?: { exitCode?: number; termSignal?: number; ok: boolean; message: string };
}

export class ExecutionRun {
  readonly tasks: TaskRecord[];
  conditions: Condition[];
  startTime?: string;
  completionTime?: string;
  retried = 0;
  private readonly containers = new Set<RunningContainer>();
  private readonly abort = new AbortController();
  private cancelled = false;
  readonly finished: Promise<void>;

  constructor(
    readonly job: string,
    readonly execution: string,
    readonly taskCount: number,
    readonly parallelism: number,
    readonly task: Json,
    private readonly deps: ExecutionDeps,
    private readonly changed: () => void,
  ) {
    this.tasks = Array.from({ length: taskCount }, () => ({
      status: 'pending' as TaskStatus,
      attempts: 0,
      output: '',
    }));
    const at = now();
    this.conditions = [
      condition('Completed', 'CONDITION_PENDING', {}, at),
      condition('ResourcesAvailable', 'CONDITION_RECONCILING', {}, at),
      condition('Started', 'CONDITION_PENDING', {}, at),
    ];
    this.finished = this.run();
  }

  count(status: TaskStatus): number {
    return this.tasks.filter((t) => t.status === status).length;
  }

  get done(): boolean {
    return this.completionTime !== undefined;
  }

  get outcome(): 'succeeded' | 'failed' | 'cancelled' | 'running' {
    if (!this.done) return 'running';
    if (this.cancelled) return 'cancelled';
    return this.count('failed') > 0 ? 'failed' : 'succeeded';
  }

  /** Every task's output, in task order. */
  output(): string {
    return this.tasks.map((t) => t.output).join('');
  }

  private set(type: string, c: Condition): void {
    this.conditions = this.conditions.map((old) => (old.type === type ? keepTransition(old, c) : old));
    this.changed();
  }

  private async run(): Promise<void> {
    await Promise.resolve();
    this.startTime = now();
    this.set(
      'ResourcesAvailable',
      condition('ResourcesAvailable', 'CONDITION_SUCCEEDED', { message: 'Provisioned imported containers.' }),
    );
    this.set('Started', condition('Started', 'CONDITION_SUCCEEDED', { message: 'Started deployed execution.' }));
    this.set('Completed', condition('Completed', 'CONDITION_RECONCILING'));
    const started = Date.now();
    let next = 0;
    const worker = async () => {
      while (next < this.taskCount && !this.cancelled) await this.runTask(next++);
    };
    const width = this.parallelism > 0 ? Math.min(this.parallelism, this.taskCount) : this.taskCount;
    await Promise.all(Array.from({ length: width }, worker));
    for (const t of this.tasks) if (t.status === 'pending' || t.status === 'running') t.status = 'cancelled';
    this.completionTime = now();
    const failed = this.tasks.findIndex((t) => t.status === 'failed');
    if (this.cancelled) {
      this.set(
        'Completed',
        condition('Completed', 'CONDITION_FAILED', {
          message: 'The execution was cancelled.',
          executionReason: 'CANCELLED',
        }),
      );
    } else if (failed >= 0) {
      this.set(
        'Completed',
        condition('Completed', 'CONDITION_FAILED', {
          message: `Task ${this.execution}-task${failed} failed with message: ${this.tasks[failed]!.message}`,
          executionReason: 'NON_ZERO_EXIT_CODE',
        }),
      );
    } else {
      const secs = ((Date.now() - started) / 1000).toFixed(2);
      this.set(
        'Completed',
        condition('Completed', 'CONDITION_SUCCEEDED', { message: `Execution completed successfully in ${secs}s.` }),
      );
    }
  }

  private async runTask(index: number): Promise<void> {
    const t = this.tasks[index]!;
    const c = ((this.task.containers as Container[]) ?? [])[0] ?? {};
    const retries = this.task.maxRetries === undefined ? 3 : Number(this.task.maxRetries);
    const timeoutMs = durationMs(this.task.timeout, 600_000);
    for (let attempt = 0; !this.cancelled; attempt++) {
      t.status = 'running';
      t.startTime ??= now();
      t.attempts = attempt + 1;
      this.changed();
      const forced = this.deps.faults.forcedExit(this.job);
      const image = this.deps.images(c.image ?? '');
      const argv = forced === undefined ? containerArgv(c, image) : ['sh', '-c', `exit ${forced}`];
      const env = {
        ...image.env,
        ...containerEnv(c),
        CLOUD_RUN_JOB: this.job,
        CLOUD_RUN_EXECUTION: this.execution,
        CLOUD_RUN_TASK_INDEX: String(index),
        CLOUD_RUN_TASK_ATTEMPT: String(attempt),
        CLOUD_RUN_TASK_COUNT: String(this.taskCount),
      };
      const { ok, message } = await this.attempt(t, {
        argv,
        env,
        c,
        workingDir: c.workingDir ?? image.workingDir,
        timeoutMs,
      });
      if (this.cancelled) return;
      if (ok) {
        t.status = 'succeeded';
        t.completionTime = now();
        this.changed();
        return;
      }
      t.message = message;
      if (attempt >= retries) {
        t.status = 'failed';
        t.completionTime = now();
        this.changed();
        return;
      }
      this.retried++;
    }
  }

  private async attempt(
    t: TaskRecord,
    a: { argv: string[]; env: Record<string, string>; c: Container; workingDir?: string; timeoutMs: number },
  ): Promise<{ ok: boolean; message: string }> {
    const volumes = gcsMounts(this.task, a.c, this.deps.buckets);
    if ('problem' in volumes) {
      t.lastAttempt = { ok: false, message: volumes.problem };
      return { ok: false, message: volumes.problem };
    }
    const cold = this.deps.faults.current.coldStartMs ?? 0;
    if (cold > 0) await new Promise((r) => setTimeout(r, cold));
    let container: RunningContainer;
    try {
      container = await this.deps.runtime.start(
        {
          argv: a.argv,
          env: a.env,
          workingDir: a.workingDir,
          limits: a.c.resources?.limits,
          network: this.deps.network,
          label: this.job,
          onLine: (l) => this.deps.log(`${this.execution}: ${l}`),
          mounts: volumes.mounts,
        },
        this.abort.signal,
      );
    } catch (e) {
      return { ok: false, message: `The container could not be started: ${(e as Error).message}` };
    }
    this.containers.add(container);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      void container.stop(0);
    }, a.timeoutMs);
    const status = await container.exit;
    clearTimeout(timer);
    t.output += container.output();
    await container.stop(0);
    this.containers.delete(container);
    const result = timedOut
      ? { ok: false, message: 'The configured timeout was reached.' }
      : status.code === 0
        ? { ok: true, message: '' }
        : { ok: false, message: 'The container exited with an error.' };
    t.lastAttempt = {
      ...result,
      ...(status.code !== null ? { exitCode: status.code } : { termSignal: signalNumber(status.signal) }),
    };
    return result;
  }

  /** Stops every running task; the execution ends cancelled. */
  async cancel(): Promise<void> {
    if (this.done) return;
    this.cancelled = true;
    this.abort.abort();
    await Promise.all([...this.containers].map((c) => c.stop(0)));
    await this.finished;
  }
}

function signalNumber(signal: string | undefined): number {
  return (constants.signals as Record<string, number>)[signal ?? ''] ?? 9;
}
