/**
 * One-shot commands of cloud_run sessions as Cloud Run Jobs (src/providers/cloudrun/job.ts), against the Cloud Run
 * fake whose job tasks really run: `onmemos exec --via job`, its exit status (the task's own code, 124 on
 * --timeout, a cancel on kill), the job made once per session and removed with it, what a job cannot take, and the
 * legacy execute route running a job when the session's agent does not answer.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CloudRunProvider } from '../../src/providers/cloudrun/cloudrun.js';
import { cloudRunConfig } from '../../src/providers/cloudrun/config.js';
import { parseCreateRequest } from '../../src/session/model.js';
import { SandboxRuntime } from '../fakes/cloudrun/runtime.js';
import { type CloudRunFake, startCloudRunFake } from '../fakes/cloudrun/server.js';
import { StateDir, waitFor } from '../helpers/cli.js';
import { clients, parentOf, sandboxes } from '../helpers/cloudrun.js';
import { type Served, startServe } from '../helpers/serve.js';

let run: CloudRunFake;
let api: ReturnType<typeof clients>;
const state = new StateDir();
let env: Record<string, string>;
let provider: CloudRunProvider;
let id = '';
const cr = (args: string[], opts: { input?: string; env?: Record<string, string> } = {}) =>
  state.run(args, { ...opts, env: { ...env, ...opts.env } });
const jobPath = (session: string) => `${parentOf(run)}/jobs/${session}`;

/** The execution and its logUri that a run's stderr names; the text the fake serves there (the task's output). */
async function ranAs(stderr: string): Promise<{ execution: string; log: string }> {
  const m = /execution (\S+?)[ ,;\n]/.exec(stderr);
  const uri = /Cloud Logging: (\S+)/.exec(stderr)?.[1];
  expect(m, stderr).toBeTruthy();
  expect(uri, stderr).toBeTruthy();
  const log = await (await fetch(uri!, { headers: { authorization: `Bearer ${run.token}` } })).text();
  return { execution: m![1]!, log };
}

beforeAll(async () => {
  run = await startCloudRunFake({ startupTimeoutMs: 2_000 });
  api = clients(run);
  env = { ...run.env, ONMEMOS_CONFIG_DIR: join(state.path, 'config') };
  const r = cloudRunConfig({ ...process.env, ...env });
  if (!r.ok) throw new Error(r.reason);
  provider = new CloudRunProvider(r.config, { ...process.env, ...env }, async (a) => run.idToken(a));
  const made = await cr(['create', '--provider', 'cloud_run', '--namespace', 'jobs', '--user', 'ann', '--json']);
  expect(made.code, made.stderr).toBe(0);
  id = JSON.parse(made.stdout).id;
});
afterAll(async () => {
  await cr(['rm', '--all']);
  await state.cleanup();
  await Promise.all([api.services.close(), api.jobs.close(), api.executions.close(), api.tasks.close()]);
  await run.close();
});

// The first run makes the session's job; later steps count its executions: the run never shuffles them.
describe('exec --via job', { shuffle: false }, () => {
  it('runs the command once as a job: argv, -e and -w as given, the session environment, its exit code', async () => {
    const r = await cr([
      'exec',
      '--via',
      'job',
      '-e',
      'X=a  b $c "d"',
      '-w',
      '/tmp',
      id,
      '--',
      'sh',
      '-c',
      'printf "%s|%s|%s\\n" "$X" "$(pwd)" "$WORKSPACE_ID"; exit 3',
    ]);
    expect(r.code, r.stderr).toBe(3);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(new RegExp(`running as Cloud Run job ${id}, execution ${id}-`));
    expect(r.stderr).toMatch(/failed: .*; its output is in Cloud Logging: http/);
    const { log } = await ranAs(r.stderr);
    expect(log).toBe(`a  b $c "d"|/tmp|${id}\n`);
    // The job is the session's: its labels, the service's image, and no retry (a command runs once).
    const [job] = await api.jobs.getJob({ name: jobPath(id) });
    expect(job.labels).toMatchObject({ 'managed-by': 'onmemos', 'onmemos-namespace': 'jobs', 'onmemos-user': 'ann' });
    expect(job.template?.template?.maxRetries).toBe(0);
    const envNames = job.template?.template?.containers?.[0]?.env?.map((e) => e.name);
    expect(envNames).toContain('WORKSPACE_ID');
    expect(envNames).not.toContain('ONMEMOS_AGENT_SECRET_SHA256');
  });

  it('reuses the job: success is 0, a missing command 127, with no stdin read and nothing on stdout', async () => {
    expect(await cr(['exec', '--via', 'job', id, '--', 'true'], { input: 'ignored' })).toMatchObject({
      code: 0,
      stdout: '',
    });
    const missing = await cr(['exec', '--via', 'job', id, '--', 'no-such-command']);
    expect(missing.code, missing.stderr).toBe(127);
    expect((await ranAs(missing.stderr)).log).toContain('no-such-command: command not found');
    const [executions] = await api.executions.listExecutions({ parent: jobPath(id) });
    expect(executions.length).toBeGreaterThanOrEqual(3);
  });

  it('--timeout cancels the run: 124, the execution cancelled, its task sandbox gone', async () => {
    const before = await sandboxes(run);
    const r = await cr(['exec', '--via', 'job', '--timeout', '1', id, '--', 'sleep', '60']);
    expect(r.code, r.stderr).toBe(124);
    const [latest] = (await api.executions.listExecutions({ parent: jobPath(id) }))[0];
    expect(
      await waitFor(
        async () => Number((await api.executions.getExecution({ name: latest!.name! }))[0].cancelledCount) === 1,
      ),
    ).toBe(true);
    expect(await waitFor(async () => (await sandboxes(run)).length <= before.length)).toBe(true);
  });

  it('a kill cancels the run, which ends with that signal', async () => {
    const p = await provider.exec(id, { argv: ['sleep', '60'], via: 'job' });
    p.stdout.resume();
    const lines: string[] = [];
    p.stderr.on('data', (d: Buffer) => lines.push(String(d)));
    p.kill('SIGINT');
    expect(await p.exit).toEqual({ code: null, signal: 'SIGINT' });
    expect(lines.join('')).toMatch(/cancelled/);
  });

  it("a task forced to fail: the task's own exit code", async () => {
    run.faults.set({ failTasks: { job: id, exitCode: 7 } });
    try {
      const r = await cr(['exec', '--via', 'job', id, '--', 'true']);
      expect(r.code, r.stderr).toBe(7);
    } finally {
      run.faults.clear();
    }
  });

  it('what a job cannot take is refused before anything runs: a tty, stdin, a session elsewhere', async () => {
    const [before] = await api.executions.listExecutions({ parent: jobPath(id) });
    // exec's own failures exit 125, apart from any command's code.
    const tty = await cr(['exec', '--via', 'job', '-t', id, '--', 'true']);
    expect(tty.code).toBe(125);
    expect(tty.stderr).toMatch(/a job reads no stdin and has no tty/);
    expect((await cr(['exec', '--via', 'job', '-i', id, '--', 'true'])).code).toBe(125);
    expect((await cr(['exec', '--via', 'nope', id, '--', 'true'])).code).toBe(125);
    const local = await state.create('--provider', 'local', '--network', 'isolated');
    const r = await cr(['exec', '--via', 'job', local, '--', 'true']);
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/provider local runs no one-shot jobs/);
    await cr(['rm', local]);
    const [after] = await api.executions.listExecutions({ parent: jobPath(id) });
    expect(after.length).toBe(before.length);
  });
});

describe('the job goes with its session', () => {
  it('rm removes the service and its job', async () => {
    const made = await cr(['create', '--provider', 'cloud_run', '--namespace', 'jobs', '--user', 'rm', '--json']);
    const other = JSON.parse(made.stdout).id as string;
    expect((await cr(['exec', '--via', 'job', other, '--', 'true'])).code).toBe(0);
    expect((await cr(['rm', other])).code).toBe(0);
    const e = await api.jobs.getJob({ name: jobPath(other) }).catch((x) => x);
    expect(e.code).toBe(5);
  });

  it("the reaper removes a job whose session's service is gone", async () => {
    const s = await provider.create(parseCreateRequest({ provider: 'cloud_run', namespace: 'orphan', ttl_minutes: 5 }));
    const p = await provider.exec(s.id, { argv: ['true'], via: 'job' });
    p.stdout.resume();
    p.stderr.resume();
    expect(await p.exit).toEqual({ code: 0 });
    const [op] = await api.services.deleteService({ name: `${parentOf(run)}/services/${s.id}` });
    await op.promise();
    await provider.reapExpired();
    const e = await api.jobs.getJob({ name: jobPath(s.id) }).catch((x) => x);
    expect(e.code).toBe(5);
  });
});

describe('through onmemos serve', () => {
  let served: Served;
  const key = 'cloudrun-jobs-key-0123456789abcdef';
  const h = { 'x-api-key': key, 'content-type': 'application/json' };
  beforeAll(async () => {
    served = await startServe({ ...state.env, ...env, ONMEMOS_API_KEYS: key });
  });
  afterAll(() => served.stop());

  it('exec --via job in remote mode, and execute with "via": "job"', async () => {
    const remote = { ONMEMOS_SERVER: served.url, ONMEMOS_API_KEY: key };
    const r = await cr(['exec', '--via', 'job', id, '--', 'sh', '-c', 'exit 4'], { env: remote });
    expect(r.code, r.stderr).toBe(4);
    expect(r.stderr).toMatch(/running as Cloud Run job/);
    const res = await fetch(`${served.url}/v1/sessions/${id}/execute`, {
      method: 'POST',
      headers: h,
      body: JSON.stringify({ command: 'exit 0', via: 'job' }),
    });
    expect(await res.json()).toMatchObject({ stdout: '', returncode: 0, success: true });
    const bad = await fetch(`${served.url}/v1/sessions/${id}/execute`, {
      method: 'POST',
      headers: h,
      body: JSON.stringify({ command: 'true', via: 'ssh' }),
    });
    expect(bad.status).toBe(400);
  });

  it("the legacy execute route runs a job when the workspace's agent does not answer", async () => {
    const made = await fetch(`${served.url}/v1/cloudrun/workspaces`, {
      method: 'POST',
      headers: h,
      body: JSON.stringify({ template: 'python', namespace: 'legacy', user: 'deaf', ttl_minutes: 10 }),
    });
    const w = (await made.json()) as { id: string };
    const host = run.services.find({ project: run.project, location: run.region }, w.id).host;
    // The instance dies, and the next one never listens: the agent cannot be reached.
    run.faults.set({ neverListen: w.id });
    try {
      if (!(run.runtime instanceof SandboxRuntime)) throw new Error('the fake runs no sandboxes');
      await run.runtime.provider.delete(host.instanceSession!);
      expect(await waitFor(() => !host.instanceRunning)).toBe(true);
      const ex = await fetch(`${served.url}/v1/cloudrun/workspaces/${w.id}/execute?command=exit%206`, {
        method: 'POST',
        headers: h,
      });
      const body = (await ex.json()) as { returncode: number; stderr: string };
      expect(body.returncode, body.stderr).toBe(6);
      expect(body.stderr).toMatch(/ran as a job instead/);
      expect(body.stderr).toMatch(/running as Cloud Run job/);
    } finally {
      run.faults.clear();
      await fetch(`${served.url}/v1/cloudrun/workspaces/${w.id}`, { method: 'DELETE', headers: h });
    }
  });
});
