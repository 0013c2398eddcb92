import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { type LocalRecord, LocalStore, stateDir } from '../../src/providers/local/store.js';

describe('stateDir', () => {
  it('follows ONMEMOS_STATE_DIR, then XDG_STATE_HOME, then ~/.local/state', () => {
    expect(stateDir({ ONMEMOS_STATE_DIR: '/x', XDG_STATE_HOME: '/y' })).toBe('/x');
    expect(stateDir({ XDG_STATE_HOME: '/y' })).toBe('/y/onmemos');
    expect(stateDir({})).toBe(join(homedir(), '.local', 'state', 'onmemos'));
  });
});

const made: string[] = [];
const tempDir = () => {
  const d = mkdtempSync(join(tmpdir(), 'onmemos-store-'));
  made.push(d);
  return d;
};
afterAll(() => {
  for (const d of made) rmSync(d, { recursive: true, force: true });
});

describe('LocalStore', () => {
  const rec = (id: string) => ({ v: 2, id, status: 'running' }) as unknown as LocalRecord;

  it('keeps its directories private and records 0600', () => {
    const s = new LocalStore(join(tempDir(), 'state'));
    s.makeDir('ws-a-b-1-abcd');
    s.write(rec('ws-a-b-1-abcd'));
    for (const d of [s.root, s.sessionsDir, s.trashDir, s.dir('ws-a-b-1-abcd')]) {
      expect(statSync(d).mode & 0o777, d).toBe(0o700);
    }
    expect(statSync(join(s.dir('ws-a-b-1-abcd'), 'session.json')).mode & 0o777).toBe(0o600);
    expect(s.read('ws-a-b-1-abcd')).toMatchObject({ id: 'ws-a-b-1-abcd' });
  });

  it('lets exactly one of several claims win', () => {
    const s = new LocalStore(tempDir());
    s.makeDir('ws-a-b-1-abcd');
    s.write(rec('ws-a-b-1-abcd'));
    const claims = [s.claim('ws-a-b-1-abcd'), s.claim('ws-a-b-1-abcd'), s.claim('ws-a-b-1-abcd')];
    expect(claims.filter(Boolean)).toHaveLength(1);
    expect(s.readClaimed(claims[0]!)).toMatchObject({ id: 'ws-a-b-1-abcd' });
    expect(s.ids()).toEqual([]);
    expect(readdirSync(s.trashDir)).toHaveLength(1);
    s.emptyTrash(); // too fresh to be a leftover: kept for the remover still at work
    expect(readdirSync(s.trashDir)).toHaveLength(1);
  });
});
