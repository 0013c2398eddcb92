/**
 * Local session records under the state directory. Safe with several onmemos processes at once:
 * - a session directory is made with mkdir (ids carry a random suffix), its record written by rename;
 * - removal first renames the directory into trash/ (atomic: exactly one remover wins), then cleans up.
 */
import {
  chmodSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { type Limits, type NetworkMode, randomSuffix, type Template } from '../../session/model.js';
import type { ProcRef } from './proc.js';

export interface LocalRecord {
  v: 2;
  id: string;
  namespace: string;
  user: string;
  template: Template;
  network: NetworkMode;
  created_at: string;
  expires_at: string;
  status: 'creating' | 'running';
  /** Host uid the session's processes run as. */
  host_uid: number;
  /** As root: the slot of host_uid in the uid range (released at removal). */
  uid_slot?: number;
  limits: Limits;
  /** Limits this machine could not enforce, each with the reason. */
  unapplied: string[];
  nested_userns: boolean;
  /** Where the session's cgroup is, in each hierarchy (absent: none). */
  cgroup_parent?: string;
  /**
   * creator: the onmemos process running the create (while the status is "creating"); launcher: the session's
   * lifeline on the host (bash); init: the sandbox's pid 1.
   */
  procs: { creator?: ProcRef; launcher?: ProcRef; init?: ProcRef };
}

/** `ONMEMOS_STATE_DIR`, else `$XDG_STATE_HOME/onmemos`, else `~/.local/state/onmemos`. */
export function stateDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.ONMEMOS_STATE_DIR) return env.ONMEMOS_STATE_DIR;
  const base = env.XDG_STATE_HOME || join(homedir(), '.local', 'state');
  return join(base, 'onmemos');
}

export class LocalStore {
  readonly sessionsDir: string;
  readonly trashDir: string;
  constructor(readonly root: string) {
    this.sessionsDir = join(root, 'local', 'sessions');
    this.trashDir = join(root, 'local', 'trash');
  }

  /** The state directories are root's alone (0700). */
  ensure(): void {
    if (this.ensured) return;
    for (const d of [this.root, join(this.root, 'local'), this.sessionsDir]) {
      mkdirSync(d, { recursive: true, mode: 0o700 });
      chmodSync(d, 0o700);
    }
    mkdirSync(this.trashDir, { recursive: true, mode: 0o700 });
    this.ensured = true;
  }
  private ensured = false;

  dir(id: string): string {
    return join(this.sessionsDir, id);
  }

  /** Makes the session directory; fails if it exists. */
  makeDir(id: string): string {
    this.ensure();
    const d = this.dir(id);
    mkdirSync(d, { mode: 0o700 });
    return d;
  }

  write(rec: LocalRecord): void {
    replaceFile(join(this.dir(rec.id), 'session.json'), JSON.stringify(rec, null, 2));
  }

  /** The record, if it is one this version of onmemos wrote (an older one is treated as abandoned). */
  read(id: string): LocalRecord | undefined {
    try {
      const rec = JSON.parse(readFileSync(join(this.dir(id), 'session.json'), 'utf8')) as LocalRecord;
      return rec.v === 2 ? rec : undefined;
    } catch {
      return undefined;
    }
  }

  ids(): string[] {
    try {
      return readdirSync(this.sessionsDir).filter((n) => n.startsWith('ws-'));
    } catch {
      return [];
    }
  }

  /** Age in ms of a session directory (for directories whose record never got written). */
  dirAgeMs(id: string): number {
    try {
      return Date.now() - statSync(this.dir(id)).mtimeMs;
    } catch {
      return 0;
    }
  }

  /**
   * Atomically takes a session away from everyone else: returns the trash path it now lives at, or undefined
   * if it was not there (already removed, or never existed).
   */
  claim(id: string): string | undefined {
    this.ensure();
    const to = join(this.trashDir, `${id}.${randomSuffix(8)}`);
    try {
      renameSync(this.dir(id), to);
      const now = new Date();
      utimesSync(to, now, now); // emptyTrash goes by age: this one is being worked on now
      return to;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  /** Ids claimed (by a removal still at work, or one that died) less than `ms` ago. */
  claimedWithin(ms: number): Set<string> {
    return claimedWithin(this.trashDir, ms);
  }

  readClaimed(path: string): LocalRecord | undefined {
    try {
      return JSON.parse(readFileSync(join(path, 'session.json'), 'utf8')) as LocalRecord;
    } catch {
      return undefined;
    }
  }

  /** Deletes leftovers in trash/ of removers that died half-way (older than a minute: not still at work). */
  emptyTrash(): void {
    let names: string[] = [];
    try {
      names = readdirSync(this.trashDir);
    } catch {
      return;
    }
    for (const n of names) {
      const p = join(this.trashDir, n);
      try {
        if (Date.now() - statSync(p).mtimeMs > 60_000) rmSync(p, { recursive: true, force: true });
      } catch {}
    }
  }
}

/** The ids with an entry in `trashDir` (`<id>.<suffix>`, see claim) younger than `ms`. */
export function claimedWithin(trashDir: string, ms: number): Set<string> {
  const out = new Set<string>();
  let names: string[] = [];
  try {
    names = readdirSync(trashDir);
  } catch {
    return out;
  }
  for (const n of names) {
    try {
      if (Date.now() - statSync(join(trashDir, n)).mtimeMs < ms) out.add(n.slice(0, n.lastIndexOf('.')));
    } catch {}
  }
  return out;
}

/** Writes `text` (0600) to `path` whole, by a rename: a reader sees the old content or the new, never a part. */
export function replaceFile(path: string, text: string): void {
  const tmp = `${path}.${process.pid}.${randomSuffix(6)}`;
  writeFileSync(tmp, text, { mode: 0o600 });
  renameSync(tmp, path);
}
