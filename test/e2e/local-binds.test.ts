/**
 * The local provider's internal host binds (LocalProviderOptions.hostBinds, create's `binds`), which only the cloud
 * fakes use for their buckets: a host directory is seen at its target, writable by the session's user (as root, the
 * session's own host uid is given it) or read-only; nothing else can ask for one: a provider made without the option
 * refuses them, a request's `storage` is refused by the provider itself, and a request field of that name is no
 * field at all. Run as root (the launcher stages each bind) and, in the rootless project, as an ordinary user too
 * (the sandbox's outer namespace stages them).
 */
import { execFile } from 'node:child_process';
import {
  chownSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { type HostBind, LocalProvider } from '../../src/providers/local/local.js';
import { normalizeCreateRequest, parseCreateRequest } from '../../src/session/model.js';
import { ROOTLESS, TEST_USER } from '../helpers/cli.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const dirs: string[] = [];
const temp = (prefix: string) => {
  const d = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(d);
  return d;
};
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const request = (over: Record<string, unknown> = {}) =>
  normalizeCreateRequest({
    provider: 'local',
    namespace: 'binds',
    user: 'u',
    ttl_minutes: 10,
    network: 'isolated',
    ...over,
  });

/** The script every bind test runs: it reads the host's file, writes its own, and tries the read-only bind. */
const SCRIPT = [
  'cat /data/rw/host.txt',
  'echo from the session > /data/rw/session.txt',
  'mkdir /data/rw/sub && echo deeper > /data/rw/sub/f',
  'cat /workspace/ro/ro.txt',
  'echo no > /workspace/ro/nope.txt 2>/dev/null && echo WROTE',
  'id -u',
  // The staging directory (in the launcher's namespace) never shows inside.
  '[ ! -e /mnt ] || echo STAGING SHOWS',
].join('; ');

function hostDirs(owner?: { uid: number; gid: number }) {
  const base = temp('onmemos-binds-');
  const rw = join(base, 'rw');
  const ro = join(base, 'ro');
  mkdirSync(rw);
  mkdirSync(ro);
  writeFileSync(join(rw, 'host.txt'), 'from the host\n');
  writeFileSync(join(ro, 'ro.txt'), 'read only\n');
  if (owner)
    for (const p of [base, rw, ro, join(rw, 'host.txt'), join(ro, 'ro.txt')]) chownSync(p, owner.uid, owner.gid);
  const binds: HostBind[] = [
    { source: rw, target: '/data/rw' },
    { source: ro, target: '/workspace/ro', readOnly: true },
  ];
  return { rw, ro, binds };
}

function expectRan(r: { code: number | null; stdout: string; stderr: string }, rw: string): void {
  expect(r.code, r.stderr).toBe(0);
  expect(r.stdout).toBe('from the host\nread only\n1000\n');
  expect(readFileSync(join(rw, 'session.txt'), 'utf8')).toBe('from the session\n');
  expect(readFileSync(join(rw, 'sub', 'f'), 'utf8')).toBe('deeper\n');
}

describe('local host binds (internal: the fakes)', () => {
  it.skipIf(ROOTLESS && TEST_USER)('in this process: a writable and a read-only host directory', async () => {
    const state = temp('onmemos-binds-state-');
    const p = new LocalProvider({ env: { ...process.env, ONMEMOS_STATE_DIR: state }, hostBinds: true });
    const { rw, ro, binds } = hostDirs();
    const s = await p.create(request(), { binds });
    try {
      const proc = await p.exec(s.id, { argv: ['sh', '-c', SCRIPT] });
      let stdout = '';
      let stderr = '';
      proc.stdout.on('data', (d) => (stdout += d));
      proc.stderr.on('data', (d) => (stderr += d));
      const { code } = await proc.exit;
      expectRan({ code, stdout, stderr }, rw);
      if (process.getuid?.() === 0) {
        // As root the session runs as a host uid of its own: the writable directory was given to it, the
        // read-only one left as it was.
        const uid = p.store.read(s.id)!.host_uid;
        expect(uid).not.toBe(0);
        expect(statSync(rw).uid).toBe(uid);
        expect(statSync(join(rw, 'host.txt')).uid).toBe(uid);
        expect(statSync(join(rw, 'session.txt')).uid).toBe(uid);
        expect(statSync(ro).uid).toBe(0);
      }
    } finally {
      await p.delete(s.id);
    }
    expect(readdirSync(ro)).toEqual(['ro.txt']);
  });

  it.runIf(TEST_USER)("as an ordinary user (rootless): the same, staged in the sandbox's own namespace", async () => {
    const user = TEST_USER!;
    const { build } = await import('esbuild');
    const outfile = join(ROOT, 'dist', 'fakes', `local-binds-child-${process.pid}.mjs`);
    await build({
      entryPoints: [join(ROOT, 'test', 'helpers', 'local-binds-child.ts')],
      outfile,
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20.18',
      packages: 'external',
      logLevel: 'warning',
    });
    try {
      const state = temp('onmemos-binds-state-');
      chownSync(state, user.uid, user.gid);
      const { rw, binds } = hostDirs(user);
      const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
        execFile(
          '/usr/bin/setpriv',
          [
            `--reuid=${user.uid}`,
            `--regid=${user.gid}`,
            '--init-groups',
            '--',
            process.execPath,
            outfile,
            state,
            JSON.stringify(binds),
            SCRIPT,
          ],
          { env: { ...process.env, HOME: user.home }, timeout: 60_000 },
          (e, stdout, stderr) => {
            if (e && !stdout) resolve({ code: null, stdout: '', stderr: `${e.message}\n${stderr}` });
            else resolve({ ...(JSON.parse(stdout) as { code: number; stdout: string; stderr: string }) });
          },
        ),
      );
      expectRan(r, rw);
      expect(statSync(join(rw, 'session.txt')).uid).toBe(user.uid);
    } finally {
      rmSync(outfile, { force: true });
    }
  });

  it('a provider made without hostBinds refuses binds, before anything is made', async () => {
    const state = temp('onmemos-binds-state-');
    const p = new LocalProvider({ env: { ...process.env, ONMEMOS_STATE_DIR: state } });
    const { binds } = hostDirs();
    await expect(p.create(request(), { binds })).rejects.toMatchObject({
      code: 'unsupported',
      message: 'provider local mounts no host directories into sessions',
    });
    expect(await p.list()).toEqual([]);
  });

  it('targets and sources are checked', async () => {
    const state = temp('onmemos-binds-state-');
    const p = new LocalProvider({ env: { ...process.env, ONMEMOS_STATE_DIR: state }, hostBinds: true });
    const { rw } = hostDirs();
    for (const target of [
      'data',
      '/',
      '/proc/x',
      '/dev',
      '/sys/fs',
      '/run',
      '/run/onmemos',
      '/a/../b',
      '/a/',
      '/a//b',
    ]) {
      await expect(p.create(request(), { binds: [{ source: rw, target }] }), target).rejects.toMatchObject({
        code: 'invalid_argument',
      });
    }
    await expect(
      p.create(request(), {
        binds: [
          { source: rw, target: '/x' },
          { source: rw, target: '/x' },
        ],
      }),
    ).rejects.toThrow('two directories mounted at /x');
    const link = join(temp('onmemos-binds-'), 'link');
    symlinkSync(rw, link);
    await expect(p.create(request(), { binds: [{ source: link, target: '/x' }] })).rejects.toThrow(
      /cannot mount .*link: not a directory/,
    );
    await expect(p.create(request(), { binds: [{ source: join(rw, 'host.txt'), target: '/x' }] })).rejects.toThrow(
      /not a directory/,
    );
    expect(await p.list()).toEqual([]);
  });

  it("a request's storage is refused by the local provider itself; a `binds` request field is no field", async () => {
    const state = temp('onmemos-binds-state-');
    const p = new LocalProvider({ env: { ...process.env, ONMEMOS_STATE_DIR: state }, hostBinds: true });
    for (const storage of [{ bucket: 'my-bucket' }, { filestore: { ip: '10.0.0.2', share: 'vol1' } }, { volume: {} }]) {
      await expect(p.create(request({ storage }))).rejects.toMatchObject({ code: 'unsupported' });
    }
    expect(await p.list()).toEqual([]);
    // What the API and the CLI parse has no way to carry host binds: an unknown field is dropped.
    const parsed = parseCreateRequest({ provider: 'local', binds: [{ source: '/etc', target: '/x' }] });
    expect(parsed).not.toHaveProperty('binds');
    expect(JSON.stringify(parsed)).not.toContain('/etc');
  });
});
