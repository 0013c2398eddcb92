/** End to end through a real pty (node-pty): tty detection, the interactive shell, keys, resize, restore. */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import type * as pty from 'node-pty';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, cliShell, StateDir, waitFor } from '../helpers/cli.js';
import { spawnPty } from '../helpers/pty.js';

const state = new StateDir();
let id = '';
beforeAll(async () => {
  id = await state.create('--user', 'pty');
});
afterAll(() => state.cleanup());

/** A process in a pty, with its output collected and bounded waits on it. */
class Term {
  readonly p: pty.IPty;
  out = '';
  exit: Promise<{ exitCode: number; signal?: number }>;
  constructor(file: string, args: string[], cols = 90, rows = 25) {
    this.p = spawnPty(
      file,
      args,
      {
        cols,
        rows,
        name: 'xterm-256color',
        env: { ...process.env, ...state.env, TERM: 'xterm-256color' } as Record<string, string>,
      },
      (d) => {
        this.out += d;
      },
    );
    this.exit = new Promise((r) => this.p.onExit(r));
  }
  /** Waits (bounded) until the output after `from` matches. */
  async expect(re: RegExp, from = 0): Promise<void> {
    const ok = await waitFor(() => re.test(this.out.slice(from)), 15_000, 20);
    if (!ok) throw new Error(`timed out waiting for ${re}; output so far:\n${this.out.slice(from)}`);
  }
  /** The exit, bounded: on a hang the error shows the screen. */
  async exited(ms = 15_000): Promise<{ exitCode: number; signal?: number }> {
    let timer: NodeJS.Timeout | undefined;
    const hang = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no exit within ${ms} ms; output:\n${this.out}`)), ms);
    });
    try {
      return await Promise.race([this.exit, hang]);
    } finally {
      clearTimeout(timer);
      try {
        this.p.kill('SIGKILL'); // reaps it after a hang; a no-op once it has exited
      } catch {}
    }
  }
  mark(): number {
    return this.out.length;
  }
  write(s: string): void {
    this.p.write(s);
  }
}

const shell = (...extra: string[]) => new Term(CLI[0]!, [...CLI.slice(1), 'shell', id, ...extra]);
const prompt = /pty@ws-[^:]+:\/workspace\$ $/;

describe('exec in a terminal', () => {
  it('chooses a tty only when stdin and stdout are terminals', async () => {
    const t = new Term(CLI[0]!, [
      ...CLI.slice(1),
      'exec',
      id,
      '--',
      'sh',
      '-c',
      '[ -t 0 ] && [ -t 1 ] && echo is-a-tty; stty size',
    ]);
    expect((await t.exited()).exitCode).toBe(0);
    // The remote tty turns \n into \r\n; libuv's raw mode keeps ONLCR locally, so a CR may be doubled.
    expect(t.out).toMatch(/is-a-tty\r+\n25 90/);
    const piped = await state.run(['exec', id, '--', 'sh', '-c', '[ -t 1 ] && echo tty || echo no-tty']);
    expect(piped.stdout).toBe('no-tty\n');
    const forced = await state.run(['exec', '-t', id, '--', 'sh', '-c', '[ -t 1 ] && echo tty || echo no-tty']);
    expect(forced.stdout).toBe('tty\r\n');
    const never = new Term(CLI[0]!, [
      ...CLI.slice(1),
      'exec',
      '-T',
      id,
      '--',
      'sh',
      '-c',
      '[ -t 1 ] && echo tty || echo no-tty',
    ]);
    await never.exited();
    expect(never.out).toMatch(/no-tty/);
  });

  it("exec -t runs on a pty of the session's own devpts, with stdin not a terminal too", async () => {
    const script = 'tty; [ -t 0 ] && [ -t 1 ] && echo on-a-tty; stat -c %d /dev/pts; ls /dev/pts';
    const forced = await state.run(['exec', '-t', id, '--', 'sh', '-c', script]);
    expect(forced.code).toBe(0);
    const [path, onTty, dev, ...listing] = forced.stdout.split('\r\n');
    expect(path).toMatch(/^\/dev\/pts\/\d+$/);
    expect(onTty).toBe('on-a-tty');
    // A devpts instance of the session's own, not the host's: another device, holding only the session's ptys.
    expect(Number(dev)).not.toBe(statSync('/dev/pts').dev);
    expect(listing.join(' ').split(/\s+/)).toContain(path!.slice('/dev/pts/'.length));
    // The same from a terminal, through options after the id.
    const t = new Term(CLI[0]!, [...CLI.slice(1), 'exec', id, '-t', '--', 'tty']);
    expect((await t.exited()).exitCode).toBe(0);
    expect(t.out).toMatch(/^\/dev\/pts\/\d+\r+\n$/);
  });

  it('exits with the remote code under a tty too', async () => {
    const t = new Term(CLI[0]!, [...CLI.slice(1), 'exec', id, '--', 'sh', '-c', 'exit 5']);
    expect((await t.exited()).exitCode).toBe(5);
  });
});

describe('shell', () => {
  it('is a login bash with the window size, which follows resizes', async () => {
    const t = shell();
    await t.expect(prompt);
    let m = t.mark();
    t.write('shopt -q login_shell && echo "login $BASH"; stty size; tty\r');
    await t.expect(/login \/(usr\/)?bin\/bash\r+\n25 90\r+\n\/dev\/pts\/\d+\r+\n/, m);
    m = t.mark();
    t.p.resize(120, 40);
    await new Promise((r) => setTimeout(r, 200));
    t.write('stty size\r');
    await t.expect(/40 120\r+\n/, m);
    t.write('exit 3\r');
    expect((await t.exited()).exitCode).toBe(3);
  });

  it('Ctrl-C interrupts, Ctrl-Z suspends, Ctrl-D exits with 0', async () => {
    const t = shell();
    await t.expect(prompt);
    let m = t.mark();
    // The job prints "ready" once it is the terminal's foreground job; only then do the keys go to it.
    t.write("sh -c 'echo ready-c; exec sleep 100'; echo after-sleep\r");
    await t.expect(/ready-c\r+\n/, m);
    t.write('\x03');
    await t.expect(prompt, m);
    expect(t.out.slice(m)).not.toContain('after-sleep\r\n');
    m = t.mark();
    t.write("sh -c 'echo ready-z; exec sleep 101'\r");
    await t.expect(/ready-z\r+\n/, m);
    t.write('\x1a');
    await t.expect(/Stopped\s+sh -c/, m);
    m = t.mark();
    t.write('kill -9 %1; wait; jobs; echo no-jobs-left\r');
    await t.expect(/no-jobs-left\r+\n/, m);
    await t.expect(prompt, m);
    t.write('\x04');
    expect((await t.exited()).exitCode).toBe(0);
  });

  it('~. after a newline disconnects, exits 255, and the remote shell is gone', async () => {
    const t = shell();
    await t.expect(prompt);
    t.write('exec -a tilde-dot-shell bash\r');
    await t.expect(prompt, t.mark() - 1);
    await new Promise((r) => setTimeout(r, 200));
    t.write('\r~.');
    expect((await t.exited()).exitCode).toBe(255);
    expect(t.out).toMatch(/disconnected/);
    const left = await waitFor(async () => {
      const ps = await state.run(['exec', id, '--', 'sh', '-c', 'cat /proc/[0-9]*/cmdline | tr "\\0" " "']);
      return !ps.stdout.includes('tilde-dot-shell');
    });
    expect(left).toBe(true);
  });

  it('restores the local terminal on exit, on kill, and when the session is removed underneath', async () => {
    const own = await state.create('--user', 'pty');
    // A wrapper shell in the pty runs onmemos, then reports the terminal's mode.
    const check = () =>
      new Term('/bin/sh', [
        '-c',
        `${cliShell()} shell "$0"; echo "code=$?"; stty -a | grep -o -- '-*icanon' | head -1`,
        own,
      ]);

    const exited = check();
    await exited.expect(prompt);
    exited.write('exit 0\r');
    await exited.exited();
    expect(exited.out).toMatch(/code=0\r+\nicanon/);

    const killed = check();
    await killed.expect(prompt);
    const onmemos = await waitFor(() => findChild(killed.p.pid));
    process.kill(onmemos!, 'SIGTERM');
    await killed.exited();
    expect(killed.out).toMatch(/code=143\r+\nicanon/);

    const removed = check();
    await removed.expect(prompt);
    expect((await state.run(['rm', own])).code).toBe(0);
    await removed.exited();
    expect(removed.out).toMatch(/code=\d+\r+\nicanon/);
    expect(removed.out).not.toMatch(/code=0\r/);
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
