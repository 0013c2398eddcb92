/**
 * What this machine and this user let the local provider do, and the per-session host uids it hands out when
 * run as root. Nothing here runs a session; it decides how one is run.
 */
import { chmodSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { UnavailableError } from '../../errors.js';

/**
 * As root, each session's processes run as a host uid of their own, so per-uid kernel limits (inotify
 * instances, user namespaces, RLIMIT_NPROC) are not shared between sessions. The default range sits at the top
 * of systemd's range for containers (524288–1879048191), away from /etc/subuid's usual 100000+ allocations.
 */
export const DEFAULT_UID_BASE = 0x6fff0000;
export const UID_SLOTS = 65536;

export function uidBase(env: NodeJS.ProcessEnv): number {
  const raw = env.ONMEMOS_SANDBOX_UID;
  if (raw === undefined || raw === '') return DEFAULT_UID_BASE;
  const uid = Number(raw);
  if (!/^\d+$/.test(raw) || uid < 1000 || uid + UID_SLOTS > 0xfffffffe) {
    throw new UnavailableError(
      `ONMEMOS_SANDBOX_UID=${raw} is not a usable first uid (a whole number from 1000 to ${0xfffffffe - UID_SLOTS})`,
    );
  }
  return uid;
}

/**
 * Where root's onmemos processes claim uids: one place per machine (every state directory shares the range), in
 * /run so it starts empty with the machine, as the sessions do.
 */
export const UID_SLOTS_DIR = '/run/onmemos/uids';

/**
 * Slots are directories under `dir` made with mkdir (atomic): several onmemos processes never share one. Each
 * names its session's directory, so any onmemos can tell a slot whose session is gone.
 */
export class UidSlots {
  constructor(
    private readonly dir: string,
    private readonly base: number,
  ) {}

  claim(sessionDir: string): { slot: number; uid: number } {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    chmodSync(this.dir, 0o700);
    const start = Math.floor(Math.random() * UID_SLOTS);
    for (let i = 0; i < 4096; i++) {
      const slot = (start + i) % UID_SLOTS;
      try {
        mkdirSync(join(this.dir, String(slot)), { mode: 0o700 });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EEXIST') continue;
        throw e;
      }
      writeFileSync(join(this.dir, String(slot), 'session'), sessionDir, { mode: 0o600 });
      return { slot, uid: this.base + slot };
    }
    throw new UnavailableError('no free host uid for another session (too many sessions on this machine)');
  }

  release(slot: number): void {
    rmSync(this.path(slot), { recursive: true, force: true });
  }

  /** The slot's directory: it is free once this is gone. */
  path(slot: number): string {
    return join(this.dir, String(slot));
  }

  uid(slot: number): number {
    return this.base + slot;
  }

  /** slot → session directory, for the reaper. */
  list(): Map<number, string> {
    const out = new Map<number, string>();
    let names: string[] = [];
    try {
      names = readdirSync(this.dir);
    } catch {
      return out;
    }
    for (const n of names) {
      if (!/^\d+$/.test(n)) continue;
      let id = '';
      try {
        id = readFileSync(join(this.dir, n, 'session'), 'utf8');
      } catch {}
      out.set(Number(n), id);
    }
    return out;
  }

  ageMs(slot: number): number {
    try {
      return Date.now() - statSync(join(this.dir, String(slot))).mtimeMs;
    } catch {
      return 0;
    }
  }
}

/** slirp4netns opens /dev/net/tun as the session's unprivileged uid: standard systems make it crw-rw-rw-. */
export function tunOpenToAll(): boolean {
  try {
    return (statSync('/dev/net/tun').mode & 0o006) === 0o006;
  } catch {
    return false;
  }
}
