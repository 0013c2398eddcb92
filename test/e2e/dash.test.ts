/**
 * `onmemos dash` end to end: the built binary in a real pty (node-pty), on real local sandboxes and through a real
 * `onmemos serve`. Each test runs the dashboard under a wrapper shell that, once onmemos has exited, prints its exit
 * code and the pty's terminal modes, so "the terminal is restored" is read from the terminal itself.
 * Each test lists only its own namespace, so the tests do not depend on each other's order.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type * as pty from 'node-pty';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliShell, run, StateDir, waitFor } from '../helpers/cli.js';
import { spawnPty } from '../helpers/pty.js';
import { type Served, startServe } from '../helpers/serve.js';

const state = new StateDir();
beforeAll(() => state.start());
afterAll(() => state.cleanup());

/** The environment of a terminal: no CI variables (ink draws only the last frame when it thinks it runs in CI). */
function termEnv(extra: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...process.env, ...extra, TERM: 'xterm-256color' })) {
    if (v !== undefined && k !== 'CI' && k !== 'CONTINUOUS_INTEGRATION' && !k.startsWith('CI_')) env[k] = v;
  }
  return env;
}

const ANSI = /\x1b\[[0-9;?]*[A-Za-z]/g;
const RESTORED = 'code=';

/** `onmemos dash ARGS` in a pty under a wrapper shell that reports the exit code and the terminal's modes after. */
class Dash {
  readonly p: pty.IPty;
  out = '';
  exited = false;
  /** `args` follow `dash`; `globals` (--server URL) come before it. */
  constructor(args: string[], o: { env?: Record<string, string>; globals?: string[]; redirect?: string } = {}) {
    const script = `${cliShell()} "$@" ${o.redirect ?? ''}; echo "${RESTORED}$?"; stty -a | tr ' ;' '\\n\\n' | grep -xE -- '-?(icanon|echo)' | tr '\\n' ' '; echo modes-end; read -r _`;
    this.p = spawnPty(
      '/bin/sh',
      ['-c', script, 'sh', ...(o.globals ?? []), 'dash', ...args],
      { cols: 120, rows: 30, name: 'xterm-256color', env: termEnv(o.env ?? state.env) },
      (d) => {
        this.out += d;
      },
    );
    this.p.onExit(() => {
      this.exited = true;
    });
  }
  /** The output after `from`, without escape sequences. */
  text(from = 0): string {
    return this.out.slice(from).replace(ANSI, '');
  }
  /** The last frame drawn (ink redraws the whole screen; each frame starts with the title line). */
  frame(): string {
    const t = this.text();
    return t.slice(t.lastIndexOf('onmemos dash ·'));
  }
  async expect(re: RegExp, from = 0): Promise<void> {
    const ok = await waitFor(() => re.test(this.text(from)), 20_000, 20);
    if (!ok) throw new Error(`timed out waiting for ${re}; output so far:\n${JSON.stringify(this.out.slice(from))}`);
  }
  mark(): number {
    return this.out.length;
  }
  write(s: string): void {
    this.p.write(s);
  }
  /** The onmemos under the wrapper shell. */
  async pid(): Promise<number> {
    const pid = await waitFor(() => findChild(this.p.pid));
    if (!pid) throw new Error('no onmemos process under the wrapper shell');
    return pid;
  }
  /**
   * Waits (bounded) for the wrapper's report; returns onmemos' exit code and the terminal's modes after it. The
   * wrapper then waits for a line, so its output is all read before it exits (node-pty may drop the last output
   * of a process that has exited).
   */
  async done(ms = 20_000): Promise<{ code: number; modes: string[] }> {
    try {
      const reported = await waitFor(() => this.out.includes('modes-end'), ms, 20);
      if (!reported) throw new Error(`no report within ${ms} ms; screen:\n${this.text()}`);
      this.write('\r');
      await waitFor(() => this.exited, 5_000, 20);
    } finally {
      try {
        this.p.kill('SIGKILL'); // reaps the wrapper after a hang; a no-op once it has exited
      } catch {}
    }
    const m = /code=(\d+)\r?\n([^\n]*)modes-end/.exec(this.out);
    if (!m) throw new Error(`the wrapper did not report; output:\n${this.out}`);
    return { code: Number(m[1]), modes: m[2]!.trim().split(/\s+/) };
  }
  /** What onmemos itself wrote before the wrapper's report. */
  beforeReport(): string {
    return this.out.slice(0, this.out.lastIndexOf(RESTORED));
  }
}

/** The terminal as a shell leaves it: cooked (icanon), echoing, the cursor shown, the main screen back. */
function expectRestored(d: Dash, modes: string[]): void {
  expect(modes).toEqual(['icanon', 'echo']);
  const tail = d.beforeReport();
  expect(tail.lastIndexOf('\x1b[?25h')).toBeGreaterThan(tail.lastIndexOf('\x1b[?25l'));
  expect(tail.lastIndexOf('\x1b[?1049l')).toBeGreaterThan(tail.lastIndexOf('\x1b[?1049h'));
}

async function sessionsIn(namespace: string, env = state.env): Promise<string[]> {
  const r = await run(['ls', '--namespace', namespace, '--json'], { env });
  if (r.code !== 0) throw new Error(`ls failed (${r.code}): ${r.stderr}`);
  return (JSON.parse(r.stdout) as { id: string }[]).map((s) => s.id);
}

describe('onmemos dash in a terminal (local mode)', () => {
  it('lists the sessions, filters with /, and q quits 0 with the terminal restored', async () => {
    const alice = await state.create('--namespace', 'dash-list', '--user', 'alice');
    const bob = await state.create('--namespace', 'dash-list', '--user', 'bob');
    const d = new Dash(['--namespace', 'dash-list', '--interval', '0.5']);
    await d.expect(/2 sessions/);
    await d.expect(new RegExp(`${bob}\\s+local\\s+dash-list\\s+bob\\s+running`));
    expect(d.frame()).toContain(alice);
    expect(d.frame()).toMatch(/q quit/);

    let m = d.mark();
    d.write('/');
    await d.expect(/type to filter/, m);
    d.write('bob');
    await d.expect(/1 of 2 sessions match \/bob/, m);
    expect(d.frame()).toContain(bob);
    expect(d.frame()).not.toContain(alice);
    m = d.mark();
    d.write('\r'); // keeps the filter
    await d.expect(/Enter shell/, m);
    expect(d.frame()).toMatch(/1 of 2 sessions match \/bob/);
    m = d.mark();
    d.write('\x1b'); // clears it
    await d.expect(/2 sessions ·/, m);
    expect(d.frame()).toContain(alice);

    d.write('q');
    const { code, modes } = await d.done();
    expect(code).toBe(0);
    expectRestored(d, modes);
  });

  it('Enter opens a shell in the selected session, and leaving it comes back to the dashboard', async () => {
    const first = await state.create('--namespace', 'dash-sh', '--user', 'first');
    const second = await state.create('--namespace', 'dash-sh', '--user', 'second');
    const d = new Dash(['--namespace', 'dash-sh']);
    await d.expect(new RegExp(`› ${first}|› ${second}`));
    const target = d.frame().includes(`› ${first}`) ? second : first;
    d.write(d.frame().includes(`› ${first}`) ? 'j' : 'k');
    await d.expect(new RegExp(`› ${target}`));
    let m = d.mark();
    d.write('\r');
    await d.expect(/:\/workspace\$ $/, m);
    d.write('echo "id=$WORKSPACE_ID"; exit\r');
    await d.expect(new RegExp(`id=${target}\\r*\\n`), m);
    await d.expect(new RegExp(`shell in ${target} exited 0`), m);
    await d.expect(/q quit/, m);
    // Back on the dashboard, the keys are its own again.
    m = d.mark();
    d.write('/');
    await d.expect(/type to filter/, m);
    d.write('\x03'); // Ctrl-C quits, even while filtering
    const { code, modes } = await d.done();
    expect(code).toBe(0);
    expectRestored(d, modes);
  });

  it('d asks first: n keeps the session, y removes it (and ls agrees)', async () => {
    const id = await state.create('--namespace', 'dash-rm', '--user', 'rm');
    const d = new Dash(['--namespace', 'dash-rm']);
    await d.expect(new RegExp(`› ${id}`));
    let m = d.mark();
    d.write('d');
    await d.expect(new RegExp(`remove ${id}\\? y/N`), m);
    d.write('n');
    await d.expect(new RegExp(`kept ${id}`), m);
    expect(await sessionsIn('dash-rm')).toEqual([id]);
    m = d.mark();
    d.write('d');
    await d.expect(new RegExp(`remove ${id}\\? y/N`), m);
    d.write('y');
    await d.expect(new RegExp(`removed ${id}`), m);
    await d.expect(/no sessions/, m);
    expect(await sessionsIn('dash-rm')).toEqual([]);
    d.write('q');
    const { code, modes } = await d.done();
    expect(code).toBe(0);
    expectRestored(d, modes);
  });

  it.each([
    ['SIGTERM', 143],
    ['SIGHUP', 129],
  ] as const)('%s ends it with 128+N and the terminal restored', async (sig, expected) => {
    const d = new Dash(['--namespace', 'dash-signals']);
    await d.expect(/no sessions/);
    process.kill(await d.pid(), sig);
    const { code, modes } = await d.done();
    expect(code).toBe(expected);
    expectRestored(d, modes);
  });

  it('SIGTERM while a shell is open ends the shell, then the dashboard, with the terminal restored', async () => {
    await state.create('--namespace', 'dash-sig-sh', '--user', 'sig');
    const d = new Dash(['--namespace', 'dash-sig-sh']);
    await d.expect(/› ws-/);
    const m = d.mark();
    d.write('\r');
    await d.expect(/:\/workspace\$ $/, m);
    process.kill(await d.pid(), 'SIGTERM');
    const { code, modes } = await d.done();
    expect(code).toBe(143);
    expectRestored(d, modes);
  });

  it('without a terminal it says so in one line and exits 2', async () => {
    const piped = await state.run(['dash']);
    expect(piped.code).toBe(2);
    expect(piped.stdout).toBe('');
    expect(piped.stderr).toBe('onmemos: dash needs a terminal; use onmemos ls (--json) in scripts\n');
    // stdout a terminal, stdin not.
    const d = new Dash([], { redirect: '</dev/null' });
    const { code, modes } = await d.done();
    expect(code).toBe(2);
    expect(modes).toEqual(['icanon', 'echo']);
    expect(d.text()).toContain('onmemos: dash needs a terminal; use onmemos ls (--json) in scripts');
    expect(d.out).not.toContain('\x1b[?1049h');
  });

  it('--help explains the keys', async () => {
    const r = await state.run(['dash', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/Enter\s+open onmemos shell/);
    expect(r.stdout).toMatch(/q, Ctrl-C\s+quit/);
    expect(r.stdout).toMatch(/onmemos dash --namespace team-a/);
  });

  it('loads ink and react only for dash', async () => {
    // A preload reports, at exit, which of react's files the process loaded (ink imports react as it loads).
    const dir = mkdtempSync(join(tmpdir(), 'onmemos-dash-probe-'));
    try {
      const probe = join(dir, 'probe.cjs');
      const report = join(dir, 'report');
      writeFileSync(
        probe,
        `process.on('exit', () => require('node:fs').appendFileSync(${JSON.stringify(report)}, process.argv.slice(2).join(' ') + ':' + Object.keys(require.cache).filter((k) => /node_modules[\\\\/](react|ink)[\\\\/]/.test(k)).length + '\\n'));`,
      );
      const env = { ...state.env, NODE_OPTIONS: `--require ${probe}` };
      expect((await run(['--version'], { env })).code).toBe(0);
      expect((await run(['ls'], { env })).code).toBe(0);
      const d = new Dash(['--namespace', 'dash-probe'], { env });
      await d.expect(/no sessions/);
      d.write('q');
      expect((await d.done()).code).toBe(0);
      const lines = readFileSync(report, 'utf8').trim().split('\n');
      expect(lines).toHaveLength(3);
      expect(lines[0]).toBe('--version:0');
      expect(lines[1]).toBe('ls:0');
      expect(lines[2]).toMatch(/^dash --namespace dash-probe:[1-9]/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('onmemos dash in remote mode (a real onmemos serve)', () => {
  const KEY = 'dash-remote-key-0123456789abcdef';
  const dir = mkdtempSync(join(tmpdir(), 'onmemos-dash-serve-'));
  let served: Served | undefined;
  let env: Record<string, string> = {};
  beforeAll(async () => {
    served = await startServe({ ONMEMOS_STATE_DIR: dir, ONMEMOS_API_KEYS: KEY });
    // The client's own state directory is another one: only the server sees the sessions.
    env = { ONMEMOS_STATE_DIR: state.path, ONMEMOS_SERVER: served.url, ONMEMOS_API_KEY: KEY };
  });
  afterAll(async () => {
    if (served) {
      await run(['rm', '--all'], { env });
      await served.stop();
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('lists, opens a shell and comes back, removes, and quits restored', async () => {
    const created = await run(['create', '--ttl', '10', '--namespace', 'dash-remote', '--user', 'far'], { env });
    expect(created.code).toBe(0);
    const id = created.stdout.trim();
    // --server as a flag, as a person types it: the shell dash opens must reach the same server.
    const d = new Dash(['--namespace', 'dash-remote'], {
      env: { ...env, ONMEMOS_SERVER: '' },
      globals: ['--server', served!.url],
    });
    await d.expect(/remote mode/);
    await d.expect(new RegExp(`› ${id}\\s+local\\s+dash-remote\\s+far`));
    let m = d.mark();
    d.write('\r');
    await d.expect(/:\/workspace\$ $/, m);
    d.write('echo "id=$WORKSPACE_ID"; exit\r');
    await d.expect(new RegExp(`id=${id}\\r*\\n`), m);
    await d.expect(new RegExp(`shell in ${id} exited 0`), m);
    m = d.mark();
    d.write('d');
    await d.expect(/y\/N/, m);
    d.write('y');
    await d.expect(new RegExp(`removed ${id}`), m);
    await d.expect(/no sessions/, m);
    expect(await sessionsIn('dash-remote', env)).toEqual([]);
    d.write('q');
    const { code, modes } = await d.done();
    expect(code).toBe(0);
    expectRestored(d, modes);
  });

  it('a server that refuses the key: one error line, exit 1, the terminal restored', async () => {
    const d = new Dash(['--namespace', 'dash-remote'], { env: { ...env, ONMEMOS_API_KEY: 'not-the-key-0123456789' } });
    const { code, modes } = await d.done();
    expect(code).toBe(1);
    expectRestored(d, modes);
    expect(d.text(d.beforeReport().lastIndexOf('\x1b[?1049l'))).toMatch(/onmemos: invalid API key.*\r*\n/);
  });
});

/** The pid of a direct child process of `ppid` (the onmemos under the wrapper shell). */
function findChild(ppid: number): number | undefined {
  for (const p of readdirSync('/proc')) {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === ppid) return Number(p);
    } catch {}
  }
  return undefined;
}
