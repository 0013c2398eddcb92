/** The local agent's WebSocket client (src/exec/unix-ws.ts): a real ws server, and peers that answer badly. */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { parseUnixUrl, UpgradeRefused, unixWebSocket } from '../../src/exec/unix-ws.js';

const dir = mkdtempSync(join(tmpdir(), 'onmemos-unix-ws-'));
let n = 0;
const servers: Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A unix socket server whose connections get `answer` (raw bytes) once the request's head has come. */
async function rawPeer(answer: (socket: Socket) => void): Promise<string> {
  const path = join(dir, `s${n++}.sock`);
  const server = createServer((socket) => {
    socket.on('error', () => {});
    let got = '';
    socket.on('data', (d) => {
      got += d.toString('latin1');
      if (got.includes('\r\n\r\n')) answer(socket);
    });
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(path, r));
  return path;
}

const open = (path: string, o: { protocols?: string[]; timeoutMs?: number } = {}) =>
  unixWebSocket(connect(path), {
    path: '/exec?command=true',
    protocols: o.protocols ?? ['v5.channel.k8s.io'],
    maxPayload: 1 << 20,
    timeoutMs: o.timeoutMs,
  });

describe('unixWebSocket', () => {
  it('talks to a ws server both ways, frames that come with the 101 included', async () => {
    const path = join(dir, `s${n++}.sock`);
    const wss = new WebSocketServer({ noServer: true, handleProtocols: (p) => (p.has('b') ? 'b' : false) });
    const http = createHttpServer();
    http.on('upgrade', (req, socket, head) => {
      expect(req.url).toBe('/exec?command=true');
      wss.handleUpgrade(req, socket, head, (ws) => {
        ws.send(Buffer.from('first')); // right behind the 101
        ws.on('message', (d: Buffer) => ws.send(Buffer.concat([Buffer.from('echo:'), d])));
      });
    });
    servers.push(http as unknown as Server);
    await new Promise<void>((r) => http.listen(path, r));
    const { ws, opened } = await open(path, { protocols: ['a', 'b'] });
    const got: string[] = [];
    ws.on('message', (d: Buffer) => got.push(d.toString()));
    await opened;
    expect(ws.protocol).toBe('b');
    ws.send(Buffer.from('x'.repeat(100_000))); // masked (with zeros): the server takes it
    for (let i = 0; i < 200 && got.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
    expect(got[0]).toBe('first');
    expect(got[1]).toBe(`echo:${'x'.repeat(100_000)}`);
    const closed = new Promise((r) => ws.once('close', r));
    ws.close(1000);
    await closed;
    wss.close();
  });

  it('a refusal carries its status and body (by content-length, or up to the close)', async () => {
    const body = JSON.stringify({ error: { code: 'bad_request', message: 'no' } });
    const withLength = await rawPeer((s) =>
      s.end(`HTTP/1.1 400 Bad Request\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`),
    );
    await expect((await open(withLength)).opened).rejects.toEqual(new UpgradeRefused(400, body));
    const untilClose = await rawPeer((s) => s.end('HTTP/1.1 503 Service Unavailable\r\n\r\nlater'));
    const e = await (await open(untilClose)).opened.catch((x) => x);
    expect(e).toBeInstanceOf(UpgradeRefused);
    expect(e).toMatchObject({ status: 503, body: 'later' });
  });

  it('refuses what is no WebSocket answer, bounded', async () => {
    const cases: [(s: Socket) => void, RegExp][] = [
      [(s) => s.end('SSH-2.0-OpenSSH\r\n\r\n'), /not HTTP\/1\.1/],
      [(s) => s.end('HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n'), /not a WebSocket upgrade/],
      [
        (s) => s.end('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Protocol: evil\r\n\r\n'),
        /subprotocol not offered/,
      ],
      [(s) => s.write(`HTTP/1.1 101 Switching Protocols\r\nX: ${'a'.repeat(20_000)}`), /too long/],
      [(s) => s.end('HTTP/1.1 101 Swi'), /closed during the upgrade/],
    ];
    for (const [answer, error] of cases) {
      const path = await rawPeer(answer);
      await expect((await open(path)).opened).rejects.toThrow(error);
    }
    // A peer that never answers: the upgrade's own time limit.
    const silent = await rawPeer(() => {});
    await expect((await open(silent, { timeoutMs: 100 })).opened).rejects.toThrow(/took too long/);
  });

  it('a socket that cannot connect is the connection error', async () => {
    await expect((await open(join(dir, 'missing.sock'))).opened).rejects.toThrow(/ENOENT/);
  });
});

describe('parseUnixUrl', () => {
  it('splits ws+unix URLs into the socket and the path', () => {
    expect(parseUnixUrl('ws+unix:///run/a.sock:/exec')).toEqual({ socketPath: '/run/a.sock', path: '/exec' });
    expect(parseUnixUrl('ws+unix:///proc/self/fd/9/agent.sock:/tunnel')).toEqual({
      socketPath: '/proc/self/fd/9/agent.sock',
      path: '/tunnel',
    });
    expect(parseUnixUrl('ws://127.0.0.1:8080/exec')).toBeUndefined();
  });
});
