import { describe, expect, it } from 'vitest';
import { duration, sessionDetails, sessionsTable } from '../../src/commands/format.js';
import type { Session } from '../../src/session/model.js';

describe('format', () => {
  it('formats durations', () => {
    expect(duration(0)).toBe('0s');
    expect(duration(59_000)).toBe('59s');
    expect(duration(90_000)).toBe('1m');
    expect(duration(3_600_000 * 2 + 60_000 * 5)).toBe('2h5m');
    expect(duration(3_600_000 * 72)).toBe('3d');
  });

  it('prints an aligned table with age and expiry', () => {
    const now = Date.parse('2026-01-01T01:00:00Z');
    const s = {
      id: 'ws-a-b-1-abcd',
      provider: 'local',
      namespace: 'a',
      user: 'b',
      status: 'running',
      created_at: '2026-01-01T00:00:00Z',
      expires_at: '2026-01-01T02:00:00Z',
    } as Session;
    const lines = sessionsTable([s, { ...s, id: 'ws-a-b-2-abcd', expires_at: '2026-01-01T00:30:00Z' }], now).split(
      '\n',
    );
    expect(lines[0]).toMatch(/^ID\s+PROVIDER\s+NAMESPACE\s+USER\s+STATUS\s+AGE\s+EXPIRES$/);
    expect(lines[1]).toMatch(/^ws-a-b-1-abcd\s+local\s+a\s+b\s+running\s+1h\s+in 1h$/);
    expect(lines[2]).toMatch(/expired$/);
    expect(lines[1]!.indexOf('local')).toBe(lines[0]!.indexOf('PROVIDER'));
  });
});

describe('sessionDetails', () => {
  it('shows limits as key=value pairs and lists joined', () => {
    const s = {
      id: 'ws-a-b-1-abcd',
      provider: 'local',
      namespace: 'a',
      user: 'b',
      status: 'running',
      template: 'python',
      created_at: '2026-01-01T00:00:00Z',
      expires_at: '2026-01-01T02:00:00Z',
      ssh: false,
      details: { limits: { cpu: 2, memory: '2g', pids: 1024, disk: '10g' }, limits_not_enforced: ['x: y', 'z'] },
    } as unknown as Session;
    const text = sessionDetails(s, Date.parse('2026-01-01T01:00:00Z'));
    expect(text).toMatch(/^limits:\s+cpu=2 memory=2g pids=1024 disk=10g$/m);
    expect(text).toMatch(/^limits_not_enforced:\s+x: y; z$/m);
  });
});
