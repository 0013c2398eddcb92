/**
 * Per-session and per-exec cgroups for the local sandbox, on cgroup v1 (one hierarchy per controller, as on
 * hybrid hosts) and on cgroup v2 (one hierarchy).
 *
 * Layout under `<parent>`, in every hierarchy used:
 *   <parent>/<name>                 the limits; owned by the creator, so the session cannot raise them
 *   <parent>/<name>/sandbox         every process of the session; delegated (chowned) to the session's uid
 *   <parent>/<name>/sandbox/<exec>  made by the agent inside, only to kill one command with all it started
 * v2 lets no group both hold processes and hand controllers to its children: `<name>` holds the limits and no
 * processes, `sandbox` holds processes and children without controllers (the limits bound the whole subtree).
 * v1 limits bound the subtree too, memory included: memory.use_hierarchy is always 1 on current kernels. On an
 * old kernel where it is 0, `<name>`'s memory limit would not bound `sandbox`; that case is not handled.
 *
 * Paths handed in and out (`parent`) are relative to each hierarchy's mount point. Names are checked before a
 * path is built from them. Every loop and wait is bounded; waits are short synchronous sleeps, since all this
 * touches is a handful of small control files.
 */
import {
  accessSync,
  chownSync,
  closeSync,
  constants,
  type Dirent,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  statSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { ProviderError, UnavailableError, UserError } from '../../errors.js';
import { loadFdPass } from '../../native/fdpass.js';
import { trySignal } from './proc.js';
import { REMOVER } from './remover.js';

export interface Limits {
  /** Fractional cores, at least 0.01 (the kernel's smallest quota is 1 ms per 100 ms period). */
  cpus?: number;
  memoryBytes?: number;
  pids?: number;
}

export type V1Controller = 'pids' | 'memory' | 'cpu' | 'freezer';
export type CgroupSystem =
  | { version: 1; mounts: Partial<Record<V1Controller, string>> }
  /** root: the mount's root within the hierarchy (mountinfo field 4): '/' unless a subtree was mounted. */
  | { version: 2; mount: string; root?: string };

/** One hierarchy's directory for a group; controller null is the v2 hierarchy. */
interface Group {
  controller: V1Controller | null;
  dir: string;
}

const V1_CONTROLLERS: readonly V1Controller[] = ['pids', 'memory', 'cpu', 'freezer'];
const V2_CONTROLLERS = ['pids', 'memory', 'cpu'] as const;
const CPU_PERIOD_US = 100_000;
const SANDBOX = 'sandbox';
/** The files a delegated group's owner must be able to write (systemd's Delegate= does the same for v2). */
const DELEGATED_FILES = {
  1: ['cgroup.procs', 'tasks'],
  2: ['cgroup.procs', 'cgroup.subtree_control', 'cgroup.threads'],
};

/** The shape newSessionId makes: ws-<namespace>-<user>-<seconds>-<suffix>. */
const SESSION_NAME = /^ws-[a-z0-9-]{1,200}$/;
const EXEC_ID = /^[a-z0-9][a-z0-9-]{0,62}$/;
/** One segment of a parent path; systemd's unit names bring '@', '.', ':' and '\x2d'-style escapes. */
const PARENT_SEGMENT = /^[A-Za-z0-9_.@:\\-]{1,255}$/;

/**
 * The file in a group's directory that a process writes `0` into to join it (joinFile). On v1 it is `tasks`:
 * writing 0 there moves the writing thread alone, which the kernel does without taking the global threadgroup lock;
 * taking that lock waits for an RCU grace period (10-25 ms here), which every `cgroup.procs` write pays. For a
 * single-threaded process (sh, bash: every joiner here) the thread is the process, and what it forks inherits
 * the group. v2 moves threads only within a threaded subtree, so it joins through `cgroup.procs`.
 */
function joinFile(g: Group, dir = g.dir): string {
  return join(dir, g.controller ? 'tasks' : 'cgroup.procs');
}

const MAX_DIRS = 10_000;
const MAX_DEPTH = 32;
const KILL_ROUNDS = 10;

// ---------------------------------------------------------------------------------------------------------------
// Detection and placement

/**
 * The cgroup hierarchies this process sees, from /proc/self/mountinfo. v1 wins when any of the four v1
 * controllers used here is mounted: a controller lives in one hierarchy at a time, so on a hybrid host the
 * cgroup2 mount next to them only tracks processes. undefined when no cgroup filesystem is mounted.
 */
export function detectCgroups(mountinfoPath = '/proc/self/mountinfo'): CgroupSystem | undefined {
  let text: string;
  try {
    text = readFileSync(mountinfoPath, 'utf8');
  } catch {
    return undefined;
  }
  const mounts: Partial<Record<V1Controller, string>> = {};
  let v2: { mount: string; root: string } | undefined;
  for (const line of text.split('\n')) {
    // "<id> <parent> <maj:min> <root> <mount point> <options> [optional fields...] - <fstype> <source> <super options>"
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const before = line.slice(0, sep).split(' ');
    const [fstype, , superOptions = ''] = line.slice(sep + 3).split(' ');
    const root = unescapeMountinfo(before[3] ?? '/');
    const mountPoint = unescapeMountinfo(before[4] ?? '');
    if (!mountPoint.startsWith('/')) continue;
    if (fstype === 'cgroup2') {
      if (!v2 || mountPoint === '/sys/fs/cgroup') v2 = { mount: mountPoint, root };
    } else if (fstype === 'cgroup') {
      for (const opt of superOptions.split(',')) {
        const c = V1_CONTROLLERS.find((k) => k === opt);
        if (c && mounts[c] === undefined) mounts[c] = mountPoint;
      }
    }
  }
  if (Object.keys(mounts).length > 0) return { version: 1, mounts };
  return v2 ? { version: 2, mount: v2.mount, root: v2.root } : undefined;
}

/** mountinfo writes space, tab, newline and backslash as \ooo. */
function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(Number.parseInt(oct, 8)));
}

/**
 * Where session groups go, relative to each hierarchy's mount point: ONMEMOS_CGROUP_PARENT when set (it must
 * exist and be writable, else UnavailableError); '/onmemos' as root; as another user on v2, '/onmemos' below
 * the nearest ancestor of our own group that this uid owns (a systemd user manager's delegated subtree).
 */
export function sessionParent(
  sys: CgroupSystem,
  env: NodeJS.ProcessEnv,
  uid: number,
  procSelfCgroup = '/proc/self/cgroup',
): { path: string } | { unavailable: string } {
  const mounts = sys.version === 2 ? [sys.mount] : Object.values(sys.mounts);
  const override = env['ONMEMOS_CGROUP_PARENT'];
  if (override) {
    let path: string;
    try {
      path = checkParent(override);
    } catch {
      throw new UnavailableError(`ONMEMOS_CGROUP_PARENT=${override} is not an absolute cgroup path of plain names`);
    }
    for (const m of mounts) {
      const dir = join(m, path);
      if (!isDir(dir)) throw new UnavailableError(`ONMEMOS_CGROUP_PARENT=${path}: ${dir} does not exist`);
      if (!writableBy(dir, uid))
        throw new UnavailableError(`ONMEMOS_CGROUP_PARENT=${path}: ${dir} is not writable by uid ${uid}`);
    }
    return { path };
  }
  if (uid === 0) return makeParent(mounts, '/onmemos', uid);
  if (sys.version === 1) {
    return {
      unavailable: 'cgroup v1 cannot be delegated to an unprivileged user: run as root, or on a cgroup v2 system',
    };
  }
  const own = ownCgroupV2(procSelfCgroup, sys.root ?? '/');
  if (own === undefined)
    return { unavailable: `${procSelfCgroup} names no cgroup v2 group of ours under ${sys.mount}` };
  const segments = own.split('/').filter(Boolean);
  // Start above our own group: it holds this process, and v2 lets a group with processes pass no controllers down.
  for (let n = segments.length - 1; n > 0; n--) {
    const rel = '/' + segments.slice(0, n).join('/');
    const dir = join(sys.mount, rel);
    if (ownedWritable(dir, uid) && ownedWritable(join(dir, 'cgroup.procs'), uid)) {
      return makeParent([sys.mount], `${rel}/onmemos`, uid);
    }
  }
  return {
    unavailable:
      `no ancestor of our cgroup ${own} is delegated to uid ${uid}; ` +
      'run onmemos in a systemd user scope (systemd-run --user --scope onmemos ...)',
  };
}

/** Our v2 group from /proc/self/cgroup ("0::/path"), relative to the mount of the hierarchy at `root`. */
function ownCgroupV2(procSelfCgroup: string, root: string): string | undefined {
  const line = readControl(procSelfCgroup)
    ?.split('\n')
    .find((l) => l.startsWith('0::'));
  if (!line) return undefined;
  const path = line.slice(3);
  if (root === '/') return path;
  if (path === root) return '/';
  return path.startsWith(root + '/') ? path.slice(root.length) : undefined;
}

function makeParent(mounts: string[], rel: string, uid: number): { path: string } | { unavailable: string } {
  const failures: string[] = [];
  for (const m of mounts) {
    const dir = join(m, rel);
    try {
      mkdirSync(dir, { mode: 0o755 });
    } catch (e) {
      if (errCode(e) !== 'EEXIST') {
        failures.push(`could not create ${dir}: ${errCode(e)}`);
        continue;
      }
    }
    if (!writableBy(dir, uid)) failures.push(`${dir} is not writable by uid ${uid}`);
  }
  // A hierarchy that failed here is reported by SessionGroup.create as the limits it could not apply.
  if (failures.length === mounts.length) return { unavailable: failures[0] ?? 'no cgroup hierarchy is mounted' };
  return { path: rel };
}

/**
 * `<parent>/<segment>` in every hierarchy (made 0755 where absent): a level of its own below a parent, e.g. one
 * per state directory. undefined when it could be made in none.
 */
export function makeChildParent(sys: CgroupSystem, parent: string, segment: string): string | undefined {
  const rel = checkParent(`${checkParent(parent)}/${segment}`);
  const mounts = sys.version === 2 ? [sys.mount] : Object.values(sys.mounts);
  let made = 0;
  for (const m of mounts) {
    try {
      mkdirIfAbsent(join(m, rel));
      made++;
    } catch {}
  }
  return made > 0 ? rel : undefined;
}

// ---------------------------------------------------------------------------------------------------------------
// Session groups

export class SessionGroup {
  readonly unapplied: string[];

  private constructor(
    readonly sys: CgroupSystem,
    readonly parent: string,
    readonly name: string,
    /** `<parent>/<name>` in each hierarchy where it exists. */
    private readonly groups: Group[],
    unapplied: string[],
  ) {
    this.unapplied = unapplied;
  }

  /**
   * Makes `<parent>/<name>` and its `sandbox` in every hierarchy available, applies the limits and delegates
   * `sandbox` to `opts.delegateTo`. A limit that cannot be applied is listed in `unapplied`; a group that
   * already exists (a create retried after a crash) is reused.
   */
  static create(
    sys: CgroupSystem,
    parent: string,
    name: string,
    limits: Limits,
    opts: { delegateTo?: number } = {},
  ): SessionGroup {
    parent = checkParent(parent);
    checkSessionName(name);
    checkLimits(limits);
    const unapplied: string[] = [];
    const wanted = requestedControllers(limits);
    // A parent made here (say one per state directory) may be removed when it empties; make it again if so.
    for (const g of hierarchies(sys)) {
      try {
        mkdirSync(join(g.dir, parent), { recursive: true, mode: 0o755 });
      } catch {}
    }
    let enabled = new Set<string>(V2_CONTROLLERS);
    if (sys.version === 1) {
      for (const c of wanted) if (!sys.mounts[c]) unapplied.push(`${c}: the ${c} controller is not mounted`);
      if (!sys.mounts.freezer) {
        unapplied.push(
          sys.mounts.pids
            ? 'freezer: the freezer controller is not mounted (kills stop forks with pids.max instead)'
            : 'freezer: neither the freezer nor the pids controller is mounted, so a kill can race with forks',
        );
      }
    } else {
      enabled = enableV2Controllers(sys.mount, parent, wanted, unapplied);
    }

    const made: Group[] = [];
    try {
      for (const g of hierarchies(sys)) {
        const dir = join(g.dir, parent, name);
        try {
          mkdirRetrying(dir);
          mkdirIfAbsent(join(dir, SANDBOX));
        } catch (e) {
          unapplied.push(`${g.controller ?? 'cgroup2'}: could not create ${dir}: ${errCode(e)}`);
          rmdirQuiet(dir);
          continue;
        }
        made.push({ controller: g.controller, dir });
      }
      if (made.length === 0) {
        throw new UnavailableError(`could not create the cgroup for ${name}: ${unapplied.join('; ')}`);
      }
      const group = new SessionGroup(sys, parent, name, made, unapplied);
      group.applyLimits(limits, enabled);
      if (opts.delegateTo !== undefined) group.delegate(opts.delegateTo);
      return group;
    } catch (e) {
      for (const g of made) {
        rmdirQuiet(join(g.dir, SANDBOX));
        rmdirQuiet(g.dir);
      }
      throw e;
    }
  }

  /** The group another process made; hierarchies where it is gone are left out (removing it again is a no-op). */
  static open(sys: CgroupSystem, parent: string, name: string): SessionGroup {
    parent = checkParent(parent);
    checkSessionName(name);
    const groups = hierarchies(sys)
      .map((g) => ({ controller: g.controller, dir: join(g.dir, parent, name) }))
      .filter((g) => isDir(g.dir));
    return new SessionGroup(sys, parent, name, groups, []);
  }

  /** The session names with a group under `parent` in any hierarchy. */
  static list(sys: CgroupSystem, parent: string): string[] {
    parent = checkParent(parent);
    const names = new Set<string>();
    for (const g of hierarchies(sys)) {
      let entries: Dirent[] = [];
      try {
        entries = readdirSync(join(g.dir, parent), { withFileTypes: true });
      } catch {
        continue;
      }
      for (const e of entries) if (e.isDirectory() && isSessionName(e.name)) names.add(e.name);
    }
    return [...names].sort();
  }

  /** The files a single-threaded process writes `0` into to join `sandbox`, one per hierarchy (joinFile). */
  joinFiles(): string[] {
    return this.groups.map((g) => joinFile(g, join(g.dir, SANDBOX)));
  }

  /** The `sandbox` directories, to bind at /sys/fs/cgroup/<controller> (v1) or /sys/fs/cgroup (v2) inside. */
  sandboxDirs(): { controller: string | null; dir: string }[] {
    return this.groups.map((g) => ({ controller: g.controller, dir: join(g.dir, SANDBOX) }));
  }

  /** Every process in the subtree, in any hierarchy (host pids). */
  pids(): number[] {
    return listPids(this.groups);
  }

  /**
   * SIGKILLs everything in the subtree without racing forks; returns once it is empty or after bounded rounds.
   * With `wait: false` it returns as soon as every process there has its SIGKILL (the subtree was frozen, or
   * v2's cgroup.kill did it), without waiting for them to exit: removeInBackground then waits for that.
   */
  kill(opts: { wait?: boolean } = {}): void {
    killGroups(this.groups, opts.wait ?? true);
  }

  /**
   * The removal of a killed group, handed to a detached process (bash, as this uid) so that the caller need not
   * wait for the killed processes to exit (tens of ms: the kernel tears down their namespaces first). Once the
   * subtree holds no process it is removed (deepest first), then `parents` if empty, then `after` (paths removed
   * with rm -rf: a host uid slot, say, which is free only once no process of the session is left). Bounded (a minute);
   * whatever is still there then is the reaper's. Started with the native module's posix_spawn (node's
   * child_process would cost `onmemos rm` ~4 ms to load); returns false if it could not be started (no module:
   * the caller then removes the group itself, waiting).
   */
  removeInBackground(parents: string[], after: string[]): boolean {
    const spawnDetached = loadFdPass()?.spawnDetached;
    if (!spawnDetached) return false;
    const dirs = this.groups.map((g) => g.dir);
    const args = [String(dirs.length), ...dirs, String(parents.length), ...parents, ...after];
    try {
      spawnDetached(
        '/bin/bash',
        ['/bin/bash', '--norc', '--noprofile', '-c', REMOVER, 'onmemos-cgroup-remover', ...args],
        ['PATH=/usr/sbin:/usr/bin:/sbin:/bin'],
        [],
      );
      return true;
    } catch {
      return false;
    }
  }

  /** `<parent>` in every hierarchy where this group is, for removeInBackground. */
  parentDirs(): string[] {
    return this.groups.map((g) => join(g.dir, '..'));
  }

  /** Removes the subtree now if it holds no process (no waiting); true if it is gone. */
  tryRemove(): boolean {
    try {
      for (const g of this.groups) rmdirTree(g.dir, 0);
      return true;
    } catch {
      return false;
    }
  }

  /** Kills, then removes the subtree in every hierarchy, deepest first. Idempotent. */
  remove(): void {
    this.kill();
    for (const g of this.groups) rmdirTree(g.dir);
  }

  usage(): { memoryBytes?: number; pids?: number; cpuUsec?: number } {
    const out: { memoryBytes?: number; pids?: number; cpuUsec?: number } = {};
    const num = (file: string): number | undefined => {
      const n = Number.parseInt(readControl(file) ?? '', 10);
      return Number.isFinite(n) ? n : undefined;
    };
    for (const g of this.groups) {
      if (g.controller === null) {
        out.memoryBytes = num(join(g.dir, 'memory.current'));
        out.pids = num(join(g.dir, 'pids.current'));
        const usec = /^usage_usec (\d+)$/m.exec(readControl(join(g.dir, 'cpu.stat')) ?? '')?.[1];
        if (usec !== undefined) out.cpuUsec = Number(usec);
      } else if (g.controller === 'memory') {
        out.memoryBytes = num(join(g.dir, 'memory.usage_in_bytes'));
      } else if (g.controller === 'pids') {
        out.pids = num(join(g.dir, 'pids.current'));
      } else if (g.controller === 'cpu') {
        // cpuacct.usage (ns) is here only where cpuacct is mounted together with cpu ("cpu,cpuacct").
        const ns = num(join(g.dir, 'cpuacct.usage'));
        if (ns !== undefined) out.cpuUsec = Math.round(ns / 1000);
      }
    }
    return out;
  }

  private applyLimits(limits: Limits, enabled: Set<string>): void {
    const write = (file: string, value: string, label: string): boolean => {
      try {
        writeControl(file, value);
        return true;
      } catch (e) {
        this.unapplied.push(`${label}: could not write ${value} to ${file}: ${errCode(e)}`);
        return false;
      }
    };
    const quota = limits.cpus === undefined ? undefined : Math.round(limits.cpus * CPU_PERIOD_US);
    for (const g of this.groups) {
      const f = (name: string) => join(g.dir, name);
      if (g.controller === null) {
        if (limits.pids !== undefined && enabled.has('pids')) write(f('pids.max'), String(limits.pids), 'pids');
        const memory = limits.memoryBytes !== undefined && enabled.has('memory');
        if (memory && write(f('memory.max'), String(limits.memoryBytes), 'memory')) {
          if (isFile(f('memory.swap.max'))) {
            write(f('memory.swap.max'), '0', 'memory');
          } else {
            this.unapplied.push(
              `memory: swap is not accounted here (no ${f('memory.swap.max')}), so swap can extend the limit`,
            );
          }
        }
        if (quota !== undefined && enabled.has('cpu')) write(f('cpu.max'), `${quota} ${CPU_PERIOD_US}`, 'cpu');
      } else if (g.controller === 'pids' && limits.pids !== undefined) {
        write(f('pids.max'), String(limits.pids), 'pids');
      } else if (g.controller === 'memory' && limits.memoryBytes !== undefined) {
        // memory first: the kernel keeps memory.limit_in_bytes <= memory.memsw.limit_in_bytes at every step.
        if (!write(f('memory.limit_in_bytes'), String(limits.memoryBytes), 'memory')) continue;
        if (isFile(f('memory.memsw.limit_in_bytes'))) {
          write(f('memory.memsw.limit_in_bytes'), String(limits.memoryBytes), 'memory');
        } else {
          this.unapplied.push(
            `memory: swap is not accounted here (no ${f('memory.memsw.limit_in_bytes')}), so swap can extend the limit`,
          );
        }
      } else if (g.controller === 'cpu' && quota !== undefined) {
        if (write(f('cpu.cfs_period_us'), String(CPU_PERIOD_US), 'cpu'))
          write(f('cpu.cfs_quota_us'), String(quota), 'cpu');
      }
    }
  }

  /** Hands `sandbox` (not `<name>`, whose files hold the limits) to `uid`. */
  private delegate(uid: number): void {
    for (const g of this.groups) {
      const sandbox = join(g.dir, SANDBOX);
      for (const path of [sandbox, ...DELEGATED_FILES[this.sys.version].map((n) => join(sandbox, n))]) {
        try {
          chownSync(path, uid, -1);
        } catch (e) {
          throw new ProviderError(`could not delegate ${path} to uid ${uid}: ${errCode(e)}`, { cause: e });
        }
      }
    }
  }
}

/**
 * Enables pids, memory and cpu on the way down from the hierarchy's root to `parent`: each level's
 * cgroup.subtree_control decides what the next level has. Returns the ones `parent`'s children will have; a
 * failure is reported only for a controller a requested limit needs.
 */
function enableV2Controllers(mount: string, parent: string, requested: string[], unapplied: string[]): Set<string> {
  const enabled = new Set<string>(V2_CONTROLLERS);
  const segments = parent.split('/').filter(Boolean);
  for (let depth = 0; depth <= segments.length && enabled.size > 0; depth++) {
    const file = join(mount, ...segments.slice(0, depth), 'cgroup.subtree_control');
    const have = (readControl(file) ?? '').split(/\s+/);
    const missing = [...enabled].filter((c) => !have.includes(c));
    if (missing.length === 0) continue;
    try {
      writeControl(file, missing.map((c) => `+${c}`).join(' '));
      continue;
    } catch {}
    // The kernel refuses the whole line for one bad controller: try them one by one to learn which.
    for (const c of missing) {
      try {
        writeControl(file, `+${c}`);
      } catch (e) {
        enabled.delete(c);
        if (requested.includes(c))
          unapplied.push(`${c}: could not enable the ${c} controller in ${file}: ${explainEnable(errCode(e))}`);
      }
    }
  }
  return enabled;
}

function explainEnable(code: string): string {
  if (code === 'EBUSY') return 'EBUSY (that group holds processes of its own)';
  if (code === 'ENOENT') return 'ENOENT (the controller is not available there)';
  if (code === 'EACCES' || code === 'EPERM') return `${code} (not ours to change)`;
  return code;
}

function requestedControllers(limits: Limits): V1Controller[] {
  const out: V1Controller[] = [];
  if (limits.pids !== undefined) out.push('pids');
  if (limits.memoryBytes !== undefined) out.push('memory');
  if (limits.cpus !== undefined) out.push('cpu');
  return out;
}

/** The hierarchy roots used: the four v1 controllers that are mounted, or the v2 mount. */
function hierarchies(sys: CgroupSystem): Group[] {
  if (sys.version === 2) return [{ controller: null, dir: sys.mount }];
  return V1_CONTROLLERS.flatMap((c) => {
    const dir = sys.mounts[c];
    return dir ? [{ controller: c, dir }] : [];
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Exec groups

/**
 * Exec groups below a delegated `sandbox` group, for the agent inside a session. `sys` is the system as seen
 * inside, where the sandbox directories are bound: v1 uses its freezer and pids hierarchies, v2 its one.
 */
export class ExecGroups {
  private readonly roots: Group[];

  constructor(sys: CgroupSystem) {
    this.roots =
      sys.version === 2
        ? [{ controller: null, dir: sys.mount }]
        : (['freezer', 'pids'] as const).flatMap((c) => {
            const dir = sys.mounts[c];
            return dir ? [{ controller: c, dir }] : [];
          });
    if (this.roots.length === 0) {
      throw new UnavailableError('exec groups need the freezer or pids cgroup v1 hierarchy, or cgroup v2');
    }
  }

  /**
   * Makes the group (an existing one is reused); returns the files a single-threaded process writes `0` into to
   * join it (joinFile), one per hierarchy.
   */
  create(id: string): string[] {
    return this.groups(id).map((g) => {
      try {
        mkdirIfAbsent(g.dir);
      } catch (e) {
        throw new ProviderError(`could not create the exec group ${g.dir}: ${errCode(e)}`, { cause: e });
      }
      return joinFile(g);
    });
  }

  /** SIGKILLs everything in the group without racing forks; bounded. */
  kill(id: string): void {
    killGroups(this.groups(id).filter((g) => isDir(g.dir)));
  }

  /** Removes the group (after kill, or once empty). Idempotent. */
  remove(id: string): void {
    for (const g of this.groups(id)) rmdirTree(g.dir);
  }

  private groups(id: string): Group[] {
    checkExecId(id);
    return this.roots.map((r) => ({ controller: r.controller, dir: join(r.dir, id) }));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Killing and removing

/**
 * SIGKILLs every process in the groups' subtrees, in rounds until they are empty (at most KILL_ROUNDS). Each
 * round stops forks first, so nothing started meanwhile escapes: v2 cgroup.kill does it in the kernel; v2
 * without it (before 5.14) and v1 freeze the subtree, signal what is listed, then thaw so the signals land;
 * v1 without a freezer sets pids.max to 0 while signalling.
 */
function killGroups(groups: Group[], wait = true): void {
  if (groups.length === 0) return;
  const v2 = groups.find((g) => g.controller === null);
  const freezer = groups.find((g) => g.controller === 'freezer');
  const pids = groups.find((g) => g.controller === 'pids');
  for (let round = 0; round < KILL_ROUNDS; round++) {
    // Whether every process of the subtree has its SIGKILL now (none could fork meanwhile).
    let all = false;
    if (v2 && tryWrite(join(v2.dir, 'cgroup.kill'), '1')) {
      // The kernel kills the whole subtree, forks in flight included.
      all = true;
    } else if (v2 && tryWrite(join(v2.dir, 'cgroup.freeze'), '1')) {
      all = waitFor(() => /^frozen 1$/m.test(readControl(join(v2.dir, 'cgroup.events')) ?? ''), 800, 0.25);
      signalAll(groups);
      tryWrite(join(v2.dir, 'cgroup.freeze'), '0');
    } else if (freezer && tryWrite(join(freezer.dir, 'freezer.state'), 'FROZEN')) {
      // A task stuck in the kernel can keep the group FREEZING; signal anyway and catch stragglers next round. A
      // freeze takes well under a millisecond: polled every quarter of one, 200 ms at most, as the v2 one above.
      all = waitFor(() => readControl(join(freezer.dir, 'freezer.state'))?.trim() === 'FROZEN', 800, 0.25);
      signalAll(groups);
      // A group frozen on its own (the agent may freeze its exec groups) stays frozen when its parent thaws.
      for (const d of subtree(freezer.dir)) tryWrite(join(d, 'freezer.state'), 'THAWED');
    } else if (pids && isFile(join(pids.dir, 'pids.max'))) {
      const max = readControl(join(pids.dir, 'pids.max'))?.trim() || 'max';
      tryWrite(join(pids.dir, 'pids.max'), '0');
      signalAll(groups);
      // A process with SIGKILL pending cannot fork, so the old value can come back at once.
      tryWrite(join(pids.dir, 'pids.max'), max);
    } else {
      signalAll(groups);
    }
    if (!wait && all) return;
    if (waitFor(() => listPids(groups).length === 0, 50, 4)) return;
  }
}

function signalAll(groups: Group[]): void {
  for (const pid of listPids(groups)) trySignal(pid, 'SIGKILL');
}

function listPids(groups: Group[]): number[] {
  const all = new Set<number>();
  for (const g of groups) for (const d of subtree(g.dir)) for (const p of readPids(join(d, 'cgroup.procs'))) all.add(p);
  return [...all].sort((a, b) => a - b);
}

/** rmdir, deepest first. ENOENT is fine; EBUSY (processes still exiting) is retried a bounded number of times. */
function rmdirTree(dir: string, tries = 50): void {
  for (const d of subtree(dir)) {
    let busy: unknown;
    const gone = waitFor(
      () => {
        try {
          rmdirSync(d);
          return true;
        } catch (e) {
          if (errCode(e) === 'ENOENT') return true;
          if (errCode(e) !== 'EBUSY') throw new ProviderError(`could not remove ${d}: ${errCode(e)}`, { cause: e });
          busy = e;
          return false;
        }
      },
      tries,
      10,
    );
    if (!gone) {
      const left = listPids([{ controller: null, dir: d }]).join(' ') || 'none listed';
      throw new ProviderError(`could not remove ${d}: it is busy (processes left: ${left})`, { cause: busy });
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Small helpers

const sleepCell = new Int32Array(new SharedArrayBuffer(4));

/** Polls `done` up to `tries` times, `ms` apart. True once it holds. */
function waitFor(done: () => boolean, tries: number, ms: number): boolean {
  for (let i = 0; i < tries; i++) {
    if (done()) return true;
    Atomics.wait(sleepCell, 0, 0, ms);
  }
  return done();
}

function errCode(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? (e as Error).message;
}

/**
 * Writes one value to a control file. No O_CREAT (a missing cgroup file means a missing feature: ENOENT) and no
 * read access (cgroup.kill is write-only). O_TRUNC changes nothing on cgroupfs; in a fake tree it leaves
 * exactly the last value written.
 */
function writeControl(file: string, value: string): void {
  const fd = openSync(file, constants.O_WRONLY | constants.O_TRUNC);
  try {
    writeSync(fd, value);
  } finally {
    closeSync(fd);
  }
}

function tryWrite(file: string, value: string): boolean {
  try {
    writeControl(file, value);
    return true;
  } catch {
    return false;
  }
}

function readControl(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

function readPids(file: string): number[] {
  return (readControl(file) ?? '')
    .split('\n')
    .map(Number)
    .filter((n) => Number.isInteger(n) && n > 0);
}

function isDir(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

function mkdirIfAbsent(dir: string): void {
  try {
    mkdirSync(dir, { mode: 0o755 });
  } catch (e) {
    if (errCode(e) !== 'EEXIST') throw e;
  }
}

/** mkdir with its parents, again if a parent is removed meanwhile by a remover that found it empty (bounded). */
function mkdirRetrying(dir: string): void {
  for (let attempt = 0; ; attempt++) {
    try {
      mkdirSync(dir, { recursive: true, mode: 0o755 });
      return;
    } catch (e) {
      if (errCode(e) !== 'ENOENT' || attempt >= 3) throw e;
    }
  }
}

/** Removes `<parent>` in every hierarchy if it is empty (the last session of a state directory went). */
export function removeEmptyParent(sys: CgroupSystem, parent: string): void {
  const mounts = sys.version === 2 ? [sys.mount] : Object.values(sys.mounts);
  for (const m of mounts) {
    const dir = join(m, checkParent(parent));
    // One with groups in it is someone's; a child just removed may still be dying (EBUSY for a moment).
    let entries: Dirent[] = [];
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      continue;
    }
    if (entries.some((e) => e.isDirectory())) continue;
    waitFor(
      () => {
        try {
          rmdirSync(dir);
          return true;
        } catch (e) {
          return errCode(e) !== 'EBUSY';
        }
      },
      25,
      2,
    );
  }
}

function rmdirQuiet(dir: string): void {
  try {
    rmdirSync(dir);
  } catch {}
}

/** `dir` and the directories below it, children before parents (the order rmdir needs). Bounded. */
function subtree(dir: string): string[] {
  const out: string[] = [];
  const visit = (d: string, depth: number): void => {
    if (out.length >= MAX_DIRS) return;
    let entries: Dirent[] = [];
    try {
      entries = depth < MAX_DEPTH ? readdirSync(d, { withFileTypes: true }) : [];
    } catch {
      return;
    }
    for (const e of entries) if (e.isDirectory()) visit(join(d, e.name), depth + 1);
    out.push(d);
  };
  visit(dir, 0);
  return out;
}

/**
 * May `uid` write `path`? For our own uid the kernel answers (it also knows read-only mounts); for another uid
 * (a decision on its behalf, or a test) the owner and mode bits do: the owner's bit when `uid` owns it, else the
 * bit for others (group membership is not known here, so it does not count).
 */
function writableBy(path: string, uid: number): boolean {
  try {
    if (uid === process.getuid?.()) {
      accessSync(path, constants.W_OK);
      return true;
    }
    if (uid === 0) return true;
    const st = statSync(path);
    return st.uid === uid ? (st.mode & 0o200) !== 0 : (st.mode & 0o002) !== 0;
  } catch {
    return false;
  }
}

function ownedWritable(path: string, uid: number): boolean {
  try {
    return statSync(path).uid === uid && writableBy(path, uid);
  } catch {
    return false;
  }
}

function isSessionName(name: string): boolean {
  return SESSION_NAME.test(name) && !name.endsWith('-');
}

function checkSessionName(name: string): void {
  if (!isSessionName(name)) {
    throw new UserError(
      `invalid session cgroup name ${JSON.stringify(name)}: expected ws-<namespace>-<user>-<time>-<suffix>`,
    );
  }
}

function checkExecId(id: string): void {
  if (!EXEC_ID.test(id)) {
    throw new UserError(
      `invalid exec group id ${JSON.stringify(id)}: expected 1-63 of [a-z0-9-], not starting with '-'`,
    );
  }
}

/** An absolute path of plain names ('/' is the hierarchy's root), returned normalised. */
function checkParent(parent: string): string {
  const segments = parent.split('/').filter(Boolean);
  if (!parent.startsWith('/') || segments.some((s) => s === '.' || s === '..' || !PARENT_SEGMENT.test(s))) {
    throw new UserError(`invalid cgroup parent ${JSON.stringify(parent)}: expected an absolute path of plain names`);
  }
  return '/' + segments.join('/');
}

function checkLimits(l: Limits): void {
  if (l.cpus !== undefined && !(Number.isFinite(l.cpus) && l.cpus >= 0.01)) {
    throw new UserError(`invalid cpu limit ${l.cpus}: expected at least 0.01 cores`);
  }
  if (l.memoryBytes !== undefined && !(Number.isSafeInteger(l.memoryBytes) && l.memoryBytes > 0)) {
    throw new UserError(`invalid memory limit ${l.memoryBytes}: expected a positive number of bytes`);
  }
  if (l.pids !== undefined && !(Number.isSafeInteger(l.pids) && l.pids > 0)) {
    throw new UserError(`invalid pids limit ${l.pids}: expected a positive integer`);
  }
}
