/**
 * Each workstation of the Cloud Workstations fake in a network of its own, as each Cloud Workstation is a VM of its
 * own: a server listening in workstation A answers through A's TCP tunnel, and neither from inside workstation B
 * (its loopback, the slirp4netns gateway, the host's own addresses) nor on the host's loopback; B's tunnel to that
 * port is the 503 of a port nothing listens on, and each tunnel's port 22 is still its own workstation's sshd.
 */
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { networkInterfaces } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import type { RemoteProcess } from '../../src/exec/process.js';
import { startWorkstationsFake, type WorkstationsFake } from '../fakes/workstations/server.js';
import {
  accessToken,
  createWorkstation,
  deleteWorkstation,
  sandboxes,
  startWorkstation,
} from '../helpers/workstations.js';

let fake: WorkstationsFake;
beforeAll(async () => {
  fake = await startWorkstationsFake({ startTimeMs: 100 });
  for (const id of ['wa', 'wb']) {
    expect((await createWorkstation(fake, id)).error).toBeUndefined();
    expect((await startWorkstation(fake, id)).response?.state).toBe('STATE_RUNNING');
  }
}, 120_000);
afterAll(async () => {
  await fake?.close();
});

/** A TCP server on 0.0.0.0:PORT: to each connection, `TOKEN LINE` for the first line it sends, then the end. */
const SERVER_PY = `
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', int(sys.argv[1])))
s.listen(16)
print('listening', flush=True)
while True:
    c, _ = s.accept()
    c.settimeout(5)
    data = b''
    try:
        while not data.endswith(b'\\n'):
            d = c.recv(4096)
            if not d:
                break
            data += d
        c.sendall(sys.argv[2].encode() + b' ' + data)
    except OSError:
        pass
    c.close()
`;

/** From inside a workstation: sends a line to each ADDR:PORT; prints `ADDR reached ANSWER` or `ADDR no (why)`. */
const REACH_PY = `
import socket, sys
port = int(sys.argv[1])
for a in sys.argv[2:]:
    try:
        c = socket.create_connection((a, port), timeout=3)
        c.settimeout(3)
        c.sendall(b'from-b\\n')
        print(a, 'reached', c.recv(4096).decode(errors='replace').strip())
        c.close()
    except Exception as e:
        print(a, 'no', '(%s)' % type(e).__name__)
`;

/** Runs argv in workstation `id`'s sandbox to its end (bounded): exit code and output. */
async function inside(id: string, argv: string[]): Promise<{ code: number | null; out: string; err: string }> {
  const p = await fake.runtime.provider.exec(fake.workstations.get(id)!.session!, { argv, cwd: '/' });
  let out = '';
  let err = '';
  p.stdout.on('data', (d) => (out += d));
  p.stderr.on('data', (d) => (err += d));
  const timer = setTimeout(() => p.kill('SIGKILL'), 30_000);
  const { code } = await p.exit;
  clearTimeout(timer);
  return { code, out, err };
}

/**
 * Through workstation `id`'s tunnel to `port`: sends `send` once open and collects what comes back until the
 * tunnel closes (or `until` matches it); the upgrade's status (101 once open) and body otherwise.
 */
async function throughTunnel(
  id: string,
  port: number,
  send: string,
  until?: RegExp,
): Promise<{ status: number; body: string }> {
  const host = fake.workstations.get(id)!.host;
  const { accessToken: token } = await accessToken(fake, id);
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`wss://${host}/_workstation/tcp/${port}`, {
      ca: readFileSync(fake.caFile),
      headers: { authorization: `Bearer ${token}` },
    });
    let body = '';
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`the tunnel to ${id}:${port} did not close in time (got ${JSON.stringify(body)})`));
    }, 20_000);
    const done = (r: { status: number; body: string }) => {
      clearTimeout(timer);
      resolve(r);
    };
    ws.on('unexpected-response', (_req, res) => {
      res.on('data', (d) => (body += d));
      res.on('end', () => done({ status: res.statusCode ?? 0, body }));
    });
    ws.on('open', () => {
      if (send) ws.send(Buffer.from(send));
    });
    ws.on('message', (d: Buffer) => {
      body += d.toString();
      if (until?.test(body)) ws.close();
    });
    ws.on('close', () => done({ status: 101, body }));
    ws.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/** What a connection from the host to 127.0.0.1:port answers to a line ('' when it is refused or says nothing). */
function fromHost(port: number): Promise<string> {
  return new Promise((resolve) => {
    let got = '';
    const s = connect(port, '127.0.0.1');
    s.setTimeout(3_000, () => s.destroy());
    s.on('connect', () => s.write('from-host\n'));
    s.on('data', (d) => (got += d));
    s.on('error', () => {});
    s.on('close', () => resolve(got));
  });
}

describe('each workstation in a network of its own', { shuffle: false }, () => {
  it("a server in A answers through A's tunnel only: not from inside B, nor on the host's loopback", async () => {
    const token = `tok${Math.random().toString(36).slice(2, 10)}`;
    const port = 20_000 + Math.floor(Math.random() * 30_000);
    const a = fake.workstations.get('wa')!;
    const server: RemoteProcess = await fake.runtime.provider.exec(a.session!, {
      argv: ['python3', '-c', SERVER_PY, String(port), token],
      cwd: '/',
    });
    let serverOut = '';
    server.stdout.on('data', (d) => (serverOut += d));
    server.stderr.on('data', (d) => (serverOut += d));
    try {
      for (let i = 0; i < 100 && !serverOut.includes('listening'); i++) await new Promise((r) => setTimeout(r, 100));
      expect(serverOut).toContain('listening');

      // Through A's tunnel: the server, both ways.
      expect(await throughTunnel('wa', port, 'via-tunnel\n')).toEqual({ status: 101, body: `${token} via-tunnel\n` });
      expect(fake.tunnelRequests.at(-1)).toMatchObject({ port, upgrade: true, auth: 'ok', status: 101 });
      // Inside A itself, on its loopback (the control for what B does below).
      const inA = await inside('wa', ['python3', '-c', REACH_PY, String(port), '127.0.0.1']);
      expect(inA.out).toBe(`127.0.0.1 reached ${token} from-b\n`);

      // From inside B: its own loopback, the slirp4netns gateway (10.0.2.2: the host, out of reach), the host's
      // own addresses (reached through slirp4netns' outbound NAT if the server were in the host's network).
      const hostAddrs = Object.values(networkInterfaces())
        .flat()
        .filter((i) => i && i.family === 'IPv4' && !i.internal)
        .map((i) => i!.address);
      const targets = ['127.0.0.1', '10.0.2.2', ...hostAddrs];
      const inB = await inside('wb', ['python3', '-c', REACH_PY, String(port), ...targets]);
      expect(inB.code, inB.err).toBe(0);
      const lines = inB.out.trim().split('\n');
      expect(lines.map((l) => l.split(' ')[0])).toEqual(targets);
      for (const l of lines) expect(l).toMatch(/^\S+ no \(/);

      // B's tunnel to the port: nothing listens there in B.
      expect(await throughTunnel('wb', port, '')).toEqual({
        status: 503,
        body: `The workstation does not have a server running on port ${port}\n`,
      });
      // The host's loopback: not A's server (refused, or at most some other program of this machine).
      expect(await fromHost(port)).not.toContain(token);

      // Port 22 of each tunnel is still that workstation's own sshd.
      for (const id of ['wa', 'wb']) {
        const banner = await throughTunnel(id, 22, '', /\n/);
        expect(banner.status).toBe(101);
        expect(banner.body).toMatch(/^SSH-2\.0-OpenSSH/);
      }
    } finally {
      server.kill('SIGKILL');
      await Promise.race([server.exit, new Promise((r) => setTimeout(r, 5_000))]);
    }
  });

  it('sshd listens on 127.0.0.1:2222 inside the workstation (an unprivileged user cannot bind 22 there)', async () => {
    const r = await inside('wa', [
      'sh',
      '-c',
      "cat /proc/sys/net/ipv4/ip_unprivileged_port_start; python3 -c \"import socket; socket.create_connection(('127.0.0.1', 2222), timeout=3).close(); print('sshd up')\"",
    ]);
    expect(r.out).toBe('1024\nsshd up\n');
    expect(fake.workstations.get('wa')!.sshPort).toBe(2222);
  });

  it('removes both sandboxes on delete', async () => {
    for (const id of ['wa', 'wb']) expect((await deleteWorkstation(fake, id)).error).toBeUndefined();
    expect(await sandboxes(fake)).toEqual([]);
  });
});
