/**
 * Unit tests for src/providers/local/cgroups.ts: mountinfo detection, where session groups go, and the files
 * SessionGroup and ExecGroups write. cgroup v2 is exercised ONLY against a fake directory tree here (this
 * suite's files stand in for the ones the kernel would make); the real thing (v1 on the development machine)
 * is in test/e2e/cgroups.test.ts.
 */
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { UnavailableError, UserError } from '../../src/errors.js';
import {
  type CgroupSystem,
  detectCgroups,
  ExecGroups,
  SessionGroup,
  sessionParent,
} from '../../src/providers/local/cgroups.js';

const made: string[] = [];
const tempDir = () => {
  const d = mkdtempSync(join(tmpdir(), 'onmemos-cgroups-'));
  made.push(d);
  return d;
};
afterAll(() => {
  for (const d of made) rmSync(d, { recursive: true, force: true });
});

const myUid = process.getuid!();
const isRoot = myUid === 0;
const read = (p: string) => readFileSync(p, 'utf8');

/** A directory with the files the kernel gives a v2 group (plus `extra`, e.g. a controller's limit files). */
function fakeV2Group(dir: string, extra: Record<string, string> = {}): string {
  mkdirSync(dir, { recursive: true });
  const files: Record<string, string> = {
    'cgroup.procs': '',
    'cgroup.threads': '',
    'cgroup.subtree_control': '',
    'cgroup.controllers': 'cpuset cpu io memory pids\n',
    'cgroup.events': 'populated 0\nfrozen 0\n',
    'cgroup.kill': '',
    'cgroup.freeze': '0\n',
    ...extra,
  };
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return dir;
}
const V2_LIMIT_FILES = {
  'pids.max': 'max\n',
  'memory.max': 'max\n',
  'memory.swap.max': 'max\n',
  'cpu.max': 'max 100000\n',
};

const sampleFile = (text: string) => {
  const p = join(tempDir(), 'mountinfo');
  writeFileSync(p, text);
  return p;
};

describe('detectCgroups', () => {
  it('hybrid (like the development machine): the v1 controllers win over the cgroup2 mount beside them', () => {
    const text = [
      '25 1 0:24 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw',
      '31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755',
      '32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu',
      '33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct',
      '34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset',
      '35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory',
      '36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices',
      '37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer',
      '38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio',
      '39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids',
      '40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd',
      '41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw',
      '',
    ].join('\n');
    expect(detectCgroups(sampleFile(text))).toEqual({
      version: 1,
      mounts: {
        cpu: '/sys/fs/cgroup/cpu',
        memory: '/sys/fs/cgroup/memory',
        freezer: '/sys/fs/cgroup/freezer',
        pids: '/sys/fs/cgroup/pids',
      },
    });
  });

  it('v1 with cpu and cpuacct mounted together, optional fields, an escaped mount point, and no freezer', () => {
    const text = [
      '30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:10 - cgroup cgroup rw,cpu,cpuacct',
      '31 25 0:27 / /sys/fs/cgroup/my\\040pids rw,nosuid shared:11 - cgroup cgroup rw,pids',
      '32 25 0:28 / /sys/fs/cgroup/cpuset rw,nosuid shared:12 - cgroup cgroup rw,cpuset',
    ].join('\n');
    expect(detectCgroups(sampleFile(text))).toEqual({
      version: 1,
      mounts: { cpu: '/sys/fs/cgroup/cpu,cpuacct', pids: '/sys/fs/cgroup/my pids' },
    });
  });

  it('pure cgroup v2, with the mount root kept', () => {
    const text = [
      '22 27 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw',
      '26 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot',
    ].join('\n');
    expect(detectCgroups(sampleFile(text))).toEqual({ version: 2, mount: '/sys/fs/cgroup', root: '/' });
    const sub = '40 30 0:23 /kubepods/pod1 /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw';
    expect(detectCgroups(sampleFile(sub))).toEqual({ version: 2, mount: '/sys/fs/cgroup', root: '/kubepods/pod1' });
  });

  it('no cgroup filesystem at all, or no mountinfo: undefined', () => {
    expect(detectCgroups(sampleFile('22 27 0:21 / /sys rw - sysfs sysfs rw\n'))).toBeUndefined();
    expect(detectCgroups(join(tempDir(), 'missing'))).toBeUndefined();
  });
});

describe('sessionParent', () => {
  const procCgroup = (text: string) => {
    const p = join(tempDir(), 'cgroup');
    writeFileSync(p, text);
    return p;
  };

  it('as root: /onmemos in every hierarchy, made 0755', () => {
    const mount = tempDir();
    expect(sessionParent({ version: 2, mount }, {}, 0)).toEqual({ path: '/onmemos' });
    expect(statSync(join(mount, 'onmemos')).mode & 0o777).toBe(0o755);
    expect(sessionParent({ version: 2, mount }, {}, 0)).toEqual({ path: '/onmemos' }); // already there: fine

    const base = tempDir();
    const mounts = { pids: join(base, 'pids'), memory: join(base, 'memory'), cpu: join(base, 'cpu') };
    for (const m of Object.values(mounts)) mkdirSync(m);
    expect(sessionParent({ version: 1, mounts }, {}, 0)).toEqual({ path: '/onmemos' });
    for (const m of Object.values(mounts)) expect(statSync(join(m, 'onmemos')).isDirectory()).toBe(true);
  });

  it('ONMEMOS_CGROUP_PARENT: taken when it exists and is writable, else a one-line UnavailableError naming it', () => {
    const mount = tempDir();
    mkdirSync(join(mount, 'custom', 'place'), { recursive: true });
    const sys: CgroupSystem = { version: 2, mount };
    expect(sessionParent(sys, { ONMEMOS_CGROUP_PARENT: '/custom/place/' }, myUid)).toEqual({ path: '/custom/place' });
    expect(() => sessionParent(sys, { ONMEMOS_CGROUP_PARENT: '/nowhere' }, myUid)).toThrow(
      new UnavailableError(`ONMEMOS_CGROUP_PARENT=/nowhere: ${join(mount, 'nowhere')} does not exist`),
    );
    expect(() => sessionParent(sys, { ONMEMOS_CGROUP_PARENT: '/custom/../etc' }, myUid)).toThrow(
      /ONMEMOS_CGROUP_PARENT/,
    );
    expect(() => sessionParent(sys, { ONMEMOS_CGROUP_PARENT: 'custom' }, myUid)).toThrow(UnavailableError);
    // Another uid that owns nothing there may not use it (0755 directories, owned by this test's uid).
    expect(() => sessionParent(sys, { ONMEMOS_CGROUP_PARENT: '/custom/place' }, 4242)).toThrow(
      /not writable by uid 4242/,
    );
  });

  it('another user on v2: /onmemos below the nearest ancestor of our group that the uid owns and may write', () => {
    const mount = tempDir();
    const service = join(mount, 'user.slice', 'user-1000.slice', 'user@1000.service');
    const scope = join(service, 'app.slice', 'run-x.scope');
    mkdirSync(scope, { recursive: true });
    for (const d of [mount, join(mount, 'user.slice'), join(mount, 'user.slice', 'user-1000.slice'), service]) {
      writeFileSync(join(d, 'cgroup.procs'), '');
    }
    writeFileSync(join(service, 'app.slice', 'cgroup.procs'), '');
    writeFileSync(join(scope, 'cgroup.procs'), '');
    // As root the test hands the user manager's subtree to uid 1000; otherwise the test's own uid plays the user.
    const uid = isRoot ? 1000 : myUid;
    if (isRoot) for (const p of [service, join(service, 'cgroup.procs')]) chownSync(p, uid, uid);
    if (isRoot)
      for (const p of [join(service, 'app.slice'), join(service, 'app.slice', 'cgroup.procs')]) chownSync(p, uid, uid);
    // app.slice is the uid's but its cgroup.procs is not writable, so processes could not be moved below it.
    chmodSync(join(service, 'app.slice', 'cgroup.procs'), 0o444);
    // Running as root, what the user would have made itself has to be made for it (root would own it otherwise).
    if (isRoot) mkdirSync(join(service, 'onmemos'));
    if (isRoot) chownSync(join(service, 'onmemos'), uid, uid);
    const self = procCgroup('0::/user.slice/user-1000.slice/user@1000.service/app.slice/run-x.scope\n');
    const want = '/user.slice/user-1000.slice/user@1000.service/onmemos';
    expect(sessionParent({ version: 2, mount }, {}, uid, self)).toEqual({ path: want });
    expect(statSync(join(mount, want)).isDirectory()).toBe(true);
  });

  it('another user with nothing delegated, or on v1, or with no v2 group: unavailable, with one sentence why', () => {
    const mount = tempDir();
    mkdirSync(join(mount, 'user.slice', 'session-3.scope'), { recursive: true });
    writeFileSync(join(mount, 'user.slice', 'cgroup.procs'), '');
    const self = procCgroup('0::/user.slice/session-3.scope\n');
    const none = sessionParent({ version: 2, mount }, {}, 4242, self);
    expect(none).toEqual({
      unavailable: expect.stringMatching(/no ancestor of our cgroup \/user.slice\/session-3.scope/),
    });

    const v1 = sessionParent({ version: 1, mounts: { pids: mount } }, {}, 4242);
    expect(v1).toEqual({ unavailable: expect.stringMatching(/^cgroup v1 cannot be delegated/) });

    const noV2 = sessionParent({ version: 2, mount }, {}, 4242, procCgroup('4:memory:/x\n'));
    expect(noV2).toEqual({ unavailable: expect.stringMatching(/names no cgroup v2 group/) });
  });
});

describe('SessionGroup on a fake cgroup v2 tree (the kernel is NOT involved)', () => {
  const NAME = 'ws-team-alice-1764027000-a1b2';
  /** A fake hierarchy with /onmemos, and the files the kernel would give <name> and its sandbox. */
  const setup = (opts: { parentSubtreeControl?: boolean; swap?: boolean } = {}) => {
    const mount = fakeV2Group(tempDir());
    const sys: CgroupSystem = { version: 2, mount };
    expect(sessionParent(sys, {}, 0)).toEqual({ path: '/onmemos' });
    const parent = fakeV2Group(join(mount, 'onmemos'));
    if (opts.parentSubtreeControl === false) rmSync(join(parent, 'cgroup.subtree_control'));
    const limitFiles: Record<string, string> = { ...V2_LIMIT_FILES };
    if (opts.swap === false) delete limitFiles['memory.swap.max'];
    const group = fakeV2Group(join(parent, NAME), limitFiles);
    const sandbox = fakeV2Group(join(group, 'sandbox'));
    return { sys, mount, parent, group, sandbox };
  };

  it('writes the limits, enables the controllers on the way down and delegates only sandbox', () => {
    const { sys, mount, parent, group, sandbox } = setup();
    const delegateTo = isRoot ? 1234567 : myUid;
    const g = SessionGroup.create(
      sys,
      '/onmemos',
      NAME,
      { cpus: 1.5, memoryBytes: 64 * 1024 * 1024, pids: 100 },
      { delegateTo },
    );
    expect(g.unapplied).toEqual([]);
    expect(read(join(mount, 'cgroup.subtree_control'))).toBe('+pids +memory +cpu');
    expect(read(join(parent, 'cgroup.subtree_control'))).toBe('+pids +memory +cpu');
    expect(read(join(group, 'cgroup.subtree_control'))).toBe(''); // sandbox gets no controllers
    expect(read(join(group, 'cpu.max'))).toBe('150000 100000');
    expect(read(join(group, 'memory.max'))).toBe(String(64 * 1024 * 1024));
    expect(read(join(group, 'memory.swap.max'))).toBe('0');
    expect(read(join(group, 'pids.max'))).toBe('100');
    for (const p of [
      sandbox,
      ...['cgroup.procs', 'cgroup.subtree_control', 'cgroup.threads'].map((f) => join(sandbox, f)),
    ]) {
      expect(statSync(p).uid, p).toBe(delegateTo);
    }
    for (const p of [group, join(group, 'pids.max'), join(group, 'cgroup.procs'), join(sandbox, 'cgroup.kill')]) {
      expect(statSync(p).uid, p).toBe(myUid);
    }
    expect(g.joinFiles()).toEqual([join(sandbox, 'cgroup.procs')]);
    expect(g.sandboxDirs()).toEqual([{ controller: null, dir: sandbox }]);
    expect(SessionGroup.list(sys, '/onmemos')).toEqual([NAME]);
  });

  it('leaves subtree_control alone where the controllers are already enabled', () => {
    const { sys, mount } = setup();
    writeFileSync(join(mount, 'cgroup.subtree_control'), 'cpuset cpu io memory pids\n');
    SessionGroup.create(sys, '/onmemos', NAME, { pids: 5 }, {});
    expect(read(join(mount, 'cgroup.subtree_control'))).toBe('cpuset cpu io memory pids\n');
  });

  it('reports the controllers it cannot enable (naming the file) and writes no limit there', () => {
    const { sys, parent, group } = setup({ parentSubtreeControl: false });
    const g = SessionGroup.create(sys, '/onmemos', NAME, { cpus: 0.5, memoryBytes: 1 << 26, pids: 10 }, {});
    const file = join(parent, 'cgroup.subtree_control');
    expect(g.unapplied).toEqual([
      `pids: could not enable the pids controller in ${file}: ENOENT (the controller is not available there)`,
      `memory: could not enable the memory controller in ${file}: ENOENT (the controller is not available there)`,
      `cpu: could not enable the cpu controller in ${file}: ENOENT (the controller is not available there)`,
    ]);
    expect(read(join(group, 'pids.max'))).toBe('max\n');
  });

  it('says so when swap is not accounted (no memory.swap.max)', () => {
    const { sys, group } = setup({ swap: false });
    const g = SessionGroup.create(sys, '/onmemos', NAME, { memoryBytes: 1 << 26 }, {});
    expect(g.unapplied).toEqual([
      `memory: swap is not accounted here (no ${join(group, 'memory.swap.max')}), so swap can extend the limit`,
    ]);
    expect(read(join(group, 'memory.max'))).toBe(String(1 << 26));
  });

  it('kills with cgroup.kill, lists pids in the whole subtree and reads usage', () => {
    const { sys, group, sandbox } = setup();
    SessionGroup.create(sys, '/onmemos', NAME, {}, {});
    const g = SessionGroup.open(sys, '/onmemos', NAME);
    g.kill();
    expect(read(join(group, 'cgroup.kill'))).toBe('1');
    fakeV2Group(join(sandbox, 'e1'), { 'cgroup.procs': '456\n' });
    writeFileSync(join(sandbox, 'cgroup.procs'), '123\n');
    expect(g.pids()).toEqual([123, 456]);
    writeFileSync(join(group, 'memory.current'), '1234\n');
    writeFileSync(join(group, 'pids.current'), '3\n');
    writeFileSync(join(group, 'cpu.stat'), 'usage_usec 999\nuser_usec 600\nsystem_usec 399\n');
    expect(g.usage()).toEqual({ memoryBytes: 1234, pids: 3, cpuUsec: 999 });
  });

  it('opens a group that is gone as an empty one, so removing it again is a no-op', () => {
    const mount = fakeV2Group(tempDir());
    const g = SessionGroup.open({ version: 2, mount }, '/onmemos', NAME);
    expect(g.pids()).toEqual([]);
    expect(() => g.remove()).not.toThrow();
    expect(SessionGroup.list({ version: 2, mount }, '/onmemos')).toEqual([]);
  });

  it('builds no path from an unchecked name, parent or limit', () => {
    const { sys } = setup();
    for (const name of ['../x', 'ws-a/../../x', 'ws-a/b', 'sandbox', 'ws-', 'ws-A']) {
      expect(() => SessionGroup.create(sys, '/onmemos', name, {}, {}), name).toThrow(UserError);
    }
    for (const parent of ['onmemos', '/onmemos/..', '/a/./b', '/a b']) {
      expect(() => SessionGroup.open(sys, parent, NAME), parent).toThrow(UserError);
    }
    expect(() => SessionGroup.create(sys, '/onmemos', NAME, { cpus: 0 }, {})).toThrow(/invalid cpu limit 0/);
    expect(() => SessionGroup.create(sys, '/onmemos', NAME, { pids: 1.5 }, {})).toThrow(UserError);
    expect(() => SessionGroup.create(sys, '/onmemos', NAME, { memoryBytes: -1 }, {})).toThrow(UserError);
  });
});

describe('ExecGroups on fake trees (the kernel is NOT involved)', () => {
  it('v2: makes the group, kills it with cgroup.kill, removes it idempotently', () => {
    const inside = fakeV2Group(tempDir());
    const ex = new ExecGroups({ version: 2, mount: inside });
    expect(ex.create('e-1')).toEqual([join(inside, 'e-1', 'cgroup.procs')]);
    fakeV2Group(join(inside, 'e-1')); // what the kernel would have put there
    ex.kill('e-1');
    expect(read(join(inside, 'e-1', 'cgroup.kill'))).toBe('1');
    rmSync(join(inside, 'e-1'), { recursive: true }); // a fake tree's files are real files: rmdir alone cannot
    expect(() => ex.remove('e-1')).not.toThrow();
    for (const bad of ['../x', 'a/b', '-x', 'X', '']) expect(() => ex.create(bad), bad).toThrow(UserError);
  });

  it('v1: freezer and pids groups; a kill freezes, then thaws every group below', () => {
    const base = tempDir();
    const mounts = { freezer: join(base, 'freezer'), pids: join(base, 'pids') };
    for (const m of Object.values(mounts)) mkdirSync(m);
    const ex = new ExecGroups({ version: 1, mounts: { ...mounts, memory: join(base, 'memory') } });
    // v1 joins through `tasks` (a thread moving itself takes no global lock: joinFile).
    expect(ex.create('e1')).toEqual([join(mounts.freezer, 'e1', 'tasks'), join(mounts.pids, 'e1', 'tasks')]);
    const state = join(mounts.freezer, 'e1', 'freezer.state');
    writeFileSync(state, 'THAWED\n');
    mkdirSync(join(mounts.freezer, 'e1', 'inner'));
    writeFileSync(join(mounts.freezer, 'e1', 'inner', 'freezer.state'), 'FROZEN\n');
    ex.kill('e1');
    expect(read(state)).toBe('THAWED');
    expect(read(join(mounts.freezer, 'e1', 'inner', 'freezer.state'))).toBe('THAWED');
  });

  it('needs a hierarchy to work in', () => {
    expect(() => new ExecGroups({ version: 1, mounts: { memory: '/x' } })).toThrow(UnavailableError);
  });
});
