import { Command } from 'commander';
import { currentContext, deleteContext, readContexts, setContext, useContext } from '../config.js';
import { UserError } from '../errors.js';
import { validateName } from '../session/model.js';
import { type Ctx, out } from './context.js';
import { json, table } from './format.js';

async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

const contextName = (v: string) => validateName('namespace', v);

/** An http(s) URL for --server, as given; UserError (exit 2) for anything else. */
function serverUrl(v: string): string {
  let u: URL;
  try {
    u = new URL(v);
  } catch (e) {
    throw new UserError(`invalid server URL ${JSON.stringify(v)}: ${(e as Error).message}`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new UserError(`invalid server URL ${JSON.stringify(v)}: it must be http:// or https://, not ${u.protocol}//`);
  }
  return v;
}

export function configCommand(ctx: () => Ctx): Command {
  const config = new Command('config').description('saved contexts: which onmemos server to use, and its API key');
  config
    .command('set-context')
    .description('save a context (a server URL and its API key)')
    .argument('<name>', 'context name (a DNS label)')
    .requiredOption('--server <url>', 'the onmemos server, e.g. https://onmemos.example.com')
    .option('--api-key-stdin', 'read the API key from stdin (keeps it out of shell history and ps)')
    .addHelpText(
      'after',
      '\nExample:\n  printf %s "$KEY" | onmemos config set-context prod --server https://onmemos.example.com --api-key-stdin',
    )
    .action(async (name: string, o) => {
      const c = ctx();
      const server = serverUrl(o.server); // a clear error now, before anything is written, rather than at first use
      let apiKey: string | undefined;
      if (o.apiKeyStdin) {
        apiKey = (await readAll(c.stdin)).trim();
        if (!apiKey) throw new UserError('--api-key-stdin: nothing on stdin');
      }
      await setContext(c.env, contextName(name), { server, ...(apiKey ? { apiKey } : {}) });
    });
  config
    .command('use-context')
    .description('make a saved context the current one')
    .argument('<name>')
    .action(async (name: string) => useContext(ctx().env, contextName(name)));
  config
    .command('delete-context')
    .description('forget a saved context')
    .argument('<name>')
    .action(async (name: string) => deleteContext(ctx().env, contextName(name)));
  config
    .command('current-context')
    .description('print the current context')
    .action(async () => {
      const c = ctx();
      const cur = await currentContext(c.env);
      if (!cur) throw new UserError('no current context: onmemos runs in local mode', { exitCode: 1 });
      out(c, cur.name);
    });
  config
    .command('get-contexts')
    .description('list saved contexts (keys are never shown)')
    .option('--json', 'print JSON')
    .action(async (o) => {
      const c = ctx();
      const stored = await readContexts(c.env);
      const rows = Object.entries(stored.contexts).map(([name, v]) => ({
        name,
        server: v.server,
        api_key: v.apiKey ? 'set' : 'none',
        current: name === stored.currentContext,
      }));
      if (o.json) return out(c, json(rows));
      out(
        c,
        table([
          ['CURRENT', 'NAME', 'SERVER', 'API KEY'],
          ...rows.map((r) => [r.current ? '*' : '', r.name, r.server, r.api_key]),
        ]),
      );
    });
  return config;
}
