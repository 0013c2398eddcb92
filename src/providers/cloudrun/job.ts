/**
 * One-shot commands as Cloud Run Jobs (`onmemos exec --via job`, and the legacy execute route when the agent does
 * not answer). A session has one job, made at its first such command from the session's own service (the same
 * image, environment, volumes and limits, the same labels) and removed with the session; each command is one run
 * of it, with the argv, directory and environment as the run's container overrides.
 *
 * A run reads no stdin and has no tty, and its output goes to Cloud Logging: what comes back is the execution's
 * logUri and its status, as `gcloud run jobs execute --wait` reports them. The exit status: 0 when the task
 * succeeded; when it failed, the task's own exit code (Task.lastAttemptResult) or signal, and 1 where Cloud Run
 * gives neither; when the run was cancelled, the signal that cancelled it. A run is never retried (maxRetries 0):
 * a command runs once.
 *
 * Pure functions and the process shape; the API calls are the provider's (cloudrun.ts).
 */
import { PassThrough, Writable } from 'node:stream';
import { CHANGE_DIRECTORY_AND_EXEC } from '../../exec/lookup.js';
import { type ExecSpec, type ExitStatus, type RemoteProcess, signalName } from '../../exec/process.js';
import { ANNOTATION, REQUEST_TIMEOUT_S, type ServiceLike } from './service.js';

/** `$1` the working directory, then argv: cd, check argv[0], exec, as every onmemos transport does. */
export const JOB_COMMAND = ['/bin/sh', '-c', CHANGE_DIRECTORY_AND_EXEC, 'onmemos-job'];

/** The variables of the service that a job does not get: the agent's, which a job does not run. */
const SERVICE_ONLY_ENV = new Set(['ONMEMOS_AGENT_SECRET_SHA256']);

interface ContainerLike {
  image?: string | null;
  env?: { name?: string | null; value?: string | null }[] | null;
  resources?: { limits?: Record<string, string> | null } | null;
  volumeMounts?: { name?: string | null; mountPath?: string | null }[] | null;
}
interface VolumeLike {
  name?: string | null;
  nfs?: { server?: string | null; path?: string | null; readOnly?: boolean | null } | null;
  gcs?: { bucket?: string | null; readOnly?: boolean | null } | null;
}
/** The parts of a service's template a job copies. */
export interface ServiceTemplateLike extends ServiceLike {
  template?: {
    containers?: ContainerLike[] | null;
    volumes?: VolumeLike[] | null;
    serviceAccount?: string | null;
    executionEnvironment?: string | number | null;
  } | null;
}

/** The Job (Admin API v2) for a session's one-shot commands, from the session's service. */
export function jobObject(id: string, service: ServiceTemplateLike) {
  const t = service.template ?? {};
  const c = t.containers?.[0] ?? {};
  const volumes = (t.volumes ?? []).flatMap((v): Record<string, unknown>[] => {
    if (!v.name) return [];
    if (v.nfs?.server)
      return [{ name: v.name, nfs: { server: v.nfs.server, path: v.nfs.path ?? '/', readOnly: !!v.nfs.readOnly } }];
    if (v.gcs?.bucket) return [{ name: v.name, gcs: { bucket: v.gcs.bucket, readOnly: !!v.gcs.readOnly } }];
    return [];
  });
  const env = (c.env ?? [])
    .filter((e) => e.name && !SERVICE_ONLY_ENV.has(e.name))
    .map((e) => ({ name: e.name as string, value: e.value ?? '' }));
  const gen2 = t.executionEnvironment === 'EXECUTION_ENVIRONMENT_GEN2' || t.executionEnvironment === 2;
  return {
    labels: { ...(service.labels ?? {}) },
    annotations: { [ANNOTATION.session]: id },
    template: {
      taskCount: 1,
      template: {
        containers: [
          {
            image: c.image ?? '',
            command: JOB_COMMAND,
            args: [],
            env,
            resources: { limits: { ...(c.resources?.limits ?? {}) } },
            volumeMounts: (c.volumeMounts ?? [])
              .filter((m) => m.name && m.mountPath)
              .map((m) => ({ name: m.name as string, mountPath: m.mountPath as string })),
          },
        ],
        volumes,
        maxRetries: 0,
        timeout: { seconds: REQUEST_TIMEOUT_S },
        ...(t.serviceAccount ? { serviceAccount: t.serviceAccount } : {}),
        ...(gen2 ? { executionEnvironment: 'EXECUTION_ENVIRONMENT_GEN2' } : {}),
      },
    },
  };
}

/** Cloud Run's own end of a run, past the client's --timeout (the client cancels the run at its timeout). */
const TIMEOUT_GRACE_S = 60;

/** RunJobRequest.overrides for one command: argv after the directory, the environment, and a time bound. */
export function runOverrides(spec: ExecSpec, timeoutSeconds?: number) {
  return {
    containerOverrides: [
      {
        args: [spec.cwd ?? '/workspace', ...spec.argv],
        env: Object.entries(spec.env ?? {}).map(([name, value]) => ({ name, value })),
      },
    ],
    taskCount: 1,
    timeout: {
      seconds: Math.ceil(
        timeoutSeconds ? Math.min(timeoutSeconds + TIMEOUT_GRACE_S, REQUEST_TIMEOUT_S) : REQUEST_TIMEOUT_S,
      ),
    },
  };
}

/** The parts of an Execution this file reads. */
export interface ExecutionLike {
  name?: string | null;
  logUri?: string | null;
  taskCount?: number | null;
  succeededCount?: number | null;
  failedCount?: number | null;
  cancelledCount?: number | null;
  completionTime?: unknown;
  conditions?: { type?: string | null; message?: string | null; executionReason?: unknown }[] | null;
}
/** The parts of a Task this file reads. */
export interface TaskLike {
  lastAttemptResult?: { exitCode?: number | null; termSignal?: number | null } | null;
}

/** Whether an execution has ended (its completionTime is set). */
export function executionDone(e: ExecutionLike): boolean {
  const t = e.completionTime as { seconds?: unknown } | string | null | undefined;
  if (!t) return false;
  if (typeof t === 'string') return t !== '';
  return t.seconds !== undefined && t.seconds !== null && String(t.seconds) !== '0';
}

export type JobOutcome = 'succeeded' | 'failed' | 'cancelled';

/** How an ended execution ended, and the exit status that says so (module doc). */
export function executionExit(
  e: ExecutionLike,
  task: TaskLike | undefined,
  cancelledWith: NodeJS.Signals | undefined,
): { outcome: JobOutcome; status: ExitStatus; message: string } {
  const completed = e.conditions?.find((c) => c.type === 'Completed');
  const message = completed?.message ?? '';
  const reason = completed?.executionReason;
  if ((e.cancelledCount ?? 0) > 0 || reason === 'CANCELLED' || reason === 3) {
    return { outcome: 'cancelled', status: { code: null, signal: cancelledWith ?? 'SIGTERM' }, message };
  }
  const tasks = Number(e.taskCount ?? 1) || 1;
  if ((e.succeededCount ?? 0) >= tasks && (e.failedCount ?? 0) === 0) {
    return { outcome: 'succeeded', status: { code: 0 }, message };
  }
  const r = task?.lastAttemptResult;
  const signal = r?.termSignal ? signalName(r.termSignal) : undefined;
  if (signal) return { outcome: 'failed', status: { code: null, signal }, message };
  return { outcome: 'failed', status: { code: r?.exitCode ? r.exitCode : 1 }, message };
}

/** What the provider does for a job process: wait for its execution's end, and cancel it. */
export interface JobRun {
  /** The execution's full name. */
  execution: string;
  /** Resolves once the execution has ended, with how (`cancelledWith`: the signal a kill asked for, if any). */
  wait(cancelledWith: () => NodeJS.Signals | undefined): Promise<{
    outcome: JobOutcome;
    status: ExitStatus;
    message: string;
    logUri: string | null;
  }>;
  cancel(): Promise<void>;
}

/**
 * A job run as a RemoteProcess: no stdin (what is written is dropped), no output on stdout, and on stderr two
 * lines of onmemos' own (the run, and how it ended with where its output is). kill() cancels the run, once.
 */
export function jobProcess(run: JobRun, job: string): RemoteProcess {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const stdin = new Writable({ write: (_c, _e, cb) => cb() });
  const short = run.execution.slice(run.execution.lastIndexOf('/') + 1);
  stderr.write(`onmemos: running as Cloud Run job ${job}, execution ${short}\n`);
  let killedWith: NodeJS.Signals | undefined;
  const exit = run
    .wait(() => killedWith)
    .then(
      (r) => {
        const how = r.outcome === 'failed' && r.message ? `failed: ${r.message}` : r.outcome;
        stderr.end(
          `onmemos: execution ${short} ${how}${r.logUri ? `; its output is in Cloud Logging: ${r.logUri}` : ''}\n`,
        );
        stdout.end();
        return r.status;
      },
      (e: Error) => {
        stderr.end(`onmemos: lost track of execution ${short}: ${e.message}\n`);
        stdout.end();
        return { code: 255, lost: true } as ExitStatus;
      },
    );
  return {
    stdin,
    stdout,
    stderr,
    resize() {},
    kill(signal: NodeJS.Signals = 'SIGTERM') {
      if (killedWith) return;
      killedWith = signal;
      run.cancel().catch(() => {});
    },
    exit,
  };
}
