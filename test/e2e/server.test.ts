/** `onmemos serve` on 127.0.0.1 port 0 over real local sandboxes: the document's examples, auth, bad input, streams. */
import { type ChildProcess, spawn } from 'node:child_process';
import type { Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { CHANNEL, closeFrame, exitFromStatus, frame, parseFrame, V5 } from '../../src/exec/v5.js';
import { defaultRegistry } from '../../src/providers/index.js';
import { Auth, parseApiKeys } from '../../src/server/auth.js';
import { createOnmemosServer } from '../../src/server/server.js';
import { BIN, StateDir, waitFor } from '../helpers/cli.js';

const KEY = 'test-key-all-namespaces-0123456789';
const SCOPED = 'test-key-team-a-only-0123456789';
const state = new StateDir();
let server: Server;
let base = '';

beforeAll(async () => {
  const auth = new Auth(parseApiKeys(`${KEY}\n${SCOPED} team-a\n`));
  server = await createOnmemosServer({
    registry: defaultRegistry({ ...process.env, ...state.env }),
    auth,
    outputCap: 4096,
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});
afterAll(async () => {
  await new Promise<void>((r) => {
    server.close(() => r());
    server.closeAllConnections();
  });
  await state.cleanup();
});

async function api(method: string, path: string, body?: unknown, key: string | null = KEY) {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (key) headers['x-api-key'] = key;
  const res = await fetch(`${base}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  // biome-ignore lint/suspicious/noExplicitAny: response bodies are JSON whose shape the assertions check
  return { status: res.status, body: (await res.json()) as Record<string, any> };
}

describe('the document examples', () => {
  it('create, several executes, delete', async () => {
    const created = await api('POST', '/v1/sessions', {
      template: 'python',
      namespace: 'my-project',
      user: 'developer',
      ttl_minutes: 120,
    });
    expect(created.status).toBe(200);
    const s = created.body;
    for (const k of ['id', 'provider', 'namespace', 'user', 'status', 'url', 'websocket', 'ssh', 'details'])
      expect(s).toHaveProperty(k);
    expect(s).toMatchObject({ provider: 'local', namespace: 'my-project', user: 'developer', status: 'running' });
    expect(s.details.provider_reason).toBe(
      'auto picks cloud_run (short-lived by default), which is not configured: no project (set PROJECT_ID, or CLOUDSDK_CORE_PROJECT); local stands in',
    );
    const gke = (await api('POST', '/v1/sessions', { namespace: 'ml-training', user: 'researcher', long_lived: true }))
      .body;
    expect(gke.details.provider_reason).toMatch(/^auto picks gke \(long_lived\)/);
    await api('DELETE', `/v1/sessions/${gke.id}`);
    expect(s.id).toMatch(/^ws-my-project-developer-\d+-[0-9a-z]{4}$/);

    const results = [];
    for (const command of [
      'pwd',
      'ls -la',
      "echo 'Hello from OnMemOS!'",
      "python3 -c 'import sys; print(sys.version_info[0])'",
    ]) {
      results.push((await api('POST', `/v1/sessions/${s.id}/execute`, { command })).body);
    }
    expect(results.map((r) => r.stdout)).toEqual([
      '/workspace\n',
      expect.stringMatching(/^total /),
      'Hello from OnMemOS!\n',
      '3\n',
    ]);
    expect(results.every((r) => r.success === true && r.returncode === 0 && r.stderr === '')).toBe(true);

    const failed = (await api('POST', `/v1/sessions/${s.id}/execute`, { command: 'echo oops >&2; exit 3' })).body;
    expect(failed).toEqual({ stdout: '', stderr: 'oops\n', returncode: 3, success: false });

    expect((await api('GET', `/v1/sessions/${s.id}`)).body.id).toBe(s.id);
    expect((await api('DELETE', `/v1/sessions/${s.id}`)).body).toEqual({ id: s.id, deleted: true });
    expect((await api('GET', `/v1/sessions/${s.id}`)).status).toBe(404);
  });

  it('execute caps each stream and says so, and times out with 124', async () => {
    const { body: s } = await api('POST', '/v1/sessions', { namespace: 'caps', user: 'u' });
    const big = (
      await api('POST', `/v1/sessions/${s.id}/execute`, { command: 'head -c 100000 /dev/zero | tr "\\0" x' })
    ).body;
    expect(big.stdout).toHaveLength(4096);
    expect(big.truncated).toBe(true);
    const slow = (await api('POST', `/v1/sessions/${s.id}/execute`, { command: 'sleep 30', timeout: 1 })).body;
    expect(slow).toMatchObject({ returncode: 124, success: false });
  });
});

describe('the legacy Cloud Run API and the JSON shell', () => {
  it('creates, executes, gets and deletes a workspace through /v1/cloudrun/workspaces', async () => {
    const request = { template: 'python', namespace: 'team-a', user: 'alice', ttl_minutes: 30 };
    // The local stand-in cannot mount storage: the document's storage_options are refused, not ignored.
    const refused = await api('POST', '/v1/cloudrun/workspaces', {
      ...request,
      namespace: 'legacy-refused',
      storage_options: { bucket: 'my-bucket', filestore: { ip: '10.0.0.1', share: 'workspace' } },
    });
    expect(refused.status).toBe(422);
    expect(refused.body.error).toMatchObject({ code: 'unsupported', message: 'provider local cannot mount a bucket' });
    expect((await api('GET', '/v1/sessions?namespace=legacy-refused')).body).toEqual([]);
    const created = await api('POST', '/v1/cloudrun/workspaces', request);
    expect(created.status).toBe(200);
    const w = created.body;
    expect(w.websocket).toBe(`/v1/cloudrun/workspaces/${w.id}/shell`);
    expect(w.details.provider_reason).toMatch(/auto picks cloud_run .*, which is not configured.*; local stands in/);
    const r = await api('POST', `/v1/cloudrun/workspaces/${w.id}/execute?command=pwd&timeout=30`);
    expect(r.body).toEqual({ stdout: '/workspace\n', stderr: '', returncode: 0, success: true });
    expect((await api('POST', `/v1/cloudrun/workspaces/${w.id}/execute`)).status).toBe(400);
    expect((await api('GET', `/v1/cloudrun/workspaces/${w.id}`)).body.id).toBe(w.id);
    expect((await api('DELETE', `/v1/cloudrun/workspaces/${w.id}`)).body).toEqual({ id: w.id, deleted: true });
    expect((await api('GET', `/v1/cloudrun/workspaces/${w.id}`)).status).toBe(404);
  });

  it('answers {"type":"command"} with {"type":"command_result"} on both shell paths, key in the query', async () => {
    const { body: s } = await api('POST', '/v1/sessions', { namespace: 'json-shell', user: 'u' });
    expect(s.websocket).toBe(`/v1/sessions/${s.id}/shell`);
    for (const path of [`/v1/cloudrun/workspaces/${s.id}/shell`, `/v1/sessions/${s.id}/shell`]) {
      const ws = new WebSocket(`${base.replace('http', 'ws')}${path}?api_key=${KEY}`);
      await new Promise((r) => ws.on('open', r));
      const replies: Record<string, unknown>[] = [];
      const got = (n: number) => waitFor(() => replies.length >= n, 15_000, 10);
      ws.on('message', (d: Buffer) => replies.push(JSON.parse(d.toString())));
      ws.send(JSON.stringify({ type: 'command', command: 'echo hi; echo warn >&2' }));
      ws.send(JSON.stringify({ type: 'command', command: 'exit 4' }));
      ws.send('not json');
      ws.send(JSON.stringify({ type: 'nope' }));
      expect(await got(4)).toBe(true);
      expect(replies[0]).toEqual({
        type: 'command_result',
        stdout: 'hi\n',
        stderr: 'warn\n',
        returncode: 0,
        success: true,
      });
      expect(replies[1]).toEqual({ type: 'command_result', stdout: '', stderr: '', returncode: 4, success: false });
      expect(replies[2]).toMatchObject({ type: 'error', error: { code: 'bad_request' } });
      expect(replies[3]).toMatchObject({ type: 'error', error: { code: 'bad_request' } });
      ws.close();
    }
  });

  it('an execute whose client goes away leaves no process behind (HTTP and JSON shell)', async () => {
    const { body: s } = await api('POST', '/v1/sessions', { namespace: 'gone', user: 'u' });
    const running = async (marker: string) =>
      (
        await api('POST', `/v1/sessions/${s.id}/execute`, {
          command: `grep -l '${marker.slice(0, -1)}[${marker.slice(-1)}]' /proc/[0-9]*/cmdline || true`,
        })
      ).body.stdout !== '';
    const ac = new AbortController();
    const pending = fetch(`${base}/v1/sessions/${s.id}/execute`, {
      method: 'POST',
      headers: { 'x-api-key': KEY, 'content-type': 'application/json' },
      body: JSON.stringify({ command: "bash -c 'exec -a http-gone-marker sleep 300'" }),
      signal: ac.signal,
    }).catch(() => 'aborted');
    expect(await waitFor(() => running('http-gone-marker'))).toBe(true);
    ac.abort();
    expect(await pending).toBe('aborted');
    expect(await waitFor(async () => !(await running('http-gone-marker')))).toBe(true);

    const ws = new WebSocket(`${base.replace('http', 'ws')}/v1/sessions/${s.id}/shell?api_key=${KEY}`);
    await new Promise((r) => ws.on('open', r));
    ws.send(JSON.stringify({ type: 'command', command: "bash -c 'exec -a shell-gone-marker sleep 300'" }));
    expect(await waitFor(() => running('shell-gone-marker'))).toBe(true);
    ws.terminate();
    expect(await waitFor(async () => !(await running('shell-gone-marker')))).toBe(true);
  });
});

describe('auth and scoping', () => {
  it('needs a key on every route but /health', async () => {
    expect((await api('GET', '/health', undefined, null)).status).toBe(200);
    expect((await api('GET', '/v1/sessions', undefined, null)).body).toEqual({
      error: { code: 'auth', message: expect.any(String) },
    });
    expect((await api('GET', '/v1/sessions', undefined, null)).status).toBe(401);
    expect((await api('GET', '/v1/sessions', undefined, 'wrong-key-0123456789abcdef')).status).toBe(401);
  });

  it('a scoped key cannot touch another namespace, whose sessions it neither lists nor sees', async () => {
    const other = (await api('POST', '/v1/sessions', { namespace: 'team-b', user: 'u' })).body;
    const mine = await api('POST', '/v1/sessions', { namespace: 'team-a', user: 'u' }, SCOPED);
    expect(mine.status).toBe(200);
    expect((await api('POST', '/v1/sessions', { namespace: 'team-b', user: 'u' }, SCOPED)).status).toBe(403);
    // Another namespace's session is answered as one that does not exist (server-security.test.ts compares them).
    expect((await api('GET', `/v1/sessions/${other.id}`, undefined, SCOPED)).status).toBe(404);
    expect((await api('POST', `/v1/sessions/${other.id}/execute`, { command: 'true' }, SCOPED)).status).toBe(404);
    expect((await api('DELETE', `/v1/sessions/${other.id}`, undefined, SCOPED)).status).toBe(404);
    expect((await api('GET', `/v1/sessions/${other.id}`)).status).toBe(200);
    const listed = (await api('GET', '/v1/sessions', undefined, SCOPED)).body as unknown as { namespace: string }[];
    expect(listed.length).toBeGreaterThan(0);
    expect(listed.every((s) => s.namespace === 'team-a')).toBe(true);
    const filtered = (await api('GET', '/v1/sessions?namespace=team-b')).body as unknown as { id: string }[];
    expect(filtered.map((s) => s.id)).toEqual([other.id]);
  });
});

describe('bad input is answered, and nothing is made', () => {
  it('malformed JSON, wrong types, invalid names and values, oversize bodies, unknown ids and routes', async () => {
    const before = ((await api('GET', '/v1/sessions')).body as unknown as unknown[]).length;
    const cases: [unknown, number][] = [
      ['{not json', 400],
      ['[1,2]', 400],
      [{ namespace: 7 }, 400],
      [{ ttl_minutes: '60' }, 400],
      [{ env: { A: 1 } }, 400],
      [{ namespace: 'Bad_Name' }, 422],
      [{ user: '-x' }, 422],
      [{ ttl_minutes: -1 }, 422],
      [{ template: 'cobol' }, 422],
      [{ provider: 'aws' }, 422],
      [{ namespace: 'x'.repeat(2_000_000) }, 413],
    ];
    for (const [body, status] of cases) {
      const r = await api('POST', '/v1/sessions', body);
      expect(r.status, JSON.stringify(body).slice(0, 60)).toBe(status);
      expect(r.body.error).toEqual({ code: expect.any(String), message: expect.any(String) });
    }
    expect(((await api('GET', '/v1/sessions')).body as unknown as unknown[]).length).toBe(before);
    expect((await api('GET', '/v1/sessions/ws-none-x-1-abcd')).status).toBe(404);
    expect((await api('GET', '/v1/sessions/not-an-id')).status).toBe(422);
    expect((await api('GET', '/v1/nothing')).status).toBe(404);
    const { body: s } = await api('POST', '/v1/sessions', { namespace: 'bad-exec', user: 'u' });
    expect((await api('POST', `/v1/sessions/${s.id}/execute`, { command: 42 })).status).toBe(400);
    expect((await api('POST', `/v1/sessions/${s.id}/execute`, { command: 'true', timeout: 0 })).status).toBe(422);
  });
});

/** Runs argv over the exec WebSocket; returns what came back on each channel and the exit code. */
function wsExec(
  id: string,
  argv: string[],
  opts: { stdin?: Buffer; key?: string; onOpen?: (ws: WebSocket) => void } = {},
) {
  const q = new URLSearchParams();
  for (const a of argv) q.append('command', a);
  if (opts.stdin) q.set('stdin', '1');
  const ws = new WebSocket(`${base.replace('http', 'ws')}/v1/sessions/${id}/exec?${q}`, [V5], {
    headers: { 'x-api-key': opts.key ?? KEY },
  });
  return new Promise<{ stdout: string; stderr: string; code: number; protocol: string }>((resolve, reject) => {
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let code = -1;
    ws.on('open', () => {
      if (opts.stdin) {
        ws.send(frame(CHANNEL.stdin, opts.stdin));
        ws.send(closeFrame(CHANNEL.stdin));
      }
      opts.onOpen?.(ws);
    });
    ws.on('message', (d: Buffer) => {
      const f = parseFrame(d);
      if (f?.channel === CHANNEL.stdout) out.push(f.payload);
      if (f?.channel === CHANNEL.stderr) err.push(f.payload);
      if (f?.channel === CHANNEL.status) code = exitFromStatus(f.payload).code ?? -1;
    });
    ws.on('error', reject);
    ws.on('close', () =>
      resolve({
        stdout: Buffer.concat(out).toString(),
        stderr: Buffer.concat(err).toString(),
        code,
        protocol: ws.protocol,
      }),
    );
  });
}

describe('the streaming exec WebSocket (v5.channel.k8s.io)', () => {
  let id = '';
  beforeAll(async () => {
    id = (await api('POST', '/v1/sessions', { namespace: 'stream', user: 'u' })).body.id;
  });

  it('passes argv exactly, keeps stdout and stderr apart and reports the exit code on channel 3', async () => {
    const r = await wsExec(id, ['sh', '-c', 'printf "%s|" "$@"; echo err >&2; exit 7', 'sh', 'a b', '$(x)']);
    expect(r).toEqual({ stdout: 'a b|$(x)|', stderr: 'err\n', code: 7, protocol: V5 });
  });

  it('delivers stdin and its EOF ([255, 0])', async () => {
    const r = await wsExec(id, ['wc', '-l'], { stdin: Buffer.from('a\nb\n') });
    expect(r).toMatchObject({ stdout: '2\n', code: 0 });
  });

  it('refuses without a key (401) or for an unknown session (404)', async () => {
    const status = (key: string, sid: string) =>
      new Promise<number>((resolve) => {
        const ws = new WebSocket(`${base.replace('http', 'ws')}/v1/sessions/${sid}/exec?command=true`, [V5], {
          headers: { 'x-api-key': key },
        });
        ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
        ws.on('open', () => resolve(101));
        ws.on('error', () => {});
      });
    expect(await status('wrong-key-0123456789abcdef', id)).toBe(401);
    expect(await status(KEY, 'ws-none-x-1-abcd')).toBe(404);
  });

  it('a client that disconnects mid-exec leaves no process behind', async () => {
    const marker = 'ws-disconnect-marker';
    const ws = new WebSocket(
      `${base.replace('http', 'ws')}/v1/sessions/${id}/exec?command=bash&command=-c&command=${encodeURIComponent(`exec -a ${marker} sleep 300`)}`,
      [V5],
      { headers: { 'x-api-key': KEY } },
    );
    await new Promise((r) => ws.on('open', r));
    const running = async () =>
      (
        await api('POST', `/v1/sessions/${id}/execute`, {
          command: `grep -l '${marker.slice(0, -1)}[r]' /proc/[0-9]*/cmdline || true`,
        })
      ).body.stdout !== '';
    expect(await waitFor(running)).toBe(true);
    ws.terminate();
    expect(await waitFor(async () => !(await running()))).toBe(true);
  });
});

describe('onmemos serve', () => {
  const own = new StateDir();
  const children: ChildProcess[] = [];
  afterAll(async () => {
    for (const c of children) c.kill('SIGKILL');
    await own.cleanup();
  });

  /** Starts `onmemos serve --port 0` and resolves with its URL. */
  const start = (env: Record<string, string>, args: string[] = []) =>
    new Promise<{ url: string; child: ChildProcess }>((resolve, reject) => {
      const child = spawn(process.execPath, [BIN, 'serve', '--port', '0', ...args], {
        env: { ...process.env, ...own.env, ...env },
      });
      children.push(child);
      let err = '';
      child.stderr!.on('data', (d) => {
        err += d;
        const m = /serving the \/v1 API on (http:\/\/\S+)/.exec(err);
        if (m) resolve({ url: m[1]!, child });
      });
      child.on('exit', (code) => reject(new Error(`serve exited ${code}: ${err}`)));
    });

  it('refuses to start without a key, unless --insecure-no-auth on loopback', async () => {
    const r = await own.run(['serve', '--port', '0'], { env: { ONMEMOS_API_KEYS: '' } });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^onmemos: no API keys/);
    const wide = await own.run(['serve', '--port', '0', '--host', '0.0.0.0', '--insecure-no-auth'], {
      env: { ONMEMOS_API_KEYS: '' },
    });
    expect(wide.code).toBe(2);
    expect(wide.stderr).toMatch(/only allowed on a loopback address/);
    const { url, child } = await start({ ONMEMOS_API_KEYS: '' }, ['--insecure-no-auth']);
    const res = await fetch(`${url}/v1/sessions`);
    expect(res.status).toBe(200); // no key needed
    expect(Array.isArray(await res.json())).toBe(true);
    child.kill('SIGTERM');
    expect(await new Promise((r) => child.on('exit', r))).toBe(0);
  });

  it('keeps no state of its own: after kill -9 and a restart every session is still listed and usable', async () => {
    const first = await start({ ONMEMOS_API_KEYS: KEY });
    const headers = { 'x-api-key': KEY, 'content-type': 'application/json' };
    const s = (await (
      await fetch(`${first.url}/v1/sessions`, { method: 'POST', headers, body: '{"namespace":"restart","user":"u"}' })
    ).json()) as { id: string };
    first.child.kill('SIGKILL');
    await new Promise((r) => first.child.on('exit', r));
    const second = await start({ ONMEMOS_API_KEYS: KEY });
    const listed = (await (await fetch(`${second.url}/v1/sessions`, { headers })).json()) as { id: string }[];
    expect(listed.map((x) => x.id)).toContain(s.id);
    const r = (await (
      await fetch(`${second.url}/v1/sessions/${s.id}/execute`, {
        method: 'POST',
        headers,
        body: '{"command":"echo $WORKSPACE_ID"}',
      })
    ).json()) as { stdout: string };
    expect(r.stdout).toBe(`${s.id}\n`);
    second.child.kill('SIGTERM');
    await new Promise((r) => second.child.on('exit', r));
  });
});
