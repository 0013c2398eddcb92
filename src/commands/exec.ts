import { Command, Option } from 'commander';
import { UserError } from '../errors.js';
import type { ExecSpec } from '../exec/process.js';
import { checkExecSpec } from '../providers/provider.js';
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
  via?: 'job';
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
  const stdinTty = !ctx.stdinIsNull && !!ctx.stdin.isTTY;
  const job = o.via === 'job';
  // A job reads no stdin and has no tty: neither is chosen for it by default, and asking for one is refused.
  const tty = o.tty ?? (!job && stdinTty && !!ctx.stdout.isTTY);
  // stdin from /dev/null is not attached: the command reads EOF from the session's own /dev/null instead.
  const stdin = !!o.interactive || tty || (!job && !stdinTty && !ctx.stdinIsNull);
  if (tty && !provider.capabilities.tty) throw new UserError(`provider ${provider.kind} cannot allocate a tty`);
  const spec: ExecSpec = {
    argv,
    env: o.env,
    cwd: o.workdir,
    tty,
    stdin,
    // The size and name of the terminal matter only with a tty (and stdout is made only where it is used).
    ...(tty ? { cols: ctx.stdout.columns, rows: ctx.stdout.rows, term: ctx.env.TERM } : {}),
    ...(job ? { via: 'job' as const, timeoutSeconds: o.timeout } : {}),
    // This process's own stdout and stderr, which the local provider may give to the command itself where they are
    // pipes (ExecSpec.outputFds: no copy through onmemos); every other provider ignores them.
    ...(tty || job || !ctx.outputFds ? {} : { outputFds: ctx.outputFds }),
  };
  checkExecSpec(provider.kind, provider.capabilities, spec);
  const start = () => provider.exec(id, spec);
  return attach(ctx, start, {
    tty,
    stdin,
    raw: tty && stdinTty,
    escape: false,
    timeoutSeconds: o.timeout,
    signals: ctx.signals,
  });
}

/** exec's own options, defined once: on the command (before the id) and for the tokens after the id (before `--`). */
function execOptions(): Option[] {
  return [
    new Option('-e, --env <KEY=VALUE>', 'set an environment variable (repeatable)').argParser(collectEnv),
    new Option('-w, --workdir <dir>', 'working directory inside the session (default /workspace)'),
    new Option('-t, --tty', 'allocate a tty (default: when stdin and stdout are terminals)'),
    new Option('-T, --no-tty', 'never allocate a tty'),
    new Option('-i, --interactive', 'attach stdin even when it is a terminal'),
    new Option(
      '--timeout <seconds>',
      'kill the command (and everything it started) after this long; exit 124',
    ).argParser(parseSeconds),
    new Option(
      '--via <transport>',
      'job: run it once as a Cloud Run job beside the session (cloud_run; no stdin or tty; output in Cloud Logging)',
    ).choices(['job']),
  ];
}

const USAGE = 'onmemos exec <id> [options] -- <command> [args...]';

/** Whether a token after the id names one of exec's own options (`--timeout`, `--env=X`, `-it`, `-eK=V`, ...). */
function isExecOption(token: string): boolean {
  if (!token.startsWith('-') || token === '-' || token === '--') return false;
  const flag = token.startsWith('--') ? token.split('=')[0]! : token.slice(0, 2);
  return execOptions().some((o) => o.short === flag || o.long === flag);
}

/**
 * Splits what follows the id into exec options and the command. `<id> [options] -- <command>`: the tokens before
 * the `--` are exec options, parsed with the same definitions (and errors) as before the id, and everything after
 * it is the command, exactly. Without options after the id, everything is the command, as with docker exec
 * (`exec ID python3 -c ...`, `exec ID git log -- file`); an exec option there without a `--` is refused.
 */
function splitAfterId(rest: string[], parent: Command): { argv: string[]; options: Record<string, unknown> } {
  // commander keeps the `--` that follows the id (with pass-through options it is an operand).
  if (rest[0] === '--') return { argv: rest.slice(1), options: {} };
  if (!rest[0]?.startsWith('-') || rest[0] === '-') return { argv: rest, options: {} };
  const sep = rest.indexOf('--');
  if (sep < 0) {
    if (isExecOption(rest[0])) {
      throw new UserError(`options after the id need a -- before the command (${USAGE})`, { code: 'usage' });
    }
    return { argv: rest, options: {} };
  }
  const sub = new Command('exec')
    .copyInheritedSettings(parent)
    .helpOption(false)
    .argument('[stray...]')
    .action(() => {});
  for (const o of execOptions()) sub.addOption(o);
  sub.parse(rest.slice(0, sep), { from: 'user' });
  const stray = sub.args[0];
  if (stray !== undefined) {
    throw new UserError(
      `unexpected argument ${JSON.stringify(stray)}: between the id and the -- only exec options may come (${USAGE})`,
      { code: 'usage' },
    );
  }
  return { argv: rest.slice(sep + 1), options: sub.opts() };
}

export function execCommand(ctx: () => Ctx, setExit: (code: number) => void): Command {
  const cmd = new Command('exec')
    .description('run a command in a session; exits with its exit code')
    .usage('[options] <id> [options] -- <command> [args...]')
    .argument('<id>', 'session id')
    .argument('[command...]', 'the command and its arguments, after --');
  for (const o of execOptions()) cmd.addOption(o);
  return cmd
    .passThroughOptions()
    .addHelpText(
      'after',
      `
Options go before or after the id; after it, a -- ends them. The command is passed exactly as given (never
re-split by a shell); use sh -c for shell syntax. Without a --, everything after the id is the command.
Exit status: the command's own; 128+N if it was killed by signal N; 124 on --timeout;
125 if onmemos itself failed; 126 if the command cannot run; 127 if it was not found.
With --via job (cloud_run), the job task's exit code (1 where Cloud Run reports none); the output is in Cloud
Logging, and stderr names the execution and its logUri.

Examples:
  onmemos exec "$id" -- pytest -q
  printf 'a\\nb\\n' | onmemos exec "$id" -- wc -l
  onmemos exec "$id" -e DEBUG=1 -w /workspace/app -- sh -c 'make && ./app'
  onmemos exec "$id" --timeout 30 -- ./long-job
  onmemos exec -it "$id" -- python3                # interactive, with a tty
  onmemos exec --via job "$id" -- python3 batch.py  # cloud_run: as a Cloud Run job, even with the agent down`,
    )
    .action(async (id: string, rest: string[], before: Record<string, unknown>, self: Command) => {
      const { argv, options: after } = splitAfterId(rest, self);
      // Options after the id come later on the line: they win, and -e adds to the variables given before it.
      const o = { ...before, ...after } as ExecOptions & { tty?: boolean };
      if (before.env || after.env) {
        o.env = { ...(before.env as Record<string, string>), ...(after.env as Record<string, string>) };
      }
      const tty = o.tty === false ? false : o.tty === true ? true : undefined;
      setExit(await execInSession(ctx(), id, argv, { ...o, tty }));
    });
}
