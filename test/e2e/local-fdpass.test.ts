/**
 * The local exec's descriptor passing, end to end: where onmemos' stdout (stderr) is a pipe, the command writes to
 * that pipe itself (no copy through the agent or the CLI); anything else is relayed as before. Real sessions, the
 * built CLI, real shell pipelines (node's own child pipes are socketpairs, which are never passed).
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import {
  chownSync,
  closeSync,
  constants,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  rmSync,
  statSync,
} from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadFdPass } from '../../src/native/fdpass.js';
import { cliShell, REMOTE, ROOTLESS, StateDir, TEST_USER, waitFor } from '../helpers/cli.js';

const state = new StateDir();
let id = '';
let dir = '';
const children: ChildProcess[] = [];
/** Sessions pass only on the root path (a host uid of their own), and never through a server. */
const PASSES = !REMOTE && !ROOTLESS;
const ROOT = join(import.meta.dirname, '..', '..');

beforeAll(async () => {
  id = await state.create('--network', 'isolated');
  dir = mkdtempSync(join(tmpdir(), 'onmemos-fdpass-e2e-'));
  if (TEST_USER) chownSync(dir, TEST_USER.uid, TEST_USER.gid);
});
afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await state.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

/** Runs a bash command line (with $ONMEMOS the CLI, $ID the session); stdout and stderr, the exit code. */
function sh(line: string, timeoutMs = 60_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const c = spawn('bash', ['-c', line], {
      env: { ...process.env, ...state.env, ONMEMOS: cliShell(), ID: id },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(c);
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d) => (stdout += d));
    c.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
    c.on('error', reject);
    c.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('exec through a real pipe', () => {
  it('delivers every byte (head -c N | wc -c), and the command wrote to the pipe itself where sessions pass', async () => {
    const n = 200 * 1024 * 1024 + 7;
    const r = await sh(`eval "$ONMEMOS exec $ID -- head -c ${n} /dev/zero" | wc -c`);
    expect(r).toMatchObject({ code: 0, stdout: `${n}\n`, stderr: '' });
    // The command's fd 1 and the reader's fd 0 are one pipe when passed; a socket of the agent's when relayed.
    const same = await sh(
      `eval "$ONMEMOS exec $ID -- readlink /proc/self/fd/1 /proc/self/fd/2" 2>&1 | { cat; readlink /proc/self/fd/0; }`,
    );
    expect(same.code).toBe(0);
    const [out, err, reader] = same.stdout.trim().split('\n');
    if (PASSES) {
      expect(out).toBe(reader);
      expect(err).toBe(reader); // stderr too, independently (2>&1 made it the same pipe)
    } else {
      expect(out).toMatch(/^socket:/);
      expect(err).toMatch(/^socket:/);
      expect(reader).toMatch(/^pipe:/);
    }
  });

  it('keeps exit codes, stderr apart, and onmemos own lines', async () => {
    const r = await sh(
      `eval "$ONMEMOS exec $ID -- sh -c 'echo out; echo err >&2; exit 3'" 2>/dev/null | cat; echo "status \${PIPESTATUS[0]}"`,
    );
    expect(r.stdout).toBe('out\nstatus 3\n');
    const e = await sh(`eval "$ONMEMOS exec $ID -- python9" 2>&1 | cat; echo "status \${PIPESTATUS[0]}"`);
    expect(e.stdout).toBe('onmemos: python9: command not found\nstatus 127\n');
    const k = await sh(`eval "$ONMEMOS exec $ID -- sh -c 'kill -TERM \\$\\$'" | cat; echo "status \${PIPESTATUS[0]}"`);
    expect(k.stdout).toBe('status 143\n');
  });

  it('a closed reader: the command gets SIGPIPE and exec exits 141, as before', async () => {
    const r = await sh(`eval "$ONMEMOS exec $ID -- yes" | head -1; echo "status \${PIPESTATUS[0]}"`);
    expect(r.stdout).toBe('y\nstatus 141\n');
  });

  it('output to a file is relayed, every byte', async () => {
    const file = join(dir, 'out.bin');
    const n = 30 * 1024 * 1024 + 3;
    const r = await sh(`eval "$ONMEMOS exec $ID -- head -c ${n} /dev/zero" > '${file}'`);
    expect(r.code).toBe(0);
    expect(statSync(file).size).toBe(n);
    const fd1 = join(dir, 'fd1');
    expect((await sh(`eval "$ONMEMOS exec $ID -- readlink /proc/self/fd/1" > '${fd1}'`)).code).toBe(0);
    expect(readFileSync(fd1, 'utf8')).toMatch(/^socket:/);
  });

  it('output to a terminal is relayed (never passed: a command could push input into it)', async () => {
    // onmemos' stdout is a pty (-T: the command gets none of its own); what the command's fd 1 is comes back on it.
    const py = [
      'import os, subprocess, sys',
      'm, s = os.openpty()',
      'p = subprocess.Popen(["bash", "-c", sys.argv[1]], stdout=s, stderr=s, stdin=subprocess.DEVNULL)',
      'os.close(s)',
      'out = b""',
      'while True:',
      '    try: d = os.read(m, 4096)',
      '    except OSError: break',
      '    if not d: break',
      '    out += d',
      'p.wait()',
      'sys.stdout.write(out.decode())',
    ].join('\n');
    const line = `eval "$ONMEMOS exec -T $ID -- readlink /proc/self/fd/1"`;
    const r = await sh(`python3 -c '${py.replaceAll("'", "'\\''")}' '${line.replaceAll("'", "'\\''")}'`);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toMatch(/^socket:/);
  });

  it('no session process sees the agent descriptor socket', async () => {
    const own = await sh(`eval "$ONMEMOS exec $ID -- ls /proc/self/fd" | cat`);
    expect(own.stdout.trim().split('\n').sort()).toEqual(['0', '1', '2', '3']); // 3: ls's own directory
    // Every process but the agent (and bwrap): none holds a descriptor 14, the agent's second socket.
    const scan = `for p in /proc/[0-9]*; do c=$(tr "\\0" " " < $p/cmdline); case "$c" in *agent.cjs*|*bwrap*) continue;; esac; for f in $p/fd/*; do echo "\${f##*/} $(readlink $f) $c"; done; done`;
    // Through a passed pipe and a relayed file, which start the command differently (warm.ts, fdexec).
    for (const via of ['| cat', `> '${dir}/scan'; cat '${dir}/scan'`]) {
      const r = await sh(`eval "$ONMEMOS exec $ID -- sh -c '${scan.replaceAll("'", "'\\''")}'" ${via}`);
      expect(r.code).toBe(0);
      const held = r.stdout.split('\n').filter((l) => /^14 /.test(l));
      expect(held).toEqual([]);
    }
  });

  it.runIf(PASSES)(
    'a background process keeps a passed pipe open after exec returns (the relay would close it at exit)',
    async () => {
      // exec returns at once, with the command's status, while the reader still waits for the background sleep.
      const c = spawn(
        'bash',
        ['-c', `{ eval "$ONMEMOS exec $ID -- sh -c 'sleep 300 & echo started'"; echo "exec $?" >&2; } | cat`],
        { env: { ...process.env, ...state.env, ONMEMOS: cliShell(), ID: id }, stdio: ['ignore', 'pipe', 'pipe'] },
      );
      children.push(c);
      let err = '';
      let out = '';
      c.stderr.on('data', (d) => (err += d));
      c.stdout.on('data', (d) => (out += d));
      const closed = new Promise((r) => c.once('close', r));
      expect(await waitFor(() => err.includes('exec 0'), 30_000)).toBe(true);
      expect(out).toBe('started\n');
      expect(c.exitCode).toBeNull(); // cat still has a writer: the sleep
      const k = await state.run(['exec', id, '--', 'pkill', '-f', 'sleep 300']);
      expect(k.code).toBe(0);
      await closed;
      expect(c.exitCode).toBe(0);
    },
  );
});

describe.runIf(!REMOTE && loadFdPass())('the agent, given descriptors by a client it does not trust', () => {
  const fdpass = loadFdPass()!;
  const open: Socket[] = [];
  afterAll(() => {
    for (const s of open) s.destroy();
  });
  const sockPath = () => join(state.path, 'local', 'sessions', id, 'fdpass.sock');

  /**
   * Connects to the descriptor socket, passes `fds` with `byte`, sends an exec upgrade: the response's first line
   * (empty when the agent closed the connection first) and the socket, which `keep` leaves open.
   */
  async function raw(byte: number, fds: number[], query: string, keep = false): Promise<string> {
    const s: Socket = connect(sockPath());
    s.on('error', () => {});
    await new Promise((r, j) => {
      s.once('connect', r);
      s.once('error', j);
    });
    fdpass.sendFds((s as unknown as { _handle: { fd: number } })._handle.fd, byte, fds);
    s.write(
      `GET /exec?${query} HTTP/1.1\r\nHost: agent\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
        'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n' +
        'Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n',
    );
    let got = '';
    s.on('data', (d) => (got += d));
    await Promise.race([new Promise((r) => s.once('close', r)), waitFor(() => got.includes('\r\n'), 10_000)]);
    if (keep) open.push(s);
    else s.destroy();
    return got.split('\r\n')[0] ?? '';
  }
  const leak = (file: string) =>
    `command=sh&command=-c&command=${encodeURIComponent(`echo leaked; echo x > /tmp/${file}`)}&stdout=fd`;

  it('refuses a regular file, a socket and a terminal (400); nothing runs and nothing is written', async () => {
    const file = join(dir, 'target');
    const f = openSync(file, 'w');
    const server = createServer();
    await new Promise<void>((r) => server.listen(join(dir, 'x.sock'), r));
    const sock = connect(join(dir, 'x.sock'));
    await new Promise((r) => sock.once('connect', r));
    const tty = openSync('/dev/ptmx', 'r+');
    try {
      expect(await raw(1, [f], leak('ran-file'))).toBe('HTTP/1.1 400 Bad Request');
      const sfd = (sock as unknown as { _handle: { fd: number } })._handle.fd;
      expect(await raw(1, [sfd], leak('ran-socket'))).toBe('HTTP/1.1 400 Bad Request');
      expect(await raw(1, [tty], leak('ran-tty'))).toBe('HTTP/1.1 400 Bad Request');
    } finally {
      closeSync(f);
      closeSync(tty);
      sock.destroy();
      server.close();
    }
    expect(readFileSync(file, 'utf8')).toBe('');
    const ran = await state.run(['exec', id, '--', 'sh', '-c', 'ls /tmp/ran-* 2>/dev/null; true']);
    expect(ran.stdout).toBe('');
  });

  it('refuses a request that says it passes stdout when what came was stderr; a preamble without descriptors is dropped', async () => {
    const p = fifo();
    try {
      expect(await raw(2, [p.w], leak('ran-mismatch'))).toBe('HTTP/1.1 400 Bad Request');
      // byte 1 with no descriptor: the connection is closed before any HTTP.
      expect(await raw(1, [], leak('ran-none'))).toBe('');
    } finally {
      p.close();
    }
    const ran = await state.run(['exec', id, '--', 'sh', '-c', 'ls /tmp/ran-* 2>/dev/null; true']);
    expect(ran.stdout).toBe('');
  });

  it('a pipe passed the right way is the command output', async () => {
    const p = fifo();
    try {
      const first = await raw(1, [p.w], 'command=echo&command=through&stdout=fd', true);
      expect(first).toBe('HTTP/1.1 101 Switching Protocols');
      p.closeWrite();
      expect(await p.read()).toBe('through\n');
    } finally {
      p.close();
    }
  });
});

let fifos = 0;
/** A named FIFO: a writable end to pass, and its read end (non-blocking) to read what the command wrote. */
function fifo(): { w: number; closeWrite(): void; read(): Promise<string>; close(): void } {
  const path = join(dir, `fifo-${++fifos}`);
  execFileSync('mkfifo', [path]);
  const r = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  const w = openSync(path, 'w');
  let wOpen = true;
  return {
    w,
    closeWrite() {
      if (wOpen) closeSync(w);
      wOpen = false;
    },
    async read() {
      let s = '';
      const buf = Buffer.alloc(4096);
      await waitFor(
        () => {
          try {
            const k = readSync(r, buf);
            if (k === 0) return true; // every writer has closed it
            s += buf.subarray(0, k).toString();
          } catch {} // EAGAIN: nothing yet
          return false;
        },
        15_000,
        50,
      );
      return s;
    },
    close() {
      this.closeWrite();
      closeSync(r);
    },
  };
}

describe.runIf(!REMOTE)('the local agent without descriptor passing', () => {
  /**
   * Starts dist/agent.cjs (copied to `at`) as the launcher would: a listening socket at fd 3 and, with `second`,
   * another at fd 14 and `fdpass: true` in its config. Answers what /health on fd 3 and a connection to fd 14 got.
   */
  const probe = (at: string, second: boolean) => {
    const py = [
      'import json, os, socket, subprocess, sys',
      'at, second, node = sys.argv[1], sys.argv[2] == "1", sys.argv[3]',
      // Descriptors 3 to 22 are taken first, so that the sockets land above and dup2 puts them at 3 and 14.
      'held = [os.open("/dev/null", os.O_RDONLY) for _ in range(20)]',
      'def listener(name):',
      '    s = socket.socket(socket.AF_UNIX); s.bind(os.path.join(at, name)); s.listen(5); return s',
      'a = listener("a.sock"); os.dup2(a.fileno(), 3); fds = [3]',
      'if second:',
      '    b = listener("b.sock"); os.dup2(b.fileno(), 14); fds.append(14)',
      'cfg = os.path.join(at, "config.json")',
      'json.dump({"env": {"PATH": "/usr/bin:/bin"}, "workdir": "/tmp", "fdpass": second}, open(cfg, "w"))',
      'p = subprocess.Popen([node, os.path.join(at, "agent.cjs"), cfg], pass_fds=fds,',
      '                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)',
      'try:',
      '    for fd in [fd for fd in held if fd not in (3, 14)] + fds: os.close(fd)',
      '    a.close()',
      '    if second: b.close()',
      '    c = socket.socket(socket.AF_UNIX); c.settimeout(10); c.connect(os.path.join(at, "a.sock"))',
      '    c.sendall(b"GET /health HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n")',
      '    health = c.recv(100).split(b"\\r\\n")[0].decode()',
      '    second_got = "none"',
      '    if second:',
      '        d = socket.socket(socket.AF_UNIX); d.settimeout(5)',
      '        try:',
      '            d.connect(os.path.join(at, "b.sock")); d.sendall(b"x"); second_got = "open:" + repr(d.recv(10))',
      '        except OSError as e:',
      '            second_got = type(e).__name__',
      'finally:',
      '    p.kill(); p.wait()',
      'print(json.dumps({"health": health, "second": second_got}))',
    ].join('\n');
    return JSON.parse(
      execFileSync('python3', ['-c', py, at, second ? '1' : '0', process.execPath], {
        encoding: 'utf8',
        timeout: 30_000,
      }),
    );
  };

  it('a config without fdpass (a host without the module): the agent starts and answers', () => {
    const at = mkdtempSync(join(dir, 'agent-'));
    execFileSync('cp', [join(ROOT, 'dist', 'agent.cjs'), at]);
    expect(probe(at, false)).toMatchObject({ health: 'HTTP/1.1 200 OK', second: 'none' });
  });

  it('fdpass in the config but no module beside the agent: it answers, and its second socket is closed', () => {
    const at = mkdtempSync(join(dir, 'agent-'));
    execFileSync('cp', [join(ROOT, 'dist', 'agent.cjs'), at]);
    const got = probe(at, true);
    expect(got.health).toBe('HTTP/1.1 200 OK');
    expect(got.second).toMatch(/ConnectionRefusedError|ConnectionResetError|^open:b''$/);
  });
});
