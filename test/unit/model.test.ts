import { describe, expect, it } from 'vitest';
import { UserError } from '../../src/errors.js';
import {
  bucketNameFor,
  chooseProvider,
  isExpired,
  newSessionId,
  normalizeCreateRequest,
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

  it('makes ids in the document shape, unique within one second, that validate', () => {
    const now = 1756062811000;
    const ids = new Set(Array.from({ length: 200 }, () => newSessionId('team-a', 'alice', now)));
    expect(ids.size).toBe(200);
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
