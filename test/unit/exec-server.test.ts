/** serveExec and openExec against each other over a real WebSocket on 127.0.0.1 port 0. */
import { createServer, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { errorFromResponse, UserError } from '../../src/errors.js';
import { openExec } from '../../src/exec/client.js';
import { execSpecFromQuery, serveExec } from '../../src/exec/server.js';
import { SERVER_SUBPROTOCOLS } from '../../src/exec/v5.js';
import type { RemoteProcess } from '../../src/providers/provider.js';

let server: Server;
let url = '';
let start: () => Promise<RemoteProcess> = () => Promise.reject(new Error('not set'));

beforeAll(async () => {
  const wss = new WebSocketServer({
    noServer: true,
    handleProtocols: (offered) => SERVER_SUBPROTOCOLS.find((p) => offered.has(p)) ?? false,
  });
  server = createServer();
  server.on('upgrade', (req, socket, head) => {
    const spec = execSpecFromQuery(new URL(req.url ?? '/', 'http://x').searchParams);
    wss.handleUpgrade(req, socket, head, (ws) => void serveExec(ws, spec, start));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `ws://127.0.0.1:${(server.address() as { port: number }).port}/exec`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

const client = (stdin = false) =>
  openExec({ argv: ['x'], stdin }, { url, peer: 'the test server', refused: errorFromResponse });

describe('serveExec', () => {
  it('a process that cannot start ends the stream at once with its reason, and the client exits 125', async () => {
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

describe('execSpecFromQuery', () => {
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
});
