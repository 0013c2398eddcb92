import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { UnavailableError } from '../../src/errors.js';
import {
  A_SCRIPT,
  bwrapArgs,
  FD,
  LAUNCHER,
  LAUNCHER_FDS,
  passwdFile,
  resolveToolchain,
  SANDBOX_UID,
  type SandboxLayout,
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

  it('allows nested user namespaces only when asked', () => {
    expect(bwrapArgs(layout({ allowNestedUserns: true }))).not.toContain('--disable-userns');
  });

  it('binds a toolchain outside /usr read-only at a neutral path', () => {
    const a = bwrapArgs(
      layout({ toolchain: { template: 'go', hostPrefix: '/opt/go', path: ['/opt/onmemos/toolchain/bin'] } }),
    );
    expect(binds(a)).toContainEqual(['--ro-bind', '/opt/go', '/opt/onmemos/toolchain']);
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

describe('the launcher scripts', () => {
  it('take every value as an environment variable or parameter, never spliced into the script', () => {
    for (const script of [LAUNCHER, A_SCRIPT]) {
      expect(script).not.toMatch(/ws-[a-z]/);
      expect(script).toContain('"$@"');
    }
  });

  it('keep only the descriptors they are given', () => {
    expect(LAUNCHER).toContain('$ONMEMOS_KEEP_FDS');
    expect(LAUNCHER_FDS.sort((x, y) => x - y)).toEqual(Object.values(FD).sort((x, y) => x - y));
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
    expect(resolveToolchain('nodejs', '/usr/bin')).toEqual({ template: 'nodejs', path: [] });
  });

  it('says clearly which toolchain is missing', () => {
    const empty = tempDir('onmemos-path-');
    expect(() => resolveToolchain('go', empty, [])).toThrow(UnavailableError);
    expect(() => resolveToolchain('go', empty, [])).toThrow(/^template go needs Go \(`go`\), which is not installed/);
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
