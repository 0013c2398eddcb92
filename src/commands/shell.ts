import { Command } from 'commander';
import { UnsupportedError, UserError } from '../errors.js';
import { validateSessionId } from '../session/model.js';
import { attach } from '../tty/attach.js';
import { type Ctx, locate } from './context.js';

/** An interactive login shell in a session, through a real pty; `~.` after a newline disconnects. */
export async function openShell(ctx: Ctx, id: string, workdir?: string): Promise<number> {
  const { provider } = await locate(ctx, validateSessionId(id));
  const info = await provider.connect(id);
  if (!provider.capabilities.shell || !info.shell) {
    throw new UnsupportedError(`provider ${provider.kind} has no interactive shell`);
  }
  const argv = info.shell.argv;
  const start = () =>
    provider.exec(id, {
      argv,
      cwd: workdir,
      tty: true,
      stdin: true,
      cols: ctx.stdout.columns ?? 80,
      rows: ctx.stdout.rows ?? 24,
      term: ctx.env.TERM,
    });
  const interactive = !!ctx.stdin.isTTY;
  return attach(ctx, start, { tty: true, stdin: true, raw: interactive, escape: interactive, signals: ctx.signals });
}

export function shellCommand(ctx: () => Ctx, setExit: (code: number) => void): Command {
  return new Command('shell')
    .description('open an interactive login shell in a session (bash if present, else sh)')
    .argument('<id>', 'session id')
    .option('-w, --workdir <dir>', 'starting directory (default /workspace)')
    .addHelpText(
      'after',
      `
The shell gets a real tty: window size follows your terminal; Ctrl-C, Ctrl-Z and Ctrl-D reach it.
Type ~. at the start of a line to disconnect (as in ssh), ~~ for a literal ~.
Exit status: the shell's own (exit 3 gives 3); 255 after ~.; 125 if onmemos itself failed.

Examples:
  onmemos shell "$id"`,
    )
    .action(async (id: string, o) => {
      if (o.workdir !== undefined && !String(o.workdir).startsWith('/')) {
        throw new UserError('--workdir must be an absolute path');
      }
      setExit(await openShell(ctx(), id, o.workdir));
    });
}
