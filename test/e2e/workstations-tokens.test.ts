/**
 * The workstations provider's access tokens for the tunnel (generateAccessToken): kept only while the API says they
 * live, and a token the workstation's host refuses (401) replaced by a fresh one, once. In-process, against the
 * Cloud Workstations fake with short-lived tokens.
 */
import type { Duplex } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { workstationsConfig } from '../../src/providers/workstations/config.js';
import { WorkstationsProvider } from '../../src/providers/workstations/workstations.js';
import { parseCreateRequest } from '../../src/session/model.js';
import { startWorkstationsFake, type WorkstationsFake } from '../fakes/workstations/server.js';

let fake: WorkstationsFake;
let provider: WorkstationsProvider;
let id = '';

beforeAll(async () => {
  fake = await startWorkstationsFake({ accessTokenTtlCapSeconds: 2 });
  const env = { ...process.env, ...fake.env };
  const r = workstationsConfig(env);
  if (!r.ok) throw new Error(r.reason);
  provider = new WorkstationsProvider(r.config, env);
  id = (await provider.create(parseCreateRequest({ provider: 'workstations', namespace: 'tok', ttl_minutes: 10 }))).id;
}, 60_000);
afterAll(async () => {
  await provider.delete(id).catch(() => {});
  await fake.close();
}, 60_000);

/** The first line the workstation's sshd sends through a tunnel to port 22. */
async function banner(t: Duplex): Promise<string> {
  const line = await new Promise<string>((resolve, reject) => {
    let got = '';
    t.on('data', (d) => {
      got += d;
      if (got.includes('\n')) resolve(got.split('\n')[0]!);
    });
    t.on('error', reject);
    setTimeout(() => reject(new Error('no banner in 10 s')), 10_000).unref();
  });
  t.destroy();
  return line;
}

const tokenCalls = () => fake.requests.filter((r) => r.url.includes(':generateAccessToken')).length;

describe('workstations access tokens', () => {
  it('a token the API gives a short life is not kept past it: the next tunnel gets a fresh one', async () => {
    const before = tokenCalls();
    expect(await banner(await provider.tunnel(id, 22))).toMatch(/^SSH-2\.0-/);
    await new Promise((r) => setTimeout(r, 2_200));
    expect(await banner(await provider.tunnel(id, 22))).toMatch(/^SSH-2\.0-/);
    expect(tokenCalls() - before).toBe(2);
  });

  it('a kept token the host refuses (401) is dropped, and a fresh one tried once', async () => {
    // As a token revoked or expired early would be: one the host never issued, kept as if it were good.
    (provider as unknown as { tokens: Map<string, { token: string; until: number }> }).tokens.set(id, {
      token: 'stale-token',
      until: Date.now() + 600_000,
    });
    const seen = fake.tunnelRequests.length;
    expect(await banner(await provider.tunnel(id, 22))).toMatch(/^SSH-2\.0-/);
    expect(fake.tunnelRequests.slice(seen).map((r) => r.status)).toEqual([401, 101]);
  });
});
