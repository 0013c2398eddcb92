/** The whole CLI in-process (runCli), against a fake provider: parsing, output formats, exit codes, errors. */
import { describe, expect, it } from 'vitest';
import { runCli } from '../../src/cli.js';
import { FakeProvider, fakeDeps, fakeRegistry } from '../helpers/fake-provider.js';

async function cli(args: string[], p = new FakeProvider(), input = '') {
  const deps = fakeDeps(p, input);
  const code = await runCli(args, deps);
  return { code, out: deps.stdout.text, err: deps.stderr.text, p };
}

describe('onmemos (in-process)', () => {
  it('create prints the id; --json prints the document response fields', async () => {
    const p = new FakeProvider();
    const a = await cli(['create', '--namespace', 'team-a', '--user', 'alice'], p);
    expect(a.code).toBe(0);
    expect(a.out).toMatch(/^ws-team-a-alice-\d+-[0-9a-z]{4}\n$/);
    const b = await cli(['create', '--json', '--env', 'A=1', '--env', 'B=x=y', '--ttl', '5'], p);
    const s = JSON.parse(b.out);
    for (const k of ['id', 'provider', 'namespace', 'user', 'status', 'url', 'websocket', 'ssh', 'details']) {
      expect(s).toHaveProperty(k);
    }
    expect(s.details.env).toEqual({ A: '1', B: 'x=y' });
    expect(Date.parse(s.expires_at) - Date.parse(s.created_at)).toBe(5 * 60_000);
    expect(p.sessions.size).toBe(2);
  });

  it('rejects bad names, TTLs and env before anything is made, in one line, exit 2', async () => {
    for (const args of [
      ['create', '--namespace', 'Team_A'],
      ['create', '--user', 'a..b'],
      ['create', '--ttl', '0'],
      ['create', '--ttl', 'abc'],
      ['create', '--env', 'NOEQUALS'],
      ['create', '--provider', 'aws'],
      ['create', '--template', 'cobol'],
      ['create', '--network', 'wide'],
    ]) {
      const r = await cli(args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.err.trim().split('\n'), args.join(' ')).toHaveLength(1);
      expect(r.err).toMatch(/^onmemos: /);
      expect(r.p.sessions.size).toBe(0);
    }
  });

  it('rejects an environment too large for exec: create exits 2, exec 125, nothing is made or run', async () => {
    const p = new FakeProvider();
    const big = `BIG=${'x'.repeat(128 * 1024)}`;
    const half = 'x'.repeat(100_000);
    for (const args of [
      ['create', '--env', big],
      ['create', '--env', `A=${half}`, '--env', `B=${half}`, '--env', `C=${half}`],
    ]) {
      const r = await cli(args, p);
      expect(r.code).toBe(2);
      expect(r.err).toMatch(/^onmemos: .*(131071 bytes|262144 bytes)/);
      expect(r.err.trim().split('\n')).toHaveLength(1);
      expect(r.err.length).toBeLessThan(400);
    }
    expect(p.sessions.size).toBe(0);
    const id = (await cli(['create'], p)).out.trim();
    for (const env of [[big], [`A=${half}`, `B=${half}`, `C=${half}`]]) {
      const r = await cli(['exec', ...env.flatMap((e) => ['-e', e]), id, '--', 'true'], p);
      expect(r.code).toBe(125);
      expect(r.err).toMatch(/^onmemos: .*(131071 bytes|262144 bytes)/);
      expect(r.err.trim().split('\n')).toHaveLength(1);
    }
    expect(p.execs).toHaveLength(0);
  });

  it('usage errors are one line, with a suggestion where there is one', async () => {
    const r = await cli(['crate']);
    expect(r.code).toBe(2);
    expect(r.err).toBe("onmemos: unknown command 'crate' (Did you mean create?)\n");
  });

  it('errors are JSON with --json', async () => {
    const r = await cli(['get', 'ws-nope-x-1-abcd', '--json']);
    expect(r.code).toBe(1);
    expect(JSON.parse(r.err)).toMatchObject({
      error: { code: 'not_found', message: expect.stringContaining('ws-nope-x-1-abcd') },
    });
  });

  it('shows a stack only with --debug', async () => {
    const plain = await cli(['get', 'ws-nope-x-1-abcd']);
    expect(plain.err).not.toMatch(/\n\s+at /);
    const debug = await cli(['--debug', 'get', 'ws-nope-x-1-abcd']);
    expect(debug.err).toMatch(/\n\s+at /);
  });

  it('ls prints a table or JSON, filtered', async () => {
    const p = new FakeProvider();
    await cli(['create', '--namespace', 'a', '--user', 'u'], p);
    await cli(['create', '--namespace', 'b', '--user', 'u'], p);
    const t = await cli(['ls'], p);
    expect(t.out.split('\n')[0]).toMatch(/^ID\s+PROVIDER\s+NAMESPACE\s+USER\s+STATUS\s+AGE\s+EXPIRES/);
    expect(t.out.trim().split('\n')).toHaveLength(3);
    const j = JSON.parse((await cli(['ls', '--json', '--namespace', 'b'], p)).out);
    expect(j.map((s: { namespace: string }) => s.namespace)).toEqual(['b']);
  });

  it('get shows one session', async () => {
    const p = new FakeProvider();
    const id = (await cli(['create'], p)).out.trim();
    expect((await cli(['get', id], p)).out).toMatch(new RegExp(`^id:\\s+${id}$`, 'm'));
    expect(JSON.parse((await cli(['get', id, '--json'], p)).out).id).toBe(id);
  });

  it('rm: unknown id is exit 1 unless --force; --all narrows by namespace', async () => {
    const p = new FakeProvider();
    const id = (await cli(['create', '--namespace', 'a'], p)).out.trim();
    const other = (await cli(['create', '--namespace', 'b'], p)).out.trim();
    const miss = await cli(['rm', 'ws-none-x-1-abcd'], p);
    expect(miss.code).toBe(1);
    expect(miss.err).toMatch(/no such session/);
    expect((await cli(['rm', '--force', 'ws-none-x-1-abcd'], p)).code).toBe(0);
    expect((await cli(['rm'], p)).code).toBe(2);
    expect((await cli(['rm', '--all', id], p)).code).toBe(2);
    const all = await cli(['rm', '--all', '--namespace', 'a', '--json'], p);
    expect(JSON.parse(all.out)).toEqual({ removed: [id], missing: [] });
    expect([...p.sessions.keys()]).toEqual([other]);
    expect((await cli(['rm', other], p)).out.trim()).toBe(other);
  });

  it('exec passes argv exactly, pipes stdin with EOF and exits with the remote code', async () => {
    const p = new FakeProvider();
    const id = (await cli(['create'], p)).out.trim();
    const r = await cli(
      ['exec', id, '--', 'sh', '-c', 'wc -l; printf "%s|" "$@"; exit 7', 'sh', 'a b', '-c', '--'],
      p,
      'x\ny\n',
    );
    expect(r.code).toBe(7);
    expect(r.out).toBe('2\na b|-c|--|');
    expect(p.execs[0]!.argv).toEqual(['sh', '-c', 'wc -l; printf "%s|" "$@"; exit 7', 'sh', 'a b', '-c', '--']);
    expect(p.execs[0]!.stdin).toBe(true);
    expect(p.execs[0]!.tty).toBe(false);
  });

  it('exec options: -e, -w, and 125 for its own errors', async () => {
    const p = new FakeProvider();
    const id = (await cli(['create'], p)).out.trim();
    const r = await cli(['exec', '-e', 'X=1', '-e', 'Y=a=b', '-w', '/tmp', id, '--', 'true'], p);
    expect(r.code).toBe(0);
    expect(p.execs[0]).toMatchObject({ env: { X: '1', Y: 'a=b' }, cwd: '/tmp', argv: ['true'] });
    expect((await cli(['exec', 'ws-nope-x-1-abcd', '--', 'true'], p)).code).toBe(125);
    expect((await cli(['exec', id], p)).code).toBe(125);
    expect((await cli(['exec', '-w', 'rel', id, '--', 'true'], p)).code).toBe(125);
    expect((await cli(['exec', '--timeout', 'x', id, '--', 'true'], p)).code).toBe(125);
  });

  it('exec options after the id, before a --; the command after it exactly', async () => {
    const p = new FakeProvider();
    const id = (await cli(['create'], p)).out.trim();
    const last = () => p.execs[p.execs.length - 1]!;
    // After the id, with a --
    let r = await cli(['exec', id, '-e', 'X=1', '--env=Y=2', '-w', '/tmp', '-T', '--', 'sh', '-c', 'exit 3'], p);
    expect(r.code).toBe(3);
    expect(last()).toMatchObject({ env: { X: '1', Y: '2' }, cwd: '/tmp', tty: false, argv: ['sh', '-c', 'exit 3'] });
    // Before the id (unchanged)
    expect((await cli(['exec', '-e', 'X=1', '-w', '/tmp', id, '--', 'true'], p)).code).toBe(0);
    expect(last()).toMatchObject({ env: { X: '1' }, cwd: '/tmp', argv: ['true'] });
    // Mixed: -e adds up, a later option wins
    r = await cli(['exec', '-e', 'A=1', '-w', '/tmp', id, '-eB=2', '-w', '/', '--', 'true'], p);
    expect(r.code).toBe(0);
    expect(last()).toMatchObject({ env: { A: '1', B: '2' }, cwd: '/', argv: ['true'] });
    // A -- inside the command is the command's
    expect((await cli(['exec', id, '-w', '/', '--', 'printf', '%s|', '--', '-e', '--timeout'], p)).out).toBe(
      '--|-e|--timeout|',
    );
    expect(last().argv).toEqual(['printf', '%s|', '--', '-e', '--timeout']);
    // `exec ID -- --timeout` runs a command named --timeout
    await cli(['exec', id, '--', '--timeout', '1'], p);
    expect(last().argv).toEqual(['--timeout', '1']);
    // Without a --, everything after the id is the command, as with docker exec
    expect((await cli(['exec', id, 'sh', '-c', 'echo "$@"', 'sh', '-e', '--', '-w'], p)).out).toBe('-e -- -w\n');
    expect(last().argv).toEqual(['sh', '-c', 'echo "$@"', 'sh', '-e', '--', '-w']);
  });

  it('exec --timeout after the id kills the command and exits 124', async () => {
    const p = new FakeProvider();
    const id = (await cli(['create'], p)).out.trim();
    expect((await cli(['exec', id, '--timeout', '0.2', '--', 'sleep', '30'], p)).code).toBe(124);
  });

  it('exec refuses its own options after the id without a --, and checks them as before the id, exit 125', async () => {
    const p = new FakeProvider();
    const id = (await cli(['create'], p)).out.trim();
    for (const opts of [
      ['--timeout', '1'],
      ['-e', 'X=1'],
      ['--env=X=1'],
      ['-w', '/tmp'],
      ['-t'],
      ['-T'],
      ['-it'],
      ['-i'],
      ['--workdir', '/'],
    ]) {
      const r = await cli(['exec', id, ...opts, 'sleep', '5'], p);
      expect(r.code, opts.join(' ')).toBe(125);
      expect(r.err).toBe(
        'onmemos: options after the id need a -- before the command (onmemos exec <id> [options] -- <command> [args...])\n',
      );
    }
    for (const [args, message] of [
      [
        ['--timeout', 'x'],
        /^onmemos: option '--timeout <seconds>' argument 'x' is invalid\. expected a positive number of seconds\n$/,
      ],
      [['-e', 'NOEQUALS'], /^onmemos: option .*--env <KEY=VALUE>.* argument 'NOEQUALS' is invalid/],
      [['--bogus'], /^onmemos: unknown option '--bogus'/],
      [
        ['--timeout', '1', 'sleep'],
        /^onmemos: unexpected argument "sleep": between the id and the -- only exec options/,
      ],
      [['-w'], /^onmemos: option '-w, --workdir <dir>' argument missing\n$/],
      [['-w', 'rel'], /^onmemos: --workdir must be an absolute path/],
    ] as const) {
      const r = await cli(['exec', id, ...args, '--', 'true'], p);
      expect(r.code, args.join(' ')).toBe(125);
      expect(r.err, args.join(' ')).toMatch(message);
      expect(r.err.trim().split('\n')).toHaveLength(1);
    }
    // The same errors as before the id
    const before = await cli(['exec', '--timeout', 'x', id, '--', 'true'], p);
    const after = await cli(['exec', id, '--timeout', 'x', '--', 'true'], p);
    expect(after.err).toBe(before.err);
    expect(p.execs).toHaveLength(0);
  });

  it('exec --timeout kills the command and exits 124', async () => {
    const p = new FakeProvider();
    const id = (await cli(['create'], p)).out.trim();
    const r = await cli(['exec', '--timeout', '0.2', id, '--', 'sleep', '30'], p);
    expect(r.code).toBe(124);
  });

  it('--help explains, --version prints the version', async () => {
    const h = await cli(['--help']);
    expect(h.code).toBe(0);
    for (const verb of ['create', 'exec', 'shell', 'ls', 'get', 'rm']) expect(h.out).toContain(verb);
    const eh = await cli(['exec', '--help']);
    expect(eh.out).toMatch(/124 on --timeout/);
    const v = await cli(['--version']);
    expect(v.out.trim()).toMatch(/^\d+\.\d+\.\d+/);
  });
});

describe('create interrupted', () => {
  it('SIGINT during a create aborts it, removes what was made and exits 130', async () => {
    const p = new FakeProvider({ createMs: 400 });
    const deps = fakeDeps(p);
    const run = runCli(['create', '--json'], deps);
    await new Promise((r) => setTimeout(r, 150));
    expect(p.sessions.size).toBe(1); // half made
    deps.signals.emit('SIGINT');
    expect(await run).toBe(130);
    expect(JSON.parse(deps.stderr.text).error).toMatchObject({
      code: 'interrupted',
      message: expect.stringMatching(/^interrupted: session ws-\S+ was removed$/),
    });
    expect(deps.stdout.text).toBe('');
    expect(p.sessions.size).toBe(0);
  });
});

describe('lifecycle verbs, connect and ls across providers', () => {
  it('extend, stop and start through the provider that holds the session', async () => {
    const p = new FakeProvider();
    const id = (await cli(['create'], p)).out.trim();
    const ext = await cli(['extend', id, '--ttl', '90', '--json'], p);
    expect(ext.code).toBe(0);
    expect(Date.parse(JSON.parse(ext.out).expires_at)).toBeGreaterThan(Date.now() + 89 * 60_000);
    expect(JSON.parse((await cli(['stop', id, '--json'], p)).out).status).toBe('stopped');
    const refused = await cli(['exec', id, '--', 'true'], p);
    expect(refused.code).toBe(125);
    expect(refused.err).toMatch(/^onmemos: session \S+ is not running \(stopped\)/);
    expect(JSON.parse((await cli(['start', id, '--json'], p)).out).status).toBe('running');
    expect((await cli(['extend', id], p)).code).toBe(2); // --ttl is required
  });

  it('a provider without stop/start refuses in one line, exit 2', async () => {
    const p = new FakeProvider({ capabilities: { lifecycle: { start: false, stop: false, extend: false } } });
    const id = (await cli(['create'], p)).out.trim();
    for (const verb of ['stop', 'start']) {
      const r = await cli([verb, id], p);
      expect(r.code).toBe(2);
      expect(r.err).toBe(
        `onmemos: provider local cannot ${verb} a session (its sessions run until they are removed or expire)\n`,
      );
    }
    const j = await cli(['extend', id, '--ttl', '5', '--json'], p);
    expect(JSON.parse(j.err).error).toEqual({ code: 'unsupported', message: 'provider local cannot extend a session' });
  });

  it('connect prints the ConnectInfo', async () => {
    const p = new FakeProvider();
    const id = (await cli(['create'], p)).out.trim();
    const j = JSON.parse((await cli(['connect', id, '--json'], p)).out);
    expect(j).toMatchObject({ id, provider: 'local', status: 'running', shell: { argv: ['/bin/sh'] }, ssh: null });
    expect((await cli(['connect', id], p)).out).toMatch(/^id: +ws-\S+\nprovider: +local\nstatus: +running\n/);
  });

  it('ls names an unreachable provider on stderr and lists the others', async () => {
    const local = new FakeProvider();
    const gke = new FakeProvider({ kind: 'gke' });
    gke.list = async () => {
      throw new Error('the cluster did not answer');
    };
    const deps = fakeDeps(local);
    deps.registry = fakeRegistry(local, gke);
    await runCli(['create'], deps);
    deps.stdout.chunks.length = 0;
    expect(await runCli(['ls', '--json'], deps)).toBe(0);
    expect(JSON.parse(deps.stdout.text)).toHaveLength(1);
    expect(deps.stderr.text).toBe('onmemos: warning: gke not listed: the cluster did not answer\n');
    local.dispose();
    gke.dispose();
  });
});
