/** `onmemos agent`'s settings from its command line and environment (pure), and the command in the CLI. */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { agentSettings } from '../../src/agent/cloud-main.js';
import { runCli } from '../../src/cli.js';
import { FakeProvider, fakeDeps } from '../helpers/fake-provider.js';

const SECRET = 'a-session-secret-0123456789';
const ROOT = { uid: 0, gid: 0 };
const PASSWD = 'root:x:0:0:root:/root:/bin/bash\nana:x:1234:4321:Ana:/home/ana:/bin/bash\n';
const settings = (argv: string[], env: NodeJS.ProcessEnv, self = ROOT) => {
  const s = agentSettings(argv, env, self, () => PASSWD);
  if (s === 'help') throw new Error('help');
  return s;
};

describe('onmemos agent settings', () => {
  it('listens on --port, else $PORT, else 8080, on 0.0.0.0 unless --host', () => {
    expect(settings([], { ONMEMOS_AGENT_SECRET: SECRET })).toMatchObject({ port: 8080, host: '0.0.0.0' });
    expect(settings([], { ONMEMOS_AGENT_SECRET: SECRET, PORT: '9000' }).port).toBe(9000);
    expect(
      settings(['--port', '0', '--host', '127.0.0.1'], { ONMEMOS_AGENT_SECRET: SECRET, PORT: '9000' }),
    ).toMatchObject({ port: 0, host: '127.0.0.1' });
    expect(settings(['--port=7'], { ONMEMOS_AGENT_SECRET: SECRET }).port).toBe(7);
    for (const argv of [['--port', '65536'], ['--port', '-1'], ['--port'], ['extra'], ['--nope']]) {
      expect(() => settings(argv, { ONMEMOS_AGENT_SECRET: SECRET }), argv.join(' ')).toThrow();
    }
    expect(agentSettings(['--help'], {})).toBe('help');
    expect(agentSettings(['-h'], {})).toBe('help');
  });

  it('keeps only the SHA-256 of the secret, from either variable; refuses no secret, both, or a weak one', () => {
    const digest = createHash('sha256').update(SECRET).digest();
    expect(settings([], { ONMEMOS_AGENT_SECRET: SECRET }).secretSha256).toEqual(digest);
    expect(settings([], { ONMEMOS_AGENT_SECRET_SHA256: digest.toString('hex').toUpperCase() }).secretSha256).toEqual(
      digest,
    );
    expect(settings(['--insecure-no-secret'], {}).secretSha256).toBeNull();
    expect(settings(['--insecure-no-secret'], { ONMEMOS_AGENT_SECRET: '' }).secretSha256).toBeNull();
    expect(() => settings([], {})).toThrow(/no session secret/);
    expect(() => settings([], { ONMEMOS_AGENT_SECRET: SECRET, ONMEMOS_AGENT_SECRET_SHA256: 'a'.repeat(64) })).toThrow(
      /not both/,
    );
    expect(() => settings(['--insecure-no-secret'], { ONMEMOS_AGENT_SECRET: SECRET })).toThrow(/choose one/);
    expect(() => settings([], { ONMEMOS_AGENT_SECRET: 'short' })).toThrow(/16 characters/);
    expect(() => settings([], { ONMEMOS_AGENT_SECRET_SHA256: 'g'.repeat(64) })).toThrow(/64 hex digits/);
  });

  it('as root, drops to ONMEMOS_AGENT_USER (1000 by default) with the workspace as HOME', () => {
    const env = { ONMEMOS_AGENT_SECRET: SECRET, HOME: '/root' };
    expect(settings([], env)).toMatchObject({ runAs: { uid: 1000, gid: 1000 }, workdir: '/workspace' });
    expect(settings([], env).env.HOME).toBe('/workspace');
    expect(settings([], { ...env, ONMEMOS_AGENT_USER: '2000:3000', ONMEMOS_WORKSPACE: '/w' })).toMatchObject({
      runAs: { uid: 2000, gid: 3000 },
      workdir: '/w',
      env: { HOME: '/w' },
    });
    expect(settings([], { ...env, ONMEMOS_AGENT_USER: 'ana' })).toMatchObject({
      runAs: { uid: 1234, gid: 4321 },
      env: { HOME: '/home/ana' },
    });
    // root (by name or number) keeps commands as root.
    for (const u of ['root', '0']) expect(settings([], { ...env, ONMEMOS_AGENT_USER: u }).runAs).toBeUndefined();
    expect(() => settings([], { ...env, ONMEMOS_AGENT_USER: 'nobody-here' })).toThrow(/no such user/);
    expect(() => settings([], { ...env, ONMEMOS_WORKSPACE: 'relative' })).toThrow(/absolute/);
  });

  it('as another user, runs commands as itself, and says so when told to switch', () => {
    const me = { uid: 1000, gid: 1000 };
    const env = { ONMEMOS_AGENT_SECRET: SECRET, HOME: '/home/me' };
    expect(settings([], env, me).runAs).toBeUndefined();
    expect(settings([], env, me).env.HOME).toBe('/home/me');
    expect(settings([], { ...env, ONMEMOS_AGENT_USER: '1000' }, me).runAs).toBeUndefined();
    expect(() => settings([], { ...env, ONMEMOS_AGENT_USER: '2000' }, me)).toThrow(/cannot switch users/);
  });

  it("gives commands the environment without the agent's own variables and the platform's", () => {
    const s = settings([], {
      ONMEMOS_AGENT_SECRET: SECRET,
      ONMEMOS_AGENT_USER: '1000',
      ONMEMOS_WORKSPACE: '/workspace',
      PORT: '8080',
      K_SERVICE: 's',
      K_REVISION: 'r',
      K_CONFIGURATION: 'c',
      WORKSPACE_ID: 'ws-a-b-1',
      NAMESPACE: 'a',
      USER: 'b',
      BUCKET_NAME: 'onmemos-a-b-1',
      PATH: '/usr/bin:/bin',
    });
    expect(s.env).toEqual({
      ONMEMOS_WORKSPACE: '/workspace',
      WORKSPACE_ID: 'ws-a-b-1',
      NAMESPACE: 'a',
      USER: 'b',
      BUCKET_NAME: 'onmemos-a-b-1',
      PATH: '/usr/bin:/bin',
      HOME: '/workspace',
    });
  });
});

describe('onmemos agent in the CLI', () => {
  it("is listed in --help with an example, and its --help is the agent's own", async () => {
    const deps = fakeDeps(new FakeProvider());
    expect(await runCli(['--help'], deps)).toBe(0);
    expect(deps.stdout.text).toMatch(/\n {2}agent \[options\.\.\.\] +serve exec and shell inside a workspace/);
    expect(deps.stdout.text).toMatch(/onmemos agent --port 8080/);
    const d2 = fakeDeps(new FakeProvider());
    expect(await runCli(['agent', '--help'], d2)).toBe(0);
    expect(d2.stdout.text).toMatch(/^Usage: onmemos agent \[--port N\]/);
    expect(d2.stdout.text).toContain('X-OnMemOS-Secret');
  });

  it('refuses to start without a secret: one line, exit 2', async () => {
    const deps = fakeDeps(new FakeProvider());
    deps.env = { ONMEMOS_WORKSPACE: '/proc/onmemos-no-workspace' };
    expect(await runCli(['agent', '--port', '0'], deps)).toBe(2);
    expect(deps.stderr.text).toMatch(/^onmemos agent: no session secret: .*\n$/);
  });
});
