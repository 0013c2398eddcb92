/** serveExec and openExec against each other over a real WebSocket on 127.0.0.1 port 0. */
import { createServer, type Server } from 'node:http';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { errorFromResponse, UserError } from '../../src/errors.js';
import { execQuery, openExec } from '../../src/exec/client.js';
import { execSpecFromQuery, type ServeExecOptions, serveExec } from '../../src/exec/server.js';
import { SERVER_SUBPROTOCOLS } from '../../src/exec/v5.js';
import type { ExitStatus, RemoteProcess } from '../../src/providers/provider.js';

let server: Server;
let url = '';
let start: () => Promise<RemoteProcess> = () => Promise.reject(new Error('not set'));
let serveOpts: ServeExecOptions = {};

beforeAll(async () => {
  const wss = new WebSocketServer({
    noServer: true,
    handleProtocols: (offered) => SERVER_SUBPROTOCOLS.find((p) => offered.has(p)) ?? false,
  });
  server = createServer();
  server.on('upgrade', (req, socket, head) => {
    const spec = execSpecFromQuery(new URL(req.url ?? '/', 'http://x').searchParams);
    wss.handleUpgrade(req, socket, head, (ws) => void serveExec(ws, spec, start, serveOpts));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `ws://127.0.0.1:${(server.address() as { port: number }).port}/exec`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

const client = (stdin = false, tty = false) =>
  openExec({ argv: ['x'], stdin, tty }, { url, peer: 'the test server', refused: errorFromResponse });

/** A process that runs until told to exit, and records what was done to it. */
function recorder() {
  const signals: string[] = [];
  let stdinEnded = false;
  let exit!: (s: ExitStatus) => void;
  const stdin = new PassThrough();
  stdin.on('finish', () => {
    stdinEnded = true;
  });
  stdin.resume();
  const proc: RemoteProcess = {
    stdin,
    stdout: new PassThrough(),
    stderr: new PassThrough(),
    resize() {},
    kill(signal = 'SIGKILL') {
      signals.push(signal);
    },
    exit: new Promise((r) => {
      exit = r;
    }),
  };
  const end = (s: ExitStatus) => {
    (proc.stdout as PassThrough).end();
    (proc.stderr as PassThrough).end();
    exit(s);
  };
  return { proc, signals, stdinEnded: () => stdinEnded, end };
}

const until = async (ok: () => boolean) => {
  for (let i = 0; i < 500 && !ok(); i++) await new Promise((r) => setTimeout(r, 10));
  return ok();
};

describe('serveExec', () => {
  it('a process that cannot start ends the stream at once with its reason, and the client exits 125', async () => {
    serveOpts = {};
    for (const stdin of [false, true]) {
      start = () => Promise.reject(new Error('no such thing'));
      const p = await client(stdin);
      let err = '';
      p.stderr.on('data', (d) => (err += d));
      p.stdout.resume();
      expect(await p.exit).toEqual({ code: 125 });
      expect(err).toBe('onmemos: no such thing\n');
    }
  });
});

describe('serveExec options', () => {
  it('by default a client that goes away kills the process', async () => {
    serveOpts = {};
    const r = recorder();
    start = async () => r.proc;
    const p = await client(true);
    p.kill('SIGKILL');
    expect(await until(() => r.signals.includes('SIGKILL'))).toBe(true);
    r.end({ code: null, signal: 'SIGKILL' });
  });

  it("'leave' (a kubelet): without a tty the process runs on with its stdin closed; with one it gets SIGHUP", async () => {
    serveOpts = { onClientGone: 'leave' };
    const r = recorder();
    start = async () => r.proc;
    const p = await client(true);
    p.kill('SIGKILL');
    expect(await until(() => r.stdinEnded())).toBe(true);
    (r.proc.stdout as PassThrough).write('nobody reads this\n');
    await new Promise((res) => setTimeout(res, 50));
    expect(r.signals).toEqual([]);
    r.end({ code: 0 });

    const t = recorder();
    start = async () => t.proc;
    const q = await client(true, true);
    q.kill('SIGKILL');
    expect(await until(() => t.signals.length > 0)).toBe(true);
    expect(t.signals).toEqual(['SIGHUP']);
    t.end({ code: null, signal: 'SIGHUP' });
  });

  it('signals: false ignores channel 16; status replaces the channel 3 status', async () => {
    serveOpts = { signals: false, status: (e) => ({ metadata: {}, status: 'Failure', message: `custom ${e.code}` }) };
    const r = recorder();
    start = async () => r.proc;
    const p = await client(true);
    let err = '';
    p.stderr.on('data', (d) => (err += d));
    p.stdout.resume();
    p.kill('SIGINT');
    await new Promise((res) => setTimeout(res, 50));
    r.end({ code: 7 });
    expect(await p.exit).toEqual({ code: 1 });
    expect(r.signals).toEqual([]);
    expect(err).toContain('custom 7');
  });
});

describe('execSpecFromQuery', () => {
  it('stdout=fd / stderr=fd claim the descriptors that came with the request; without them it is refused', () => {
    const q = (s: string) => new URLSearchParams(`command=true&${s}`);
    expect(execSpecFromQuery(q('stdout=fd'), { stdout: 20 }).outputFds).toEqual({ stdout: 20 });
    expect(execSpecFromQuery(q('stdout=fd&stderr=fd'), { stdout: 20, stderr: 21 }).outputFds).toEqual({
      stdout: 20,
      stderr: 21,
    });
    // What came and was not claimed is not the command's (the agent closes it).
    expect(execSpecFromQuery(q('stderr=fd'), { stdout: 20, stderr: 21 }).outputFds).toEqual({ stderr: 21 });
    expect(execSpecFromQuery(q(''), { stdout: 20 }).outputFds).toBeUndefined();
    // onmemos serve and the Cloud Run agent get no descriptors: such a request is refused there.
    expect(() => execSpecFromQuery(q('stdout=fd'))).toThrow(/none came/);
    expect(() => execSpecFromQuery(q('stderr=fd'), { stdout: 20 })).toThrow(/stderr as a descriptor, but none came/);
    expect(() => execSpecFromQuery(q('stdout=fd&tty=1'), { stdout: 20 })).toThrow(/tty/);
    // The Kubernetes API's stdout=true is no descriptor: ignored, as before.
    expect(execSpecFromQuery(q('stdout=true&stderr=true')).outputFds).toBeUndefined();
  });

  it('refuses what it cannot pass on', () => {
    expect(() => execSpecFromQuery(new URLSearchParams())).toThrow(UserError);
    expect(() => execSpecFromQuery(new URLSearchParams('command=a&workdir=rel'))).toThrow(/absolute/);
    expect(() => execSpecFromQuery(new URLSearchParams('command=a&cols=0'))).toThrow(/cols/);
    expect(execSpecFromQuery(new URLSearchParams('command=a&command=b c&tty=1&stdin=true&env=K=v=w'))).toMatchObject({
      argv: ['a', 'b c'],
      tty: true,
      stdin: true,
      env: { K: 'v=w' },
    });
  });

  it('via=job (with its timeout) round-trips through execQuery; another via, or a timeout without one, is refused', () => {
    const spec = { argv: ['x'], via: 'job' as const, timeoutSeconds: 2.5 };
    expect(execSpecFromQuery(execQuery(spec))).toMatchObject({ argv: ['x'], via: 'job', timeoutSeconds: 3 });
    expect(execSpecFromQuery(execQuery({ argv: ['x'], timeoutSeconds: 5 }))).not.toHaveProperty('timeoutSeconds');
    expect(() => execSpecFromQuery(new URLSearchParams('command=a&via=ssh'))).toThrow(/via must be job/);
    expect(() => execSpecFromQuery(new URLSearchParams('command=a&timeout=5'))).toThrow(/with via=job/);
    expect(() => execSpecFromQuery(new URLSearchParams('command=a&via=job&timeout=-1'))).toThrow(/timeout/);
  });
});
