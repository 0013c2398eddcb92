/** The fdpass native module (native/fdpass.c): descriptors across a unix socket, and the FIFO check. */
import { execFileSync, spawn } from 'node:child_process';
import {
  closeSync,
  fstatSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FdPass, loadFdPass, type Received } from '../../src/native/fdpass.js';

const fdpass = loadFdPass();
const fdOf = (s: Socket) => (s as unknown as { _handle: { fd: number } })._handle.fd;

let dir = '';
let server: Server;
let accepted: Socket[] = [];
const sockets: Socket[] = [];
const opened: number[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'onmemos-fdpass-'));
  server = createServer({ pauseOnConnect: true }, (s) => accepted.push(s));
  await new Promise<void>((r) => server.listen(join(dir, 's.sock'), r));
});
afterAll(async () => {
  for (const s of [...sockets, ...accepted]) s.destroy();
  for (const fd of opened) {
    try {
      closeSync(fd);
    } catch {}
  }
  await new Promise((r) => server.close(r));
  rmSync(dir, { recursive: true, force: true });
});

/** A connected pair: the client and the server's end (paused, as the agent has it). */
async function pair(): Promise<{ client: Socket; peer: Socket }> {
  accepted = [];
  const client = connect(join(dir, 's.sock'));
  sockets.push(client);
  await new Promise((r) => client.once('connect', r));
  for (let i = 0; i < 100 && accepted.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
  const peer = accepted[0]!;
  sockets.push(peer);
  return { client, peer };
}

const recv = (f: FdPass, s: Socket, ms: number) =>
  new Promise<{ err: NodeJS.ErrnoException | null; r?: Received }>((resolve) =>
    f.recvFds(fdOf(s), ms, (err, r) => {
      if (r) opened.push(...r.fds);
      resolve({ err, r });
    }),
  );

// The module is optional for a user without a compiler (exec then relays), never for this suite: the tests below
// and the agent's in local-fdpass.test.ts would otherwise be skipped, not run.
it('is built (npm install and npm run build make it; the tests need it)', () => {
  expect(fdpass, 'dist/fdpass.node (or build/Release/) does not load: run npm run build').toBeDefined();
});

describe.runIf(fdpass)('fdpass', () => {
  const f = fdpass!;

  it('passes a pipe with one byte; what arrives is the same pipe, and close-on-exec', async () => {
    const { client, peer } = await pair();
    const file = join(dir, 'out');
    const w = openSync(file, 'w');
    opened.push(w);
    f.sendFds(fdOf(client), 3, [w, w]);
    const { err, r } = await recv(f, peer, 2000);
    expect(err).toBeNull();
    expect(r?.byte).toBe(3);
    expect(r?.fds).toHaveLength(2);
    writeSync(r!.fds[0]!, 'through the passed descriptor\n');
    expect(readFileSync(file, 'utf8')).toBe('through the passed descriptor\n');
    const flags = readFileSync(`/proc/self/fdinfo/${r!.fds[0]}`, 'utf8').match(/flags:\s*([0-7]+)/)?.[1];
    expect(Number.parseInt(flags ?? '0', 8) & 0o2000000).not.toBe(0);
    // Only the byte was read: what the client sends after it is still there for the next reader.
    client.write('GET / HTTP/1.1\r\n');
    peer.resume();
    const next = await new Promise<Buffer>((res) => peer.once('data', res));
    expect(next.toString()).toBe('GET / HTTP/1.1\r\n');
  });

  it('a byte without descriptors comes with none; a peer that sends nothing times out; one that closes resets', async () => {
    let { client, peer } = await pair();
    f.sendFds(fdOf(client), 0, []);
    expect((await recv(f, peer, 2000)).r).toEqual({ byte: 0, fds: [] });
    ({ client, peer } = await pair());
    expect((await recv(f, peer, 50)).err?.code).toBe('ETIMEDOUT');
    ({ client, peer } = await pair());
    client.end();
    expect((await recv(f, peer, 2000)).err?.code).toBe('ECONNRESET');
  });

  it('at most 8 go in one message; a message with more is refused (EPROTO) and none of them is kept', async () => {
    expect(() =>
      f.sendFds(
        0,
        1,
        Array.from({ length: 9 }, () => 1),
      ),
    ).toThrow(/too many/);
    // A sender that is not this module (python's socket.send_fds) sends 12: the control data is truncated.
    accepted = [];
    const sender = spawn('python3', [
      '-c',
      'import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); socket.send_fds(s, [b"x"], [1] * 12); s.recv(1)',
      join(dir, 's.sock'),
    ]);
    for (let i = 0; i < 200 && accepted.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    const peer = accepted[0]!;
    sockets.push(peer);
    const before = new Set(readdirFds());
    const got = await recv(f, peer, 5000);
    peer.destroy();
    await new Promise((r) => sender.once('close', r));
    expect(got.err?.code).toBe('EPROTO');
    expect(readdirFds().filter((n) => !before.has(n))).toEqual([]);
  });

  it('outputFifo: a pipe open for writing (made blocking) is one; its read end, a file, a socket, a tty are not', async () => {
    const { pipe, file, read } = makeThings();
    const { client } = await pair(); // a socket of its own: under --sequence.shuffle no other test need run first
    expect(f.outputFifo(pipe.w)).toBe(true);
    expect(f.outputFifo(pipe.r)).toBe(false);
    expect(f.outputFifo(file)).toBe(false);
    expect(f.outputFifo(read)).toBe(false);
    expect(f.outputFifo(-1)).toBe(false);
    expect(f.outputFifo(fdOf(client))).toBe(false);
    let tty = -1;
    try {
      tty = openSync('/dev/ptmx', 'r+');
      opened.push(tty);
    } catch {}
    if (tty >= 0) expect(f.outputFifo(tty)).toBe(false);
    expect(fstatSync(pipe.w).isFIFO()).toBe(true);
  });

  it('refuses bad arguments with a TypeError', () => {
    expect(() => f.sendFds('x' as unknown as number, 1, [])).toThrow(TypeError);
    expect(() => f.sendFds(0, 256, [])).toThrow(TypeError);
    expect(() => f.recvFds(0, 10, undefined as unknown as () => void)).toThrow(TypeError);
  });
});

describe('spawnDetached and pipe', () => {
  const f = fdpass as FdPass;
  const state = (pid: number) => {
    try {
      return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[0];
    } catch {
      return 'gone';
    }
  };
  const until = async (test: () => boolean) => {
    for (let i = 0; i < 200 && !test(); i++) await new Promise((r) => setTimeout(r, 10));
    return test();
  };

  it('runs the program in a session of its own with exactly the descriptors given, and reaps it', async () => {
    const [r, w] = f.pipe!();
    opened.push(r, w);
    // fd 3 gets the pipe's write end; 4 is given none: closed, as is every descriptor of this process.
    const script = [
      'import os',
      'def is_open(fd):',
      '  try:',
      '    os.fstat(fd)',
      '    return True',
      '  except OSError:',
      '    return False',
      'fds = [str(fd) for fd in range(256) if is_open(fd)]',
      'os.write(3, (f"{os.getpid()} {os.getsid(0)}\\n" + "\\n".join(fds) + "\\n").encode())',
    ].join('\n');
    const pid = f.spawnDetached!(
      '/usr/bin/python3',
      ['python3', '-c', script],
      ['PATH=/usr/bin:/bin'],
      [-1, -1, -1, w, -1],
    );
    closeSync(w);
    opened.splice(opened.indexOf(w), 1);
    const out = Buffer.alloc(256);
    let text = '';
    for (let i = 0; i < 200; i++) {
      try {
        const n = readSync(r, out);
        if (n === 0) break; // EOF: the shell and ls have exited
        text += out.toString('utf8', 0, n);
      } catch {
        await new Promise((res) => setTimeout(res, 10));
      }
    }
    const [first, ...fds] = text.trim().split('\n');
    const [self, sid] = first!.trim().split(/\s+/);
    expect(Number(self)).toBe(pid);
    expect(Number(sid)).toBe(pid); // setsid: its own session
    expect(fds.map(Number).sort()).toEqual([0, 1, 2, 3]);
    // Ended, and not left as this process's zombie.
    expect(await until(() => state(pid) === 'gone'), `state ${state(pid)}`).toBe(true);
  });

  it('throws for a program that cannot start, and refuses bad arguments', () => {
    expect(() => f.spawnDetached!('/nonexistent/x', ['x'], [], [])).toThrow(/posix_spawn/);
    expect(() => f.spawnDetached!('/bin/true', [], [], [])).toThrow(TypeError);
    expect(() => f.spawnDetached!('/bin/true', ['true', 'a\0b'], [], [])).toThrow(TypeError);
    expect(() => f.spawnDetached!('/bin/true', ['true'], [], Array(17).fill(-1))).toThrow(TypeError);
  });
});

it('loads where it was built (npm install runs node-gyp; npm run build copies it into dist/)', () => {
  expect(fdpass, 'build/Release/fdpass.node: run npm install (or node-gyp rebuild)').toBeDefined();
});

function readdirFds(): number[] {
  return readdirSync('/proc/self/fd').map(Number);
}

function makeThings() {
  const fifo = join(dir, 'fifo');
  execFileSync('mkfifo', [fifo]);
  const r = openSync(fifo, 'r+'); // O_RDWR on a FIFO opens without waiting for a peer
  const rOnly = openSync(fifo, 'r');
  const w = openSync(fifo, 'w');
  const file = openSync(join(dir, 'plain'), 'w');
  const read = openSync(join(dir, 'plain'), 'r');
  opened.push(r, rOnly, w, file, read);
  return { pipe: { r: rOnly, w }, file, read };
}
