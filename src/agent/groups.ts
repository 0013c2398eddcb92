/**
 * Exec groups for the agent: each command gets a cgroup of its own below the session's delegated one, so a
 * timeout, a Ctrl-C or a client that goes away kills everything the command started — also what left its
 * process group (setsid) or was reparented (a double fork) — without racing its forks.
 */
import { readFileSync } from 'node:fs';
import { type CgroupSystem, ExecGroups } from '../providers/local/cgroups.js';
import type { ExecGroup } from './spawn.js';

/** The session's cgroups as the agent sees them (the delegated group bound at /sys/fs/cgroup[/controller]). */
export type InsideCgroups = CgroupSystem;

export function cgroupExecGroups(sys: InsideCgroups): (id: string) => ExecGroup {
  const groups = new ExecGroups(sys);
  /** Groups whose command ended while something it started still ran: removed once empty. */
  const lingering = new Set<string>();
  const sweep = () => {
    for (const id of lingering) {
      try {
        groups.remove(id);
        lingering.delete(id);
      } catch {}
    }
  };
  return (id) => {
    sweep();
    const procsFiles = groups.create(id);
    const members = () => {
      const pids = new Set<number>();
      for (const f of procsFiles) {
        try {
          for (const line of readFileSync(f, 'utf8').split('\n')) if (line) pids.add(Number(line));
        } catch {}
      }
      return [...pids];
    };
    return {
      procsFiles,
      signal(signal) {
        if (signal === 'SIGKILL') return groups.kill(id);
        for (const pid of members()) {
          try {
            process.kill(pid, signal);
          } catch {}
        }
      },
      release() {
        try {
          groups.remove(id);
        } catch {
          lingering.add(id);
        }
      },
    };
  };
}
