/**
 * `onmemos tunnel` on a gke session, through the pods/portforward WebSocket of the Kubernetes API fake
 * (test/fakes/kube, whose pods are local sandboxes): --stdio, --local-port with two connections, a port where
 * nothing listens refused in one line; and the fake's port-forward protocol itself (v4.channel.k8s.io framing,
 * its refusals).
 */
import { spawn } from 'node:child_process';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { type KubeFake, startKubeFake } from '../fakes/kube/server.js';
import { CLI, StateDir, waitFor } from '../helpers/cli.js';
import { podManifest } from '../helpers/kube.js';

let kube: KubeFake;
const state = new StateDir();
let env: Record<string, string>;
let id = '';
const NS = 'onmemos-team-pf';
const PORT = 7411;
// Answers the first chunk and closes: a WebSocket has no half-close, so the far end ends each tunnel.
const server = `require('net').createServer((s) => { s.once('data', (d) => s.end('echo:' + d)); }).listen(${PORT}, '127.0.0.1')`;

const gke = (args: string[]) => state.run(args, { env });

beforeAll(async () => {
  kube = await startKubeFake({ network: 'isolated' });
  env = { KUBECONFIG: kube.kubeconfigPath, GKE_CREATE_TIMEOUT: '60' };
  const r = await gke(['create', '--provider', 'gke', '--namespace', 'team-pf', '--json']);
  expect(r.code, r.stderr).toBe(0);
  id = JSON.parse(r.stdout).id;
  const started = await gke([
    'exec',
    id,
    '--',
    'sh',
    '-c',
    `(node -e "${server}" </dev/null >/dev/null 2>&1 &) ; echo started`,
  ]);
  expect(started.code, started.stderr).toBe(0);
  const probe = `require('net').connect(${PORT}, '127.0.0.1').on('connect', () => process.exit(0)).on('error', () => process.exit(1))`;
  expect(await waitFor(async () => (await gke(['exec', id, '--', 'node', '-e', probe])).code === 0, 15_000, 200)).toBe(
    true,
  );
}, 120_000);
afterAll(async () => {
  await state.cleanup();
  await kube.close();
});

/** `onmemos tunnel --stdio`, fed `input`: its stdout, stderr and exit code. */
function stdio(port: number, input: string) {
  return new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
    const p = spawn(CLI[0]!, [...CLI.slice(1), 'tunnel', '--stdio', '--port', String(port), id], {
      env: { ...process.env, ...state.env, ...env },
    });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.on('exit', (code) => resolve({ code, out, err }));
    p.stdin.end(input);
  });
}

/** Talks to host:port once: sends `word`, returns all that comes back before the close. */
const talk = (host: string, port: number, word: string) =>
  new Promise<string>((resolve, reject) => {
    const c = connect(port, host);
    let got = '';
    c.on('data', (d) => (got += d));
    c.on('end', () => resolve(got));
    c.on('error', reject);
    c.end(word);
  });

describe('onmemos tunnel on a gke session (pods/portforward)', () => {
  it('--stdio carries one connection to a port on the pod loopback', async () => {
    expect(await stdio(PORT, 'hello')).toMatchObject({ code: 0, out: 'echo:hello' });
    const pf = kube.requests.filter((r) => r.url.includes('/portforward'));
    expect(pf.at(-1)).toMatchObject({
      url: `/api/v1/namespaces/${NS}/pods/${id}/portforward?ports=${PORT}`,
      auth: 'bearer',
      protocols: 'v4.channel.k8s.io',
      status: 101,
    });
  });

  it('--local-port 0 --json takes several connections, each its own port-forward', async () => {
    const t = spawn(CLI[0]!, [...CLI.slice(1), 'tunnel', id, '--port', String(PORT), '--local-port', '0', '--json'], {
      env: { ...process.env, ...state.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    try {
      const line = await new Promise<string>((resolve, reject) => {
        t.stdout.once('data', (d) => resolve(String(d)));
        t.once('exit', (c) => reject(new Error(`tunnel exited ${c}`)));
      });
      const { host, port } = JSON.parse(line) as { host: string; port: number };
      const before = kube.requests.filter((r) => r.url.includes('/portforward')).length;
      expect(await Promise.all([talk(host, port, 'one'), talk(host, port, 'two')])).toEqual(['echo:one', 'echo:two']);
      expect(kube.requests.filter((r) => r.url.includes('/portforward')).length - before).toBe(2);
    } finally {
      t.kill('SIGINT');
      await new Promise((r) => t.once('exit', r));
    }
  });

  it('a port where nothing listens: exit 1, one line', async () => {
    const r = await stdio(PORT + 1, '');
    expect(r.code).toBe(1);
    expect(r.err.trim().split('\n')).toHaveLength(1);
    expect(r.err).toMatch(/nothing listens on port 7412 of pod .*connection refused/);
  });
});

describe('the fake serves pods/portforward as the kubelet does', () => {
  // kubectl's offer goes as a header: ws refuses to offer a subprotocol with a '/' in it.
  const open = (query: string, protocol = 'v4.channel.k8s.io') => {
    const url = `${kube.url.replace(/^http/, 'ws')}/api/v1/namespaces/${NS}/pods/${id}/portforward${query}`;
    const authorization = `Bearer ${kube.token}`;
    return protocol.includes('/')
      ? new WebSocket(url, { headers: { authorization, 'sec-websocket-protocol': protocol } })
      : new WebSocket(url, [protocol], { headers: { authorization } });
  };
  const refusal = (ws: WebSocket) =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      ws.once('open', () => reject(new Error('upgraded')));
      ws.once('unexpected-response', (_q, res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
    });

  it('two ports on one socket: channels 2i (data) and 2i+1 (error), each opened by the port in little endian', async () => {
    const ws = open(`?ports=${PORT},${PORT + 1}`);
    const got: Buffer[] = [];
    ws.on('message', (d: Buffer) => {
      got.push(d);
      if (d[0] === 0 && d.length === 3) ws.send(Buffer.from([0, ...Buffer.from('hi')]));
    });
    const code = await new Promise<number>((resolve) => ws.once('close', (c) => resolve(c)));
    expect(code).toBe(1000);
    const le = (p: number) => [p & 0xff, p >> 8];
    const on = (ch: number) => got.filter((m) => m[0] === ch).map((m) => m.subarray(1));
    expect(on(0)[0]).toEqual(Buffer.from(le(PORT)));
    expect(on(1)[0]).toEqual(Buffer.from(le(PORT)));
    expect(on(2)[0]).toEqual(Buffer.from(le(PORT + 1)));
    expect(on(3)[0]).toEqual(Buffer.from(le(PORT + 1)));
    expect(Buffer.concat(on(0).slice(1)).toString()).toBe('echo:hi');
    expect(Buffer.concat(on(3).slice(1)).toString()).toMatch(
      new RegExp(`^error forwarding port ${PORT + 1} to pod ${id}, uid [0-9a-f-]+: .*connection refused`),
    );
  });

  it('refuses as the API server and the kubelet do', async () => {
    expect(await refusal(open(''))).toEqual({ status: 400, body: 'query parameter "port" is required' });
    expect((await refusal(open(`?ports=${PORT}`, 'SPDY/3.1+portforward.k8s.io'))).status).toBe(403);
    const gone = new WebSocket(
      `${kube.url.replace(/^http/, 'ws')}/api/v1/namespaces/${NS}/pods/nosuch/portforward?ports=1`,
      ['v4.channel.k8s.io'],
    );
    const r = await refusal(gone);
    expect(r.status).toBe(404);
    // A pod that does not run (its image cannot be pulled): the kubelet has no sandbox to forward into.
    kube.faults.set({ imagePull: 'nosuch' });
    try {
      const made = await fetch(`${kube.url}/api/v1/namespaces/${NS}/pods`, {
        method: 'POST',
        headers: { authorization: `Bearer ${kube.token}`, 'content-type': 'application/json' },
        body: JSON.stringify(podManifest('pending', { image: 'nosuch:1' })),
      });
      expect(made.status).toBe(201);
      const pending = new WebSocket(
        `${kube.url.replace(/^http/, 'ws')}/api/v1/namespaces/${NS}/pods/pending/portforward?ports=1`,
        ['v4.channel.k8s.io'],
      );
      expect(await refusal(pending)).toEqual({
        status: 500,
        body: 'failed to find sandbox for pod "pending": pod is Pending',
      });
    } finally {
      kube.faults.clear();
    }
    expect(JSON.parse(r.body)).toMatchObject({
      kind: 'Status',
      reason: 'NotFound',
      message: 'pods "nosuch" not found',
    });
  });
});
