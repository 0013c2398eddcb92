/**
 * `onmemos check` in-process (runCheck with an injected registry): each probe FAILS, with the evidence, against a
 * backend that breaks that capability (the in-process fake provider, bent one way for each); a probe that does not
 * finish is FAILED at its bound; what a run made is removed whatever happens. And session_duration, the slow probe,
 * once against the real local sandbox with a TTL of seconds.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { TestName, TestResult } from '../../src/check/model.js';
import { runCheck } from '../../src/check/run.js';
import { defaultRegistry } from '../../src/providers/index.js';
import type { ExecSpec, Provider, RemoteProcess } from '../../src/providers/provider.js';
import type { ConnectInfo, Session } from '../../src/session/model.js';
import { type FakeOptions, FakeProvider, fakeRegistry } from '../helpers/fake-provider.js';

const fakes: FakeProvider[] = [];
afterAll(() => {
  for (const f of fakes) f.dispose();
});

/** A fake provider of `kind`, with some of its methods replaced (the broken capability). */
function broken(opts: FakeOptions, bend: (p: FakeProvider) => void): FakeProvider {
  const p = new FakeProvider(opts);
  bend(p);
  fakes.push(p);
  return p;
}

async function one(
  p: Provider,
  test: TestName,
  extra: Partial<Parameters<typeof runCheck>[0]> = {},
): Promise<TestResult> {
  const backend = p.kind as 'local' | 'gke' | 'cloud_run' | 'workstations';
  const r = await runCheck({ registry: fakeRegistry(p), backends: [backend], explicit: true, tests: [test], ...extra });
  const res = r.backends[0]!.results[test]!;
  expect(r.ok).toBe(res.status !== 'failed');
  expect(r.summary[res.status]).toBe(1);
  return res;
}

/**
 * A cloud_run fake that reads as Cloud Run scales (minInstanceCount 0) and has instances: each exec's /tmp is its
 * instance's own directory; with `idleMs`, an instance left that long without an exec is replaced by a new one (an
 * empty /tmp), as a scale to zero and a cold start do. Without it the one instance serves for ever.
 */
function instances(idleMs?: number): FakeProvider & { tmp(): string } {
  const fresh = () => mkdtempSync(join(process.env.ONMEMOS_TEST_TMP || tmpdir(), 'check-instance-'));
  let tmp = fresh();
  let last = Date.now();
  const p = broken({ kind: 'cloud_run' }, (f) => {
    const get = f.get.bind(f);
    f.get = async (id) => {
      const s = await get(id);
      return { ...s, details: { ...s.details, scaling: { min_instances: 0, max_instances: 1 } } };
    };
    const exec = f.exec.bind(f);
    f.exec = async (id, spec) => {
      if (idleMs !== undefined && Date.now() - last >= idleMs) {
        rmSync(tmp, { recursive: true, force: true });
        tmp = fresh();
      }
      const proc = await exec(id, { ...spec, argv: spec.argv.map((a) => a.replaceAll('/tmp/', `${tmp}/`)) });
      void proc.exit.then(() => (last = Date.now()));
      return proc;
    };
  });
  return Object.assign(p, { tmp: () => tmp });
}

/** Nothing the run made is left. */
async function nothingLeft(p: Provider) {
  expect(await p.list()).toEqual([]);
}

describe('each probe FAILS, with the evidence, on a backend that breaks its capability', () => {
  it('one_shot_commands: stderr merged into stdout', async () => {
    const p = broken({}, (f) => {
      const exec = f.exec.bind(f);
      f.exec = (id, spec) => exec(id, { ...spec, argv: ['sh', '-c', '"$@" 2>&1', 'sh', ...spec.argv] });
    });
    const r = await one(p, 'one_shot_commands');
    expect(r).toMatchObject({ status: 'failed', evidence: expect.stringMatching(/stderr "to-stderr\\n".*stderr ""/) });
    await nothingLeft(p);
  });

  it('one_shot_commands: stdin never reaches the command', async () => {
    const p = broken({}, (f) => {
      const exec = f.exec.bind(f);
      f.exec = (id, spec) => exec(id, { ...spec, stdin: false });
    });
    const r = await one(p, 'one_shot_commands');
    expect(r).toMatchObject({
      status: 'failed',
      evidence: expect.stringMatching(/^stdin: .*gave exit 0, stdout "0\\n"/),
    });
  });

  it('persistent_storage: each exec gets a new, empty workspace', async () => {
    const p = broken({}, (f) => {
      const exec = f.exec.bind(f);
      f.exec = async (id, spec) => {
        const fresh = mkdtempSync(join(process.env.ONMEMOS_TEST_TMP || tmpdir(), 'check-fresh-'));
        const proc = await exec(id, { ...spec, cwd: fresh });
        void proc.exit.then(() => rmSync(fresh, { recursive: true, force: true }));
        return proc;
      };
    });
    const r = await one(p, 'persistent_storage');
    expect(r).toMatchObject({
      status: 'failed',
      evidence: expect.stringMatching(/was written with "[0-9a-f]+"; in another exec: cat .* gave exit 1/),
    });
    await nothingLeft(p);
  });

  it('bucket_mount: a backend that says it mounts buckets and does not', async () => {
    const p = broken({ kind: 'gke', capabilities: { storage: ['bucket', 'volume'] } }, () => {});
    const r = await one(p, 'bucket_mount', { bucket: 'my-bucket' });
    expect(r).toMatchObject({ status: 'failed', evidence: expect.stringContaining('/workspace/bucket is not there') });
    await nothingLeft(p);
  });

  it('scale_to_zero: no scaling settings to read, or a minimum of one instance', async () => {
    const none = broken({ kind: 'cloud_run' }, () => {});
    expect(await one(none, 'scale_to_zero')).toMatchObject({
      status: 'failed',
      evidence: expect.stringContaining('carry no scaling settings'),
    });
    const warm = broken({ kind: 'cloud_run' }, (f) => {
      const get = f.get.bind(f);
      f.get = async (id) => {
        const s = await get(id);
        return { ...s, details: { ...s.details, scaling: { min_instances: 1, max_instances: 1 } } };
      };
    });
    expect(await one(warm, 'scale_to_zero')).toMatchObject({
      status: 'failed',
      evidence: expect.stringContaining('keeps 1 instances when idle'),
    });
    await nothingLeft(warm);
  });

  it('scale_to_zero with an idle wait: the same instance still serves after it (its marker still there)', async () => {
    const p = instances();
    const r = await one(p, 'scale_to_zero', { idleWaitSeconds: 1 });
    expect(r).toMatchObject({
      status: 'failed',
      evidence: expect.stringMatching(
        /^after 1 s idle the same instance served: \/tmp\/\.onmemos-check-instance-[0-9a-f]+, written in it before, was still there .*no scale to zero observed, though the service's scaling: minInstanceCount 0/,
      ),
    });
    expect(readdirSync(p.tmp())).toEqual([]); // the marker is removed
    await nothingLeft(p);
  });

  it('session_duration: a backend that ignores the TTL', async () => {
    const p = broken({}, (f) => {
      const get = f.get.bind(f);
      f.get = async (id): Promise<Session> => ({ ...(await get(id)), status: 'running' });
    });
    const r = await one(p, 'session_duration', { ttlMinutes: 0.01, ttlGraceMs: 1_500 });
    expect(r).toMatchObject({
      status: 'failed',
      evidence: expect.stringMatching(/is still running \d+s after its TTL ended/),
    });
    await nothingLeft(p);
  });

  it('isolation_model: sessions that share one machine (the fake is no sandbox)', async () => {
    const p = broken({}, () => {});
    const r = await one(p, 'isolation_model');
    expect(r).toMatchObject({
      status: 'failed',
      evidence: expect.stringMatching(/^session B reads session A's file /),
    });
    await nothingLeft(p);
  });

  it('isolation_model: files and processes apart, a server in A reached from B', async () => {
    // Each exec in a workspace of its session's own and /proc hidden, as a sandbox would: only the network is shared.
    const p = broken({}, (f) => {
      const exec = f.exec.bind(f);
      f.exec = (id, spec) => {
        const scan = spec.argv[0] === 'sh' && /\/proc\/\[0-9\]/.test(spec.argv[2] ?? '');
        const other = spec.argv[0] === 'cat' && !(spec.argv[1] ?? '').includes(id);
        if (scan && !mine.has(id)) return exec(id, { ...spec, argv: ['echo', '0'] });
        if (other) return exec(id, { ...spec, argv: ['sh', '-c', 'exit 1'] });
        return exec(id, spec);
      };
    });
    const mine = new Set<string>();
    const create = p.create.bind(p);
    p.create = async (req, o) => {
      const s = await create(req, o);
      if (mine.size === 0) mine.add(s.id);
      return s;
    };
    const r = await one(p, 'isolation_model');
    expect(r).toMatchObject({
      status: 'failed',
      evidence: expect.stringMatching(/^session B reached the server listening in session A: 127\.0\.0\.1 reached /),
    });
    await nothingLeft(p);
  });

  it('shell_interactive: a tty that ignores the size asked', async () => {
    const p = broken({}, (f) => {
      const exec = f.exec.bind(f);
      f.exec = (id, spec) => exec(id, { ...spec, cols: 80, rows: 24 });
    });
    const r = await one(p, 'shell_interactive');
    expect(r).toMatchObject({ status: 'failed', evidence: expect.stringMatching(/^stty size is not "31 97"; /) });
    await nothingLeft(p);
  });

  it('web_terminal: a server whose terminal page is not there', async () => {
    const server: Server = createServer((_q, res) => {
      res.statusCode = 404;
      res.end('{"error":{"code":"not_found","message":"no such page"}}');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      const p = broken({}, (f) => {
        const connect = f.connect.bind(f);
        f.connect = async (id): Promise<ConnectInfo> => ({
          ...(await connect(id)),
          web_terminal: `${url}/sessions/${id}/terminal`,
        });
      });
      const r = await one(p, 'web_terminal', { server: { url } });
      expect(r).toMatchObject({ status: 'failed', evidence: expect.stringMatching(/\/terminal answered 404/) });
      await nothingLeft(p);
    } finally {
      server.close();
    }
  });
});

describe('scale_to_zero', () => {
  it('without an idle wait: the settings read, and the report says the scale-down was not observed', async () => {
    const r = await one(instances(), 'scale_to_zero');
    expect(r).toMatchObject({
      status: 'passed',
      checked: expect.stringMatching(
        /^the service's scaling: minInstanceCount 0, maxInstanceCount 1; the scale-down itself was not observed \(with --idle-wait SECONDS/,
      ),
    });
  });

  it('with an idle wait: a new instance serves after it (the marker is gone): PASSED, observed', async () => {
    const p = instances(300);
    const r = await runCheck({
      registry: fakeRegistry(p),
      backends: ['cloud_run'],
      explicit: true,
      tests: ['scale_to_zero'],
      idleWaitSeconds: 1,
    });
    expect(r.idleWaitSeconds).toBe(1);
    expect(r.backends[0]!.results.scale_to_zero).toMatchObject({
      status: 'passed',
      checked: expect.stringMatching(
        /^observed: a new instance served after 1 s idle \(scaled to zero\): \/tmp\/\.onmemos-check-instance-[0-9a-f]+, written in the instance that served before, was gone; the service's scaling: minInstanceCount 0, maxInstanceCount 1$/,
      ),
    });
    await nothingLeft(p);
  });
});

describe('bounds and removal', () => {
  it('a probe that does not finish is FAILED at its bound, saying where it was; its session is removed', async () => {
    const p = broken({}, (f) => {
      const exec = f.exec.bind(f);
      f.exec = (id, spec: ExecSpec): Promise<RemoteProcess> => exec(id, { ...spec, argv: ['sleep', '30'] });
    });
    const r = await one(p, 'one_shot_commands', { probeTimeoutMs: 1_000 });
    expect(r).toMatchObject({
      status: 'failed',
      evidence: expect.stringMatching(/did not finish within 1s \(at: running sh -c/),
    });
    await nothingLeft(p);
  });

  it('a create that never finishes is FAILED at the bound; the create is aborted and what it made removed', async () => {
    const p = broken({ createMs: 8_000 }, () => {});
    const r = await one(p, 'one_shot_commands', { probeTimeoutMs: 1_000 });
    expect(r).toMatchObject({
      status: 'failed',
      evidence: expect.stringMatching(/did not finish within 1s \(at: making a session\)/),
    });
    expect(p.calls).toContain('delete');
    await nothingLeft(p);
  });

  it('an abort halfway rejects with its reason, and removes every session made', async () => {
    const p = broken({}, () => {});
    const ac = new AbortController();
    const exec = p.exec.bind(p);
    p.exec = async (id, spec) => {
      ac.abort(new Error('stop here'));
      return exec(id, spec);
    };
    await expect(
      runCheck({
        registry: fakeRegistry(p),
        backends: ['local'],
        explicit: true,
        tests: ['one_shot_commands', 'isolation_model'],
        signal: ac.signal,
      }),
    ).rejects.toThrow('stop here');
    expect(p.calls.filter((c) => c === 'create').length).toBeGreaterThan(0);
    await nothingLeft(p);
  });

  it('a capability the backend lacks is SKIPPED with its capabilities as the reason, never PASSED', async () => {
    const p = broken({ capabilities: { tty: false } }, () => {});
    expect(await one(p, 'shell_interactive')).toMatchObject({
      status: 'skipped',
      reason: expect.stringContaining('no interactive shell (its capabilities: tty false'),
    });
    expect(p.calls).not.toContain('create');
  });
});

describe('session_duration against the local sandbox', () => {
  it('a session with a TTL of seconds is really removed', async () => {
    const dir = mkdtempSync(join(process.env.ONMEMOS_TEST_TMP || tmpdir(), 'check-ttl-'));
    try {
      const registry = defaultRegistry({ ...process.env, ONMEMOS_STATE_DIR: dir, KUBECONFIG: join(dir, 'none') });
      const r = await runCheck({
        registry,
        backends: ['local'],
        explicit: true,
        tests: ['session_duration'],
        ttlMinutes: 0.05,
        ttlGraceMs: 60_000,
      });
      expect(r.backends[0]!.results.session_duration).toMatchObject({
        status: 'passed',
        checked: expect.stringMatching(/TTL of 0.05 min .*removed/),
      });
      expect((await registry.list()).sessions).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
