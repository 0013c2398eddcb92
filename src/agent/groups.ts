/**
 * Exec groups for the agent: each command gets a cgroup of its own below the session's delegated one, so a
 * timeout, a Ctrl-C or a client that goes away kills everything the command started — also what left its
 * process group (setsid) or was reparented (a double fork) — without racing its forks.
 */
import { readFileSync, rmdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { type CgroupSystem, ExecGroups } from '../providers/local/cgroups.js';
import type { ExecGroup } from './spawn.js';

/** The session's cgroups as the agent sees them (the delegated group bound at /sys/fs/cgroup[/controller]). */
export type InsideCgroups = CgroupSystem;

export function cgroupExecGroups(sys: InsideCgroups): (id: string) => ExecGroup {
  const groups = new ExecGroups(sys);
  /**
   * Groups whose command ended while something it started still ran (or whose last process was still exiting):
   * removed once empty. One rmdir each, never a wait: the agent's event loop carries every other command.
   */
  const lingering = new Map<string, string[]>();
  const tryRemove = (id: string, dirs: string[]) => {
    for (const dir of dirs) {
      try {
        rmdirSync(dir);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
          lingering.set(id, dirs);
          return;
        }
      }
    }
    lingering.delete(id);
  };
  const sweep = () => {
    for (const [id, dirs] of [...lingering]) tryRemove(id, dirs);
  };
  return (id) => {
    sweep();
    const joinFiles = groups.create(id);
    const members = () => {
      const pids = new Set<number>();
      for (const f of joinFiles) {
        try {
          for (const line of readFileSync(join(dirname(f), 'cgroup.procs'), 'utf8').split('\n')) {
            if (line) pids.add(Number(line));
          }
        } catch {}
      }
      return [...pids];
    };
    return {
      joinFiles,
      signal(signal) {
        if (signal === 'SIGKILL') return groups.kill(id);
        for (const pid of members()) {
          try {
            process.kill(pid, signal);
          } catch {}
        }
      },
      release() {
        tryRemove(
          id,
          joinFiles.map((f) => dirname(f)),
        );
      },
    };
  };
}
