import { describe, expect, it } from 'vitest';
import { UserError } from '../../src/errors.js';
import { execSpecFromQuery } from '../../src/exec/server.js';
import {
  bucketNameFor,
  chooseProvider,
  isExpired,
  MAX_ARG_BYTES,
  MAX_ENV_TOTAL_BYTES,
  newSessionId,
  normalizeCreateRequest,
  parseCreateRequest,
  parseEnvAssignment,
  sessionEnvironment,
  validateName,
  validateSessionId,
  validateTtl,
} from '../../src/session/model.js';

describe('session model', () => {
  it('accepts DNS labels and rejects everything else', () => {
    expect(validateName('namespace', 'team-a')).toBe('team-a');
    expect(validateName('user', 'a')).toBe('a');
    for (const bad of ['', 'Team', 'a_b', '-a', 'a-', 'a.b', 'x'.repeat(64), 'a b', '../x', 'é']) {
      expect(() => validateName('namespace', bad), bad).toThrow(UserError);
    }
  });

  it('parses K=V with = in the value and rejects bad keys', () => {
    expect(parseEnvAssignment('A=b=c')).toEqual(['A', 'b=c']);
    expect(parseEnvAssignment('_X1=')).toEqual(['_X1', '']);
    for (const bad of ['A', '=x', '1A=x', 'A-B=x', 'A B=x'])
      expect(() => parseEnvAssignment(bad), bad).toThrow(UserError);
  });

  it('limits environment strings to what exec accepts: 128 KiB - 1 each, 256 KiB in all', () => {
    expect(MAX_ARG_BYTES).toBe(131071);
    expect(MAX_ENV_TOTAL_BYTES).toBe(262144);
    const fits = `A=${'x'.repeat(MAX_ARG_BYTES - 2)}`;
    expect(parseEnvAssignment(fits)[1]).toHaveLength(MAX_ARG_BYTES - 2);
    expect(() => parseEnvAssignment(`${fits}x`)).toThrow(/A is 131072 bytes: KEY=VALUE may be at most 131071 bytes/);
    // Bytes, not characters: "é" is two.
    expect(() => parseEnvAssignment(`A=${'é'.repeat(65535)}`)).toThrow(UserError);
    const half = 'x'.repeat(100_000);
    expect(normalizeCreateRequest({ env: { A: half, B: half } }).env.B).toBe(half);
    expect(() => normalizeCreateRequest({ env: { A: half, B: half, C: half } })).toThrow(
      /environment is 300009 bytes in all: at most 262144 bytes/,
    );
    expect(() => normalizeCreateRequest({ env: { BIG: 'x'.repeat(200_000) } })).toThrow(/BIG is 200004 bytes/);
    // The exec WebSocket's env= and argv obey the same limits.
    const q = (pairs: [string, string][]) => execSpecFromQuery(new URLSearchParams(pairs));
    expect(
      q([
        ['command', 'true'],
        ['env', `A=${half}`],
        ['env', `B=${half}`],
      ]).env,
    ).toMatchObject({ A: half });
    expect(() =>
      q([
        ['command', 'true'],
        ['env', `A=${half}`],
        ['env', `B=${half}`],
        ['env', `C=${half}`],
      ]),
    ).toThrow(/in all/);
    expect(() => q([['command', 'x'.repeat(MAX_ARG_BYTES + 1)]])).toThrow(/a command argument is 131072 bytes/);
  });

  it('makes ids in the document shape, distinct within one second (almost always), that validate', () => {
    const now = 1756062811000;
    const ids = new Set(Array.from({ length: 200 }, () => newSessionId('team-a', 'alice', now)));
    // 36^4 suffixes: 200 ids share one about once in 80 runs (a create that meets a clash draws again, on mkdir's
    // EEXIST); five clashes at once would take a broken generator.
    expect(ids.size).toBeGreaterThanOrEqual(195);
    for (const id of ids) {
      expect(id).toMatch(/^ws-team-a-alice-1756062811-[0-9a-z]{4}$/);
      expect(validateSessionId(id)).toBe(id);
    }
    for (const bad of ['ws-', 'x', 'ws-../../etc', 'ws-a/b', 'WS-a-b-1', 'ws-a-b-1-']) {
      expect(() => validateSessionId(bad), bad).toThrow(UserError);
    }
  });

  it('gives the document environment variables', () => {
    const env = sessionEnvironment({ id: 'ws-team-a-alice-1756062811-ab12', namespace: 'team-a', user: 'alice' });
    expect(env).toEqual({
      WORKSPACE_ID: 'ws-team-a-alice-1756062811-ab12',
      NAMESPACE: 'team-a',
      USER: 'alice',
      BUCKET_NAME: 'onmemos-team-a-alice-1756062811-ab12',
    });
    expect(bucketNameFor('ws-a-b-1')).toBe('onmemos-a-b-1');
  });

  it('applies the document defaults and validates the TTL', () => {
    const r = normalizeCreateRequest({});
    expect(r).toMatchObject({ provider: 'auto', template: 'python', ttl_minutes: 60, network: 'outbound' });
    expect(() => normalizeCreateRequest({ ttl_minutes: 0 })).toThrow(UserError);
    expect(() => normalizeCreateRequest({ template: 'java' as never })).toThrow(/template/);
    expect(() => normalizeCreateRequest({ provider: 'aws' as never })).toThrow(/provider/);
    expect(() => validateTtl(Number.NaN)).toThrow(UserError);
    expect(validateTtl(0.05)).toBe(0.05);
    expect(isExpired({ expires_at: new Date(1000).toISOString() }, 2000)).toBe(true);
    expect(isExpired({ expires_at: new Date(3000).toISOString() }, 2000)).toBe(false);
  });

  it('cpu_always: a boolean, false by default, as long_lived; anything else is a bad request', () => {
    expect(parseCreateRequest({}).cpu_always).toBe(false);
    expect(parseCreateRequest({ cpu_always: null }).cpu_always).toBe(false);
    expect(parseCreateRequest({ cpu_always: true }).cpu_always).toBe(true);
    expect(parseCreateRequest({ cpu_always: false, long_lived: true })).toMatchObject({
      cpu_always: false,
      long_lived: true,
    });
    for (const bad of ['true', 1, {}, []]) {
      expect(() => parseCreateRequest({ cpu_always: bad })).toThrow(
        expect.objectContaining({ code: 'bad_request', message: '"cpu_always" must be a boolean' }),
      );
    }
    expect(normalizeCreateRequest({ cpu_always: true }).cpu_always).toBe(true);
  });
});

describe('chooseProvider (the document rule for auto)', () => {
  const auto = { provider: 'auto' as const, needs_ssh: false, long_lived: false };
  it('picks workstations for ssh or long expected durations, gke for long-lived, else cloud_run', () => {
    expect(chooseProvider({ ...auto, needs_ssh: true }).provider).toBe('workstations');
    expect(chooseProvider({ ...auto, expected_duration_minutes: 61 }).provider).toBe('workstations');
    expect(chooseProvider({ ...auto, expected_duration_minutes: 60 }).provider).toBe('cloud_run');
    expect(chooseProvider({ ...auto, long_lived: true }).provider).toBe('gke');
    expect(chooseProvider({ ...auto, long_lived: true, expected_duration_minutes: 480 }).provider).toBe('workstations');
    expect(chooseProvider(auto)).toEqual({ provider: 'cloud_run', reason: 'short-lived by default' });
    expect(chooseProvider({ ...auto, provider: 'gke' })).toEqual({ provider: 'gke', reason: 'requested' });
  });
});
