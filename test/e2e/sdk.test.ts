/** The SDK (OnMemOSClient) against a real `onmemos serve` on 127.0.0.1 port 0, over real local sandboxes. */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuthError, ForbiddenError, NotFoundError, UserError } from '../../src/errors.js';
import { defaultRegistry } from '../../src/providers/index.js';
import { OnMemOSClient } from '../../src/sdk/client.js';
import { Auth, parseApiKeys } from '../../src/server/auth.js';
import { createOnmemosServer } from '../../src/server/server.js';
import { StateDir } from '../helpers/cli.js';

const KEY = 'sdk-test-key-0123456789abcdef';
const SCOPED = 'sdk-scoped-key-0123456789abcdef';
const state = new StateDir();
let server: Server;
let client: OnMemOSClient;
let base = '';

beforeAll(async () => {
  const auth = new Auth(parseApiKeys(`${KEY}\n${SCOPED} only-this\n`));
  server = await createOnmemosServer({
    registry: defaultRegistry({ ...process.env, ONMEMOS_STATE_DIR: state.path }),
    auth,
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  client = new OnMemOSClient(base, KEY);
});
afterAll(async () => {
  await new Promise<void>((r) => {
    server.close(() => r());
    server.closeAllConnections();
  });
  await state.cleanup();
});

describe('OnMemOSClient', () => {
  it('runs the document example: create, execute several commands, delete', async () => {
    const session = await client.createSession({
      template: 'python',
      namespace: 'my-project',
      user: 'developer',
      ttl_minutes: 120,
    });
    expect(session.id).toMatch(/^ws-my-project-developer-/);
    const version = await client.executeSession(session.id, 'python3 --version');
    expect(version.stdout).toMatch(/^Python 3\./);
    const outputs = [];
    for (const cmd of [
      'pwd',
      'ls -la',
      "echo 'Hello from OnMemOS!'",
      "python3 -c 'import sys; print(sys.version_info.major)'",
    ]) {
      const r = await client.executeSession(session.id, cmd);
      expect(r.success, cmd).toBe(true);
      outputs.push(r.stdout);
    }
    expect(outputs[0]).toBe('/workspace\n');
    expect(outputs[2]).toBe('Hello from OnMemOS!\n');
    expect((await client.listSessions({ namespace: 'my-project' })).map((s) => s.id)).toEqual([session.id]);
    expect((await client.connectSession(session.id)).exec?.url).toMatch(
      new RegExp(`^ws://127\\.0\\.0\\.1:\\d+/v1/sessions/${session.id}/exec$`),
    );
    await client.deleteSession(session.id);
    await expect(client.getSession(session.id)).rejects.toBeInstanceOf(NotFoundError);
  });

  it('deletes a disposable session at the end of its block (await using)', async () => {
    let id = '';
    {
      await using s = await client.session({ namespace: 'ctx', user: 'analyst', ttl_minutes: 60 });
      id = s.id;
      expect((await s.execute('echo $NAMESPACE')).stdout).toBe('ctx\n');
    }
    await expect(client.getSession(id)).rejects.toBeInstanceOf(NotFoundError);
  });

  it('withSession deletes the session however the function ends', async () => {
    let id = '';
    await expect(
      client.withSession({ namespace: 'with', user: 'u' }, async (s) => {
        id = s.id;
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    await expect(client.getSession(id)).rejects.toBeInstanceOf(NotFoundError);
    const value = await client.withSession(
      { namespace: 'with', user: 'u' },
      async (s) => (await s.execute('echo 42')).stdout,
    );
    expect(value).toBe('42\n');
  });

  it('exec streams: stdin in, stdout and stderr out as produced, and the exit code', async () => {
    await client.withSession({ namespace: 'stream', user: 'u' }, async (s) => {
      const p = await s.exec(['sh', '-c', 'wc -l; echo err >&2; exit 5'], { stdin: true });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      p.stdout.on('data', (d: Buffer) => out.push(d));
      p.stderr.on('data', (d: Buffer) => err.push(d));
      p.stdin.end('a\nb\nc\n');
      expect(await p.wait()).toBe(5);
      expect(Buffer.concat(out).toString()).toBe('3\n');
      expect(Buffer.concat(err).toString()).toBe('err\n');
      const env = await s.exec(['sh', '-c', 'echo "$X $(pwd)"'], { env: { X: 'y' }, cwd: '/tmp' });
      const chunks: Buffer[] = [];
      env.stdout.on('data', (d: Buffer) => chunks.push(d));
      expect(await env.wait()).toBe(0);
      expect(Buffer.concat(chunks).toString()).toBe('y /tmp\n');
    });
  });

  it('throws typed errors', async () => {
    await expect(client.getSession('ws-none-x-1-abcd')).rejects.toBeInstanceOf(NotFoundError);
    await expect(new OnMemOSClient(base, 'wrong-key-0123456789abcdef').listSessions()).rejects.toBeInstanceOf(
      AuthError,
    );
    await expect(new OnMemOSClient(base).listSessions()).rejects.toBeInstanceOf(AuthError);
    await expect(new OnMemOSClient(base, SCOPED).createSession({ namespace: 'elsewhere' })).rejects.toBeInstanceOf(
      ForbiddenError,
    );
    await expect(client.createSession({ namespace: 'Not A Label' })).rejects.toBeInstanceOf(UserError);
    expect(() => new OnMemOSClient('ftp://x')).toThrow(UserError);
  });
});

describe('the package', () => {
  const root = fileURLToPath(new URL('../..', import.meta.url));
  it("is importable as 'onmemos', an ES module with the client and the typed errors", () => {
    const out = execFileSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        "import * as m from 'onmemos'; console.log(typeof m.OnMemOSClient, typeof m.NotFoundError, typeof m.AuthError)",
      ],
      { cwd: root, encoding: 'utf8' },
    );
    expect(out.trim()).toBe('function function function');
  });

  it('ships its types', () => {
    const pkg = JSON.parse(readFileSync(`${root}/package.json`, 'utf8'));
    const types = readFileSync(`${root}/${pkg.exports['.'].types}`, 'utf8');
    expect(types).toMatch(/OnMemOSClient/);
    expect(readFileSync(`${root}/dist/sdk/client.d.ts`, 'utf8')).toMatch(/withSession<T>/);
  });
});
