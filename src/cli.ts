/**
 * The onmemos CLI. `main` parses and runs one command and returns the exit code or throws; `runCli` also
 * reports errors (one line, or JSON with --json; a stack only with --debug). Only bin/onmemos.js exits.
 */
import { Command, CommanderError } from 'commander';
import type { CliDeps, Ctx } from './commands/context.js';
import { createCommand } from './commands/create.js';
import { execCommand } from './commands/exec.js';
import { getCommand } from './commands/get.js';
import { lsCommand } from './commands/ls.js';
import { rmCommand } from './commands/rm.js';
import { serveCommand } from './commands/serve.js';
import { shellCommand } from './commands/shell.js';
import { OnmemosError } from './errors.js';
import { VERSION } from './version.js';

export { defaultRegistry } from './providers/index.js';

/** Commands whose own failures exit 125, so they never collide with the remote command's exit codes. */
const PASS_THROUGH_EXIT = new Set(['exec', 'shell']);

export async function main(argv: string[], deps: CliDeps): Promise<number> {
  let exitCode = 0;
  const debug = argv.includes('--debug') || deps.env.ONMEMOS_LOG === 'debug';
  const ctx = (): Ctx => ({ ...deps, debug });
  const setExit = (c: number) => {
    exitCode = c;
  };
  const program = new Command('onmemos')
    .description('Disposable, isolated workspaces (sessions): create one, run commands in it, open a shell, remove it.')
    .version(VERSION, '-V, --version')
    .option('--debug', 'show stack traces and debug detail on errors')
    .enablePositionalOptions()
    .showSuggestionAfterError()
    .exitOverride()
    .configureOutput({
      writeOut: (s) => deps.stdout.write(s),
      writeErr: (s) => deps.stderr.write(s),
      outputError: () => {}, // runCli reports errors in one place, in one format
    })
    .addHelpText(
      'after',
      `
Examples:
  id=$(onmemos create --provider auto)
  onmemos exec "$id" -- python3 -c 'print(6*7)'
  onmemos shell "$id"
  onmemos ls
  onmemos rm "$id"

Run 'onmemos <command> --help' for a command's options. Exit codes: see the README.`,
    );
  for (const cmd of [
    createCommand(ctx),
    execCommand(ctx, setExit),
    shellCommand(ctx, setExit),
    lsCommand(ctx),
    getCommand(ctx),
    rmCommand(ctx),
    serveCommand(ctx),
  ]) {
    // addCommand does not pass settings down: output routing, exitOverride and positional options.
    program.addCommand(cmd.copyInheritedSettings(program));
  }
  await program.parseAsync(argv, { from: 'user' });
  return exitCode;
}

function commandOf(argv: string[]): string | undefined {
  return argv.find((a) => !a.startsWith('-'));
}

/** Runs main and turns any error into its report and exit code. */
export async function runCli(argv: string[], deps: CliDeps): Promise<number> {
  const verb = commandOf(argv);
  const json = argv.includes('--json');
  const debug = argv.includes('--debug') || deps.env.ONMEMOS_LOG === 'debug';
  try {
    return await main(argv, deps);
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help') {
        return 0;
      }
      // One line, suggestions included ("unknown command 'crate' (Did you mean create?)").
      const message = e.message.replace(/^error: /, '').replace(/\s*\n\s*/g, ' ');
      report(deps, json, 'usage', message, undefined, debug ? e : undefined);
      return verb && PASS_THROUGH_EXIT.has(verb) ? 125 : 2;
    }
    const err = e instanceof OnmemosError ? e : undefined;
    const message = err ? err.message : e instanceof Error ? e.message : String(e);
    report(deps, json, err?.code ?? 'internal', message, err?.hint, debug || !err ? e : undefined);
    if (verb && PASS_THROUGH_EXIT.has(verb)) return 125;
    return err?.exitCode ?? 1;
  }
}

function report(deps: CliDeps, json: boolean, code: string, message: string, hint?: string, detail?: unknown): void {
  if (json) {
    deps.stderr.write(`${JSON.stringify({ error: { code, message, ...(hint ? { hint } : {}) } })}\n`);
  } else {
    deps.stderr.write(`onmemos: ${message}${hint ? ` (${hint})` : ''}\n`);
  }
  if (detail instanceof Error && detail.stack) {
    deps.stderr.write(`${detail.stack}\n`);
    if (detail.cause instanceof Error && detail.cause.stack) deps.stderr.write(`caused by: ${detail.cause.stack}\n`);
  }
}
