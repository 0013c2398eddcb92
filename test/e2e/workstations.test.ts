/**
 * End to end, the workstations provider through the built binary against the Cloud Workstations fake
 * (test/fakes/workstations): the real v1 client over REST, each running workstation a real sshd in a local sandbox
 * behind a TLS tunnel endpoint that checks access tokens, reached by the machine's real ssh with `onmemos tunnel
 * --stdio` as its ProxyCommand.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { OnMemOSClient } from '../../src/sdk/client.js';
import { startWorkstationsFake, type WorkstationsFake } from '../fakes/workstations/server.js';
import { BIN, StateDir, waitFor } from '../helpers/cli.js';
import { spawnPty } from '../helpers/pty.js';
import { type Served, startServe } from '../helpers/serve.js';

let fake: WorkstationsFake;
const state = new StateDir();
let env: Record<string, string>;
let id = '';
const wsx = (args: string[], opts: { input?: string; env?: Record<string, string> } = {}) =>
  state.run(args, { ...opts, env: { ...env, ...opts.env } });

beforeAll(async () => {
  const config = join(state.path, 'config');
  // The second config directory is the key race's below (the fake reads key files before each connection).
  fake = await startWorkstationsFake({
    authorizedKeyFiles: [join(config, 'ssh'), join(state.path, 'config-race', 'ssh')],
  });
  env = { ...fake.env, ONMEMOS_CONFIG_DIR: config };
  const r = await wsx(['create', '--provider', 'workstations', '--namespace', 'dev', '--user', 'ann', '--json']);
  expect(r.code, r.stderr).toBe(0);
  id = JSON.parse(r.stdout).id;
}, 120_000);
afterAll(async () => {
  await wsx(['rm', '--all']);
  await state.cleanup();
  await fake.close();
}, 120_000);

describe('workstations through the CLI', () => {
  it('create gives a running session with its web URL, ssh, and the workstation name', async () => {
    const s = JSON.parse((await wsx(['get', id, '--json'])).stdout);
    expect(s).toMatchObject({ id, provider: 'workstations', status: 'running', ssh: true });
    expect(s.url).toMatch(/^https:\/\//);
    expect(s.details.workstation_name).toBe(`${fake.configName}/workstations/${id}`);
  });

  it('exec over ssh: exit code, stdout and stderr apart, stdin to EOF, argv intact, the session variables', async () => {
    const r = await wsx(['exec', id, '--', 'sh', '-c', 'echo out; echo err >&2; exit 3']);
    expect(r).toMatchObject({ code: 3, stdout: 'out\n', stderr: 'err\n' });
    expect((await wsx(['exec', id, '--', 'wc', '-c'], { input: 'abcd' })).stdout.trim()).toBe('4');
    const odd = ["it's", '$HOME `id`', 'two  spaces', 'new\nline'];
    const echo = await wsx(['exec', id, '--', 'printf', '[%s]', ...odd]);
    expect(echo.stdout).toBe(odd.map((a) => `[${a}]`).join(''));
    const v = await wsx(['exec', '-e', 'X=a b', id, '--', 'sh', '-c', 'echo "$WORKSPACE_ID|$NAMESPACE|$X"']);
    expect(v.stdout).toBe(`${id}|dev|a b\n`);
  });

  it('first execs at once, with a new config directory, make one key pair between them: every exec gets in', async () => {
    const config = join(state.path, 'config-race');
    const fresh = { ONMEMOS_CONFIG_DIR: config, ONMEMOS_SSH_REUSE: '0' };
    const ran = await Promise.all([1, 2, 3, 4].map(() => wsx(['exec', id, '--', 'echo', 'in'], { env: fresh })));
    expect(ran.map((r) => [r.code, r.stdout])).toEqual([1, 2, 3, 4].map(() => [0, 'in\n']));
  }, 60_000);

  it('--timeout ends the remote command (124), and nothing of it is left', async () => {
    const r = await wsx(['exec', '--timeout', '1', id, '--', 'sh', '-c', 'sleep 3070']);
    expect(r.code, r.stderr).toBe(124);
    const ps = await wsx(['exec', id, '--', 'sh', '-c', 'ps -eo args | grep -c "[s]leep 3070" || true']);
    expect(ps.stdout.trim()).toBe('0');
  });

  it('stop keeps the disk; exec on a stopped session says how to start it; start brings it back', async () => {
    expect((await wsx(['exec', id, '--', 'sh', '-c', 'echo kept > ~/f'])).code).toBe(0);
    const stopped = await wsx(['stop', id]);
    expect(stopped.code, stopped.stderr).toBe(0);
    expect(JSON.parse((await wsx(['get', id, '--json'])).stdout).status).toBe('stopped');
    const refused = await wsx(['exec', id, '--', 'true']);
    expect(refused.code).toBe(125);
    expect(refused.stderr).toMatch(/stopped, not running/);
    expect(refused.stderr).toMatch(/onmemos start/);
    expect((await wsx(['start', id])).code).toBe(0);
    expect((await wsx(['exec', id, '--', 'sh', '-c', 'cat ~/f'])).stdout).toBe('kept\n');
  }, 60_000);

  it('onmemos tunnel --local-port: a real ssh through it', async () => {
    const t = spawn(process.execPath, [BIN, 'tunnel', id, '--local-port', '0', '--json'], {
      env: { ...process.env, ...state.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    try {
      const line = await new Promise<string>((resolve, reject) => {
        t.stdout.once('data', (d) => resolve(String(d)));
        t.once('exit', (c) => reject(new Error(`tunnel exited ${c}`)));
      });
      const { port } = JSON.parse(line) as { port: number };
      const key = join(env.ONMEMOS_CONFIG_DIR!, 'ssh', 'onmemos_ed25519');
      const r = await new Promise<{ code: number | null; out: string }>((resolve) => {
        const ssh = spawn('ssh', [
          '-i',
          key,
          '-o',
          'BatchMode=yes',
          '-o',
          'StrictHostKeyChecking=no',
          '-o',
          'UserKnownHostsFile=/dev/null',
          '-o',
          'LogLevel=ERROR',
          '-p',
          String(port),
          'user@127.0.0.1',
          'echo via-tunnel; exit 7',
        ]);
        let out = '';
        ssh.stdout.on('data', (d) => (out += d));
        ssh.on('exit', (code) => resolve({ code, out }));
      });
      expect(r).toEqual({ code: 7, out: 'via-tunnel\n' });
    } finally {
      t.kill('SIGINT');
      await new Promise((r) => t.once('exit', r));
    }
  });
});

describe('workstations: the interactive shell and signals', () => {
  it('onmemos shell in a real pty: a login shell in the home, stty size, and its exit code', async () => {
    let out = '';
    const term = spawnPty(
      process.execPath,
      [BIN, 'shell', id],
      {
        cols: 101,
        rows: 33,
        name: 'xterm-256color',
        env: { ...process.env, ...state.env, ...env, TERM: 'xterm-256color' } as Record<string, string>,
      },
      (d) => {
        out += d;
      },
    );
    const exit = new Promise<{ exitCode: number }>((r) => term.onExit(r));
    try {
      term.write('stty size; pwd; echo "id=$WORKSPACE_ID"\r');
      expect(await waitFor(() => out.includes(`id=${id}`), 20_000, 20), out).toBe(true);
      expect(out).toContain('33 101');
      expect(out).toContain('/home/user');
      term.write('exit 5\r');
      expect(
        (
          (await Promise.race([exit, new Promise((r) => setTimeout(() => r({ exitCode: -1 }), 20_000))])) as {
            exitCode: number;
          }
        ).exitCode,
      ).toBe(5);
    } finally {
      try {
        term.kill('SIGKILL');
      } catch {}
    }
  }, 60_000);

  it('Ctrl-C (SIGINT) to onmemos exec ends the remote command and its children: 130, nothing left', async () => {
    // A foreground pipeline: both take the SIGINT (a child sent to the background by sh ignores it, as anywhere).
    const p = spawn(process.execPath, [BIN, 'exec', id, '--', 'sh', '-c', 'sleep 3071 | sleep 3072; echo never'], {
      env: { ...process.env, ...state.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    const code = new Promise<number | null>((r) => p.on('exit', (c) => r(c)));
    const running = async () =>
      (await wsx(['exec', id, '--', 'sh', '-c', 'ps -eo args | grep -c "^sleep 307[12]" || true'])).stdout.trim();
    expect(await waitFor(async () => (await running()) === '2', 20_000, 200)).toBe(true);
    p.kill('SIGINT');
    expect(await code).toBe(130);
    expect(out).toBe('');
    expect(await waitFor(async () => (await running()) === '0', 10_000, 200)).toBe(true);
  }, 60_000);
});

describe('workstations faults', () => {
  it("a start that fails: the API's message in one line, and no workstation left", async () => {
    fake.faults.set({
      failOperations: {
        method: 'startWorkstation',
        code: 'RESOURCE_EXHAUSTED',
        message: 'no capacity in zone',
        count: 1,
      },
    });
    try {
      const r = await wsx(['create', '--provider', 'workstations', '--namespace', 'fails', '--json']);
      expect(r.code).toBe(1);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/no capacity in zone/);
      expect(JSON.parse((await wsx(['ls', '--namespace', 'fails', '--json'])).stdout)).toEqual([]);
      expect(fake.workstations.list().filter((w) => w.id.startsWith('ws-fails-'))).toEqual([]);
    } finally {
      fake.faults.clear();
    }
  }, 60_000);

  it('a start that never ends: bounded by WORKSTATIONS_START_TIMEOUT, one line, nothing left', async () => {
    fake.faults.set({ neverRunning: 'ws-slow-' });
    try {
      const r = await wsx(['create', '--provider', 'workstations', '--namespace', 'slow', '--json'], {
        env: { WORKSTATIONS_START_TIMEOUT: '2' },
      });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/did not become running within 2 s/);
      expect(fake.workstations.list().filter((w) => w.id.startsWith('ws-slow-'))).toEqual([]);
    } finally {
      fake.faults.clear();
    }
  }, 60_000);
});

describe('workstations through onmemos serve (the server is the SSH client)', () => {
  let served: Served;
  const key = 'workstations-e2e-key-0123456789abcdef';
  beforeAll(async () => {
    served = await startServe({ ...state.env, ...env, ONMEMOS_API_KEYS: key });
  });
  afterAll(() => served.stop());

  it('auto with needs_ssh picks workstations; execute, the exec WebSocket (remote mode) and the JSON shell work', async () => {
    const client = new OnMemOSClient(served.url, key);
    const s = await client.createSession({ namespace: 'srv', user: 'bo', needs_ssh: true });
    try {
      expect(s).toMatchObject({ provider: 'workstations', ssh: true });
      expect(s.details.provider_reason).toMatch(/needs_ssh/);
      expect(await client.executeSession(s.id, 'echo $NAMESPACE; echo oops >&2; exit 3')).toEqual({
        stdout: 'srv\n',
        stderr: 'oops\n',
        returncode: 3,
        success: false,
      });
      const remote = { ONMEMOS_SERVER: served.url, ONMEMOS_API_KEY: key };
      expect(
        await wsx(['exec', s.id, '--', 'sh', '-c', 'cat; exit 5'], { env: remote, input: 'via-serve' }),
      ).toMatchObject({
        code: 5,
        stdout: 'via-serve',
      });
      const ws = new WebSocket(`${served.url.replace(/^http/, 'ws')}/v1/sessions/${s.id}/shell?api_key=${key}`);
      const reply = await new Promise<Record<string, unknown>>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('no reply in 20 s')), 20_000);
        ws.on('open', () => ws.send(JSON.stringify({ type: 'command', command: 'echo shell' })));
        ws.on('message', (d: Buffer) => {
          clearTimeout(t);
          resolve(JSON.parse(d.toString()));
        });
        ws.on('error', reject);
      });
      ws.close();
      expect(reply).toEqual({ type: 'command_result', stdout: 'shell\n', stderr: '', returncode: 0, success: true });
      const c = await client.connectSession(s.id);
      expect(c).toMatchObject({ provider: 'workstations', ssh: { port: 22, user: 'user' } });
      // POST /v1/sessions/{id}/stop and /start: the home is kept.
      await client.executeSession(s.id, 'echo kept > ~/g');
      expect((await client.stopSession(s.id)).status).toBe('stopped');
      await expect(client.executeSession(s.id, 'true')).rejects.toMatchObject({ code: 'conflict' });
      expect((await client.startSession(s.id)).status).toBe('running');
      expect((await client.executeSession(s.id, 'cat ~/g')).stdout).toBe('kept\n');
    } finally {
      await client.deleteSession(s.id);
    }
  }, 60_000);
});
