import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError } from 'commander';
import { UserError } from '../errors.js';
import type { ProviderRegistry } from '../providers/index.js';
import type { ApiKey } from '../server/auth.js';
import type { Ctx } from './context.js';

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/;
/** The default of --max-concurrent (server.ts has the same; this file does not load the server at start-up). */
const DEFAULT_MAX_CONCURRENT = 32;
/** How often the server sweeps for expired sessions (they go within a minute of their expiry). */
const REAP_EVERY_MS = 30_000;

export interface ServeOptions {
  host: string;
  port: number;
  apiKeyFile?: string;
  insecureNoAuth?: boolean;
  /** Executes, exec streams and JSON shells in flight per API key. */
  maxConcurrent?: number;
  /** Origins whose browser requests are accepted besides the server's own. */
  allowOrigins?: string[];
  /** Let clients create sessions with network host. */
  allowHostNetwork?: boolean;
}

/**
 * Keys from --api-key-file, else ONMEMOS_API_KEYS (one per line, or separated by ';'). The server's modules
 * (node:crypto, node:net, http, ws) load only here, not at every onmemos start-up.
 */
export async function loadKeys(ctx: Ctx, o: ServeOptions): Promise<ApiKey[] | null> {
  const { parseApiKeys } = await import('../server/auth.js');
  let text: string | undefined;
  if (o.apiKeyFile) {
    try {
      text = readFileSync(o.apiKeyFile, 'utf8');
    } catch (e) {
      throw new UserError(`cannot read --api-key-file ${o.apiKeyFile}: ${(e as Error).message}`, { exitCode: 1 });
    }
  } else if (ctx.env.ONMEMOS_API_KEYS) {
    text = ctx.env.ONMEMOS_API_KEYS.replaceAll(';', '\n');
  }
  const keys = text === undefined ? [] : parseApiKeys(text);
  if (keys.length > 0) {
    if (o.insecureNoAuth) throw new UserError('--insecure-no-auth with API keys: choose one');
    return keys;
  }
  if (!o.insecureNoAuth) {
    throw new UserError('no API keys: set ONMEMOS_API_KEYS or --api-key-file (or --insecure-no-auth on loopback)');
  }
  if (!LOOPBACK.test(o.host))
    throw new UserError(`--insecure-no-auth is only allowed on a loopback address, not ${o.host}`);
  return null;
}

/** Runs the server until SIGINT/SIGTERM; resolves when it has stopped. */
export async function serve(ctx: Ctx, o: ServeOptions, registry: ProviderRegistry): Promise<void> {
  const { Auth } = await import('../server/auth.js');
  const { isIP } = await import('node:net');
  const auth = new Auth(await loadKeys(ctx, o));
  const { createOnmemosServer } = await import('../server/server.js');
  const server = await createOnmemosServer({
    registry,
    auth,
    maxConcurrent: o.maxConcurrent,
    allowOrigins: o.allowOrigins,
    allowHostNetwork: o.allowHostNetwork,
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) =>
      reject(new UserError(`cannot listen on ${o.host}:${o.port}: ${(e as Error).message}`, { exitCode: 1 })),
    );
    server.listen(o.port, o.host, resolve);
  });
  const address = server.address() as { address: string; port: number };
  const shown = isIP(address.address) === 6 ? `[${address.address}]` : address.address;
  ctx.stderr.write(
    `onmemos: serving the /v1 API on http://${shown}:${address.port}${auth.enabled ? '' : ' (no auth)'}\n`,
  );
  const reaper = setInterval(async () => {
    await registry.reapExpired().catch(() => {});
  }, REAP_EVERY_MS);
  await new Promise<void>((resolve) => {
    const stop = () => {
      for (const sig of ['SIGINT', 'SIGTERM'] as const) ctx.signals.off(sig, stop);
      clearInterval(reaper);
      server.close(() => resolve());
      server.closeAllConnections();
    };
    for (const sig of ['SIGINT', 'SIGTERM'] as const) ctx.signals.on(sig, stop);
  });
}

function parsePort(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n > 65535) throw new UserError(`invalid port ${v}`);
  return n;
}

function parseMaxConcurrent(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < 1 || n > 100_000)
    throw new InvalidArgumentError('expected a whole number from 1 to 100000');
  return n;
}

/** `--allow-origin URL`, as browsers send an Origin: scheme://host[:port] and nothing after (repeatable). */
function collectOrigin(v: string, prev: string[] = []): string[] {
  let u: URL | undefined;
  try {
    u = new URL(v);
  } catch {}
  const bare = u && (u.pathname === '/' || u.pathname === '') && !u.search && !u.hash && !u.username && !u.password;
  if (!u || !bare || (u.protocol !== 'http:' && u.protocol !== 'https:')) {
    throw new InvalidArgumentError(`expected an origin such as https://app.example.com, not ${JSON.stringify(v)}`);
  }
  return [...prev, u.origin];
}

export function serveCommand(ctx: () => Ctx): Command {
  return new Command('serve')
    .description("serve the OnMemOS /v1 API (HTTP and WebSocket) over this machine's providers")
    .option('--host <address>', 'address to listen on', '127.0.0.1')
    .option('--port <port>', 'port to listen on (0: any free port)', parsePort, 8080)
    .option('--providers <list>', 'providers to serve (comma-separated)', 'local')
    .option('--api-key-file <path>', 'API keys, one per line: KEY, or KEY ns1,ns2 to scope it to namespaces')
    .option('--insecure-no-auth', 'serve without API keys (loopback addresses only)')
    .option(
      '--max-concurrent <n>',
      `executes, exec streams and JSON shells in flight per API key (default ${DEFAULT_MAX_CONCURRENT})`,
      parseMaxConcurrent,
    )
    .option('--allow-origin <url>', 'accept browser requests from this origin too (repeatable)', collectOrigin)
    .option(
      '--allow-host-network',
      "let clients create sessions on the host's network (network host), which reach this machine's loopback",
    )
    .addHelpText(
      'after',
      `
Keys come from --api-key-file or ONMEMOS_API_KEYS (one per line, or separated by ';'); the server refuses to start
without one unless --insecure-no-auth on a loopback address. Clients send X-API-Key (WebSocket upgrades may use
?api_key=). Requests from web pages (an Origin header) of other origins than the server's own are refused unless
--allow-origin names them; on a loopback address, the Host must be localhost, 127.0.0.1 or [::1] with the port.
A create with network host is refused (403) unless --allow-host-network: such a session reaches everything this
machine serves on its loopback, this server included.

Examples:
  ONMEMOS_API_KEYS="$(openssl rand -hex 24)" onmemos serve --port 8080
  onmemos serve --api-key-file /etc/onmemos/keys --host 0.0.0.0`,
    )
    .action(async (o) => {
      const c = ctx();
      const wanted = String(o.providers)
        .split(',')
        .map((s: string) => s.trim());
      for (const p of wanted) {
        if (p !== 'local')
          throw new UserError(`provider ${p} is not available in this build of onmemos (serve --providers local)`);
      }
      await serve(
        c,
        {
          host: o.host,
          port: o.port,
          apiKeyFile: o.apiKeyFile,
          insecureNoAuth: o.insecureNoAuth,
          maxConcurrent: o.maxConcurrent,
          allowOrigins: o.allowOrigin,
          allowHostNetwork: o.allowHostNetwork === true,
        },
        c.registry,
      );
    });
}
