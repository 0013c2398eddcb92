/**
 * The onmemos CLI. `main` parses and runs one command and returns the exit code or throws; `runCli` also
 * reports errors (one line, or JSON with --json; a stack only with --debug). Only bin/onmemos.js exits.
 */
import { Command, CommanderError } from 'commander';
import { agentCommand } from './commands/agent.js';
import { checkCommand } from './commands/check.js';
import { configCommand } from './commands/config.js';
import { connectCommand } from './commands/connect.js';
import type { CliDeps, Ctx } from './commands/context.js';
import { createCommand } from './commands/create.js';
import { dashCommand } from './commands/dash.js';
import { doctorCommand } from './commands/doctor.js';
import { execCommand } from './commands/exec.js';
import { getCommand } from './commands/get.js';
import { extendCommand, startCommand, stopCommand } from './commands/lifecycle.js';
import { lsCommand } from './commands/ls.js';
import { openCommand } from './commands/open.js';
import { rmCommand } from './commands/rm.js';
import { serveCommand } from './commands/serve.js';
import { shellCommand } from './commands/shell.js';
import { tunnelCommand } from './commands/tunnel.js';
import { OnmemosError, UserError } from './errors.js';
import { type ProviderRegistry, remoteRegistry } from './providers/index.js';
import { VERSION } from './version.js';

export { defaultRegistry } from './providers/index.js';

/** Commands whose own failures exit 125, so they never collide with the remote command's exit codes. */
const PASS_THROUGH_EXIT = new Set(['exec', 'shell']);

/**
 * Local or remote mode: --local forces local; else --server, ONMEMOS_SERVER, or the current saved context sends
 * every command to that onmemos server (its key from --api-key, ONMEMOS_API_KEY, or the context).
 */
async function resolveRegistry(
  deps: CliDeps,
  o: { server?: string; apiKey?: string; local?: boolean },
): Promise<ProviderRegistry> {
  if (o.local) return deps.registry;
  const { remoteTarget } = await import('./config.js');
  const target = await remoteTarget(deps.env, o);
  return target ? remoteRegistry({ server: target.server, apiKey: target.apiKey }) : deps.registry;
}

/** Commands that always work on this machine, whatever server is configured (and look at no provider first). */
const ALWAYS_LOCAL = new Set(['serve', 'config', 'agent', 'doctor']);
/**
 * Commands that do not sweep the machine's expired sessions first: those that run something in one session (the one
 * they name is still checked: an expired session is removed and not found, registry.locate), and rm, which removes
 * what it names, expired or not. The others do.
 */
const ONE_SESSION = new Set(['exec', 'shell', 'tunnel', 'rm']);

export async function main(argv: string[], deps: CliDeps): Promise<number> {
  let exitCode = 0;
  const debug = argv.includes('--debug') || deps.env.ONMEMOS_LOG === 'debug';
  let registry = deps.registry;
  // Not a spread: deps' stdio may be getters (bin/onmemos.js), each made only by the command that uses it.
  const ctx = (): Ctx =>
    Object.defineProperties({} as Ctx, {
      ...Object.getOwnPropertyDescriptors(deps),
      registry: { value: registry, enumerable: true },
      debug: { value: debug, enumerable: true },
    });
  const setExit = (c: number) => {
    exitCode = c;
  };
  const program = new Command('onmemos')
    .description('Disposable, isolated workspaces (sessions): create one, run commands in it, open a shell, remove it.')
    .version(VERSION, '-V, --version')
    .option('--debug', 'show stack traces and debug detail on errors')
    .option('--server <url>', 'use this onmemos server (remote mode; also ONMEMOS_SERVER or a saved context)')
    .option('--api-key <key>', 'API key for the server (also ONMEMOS_API_KEY)')
    .option('--local', 'local mode, whatever server or context is configured')
    .option('--context <name>', 'Kubernetes context for the gke provider (also GKE_CONTEXT; default: the current one)')
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
  onmemos agent --port 8080          # inside a workspace container (images/); needs ONMEMOS_AGENT_SECRET_SHA256

Run 'onmemos <command> --help' for a command's options. Exit codes: see the README.`,
    );
  program.hook('preAction', async (_program, action) => {
    const top = action.parent === program ? action : action.parent;
    if (ALWAYS_LOCAL.has(top?.name() ?? '')) return;
    const o = program.opts();
    registry = await resolveRegistry(deps, o);
    if (o.context !== undefined) {
      if (!registry.withEnv)
        throw new UserError('--context chooses a Kubernetes context in local mode; the server has its own');
      if (!/^[^\0\n]{1,253}$/.test(o.context))
        throw new UserError('--context must be a context name from the kubeconfig');
      registry = registry.withEnv({ GKE_CONTEXT: o.context });
      const gke = registry.kinds().find((k) => k.kind === 'gke');
      if (gke && !gke.configured) throw new UserError(`--context ${o.context}: ${gke.reason}`);
    }
    // In local mode the CLI removes what has expired on this machine before it looks (the server has a reaper);
    // create looks at no other session, and sweeps only when no onmemos has lately.
    if (registry.withEnv && !ONE_SESSION.has(top?.name() ?? ''))
      await registry.reapExpired({ kinds: ['local'], ifDue: top?.name() === 'create' }).catch(() => {});
  });
  // The command that runs is the only one made (making them all is ~1.5 ms of every start-up); without one (help,
  // a misspelt name) all are, for the help text and the suggestions.
  const verb = commandOf(argv);
  const named = COMMANDS.find((c) => c.names.includes(verb ?? ''));
  for (const c of named ? [named] : COMMANDS) {
    // addCommand does not pass settings down: output routing, exitOverride and positional options.
    const cmd = c.make(ctx, setExit).copyInheritedSettings(program);
    // The agent parses its own options, --help included (bin/onmemos.js runs it without this parser).
    program.addCommand(c.names[0] === 'agent' ? cmd.helpOption(false) : cmd);
  }
  await program.parseAsync(argv, { from: 'user' });
  return exitCode;
}

type MakeCommand = (ctx: () => Ctx, setExit: (c: number) => void) => Command;

/** Every command, with its aliases, in the order the help lists them. */
const COMMANDS: { names: string[]; make: MakeCommand }[] = [
  { names: ['create'], make: createCommand },
  { names: ['exec'], make: execCommand },
  { names: ['shell'], make: shellCommand },
  { names: ['ls', 'list'], make: lsCommand },
  { names: ['dash'], make: dashCommand },
  { names: ['get'], make: getCommand },
  { names: ['connect'], make: connectCommand },
  { names: ['open'], make: openCommand },
  { names: ['tunnel'], make: tunnelCommand },
  { names: ['rm', 'delete'], make: rmCommand },
  { names: ['start'], make: startCommand },
  { names: ['stop'], make: stopCommand },
  { names: ['extend'], make: extendCommand },
  { names: ['serve'], make: serveCommand },
  { names: ['config'], make: configCommand },
  { names: ['doctor'], make: doctorCommand },
  { names: ['check'], make: checkCommand },
  { names: ['agent'], make: agentCommand },
];

/** The global options that take a value (the command name is the first argument that is neither). */
const GLOBAL_VALUE_OPTIONS = new Set(['--server', '--api-key', '--context']);

function commandOf(argv: string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') return undefined;
    if (GLOBAL_VALUE_OPTIONS.has(a)) i++;
    else if (!a.startsWith('-')) return a;
  }
  return undefined;
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
      // commander quotes the offending argument: a huge one (a 128 KiB --env) is cut, so the line stays a line.
      const message = e.message
        .replace(/^error: /, '')
        .replace(/\s*\n\s*/g, ' ')
        .replace(/'([^']{60})[^']{20,}'/g, "'$1…'");
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
