/** Remote mode selection: saved contexts (0600 in 0700), and the precedence flag > environment > context. */
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultRegistry } from '../../src/providers/index.js';
import { Auth, parseApiKeys } from '../../src/server/auth.js';
import { createOnmemosServer } from '../../src/server/server.js';
import { run, StateDir, waitFor } from '../helpers/cli.js';

const KEY = 'config-test-key-0123456789abcdef';
const state = new StateDir();
const config = mkdtempSync(join(tmpdir(), 'onmemos-config-'));
let server: Server;
let url = '';
/** onmemos with only a config directory: no state directory, no server in the environment. */
const cli = (args: string[], env: Record<string, string> = {}, input?: string) =>
  run(args, {
    env: { ONMEMOS_CONFIG_DIR: join(config, 'onmemos'), ONMEMOS_SERVER: '', ONMEMOS_API_KEY: '', ...env },
    input,
  });

beforeAll(async () => {
  server = await createOnmemosServer({
    registry: defaultRegistry({ ...process.env, ONMEMOS_STATE_DIR: state.path }),
    auth: new Auth(parseApiKeys(KEY)),
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});
afterAll(async () => {
  await new Promise<void>((r) => {
    server.close(() => r());
    server.closeAllConnections();
  });
  await state.cleanup();
  rmSync(config, { recursive: true, force: true });
});

describe('saved contexts', () => {
  it('stores the key 0600 in a 0700 directory, never prints it, and makes the CLI a client of the server', async () => {
    expect((await cli(['config', 'set-context', 'dev', '--server', url, '--api-key-stdin'], {}, `${KEY}\n`)).code).toBe(
      0,
    );
    const dir = join(config, 'onmemos');
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(statSync(join(dir, 'config.json')).mode & 0o777).toBe(0o600);
    const listed = await cli(['config', 'get-contexts']);
    expect(listed.stdout).toMatch(/dev\s+http:\/\/127\.0\.0\.1:\d+\s+set/);
    expect(listed.stdout).not.toContain(KEY);
    expect((await cli(['config', 'current-context'])).code).toBe(1); // none yet: local mode
    expect((await cli(['config', 'use-context', 'dev'])).code).toBe(0);
    expect((await cli(['config', 'current-context'])).stdout).toBe('dev\n');

    const created = await cli(['create', '--namespace', 'ctx', '--ttl', '5']);
    expect(created.code).toBe(0);
    const id = created.stdout.trim();
    // It was made by the server, in the server's state directory.
    expect(statSync(join(state.path, 'local', 'sessions', id)).isDirectory()).toBe(true);
    expect((await cli(['exec', id, '--', 'sh', '-c', 'echo $NAMESPACE'])).stdout).toBe('ctx\n');
    // --local ignores the context: this CLI's own (empty) state has no such session.
    expect((await cli(['--local', 'get', id], { ONMEMOS_STATE_DIR: join(config, 'empty') })).code).toBe(1);
    expect((await cli(['rm', id])).code).toBe(0);
  });

  it('takes the flag over the environment over the context', async () => {
    expect((await cli(['config', 'set-context', 'dev', '--server', url, '--api-key-stdin'], {}, `${KEY}\n`)).code).toBe(
      0,
    );
    expect((await cli(['config', 'use-context', 'dev'])).code).toBe(0);
    const bad = 'http://127.0.0.1:9';
    expect((await cli(['ls'], { ONMEMOS_SERVER: bad })).stderr).toMatch(
      /cannot reach the onmemos server at http:\/\/127\.0\.0\.1:9/,
    );
    expect((await cli(['--server', url, 'ls'], { ONMEMOS_SERVER: bad, ONMEMOS_API_KEY: KEY })).code).toBe(0);
    expect((await cli(['ls'], { ONMEMOS_API_KEY: 'wrong-key-0123456789abcdef' })).stderr).toMatch(/invalid API key/);
    expect((await cli(['--api-key', KEY, 'ls'], { ONMEMOS_API_KEY: 'wrong-key-0123456789abcdef' })).code).toBe(0);
    expect((await cli(['config', 'delete-context', 'dev'])).code).toBe(0);
    expect((await cli(['config', 'use-context', 'dev'])).code).toBe(1);
  });
});

describe('bad configuration is one line, never a stack', () => {
  it('a corrupt config file: one line naming it and what to do, exit 1; --local still works', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'onmemos-corrupt-'));
    try {
      writeFileSync(join(dir, 'config.json'), '{nope');
      const env = { ONMEMOS_CONFIG_DIR: dir, ONMEMOS_STATE_DIR: join(dir, 'state') };
      for (const args of [['ls'], ['config', 'get-contexts'], ['config', 'use-context', 'dev']]) {
        const r = await cli(args, env);
        expect(r.code, args.join(' ')).toBe(1);
        expect(r.stderr).toBe(
          `onmemos: cannot read the onmemos config file ${join(dir, 'config.json')}: it is not valid JSON (fix or remove it; --local works without it)\n`,
        );
      }
      const local = await cli(['--local', 'ls'], env);
      expect(local.code).toBe(0);
      expect(local.stderr).toBe('');
      expect(readFileSync(join(dir, 'config.json'), 'utf8')).toBe('{nope');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('set-context refuses a server that is not an http(s) URL: one line, exit 2, nothing written', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'onmemos-badurl-'));
    try {
      const env = { ONMEMOS_CONFIG_DIR: join(dir, 'onmemos') };
      const r = await cli(['config', 'set-context', 'dev', '--server', 'not a url'], env);
      expect(r.code).toBe(2);
      expect(r.stderr).toBe('onmemos: invalid server URL "not a url": Invalid URL\n');
      for (const server of ['ftp://example.com', 'file:///etc/passwd', 'javascript:alert(1)']) {
        const s = await cli(['config', 'set-context', 'dev', '--server', server], env);
        expect(s.code, server).toBe(2);
        expect(s.stderr).toMatch(/^onmemos: invalid server URL .*: it must be http:\/\/ or https:\/\//);
        expect(s.stderr.trim().split('\n')).toHaveLength(1);
      }
      expect(existsSync(join(dir, 'onmemos', 'config.json'))).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('the server and expiry', () => {
  it('removes an expired session within a minute, with no client call', async () => {
    const created = await run(['create', '--ttl', '0.03'], { env: { ONMEMOS_SERVER: url, ONMEMOS_API_KEY: KEY } });
    const id = created.stdout.trim();
    // Watch the server's state directory rather than ask the server (a request would reap it itself).
    const dir = join(state.path, 'local', 'sessions', id);
    expect(existsSync(dir)).toBe(true);
    expect(await waitFor(() => !existsSync(dir), 60_000, 250)).toBe(true);
    expect((await fetch(`${url}/v1/sessions/${id}`, { headers: { 'x-api-key': KEY } })).status).toBe(404);
  });
});
