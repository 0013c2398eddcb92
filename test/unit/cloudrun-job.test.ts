/**
 * The pure parts of cloud_run's one-shot jobs (src/providers/cloudrun/job.ts): the Job made from a session's
 * service, a run's overrides, and how an ended Execution becomes an exit status.
 */
import { describe, expect, it } from 'vitest';
import { CHANGE_DIRECTORY_AND_EXEC } from '../../src/exec/lookup.js';
import {
  executionDone,
  executionExit,
  JOB_COMMAND,
  jobObject,
  runOverrides,
} from '../../src/providers/cloudrun/job.js';

const service = {
  name: 'projects/p/locations/l/services/ws-a-b-1-c',
  labels: { 'managed-by': 'onmemos', 'onmemos-namespace': 'a' },
  template: {
    containers: [
      {
        image: 'img:1',
        env: [
          { name: 'WORKSPACE_ID', value: 'ws-a-b-1-c' },
          { name: 'ONMEMOS_AGENT_SECRET_SHA256', value: 'f00' },
          { name: 'EMPTY' },
        ],
        resources: { limits: { cpu: '1', memory: '512Mi' }, cpuIdle: true },
        ports: [{ containerPort: 8080 }],
        volumeMounts: [{ name: 'workspace', mountPath: '/workspace' }],
      },
    ],
    volumes: [
      { name: 'workspace', nfs: { server: '10.0.0.2', path: '/share', readOnly: false }, volume: 'nfs' },
      { name: 'bucket', gcs: { bucket: 'b1', readOnly: false } },
      { name: 'odd' },
    ],
    executionEnvironment: 2,
  },
};

describe('jobObject', () => {
  it("copies the service's image, environment (not the agent's secret), limits and volumes; no retry", () => {
    const j = jobObject('ws-a-b-1-c', service);
    expect(j.labels).toEqual(service.labels);
    expect(j.annotations).toEqual({ 'onmemos.dev/session-id': 'ws-a-b-1-c' });
    const t = j.template.template;
    expect(t).toMatchObject({ maxRetries: 0, executionEnvironment: 'EXECUTION_ENVIRONMENT_GEN2' });
    expect(t.containers[0]).toEqual({
      image: 'img:1',
      command: JOB_COMMAND,
      args: [],
      env: [
        { name: 'WORKSPACE_ID', value: 'ws-a-b-1-c' },
        { name: 'EMPTY', value: '' },
      ],
      resources: { limits: { cpu: '1', memory: '512Mi' } },
      volumeMounts: [{ name: 'workspace', mountPath: '/workspace' }],
    });
    expect(t.volumes).toEqual([
      { name: 'workspace', nfs: { server: '10.0.0.2', path: '/share', readOnly: false } },
      { name: 'bucket', gcs: { bucket: 'b1', readOnly: false } },
    ]);
    // The command is the shared prologue: the directory is $1, argv follows, never shell text.
    expect(JOB_COMMAND.slice(0, 3)).toEqual(['/bin/sh', '-c', CHANGE_DIRECTORY_AND_EXEC]);
  });
});

describe('runOverrides', () => {
  it('puts the directory before argv, the environment as values, and bounds the run past --timeout', () => {
    const o = runOverrides({ argv: ['sh', '-c', 'echo "$1"', 'x y'], env: { A: '$(id)' }, cwd: '/tmp' }, 30);
    expect(o.containerOverrides[0]).toEqual({
      args: ['/tmp', 'sh', '-c', 'echo "$1"', 'x y'],
      env: [{ name: 'A', value: '$(id)' }],
    });
    expect(o.timeout.seconds).toBe(90);
    expect(runOverrides({ argv: ['true'] }).containerOverrides[0]!.args[0]).toBe('/workspace');
    expect(runOverrides({ argv: ['true'] }, 99_999).timeout.seconds).toBe(3600);
  });
});

describe('executionExit', () => {
  const done = { completionTime: { seconds: '1700000000' }, taskCount: 1 };
  it('succeeded is 0; failed is the task exit code, its signal, or 1; cancelled is the signal asked for', () => {
    expect(executionExit({ ...done, succeededCount: 1 }, undefined, undefined).status).toEqual({ code: 0 });
    const failed = { ...done, failedCount: 1, conditions: [{ type: 'Completed', message: 'Task t failed' }] };
    expect(executionExit(failed, { lastAttemptResult: { exitCode: 42 } }, undefined)).toEqual({
      outcome: 'failed',
      status: { code: 42 },
      message: 'Task t failed',
    });
    expect(executionExit(failed, { lastAttemptResult: { termSignal: 9 } }, undefined).status).toEqual({
      code: null,
      signal: 'SIGKILL',
    });
    expect(executionExit(failed, undefined, undefined).status).toEqual({ code: 1 });
    expect(executionExit({ ...done, cancelledCount: 1 }, undefined, 'SIGINT').status).toEqual({
      code: null,
      signal: 'SIGINT',
    });
    const reason = { ...done, conditions: [{ type: 'Completed', executionReason: 3 }] };
    expect(executionExit(reason, undefined, undefined).outcome).toBe('cancelled');
  });

  it('an execution is done once its completionTime is set', () => {
    expect(executionDone({})).toBe(false);
    expect(executionDone({ completionTime: null })).toBe(false);
    expect(executionDone({ completionTime: { seconds: '0' } })).toBe(false);
    expect(executionDone({ completionTime: '' })).toBe(false);
    expect(executionDone({ completionTime: '2026-11-26T00:00:00Z' })).toBe(true);
    expect(executionDone(done)).toBe(true);
  });
});
