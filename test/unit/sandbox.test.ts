import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { UnavailableError } from '../../src/errors.js';
import { packageRoot } from '../../src/paths.js';
import {
  bwrapArgs,
  FD,
  passwdFile,
  profileFile,
  resolveToolchain,
  SANDBOX_UID,
  type SandboxLayout,
  SESSION_PATH,
  sessionPath,
} from '../../src/providers/local/sandbox.js';

const layout = (over: Partial<SandboxLayout> = {}): SandboxLayout => ({
  hostname: 'ws-a-b-1-abcd',
  user: 'alice',
  network: 'outbound',
  ownResolvConf: true,
  toolchain: { template: 'python', path: [] },
  cgroupDirs: [],
  allowNestedUserns: false,
  shmBytes: 64 << 20,
  runBytes: 16 << 20,
  ...over,
});

/** Pairs of (flag, src, dest) for every bind in an argv. */
function binds(a: string[]): string[][] {
  const out: string[][] = [];
  a.forEach((x, i) => {
    if (/^--(ro-)?bind(-data)?$/.test(x)) out.push([x, a[i + 1] ?? '', a[i + 2] ?? '']);
  });
  return out;
}

describe('bwrapArgs', () => {
  it('never binds the host root, /root or /home, and drops to the sandbox uid in new namespaces', () => {
    const a = bwrapArgs(layout());
    const sources = binds(a).map((b) => b[1] ?? '');
    expect(sources).not.toContain('/');
    expect(sources.some((s) => /^\/(root|home)(\/|$)/.test(s))).toBe(false);
    expect(a).toEqual(expect.arrayContaining(['--unshare-user', '--unshare-pid', '--unshare-ipc', '--disable-userns']));
    expect(a.slice(a.indexOf('--uid'), a.indexOf('--uid') + 2)).toEqual(['--uid', String(SANDBOX_UID)]);
    expect(binds(a)).toContainEqual(['--bind', '/mnt/workspace', '/workspace']);
    expect(binds(a)).toContainEqual(['--ro-bind-data', String(FD.resolvConf), '/etc/resolv.conf']);
    expect(binds(a)).toContainEqual(['--ro-bind', '/usr', '/usr']);
    expect(a.slice(-3)).toEqual(['/usr/bin/node', '/run/onmemos/agent.cjs', '/run/onmemos/config.json']);
    expect(a.slice(a.indexOf('--seccomp'), a.indexOf('--seccomp') + 2)).toEqual(['--seccomp', String(FD.seccomp)]);
  });

  it('session files come from descriptors, so no host path shows in mountinfo', () => {
    const a = bwrapArgs(layout());
    for (const dest of ['/etc/passwd', '/etc/group', '/run/onmemos/agent.cjs', '/run/onmemos/config.json']) {
      expect(binds(a).find((b) => b[2] === dest)?.[0]).toBe('--ro-bind-data');
    }
  });

  it('has its own network namespace only in isolated mode (outbound and host share the outer one)', () => {
    expect(bwrapArgs(layout({ network: 'isolated' }))).toContain('--unshare-net');
    expect(bwrapArgs(layout({ network: 'host' }))).not.toContain('--unshare-net');
    expect(bwrapArgs(layout())).not.toContain('--unshare-net');
  });

  it("binds host directories (the fakes' buckets) from their staging place, after the workspace, before the root goes read-only", () => {
    const a = bwrapArgs(
      layout({
        binds: [
          { target: '/workspace/bucket', readOnly: false },
          { target: '/data', readOnly: true },
        ],
      }),
    );
    expect(binds(a)).toContainEqual(['--bind', '/mnt/.binds/0', '/workspace/bucket']);
    expect(binds(a)).toContainEqual(['--ro-bind', '/mnt/.binds/1', '/data']);
    expect(a.indexOf('/mnt/.binds/0')).toBeGreaterThan(a.indexOf('/mnt/workspace'));
    expect(a.indexOf('/mnt/.binds/1')).toBeLessThan(a.indexOf('--remount-ro'));
    expect(bwrapArgs(layout()).join(' ')).not.toContain('.binds');
  });

  it('allows nested user namespaces only when asked', () => {
    expect(bwrapArgs(layout({ allowNestedUserns: true }))).not.toContain('--disable-userns');
  });

  it('binds a toolchain outside /usr read-only at a neutral path', () => {
    const a = bwrapArgs(
      layout({ toolchain: { template: 'go', hostPrefix: '/opt/go', path: ['/opt/onmemos/toolchain/bin'] } }),
    );
    expect(binds(a)).toContainEqual(['--ro-bind', '/opt/go', '/opt/onmemos/toolchain']);
  });

  it("links the template's missing command names in /opt/onmemos/bin before the root is made read-only", () => {
    const links = [
      { name: 'python', target: '/usr/bin/python3' },
      { name: 'pip', target: '/opt/onmemos/toolchain/bin/pip3' },
    ];
    const a = bwrapArgs(layout({ toolchain: { template: 'python', path: [], links } }));
    const at = (i: number) => a.slice(i, i + 3);
    const dir = a.indexOf('/opt/onmemos/bin') - 1;
    expect(at(dir).slice(0, 2)).toEqual(['--dir', '/opt/onmemos/bin']);
    const python = a.indexOf('/opt/onmemos/bin/python') - 2;
    expect(at(python)).toEqual(['--symlink', '/usr/bin/python3', '/opt/onmemos/bin/python']);
    const pip = a.indexOf('/opt/onmemos/bin/pip') - 2;
    expect(at(pip)).toEqual(['--symlink', '/opt/onmemos/toolchain/bin/pip3', '/opt/onmemos/bin/pip']);
    expect(dir).toBeLessThan(python);
    expect(Math.max(python, pip)).toBeLessThan(a.indexOf('--remount-ro'));
    expect(bwrapArgs(layout({ toolchain: { template: 'python', path: [], links: [] } })).join(' ')).not.toContain(
      '/opt/onmemos/bin',
    );
    expect(bwrapArgs(layout()).join(' ')).not.toContain('/opt/onmemos/bin');
  });

  it('puts the links directory last on the PATH, and only when there are links', () => {
    const tc = { template: 'python' as const, path: ['/opt/onmemos/toolchain/bin'] };
    expect(sessionPath(tc)).toBe(`/opt/onmemos/toolchain/bin:${SESSION_PATH}`);
    expect(sessionPath({ ...tc, links: [] })).toBe(`/opt/onmemos/toolchain/bin:${SESSION_PATH}`);
    expect(sessionPath({ ...tc, links: [{ name: 'python', target: '/usr/bin/python3' }] })).toBe(
      `/opt/onmemos/toolchain/bin:${SESSION_PATH}:/opt/onmemos/bin`,
    );
  });

  it('bounds /dev/shm and /run', () => {
    const a = bwrapArgs(layout());
    expect(a.slice(a.indexOf('/dev/shm') - 5, a.indexOf('/dev/shm') + 1)).toEqual([
      '--size',
      String(64 << 20),
      '--perms',
      '1777',
      '--tmpfs',
      '/dev/shm',
    ]);
  });
});

describe('the launcher (dist/launcher)', () => {
  const launcher = join(packageRoot(), 'dist', 'launcher');
  const run = (args: string[], env: Record<string, string> = {}) =>
    spawnSync(launcher, args, { env: { PATH: '/usr/bin:/bin', ...env }, encoding: 'utf8', timeout: 10_000 });

  it('is built', () => {
    expect(existsSync(launcher), 'npm run build makes dist/launcher').toBe(true);
  });

  it.each([
    [[], {}, /^onmemos-launcher: usage: /],
    [['x', '/usr/bin/bwrap'], {}, /^onmemos-launcher: bad mkfs argument count\n$/],
    [['5', '/usr/bin/bwrap'], {}, /^onmemos-launcher: bad mkfs argument count\n$/],
    [['0', '/usr/bin/bwrap'], { ONMEMOS_DATA_MOUNT: 'mnt' }, /^onmemos-launcher: bad ONMEMOS_DATA_MOUNT\n$/],
    [
      ['0', '/usr/bin/bwrap'],
      { ONMEMOS_DATA_MOUNT: '/mnt', ONMEMOS_UID: '1x' },
      /^onmemos-launcher: bad ONMEMOS_UID\n$/,
    ],
    [
      ['0', '/usr/bin/bwrap'],
      { ONMEMOS_DATA_MOUNT: '/mnt', ONMEMOS_UID: '0' },
      /^onmemos-launcher: bad ONMEMOS_UID\n$/,
    ],
  ])('refuses %j %j with one line and 125, before it does anything', (args, env, line) => {
    const r = run(args, env);
    expect(r.status).toBe(125);
    expect(r.stderr).toMatch(line);
    expect(r.stdout).toBe('');
  });

  it("ends with 125 when the creator's go-ahead does not come (EOF), and nothing of the session runs", () => {
    const dir = tempDir('onmemos-launcher-');
    const marker = join(dir, 'ran');
    // As an ordinary (rootless) launcher would be run, with bwrap replaced by a command that leaves a mark.
    const r = spawnSync(launcher, ['0', '/usr/bin/touch', marker], {
      env: { PATH: '/usr/bin:/bin', ONMEMOS_DATA_MOUNT: '/mnt', ONMEMOS_PROPAGATION: 'private' },
      input: '',
      encoding: 'utf8',
      timeout: 10_000,
    });
    expect(r.status).toBe(125);
    expect(existsSync(marker)).toBe(false);
  });
});

const made: string[] = [];
const tempDir = (prefix: string) => {
  const d = mkdtempSync(join(tmpdir(), prefix));
  made.push(d);
  return d;
};
afterAll(() => {
  for (const d of made) rmSync(d, { recursive: true, force: true });
});

describe('resolveToolchain', () => {
  it('finds a toolchain under /usr and needs no extra mount', () => {
    const tc = resolveToolchain('nodejs', '/usr/bin');
    expect(tc).toMatchObject({ template: 'nodejs', path: [] });
    expect(tc.hostPrefix).toBeUndefined();
  });

  it('says clearly which toolchain is missing', () => {
    const empty = tempDir('onmemos-path-');
    expect(() => resolveToolchain('go', empty, [])).toThrow(UnavailableError);
    expect(() => resolveToolchain('go', empty, [])).toThrow(/^template go needs Go \(`go`\), which is not installed/);
  });

  it("links the template's other names the session lacks to the tool, and never shadows one it has", () => {
    const root = tempDir('onmemos-tc-');
    const bin = join(root, 'py', 'bin');
    mkdirSync(bin, { recursive: true });
    writeFileSync(join(bin, 'python3'), '#!/bin/sh\n', { mode: 0o755 });
    expect(resolveToolchain('python', bin, [], [])).toEqual({
      template: 'python',
      hostPrefix: join(root, 'py'),
      path: ['/opt/onmemos/toolchain/bin'],
      links: [{ name: 'python', target: '/opt/onmemos/toolchain/bin/python3' }],
    });
    writeFileSync(join(bin, 'python'), '#!/bin/sh\n', { mode: 0o644 }); // not executable: not a command
    expect(resolveToolchain('python', bin, [], []).links).toEqual([
      { name: 'python', target: '/opt/onmemos/toolchain/bin/python3' },
    ]);
    chmodSync(join(bin, 'python'), 0o755);
    expect(resolveToolchain('python', bin, [], []).links).toEqual([]);
    // nodejs: `nodejs` is another name of node; npm and npx beside it are on the PATH already.
    const node = join(root, 'node', 'bin');
    mkdirSync(node, { recursive: true });
    for (const f of ['node', 'npm', 'npx']) writeFileSync(join(node, f), '#!/bin/sh\n', { mode: 0o755 });
    expect(resolveToolchain('nodejs', node, [], []).links).toEqual([
      { name: 'nodejs', target: '/opt/onmemos/toolchain/bin/node' },
    ]);
  });

  it("links python to the host's python3 under /usr where the host has no python", () => {
    if (!existsSync('/usr/bin/python3')) return;
    const tc = resolveToolchain('python', '/usr/bin', []);
    const hostHas = ['/usr/local/bin/python', '/usr/bin/python', '/usr/local/sbin/python', '/usr/sbin/python'].some(
      (p) => existsSync(p),
    );
    expect(tc.links).toEqual(hostHas ? [] : [{ name: 'python', target: '/usr/bin/python3' }]);
  });

  it('skips version-manager shims and binds a prefix outside /usr', () => {
    const root = tempDir('onmemos-tc-');
    const shims = join(root, 'shims');
    mkdirSync(shims);
    writeFileSync(join(shims, 'go'), '#!/bin/sh\n', { mode: 0o755 });
    mkdirSync(join(root, 'go', 'bin'), { recursive: true });
    writeFileSync(join(root, 'go', 'bin', 'go'), '#!/bin/sh\n', { mode: 0o755 });
    const tc = resolveToolchain('go', `${shims}:${join(root, 'go', 'bin')}`, []);
    expect(tc.hostPrefix).toBe(join(root, 'go'));
    expect(tc.path).toEqual(['/opt/onmemos/toolchain/bin']);
  });
});

it('passwd names the session user at the sandbox uid with its home', () => {
  expect(passwdFile('alice')).toContain(`alice:x:${SANDBOX_UID}:${SANDBOX_UID}:alice:/home/alice:/bin/bash`);
});

describe('profileFile', () => {
  it("appends the session PATH, quoted, after the host's profile", () => {
    expect(profileFile('PATH=/usr/bin\nexport PATH', "/a b:/it's")).toBe(
      "PATH=/usr/bin\nexport PATH\n# onmemos: the session's PATH, which the lines above may have reset\nPATH='/a b:/it'\\''s'\nexport PATH\n",
    );
    expect(profileFile('', '/bin').startsWith('\n# onmemos')).toBe(true);
  });
});
