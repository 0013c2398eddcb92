import { Command } from 'commander';
import { UserError } from '../errors.js';
import { validateEnvTotal, validateSessionId } from '../session/model.js';
import { attach } from '../tty/attach.js';
import { type Ctx, locate } from './context.js';
import { collectEnv, parseSeconds } from './options.js';

export interface ExecOptions {
  env?: Record<string, string>;
  workdir?: string;
  tty?: boolean;
  interactive?: boolean;
  timeout?: number;
}

/**
 * Runs argv in a session and returns the exit code to exit with. A tty is used when asked (-t), or by default
 * when both stdin and stdout are terminals; stdin is attached with -i, with a tty, or when it is not a
 * terminal (a pipe or a file: `printf 'a\nb\n' | onmemos exec $id -- wc -l`).
 */
export async function execInSession(ctx: Ctx, id: string, argv: string[], o: ExecOptions): Promise<number> {
  if (argv.length === 0) throw new UserError('no command given: onmemos exec <id> -- <command> [args...]');
  if (o.workdir !== undefined && !o.workdir.startsWith('/')) {
    throw new UserError(`--workdir must be an absolute path, got ${JSON.stringify(o.workdir)}`);
  }
  if (o.env) validateEnvTotal(o.env);
  const { provider } = await locate(ctx, validateSessionId(id));
  const stdinTty = !!ctx.stdin.isTTY;
  const tty = o.tty ?? (stdinTty && !!ctx.stdout.isTTY);
  const stdin = !!o.interactive || tty || !stdinTty;
  if (tty && !provider.capabilities.tty) throw new UserError(`provider ${provider.kind} cannot allocate a tty`);
  const start = () =>
    provider.exec(id, {
      argv,
      env: o.env,
      cwd: o.workdir,
      tty,
      stdin,
      cols: ctx.stdout.columns,
      rows: ctx.stdout.rows,
      term: ctx.env.TERM,
    });
  return attach(ctx, start, {
    tty,
    stdin,
    raw: tty && stdinTty,
    escape: false,
    timeoutSeconds: o.timeout,
    signals: ctx.signals,
  });
}

export function execCommand(ctx: () => Ctx, setExit: (code: number) => void): Command {
  return new Command('exec')
    .description('run a command in a session; exits with its exit code')
    .argument('<id>', 'session id')
    .argument('[command...]', 'the command and its arguments, after --')
    .option('-e, --env <KEY=VALUE>', 'set an environment variable (repeatable)', collectEnv)
    .option('-w, --workdir <dir>', 'working directory inside the session (default /workspace)')
    .option('-t, --tty', 'allocate a tty (default: when stdin and stdout are terminals)')
    .option('-T, --no-tty', 'never allocate a tty')
    .option('-i, --interactive', 'attach stdin even when it is a terminal')
    .option(
      '--timeout <seconds>',
      'kill the command (and everything it started) after this long; exit 124',
      parseSeconds,
    )
    .passThroughOptions()
    .addHelpText(
      'after',
      `
The command is passed exactly as given (never re-split by a shell); use sh -c for shell syntax.
Exit status: the command's own; 128+N if it was killed by signal N; 124 on --timeout;
125 if onmemos itself failed; 126 if the command cannot run; 127 if it was not found.

Examples:
  onmemos exec "$id" -- pytest -q
  printf 'a\\nb\\n' | onmemos exec "$id" -- wc -l
  onmemos exec -e DEBUG=1 -w /workspace/app "$id" -- sh -c 'make && ./app'
  onmemos exec --timeout 30 "$id" -- ./long-job
  onmemos exec -it "$id" -- python3                # interactive, with a tty`,
    )
    .action(async (id: string, rest: string[], o) => {
      // With pass-through options commander keeps the `--` that separates the command: drop exactly one.
      const argv = rest[0] === '--' ? rest.slice(1) : rest;
      const tty = o.tty === false ? false : o.tty === true ? true : undefined;
      setExit(await execInSession(ctx(), id, argv, { ...o, tty }));
    });
}
