import { Command, Option } from 'commander';
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

/**
 * `kubectl exec -it` into a gke session's pod, with the session's context, namespace and container, running
 * GKE_SHELL: for those who want kubectl's own client. Exits with kubectl's exit code.
 */
async function kubectlShell(ctx: Ctx, id: string): Promise<number> {
  const { provider, session } = await locate(ctx, validateSessionId(id));
  if (provider.kind !== 'gke')
    throw new UnsupportedError(`--via kubectl needs a gke session; ${id} is on ${provider.kind}`);
  const info = await provider.connect(id);
  const d = session.details as { context?: string; k8s_namespace?: string; pod?: string };
  if (!d.context || !d.k8s_namespace || !d.pod || !info.shell)
    throw new UnsupportedError(`session ${id} has no pod to exec into`);
  const tty = ctx.stdin.isTTY ? ['-it'] : ['-i'];
  const argv = [
    'exec',
    ...tty,
    '--context',
    d.context,
    '-n',
    d.k8s_namespace,
    d.pod,
    '-c',
    'workspace',
    '--',
    ...info.shell.argv,
  ];
  const kubectl = ctx.env.KUBECTL || 'kubectl';
  const { spawn } = await import('node:child_process'); // not at the top: every command's start-up would pay
  return new Promise((resolve, reject) => {
    const child = spawn(kubectl, argv, { stdio: 'inherit', env: ctx.env });
    child.once('error', (e) =>
      reject(
        new UnsupportedError(`cannot run ${kubectl}: ${e.message}`, { hint: 'install kubectl, or drop --via kubectl' }),
      ),
    );
    child.once('exit', (code, signal) =>
      resolve(code ?? 128 + (signal === 'SIGINT' ? 2 : signal === 'SIGTERM' ? 15 : 1)),
    );
  });
}

export function shellCommand(ctx: () => Ctx, setExit: (code: number) => void): Command {
  return new Command('shell')
    .description('open an interactive login shell in a session (bash if present, else sh)')
    .argument('<id>', 'session id')
    .option('-w, --workdir <dir>', 'starting directory (default /workspace)')
    .addOption(
      new Option(
        '--via <client>',
        "open the shell with another client: kubectl runs this machine's kubectl exec -it (gke)",
      ).choices(['kubectl']),
    )
    .addHelpText(
      'after',
      `
The shell gets a real tty: window size follows your terminal; Ctrl-C, Ctrl-Z and Ctrl-D reach it.
Type ~. at the start of a line to disconnect (as in ssh), ~~ for a literal ~.
Exit status: the shell's own (exit 3 gives 3); 255 after ~.; 125 if onmemos itself failed.

Examples:
  onmemos shell "$id"
  onmemos shell "$id" --via kubectl     # gke: kubectl exec -it with the session's context, namespace and pod`,
    )
    .action(async (id: string, o) => {
      if (o.workdir !== undefined && !String(o.workdir).startsWith('/')) {
        throw new UserError('--workdir must be an absolute path');
      }
      if (o.via === 'kubectl') {
        if (o.workdir !== undefined) throw new UserError('--workdir is not available with --via kubectl');
        setExit(await kubectlShell(ctx(), id));
        return;
      }
      setExit(await openShell(ctx(), id, o.workdir));
    });
}
