/**
 * End to end, the cloud_run provider through the built binary against the Cloud Run Admin API fake
 * (test/fakes/cloudrun): services whose container runs the real `onmemos agent` in a local sandbox, behind a front
 * end that checks ID tokens as Cloud Run's does; next to local sessions, and through `onmemos serve`.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CloudRunFake, startCloudRunFake } from '../fakes/cloudrun/server.js';
import { StateDir } from '../helpers/cli.js';
import { type Served, startServe } from '../helpers/serve.js';

let run: CloudRunFake;
const state = new StateDir();
let env: Record<string, string>;
let id = '';
const cr = (args: string[], opts: { input?: string; env?: Record<string, string> } = {}) =>
  state.run(args, { ...opts, env: { ...env, ...opts.env } });

beforeAll(async () => {
  // team-bucket: the legacy create below mounts it (a bucket the fake does not have fails the revision).
  run = await startCloudRunFake({ buckets: ['team-bucket'] });
  // run.env has gcloud's variables and ONMEMOS_ID_TOKEN_COMMAND, as `npm run fake -- cloudrun` prints them.
  env = { ...run.env, ONMEMOS_CONFIG_DIR: join(state.path, 'config') };
  const r = await cr(['create', '--provider', 'cloud_run', '--namespace', 'team-a', '--user', 'alice', '--json']);
  expect(r.code, r.stderr).toBe(0);
  id = JSON.parse(r.stdout).id;
});
afterAll(async () => {
  await cr(['rm', '--all']);
  await state.cleanup();
  await run.close();
});

/** A TCP server on 127.0.0.1:port in the session's container that answers `echo:` and what it read, then closes. */
async function startEcho(session: string, port: number): Promise<void> {
  const py = `import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', ${port})); s.listen()\nwhile True:\n  c,_=s.accept(); c.sendall(b'echo:' + c.recv(100)); c.close()`;
  const r = await cr(['exec', session, '--', 'sh', '-c', 'setsid -f python3 -c "$1" >/dev/null 2>&1', 'sh', py]);
  expect(r.code, r.stderr).toBe(0);
}

/** `onmemos tunnel --stdio` to `port`, sending "ping", until the server is up (bounded: 50 tries). */
async function tunnelOnce(session: string, port: number, extra: Record<string, string> = {}) {
  let r = await cr(['tunnel', '--stdio', '--port', String(port), session], { input: 'ping', env: extra });
  for (let i = 0; i < 50 && r.stdout !== 'echo:ping'; i++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    r = await cr(['tunnel', '--stdio', '--port', String(port), session], { input: 'ping', env: extra });
  }
  return r;
}

describe('cloud_run through the CLI', () => {
  it('create answers the document fields: the service URL, its name and the bucket name', async () => {
    const s = JSON.parse((await cr(['get', id, '--json'])).stdout);
    expect(s).toMatchObject({ id, provider: 'cloud_run', namespace: 'team-a', user: 'alice', status: 'running' });
    expect(s.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(s.details).toMatchObject({
      service_name: `projects/${run.project}/locations/${run.region}/services/${id}`,
      bucket_name: `onmemos-${id.slice(3)}`,
    });
  });

  it("auto with no hints picks cloud_run (the document's default), and says why", async () => {
    const r = await cr(['create', '--json', '--namespace', 'auto']);
    expect(r.code, r.stderr).toBe(0);
    const s = JSON.parse(r.stdout);
    expect(s).toMatchObject({ provider: 'cloud_run', details: { provider_reason: 'auto: short-lived by default' } });
    expect((await cr(['rm', s.id])).code).toBe(0);
    expect(await cr(['get', s.id])).toMatchObject({ code: 1, stderr: expect.stringContaining('no such session') });
  });

  it('exec through the agent: exit code, stdout and stderr apart, stdin to EOF, the workspace user', async () => {
    expect(await cr(['exec', id, '--', 'sh', '-c', 'echo out; echo err >&2; exit 3'])).toMatchObject({
      code: 3,
      stdout: 'out\n',
      stderr: 'err\n',
    });
    expect((await cr(['exec', id, '--', 'wc', '-c'], { input: 'abcd' })).stdout.trim()).toBe('4');
    expect((await cr(['exec', id, '--', 'sh', '-c', 'echo $WORKSPACE_ID $(id -u) $(pwd)'])).stdout).toBe(
      `${id} 1000 /workspace\n`,
    );
  });

  it('ls lists cloud_run sessions next to local ones', async () => {
    const local = await state.create('--provider', 'local', '--network', 'isolated');
    const all = JSON.parse((await cr(['ls', '--json'])).stdout) as { id: string; provider: string }[];
    expect(all.map((s) => [s.id, s.provider])).toEqual(
      expect.arrayContaining([
        [id, 'cloud_run'],
        [local, 'local'],
      ]),
    );
    await cr(['rm', local]);
  });

  it('first creates at once, with a new config directory, make one key between them: every session answers', async () => {
    const fresh = { ONMEMOS_CONFIG_DIR: join(state.path, 'config-race') };
    const made = await Promise.all(
      [1, 2, 3, 4].map(() =>
        cr(['create', '--provider', 'cloud_run', '--namespace', 'keyrace', '--json'], { env: fresh }),
      ),
    );
    for (const r of made) expect(r.code, r.stderr).toBe(0);
    const ids = made.map((r) => JSON.parse(r.stdout).id as string);
    const ran = await Promise.all(ids.map((i) => cr(['exec', i, '--', 'echo', 'ok'], { env: fresh })));
    expect(ran.map((r) => [r.code, r.stdout, r.stderr])).toEqual(ids.map(() => [0, 'ok\n', '']));
    await cr(['rm', ...ids], { env: fresh });
  }, 60_000);

  it('tunnel reaches a server in the container through its agent; nothing listening is one line, exit 1', async () => {
    await startEcho(id, 9097);
    expect(await tunnelOnce(id, 9097)).toMatchObject({ code: 0, stdout: 'echo:ping' });
    const none = await cr(['tunnel', '--stdio', '--port', '9096', id], { input: 'x' });
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/^onmemos: .*nothing listens on port 9096 in the session/);
    expect(none.stderr.trim().split('\n')).toHaveLength(1);
    const bad = await cr(['tunnel', '--stdio', '--port', '0', id]);
    expect(bad.code).toBe(2);
  });

  it("knowing the URL (even with an ID token) is not enough: the agent wants the session's secret", async () => {
    const s = JSON.parse((await cr(['get', id, '--json'])).stdout);
    const res = await fetch(`${s.url}/v1/execute`, {
      method: 'POST',
      headers: { authorization: `Bearer ${run.idToken(s.url)}`, 'content-type': 'application/json' },
      body: JSON.stringify({ command: 'id' }),
    });
    expect(res.status).toBe(401);
    // And the service's configuration holds only the secret's hash.
    const svc = await fetch(`${run.url}/v2/${s.details.service_name}`, {
      headers: { authorization: `Bearer ${run.token}` },
    });
    const names = (
      (await svc.json()) as { template: { containers: { env: { name: string }[] }[] } }
    ).template.containers[0]!.env.map((e) => e.name);
    expect(names).toContain('ONMEMOS_AGENT_SECRET_SHA256');
    expect(names).not.toContain('ONMEMOS_AGENT_SECRET');
  });
});

describe('cloud_run through onmemos serve', () => {
  let served: Served;
  const key = 'cloudrun-e2e-key-0123456789abcdef';
  beforeAll(async () => {
    served = await startServe({ ...state.env, ...env, ONMEMOS_API_KEYS: key });
  });
  afterAll(() => served.stop());

  it('tunnel through the server reaches the container too', async () => {
    const remote = { ONMEMOS_SERVER: served.url, ONMEMOS_API_KEY: key };
    await startEcho(id, 9095);
    expect(await tunnelOnce(id, 9095, remote)).toMatchObject({ code: 0, stdout: 'echo:ping' });
  });

  it('the legacy /v1/cloudrun/workspaces routes run on cloud_run; exec and the JSON shell go through the agent', async () => {
    const h = { 'x-api-key': key, 'content-type': 'application/json' };
    const made = await fetch(`${served.url}/v1/cloudrun/workspaces`, {
      method: 'POST',
      headers: h,
      body: JSON.stringify({ template: 'python', namespace: 'legacy', user: 'bob', ttl_minutes: 10 }),
    });
    expect(made.status).toBe(200);
    const w = (await made.json()) as { id: string };
    const ex = await fetch(`${served.url}/v1/cloudrun/workspaces/${w.id}/execute?command=pwd`, {
      method: 'POST',
      headers: h,
    });
    expect(await ex.json()).toMatchObject({ stdout: '/workspace\n', returncode: 0 });
    const remote = { ONMEMOS_SERVER: served.url, ONMEMOS_API_KEY: key };
    expect(
      await cr(['exec', w.id, '--', 'sh', '-c', 'cat; exit 5'], { env: remote, input: 'via-serve' }),
    ).toMatchObject({
      code: 5,
      stdout: 'via-serve',
    });
    const s = JSON.parse((await cr(['get', w.id, '--json'], { env: remote })).stdout);
    expect(s.provider).toBe('cloud_run');
    const del = await fetch(`${served.url}/v1/cloudrun/workspaces/${w.id}`, { method: 'DELETE', headers: h });
    expect(del.status).toBe(200);
  });
  it("the legacy create's storage_options become the service's NFS and Cloud Storage volumes", async () => {
    const h = { 'x-api-key': key, 'content-type': 'application/json' };
    const made = await fetch(`${served.url}/v1/cloudrun/workspaces`, {
      method: 'POST',
      headers: h,
      body: JSON.stringify({
        template: 'python',
        namespace: 'legacy',
        user: 'vol',
        storage_options: { bucket: 'team-bucket', filestore: { ip: '10.1.2.3', share: 'workspace' } },
      }),
    });
    expect(made.status).toBe(200);
    const w = (await made.json()) as { id: string; details: { service_name: string; bucket_name: string } };
    try {
      const svc = (await (
        await fetch(`${run.url}/v2/${w.details.service_name}`, { headers: { authorization: `Bearer ${run.token}` } })
      ).json()) as {
        template: { volumes: unknown[]; executionEnvironment: string; containers: { volumeMounts: unknown[] }[] };
      };
      expect(svc.template.volumes).toEqual(
        expect.arrayContaining([
          expect.objectContaining({
            name: 'workspace',
            nfs: expect.objectContaining({ server: '10.1.2.3', path: '/workspace' }),
          }),
          expect.objectContaining({ name: 'bucket', gcs: expect.objectContaining({ bucket: 'team-bucket' }) }),
        ]),
      );
      expect(svc.template.containers[0]!.volumeMounts).toEqual(
        expect.arrayContaining([
          expect.objectContaining({ name: 'workspace', mountPath: '/workspace' }),
          expect.objectContaining({ name: 'bucket', mountPath: '/workspace/bucket' }),
        ]),
      );
      expect(svc.template.executionEnvironment).toBe('EXECUTION_ENVIRONMENT_GEN2');
    } finally {
      await fetch(`${served.url}/v1/cloudrun/workspaces/${w.id}`, { method: 'DELETE', headers: h });
    }
  });
});
