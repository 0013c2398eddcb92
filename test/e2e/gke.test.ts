/**
 * End to end, the gke provider through the built binary: every command against the Kubernetes API fake
 * (test/fakes/kube), next to local sessions; through a pty; through `onmemos serve`; and real kubectl against the
 * same pods (shell --via kubectl, and what onmemos leaves in the cluster).
 */
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type KubeFake, startKubeFake } from '../fakes/kube/server.js';
import { CLI, StateDir, waitFor } from '../helpers/cli.js';
import { spawnPty } from '../helpers/pty.js';
import { type Served, startServe } from '../helpers/serve.js';

const execFileP = promisify(execFile);
let kube: KubeFake;
const state = new StateDir();
let env: Record<string, string>;
let id = '';

const gke = (args: string[], opts: { input?: string; env?: Record<string, string> } = {}) =>
  state.run(args, { ...opts, env: { ...env, ...opts.env } });
const kubectl = async (...args: string[]) =>
  execFileP(
    '/usr/bin/kubectl',
    ['--kubeconfig', kube.kubeconfigPath, '--cache-dir', join(kube.dir, 'kcache'), ...args],
    {
      timeout: 30_000,
    },
  );
/** The pods of onmemos sessions in the fake, by name. */
const pods = async () =>
  (await kubectl('get', 'pods', '-A', '-l', 'app.kubernetes.io/managed-by=onmemos', '-o', 'name')).stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => l.replace(/^pod\//, ''));

beforeAll(async () => {
  kube = await startKubeFake({ network: 'isolated', buckets: ['team-bucket'] });
  env = { KUBECONFIG: kube.kubeconfigPath, GKE_CREATE_TIMEOUT: '60' };
  const r = await gke(['create', '--provider', 'gke', '--namespace', 'team-a', '--user', 'alice', '--json']);
  expect(r.code, r.stderr).toBe(0);
  id = JSON.parse(r.stdout).id;
});
afterAll(async () => {
  await state.cleanup();
  await kube.close();
});

describe('create, ls, get, rm', () => {
  it('create --json prints the session: a pod, running, and nothing but JSON on stdout', async () => {
    const s = JSON.parse((await gke(['get', id, '--json'])).stdout);
    expect(s).toMatchObject({ id, provider: 'gke', namespace: 'team-a', user: 'alice', status: 'running' });
    expect(s.details).toMatchObject({ pod: id, k8s_namespace: 'onmemos-team-a', context: 'onmemos-fake' });
    // The cluster is the state: the pod carries the session, as kubectl sees it.
    const { stdout } = await kubectl('get', 'pod', id, '-n', 'onmemos-team-a', '-o', 'json');
    const pod = JSON.parse(stdout);
    expect(pod.metadata.labels['onmemos.dev/session']).toBe(id);
    expect(pod.metadata.annotations['onmemos.dev/expires-at']).toBe(s.expires_at);
  });

  it('ls lists gke sessions next to local ones; --provider filters', async () => {
    const local = await state.create('--provider', 'local', '--network', 'isolated');
    const all = JSON.parse((await gke(['ls', '--json'])).stdout) as { id: string; provider: string }[];
    expect(all.map((s) => [s.id, s.provider])).toEqual(
      expect.arrayContaining([
        [id, 'gke'],
        [local, 'local'],
      ]),
    );
    const only = JSON.parse((await gke(['ls', '--provider', 'gke', '--json'])).stdout) as { id: string }[];
    expect(only.map((s) => s.id)).toEqual([id]);
    await gke(['rm', local]);
  });

  it('auto with --long-lived picks gke, and says why', async () => {
    const r = await gke(['create', '--provider', 'auto', '--long-lived', '--json', '--namespace', 'auto']);
    expect(r.code, r.stderr).toBe(0);
    const s = JSON.parse(r.stdout);
    expect(s).toMatchObject({ provider: 'gke', details: { provider_reason: 'auto: long_lived' } });
    const rm = await gke(['rm', s.id]);
    expect(rm.code, rm.stderr).toBe(0);
    expect(await pods()).not.toContain(s.id);
    expect(await gke(['get', s.id])).toMatchObject({ code: 1, stderr: expect.stringContaining('no such session') });
  });

  it("a bad image fails the create in one line with the pod's own reason, and leaves nothing", async () => {
    kube.faults.set({ imagePull: 'no-such-image' });
    try {
      const r = await gke(['create', '--provider', 'gke', '--namespace', 'bad', '--image', 'no-such-image:1']);
      expect(r.code).not.toBe(0);
      expect(r.stdout).toBe('');
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/^onmemos: pod ws-bad-\S+ cannot start: (ErrImagePull|ImagePullBackOff): /);
      expect((await pods()).filter((p) => p.startsWith('ws-bad-'))).toEqual([]);
    } finally {
      kube.faults.clear();
    }
  });

  it("--bucket mounts the bucket (GCS FUSE) at /workspace/bucket: the fake's directory for it", async () => {
    const r = await gke(['create', '--provider', 'gke', '--namespace', 'gcs', '--bucket', 'team-bucket', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const s = JSON.parse(r.stdout);
    try {
      writeFileSync(join(kube.buckets.dir('team-bucket'), 'from-host'), 'host\n');
      const x = await gke([
        'exec',
        s.id,
        '--',
        'sh',
        '-c',
        'echo pod > /workspace/bucket/from-pod; cat /workspace/bucket/from-host',
      ]);
      expect(x).toMatchObject({ code: 0, stdout: 'host\n' });
      expect(readFileSync(join(kube.buckets.dir('team-bucket'), 'from-pod'), 'utf8')).toBe('pod\n');
    } finally {
      await gke(['rm', s.id]);
    }
  });

  it('a bucket that does not exist fails the create at once with the FailedMount event, and leaves nothing', async () => {
    const r = await gke(['create', '--provider', 'gke', '--namespace', 'nogcs', '--bucket', 'no-such-bucket']);
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(
      /^onmemos: pod ws-nogcs-\S+ cannot start: FailedMount: MountVolume\.SetUp failed for volume "bucket" : rpc error: code = NotFound desc = failed to get GCS bucket "no-such-bucket": storage: bucket doesn't exist$/m,
    );
    expect((await pods()).filter((p) => p.startsWith('ws-nogcs-'))).toEqual([]);
  });

  it('--storage-size gives a PVC at /workspace, removed with the session unless --keep-storage', async () => {
    const r = await gke(['create', '--provider', 'gke', '--namespace', 'vol', '--storage-size', '1Gi', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const s = JSON.parse(r.stdout);
    expect(s.details.pvc).toBe(`${s.id}-workspace`);
    const pvcs = async () => (await kubectl('get', 'pvc', '-n', 'onmemos-vol', '-o', 'name')).stdout;
    expect(await pvcs()).toContain(`${s.id}-workspace`);
    await gke(['rm', s.id]);
    expect(await pvcs()).not.toContain(`${s.id}-workspace`);
    const kept = JSON.parse(
      (
        await gke([
          'create',
          '--provider',
          'gke',
          '--namespace',
          'vol',
          '--storage-size',
          '1Gi',
          '--keep-storage',
          '--json',
        ])
      ).stdout,
    );
    await gke(['rm', kept.id]);
    expect(await pvcs()).toContain(`${kept.id}-workspace`);
  });

  it('--context chooses the kubeconfig context; one that is not there is a usage error', async () => {
    expect((await gke(['--context', 'onmemos-fake', 'ls', '--provider', 'gke'])).stdout).toContain(id);
    const r = await gke(['--context', 'nope', 'ls']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^onmemos: --context nope: context "nope" is not in /);
  });

  it('an unreachable cluster: ls still lists what it can reach and names gke in one stderr line', async () => {
    const dead = join(kube.dir, 'dead.kubeconfig');
    writeFileSync(
      dead,
      'current-context: dead\nclusters: [{name: d, cluster: {server: "http://127.0.0.1:1", insecure-skip-tls-verify: true}}]\n' +
        'users: [{name: u, user: {token: t}}]\ncontexts: [{name: dead, context: {cluster: d, user: u}}]\n',
    );
    const local = await state.create('--provider', 'local', '--network', 'isolated');
    const r = await gke(['ls'], { env: { KUBECONFIG: dead } });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(local);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/gke.*127\.0\.0\.1:1/);
    await gke(['rm', local]);
  });
});

describe('exec', () => {
  it('exit code, stdout and stderr apart, piped stdin to EOF, env and workdir', async () => {
    expect(await gke(['exec', id, '--', 'sh', '-c', 'echo out; echo err >&2; exit 3'])).toMatchObject({
      code: 3,
      stdout: 'out\n',
      stderr: 'err\n',
    });
    expect((await gke(['exec', id, '--', 'wc', '-l'], { input: 'a\nb\n' })).stdout.trim()).toBe('2');
    const r = await gke([
      'exec',
      id,
      '-e',
      'X=a b $c',
      '-w',
      '/tmp',
      '--',
      'sh',
      '-c',
      'echo "$X|$(pwd)|$WORKSPACE_ID"',
    ]);
    expect(r.stdout).toBe(`a b $c|/tmp|${id}\n`);
    expect(await gke(['exec', id, '--', 'no-such-command'])).toMatchObject({
      code: 127,
      stderr: 'onmemos: no-such-command: command not found\n',
    });
  });

  it('--timeout exits 124 and leaves no process of the command in the pod', async () => {
    const r = await gke(['exec', id, '--timeout', '1', '--', 'sh', '-c', 'sleep 4711 & sleep 4712; echo never']);
    expect(r.code).toBe(124);
    const left = async () =>
      (await gke(['exec', id, '--', 'sh', '-c', 'cat /proc/[0-9]*/cmdline 2>/dev/null | tr "\\0" " "'])).stdout;
    expect(
      await waitFor(async () => {
        const out = await left(); // its own command line is there: the look itself ran
        return out.includes('cmdline') && !/sleep 471[12]/.test(out);
      }),
    ).toBe(true);
  });

  it('Ctrl-C (SIGINT to onmemos) ends the remote command: 130, nothing left', async () => {
    const r = await state.run(['exec', id, '--', 'sh', '-c', 'echo started; sleep 4722'], {
      env,
      onSpawn: (c) => {
        c.stdout?.once('data', () => c.kill('SIGINT'));
      },
    });
    expect(r.code).toBe(130);
    const left = async () =>
      (await gke(['exec', id, '--', 'sh', '-c', 'cat /proc/[0-9]*/cmdline 2>/dev/null | tr "\\0" " "'])).stdout;
    expect(
      await waitFor(async () => {
        const out = await left();
        return out.includes('cmdline') && !/sleep 4722/.test(out);
      }),
    ).toBe(true);
  });
});

describe('shell', () => {
  const term = (args: string[]) => {
    let out = '';
    const p = spawnPty(
      CLI[0]!,
      [...CLI.slice(1), ...args],
      {
        cols: 100,
        rows: 30,
        name: 'xterm-256color',
        env: { ...process.env, ...state.env, ...env, TERM: 'xterm-256color', KUBECTL: '/usr/bin/kubectl' } as Record<
          string,
          string
        >,
      },
      (d) => {
        out += d;
      },
    );
    const exit = new Promise<number>((r) => p.onExit((e) => r(e.exitCode)));
    return {
      p,
      out: () => out,
      exit,
      until: (re: RegExp) => waitFor(() => re.test(out), 20_000, 20),
    };
  };

  it("onmemos shell: a tty of the terminal's size, and the exit code of the shell", async () => {
    const t = term(['shell', id]);
    t.p.write('stty size; tty; exit 5\r');
    const guard = setTimeout(() => t.p.kill('SIGKILL'), 30_000);
    const code = await t.exit;
    clearTimeout(guard);
    expect(t.out()).toMatch(/30 100/);
    expect(t.out()).toMatch(/\/dev\/pts\/\d+/);
    expect(code).toBe(5);
  });

  it('onmemos shell --via kubectl runs kubectl exec -it into the same pod', async () => {
    const t = term(['shell', id, '--via', 'kubectl']);
    t.p.write('echo "in:$WORKSPACE_ID"; exit 4\r');
    const guard = setTimeout(() => t.p.kill('SIGKILL'), 30_000);
    const code = await t.exit;
    clearTimeout(guard);
    expect(t.out()).toContain(`in:${id}`);
    expect(code).toBe(4);
  });
});

describe('through onmemos serve', () => {
  let served: Served;
  const key = 'gke-e2e-key-0123456789abcdef';
  beforeAll(async () => {
    served = await startServe({ ...state.env, ...env, ONMEMOS_API_KEYS: key });
  });
  afterAll(() => served.stop());

  it('provider gke over the API, the exec WebSocket and the legacy routes', async () => {
    const remote = { ONMEMOS_SERVER: served.url, ONMEMOS_API_KEY: key };
    const made = await gke(['create', '--provider', 'gke', '--namespace', 'srv', '--json'], { env: remote });
    expect(made.code, made.stderr).toBe(0);
    const sid = JSON.parse(made.stdout).id;
    expect(await gke(['exec', sid, '--', 'sh', '-c', 'cat; exit 6'], { env: remote, input: 'piped' })).toMatchObject({
      code: 6,
      stdout: 'piped',
    });
    const res = await fetch(`${served.url}/v1/sessions/${sid}/execute`, {
      method: 'POST',
      headers: { 'x-api-key': key, 'content-type': 'application/json' },
      body: JSON.stringify({ command: 'echo $NAMESPACE' }),
    });
    expect(await res.json()).toMatchObject({ stdout: 'srv\n', returncode: 0, success: true });
    const legacy = await fetch(`${served.url}/v1/cloudrun/workspaces/${sid}/execute?command=pwd`, {
      method: 'POST',
      headers: { 'x-api-key': key },
    });
    expect(legacy.status).toBe(200);
    expect(await legacy.json()).toMatchObject({ stdout: '/workspace\n' });
    // The document's JSON shell, on a gke session.
    const { default: WebSocket } = await import('ws');
    const ws = new WebSocket(`${served.url.replace('http', 'ws')}/v1/sessions/${sid}/shell?api_key=${key}`);
    const replies: Record<string, unknown>[] = [];
    const two = new Promise<void>((resolve, reject) => {
      const guard = setTimeout(() => reject(new Error(`JSON shell: ${JSON.stringify(replies)}`)), 20_000);
      ws.on('message', (d) => {
        replies.push(JSON.parse(String(d)));
        if (replies.length === 2) {
          clearTimeout(guard);
          resolve();
        }
      });
    });
    ws.on('open', () => {
      ws.send(JSON.stringify({ type: 'command', command: 'echo $USER; echo warn >&2' }));
      ws.send(JSON.stringify({ type: 'command', command: 'exit 4' }));
    });
    await two;
    ws.close();
    expect(replies).toEqual([
      { type: 'command_result', stdout: 'user\n', stderr: 'warn\n', returncode: 0, success: true },
      { type: 'command_result', stdout: '', stderr: '', returncode: 4, success: false },
    ]);
    expect((await gke(['rm', sid], { env: remote })).code).toBe(0);
    expect(await pods()).not.toContain(sid);
  });
});
