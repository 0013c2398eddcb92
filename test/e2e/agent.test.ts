/**
 * `onmemos agent`, the built binary, on 127.0.0.1 port 0 with a session secret: the routes a cloud_run provider
 * uses (health, the v5 exec WebSocket through the same client as every provider, the JSON shell, execute), the
 * secret on every route, commands as the workspace user, no process left behind, SIGTERM. These run on the host as
 * whoever runs the tests (as root, commands drop to uid 1000): the agent is meant for a container.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { errorFromResponse } from '../../src/errors.js';
import { openExec } from '../../src/exec/client.js';
import type { ExecSpec, RemoteProcess } from '../../src/exec/process.js';
import { AGENT_SECRET, type RunningAgent, startAgent } from '../helpers/agent.js';
import { run, waitFor } from '../helpers/cli.js';

const ROOT = process.getuid?.() === 0;
const HEADER = 'X-OnMemOS-Secret';
let agent: RunningAgent;

beforeAll(async () => {
  agent = await startAgent({
    // What Cloud Run and the service set: the platform's are hidden from commands, the document's are kept.
    K_SERVICE: 'onmemos-ws-a-b-1',
    K_REVISION: 'onmemos-ws-a-b-1-00001',
    K_CONFIGURATION: 'onmemos-ws-a-b-1',
    WORKSPACE_ID: 'ws-team-alice-1',
    NAMESPACE: 'team',
    USER: 'alice',
    BUCKET_NAME: 'onmemos-team-alice-1',
  });
});
afterAll(async () => {
  await agent?.stop();
});

const exec = (spec: ExecSpec, secret: string | undefined = AGENT_SECRET, a = agent) =>
  openExec(spec, {
    url: `ws://127.0.0.1:${a.port}/v1/exec`,
    headers: secret === undefined ? {} : { [HEADER]: secret },
    peer: 'the agent',
    refused: errorFromResponse,
  });

async function collect(p: RemoteProcess) {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  p.stdout.on('data', (d: Buffer) => out.push(d));
  p.stderr.on('data', (d: Buffer) => err.push(d));
  const status = await p.exit;
  return { status, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString() };
}

async function execute(body: unknown, secret: string | undefined = AGENT_SECRET, a = agent) {
  const res = await fetch(`${a.base}/v1/execute`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(secret === undefined ? {} : { [HEADER]: secret }) },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** The status and body of an upgrade the agent refuses (or 101 when it accepts). */
function upgrade(path: string, headers: Record<string, string>, protocols: string[] = ['v5.channel.k8s.io']) {
  return new Promise<{ status: number; body: unknown }>((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${agent.port}${path}`, protocols, { headers });
    ws.once('open', () => {
      ws.terminate();
      resolve({ status: 101, body: undefined });
    });
    ws.once('unexpected-response', (_req, res) => {
      let text = '';
      res.on('data', (d: Buffer) => {
        text += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
    });
    ws.once('error', reject);
  });
}

/** Processes whose command line holds `marker`, on this host. */
function withMarker(marker: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (readFileSync(`/proc/${name}/cmdline`, 'latin1').includes(marker)) pids.push(Number(name));
    } catch {}
  }
  return pids;
}

describe('onmemos agent: health and the secret', () => {
  it('answers /health without the secret, revealing nothing', async () => {
    const res = await fetch(`${agent.base}/health`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: 'ok' });
  });

  it('refuses every other route without the secret or with a wrong one: 401, logged without the secret', async () => {
    for (const secret of [undefined, 'wrong-secret-0123456789abcdef', `${AGENT_SECRET}x`]) {
      const h: Record<string, string> = secret === undefined ? {} : { [HEADER]: secret };
      for (const [method, path] of [
        ['POST', '/v1/execute'],
        ['GET', '/v1/exec?command=true'],
        ['GET', '/v1/shell'],
        ['GET', '/v1/nothing'],
        ['GET', '/'],
      ] as const) {
        const res = await fetch(`${agent.base}${path}`, {
          method,
          headers: { 'content-type': 'application/json', ...h },
          ...(method === 'POST' ? { body: JSON.stringify({ command: 'touch /tmp/never' }) } : {}),
        });
        expect(res.status, `${method} ${path}`).toBe(401);
        expect(await res.json()).toEqual({ error: { code: 'auth', message: expect.any(String) } });
      }
      // The upgrade is refused before any WebSocket is made.
      for (const path of ['/v1/exec?command=true', '/v1/shell']) {
        expect(await upgrade(path, h)).toEqual({
          status: 401,
          body: { error: { code: 'auth', message: expect.any(String) } },
        });
      }
    }
    // Not even through the exec client every provider uses, nor as a query parameter.
    await expect(exec({ argv: ['true'] }, 'wrong-secret-0123456789abcdef')).rejects.toMatchObject({ code: 'auth' });
    expect((await upgrade(`/v1/exec?command=true&secret=${AGENT_SECRET}`, {})).status).toBe(401);
    expect(agent.stderr()).toMatch(/refused POST "\/v1\/execute" from 127\.0\.0\.1: 401 auth/);
    expect(agent.stderr()).toMatch(/refused GET "\/v1\/exec" from 127\.0\.0\.1: 401 auth/);
    expect(agent.stderr()).not.toContain(AGENT_SECRET);
    expect(agent.stderr()).not.toContain('command=');
  });

  it('takes the secret as its SHA-256 from the environment, and refuses to start without one', async () => {
    const hashed = await startAgent({
      ONMEMOS_AGENT_SECRET: undefined,
      ONMEMOS_AGENT_SECRET_SHA256: createHash('sha256').update(AGENT_SECRET).digest('hex'),
    });
    try {
      expect((await execute({ command: 'echo hashed' }, AGENT_SECRET, hashed)).body.stdout).toBe('hashed\n');
      expect((await execute({ command: 'echo no' }, 'x'.repeat(64), hashed)).status).toBe(401);
    } finally {
      await hashed.stop();
    }
    const refuse = async (env: Record<string, string>, args: string[] = ['--port', '0']) => {
      // A workspace of nowhere: an agent that started by mistake makes nothing on this machine.
      const ws = { ONMEMOS_WORKSPACE: '/proc/onmemos-no-workspace' };
      const r = await run(['agent', '--host', '127.0.0.1', ...args], { env: { ...ws, ...env }, timeoutMs: 15_000 });
      expect(r.code).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      return r.stderr;
    };
    expect(await refuse({})).toMatch(/^onmemos agent: no session secret: set ONMEMOS_AGENT_SECRET_SHA256/);
    expect(await refuse({ ONMEMOS_AGENT_SECRET: 'short' })).toMatch(/at least 16 characters/);
    expect(await refuse({ ONMEMOS_AGENT_SECRET_SHA256: 'abc' })).toMatch(/64 hex digits/);
    expect(await refuse({ ONMEMOS_AGENT_SECRET: AGENT_SECRET }, ['--port', '0', '--insecure-no-secret'])).toMatch(
      /choose one/,
    );
    expect(await refuse({ ONMEMOS_AGENT_SECRET: AGENT_SECRET }, ['--port', 'x'])).toMatch(/--port must be a port/);
    expect(await refuse({ ONMEMOS_AGENT_SECRET: AGENT_SECRET, PORT: '99999' }, [])).toMatch(/\$PORT must be a port/);
    expect(await refuse({ ONMEMOS_AGENT_SECRET: AGENT_SECRET }, ['--port', '0', '--bogus'])).toMatch(/--bogus/);
    // A workspace that cannot be made is one line too (exit 1).
    const r = await run(['agent', '--port', '0'], {
      env: { ONMEMOS_AGENT_SECRET: AGENT_SECRET, ONMEMOS_WORKSPACE: '/proc/onmemos-no-workspace' },
      timeoutMs: 15_000,
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^onmemos agent: cannot make the workspace \/proc\/onmemos-no-workspace: .*\n$/);

    const open = await startAgent({ ONMEMOS_AGENT_SECRET: undefined }, ['--insecure-no-secret']);
    try {
      expect(open.stderr()).toMatch(/NO SECRET/);
      expect((await execute({ command: 'echo open' }, undefined, open)).body.stdout).toBe('open\n');
    } finally {
      await open.stop();
    }
  });
});

describe('onmemos agent: exec over v5.channel.k8s.io', () => {
  it('exit codes, stdout and stderr apart, 127 and 126 lines', async () => {
    const r = await collect(await exec({ argv: ['sh', '-c', 'echo out; echo err >&2; exit 3'] }));
    expect(r).toMatchObject({ status: { code: 3 }, stderr: 'err\n' });
    expect(r.stdout.toString()).toBe('out\n');
    const missing = await collect(await exec({ argv: ['no-such-command-here'] }));
    expect(missing.status.code).toBe(127);
    expect(missing.stderr).toContain('onmemos: no-such-command-here: command not found');
    expect((await collect(await exec({ argv: ['/tmp'] }))).status.code).toBe(126);
    const killed = await collect(await exec({ argv: ['sh', '-c', 'kill -TERM $$'] }));
    expect(killed.status.code).toBe(143);
    // The exec's query is part of the request head, which Node bounds at 16 KiB: a longer one is refused, not hung
    // (a long command goes through execute, or through stdin).
    await expect(exec({ argv: ['echo', 'x'.repeat(20_000)] })).rejects.toThrow(/HTTP 431/);
  });

  it('delivers stdin with its EOF, binary-safe, 1 MiB', async () => {
    const data = randomBytes(1 << 20);
    const p = await exec({ argv: ['cat'], stdin: true });
    const done = collect(p);
    p.stdin.end(data);
    const r = await done;
    expect(r.status.code).toBe(0);
    expect(r.stdout.equals(data)).toBe(true);
    const wc = await exec({ argv: ['wc', '-l'], stdin: true });
    const counted = collect(wc);
    wc.stdin.end('a\nb\n');
    expect((await counted).stdout.toString().trim()).toBe('2');
  });

  it('a tty with resize, env= and workdir=', async () => {
    const p = await exec({
      argv: ['sh', '-c', '[ -t 0 ] && [ -t 1 ] && echo tty; echo "$TERM $FOO $(pwd)"; stty size; read x; stty size'],
      tty: true,
      stdin: true,
      cols: 80,
      rows: 24,
      term: 'vt100',
      env: { FOO: 'bar' },
      cwd: '/tmp',
    });
    let out = '';
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    expect(await waitFor(() => out.includes('24 80'))).toBe(true);
    p.resize(100, 30);
    p.stdin.write('\n');
    const status = await p.exit;
    expect(status.code).toBe(0);
    expect(out).toContain('tty');
    expect(out).toContain('vt100 bar /tmp');
    expect(out).toContain('30 100');
  });

  it('a client that goes away leaves no process behind', async () => {
    const marker = `agent-gone-${process.pid}-${Date.now()}`;
    const p = await exec({
      argv: [
        'bash',
        '-c',
        `(exec -a ${marker}-a sleep 300) & (setsid bash -c 'exec -a ${marker}-b sleep 300' &) ; exec -a ${marker}-c sleep 300`,
      ],
    });
    expect(await waitFor(() => withMarker(marker).length === 3)).toBe(true);
    p.kill('SIGKILL'); // the client's socket goes away
    await p.exit;
    // What stayed in the exec's process group or tree is gone; a process that left both (setsid after a fork)
    // is out of reach, as in a local session without cgroups: the container ends with the session.
    expect(await waitFor(() => withMarker(`${marker}-a`).length + withMarker(`${marker}-c`).length === 0)).toBe(true);
    for (const pid of withMarker(marker)) process.kill(pid, 'SIGKILL');
  });
});

describe('onmemos agent: the JSON shell and execute', () => {
  it('answers {"type":"command"} with {"type":"command_result"}', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${agent.port}/v1/shell`, { headers: { [HEADER]: AGENT_SECRET } });
    const replies: unknown[] = [];
    ws.on('message', (d: Buffer) => replies.push(JSON.parse(d.toString())));
    await new Promise((r) => ws.once('open', r));
    ws.send(JSON.stringify({ type: 'command', command: 'echo hi; pwd' }));
    ws.send(JSON.stringify({ type: 'command', command: 'exit 4' }));
    ws.send('not json');
    expect(await waitFor(() => replies.length === 3)).toBe(true);
    expect(replies[0]).toEqual({
      type: 'command_result',
      stdout: `hi\n${agent.workspace}\n`,
      stderr: '',
      returncode: 0,
      success: true,
    });
    expect(replies[1]).toEqual({ type: 'command_result', stdout: '', stderr: '', returncode: 4, success: false });
    expect(replies[2]).toMatchObject({ type: 'error', error: { code: 'bad_request' } });
    ws.close();
  });

  it("execute: the document's answer, its 1 MiB cap, its timeout", async () => {
    expect(await execute({ command: 'echo a; echo b >&2; exit 1' })).toEqual({
      status: 200,
      body: { stdout: 'a\n', stderr: 'b\n', returncode: 1, success: false },
    });
    const big = await execute({ command: "head -c 3000000 /dev/zero | tr '\\0' a" });
    expect(big.body).toMatchObject({ returncode: 0, truncated: true });
    expect((big.body.stdout as string).length).toBe(1 << 20);
    const long = await execute({ command: `: ${'x'.repeat(100_000)}; echo long` });
    expect(long.body).toMatchObject({ stdout: 'long\n', returncode: 0 });
    const slow = await execute({ command: 'sleep 30', timeout: 0.5 });
    expect(slow.body).toMatchObject({ returncode: 124, success: false });
    expect((await execute({ command: '' })).status).toBe(400);
    expect((await execute({ command: 'true', timeout: -1 })).status).toBe(422);
    const res = await fetch(`${agent.base}/v1/execute`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', [HEADER]: AGENT_SECRET },
      body: 'x'.repeat((1 << 20) + 10),
    });
    expect(res.status).toBe(413);
  });

  it('bounds concurrent execs, shells and executes (64), answering 429', async () => {
    const shells: WebSocket[] = [];
    try {
      for (let i = 0; i < 64; i++) {
        const ws = new WebSocket(`ws://127.0.0.1:${agent.port}/v1/shell`, { headers: { [HEADER]: AGENT_SECRET } });
        shells.push(ws);
        await new Promise((r, j) => {
          ws.once('open', r);
          ws.once('error', j);
        });
      }
      expect((await upgrade('/v1/shell', { [HEADER]: AGENT_SECRET })).status).toBe(429);
      expect((await execute({ command: 'true' })).status).toBe(429);
    } finally {
      for (const ws of shells) ws.terminate();
    }
    expect(await waitFor(async () => (await execute({ command: 'true' })).status === 200)).toBe(true);
  });
});

describe('onmemos agent: the workspace user and environment', () => {
  it('runs commands as the workspace user, in the workspace, over pipes and on a tty', async () => {
    const want = ROOT ? '1000 1000 1000' : `${process.getuid?.()} ${process.getgid?.()}`;
    const cmd = 'echo "$(id -u) $(id -g) $(id -G)"; pwd; echo "$HOME"';
    const piped = await execute({ command: cmd });
    const [ids, pwd, home] = (piped.body.stdout as string).split('\n');
    if (ROOT) expect(ids).toBe(want);
    expect(pwd).toBe(agent.workspace);
    if (ROOT) expect(home).toBe(agent.workspace);
    const p = await exec({ argv: ['sh', '-c', `${cmd}; stat -c %u "$(tty)"`], tty: true });
    const r = await collect(p);
    const lines = r.stdout.toString().replaceAll('\r', '').split('\n');
    if (ROOT) expect(lines.slice(0, 4)).toEqual([want, agent.workspace, agent.workspace, '1000']);
    else expect(lines[1]).toBe(agent.workspace);
  });

  it("keeps the secret, the agent's variables and the platform's out of every command", async () => {
    const env = (await execute({ command: 'env' })).body.stdout as string;
    const names = env.split('\n').map((l) => l.split('=')[0]);
    expect(env).not.toContain(AGENT_SECRET);
    for (const hidden of ['ONMEMOS_AGENT_SECRET', 'PORT', 'K_SERVICE', 'K_REVISION', 'K_CONFIGURATION']) {
      expect(names).not.toContain(hidden);
    }
    expect(env).toContain('WORKSPACE_ID=ws-team-alice-1\n');
    expect(env).toContain('NAMESPACE=team\n');
    expect(env).toContain('USER=alice\n');
    expect(env).toContain('BUCKET_NAME=onmemos-team-alice-1\n');
    const tty = await collect(await exec({ argv: ['env'], tty: true }));
    expect(tty.stdout.toString()).not.toContain(AGENT_SECRET);
    if (ROOT) {
      // Nor through /proc: the agent's environment is not the workspace user's to read.
      const peek = await execute({ command: `cat /proc/${agent.child.pid}/environ` });
      expect(peek.body.returncode).not.toBe(0);
      expect(peek.body.stdout).not.toContain(AGENT_SECRET);
    }
  });
});

describe('onmemos agent: SIGTERM', () => {
  it('ends the agent and its running commands, which see their end', async () => {
    const a = await startAgent();
    const marker = `agent-term-${process.pid}-${Date.now()}`;
    const p = await exec(
      { argv: ['bash', '-c', `(exec -a ${marker}-bg sleep 300) & exec -a ${marker} sleep 300`] },
      AGENT_SECRET,
      a,
    );
    const seen = collect(p);
    expect(await waitFor(() => withMarker(marker).length === 2)).toBe(true);
    const { code, signal } = await a.stop();
    expect({ code, signal }).toEqual({ code: 0, signal: null });
    expect((await seen).status.code).toBe(143);
    expect(withMarker(marker)).toEqual([]);
  });
});
