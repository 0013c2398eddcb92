/**
 * The cloud_run provider when Cloud Run misbehaves (the fake's faults): a deploy that fails, a container that never
 * listens, the API failing, an agent that is gone. Each: one clear line, no hang, and nothing left behind.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CloudRunProvider } from '../../src/providers/cloudrun/cloudrun.js';
import { cloudRunConfig } from '../../src/providers/cloudrun/config.js';
import { parseCreateRequest } from '../../src/session/model.js';
import { type CloudRunFake, startCloudRunFake } from '../fakes/cloudrun/server.js';

let run: CloudRunFake;
let provider: CloudRunProvider;

beforeAll(async () => {
  run = await startCloudRunFake({ startupTimeoutMs: 2_000 });
  const env = { ...process.env, ...run.env, ONMEMOS_CONFIG_DIR: join(run.dir, 'onmemos-config') };
  const r = cloudRunConfig(env);
  if (!r.ok) throw new Error(r.reason);
  provider = new CloudRunProvider(r.config, env, async (audience) => run.idToken(audience));
});
afterAll(() => run.close());

const req = (namespace: string) => parseCreateRequest({ provider: 'cloud_run', namespace, ttl_minutes: 5 });
const left = async (namespace: string) => (await provider.list({ namespace })).map((s) => s.id);
const oneLine = (e: unknown) => {
  expect(e).toBeInstanceOf(Error);
  const m = (e as Error).message;
  expect(m.split('\n')).toHaveLength(1);
  return m;
};

describe('cloud_run faults', () => {
  it("a deploy whose operation fails: the API's message, and the service it left is removed", async () => {
    run.faults.set({
      failOperations: { method: 'createService', code: 'FAILED_PRECONDITION', message: 'quota exceeded', count: 1 },
    });
    try {
      const e = await provider.create(req('opfail')).catch((x) => x);
      expect(oneLine(e)).toMatch(/quota exceeded/);
      expect(await left('opfail')).toEqual([]);
    } finally {
      run.faults.clear();
    }
  });

  it("a container that never listens on $PORT: Cloud Run's own reason, and nothing left", async () => {
    run.faults.set({ neverListen: 'ws-deaf-' });
    try {
      const e = await provider.create(req('deaf')).catch((x) => x);
      expect(oneLine(e)).toMatch(/failed to start and listen on the port/);
      expect(await left('deaf')).toEqual([]);
    } finally {
      run.faults.clear();
    }
  });

  it('the API failing (503) on the create: unavailable, in one line, nothing made', async () => {
    run.faults.set({ apiErrors: [{ path: /\/services$/, method: 'POST', code: 503, count: 1 }] });
    try {
      const e = await provider.create(req('api503')).catch((x) => x);
      oneLine(e);
      expect((e as { code: string }).code).toBe('unavailable');
      expect(await left('api503')).toEqual([]);
    } finally {
      run.faults.clear();
    }
  });

  it('an exec without the right secret is refused by the agent in one line (another onmemos key)', async () => {
    const s = await provider.create(req('secret'));
    try {
      const env = { ...process.env, ...run.env, ONMEMOS_CLOUDRUN_KEY: 'x'.repeat(40) };
      const r = cloudRunConfig(env);
      if (!r.ok) throw new Error(r.reason);
      const stranger = new CloudRunProvider(r.config, env, async (audience) => run.idToken(audience));
      const e = await stranger.exec(s.id, { argv: ['id'] }).catch((x) => x);
      expect(oneLine(e)).toMatch(/refused the call \(401\)/);
    } finally {
      await provider.delete(s.id);
    }
  });
});
