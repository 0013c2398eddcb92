/** The registry: routing by hint, lists with partial results, auto and its stand-in, capability refusals. */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { UnavailableError } from '../../src/errors.js';
import { CLOUDRUN_CAPABILITIES } from '../../src/providers/cloudrun/cloudrun.js';
import { GKE_CAPABILITIES } from '../../src/providers/gke/gke.js';
import { checkRequest, createSession, type ProviderEntry, tableRegistry } from '../../src/providers/index.js';
import { LOCAL_CAPABILITIES } from '../../src/providers/local/local.js';
import { type Provider, runsInBackground } from '../../src/providers/provider.js';
import { parseCreateRequest } from '../../src/session/model.js';
import { FAKE_CAPABILITIES, FakeProvider } from '../helpers/fake-provider.js';

const dirs: string[] = [];
const made: FakeProvider[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  for (const f of made) f.dispose();
});

function setup(kinds: ('local' | 'gke' | 'cloud_run')[], opts: { broken?: string[]; unconfigured?: string[] } = {}) {
  const fakes = new Map(kinds.map((k) => [k, new FakeProvider({ kind: k })]));
  made.push(...fakes.values());
  const loads: string[] = [];
  const entries: ProviderEntry[] = kinds.map((kind) => ({
    kind,
    configured: () =>
      opts.unconfigured?.includes(kind) ? { ok: false, reason: `set ${kind.toUpperCase()}_THING` } : { ok: true },
    load: async () => {
      loads.push(kind);
      if (opts.broken?.includes(kind)) throw new UnavailableError(`${kind} credentials are invalid`);
      return fakes.get(kind)! as Provider;
    },
  }));
  const hints = mkdtempSync(join(tmpdir(), 'onmemos-hints-'));
  dirs.push(hints);
  return { fakes, loads, hints, registry: tableRegistry(entries, {}, { hints }) };
}

const req = (fields: Record<string, unknown> = {}) => parseCreateRequest({ ttl_minutes: 5, ...fields });

describe('the registry', () => {
  it('loads nothing until a provider is used, and only that one', async () => {
    const { registry, loads } = setup(['local', 'gke', 'cloud_run']);
    expect(registry.kinds().map((k) => k.kind)).toEqual(['local', 'gke', 'cloud_run']);
    expect(loads).toEqual([]);
    await registry.forCreate(req({ provider: 'gke' }));
    expect(loads).toEqual(['gke']);
  });

  it('auto applies the document rule over the configured kinds, and says who stood in and why', async () => {
    const { registry } = setup(['local', 'gke'], { unconfigured: ['cloud_run'] });
    const longLived = await registry.forCreate(req({ provider: 'auto', long_lived: true }));
    expect(longLived).toMatchObject({ provider: { kind: 'gke' }, reason: 'auto: long_lived' });
    const short = await registry.forCreate(req({ provider: 'auto' }));
    expect(short.provider.kind).toBe('local');
    expect(short.reason).toBe(
      'auto picks cloud_run (short-lived by default), which is not configured; local stands in',
    );
    const withReason = setup(['local', 'cloud_run'], { unconfigured: ['cloud_run'] }).registry;
    expect((await withReason.forCreate(req())).reason).toMatch(/not configured: set CLOUD_RUN_THING; local stands in$/);
  });

  it('a provider that is asked for by name but not configured, or fails to load, is an error: never a stand-in', async () => {
    const { registry } = setup(['local', 'gke'], { unconfigured: ['gke'] });
    await expect(registry.forCreate(req({ provider: 'gke' }))).rejects.toThrow(
      'provider gke is not configured: set GKE_THING',
    );
    const broken = setup(['local', 'gke'], { broken: ['gke'] }).registry;
    await expect(broken.forCreate(req({ provider: 'gke' }))).rejects.toThrow('gke credentials are invalid');
    await expect(broken.forCreate(req({ provider: 'auto', long_lived: true }))).rejects.toThrow(
      'gke credentials are invalid',
    );
  });

  it('a command on one id goes to the provider that holds it, without asking the others', async () => {
    const { registry, fakes, hints } = setup(['local', 'gke', 'cloud_run']);
    const s = await createSession(registry, req({ provider: 'gke' }));
    expect(readdirSync(hints)).toEqual([s.id]);
    for (const f of fakes.values()) f.calls.length = 0;
    const found = await registry.locate(s.id);
    expect(found.provider.kind).toBe('gke');
    expect(fakes.get('gke')!.calls).toEqual(['get']);
    expect(fakes.get('local')!.calls).toEqual([]);
    expect(fakes.get('cloud_run')!.calls).toEqual([]);
    const other = await createSession(registry, req({ provider: 'gke' }));
    registry.forget(other.id); // as rm does after a delete
    expect(readdirSync(hints)).toEqual([s.id]);
    // The provider has the last word: gone there means not found, and the hint goes too.
    await fakes.get('gke')!.delete(s.id);
    await expect(registry.locate(s.id)).rejects.toMatchObject({ code: 'not_found' });
    expect(readdirSync(hints)).toEqual([]);
  });

  it('without a hint, every configured provider is asked at once', async () => {
    const { registry, fakes } = setup(['local', 'gke', 'cloud_run']);
    const s = await fakes.get('cloud_run')!.create(req());
    expect((await registry.locate(s.id)).provider.kind).toBe('cloud_run');
    await expect(registry.locate('ws-nobody-here-1-abcd')).rejects.toMatchObject({ code: 'not_found' });
  });

  it('an expired session is removed by whoever looks (locate or list), and is then not found', async () => {
    const { registry, fakes } = setup(['local']);
    const s = await fakes.get('local')!.create(req({ ttl_minutes: 0.001 }));
    await new Promise((r) => setTimeout(r, 100));
    await expect(registry.locate(s.id)).rejects.toThrow(/it expired at/);
    expect(fakes.get('local')!.sessions.size).toBe(0);
    const t = await fakes.get('local')!.create(req({ ttl_minutes: 0.001 }));
    const kept = await fakes.get('local')!.create(req());
    await new Promise((r) => setTimeout(r, 100));
    expect((await registry.list()).sessions.map((x) => x.id)).toEqual([kept.id]);
    expect(fakes.get('local')!.sessions.has(t.id)).toBe(false);
  });

  it('list asks every provider; one that fails is named, the others still listed', async () => {
    const { registry, fakes } = setup(['local', 'gke', 'cloud_run'], { broken: ['cloud_run'] });
    await fakes.get('local')!.create(req({ namespace: 'a' }));
    await fakes.get('gke')!.create(req({ namespace: 'a' }));
    fakes.get('gke')!.list = async () => {
      throw new Error('connect ECONNREFUSED 10.0.0.1:443');
    };
    const { sessions, unreachable } = await registry.list();
    expect(sessions.map((s) => s.provider)).toEqual(['local']);
    expect(unreachable).toEqual([
      { provider: 'gke', message: 'connect ECONNREFUSED 10.0.0.1:443' },
      { provider: 'cloud_run', message: 'cloud_run credentials are invalid' },
    ]);
    expect((await registry.list({ provider: 'local' })).unreachable).toEqual([]);
  });

  it('when no provider answers, list fails rather than answering nothing', async () => {
    const { registry } = setup(['gke'], { broken: ['gke'] });
    await expect(registry.list()).rejects.toThrow('gke credentials are invalid');
  });
});

describe('capabilities', () => {
  const caps = FAKE_CAPABILITIES;
  it('refuses what the provider cannot do, in one sentence, before anything is made', () => {
    const local = { ...caps, storage: [], nestedUserns: false, maxTtlMinutes: 60 };
    expect(() => checkRequest('local', local, req({ storage: { bucket: 'my-bucket' } }))).toThrow(
      'provider local cannot mount a bucket',
    );
    expect(() =>
      checkRequest('local', local, req({ storage: { filestore: { ip: '10.0.0.2', share: 'vol1' } } })),
    ).toThrow('provider local cannot mount a Filestore share');
    expect(() => checkRequest('local', local, req({ ttl_minutes: 61 }))).toThrow(
      'provider local allows a TTL of at most 60 minutes',
    );
    expect(() => checkRequest('local', local, req({ nested_userns: true }))).toThrow(/cannot allow user namespaces/);
    expect(() => checkRequest('local', { ...local, networks: ['isolated'] }, req())).toThrow(
      'provider local cannot give network mode outbound',
    );
    expect(() =>
      checkRequest('gke', { ...local, limits: ['cpus', 'memoryBytes'] }, req({ require_limits: true })),
    ).toThrow('provider gke cannot enforce pids, disk (--require-limits)');
    expect(() => checkRequest('gke', { ...local, limits: ['cpus'] }, req())).not.toThrow();
    expect(() => checkRequest('local', local, req())).not.toThrow();
  });

  it('cpu_always: satisfied as it is where background processes always run, or where it is the switch; refused where they never do', () => {
    expect(caps.backgroundWhileIdle).toBe('always');
    expect(() => checkRequest('local', caps, req({ cpu_always: true }))).not.toThrow();
    const cr = { ...caps, backgroundWhileIdle: 'cpu_always' as const };
    expect(() => checkRequest('cloud_run', cr, req({ cpu_always: true }))).not.toThrow();
    expect(() => checkRequest('cloud_run', cr, req())).not.toThrow();
    const never = { ...caps, backgroundWhileIdle: 'never' as const };
    expect(() => checkRequest('gke', never, req())).not.toThrow();
    expect(() => checkRequest('gke', never, req({ cpu_always: true }))).toThrow(
      'provider gke cannot keep CPU for a session between requests',
    );
    expect(runsInBackground(caps, req())).toBe(true);
    expect(runsInBackground(cr, req())).toBe(false);
    expect(runsInBackground(cr, req({ cpu_always: true }))).toBe(true);
    expect(runsInBackground(never, req({ cpu_always: true }))).toBe(false);
    expect(CLOUDRUN_CAPABILITIES).toMatchObject({ backgroundWhileIdle: 'cpu_always', persistentWorkspace: false });
    expect(LOCAL_CAPABILITIES.backgroundWhileIdle).toBe('always');
    expect(GKE_CAPABILITIES.backgroundWhileIdle).toBe('always');
  });

  it('createSession checks before the provider is asked to create', async () => {
    const p = new FakeProvider({ kind: 'local', capabilities: { storage: [] } });
    const registry = tableRegistry([{ kind: 'local', configured: () => ({ ok: true }), load: async () => p }], {});
    await expect(createSession(registry, req({ storage: { bucket: 'b-1' } }))).rejects.toMatchObject({
      code: 'unsupported',
      status: 422,
      exitCode: 2,
    });
    expect(p.calls).toEqual([]);
    p.dispose();
  });
});
