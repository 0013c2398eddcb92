/**
 * `onmemos dash`: the sessions of `onmemos ls` on a live, keyboard-driven screen (dash-ui.ts). This file owns the
 * terminal: the alternate screen, raw mode and the cursor are given back on every way out (q, Ctrl-C, SIGTERM,
 * SIGHUP, an error), and around each `onmemos shell` it runs, so ink and the shell never read stdin together.
 */
import type { ChildProcess } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import { Command, InvalidArgumentError, Option } from 'commander';
import { UserError } from '../errors.js';
import { binPath } from '../paths.js';
import type { SessionFilter } from '../session/model.js';
import type { Ctx } from './context.js';
import type { DashView } from './dash-ui.js';
import { parseNamespace, parseSeconds, parseUser } from './options.js';
import { removeSessions } from './rm.js';

const signalNumbers = osConstants.signals as unknown as Record<string, number>;
const ALT_SCREEN_ON = '\x1b[?1049h';
const ALT_SCREEN_OFF = '\x1b[?1049l';
const SHOW_CURSOR = '\x1b[?25h';

/** The global options a shell opened from the dashboard needs to reach the same sessions. */
export interface DashGlobals {
  server?: string;
  apiKey?: string;
  local?: boolean;
  context?: string;
  debug?: boolean;
}

export interface DashOptions {
  filter: SessionFilter;
  intervalSeconds: number;
  globals: DashGlobals;
}

/** Runs the dashboard until it is left; resolves with the exit code (0 after q or Ctrl-C, 128+N after signal N). */
export async function runDash(ctx: Ctx, o: DashOptions): Promise<number> {
  const stdin = ctx.stdin as NodeJS.ReadStream;
  const stdout = ctx.stdout as NodeJS.WriteStream;
  if (!stdin.isTTY || !stdout.isTTY) {
    throw new UserError('dash needs a terminal; use onmemos ls (--json) in scripts');
  }
  const ui = await import('./dash-ui.js');
  const deps = await ui.loadInk();

  let onScreen = false;
  const enter = () => {
    stdout.write(ALT_SCREEN_ON);
    onScreen = true;
  };
  /** Gives the terminal back as it was: cooked mode, the cursor shown, the main screen. Safe to repeat. */
  const leave = () => {
    if (stdin.isTTY) stdin.setRawMode?.(false);
    stdin.pause();
    stdout.write(SHOW_CURSOR + (onScreen ? ALT_SCREEN_OFF : ''));
    onScreen = false;
  };

  let signalled: NodeJS.Signals | undefined;
  let screen: { unmount: () => void } | undefined;
  let child: ChildProcess | undefined;
  const cleanups: (() => void)[] = [];
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const handler = () => {
      // A shell that is open gets Ctrl-C through its own tty; other signals end it, then the dashboard.
      if (child) {
        if (sig !== 'SIGINT') {
          signalled ??= sig;
          child.kill(sig);
        }
        return;
      }
      signalled ??= sig;
      screen?.unmount();
    };
    ctx.signals.on(sig, handler);
    cleanups.push(() => ctx.signals.off(sig, handler));
  }
  // An error nothing caught ends the process without the finally below: give the terminal back on the way out.
  const onExit = () => leave();
  ctx.signals.on('exit', onExit);
  cleanups.push(() => ctx.signals.off('exit', onExit));

  const mode = ctx.registry.withEnv ? 'local mode' : `remote mode${o.globals.server ? ` (${o.globals.server})` : ''}`;
  let view: DashView = { filter: '' };
  try {
    while (!signalled) {
      enter();
      const s = ui.renderDash(
        deps,
        { stdin, stdout, stderr: ctx.stderr as NodeJS.WriteStream },
        {
          list: () => ctx.registry.list(o.filter),
          remove: async (id) => {
            const r = await removeSessions(ctx, [id]);
            return r.removed.length ? `removed ${id}` : `${id} was already gone`;
          },
          intervalMs: o.intervalSeconds * 1000,
          mode,
          now: () => ctx.now?.() ?? Date.now(),
          view,
        },
      );
      screen = s;
      const exit = await s.done;
      screen = undefined;
      leave();
      if (signalled || exit?.kind !== 'shell') break;
      const code = await openShell(exit.id);
      view = { ...exit.view, message: `shell in ${exit.id} exited ${code}` };
    }
  } finally {
    screen?.unmount();
    leave();
    for (const c of cleanups.reverse()) c();
  }
  return signalled ? 128 + (signalNumbers[signalled] ?? 1) : 0;

  /** `onmemos shell <id>` as a child of the same CLI, on this terminal, with the same server or local choice. */
  async function openShell(id: string): Promise<number> {
    const g = o.globals;
    const args = [
      binPath(),
      ...(g.local ? ['--local'] : []),
      ...(g.context !== undefined ? ['--context', g.context] : []),
      ...(g.debug ? ['--debug'] : []),
      'shell',
      id,
    ];
    // The server and key go by the environment, where other users' `ps` cannot read the key.
    const env = {
      ...ctx.env,
      ...(g.server !== undefined ? { ONMEMOS_SERVER: g.server } : {}),
      ...(g.apiKey !== undefined ? { ONMEMOS_API_KEY: g.apiKey } : {}),
    };
    // Loaded here, not at the top: every command's start-up would pay for it.
    const { spawn } = await import('node:child_process');
    return new Promise((resolve) => {
      const c = spawn(process.execPath, args, { stdio: 'inherit', env });
      child = c;
      c.once('error', (e) => {
        child = undefined;
        ctx.stderr.write(`onmemos: cannot start onmemos shell: ${e.message}\n`);
        resolve(125);
      });
      c.once('exit', (code, sig) => {
        child = undefined;
        resolve(code ?? 128 + (signalNumbers[sig ?? ''] ?? 1));
      });
    });
  }
}

function parseInterval(v: string): number {
  const n = parseSeconds(v);
  if (n < 0.2) throw new InvalidArgumentError('expected at least 0.2 seconds');
  return n;
}

export function dashCommand(ctx: () => Ctx, setExit: (code: number) => void): Command {
  return new Command('dash')
    .description('a live terminal dashboard of the sessions: filter, open a shell, remove')
    .option('--namespace <name>', 'only this namespace', parseNamespace)
    .option('--user <name>', 'only this user', parseUser)
    .addOption(
      new Option('--provider <provider>', 'only this provider').choices(['local', 'cloud_run', 'gke', 'workstations']),
    )
    .option('--interval <seconds>', 'refresh every this many seconds, at least 0.2 (default 2)', parseInterval, 2)
    .addHelpText(
      'after',
      `
The table of onmemos ls, refreshed. Keys:
  ↑/↓ or j/k   move the selection
  /            filter rows by id, namespace, user, provider or status (Enter keeps it, Esc clears it)
  Enter        open onmemos shell in the selected session; leaving the shell comes back here
  d            remove the selected session (asks remove <id>? y/N)
  r            refresh now
  q, Ctrl-C    quit
Needs a terminal (stdin and stdout); in scripts use onmemos ls --json.
Exit status: 0 after q or Ctrl-C; 2 without a terminal or on a bad option; 128+N after signal N; 1 if the
sessions cannot be listed at all.

Examples:
  onmemos dash
  onmemos dash --namespace team-a --interval 5
  onmemos --server http://127.0.0.1:8080 dash`,
    )
    .action(async (o, cmd: Command) => {
      const g = cmd.optsWithGlobals() as DashGlobals;
      setExit(
        await runDash(ctx(), {
          filter: { namespace: o.namespace, user: o.user, provider: o.provider },
          intervalSeconds: o.interval,
          globals: { server: g.server, apiKey: g.apiKey, local: g.local, context: g.context, debug: g.debug },
        }),
      );
    });
}
