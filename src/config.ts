/**
 * Saved contexts (`onmemos config set-context`): a name, a server URL and its API key, stored with conf in
 * `$ONMEMOS_CONFIG_DIR` (else `$XDG_CONFIG_HOME/onmemos`, else `~/.config/onmemos`): the directory 0700, the file
 * 0600. conf is loaded only when the file exists, so a machine without contexts pays nothing at start-up.
 */
import { chmodSync, existsSync, mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { NotFoundError, UserError } from './errors.js';

export interface Context {
  server: string;
  apiKey?: string;
}

interface Stored {
  currentContext?: string;
  contexts: Record<string, Context>;
}

export function configDir(env: NodeJS.ProcessEnv): string {
  if (env.ONMEMOS_CONFIG_DIR) return env.ONMEMOS_CONFIG_DIR;
  return join(env.XDG_CONFIG_HOME || join(homedir(), '.config'), 'onmemos');
}

const FILE = 'config.json';

export function configFile(env: NodeJS.ProcessEnv): string {
  return join(configDir(env), FILE);
}

async function open(env: NodeJS.ProcessEnv) {
  const dir = configDir(env);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  const { default: Conf } = await import('conf');
  try {
    return new Conf<Stored>({ cwd: dir, configName: 'config', configFileMode: 0o600, defaults: { contexts: {} } });
  } catch (e) {
    // conf reads the file at once and throws its parser's error (a stack, for a typo): one line that says what to do.
    const why = e instanceof SyntaxError ? 'it is not valid JSON' : (e as Error).message.split('\n')[0];
    throw new UserError(`cannot read the onmemos config file ${configFile(env)}: ${why}`, {
      exitCode: 1,
      hint: 'fix or remove it; --local works without it',
    });
  }
}

export async function setContext(env: NodeJS.ProcessEnv, name: string, ctx: Context): Promise<void> {
  const conf = await open(env);
  conf.set(`contexts.${name}`, ctx);
  chmodSync(conf.path, 0o600);
}

export async function useContext(env: NodeJS.ProcessEnv, name: string): Promise<void> {
  const conf = await open(env);
  if (!conf.get('contexts')[name])
    throw new NotFoundError(`no such context: ${name}`, { hint: 'see onmemos config get-contexts' });
  conf.set('currentContext', name);
}

export async function deleteContext(env: NodeJS.ProcessEnv, name: string): Promise<void> {
  const conf = await open(env);
  const contexts = conf.get('contexts');
  if (!contexts[name]) throw new NotFoundError(`no such context: ${name}`);
  delete contexts[name];
  conf.set('contexts', contexts);
  if (conf.get('currentContext') === name) conf.delete('currentContext');
}

export async function readContexts(env: NodeJS.ProcessEnv): Promise<Stored> {
  if (!existsSync(configFile(env))) return { contexts: {} };
  const conf = await open(env);
  return { currentContext: conf.get('currentContext'), contexts: conf.get('contexts') };
}

/** The current context, if any (without loading conf when there is no config file). */
export async function currentContext(env: NodeJS.ProcessEnv): Promise<(Context & { name: string }) | undefined> {
  const stored = await readContexts(env);
  const name = stored.currentContext;
  const ctx = name ? stored.contexts[name] : undefined;
  return name && ctx ? { name, ...ctx } : undefined;
}

/** The server remote mode uses and its key, and where each came from (for messages). */
export interface RemoteTarget {
  server: string;
  apiKey?: string;
  /** `--server`, `ONMEMOS_SERVER`, or `context NAME`. */
  source: string;
}

/**
 * Remote mode's server and key, or undefined for local mode: --server, else ONMEMOS_SERVER, else the current saved
 * context; the key from --api-key, else ONMEMOS_API_KEY, else the context. (--local is the caller's to honour.)
 */
export async function remoteTarget(
  env: NodeJS.ProcessEnv,
  o: { server?: string; apiKey?: string },
): Promise<RemoteTarget | undefined> {
  const apiKey = o.apiKey ?? (env.ONMEMOS_API_KEY || undefined);
  const server = o.server ?? (env.ONMEMOS_SERVER || undefined);
  if (server) return { server, apiKey, source: o.server ? '--server' : 'ONMEMOS_SERVER' };
  const context = await currentContext(env);
  if (context) return { server: context.server, apiKey: apiKey ?? context.apiKey, source: `context ${context.name}` };
  return undefined;
}
