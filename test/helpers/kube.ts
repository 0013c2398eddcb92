/**
 * For tests against the Kubernetes fake (test/fakes/kube): real kubectl run bounded through pipes, with its caches
 * in the fake's directory (kubectl would otherwise write ~/.kube/cache), and small builders for pods.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import type { KubeFake } from '../fakes/kube/server.js';
import { waitFor } from './cli.js';

export const KUBECTL = '/usr/bin/kubectl';

export interface KubectlResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The arguments that point kubectl at the fake, before a command's own. */
export const kubectlArgs = (fake: KubeFake, args: string[]) => [
  `--kubeconfig=${fake.kubeconfigPath}`,
  `--cache-dir=${join(fake.dir, 'kubectl-cache')}`,
  ...args,
];

export function kubectl(
  fake: KubeFake,
  args: string[],
  opts: { input?: string | Buffer; timeoutMs?: number } = {},
): Promise<KubectlResult & { stdoutBytes: Buffer }> {
  return new Promise((resolve, reject) => {
    const child = spawn(KUBECTL, kubectlArgs(fake, args), {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, KUBECONFIG: fake.kubeconfigPath },
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d) => out.push(d));
    child.stderr.on('data', (d) => err.push(d));
    child.stdin.on('error', () => {});
    child.stdin.end(opts.input);
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      const stdoutBytes = Buffer.concat(out);
      resolve({ code, stdout: stdoutBytes.toString(), stdoutBytes, stderr: Buffer.concat(err).toString() });
    });
  });
}

export interface PodOptions {
  image?: string;
  labels?: Record<string, string>;
  env?: Record<string, string>;
  workingDir?: string;
  claim?: string;
  containers?: string[];
}

/** A pod manifest (JSON), one container `main` unless told otherwise. */
export function podManifest(name: string, o: PodOptions = {}) {
  const names = o.containers ?? ['main'];
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, labels: o.labels ?? {} },
    spec: {
      containers: names.map((n) => ({
        name: n,
        image: o.image ?? 'python:3.12-slim',
        command: ['sleep', 'infinity'],
        ...(o.env ? { env: Object.entries(o.env).map(([k, v]) => ({ name: k, value: v })) } : {}),
        ...(o.workingDir ? { workingDir: o.workingDir } : {}),
        ...(o.claim ? { volumeMounts: [{ name: 'work', mountPath: '/workspace' }] } : {}),
      })),
      ...(o.claim ? { volumes: [{ name: 'work', persistentVolumeClaim: { claimName: o.claim } }] } : {}),
      terminationGracePeriodSeconds: 5,
    },
  };
}

/** Creates the pods through the fake's REST API (as any client would) and waits until each one runs. */
export async function runPods(
  fake: KubeFake,
  namespace: string,
  pods: ReturnType<typeof podManifest>[],
): Promise<void> {
  for (const p of pods) {
    const res = await fetch(`${fake.url}/api/v1/namespaces/${namespace}/pods`, {
      method: 'POST',
      headers: { authorization: `Bearer ${fake.token}`, 'content-type': 'application/json' },
      body: JSON.stringify(p),
    });
    if (res.status !== 201) throw new Error(`create pod ${p.metadata.name}: ${res.status} ${await res.text()}`);
  }
  for (const p of pods) await waitRunning(fake, namespace, p.metadata.name);
}

export async function waitRunning(fake: KubeFake, namespace: string, name: string): Promise<void> {
  const ok = await waitFor(() => fake.store.get('pods', namespace, name)?.status.phase === 'Running', 30_000, 50);
  if (!ok) {
    const pod = fake.store.get('pods', namespace, name);
    throw new Error(`pod ${namespace}/${name} is not Running: ${JSON.stringify(pod?.status)}`);
  }
}

/** Makes a namespace through the REST API. */
export async function createNamespace(fake: KubeFake, name: string): Promise<void> {
  const res = await fetch(`${fake.url}/api/v1/namespaces`, {
    method: 'POST',
    headers: { authorization: `Bearer ${fake.token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } }),
  });
  if (res.status !== 201) throw new Error(`create namespace ${name}: ${res.status} ${await res.text()}`);
}
