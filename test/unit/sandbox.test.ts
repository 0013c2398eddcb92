import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { UnavailableError } from '../../src/errors.js';
import {
  bwrapArgs,
  nsenterArgs,
  passwdFile,
  resolveToolchain,
  SANDBOX_UID,
  type SandboxLayout,
} from '../../src/providers/local/sandbox.js';

const layout = (over: Partial<SandboxLayout> = {}): SandboxLayout => ({
  hostname: 'ws-a-b-1-abcd',
  user: 'alice',
  network: 'outbound',
  sessionDir: '/mnt',
  ownResolvConf: true,
  toolchain: { template: 'python', path: [] },
  infoFd: 3,
  lifetimeSeconds: 3600.2,
  ...over,
});

/** Pairs of (flag, src, dest) for every bind in an argv. */
function binds(a: string[]): string[][] {
  const out: string[][] = [];
  a.forEach((x, i) => {
    if (/^--(ro-)?bind(-fd)?$/.test(x)) out.push([x, a[i + 1] ?? '', a[i + 2] ?? '']);
  });
  return out;
}

describe('bwrapArgs', () => {
  it('never binds the host root, /root or /home, and drops to the sandbox uid in new namespaces', () => {
    const a = bwrapArgs(layout());
    const sources = binds(a).map((b) => b[1] ?? '');
    expect(sources).not.toContain('/');
    expect(sources.some((s) => /^\/(root|home)(\/|$)/.test(s))).toBe(false);
    expect(a).toEqual(expect.arrayContaining(['--unshare-all', '--unshare-user']));
    expect(a.slice(a.indexOf('--uid'), a.indexOf('--uid') + 2)).toEqual(['--uid', String(SANDBOX_UID)]);
    expect(a).not.toContain('--share-net');
    expect(binds(a)).toContainEqual(['--bind', '/mnt/data/workspace', '/workspace']);
    expect(binds(a)).toContainEqual(['--ro-bind', '/mnt/resolv.conf', '/etc/resolv.conf']);
    expect(binds(a)).toContainEqual(['--ro-bind', '/usr', '/usr']);
    expect(a.slice(-2)).toEqual(['/usr/bin/sleep', '3601']);
  });

  it('shares the host network only in host mode', () => {
    expect(bwrapArgs(layout({ network: 'host' }))).toContain('--share-net');
    expect(bwrapArgs(layout({ network: 'isolated' }))).not.toContain('--share-net');
  });

  it('binds a toolchain outside /usr read-only at a neutral path', () => {
    const a = bwrapArgs(
      layout({ toolchain: { template: 'go', hostPrefix: '/opt/go', path: ['/opt/onmemos/toolchain/bin'] } }),
    );
    expect(binds(a)).toContainEqual(['--ro-bind', '/opt/go', '/opt/onmemos/toolchain']);
  });
});

describe('nsenterArgs', () => {
  it('passes argv exactly, after --, with no shell in between', () => {
    const argv = ['printf', '%s|', 'a b', "it's", '$(rm -rf /)', '-x'];
    const a = nsenterArgs(42, undefined, argv);
    expect(a.slice(0, 2)).toEqual(['-t', '42']);
    expect(a.slice(a.indexOf('--') + 1)).toEqual(argv);
    expect(a).toEqual(expect.arrayContaining(['-U', '-m', '-p', '-i', '-u', '-n', '-S', String(SANDBOX_UID)]));
  });

  it('changes directory through a fixed script with the directory and argv as parameters', () => {
    const a = nsenterArgs(42, '/tmp/x y', ['echo', '$HOME']);
    const rest = a.slice(a.indexOf('--') + 1);
    expect(rest[0]).toBe('/bin/sh');
    expect(rest[2]).not.toContain('/tmp/x y');
    expect(rest.slice(3)).toEqual(['/tmp/x y', 'echo', '$HOME']);
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
