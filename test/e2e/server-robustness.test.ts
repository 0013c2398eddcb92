/**
 * `onmemos serve` (the real bin/onmemos.js) against hostile clients: malformed WebSocket frames, floods of stdin,
 * oversize and queued messages, huge outputs, too many commands at once. The server must stay up, keep its
 * memory bounded (its VmRSS, read from /proc), and close only the offending client. Memory bounds are behaviour
 * bounds, generous on purpose; nothing here asserts on time.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { CHANNEL, closeFrame, exitFromStatus, frame, parseFrame, V5 } from '../../src/exec/v5.js';
import { StateDir, waitFor } from '../helpers/cli.js';
import { clientFrame, rawHttp, rawUpgrade, type Served, startServe, watchRss } from '../helpers/serve.js';

const KEY = 'robustness-key-0123456789abcdef';
const OTHER_KEY = 'robustness-other-key-0123456789';
/** The bound every memory test asserts: the server idles at about 60 MiB. */
const RSS_BOUND_MIB = 300;
const MiB = 1024 * 1024;

const state = new StateDir();
let server: Served;
let sid = '';
const sockets = new Set<WebSocket>();

// biome-ignore lint/suspicious/noExplicitAny: response bodies are JSON whose shape the assertions check
async function api(srv: Served, method: string, path: string, body?: unknown, key = KEY): Promise<any> {
  const res = await fetch(`${srv.url}${path}`, {
    method,
    headers: { 'x-api-key': key, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(120_000),
  });
  return { status: res.status, body: await res.json() };
}

/** Opens a WebSocket that is closed after the file whatever happens. */
function openWs(url: string, protocols: string[] = [], key = KEY): WebSocket {
  const ws = new WebSocket(url, protocols, { headers: { 'x-api-key': key }, perMessageDeflate: false });
  sockets.add(ws);
  ws.on('error', () => {});
  ws.on('close', () => sockets.delete(ws));
  return ws;
}

/** The status of a refused (or accepted: 101) WebSocket upgrade. */
function upgradeStatus(url: string, protocols: string[] = [], key = KEY): Promise<{ status: number; body: string }> {
  return new Promise((resolve) => {
    const ws = openWs(url, protocols, key);
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (d: Buffer) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    ws.on('open', () => {
      resolve({ status: 101, body: '' });
      ws.terminate();
    });
    ws.on('error', () => resolve({ status: 0, body: '' }));
  });
}

const execUrl = (srv: Served, id: string, argv: string[], stdin = false) => {
  const q = new URLSearchParams();
  for (const a of argv) q.append('command', a);
  if (stdin) q.set('stdin', '1');
  return `${srv.url.replace('http', 'ws')}/v1/sessions/${id}/exec?${q}`;
};

/** An exec over the WebSocket: resolves when the server closes, with the output and exit code. */
function execWs(srv: Served, id: string, argv: string[], opts: { stdin?: boolean; key?: string } = {}) {
  const ws = openWs(execUrl(srv, id, argv, opts.stdin), [V5], opts.key);
  const out: Buffer[] = [];
  let code = -1;
  ws.on('message', (d: Buffer) => {
    const f = parseFrame(d);
    if (f?.channel === CHANNEL.stdout) out.push(f.payload);
    if (f?.channel === CHANNEL.status) code = exitFromStatus(f.payload).code ?? -1;
  });
  const opened = new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('unexpected-response', (_q, res) => reject(new Error(`exec refused: HTTP ${res.statusCode}`)));
    ws.once('error', reject);
  });
  const done = new Promise<{ stdout: string; code: number; closeCode: number }>((resolve) =>
    ws.once('close', (closeCode) => resolve({ stdout: Buffer.concat(out).toString(), code, closeCode })),
  );
  return { ws, opened, done };
}

/** Whether a process whose argv[0] is `marker` runs in the session (looked up inside it, not on the host). */
async function running(srv: Served, id: string, marker: string): Promise<boolean> {
  const pattern = `${marker.slice(0, -1)}[${marker.slice(-1)}]`;
  const r = await api(srv, 'POST', `/v1/sessions/${id}/execute`, {
    command: `grep -l '${pattern}' /proc/[0-9]*/cmdline || true`,
  });
  return r.body.stdout !== '';
}

beforeAll(async () => {
  server = await startServe({ ...state.env, ONMEMOS_API_KEYS: `${KEY};${OTHER_KEY}` });
  const created = await api(server, 'POST', '/v1/sessions', { namespace: 'hostile', user: 'u', ttl_minutes: 30 });
  expect(created.status, JSON.stringify(created.body)).toBe(200);
  sid = created.body.id;
});
afterAll(async () => {
  for (const ws of sockets) ws.terminate();
  await server?.stop();
  await state.cleanup();
});

describe('malformed WebSocket frames', () => {
  it('close the client that sent them, never the server; another client’s command runs on and finishes', async () => {
    // Another client's command, which waits for its stdin: it must still be there after the hostile clients.
    const other = execWs(server, sid, ['sh', '-c', 'read x; echo "finished $x"'], { stdin: true });
    await other.opened;
    const bad: [string, Buffer, number][] = [
      ['invalid opcode', clientFrame(0x3, Buffer.alloc(0)), 1002],
      ['invalid UTF-8 in a text frame', clientFrame(0x1, Buffer.from([0xff, 0xfe, 0xfd])), 1007],
      ['an unmasked client frame', Buffer.from([0x82, 0x01, 0x00]), 1002],
    ];
    const routes: [string, Record<string, string>][] = [
      [`/v1/sessions/${sid}/shell`, {}],
      [`/v1/cloudrun/workspaces/${sid}/shell`, {}],
      [`/v1/sessions/${sid}/exec?command=cat&stdin=1`, { 'Sec-WebSocket-Protocol': V5 }],
    ];
    for (const [path, headers] of routes) {
      for (const [what, bytes, code] of bad) {
        for (const withUpgrade of [false, true]) {
          const label = `${path.replace(sid, '{id}')}: ${what}${withUpgrade ? ', in the upgrade request' : ''}`;
          const raw = await rawUpgrade(
            server.port,
            path,
            { 'X-API-Key': KEY, ...headers },
            withUpgrade ? bytes : undefined,
          );
          expect(raw.status, label).toBe(101);
          if (!withUpgrade) raw.socket.write(bytes);
          expect(await raw.closed(), label).toBe(code);
          expect(server.alive(), `${label}: the server exited: ${server.stderr()}`).toBe(true);
          expect((await rawHttp(server.port, 'GET', '/health')).status, label).toBe(200);
        }
      }
    }
    other.ws.send(frame(CHANNEL.stdin, 'ok\n'));
    other.ws.send(closeFrame(CHANNEL.stdin));
    expect(await other.done).toMatchObject({ stdout: 'finished ok\n', code: 0, closeCode: 1000 });
    expect(server.stderr()).not.toMatch(/Unhandled|Error:/);
  });
});

describe('memory stays bounded', () => {
  it('a flood of stdin to a command that never reads it is held back, and the command dies with the client', async () => {
    const marker = 'stdin-flood-marker';
    const flood = execWs(server, sid, ['bash', '-c', `exec -a ${marker} sleep 600`], { stdin: true });
    await flood.opened;
    const rss = watchRss(server.child.pid!);
    const chunk = frame(CHANNEL.stdin, Buffer.alloc(64 * 1024, 0x61));
    const goal = 512 * MiB;
    let sent = 0;
    let lastProgress = Date.now();
    // Sends as fast as the server takes it, until 512 MiB went or nothing has moved for 2 s (the server stalled it).
    while (sent < goal && Date.now() - lastProgress < 2_000 && flood.ws.readyState === WebSocket.OPEN) {
      if (flood.ws.bufferedAmount > 4 * MiB) {
        await new Promise((r) => setTimeout(r, 20));
        continue;
      }
      flood.ws.send(chunk);
      sent += chunk.length - 1;
      lastProgress = Date.now();
      if (sent % (8 * MiB) === 0) await new Promise((r) => setImmediate(r));
    }
    await new Promise((r) => setTimeout(r, 500));
    const peak = rss.stop();
    expect(peak, `peak RSS ${peak.toFixed(0)} MiB after ${(sent / MiB).toFixed(0)} MiB of stdin`).toBeLessThan(
      RSS_BOUND_MIB,
    );
    expect(await running(server, sid, marker)).toBe(true);
    flood.ws.terminate();
    expect(await waitFor(async () => !(await running(server, sid, marker)), 30_000, 200)).toBe(true);
    expect(server.alive()).toBe(true);
  });

  it('a WebSocket message over 1 MiB closes that connection (1009), on the exec and the JSON shell', async () => {
    const exec = execWs(server, sid, ['cat'], { stdin: true });
    await exec.opened;
    exec.ws.send(frame(CHANNEL.stdin, Buffer.alloc(2 * MiB, 0x61)));
    const closed = await Promise.race([exec.done, new Promise((r) => setTimeout(() => r('still open'), 10_000))]);
    expect(closed).toMatchObject({ closeCode: 1009 });

    const shell = openWs(`${server.url.replace('http', 'ws')}/v1/sessions/${sid}/shell`);
    await new Promise((r) => shell.once('open', r));
    const shellClosed = new Promise((r) => shell.once('close', (code) => r(code)));
    shell.send(JSON.stringify({ type: 'command', command: 'true', pad: 'x'.repeat(2 * MiB) }));
    expect(await Promise.race([shellClosed, new Promise((r) => setTimeout(() => r('still open'), 10_000))])).toBe(1009);
    expect(server.alive()).toBe(true);
  });

  it('the JSON shell queues a few commands, answers the rest too_many_requests in order, and stays small', async () => {
    const go = `/tmp/go-${Date.now()}`;
    const ws = openWs(`${server.url.replace('http', 'ws')}/v1/sessions/${sid}/shell`);
    await new Promise((r) => ws.once('open', r));
    const replies: { type: string; error?: { code: string }; stdout?: string }[] = [];
    ws.on('message', (d: Buffer) => replies.push(JSON.parse(d.toString())));
    const rss = watchRss(server.child.pid!);
    // The first command blocks until released; then 400 messages of about 1 MiB each.
    ws.send(JSON.stringify({ type: 'command', command: `while [ ! -e ${go} ]; do sleep 0.1; done; echo released` }));
    const pad = 'x'.repeat(MiB - 200);
    const n = 400;
    for (let i = 0; i < n; i++) {
      while (ws.bufferedAmount > 4 * MiB) await new Promise((r) => setTimeout(r, 10));
      ws.send(JSON.stringify({ type: 'command', command: `echo ${i}`, pad }));
    }
    while (ws.bufferedAmount > 0) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 1_000));
    const peak = rss.stop();
    expect(peak, `peak RSS ${peak.toFixed(0)} MiB with ${n} MiB of queued messages`).toBeLessThan(RSS_BOUND_MIB);
    expect((await api(server, 'POST', `/v1/sessions/${sid}/execute`, { command: `touch ${go}` })).status).toBe(200);
    expect(await waitFor(() => replies.length >= n + 1, 60_000, 50)).toBe(true);
    // One reply per message, in order: the blocking command, the queued ones, then the refusals.
    expect(replies[0]).toMatchObject({ type: 'command_result', stdout: 'released\n' });
    const results = replies.slice(1).filter((r) => r.type === 'command_result');
    const refused = replies.slice(1).filter((r) => r.type === 'error');
    expect(results.length).toBeGreaterThan(0);
    expect(results.length).toBeLessThanOrEqual(16);
    expect(results.map((r) => r.stdout)).toEqual(results.map((_, i) => `${i}\n`));
    expect(refused.length).toBe(n - results.length);
    expect(refused.every((r) => r.error?.code === 'too_many_requests')).toBe(true);
    expect(replies.slice(1, 1 + results.length).every((r) => r.type === 'command_result')).toBe(true);
    ws.close();
  });

  it('8 concurrent executes printing 100 MB each: capped output, and the server stays small', async () => {
    const rss = watchRss(server.child.pid!);
    const results = await Promise.all(
      Array.from({ length: 8 }, () =>
        api(server, 'POST', `/v1/sessions/${sid}/execute`, {
          command: "head -c 100000000 /dev/zero | tr '\\0' a",
          timeout: 600,
        }),
      ),
    );
    const peak = rss.stop();
    expect(peak, `peak RSS ${peak.toFixed(0)} MiB`).toBeLessThan(RSS_BOUND_MIB);
    for (const r of results) {
      expect(r.status).toBe(200);
      expect(r.body).toMatchObject({ returncode: 0, truncated: true });
      expect(r.body.stdout.length).toBe(MiB);
      expect(/^a+$/.test(r.body.stdout)).toBe(true);
    }
  });

  it('a huge single line is cut at the cap on a character boundary', async () => {
    // 3-byte characters, no newline: the cap (1 MiB) falls inside one of them.
    const r = await api(server, 'POST', `/v1/sessions/${sid}/execute`, {
      command: "head -c 3000000 /dev/zero | tr '\\0' a | sed 's/a/€/g'",
    });
    expect(r.body.truncated).toBe(true);
    expect(r.body.stdout).toMatch(/^€+$/);
    expect(Buffer.byteLength(r.body.stdout)).toBeLessThanOrEqual(MiB);
    expect(Buffer.byteLength(r.body.stdout)).toBeGreaterThan(MiB - 3);
  });
});

describe('a cap on concurrent work per API key', () => {
  let capped: Served;
  let cid = '';
  beforeAll(async () => {
    capped = await startServe({ ...state.env, ONMEMOS_API_KEYS: `${KEY};${OTHER_KEY}` }, ['--max-concurrent', '2']);
    cid = (await api(capped, 'POST', '/v1/sessions', { namespace: 'capped', user: 'u', ttl_minutes: 30 })).body.id;
  });
  afterAll(async () => {
    await capped?.stop();
  });

  it('refuses a third execute, exec or JSON shell with 429, counts each key apart, and frees a slot when one ends', async () => {
    const a = execWs(capped, cid, ['sleep', '600']);
    await a.opened;
    const shell = openWs(`${capped.url.replace('http', 'ws')}/v1/sessions/${cid}/shell`);
    await new Promise((r) => shell.once('open', r));

    const refused = await api(capped, 'POST', `/v1/sessions/${cid}/execute`, { command: 'true' });
    expect(refused.status).toBe(429);
    expect(refused.body).toEqual({
      error: { code: 'too_many_requests', message: expect.stringMatching(/--max-concurrent/) },
    });
    expect(refused.body.error.message).not.toContain('\n');
    const legacy = await api(capped, 'POST', `/v1/cloudrun/workspaces/${cid}/execute?command=true`);
    expect(legacy.status).toBe(429);
    const up = await upgradeStatus(execUrl(capped, cid, ['true']), [V5]);
    expect(up.status).toBe(429);
    expect(JSON.parse(up.body)).toMatchObject({ error: { code: 'too_many_requests' } });
    expect((await upgradeStatus(`${capped.url.replace('http', 'ws')}/v1/sessions/${cid}/shell`)).status).toBe(429);
    // Other routes are not work in flight; another key has its own count.
    expect((await api(capped, 'GET', `/v1/sessions/${cid}`)).status).toBe(200);
    expect(
      (await api(capped, 'POST', `/v1/sessions/${cid}/execute`, { command: 'echo other' }, OTHER_KEY)).body,
    ).toMatchObject({
      stdout: 'other\n',
    });

    a.ws.terminate();
    expect(
      await waitFor(
        async () =>
          (await api(capped, 'POST', `/v1/sessions/${cid}/execute`, { command: 'echo again' })).status === 200,
        30_000,
        200,
      ),
    ).toBe(true);
    shell.close();
    expect(capped.alive()).toBe(true);
  });
});
