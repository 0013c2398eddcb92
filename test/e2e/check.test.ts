/**
 * End to end, `onmemos check` through the built binary: every backend at once (the local sandbox, and the kube,
 * Cloud Run and Workstations fakes started as `npm run fake` starts them), the report and its JSON, --test
 * selection, usage errors, a backend that is not configured, the web terminal through `onmemos serve`, and Ctrl-C
 * halfway. Nothing is left behind on any backend. (The slow session_duration probe is run once, in-process, in
 * test/unit/check.test.ts.)
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CloudRunFake, startCloudRunFake } from '../fakes/cloudrun/server.js';
import { type KubeFake, startKubeFake } from '../fakes/kube/server.js';
import { startWorkstationsFake, type WorkstationsFake } from '../fakes/workstations/server.js';
import { CLI, StateDir, waitFor } from '../helpers/cli.js';
import { spawnPty } from '../helpers/pty.js';
import { type Served, startServe } from '../helpers/serve.js';

let kube: KubeFake;
let cloudrun: CloudRunFake;
let ws: WorkstationsFake;
const state = new StateDir();
let env: Record<string, string>;
/** Every test but the slow one. */
const QUICK = [
  'one_shot_commands',
  'persistent_storage',
  'bucket_mount',
  'scale_to_zero',
  'isolation_model',
  'shell_interactive',
  'web_terminal',
];
const tests = (names: string[]) => names.flatMap((t) => ['--test', t]);

const check = (args: string[], o: { env?: Record<string, string>; timeoutMs?: number } = {}) =>
  state.run(['check', ...args], { env: { ...env, ...o.env }, timeoutMs: o.timeoutMs ?? 240_000 });

/** The ids of the sessions on every backend. */
async function left(): Promise<string[]> {
  const r = await state.run(['ls', '--json'], { env });
  expect(r.code, r.stderr).toBe(0);
  return (JSON.parse(r.stdout) as { id: string }[]).map((s) => s.id);
}

beforeAll(async () => {
  const config = join(state.path, 'config');
  // One token and project for both Google fakes: gcloud's variables are shared between them.
  const token = `check-token-${process.pid}`;
  const project = 'check-project';
  [kube, cloudrun, ws] = await Promise.all([
    // Both Google fakes have the bucket my-bucket (a directory of theirs), which their pods and instances mount.
    startKubeFake({ buckets: ['my-bucket'] }),
    startCloudRunFake({ token, project, buckets: ['my-bucket'] }),
    startWorkstationsFake({ token, project, authorizedKeyFiles: [join(config, 'ssh')] }),
  ]);
  env = {
    ...cloudrun.env,
    ...ws.env,
    KUBECONFIG: kube.kubeconfigPath,
    GKE_CREATE_TIMEOUT: '60',
    ONMEMOS_CONFIG_DIR: config,
  };
}, 120_000);
afterAll(async () => {
  await state.run(['rm', '--all'], { env });
  await state.cleanup();
  await Promise.all([kube?.close(), cloudrun?.close(), ws?.close()]);
}, 120_000);

type Json = {
  ok: boolean;
  backends: Record<string, Record<string, { status: string; ms: number; reason?: string; evidence?: string }>>;
  summary: { passed: number; skipped: number; failed: number };
  idle_wait_seconds: number | null;
};

describe('onmemos check', () => {
  it('--backend all: every backend at once, each capability as the matrix says; nothing left behind', async () => {
    const r = await check(['--backend', 'all', '--json', ...tests(QUICK)]);
    expect(r.stderr).toBe('');
    const report = JSON.parse(r.stdout) as Json;
    const status = (b: string) =>
      Object.fromEntries(Object.entries(report.backends[b]!).map(([t, x]) => [t, x.status]));
    const common = {
      one_shot_commands: 'passed',
      persistent_storage: 'passed',
      bucket_mount: 'skipped',
      isolation_model: 'passed',
      shell_interactive: 'passed',
      web_terminal: 'skipped',
    };
    expect(status('local')).toEqual({ ...common, scale_to_zero: 'skipped' });
    expect(status('gke')).toEqual({ ...common, scale_to_zero: 'skipped' });
    // Every fake gives each instance, pod and workstation a network of its own, as the real services do (the front
    // ends and tunnels reach them through their sandboxes: test/fakes/cloudrun/runtime.ts, workstations/runtime.ts).
    expect(status('cloud_run')).toEqual({ ...common, scale_to_zero: 'passed' });
    expect(status('workstations')).toEqual({ ...common, scale_to_zero: 'skipped' });
    for (const b of ['cloud_run', 'workstations']) {
      expect(report.backends[b]!.isolation_model).toMatchObject({
        checked: expect.stringMatching(
          /^B sees neither A's file .* and cannot reach A's server on port \d+ at .*127\.0\.0\.1/,
        ),
      });
    }
    expect(report.backends.gke!.scale_to_zero!.reason).toMatch(/capability matrix.*Pod lifecycle/);
    expect(report.backends.workstations!.scale_to_zero!.reason).toMatch(/capability matrix.*Always-on/);
    expect(report.backends.cloud_run!.scale_to_zero).toMatchObject({
      checked: expect.stringMatching(/minInstanceCount 0.*the scale-down itself was not observed \(with --idle-wait/),
    });
    expect(report.idle_wait_seconds).toBeNull();
    expect(report.backends.local!.bucket_mount!.reason).toMatch(/--bucket/);
    expect(report.backends.local!.web_terminal!.reason).toMatch(/no server serves a web terminal/);
    expect(report.backends.workstations!.persistent_storage).toMatchObject({
      checked: expect.stringMatching(/after a stop\/start/),
    });
    expect(report.summary).toEqual({ passed: 17, skipped: 11, failed: 0 });
    expect(report.ok).toBe(true);
    expect(r.code).toBe(0); // nothing FAILED
    for (const ts of Object.values(report.backends))
      for (const x of Object.values(ts)) expect(x.ms).toBeGreaterThanOrEqual(0);
    expect(await left()).toEqual([]);
  }, 300_000);

  it('scale_to_zero --idle-wait: the scale-down observed where the fake scales to zero; FAILED where it keeps the instance', async () => {
    // A Cloud Run fake of its own that stops an instance after 1 s without a request.
    const idle = await startCloudRunFake({ token: `check-idle-${process.pid}`, scaleToZeroAfterMs: 1_000 });
    try {
      const r = await check(['--backend', 'cloud_run', '--json', '--test', 'scale_to_zero', '--idle-wait', '3'], {
        env: idle.env,
      });
      expect(r.code, r.stderr).toBe(0);
      const report = JSON.parse(r.stdout) as Json;
      expect(report.idle_wait_seconds).toBe(3);
      expect(report.backends.cloud_run!.scale_to_zero).toMatchObject({
        status: 'passed',
        checked: expect.stringMatching(
          /^observed: a new instance served after 3 s idle \(scaled to zero\): \/tmp\/\.onmemos-check-instance-[0-9a-f]+, written in the instance that served before, was gone; the service's scaling: minInstanceCount 0/,
        ),
      });
      expect(idle.services.all()).toEqual([]);
    } finally {
      await idle.close();
    }
    // The shared fake keeps an idle instance (no scaleToZeroAfterMs): the same instance serves after the wait.
    const kept = await check(['--backend', 'cloud_run', '--json', '--test', 'scale_to_zero', '--idle-wait', '1']);
    expect(kept.code, kept.stderr).toBe(1);
    expect((JSON.parse(kept.stdout) as Json).backends.cloud_run!.scale_to_zero).toMatchObject({
      status: 'failed',
      evidence: expect.stringMatching(/^after 1 s idle the same instance served: .* was still there/),
    });
    expect(await left()).toEqual([]);
  }, 120_000);

  it('--idle-wait takes a whole number of seconds (1 to 3600): else a usage error', async () => {
    for (const bad of ['0', '1.5', 'soon', '3601']) {
      const r = await check(['--backend', 'cloud_run', '--test', 'scale_to_zero', '--idle-wait', bad]);
      expect(r.code, bad).toBe(2);
      expect(r.stderr).toMatch(/--idle-wait.*a whole number of seconds from 1 to 3600/);
    }
  });

  it("the text report: the document's format, SKIPPED with its reason, the counts; no colour in a pipe", async () => {
    const r = await check(['--backend', 'local', '--test', 'one_shot_commands', '--test', 'scale_to_zero']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('🚀 Session Backends Capability Test Suite - LOCAL');
    expect(r.stdout).toMatch(/🔍 Testing: one_shot_commands\n {3}Result: ✅ PASSED\n/);
    expect(r.stdout).toMatch(/🔍 Testing: scale_to_zero\n {3}Result: ⏭️ {2}SKIPPED\n {3}Reason: .*no scale to zero/);
    expect(r.stdout).toContain('📊 Session Backends Capability Test Summary');
    expect(r.stdout).toMatch(/one_shot_commands +✅ PASSED\nscale_to_zero +⏭️ {2}SKIPPED\n/);
    expect(r.stdout).toMatch(/✅ Passed : 1\n⏭️ {2}Skipped: 1\n❌ Failed : 0\n$/);
    expect(r.stdout).not.toContain('\x1b[');
    expect(r.stdout).not.toContain('bucket_mount'); // --test chose two
    expect(await left()).toEqual([]);
  });

  it('on a terminal: the verdicts are coloured (not with NO_COLOR), and stderr says which probe runs', async () => {
    const onTty = (extra: Record<string, string>) =>
      new Promise<{ code: number; out: string }>((resolve) => {
        let out = '';
        const p = spawnPty(
          CLI[0]!,
          [...CLI.slice(1), 'check', '--backend', 'local', '--test', 'one_shot_commands', '--test', 'scale_to_zero'],
          {
            cols: 200,
            rows: 50,
            env: { ...process.env, ...state.env, ...env, TERM: 'xterm-256color', ...extra } as Record<string, string>,
          },
          (d) => {
            out += d;
          },
        );
        const timer = setTimeout(() => p.kill('SIGKILL'), 60_000);
        p.onExit(({ exitCode }) => {
          clearTimeout(timer);
          resolve({ code: exitCode, out });
        });
      });
    const coloured = await onTty({});
    expect(coloured.code, coloured.out).toBe(0);
    expect(coloured.out).toContain('\x1b[32mPASSED\x1b[0m');
    expect(coloured.out).toContain('\x1b[33mSKIPPED\x1b[0m');
    expect(coloured.out).toMatch(/check: local: one_shot_commands/);
    expect(coloured.out).toMatch(/check: removing the 1 session\(s\) it made/);
    const plain = await onTty({ NO_COLOR: '1' });
    expect(plain.code, plain.out).toBe(0);
    expect(plain.out).not.toContain('\x1b[');
    expect(plain.out).toContain('✅ PASSED');
    expect(await left()).toEqual([]);
  }, 120_000);

  it('--test selects; a bucket on a provider that cannot mount one is SKIPPED with the capability', async () => {
    const r = await check(['--backend', 'local', '--json', '--bucket', 'my-bucket', '--test', 'bucket_mount']);
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as Json;
    expect(Object.keys(report.backends)).toEqual(['local']);
    expect(report.backends.local).toEqual({
      bucket_mount: {
        status: 'skipped',
        ms: expect.any(Number),
        reason: expect.stringMatching(/cannot mount buckets/),
      },
    });
  });

  it('--bucket: gke and cloud_run mount it (the fakes have it) and PASS; nothing of the check is left in it', async () => {
    for (const backend of ['gke', 'cloud_run']) {
      const r = await check(['--backend', backend, '--json', '--bucket', 'my-bucket', '--test', 'bucket_mount']);
      expect(r.code, r.stdout).toBe(0);
      const report = JSON.parse(r.stdout) as Json;
      expect(report.backends).toEqual({
        [backend]: {
          bucket_mount: {
            status: 'passed',
            ms: expect.any(Number),
            checked: 'bucket my-bucket mounted at /workspace/bucket: a file written there was listed (and removed)',
          },
        },
      });
    }
    // The probe's file went through each fake's bucket directory and was removed from it.
    expect(readdirSync(kube.buckets.dir('my-bucket'))).toEqual([]);
    expect(readdirSync(cloudrun.buckets.dir('my-bucket'))).toEqual([]);
    expect(await left()).toEqual([]);
  }, 240_000);

  it('a bucket the backends do not have is FAILED with the evidence: the probe fails on purpose', async () => {
    const r = await check(['--backend', 'all', '--json', '--bucket', 'no-such-bucket', '--test', 'bucket_mount']);
    const report = JSON.parse(r.stdout) as Json;
    // gke: the pod stays ContainerCreating, and the provider reads the kubelet's FailedMount event.
    expect(report.backends.gke!.bucket_mount).toMatchObject({
      status: 'failed',
      evidence: expect.stringContaining(
        'FailedMount: MountVolume.SetUp failed for volume "bucket" : rpc error: code = NotFound desc = failed to get GCS bucket "no-such-bucket"',
      ),
    });
    // cloud_run: the revision fails.
    expect(report.backends.cloud_run!.bucket_mount).toMatchObject({
      status: 'failed',
      evidence: expect.stringContaining("bucket 'no-such-bucket' does not exist"),
    });
    expect(report.summary).toEqual({ passed: 0, skipped: 2, failed: 2 });
    expect(report.ok).toBe(false);
    expect(r.code).toBe(1);
    expect(await left()).toEqual([]);
  }, 240_000);

  it('usage errors exit 2: an unknown test, an unknown backend', async () => {
    const t = await check(['--test', 'warp_drive']);
    expect(t.code).toBe(2);
    expect(t.stderr).toMatch(/warp_drive.*unknown test/);
    expect(t.stdout).toBe('');
    const b = await check(['--backend', 'mainframe']);
    expect(b.code).toBe(2);
    expect(b.stderr).toMatch(/mainframe/);
  });

  it('a backend not configured: named, an error (exit 1); under all, SKIPPED with why', async () => {
    const none = { KUBECONFIG: join(state.path, 'no-such-kubeconfig') };
    const named = await check(['--backend', 'gke', '--test', 'one_shot_commands'], { env: none });
    expect(named.code).toBe(1);
    expect(named.stderr).toMatch(/^onmemos: provider gke is not configured: /);
    expect(named.stdout).toBe('');
    const all = await check(['--backend', 'all', '--json', '--test', 'scale_to_zero'], { env: none });
    expect(all.code, all.stderr).toBe(0);
    const report = JSON.parse(all.stdout) as Json;
    expect(report.backends.gke!.scale_to_zero).toMatchObject({
      status: 'skipped',
      reason: expect.stringMatching(/^not configured: /),
    });
    expect(report.backends.cloud_run!.scale_to_zero!.status).toBe('passed');
  }, 120_000);

  it('Ctrl-C halfway removes every session it made, and exits 130', async () => {
    let sent = false;
    // session_duration holds a session for its TTL (a minute): long enough to be interrupted halfway.
    const r = await state.run(
      ['check', '--backend', 'local', '--test', 'session_duration', '--test', 'isolation_model'],
      {
        env,
        timeoutMs: 120_000,
        onSpawn: (child) => {
          void waitFor(async () => (await left()).length > 0, 60_000, 50).then(() => {
            sent = child.kill('SIGINT');
          });
        },
      },
    );
    expect(sent).toBe(true);
    expect(r.code, r.stderr).toBe(130);
    expect(r.stderr).toMatch(/interrupted/);
    expect(await left()).toEqual([]);
  }, 180_000);
});

describe('onmemos check through onmemos serve', () => {
  let server: Served;
  const KEY = 'check-remote-key-0123456789abcdef';
  const own = new StateDir();
  beforeAll(async () => {
    server = await startServe({ ...own.env, ONMEMOS_API_KEYS: KEY, KUBECONFIG: join(own.path, 'none') });
  });
  afterAll(async () => {
    await server?.stop();
    await own.cleanup();
  });

  it('web_terminal PASSES where a server serves it; a backend the server lacks is SKIPPED under all', async () => {
    const remote = { ONMEMOS_SERVER: server.url, ONMEMOS_API_KEY: KEY, KUBECONFIG: join(own.path, 'none') };
    const r = await own.run(
      ['check', '--json', '--test', 'web_terminal', '--test', 'shell_interactive', '--test', 'one_shot_commands'],
      { env: remote, timeoutMs: 180_000 },
    );
    const report = JSON.parse(r.stdout) as Json;
    expect(report.backends.local).toMatchObject({
      web_terminal: { status: 'passed' },
      shell_interactive: { status: 'passed' },
      one_shot_commands: { status: 'passed' },
    });
    expect(report.backends.gke!.web_terminal).toMatchObject({
      status: 'skipped',
      reason: expect.stringMatching(/not configured/),
    });
    expect(r.code, r.stderr).toBe(0);
    const ls = await own.run(['ls', '--json'], { env: remote });
    expect(JSON.parse(ls.stdout)).toEqual([]);
  }, 240_000);
});

describe('onmemos check through onmemos serve, every backend behind it', () => {
  let server: Served;
  const KEY = 'check-remote-all-key-0123456789abcdef';
  const own = new StateDir();
  beforeAll(async () => {
    server = await startServe({ ...own.env, ...env, ONMEMOS_API_KEYS: KEY });
  });
  afterAll(async () => {
    await server?.stop();
    await own.cleanup();
  });

  it("the server's backends: web_terminal PASSES on each; the rest as in local mode; nothing left", async () => {
    const remote = { ONMEMOS_SERVER: server.url, ONMEMOS_API_KEY: KEY };
    const r = await own.run(['check', '--json', ...tests(QUICK)], { env: remote, timeoutMs: 240_000 });
    expect(r.stderr).toBe('');
    const report = JSON.parse(r.stdout) as Json;
    const status = (b: string) =>
      Object.fromEntries(Object.entries(report.backends[b]!).map(([t, x]) => [t, x.status]));
    const common = {
      one_shot_commands: 'passed',
      persistent_storage: 'passed',
      bucket_mount: 'skipped',
      isolation_model: 'passed',
      shell_interactive: 'passed',
      web_terminal: 'passed',
      scale_to_zero: 'skipped',
    };
    expect(status('local')).toEqual(common);
    expect(status('gke')).toEqual(common);
    expect(status('cloud_run')).toEqual({ ...common, scale_to_zero: 'passed' });
    expect(status('workstations')).toEqual(common);
    expect(r.code, r.stdout).toBe(0);
    const ls = await own.run(['ls', '--json'], { env: remote });
    expect(JSON.parse(ls.stdout)).toEqual([]);
  }, 300_000);
});
