/**
 * src/exec/tunnel.ts, the WebSocket byte-stream client of every tunnel: what a server sends at once with its upgrade
 * answer (sshd speaks first: its banner) is not lost, and a refused upgrade is the caller's error with the body.
 */
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { openTunnelSocket } from '../../src/exec/tunnel.js';

const BANNER = 'SSH-2.0-OpenSSH_fake\r\n';
let server: Server;
let wss: WebSocketServer;
let base = '';

beforeAll(async () => {
  server = createServer((_req, res) => res.writeHead(404).end());
  wss = new WebSocketServer({ noServer: true });
  server.on('upgrade', (req, socket, head) => {
    if (req.url === '/refused') {
      socket.end('HTTP/1.1 503 Service Unavailable\r\nContent-Length: 14\r\nConnection: close\r\n\r\nnothing there\n');
      return;
    }
    // The banner goes out in the same tick as the 101: the client reads both at once.
    wss.handleUpgrade(req, socket, head, (ws) => ws.send(Buffer.from(BANNER)));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  base = `ws://127.0.0.1:${(server.address() as { port: number }).port}`;
});
afterAll(async () => {
  for (const c of wss.clients) c.terminate();
  wss.close();
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

const open = (path: string) =>
  openTunnelSocket(`${base}${path}`, {
    refused: (status, body) => new Error(`refused ${status}: ${body}`),
    unreachable: (e) => new Error(`unreachable: ${e.message}`),
  });

/** The first chunk the stream gives, or '' when none comes within 2 s. */
function first(s: Duplex): Promise<string> {
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(''), 2_000);
    s.once('data', (d: Buffer) => {
      clearTimeout(t);
      resolve(d.toString());
    });
  });
}

describe('openTunnelSocket', () => {
  it('keeps what the server sends with its upgrade answer (a server that speaks first)', async () => {
    for (let i = 0; i < 20; i++) {
      const s = await open('/tcp');
      expect(await first(s)).toBe(BANNER);
      s.destroy();
    }
  });

  it('a refused upgrade is the caller error, with the status and the body', async () => {
    await expect(open('/refused')).rejects.toThrow('refused 503: nothing there\n');
  });
});
