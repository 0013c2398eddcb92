/**
 * `onmemos tunnel` on local sessions (through the session's agent, on the session's own loopback) and through
 * `onmemos serve` (its `/v1/sessions/{id}/tunnel` route): --stdio, --local-port with several connections, and a
 * port where nothing listens refused in one line.
 */
import { spawn } from 'node:child_process';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, StateDir, waitFor } from '../helpers/cli.js';
import { type Served, startServe } from '../helpers/serve.js';

const state = new StateDir();
let id = '';
const PORT = 7411;
// Answers the first chunk and closes: a WebSocket has no half-close, so the far end ends each tunnel.
const server = `require('net').createServer((s) => { s.once('data', (d) => s.end('echo:' + d)); }).listen(${PORT}, '127.0.0.1')`;

beforeAll(async () => {
  id = await state.create('--network', 'isolated');
  const r = await state.run([
    'exec',
    id,
    '--',
    'sh',
    '-c',
    `(node -e "${server}" </dev/null >/dev/null 2>&1 &) ; echo started`,
  ]);
  expect(r.code, r.stderr).toBe(0);
  const up = await waitFor(
    async () =>
      (
        await state.run([
          'exec',
          id,
          '--',
          'node',
          '-e',
          `require('net').connect(${PORT}, '127.0.0.1').on('connect', () => process.exit(0)).on('error', () => process.exit(1))`,
        ])
      ).code === 0,
    15_000,
    200,
  );
  expect(up).toBe(true);
}, 60_000);
afterAll(() => state.cleanup());

/** `onmemos tunnel --stdio`, fed `input`: its stdout, stderr and exit code. */
function stdio(env: Record<string, string>, port: number, input: string) {
  return new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
    const p = spawn(process.execPath, [BIN, 'tunnel', '--stdio', '--port', String(port), id], {
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

/** `onmemos tunnel --local-port 0 --json`: two connections through it, each its own tunnel. */
async function listening(env: Record<string, string>) {
  const t = spawn(process.execPath, [BIN, 'tunnel', id, '--port', String(PORT), '--local-port', '0', '--json'], {
    env: { ...process.env, ...state.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  try {
    const line = await new Promise<string>((resolve, reject) => {
      t.stdout.once('data', (d) => resolve(String(d)));
      t.once('exit', (c) => reject(new Error(`tunnel exited ${c}`)));
    });
    const { host, port } = JSON.parse(line) as { host: string; port: number };
    const talk = (word: string) =>
      new Promise<string>((resolve, reject) => {
        const c = connect(port, host);
        let got = '';
        c.on('data', (d) => (got += d));
        c.on('end', () => resolve(got));
        c.on('error', reject);
        c.end(word);
      });
    return await Promise.all([talk('one'), talk('two')]);
  } finally {
    t.kill('SIGINT');
    await new Promise((r) => t.once('exit', r));
  }
}

describe('onmemos tunnel on a local session', () => {
  it('--stdio carries one connection to a port on the session loopback', async () => {
    expect(await stdio({}, PORT, 'hello')).toMatchObject({ code: 0, out: 'echo:hello' });
  });

  it('--local-port takes several connections, each its own tunnel', async () => {
    expect(await listening({})).toEqual(['echo:one', 'echo:two']);
  });

  it('a port where nothing listens: exit 1, one line', async () => {
    const r = await stdio({}, PORT + 1, '');
    expect(r.code).toBe(1);
    expect(r.err.trim().split('\n')).toHaveLength(1);
    expect(r.err).toMatch(/nothing listens on port 7412/);
  });
});

describe('onmemos tunnel through onmemos serve', () => {
  let served: Served;
  const key = 'tunnel-e2e-key-0123456789abcdef';
  const remote = () => ({ ONMEMOS_SERVER: served.url, ONMEMOS_API_KEY: key });
  beforeAll(async () => {
    served = await startServe({ ...state.env, ONMEMOS_API_KEYS: key });
  });
  afterAll(() => served.stop());

  it('the same, over the server tunnel route', async () => {
    expect(await stdio(remote(), PORT, 'remote')).toMatchObject({ code: 0, out: 'echo:remote' });
    expect(await listening(remote())).toEqual(['echo:one', 'echo:two']);
    const r = await stdio(remote(), PORT + 1, '');
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/nothing listens on port 7412/);
  });

  it('the route wants a key and a valid port', async () => {
    const r = await stdio({ ONMEMOS_SERVER: served.url, ONMEMOS_API_KEY: 'wrong-key-0123456789abcdef' }, PORT, '');
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/invalid API key/);
    const bad = await fetch(`${served.url}/v1/sessions/${id}/tunnel?port=0`, {
      headers: {
        'x-api-key': key,
        connection: 'upgrade',
        upgrade: 'websocket',
        'sec-websocket-version': '13',
        'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==',
      },
    }).catch((e) => e);
    expect(bad instanceof Error ? 400 : bad.status).toBe(400);
  });
});
