/**
 * killTree (src/providers/local/proc.ts): what removing a session without cgroups relies on to leave no process.
 * A process that left the tree (its parent exited: it now belongs to pid 1) but stayed in the launcher's process
 * group is out of a tree walk's reach; the group kill takes it, as it takes one forked between a scan and a kill.
 */
import { spawn } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { killTree, processTable } from '../../src/providers/local/proc.js';

const inGroup = (pgid: number) => processTable().filter((p) => p.pgrp === pgid);
const started: number[] = [];
afterEach(() => {
  for (const pgid of started.splice(0)) {
    try {
      process.kill(-pgid, 'SIGKILL');
    } catch {}
  }
});

/** A session leader (as the launcher is) whose subshell left `sleep 1001` behind, orphaned, in its group. */
async function leaderWithOrphan(): Promise<number> {
  const child = spawn('/bin/bash', ['-c', '(/bin/sleep 1001 &); exec /bin/sleep 1000'], {
    detached: true,
    stdio: 'ignore',
  });
  const pid = child.pid!;
  started.push(pid);
  child.unref();
  for (let i = 0; i < 200 && inGroup(pid).length < 2; i++) await new Promise((r) => setTimeout(r, 10));
  expect(inGroup(pid)).toHaveLength(2);
  // The orphan is no descendant of the leader any more.
  expect(inGroup(pid).filter((p) => p.pid !== pid)[0]!.ppid).not.toBe(pid);
  return pid;
}

const gone = async (pgid: number) => {
  for (let i = 0; i < 200 && inGroup(pgid).length > 0; i++) await new Promise((r) => setTimeout(r, 10));
  return inGroup(pgid);
};

describe('killTree', () => {
  it('with group: the leader, its tree and what left the tree in its group are all killed', async () => {
    const pid = await leaderWithOrphan();
    killTree(pid, { includeRoot: true, group: true });
    expect(await gone(pid)).toEqual([]);
  });

  it('a tree walk alone misses the orphan (why the launcher is killed with its group)', async () => {
    const pid = await leaderWithOrphan();
    killTree(pid, { includeRoot: true });
    const left = await gone(pid);
    expect(left).toHaveLength(1);
    expect(left[0]!.pid).not.toBe(pid);
  });
});
