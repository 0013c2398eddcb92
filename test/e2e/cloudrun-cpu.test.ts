/**
 * End to end, `create --cpu-always` on cloud_run through the built binary, against the Cloud Run fake with
 * request-based CPU to the letter (freezeIdle: an instance of a `cpuIdle` revision is frozen while no request is
 * open): the service's template and annotation, what `get` reports, what a background process then does, and the
 * same request through `onmemos serve` (POST /v1/sessions, and the CLI in remote mode).
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CloudRunFake, startCloudRunFake } from '../fakes/cloudrun/server.js';
import { heartbeatAcrossIdle } from '../helpers/background.js';
import { StateDir } from '../helpers/cli.js';
import { type Served, startServe } from '../helpers/serve.js';

let run: CloudRunFake;
const state = new StateDir();
let env: Record<string, string>;
const cr = (args: string[], opts: { env?: Record<string, string> } = {}) =>
  state.run(args, { env: { ...env, ...opts.env } });

interface ServiceJson {
  annotations: Record<string, string>;
  template: { containers: { resources: { cpuIdle?: boolean; limits: Record<string, string> } }[] };
}
/** The service as the Admin API returns it. */
async function service(name: string): Promise<ServiceJson> {
  const r = await fetch(`${run.url}/v2/${name}`, { headers: { authorization: `Bearer ${run.token}` } });
  expect(r.status).toBe(200);
  return (await r.json()) as ServiceJson;
}

async function create(...args: string[]) {
  const r = await cr(['create', '--provider', 'cloud_run', '--ttl', '10', '--json', ...args]);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as { id: string; details: Record<string, unknown> };
}

beforeAll(async () => {
  run = await startCloudRunFake({ freezeIdle: true });
  env = { ...run.env, ONMEMOS_CONFIG_DIR: join(state.path, 'config') };
});
afterAll(async () => {
  await cr(['rm', '--all']);
  await state.cleanup();
  await run.close();
});

describe('create --provider cloud_run --cpu-always', () => {
  let always: { id: string; details: Record<string, unknown> };
  let throttled: { id: string; details: Record<string, unknown> };
  beforeAll(async () => {
    [always, throttled] = await Promise.all([create('--cpu-always', '--namespace', 'cpu'), create()]);
  });

  it('makes a service with instance-based CPU (cpuIdle false) and the cpu-always annotation; without it, cpuIdle true', async () => {
    const a = await service(always.details.service_name as string);
    expect(a.template.containers[0]!.resources).toMatchObject({ cpuIdle: false, limits: { cpu: '2' } });
    expect(a.annotations['onmemos.dev/cpu-always']).toBe('true');
    const t = await service(throttled.details.service_name as string);
    expect(t.template.containers[0]!.resources.cpuIdle).toBe(true);
    expect(t.annotations['onmemos.dev/cpu-always']).toBe('false');
  });

  it('get reports it, rebuilt from the service: cpu_always, workspace_persistent and the notes', async () => {
    const got = JSON.parse((await cr(['get', always.id, '--json'])).stdout);
    expect(got.details).toMatchObject({
      cpu_always: true,
      workspace_persistent: false,
      notes: [
        'workspace: in the instance, lost when the service scales to zero (no Filestore volume)',
        'cpu: instance-based (--cpu-always): background processes run between requests, while the instance lives',
      ],
    });
    expect(always.details).toMatchObject({ cpu_always: true, workspace_persistent: false });
    const text = (await cr(['get', throttled.id])).stdout;
    expect(text).toMatch(/^cpu_always: +false$/m);
    expect(text).toMatch(/^workspace_persistent: +false$/m);
    expect(text).toMatch(
      /^notes: +workspace: in the instance, .*; cpu: request-based: background processes are frozen between requests/m,
    );
    const listed = JSON.parse((await cr(['ls', '--json'])).stdout) as {
      id: string;
      details: { cpu_always: boolean };
    }[];
    expect(listed.find((s) => s.id === always.id)?.details.cpu_always).toBe(true);
    expect(listed.find((s) => s.id === throttled.id)?.details.cpu_always).toBe(false);
  });

  it('a background process runs on between execs with it, and is frozen between them without it', async () => {
    const exec = (id: string) => async (argv: string[]) => cr(['exec', id, '--', ...argv]);
    const [on, off] = await Promise.all([
      heartbeatAcrossIdle(exec(always.id)),
      heartbeatAcrossIdle(exec(throttled.id)),
    ]);
    expect(on.spanMs).toBeGreaterThanOrEqual(2_500);
    expect(on.maxGapMs).toBeLessThan(1_250);
    // Frozen from the end of one exec to the start of the next: one gap as long as the idle time.
    expect(off.maxGapMs).toBeGreaterThanOrEqual(2_000);
  });
});

describe('cpu_always through onmemos serve', () => {
  let served: Served;
  const key = 'cloudrun-cpu-e2e-key-0123456789abcdef';
  beforeAll(async () => {
    served = await startServe({ ...state.env, ...env, ONMEMOS_API_KEYS: key });
  });
  afterAll(() => served.stop());

  it('POST /v1/sessions takes cpu_always (a boolean, else 400); the CLI in remote mode sends it', async () => {
    const h = { 'x-api-key': key, 'content-type': 'application/json' };
    const post = (body: unknown) =>
      fetch(`${served.url}/v1/sessions`, { method: 'POST', headers: h, body: JSON.stringify(body) });
    const bad = await post({ provider: 'cloud_run', cpu_always: 'yes' });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({
      error: { code: 'bad_request', message: '"cpu_always" must be a boolean' },
    });
    const made = await post({ provider: 'cloud_run', namespace: 'api', ttl_minutes: 10, cpu_always: true });
    expect(made.status).toBe(200);
    const s = (await made.json()) as { details: { service_name: string; cpu_always: boolean } };
    expect(s.details.cpu_always).toBe(true);
    expect((await service(s.details.service_name)).template.containers[0]!.resources.cpuIdle).toBe(false);

    const remote = { ONMEMOS_SERVER: served.url, ONMEMOS_API_KEY: key };
    const r = await cr(['create', '--provider', 'cloud_run', '--cpu-always', '--namespace', 'remote', '--json'], {
      env: remote,
    });
    expect(r.code, r.stderr).toBe(0);
    const viaCli = JSON.parse(r.stdout) as { details: { service_name: string; cpu_always: boolean } };
    expect(viaCli.details.cpu_always).toBe(true);
    expect((await service(viaCli.details.service_name)).template.containers[0]!.resources.cpuIdle).toBe(false);
  });
});
