import { execFile, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { signalArgv, wrappedArgv } from '../../src/providers/gke/exec.js';
import { forgetKubeconfig, resolveKube } from '../../src/providers/gke/kubeconfig.js';
import {
  candidateNamespaces,
  checkNames,
  gkeSettings,
  podObject,
  podProblem,
  sessionOf,
  statusOf,
} from '../../src/providers/gke/pod.js';
import { normalizeCreateRequest } from '../../src/session/model.js';

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'onmemos-gke-unit-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function kubeconfig(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

describe('kubeconfig', () => {
  const a = kubeconfig(
    'a.yaml',
    `apiVersion: v1
kind: Config
current-context: one
clusters:
- name: c1
  cluster: {server: "https://10.0.0.1", certificate-authority: ca.crt}
users:
- name: u1
  user: {token: secret-a}
contexts:
- name: one
  context: {cluster: c1, user: u1}
`,
  );
  const b = kubeconfig(
    'b.yaml',
    `current-context: two
clusters:
- name: c1
  cluster: {server: "https://shadowed"}
- name: c2
  cluster: {server: "http://127.0.0.1:1", insecure-skip-tls-verify: true}
users:
- name: u2
  user: {tokenFile: tok}
contexts:
- name: two
  context: {cluster: c2, user: u2}
- name: broken
  context: {cluster: nowhere, user: u2}
`,
  );

  it('merges KUBECONFIG as kubectl does: the first file to name an entry or a current context wins', () => {
    forgetKubeconfig();
    const r = resolveKube({ KUBECONFIG: `${a}:${b}` });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.target.context).toBe('one');
    expect(r.target.cluster.server).toBe('https://10.0.0.1');
    expect(r.target.cluster['certificate-authority']).toBe(join(dir, 'ca.crt')); // relative to its file
    expect(r.target.user.token).toBe('secret-a');
  });

  it('GKE_CONTEXT (the global --context) chooses another context; paths stay relative to their own file', () => {
    forgetKubeconfig();
    const r = resolveKube({ KUBECONFIG: `${a}:${b}`, GKE_CONTEXT: 'two' });
    expect(r.ok && r.target.cluster.server).toBe('http://127.0.0.1:1');
    expect(r.ok && r.target.user.tokenFile).toBe(join(dir, 'tok'));
  });

  it('says why gke is not configured: no file, no such context, a context without a cluster, bad YAML', () => {
    forgetKubeconfig();
    const none = resolveKube({ KUBECONFIG: join(dir, 'missing.yaml') });
    expect(none).toMatchObject({ ok: false, reason: expect.stringContaining('no kubeconfig') });
    expect(resolveKube({ KUBECONFIG: a, GKE_CONTEXT: 'nope' })).toMatchObject({
      ok: false,
      reason: expect.stringContaining('context "nope" is not in'),
    });
    expect(resolveKube({ KUBECONFIG: b, GKE_CONTEXT: 'broken' })).toMatchObject({
      ok: false,
      reason: expect.stringContaining('names no cluster'),
    });
    const bad = kubeconfig('bad.yaml', 'clusters: [\n');
    expect(resolveKube({ KUBECONFIG: bad })).toMatchObject({
      ok: false,
      reason: expect.stringContaining('cannot read'),
    });
    const noCurrent = kubeconfig('nocurrent.yaml', 'clusters: []\n');
    expect(resolveKube({ KUBECONFIG: noCurrent })).toMatchObject({
      ok: false,
      reason: expect.stringContaining('no current context'),
    });
  });

  it('without KUBECONFIG reads ~/.kube/config', () => {
    forgetKubeconfig();
    const home = join(dir, 'home');
    mkdirSync(join(home, '.kube'), { recursive: true });
    writeFileSync(
      join(home, '.kube', 'config'),
      'current-context: h\nclusters: [{name: c, cluster: {server: "https://h"}}]\ncontexts: [{name: h, context: {cluster: c}}]\n',
    );
    const r = resolveKube({ HOME: home });
    expect(r.ok && r.target.context).toBe('h');
  });
});

describe('pods', () => {
  const settings = gkeSettings({});
  const req = normalizeCreateRequest({
    namespace: 'team-a',
    user: 'alice',
    template: 'nodejs',
    env: { DEBUG: '1' },
    limits: { cpu: 0.5, memory: '512m', disk: '2g' },
  });
  const id = 'ws-team-a-alice-1756062811-ab12';

  it('a hardened pod that carries the session in labels and annotations', () => {
    const pod = podObject(id, req, settings, Date.parse('2026-01-01T00:00:00Z'));
    expect(pod.metadata.labels).toEqual({
      'app.kubernetes.io/managed-by': 'onmemos',
      'onmemos.dev/session': id,
      'onmemos.dev/namespace': 'team-a',
      'onmemos.dev/user': 'alice',
      'onmemos.dev/template': 'nodejs',
    });
    expect(pod.metadata.annotations['onmemos.dev/expires-at']).toBe('2026-01-01T01:00:00.000Z');
    const c = pod.spec.containers[0]!;
    expect(c.image).toBe('node:20-slim');
    expect(c.resources.limits).toEqual({ cpu: '500m', memory: '512Mi', 'ephemeral-storage': '2048Mi' });
    expect(c.resources.requests).toEqual(c.resources.limits); // Autopilot: requests = limits
    expect(c.securityContext).toEqual({
      allowPrivilegeEscalation: false,
      privileged: false,
      capabilities: { drop: ['ALL'] },
    });
    expect(pod.spec.securityContext).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
    expect(pod.spec.automountServiceAccountToken).toBe(false);
    expect(c.env).toEqual(
      expect.arrayContaining([
        { name: 'WORKSPACE_ID', value: id },
        { name: 'NAMESPACE', value: 'team-a' },
        { name: 'USER', value: 'alice' },
        { name: 'BUCKET_NAME', value: 'onmemos-team-a-alice-1756062811-ab12' },
        { name: 'DEBUG', value: '1' },
      ]),
    );
  });

  it('image: --image, then GKE_DEFAULT_IMAGE, then the template; a bucket is a gcsfuse CSI volume; a volume a PVC', () => {
    const withImage = normalizeCreateRequest({
      image: 'busybox:1.36',
      storage: { bucket: 'my-bucket', volume: { size: '5Gi' } },
    });
    const pod = podObject(id, withImage, gkeSettings({ GKE_DEFAULT_IMAGE: 'alpine:3' }), 0);
    expect(pod.spec.containers[0]!.image).toBe('busybox:1.36');
    expect(podObject(id, req, gkeSettings({ GKE_DEFAULT_IMAGE: 'alpine:3' }), 0).spec.containers[0]!.image).toBe(
      'alpine:3',
    );
    expect(pod.metadata.annotations['gke-gcsfuse/volumes']).toBe('true');
    expect(pod.spec.volumes).toEqual(
      expect.arrayContaining([
        { name: 'workspace', persistentVolumeClaim: { claimName: `${id}-workspace` } },
        {
          name: 'bucket',
          csi: {
            driver: 'gcsfuse.csi.storage.gke.io',
            volumeAttributes: { bucketName: 'my-bucket', mountOptions: 'implicit-dirs' },
          },
        },
      ]),
    );
    expect(pod.spec.containers[0]!.volumeMounts).toEqual(
      expect.arrayContaining([{ name: 'bucket', mountPath: '/workspace/bucket' }]),
    );
  });

  it('ids map to candidate namespaces; names too long for Kubernetes are refused before anything is made', () => {
    expect(candidateNamespaces('onmemos', id)).toEqual(['onmemos-team', 'onmemos-team-a']);
    expect(candidateNamespaces('onmemos', 'ws-default-user-1756062811-ab12')).toEqual(['onmemos-default']);
    expect(() => checkNames('onmemos', `ws-${'n'.repeat(40)}-${'u'.repeat(20)}-1756062811-ab12`, 'n')).toThrow(
      /63-character pod name/,
    );
    expect(() => gkeSettings({ GKE_NAMESPACE_PREFIX: 'Bad_Prefix' })).toThrow(/GKE_NAMESPACE_PREFIX/);
  });

  it('the session is rebuilt from the pod alone; status follows phase, readiness, deletion and expiry', () => {
    const pod = podObject(id, req, settings, Date.now());
    const live = {
      ...pod,
      metadata: { ...pod.metadata, namespace: 'onmemos-team-a' },
      status: { phase: 'Running', conditions: [{ type: 'Ready', status: 'True' }] },
    };
    const s = sessionOf(live, 'ctx')!;
    expect(s).toMatchObject({
      id,
      provider: 'gke',
      namespace: 'team-a',
      user: 'alice',
      template: 'nodejs',
      status: 'running',
    });
    expect(s.details).toMatchObject({ pod: id, k8s_namespace: 'onmemos-team-a', context: 'ctx' });
    expect(statusOf({ ...live, status: { phase: 'Running' } })).toBe('starting');
    expect(statusOf({ ...live, status: { phase: 'Pending' } })).toBe('creating');
    expect(statusOf({ ...live, status: { phase: 'Failed' } })).toBe('failed');
    expect(statusOf({ ...live, metadata: { ...live.metadata, deletionTimestamp: new Date() } })).toBe('stopping');
    expect(statusOf(live, Date.now() + 61 * 60_000)).toBe('expired');
    expect(sessionOf({ metadata: { labels: { app: 'x' } } }, 'ctx')).toBeUndefined();
  });

  it("a pod's problem in one line: fatal for a bad image, waiting for an unschedulable pod", () => {
    const waiting = (reason: string, message: string) => ({
      status: { phase: 'Pending', containerStatuses: [{ state: { waiting: { reason, message } } }] },
    });
    expect(podProblem(waiting('ImagePullBackOff', 'Back-off pulling image "nope:1"'))).toEqual({
      fatal: true,
      reason: 'ImagePullBackOff: Back-off pulling image "nope:1"',
    });
    expect(podProblem(waiting('ContainerCreating', ''))).toEqual({ fatal: false, reason: 'ContainerCreating' });
    expect(
      podProblem({
        status: {
          phase: 'Pending',
          conditions: [
            { type: 'PodScheduled', status: 'False', reason: 'Unschedulable', message: '0/3 nodes are\n available' },
          ],
        },
      }),
    ).toEqual({ fatal: false, reason: 'Unschedulable: 0/3 nodes are available' });
  });
});

describe('the exec wrapper (run here by sh, as the pod would)', () => {
  const sh = async (argv: string[], input?: string) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.stdin.on('error', () => {}); // a command that exits first (127) closes its stdin: EPIPE is expected
    child.stdin.end(input ?? '');
    const code = await new Promise<number | null>((r) => child.on('close', (c) => r(c)));
    return { out, err, code };
  };

  it('applies env and workdir as values, never as shell text, and checks argv[0] as every transport does', async () => {
    const pid = join(dir, 'pid1');
    const env = { A: 'a b $HOME `id` "q"\nline2', B: "it's" };
    const r = await sh(wrappedArgv({ argv: ['sh', '-c', 'printf "%s|%s|%s" "$A" "$B" "$(pwd)"'], env, cwd: dir }, pid));
    expect(r).toMatchObject({ out: `${env.A}|${env.B}|${dir}`, code: 0 });
    expect(await sh(wrappedArgv({ argv: ['no-such-cmd'], cwd: dir }, pid))).toMatchObject({
      code: 127,
      err: 'onmemos: no-such-cmd: command not found\n',
    });
    expect(await sh(wrappedArgv({ argv: ['true'], cwd: join(dir, 'absent') }, pid))).toMatchObject({ code: 125 });
    expect(await sh(wrappedArgv({ argv: ['cat'], cwd: dir }, pid), 'bytes\0in')).toMatchObject({ out: 'bytes\0in' });
  });

  it("sets a tty's size before the command starts, as asked (the client's resize may come after it)", async () => {
    const { spawn: ptySpawn } = await import('node-pty');
    const argv = wrappedArgv({ argv: ['stty', 'size'], tty: true, cols: 100, rows: 30, cwd: dir }, join(dir, 'pid3'));
    const term = ptySpawn(argv[0]!, argv.slice(1), { cols: 80, rows: 24, cwd: dir, env: { PATH: process.env.PATH! } });
    let out = '';
    term.onData((d) => (out += d));
    const code = await new Promise<number>((r) => term.onExit((e) => r(e.exitCode)));
    expect(code).toBe(0);
    expect(out.trim()).toBe('30 100');
    // Without a size (or without a tty) the wrapper leaves the tty alone.
    const plain = wrappedArgv({ argv: ['true'], cwd: dir }, join(dir, 'pid3'));
    expect(plain[5]).toBe('');
  });

  it('a second exec signals the command and everything it started', async () => {
    const pid = join(dir, 'pid2');
    const marker = `onmemos-gke-unit-${process.pid}`;
    // Durations of this test's own, as the check below looks at every process of the machine (other tests sleep
    // 300 and 301 at the same time).
    const a = 40_000 + (process.pid % 10_000) * 2;
    const child = spawn(
      '/bin/sh',
      wrappedArgv({ argv: ['sh', '-c', `sleep ${a} & sleep ${a + 1}; echo ${marker}`], cwd: dir }, pid).slice(1),
      {
        stdio: 'ignore',
      },
    );
    const exited = new Promise<string | null>((r) => child.on('exit', (_c, s) => r(s)));
    for (let i = 0; i < 100; i++) {
      const ps = await run('ps', ['-eo', 'args']);
      if (ps.stdout.includes(`sleep ${a + 1}`)) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    const k = signalArgv(pid, 'SIGKILL');
    await run(k[0]!, k.slice(1));
    expect(await exited).toBe('SIGKILL');
    const ps = await run('ps', ['-eo', 'ppid,args']);
    const mine = new RegExp(`sleep (${a}|${a + 1})$`);
    expect(ps.stdout.split('\n').filter((l) => mine.test(l.trim()))).toEqual([]);
  });
});
