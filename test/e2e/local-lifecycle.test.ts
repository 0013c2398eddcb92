/** End to end: network modes, TTL expiry, templates and concurrent creates on real sandboxes. */
import { spawn } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { createServer, connect as netConnect, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, run, StateDir, TEST_USER, waitFor } from '../helpers/cli.js';

const state = new StateDir();
afterAll(() => state.cleanup());

/** A TCP server on the host's loopback that a session must not reach (outbound and isolated modes). */
let hostServer: Server;
let hostPort = 0;
beforeAll(async () => {
  hostServer = createServer((s) => s.end('host\n'));
  await new Promise<void>((r) => hostServer.listen(0, '127.0.0.1', r));
  hostPort = (hostServer.address() as { port: number }).port;
});
afterAll(() => new Promise<void>((r) => hostServer.close(() => r())));

const connect = (host: string, port: number) =>
  `import socket\ntry:\n  socket.create_connection(("${host}", ${port}), timeout=3).recv(10); print("reached")\nexcept Exception as e:\n  print("unreachable")`;

/** The network interfaces a session sees, sorted. */
const interfaces = async (id: string) =>
  (await state.run(['exec', id, '--', 'sh', '-c', 'tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d " " | sort'])).stdout
    .split('\n')
    .filter(Boolean);
/** 'reached' or 'unreachable', as a session sees host:port. */
const probe = async (id: string, host: string, port: number) =>
  (await state.run(['exec', id, '--', 'python3', '-c', connect(host, port)])).stdout.trim();

describe('network modes', () => {
  it('outbound (default): own namespace with a tap0, host loopback unreachable', async () => {
    const id = await state.create();
    expect(await interfaces(id)).toEqual(['lo', 'tap0']);
    expect(await probe(id, '127.0.0.1', hostPort)).toBe('unreachable');
    expect(await probe(id, '10.0.2.2', hostPort)).toBe('unreachable');
    const got = JSON.parse((await state.run(['get', id, '--json'])).stdout);
    expect(got.details.network).toBe('outbound');
  });

  it('isolated: loopback only', async () => {
    const id = await state.create('--network', 'isolated');
    expect(await interfaces(id)).toEqual(['lo']);
    expect(await probe(id, '127.0.0.1', hostPort)).toBe('unreachable');
  });

  it('host: the host network, so the host loopback answers', async () => {
    const id = await state.create('--network', 'host');
    expect(await probe(id, '127.0.0.1', hostPort)).toBe('reached');
  });

  it("a server in one session answers on that session's localhost and nowhere else", async () => {
    const a = await state.create();
    const b = await state.create('--network', 'isolated');
    const serve =
      "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', 9099)); s.listen()\nwhile True:\n  c,_=s.accept(); c.sendall(b'x'); c.close()";
    await state.run(['exec', a, '--', 'sh', '-c', 'nohup python3 -c "$1" >/dev/null 2>&1 &', 'sh', serve]);
    // The port is inside session a's own network namespace, so a fixed number is safe.
    expect(await waitFor(async () => (await probe(a, '127.0.0.1', 9099)) === 'reached')).toBe(true);
    expect(await probe(b, '127.0.0.1', 9099)).toBe('unreachable');
    // Not on the host either.
    const fromHost = await new Promise<string>((resolve) => {
      const s = netConnect(9099, '127.0.0.1');
      s.on('connect', () => resolve('reached'));
      s.on('error', () => resolve('unreachable'));
    });
    expect(fromHost).toBe('unreachable');
  });
});

describe('TTL', () => {
  const hostProcs = (marker: string) =>
    readdirSync('/proc').filter((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(marker);
      } catch {
        return false;
      }
    });

  it('an expired session is removed by the next onmemos invocation', async () => {
    const id = await state.create('--ttl', '0.03'); // 1.8 s
    const marker = `ttl-next-${Date.now()}`;
    await state.run(['exec', id, '--', 'bash', '-c', `(exec -a ${marker} sleep 1000 >/dev/null 2>&1 &)`]);
    expect(hostProcs(marker)).toHaveLength(1);
    await new Promise((r) => setTimeout(r, 2500));
    const ls = await state.run(['ls', '--json']);
    expect(JSON.parse(ls.stdout).map((s: { id: string }) => s.id)).not.toContain(id);
    expect(existsSync(join(state.path, 'local', 'sessions', id))).toBe(false);
    expect(await waitFor(() => hostProcs(marker).length === 0)).toBe(true);
    expect((await state.run(['get', id])).code).toBe(1);
  });

  it('an expired session is removed by its timer with no onmemos invocation', async () => {
    const id = await state.create('--ttl', '0.03');
    const dir = join(state.path, 'local', 'sessions', id);
    expect(existsSync(dir)).toBe(true);
    expect(await waitFor(() => !existsSync(dir), 20_000)).toBe(true);
  });

  it('extend moves the expiry: the session outlives its first TTL, and its timer follows the new one', async () => {
    const id = await state.create('--ttl', '0.05'); // 3 s
    const ext = await state.run(['extend', id, '--ttl', '0.15', '--json']); // 9 s from now
    expect(ext.code).toBe(0);
    const expires = Date.parse(JSON.parse(ext.stdout).expires_at);
    await new Promise((r) => setTimeout(r, 4500));
    const got = await state.run(['get', id, '--json']);
    expect(got.code).toBe(0);
    expect(JSON.parse(got.stdout)).toMatchObject({ status: 'running', expires_at: new Date(expires).toISOString() });
    expect((await state.run(['exec', id, '--', 'true'])).code).toBe(0);
    // Then the launcher's timer removes it at the new expiry, with no onmemos invocation.
    const dir = join(state.path, 'local', 'sessions', id);
    expect(await waitFor(() => !existsSync(dir), 20_000)).toBe(true);
    expect(Date.now()).toBeGreaterThanOrEqual(expires - 1000);
  });

  it('removal is idempotent: rm after expiry is "not found", --force is fine', async () => {
    const id = await state.create('--ttl', '0.02');
    await new Promise((r) => setTimeout(r, 1500));
    expect((await state.run(['rm', id])).code).toBe(1);
    expect((await state.run(['rm', '--force', id])).code).toBe(0);
  });
});

describe('templates', () => {
  it('python and nodejs run the host toolchains', async () => {
    const py = await state.create('--template', 'python');
    expect((await state.run(['exec', py, '--', 'python3', '-c', 'print(6*7)'])).stdout).toBe('42\n');
    const node = await state.create('--template', 'nodejs');
    expect((await state.run(['exec', node, '--', 'node', '-e', 'console.log(6*7)'])).stdout).toBe('42\n');
  });

  it('have their usual command names: python, nodejs (and npm where the host has it)', async () => {
    const py = await state.create('--template', 'python');
    expect(await state.run(['exec', py, '--', 'python', '-c', 'print(6*7)'])).toMatchObject({
      code: 0,
      stdout: '42\n',
    });
    const v = await state.run(['exec', py, '--', 'python', '-c', 'import sys; print(sys.version_info[0])']);
    expect(v.stdout).toBe('3\n');
    const node = await state.create('--template', 'nodejs');
    for (const name of ['node', 'nodejs']) {
      const r = await state.run(['exec', node, '--', name, '-e', 'console.log(6*7)']);
      expect(r, name).toMatchObject({ code: 0, stdout: '42\n' });
    }
    if (existsSync('/usr/bin/npm')) {
      expect((await state.run(['exec', node, '--', 'npm', '--version'])).stdout).toMatch(/^\d+\.\d+/);
    }
  });

  it('go works where Go is installed, and otherwise fails clearly with nothing made', async () => {
    const sessions = () =>
      existsSync(join(state.path, 'local', 'sessions')) ? readdirSync(join(state.path, 'local', 'sessions')).length : 0;
    const before = sessions();
    const r = await state.run(['create', '--template', 'go']);
    if (r.code === 0) {
      const id = r.stdout.trim();
      expect((await state.run(['exec', id, '--', 'go', 'version'])).stdout).toMatch(/^go version/);
      return;
    }
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^onmemos: template go needs Go \(`go`\), which is not installed on this machine/);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(sessions()).toBe(before);
  });
});

describe('a session whose processes are gone', () => {
  it('is listed as exited, refuses exec with 125 and a hint, and can be removed', async () => {
    const id = await state.create('--network', 'isolated');
    const got = JSON.parse((await state.run(['get', id, '--json'])).stdout);
    expect(JSON.stringify(got)).not.toMatch(/"pid"/); // no host pid is published
    // The session's agent (the command's parent) dies; the sandbox ends with it.
    await state.run(['exec', id, '--', 'sh', '-c', 'kill -KILL $PPID']);
    const status = async () => JSON.parse((await state.run(['get', id, '--json'])).stdout).status;
    expect(await waitFor(async () => (await status()) === 'exited')).toBe(true);
    const r = await state.run(['exec', id, '--', 'true']);
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(new RegExp(`^onmemos: session ${id} is not running \\(exited\\)`));
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect((await state.run(['rm', id])).code).toBe(0);
  });
});

describe('a state directory with a long path', () => {
  it("works although the agent's socket path is longer than a unix socket address may be (108 bytes)", async () => {
    // <state>/local/sessions/<id>/agent.sock: here well over 108 bytes.
    const deep = join(state.path, 'd'.repeat(90));
    mkdirSync(deep);
    if (TEST_USER) chownSync(deep, TEST_USER.uid, TEST_USER.gid);
    const env = { ONMEMOS_STATE_DIR: deep, ONMEMOS_SERVER: '' }; // the local provider itself, in every suite mode
    const c = await run(['create', '--ttl', '10', '--network', 'isolated'], { env });
    expect(c.code, c.stderr).toBe(0);
    const id = c.stdout.trim();
    try {
      expect(Buffer.byteLength(join(deep, 'local', 'sessions', id, 'agent.sock'))).toBeGreaterThan(108);
      const r = await run(['exec', id, '--', 'sh', '-c', 'echo "$WORKSPACE_ID"; echo err >&2; exit 3'], { env });
      expect(r).toMatchObject({ code: 3, stdout: `${id}\n`, stderr: 'err\n' });
      // The tunnel takes the same way to the agent.
      const serve =
        "import socket\ns=socket.socket(); s.bind(('127.0.0.1', 9098)); s.listen()\nwhile True:\n  c,_=s.accept(); c.recv(10); c.sendall(b'in'); c.close()";
      await run(['exec', id, '--', 'sh', '-c', 'nohup python3 -c "$1" >/dev/null 2>&1 &', 'sh', serve], { env });
      let t = { code: -1, stdout: '' } as { code: number | null; stdout: string };
      for (let i = 0; i < 50 && t.stdout !== 'in'; i++) {
        t = await run(['tunnel', '--stdio', '--port', '9098', id], { env, input: 'x' });
        if (t.stdout !== 'in') await new Promise((r) => setTimeout(r, 100));
      }
      expect(t.stdout).toBe('in');
    } finally {
      expect((await run(['rm', id], { env })).code).toBe(0);
    }
  });
});

describe('interrupted create', () => {
  it('leaves either a whole session or nothing, whenever SIGINT lands', async () => {
    const own = new StateDir();
    await own.start();
    try {
      for (const delay of [0, 60, 120, 180, 240]) {
        const c = spawn(CLI[0]!, [...CLI.slice(1), 'create', '--ttl', '5'], { env: { ...process.env, ...own.env } });
        let out = '';
        c.stdout.on('data', (d) => (out += d));
        setTimeout(() => c.kill('SIGINT'), delay);
        const code = await new Promise<number | null>((r) => c.on('close', (x) => r(x)));
        const listed = JSON.parse((await own.run(['ls', '--json'])).stdout) as { id: string; status: string }[];
        if (code === 0) {
          expect(listed.map((s) => s.id)).toContain(out.trim());
        }
        for (const s of listed) {
          expect(s.status).toBe('running');
          expect((await own.run(['exec', s.id, '--', 'true'])).code).toBe(0);
        }
        await own.run(['rm', '--all']);
      }
      // Every SIGINT may have landed before the first session's directory was made: no directory is none left.
      const sessions = join(own.path, 'local', 'sessions');
      expect(existsSync(sessions) ? readdirSync(sessions) : []).toEqual([]);
    } finally {
      await own.cleanup();
    }
  });
});

describe('concurrency', () => {
  it('ten creates from ten processes give ten distinct working sessions', async () => {
    const own = new StateDir();
    await own.start();
    try {
      const results = await Promise.all(
        Array.from(
          { length: 10 },
          () =>
            new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
              const c = spawn(CLI[0]!, [...CLI.slice(1), 'create', '--ttl', '5', '--network', 'isolated'], {
                env: { ...process.env, ...own.env },
              });
              let out = '';
              let err = '';
              c.stdout.on('data', (d) => (out += d));
              c.stderr.on('data', (d) => (err += d));
              c.on('close', (code) => resolve({ code, out: out.trim(), err }));
            }),
        ),
      );
      for (const r of results) expect(r, r.err).toMatchObject({ code: 0 });
      const ids = results.map((r) => r.out);
      expect(new Set(ids).size).toBe(10);
      const listed = JSON.parse((await own.run(['ls', '--json'])).stdout).map((s: { id: string }) => s.id);
      expect(listed.sort()).toEqual([...ids].sort());
      const echoes = await Promise.all(ids.map((id) => own.run(['exec', id, '--', 'sh', '-c', 'echo $WORKSPACE_ID'])));
      expect(echoes.map((e) => `${e.code} ${e.stdout.trim()} ${e.stderr.trim()}`)).toEqual(ids.map((id) => `0 ${id} `));
    } finally {
      await own.cleanup();
    }
  });
});
