/**
 * Real kubectl 1.32 against the Kubernetes fake: discovery, namespaces, listing with selectors, exec (exit codes,
 * stdin to EOF, stdout and stderr apart, a tty through node-pty with resize), a command that is not there, a
 * command that outlives its client (as on a real node), and delete. Pods run as real local sandboxes (root, bwrap).
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type KubeFake, startKubeFake } from '../fakes/kube/server.js';
import { waitFor } from '../helpers/cli.js';
import { createNamespace, KUBECTL, kubectl, kubectlArgs, podManifest, runPods } from '../helpers/kube.js';
import { spawnPty } from '../helpers/pty.js';

let fake: KubeFake;
const NS = 'team-a';
beforeAll(async () => {
  fake = await startKubeFake();
  await createNamespace(fake, NS);
  await runPods(fake, NS, [
    podManifest('web-1', { labels: { app: 'x', tier: 'web' }, env: { GREETING: 'hello from the pod' } }),
    podManifest('web-2', { labels: { app: 'x', tier: 'db' }, workingDir: '/tmp/work' }),
    podManifest('other', { labels: { app: 'y' }, image: 'node:20' }),
  ]);
});
afterAll(async () => {
  await fake?.close();
});

const k = (args: string[], opts?: Parameters<typeof kubectl>[2]) => kubectl(fake, args, opts);
const names = (out: string) =>
  out
    .trim()
    .split('\n')
    .slice(1)
    .map((l) => l.split(/\s+/)[0]);

describe('kubectl get', () => {
  it('lists namespaces, including one made with kubectl create namespace (a protobuf body)', async () => {
    const made = await k(['create', 'namespace', 'made-by-kubectl']);
    expect(made).toMatchObject({ code: 0, stdout: 'namespace/made-by-kubectl created\n' });
    const r = await k(['get', 'ns']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^NAME\s+STATUS\s+AGE\n/);
    expect(names(r.stdout)).toEqual(
      expect.arrayContaining(['default', 'kube-system', 'kube-public', 'kube-node-lease', NS, 'made-by-kubectl']),
    );
  });

  it('lists exactly the pods a label selector picks, by plural or short name', async () => {
    const x = await k(['get', 'pods', '-n', NS, '-l', 'app=x']);
    expect(x.code).toBe(0);
    expect(x.stdout).toMatch(/^NAME\s+READY\s+STATUS\s+RESTARTS\s+AGE\n/);
    expect(names(x.stdout)).toEqual(['web-1', 'web-2']);
    expect(x.stdout).toMatch(/web-1\s+1\/1\s+Running\s+0\s+\d+s/);
    const set = await k(['get', 'po', '-n', NS, '-l', 'app in (x,y),tier!=db']);
    expect(names(set.stdout)).toEqual(['other', 'web-1']);
    const none = await k(['get', 'pods', '-n', NS, '-l', 'app=z']);
    expect(none).toMatchObject({ code: 0, stdout: '' });
    expect(none.stderr).toContain(`No resources found in ${NS} namespace.`);
    const all = await k(['get', 'pods', '-A', '-l', '!tier']);
    expect(all.stdout).toMatch(new RegExp(`^NAMESPACE\\s+NAME.*\\n${NS}\\s+other\\s`));
  });

  it('-o json gives the pod objects, and the field selector on the name works', async () => {
    const r = await k(['get', 'pods', '-n', NS, '--field-selector', 'metadata.name=web-2', '-o', 'json']);
    const list = JSON.parse(r.stdout);
    expect(list.items.map((p: { metadata: { name: string } }) => p.metadata.name)).toEqual(['web-2']);
    expect(list.items[0]).toMatchObject({
      kind: 'Pod',
      status: { phase: 'Running' },
      spec: { nodeName: expect.any(String) },
    });
    expect(list.items[0].status.conditions).toEqual(
      expect.arrayContaining([expect.objectContaining({ type: 'Ready', status: 'True' })]),
    );
  });

  it('a pod in a namespace that does not exist is refused, as by a real server', async () => {
    const r = await k(['run', 'p', '-n', 'nosuch', '--image=python:3.12']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('Error from server (NotFound): namespaces "nosuch" not found');
  });
});

describe('kubectl create -f, label, logs, describe', () => {
  it('works as against a cluster (validation left to the server through OpenAPI v3)', async () => {
    const manifest = JSON.stringify(podManifest('from-file', { labels: { app: 'file' } }));
    expect(await k(['create', '-n', NS, '-f', '-'], { input: manifest })).toMatchObject({
      code: 0,
      stdout: 'pod/from-file created\n',
    });
    const create = fake.requests.find(
      (r) => r.method === 'POST' && r.url.includes('/pods?fieldManager=kubectl-create'),
    );
    expect(create?.url).toContain('fieldValidation=Strict');
    expect(await k(['label', 'pod', 'from-file', '-n', NS, 'extra=yes'])).toMatchObject({ code: 0 });
    expect(fake.store.get('pods', NS, 'from-file')?.metadata.labels).toEqual({ app: 'file', extra: 'yes' });
    await waitFor(() => fake.store.get('pods', NS, 'from-file')?.status.phase === 'Running', 30_000, 50);
    expect(await k(['logs', 'from-file', '-n', NS])).toMatchObject({ code: 0, stdout: '' });
    const described = await k(['describe', 'pod', 'from-file', '-n', NS]);
    expect(described.code).toBe(0);
    expect(described.stdout).toMatch(/Status:\s+Running/);
    expect(described.stdout).toMatch(/Ready\s+True/);
    expect(await k(['delete', 'pod', 'from-file', '-n', NS, '--wait=false'])).toMatchObject({ code: 0 });
  });
});

describe('kubectl exec', () => {
  it('exits with the command code, and keeps stdout and stderr apart', async () => {
    const r = await k(['exec', 'web-1', '-n', NS, '--', 'sh', '-c', 'echo out; echo err >&2; exit 3']);
    expect(r.code).toBe(3);
    expect(r.stdout).toBe('out\n');
    expect(r.stderr).toBe('err\ncommand terminated with exit code 3\n');
  });

  it("runs in the container's working directory with its env", async () => {
    const one = await k(['exec', 'web-1', '-n', NS, '--', 'sh', '-c', 'pwd; echo "$GREETING"; echo "$HOSTNAME"']);
    expect(one.stdout).toBe('/workspace\nhello from the pod\nweb-1\n');
    const two = await k(['exec', 'web-2', '-n', NS, '--', 'pwd']);
    expect(two.stdout).toBe('/tmp/work\n');
  });

  it('passes piped stdin through and ends it at EOF', async () => {
    const data = randomBytes(300_000);
    const r = await k(['exec', '-i', 'web-1', '-n', NS, '--', 'sh', '-c', 'cat; echo done >&2'], { input: data });
    expect(r.code).toBe(0);
    expect(r.stdoutBytes.equals(data)).toBe(true);
    expect(r.stderr).toBe('done\n');
  });

  it('reports a command that is not there as containerd does', async () => {
    const r = await k(['exec', 'web-1', '-n', NS, '--', 'nosuch-command']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /^error: Internal error occurred: error executing command in container: failed to exec in container: failed to start exec "[0-9a-f]{64}": OCI runtime exec failed: exec failed: unable to start container process: exec: "nosuch-command": executable file not found in \$PATH: unknown\n$/,
    );
  });

  it('a tty: the command sees a /dev/pts terminal of the local size, and follows a resize', async () => {
    let out = '';
    const term = spawnPty(
      KUBECTL,
      kubectlArgs(fake, ['exec', '-it', 'web-1', '-n', NS, '--', 'sh', '-c', 'tty; stty size; read x; stty size']),
      {
        cols: 100,
        rows: 30,
        name: 'xterm-256color',
        env: { ...process.env, TERM: 'xterm-256color' } as Record<string, string>,
      },
      (d) => {
        out += d;
      },
    );
    const exited = new Promise<{ exitCode: number }>((r) => term.onExit(r));
    try {
      expect(await waitFor(() => /30 100/.test(out), 20_000, 20)).toBe(true);
      expect(out).toMatch(/\/dev\/pts\/\d+\r?\n/);
      term.resize(120, 40);
      await new Promise((r) => setTimeout(r, 300)); // the resize travels on channel 4 ahead of the newline
      term.write('\r');
      expect(await waitFor(() => /40 120/.test(out), 20_000, 20)).toBe(true);
      expect((await exited).exitCode).toBe(0);
    } finally {
      try {
        term.kill('SIGKILL');
      } catch {}
    }
  });

  it('a command keeps running when its kubectl goes away (no tty), as on a real node; with a tty it gets SIGHUP', async () => {
    const script = (file: string) => `echo $$ > /workspace/${file}; echo started; exec sleep 60`;
    const { spawn } = await import('node:child_process');
    const child = spawn(
      KUBECTL,
      kubectlArgs(fake, ['exec', 'web-1', '-n', NS, '--', 'sh', '-c', script('piped.pid')]),
      {
        stdio: ['ignore', 'pipe', 'ignore'],
      },
    );
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const gone = new Promise((r) => child.once('close', r));
    expect(await waitFor(() => out.includes('started'), 20_000, 20)).toBe(true);
    child.kill('SIGKILL');
    await gone;
    const alive = (file: string) =>
      k([
        'exec',
        'web-1',
        '-n',
        NS,
        '--',
        'sh',
        '-c',
        `kill -0 "$(cat /workspace/${file})" 2>/dev/null && echo alive || echo gone`,
      ]);
    await new Promise((r) => setTimeout(r, 500));
    expect((await alive('piped.pid')).stdout).toBe('alive\n');
    await k(['exec', 'web-1', '-n', NS, '--', 'sh', '-c', 'kill "$(cat /workspace/piped.pid)"']);

    let tout = '';
    const term = spawnPty(
      KUBECTL,
      kubectlArgs(fake, ['exec', '-it', 'web-1', '-n', NS, '--', 'sh', '-c', script('tty.pid')]),
      { cols: 80, rows: 24, env: process.env as Record<string, string> },
      (d) => {
        tout += d;
      },
    );
    const tgone = new Promise((r) => term.onExit(r));
    expect(await waitFor(() => tout.includes('started'), 20_000, 20)).toBe(true);
    term.kill('SIGKILL');
    await tgone;
    expect(await waitFor(async () => (await alive('tty.pid')).stdout === 'gone\n', 15_000, 200)).toBe(true);
  });
});

describe('kubectl delete', () => {
  it('deletes a pod and its sandbox', async () => {
    await runPods(fake, NS, [podManifest('doomed')]);
    const session = fake.sessionOf(NS, 'doomed');
    expect(session).toMatch(/^ws-/);
    const r = await k(['delete', 'pod', 'doomed', '-n', NS]);
    expect(r).toMatchObject({ code: 0, stdout: 'pod "doomed" deleted\n' });
    const after = await k(['get', 'pod', 'doomed', '-n', NS]);
    expect(after.code).toBe(1);
    expect(after.stderr).toContain('Error from server (NotFound): pods "doomed" not found');
    await expect(fake.kubelet.provider.get(session!)).rejects.toThrow(/no such session/);
  });
});
