/**
 * dist/cloud-agent.cjs: `onmemos agent`, the agent of a workspace container (cloud.ts). bin/onmemos.js runs it
 * without loading the CLI bundle (so it starts in about the time node itself takes, and writes no code cache into
 * the workspace user's home); the CLI's `agent` command runs the same function. It parses its own few options, so
 * the bundle holds nothing but the agent: node's own argument parser, the exec and JSON shell code, ws.
 *
 * Its configuration is the environment the service sets (README: `onmemos agent`):
 *   ONMEMOS_AGENT_SECRET_SHA256  hex SHA-256 of the session's secret (what a Cloud Run service should carry), or
 *   ONMEMOS_AGENT_SECRET         the secret itself (for local testing)
 *   ONMEMOS_AGENT_USER           as root: the user commands run as (uid[:gid] or a name; default 1000)
 *   ONMEMOS_WORKSPACE            the default working directory (default /workspace, made if absent)
 *   PORT                         the default port (Cloud Run sets it; else 8080)
 */
import { chownSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import type { Writable } from 'node:stream';
import { parseArgs } from 'node:util';
import { OnmemosError, UserError } from '../errors.js';
import { type CloudAgentOptions, SECRET_HEADER, sha256, startCloudAgent } from './cloud.js';
import type { RunAs } from './spawn.js';

export const AGENT_HELP = `Usage: onmemos agent [--port N] [--host ADDRESS] [--insecure-no-secret]

Runs inside a workspace container (a Cloud Run service; images/): serves the session's exec WebSocket
(v5.channel.k8s.io, as onmemos serve), the document's JSON shell and a buffered execute, and runs each command
as the workspace user in /workspace. Every route but GET /health needs the session's secret in ${SECRET_HEADER}.

Options:
  --port N              port to listen on (0: any free port; the listening line on stderr names it)
                        (default: $PORT, else 8080)
  --host ADDRESS        address to listen on (default: 0.0.0.0)
  --insecure-no-secret  serve without a secret: anyone who reaches the port runs commands (local experiments)
  -h, --help            this help

Environment:
  ONMEMOS_AGENT_SECRET_SHA256  hex SHA-256 of the session's secret (or ONMEMOS_AGENT_SECRET, the secret itself)
  ONMEMOS_AGENT_USER           when the agent is root: the user commands run as, uid[:gid] or a name (default 1000)
  ONMEMOS_WORKSPACE            default working directory (default /workspace; made if absent)

Routes: GET /health, GET /v1/exec (WebSocket), GET /v1/shell (WebSocket), POST /v1/execute, GET /v1/tunnel?port=N
(WebSocket, raw bytes to 127.0.0.1:N in the container).

Examples:
  ONMEMOS_AGENT_SECRET_SHA256=$(printf %s "$SECRET" | sha256sum | cut -d' ' -f1) onmemos agent
  docker run -p 8080:8080 -e ONMEMOS_AGENT_SECRET="$SECRET" REGION-docker.pkg.dev/PROJECT/onmemos/python
  curl -H "X-OnMemOS-Secret: $SECRET" -H 'content-type: application/json' \\
       -d '{"command":"python --version"}' http://127.0.0.1:8080/v1/execute
`;

/** The agent's own variables and the platform's, which no command sees (they name the agent's port and service). */
const HIDDEN_VARIABLES = /^(ONMEMOS_AGENT_.*|PORT|K_SERVICE|K_REVISION|K_CONFIGURATION)$/;
/** As serve's API keys. */
const MIN_SECRET_CHARS = 16;

export interface AgentSettings extends Omit<CloudAgentOptions, 'log'> {
  port: number;
  host: string;
  /** The workspace user's home (HOME of every command), when the agent drops to that user. */
  home?: string;
}

export interface AgentIO {
  env: NodeJS.ProcessEnv;
  stdout: Writable;
  stderr: Writable;
  /** Where SIGTERM and SIGINT arrive (the process; tests pass an EventEmitter). */
  signals: NodeJS.EventEmitter;
}

interface Self {
  uid: number;
  gid: number;
}

/** What the command line and the environment say; UserError (exit 2) for anything that does not fit. */
export function agentSettings(
  argv: string[],
  env: NodeJS.ProcessEnv,
  self: Self = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 },
  passwd: () => string = () => readFileSync('/etc/passwd', 'utf8'),
): AgentSettings | 'help' {
  let parsed: ReturnType<typeof parseOptions>;
  try {
    parsed = parseOptions(argv);
  } catch (e) {
    throw new UserError(`${(e as Error).message} (onmemos agent --help)`, { code: 'usage' });
  }
  const { values } = parsed;
  if (values.help) return 'help';

  const port = parsePort(values.port, '--port') ?? parsePort(env.PORT || undefined, '$PORT') ?? 8080;
  const host = values.host ?? '0.0.0.0';

  const hex = env.ONMEMOS_AGENT_SECRET_SHA256 || undefined;
  const plain = env.ONMEMOS_AGENT_SECRET || undefined;
  let secretSha256: Buffer | null;
  if (hex && plain) throw new UserError('set ONMEMOS_AGENT_SECRET_SHA256 or ONMEMOS_AGENT_SECRET, not both');
  if ((hex || plain) && values['insecure-no-secret']) {
    throw new UserError('--insecure-no-secret with a secret in the environment: choose one');
  }
  if (hex) {
    if (!/^[0-9a-fA-F]{64}$/.test(hex)) throw new UserError('ONMEMOS_AGENT_SECRET_SHA256 must be 64 hex digits');
    secretSha256 = Buffer.from(hex, 'hex');
  } else if (plain) {
    if (plain.length < MIN_SECRET_CHARS) {
      throw new UserError(`ONMEMOS_AGENT_SECRET must have at least ${MIN_SECRET_CHARS} characters`);
    }
    secretSha256 = sha256(plain);
  } else if (values['insecure-no-secret']) {
    secretSha256 = null;
  } else {
    throw new UserError(
      'no session secret: set ONMEMOS_AGENT_SECRET_SHA256 (hex SHA-256 of the secret) or ONMEMOS_AGENT_SECRET, or give --insecure-no-secret for a local experiment',
    );
  }

  const workdir = env.ONMEMOS_WORKSPACE || '/workspace';
  if (!isAbsolute(workdir)) throw new UserError(`ONMEMOS_WORKSPACE must be an absolute path, not ${workdir}`);

  const user = resolveUser(env.ONMEMOS_AGENT_USER || undefined, self, workdir, passwd);
  const commandEnv: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined && !HIDDEN_VARIABLES.test(k)) commandEnv[k] = v;
  if (user) commandEnv.HOME = user.home;
  return {
    port,
    host,
    secretSha256,
    workdir,
    env: commandEnv,
    ...(user ? { runAs: { uid: user.uid, gid: user.gid }, home: user.home } : {}),
  };
}

function parseOptions(argv: string[]) {
  return parseArgs({
    args: argv,
    options: {
      port: { type: 'string' },
      host: { type: 'string' },
      'insecure-no-secret': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: false,
  });
}

function parsePort(v: string | undefined, what: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!/^\d{1,5}$/.test(v) || n > 65535) throw new UserError(`${what} must be a port number (0 to 65535), not ${v}`);
  return n;
}

/**
 * The user commands run as. As root: ONMEMOS_AGENT_USER (uid[:gid], or a name from /etc/passwd), 1000 by default,
 * with the workspace as HOME (a name: its passwd home); 0 or root keeps commands as root. As any other user the
 * agent cannot switch: commands run as itself, and a variable naming someone else is an error, not ignored.
 */
function resolveUser(
  wanted: string | undefined,
  self: Self,
  workdir: string,
  passwd: () => string,
): (RunAs & { home: string }) | undefined {
  let target: RunAs & { home: string };
  const numeric = /^(\d{1,10})(?::(\d{1,10}))?$/.exec(wanted ?? '1000');
  if (numeric) {
    const uid = Number(numeric[1]);
    target = { uid, gid: numeric[2] === undefined ? uid : Number(numeric[2]), home: workdir };
  } else {
    const entry = passwd()
      .split('\n')
      .map((l) => l.split(':'))
      .find((f) => f[0] === wanted && f.length >= 7);
    if (!entry) throw new UserError(`ONMEMOS_AGENT_USER=${wanted}: no such user in /etc/passwd`);
    target = { uid: Number(entry[2]), gid: Number(entry[3]), home: entry[5] || workdir };
  }
  if (self.uid !== 0) {
    if (wanted !== undefined && target.uid !== self.uid) {
      throw new UserError(
        `ONMEMOS_AGENT_USER=${wanted}: the agent runs as uid ${self.uid} and cannot switch users (run it as root, or unset the variable)`,
      );
    }
    return undefined;
  }
  return target.uid === 0 ? undefined : target;
}

/**
 * Makes the workspace when it is not there (its parents too; the workspace itself owned by the workspace user);
 * UserError when it cannot. One directory at a time rather than mkdirSync's `recursive`, which spins for ever (seen
 * on Node 20.20) where mkdir answers ENOENT under a parent that exists, as under /proc; no Node issue found, an
 * analysis of its loop: https://github.com/Kewton/CommandMate/issues/1774
 */
export function prepareWorkspace(s: AgentSettings): void {
  if (existsSync(s.workdir)) return;
  try {
    const parts = s.workdir.split('/').filter(Boolean);
    for (let i = 1; i <= parts.length; i++) {
      try {
        mkdirSync(`/${parts.slice(0, i).join('/')}`, { mode: 0o755 });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
    }
    if (s.runAs) chownSync(s.workdir, s.runAs.uid, s.runAs.gid);
  } catch (e) {
    throw new UserError(`cannot make the workspace ${s.workdir}: ${(e as Error).message}`, { exitCode: 1 });
  }
}

/**
 * Runs the agent until SIGTERM or SIGINT, and returns the exit code: 0 after a clean stop, 2 for a usage or
 * configuration error, 1 when it cannot listen. Errors are one line on stderr.
 */
export async function agentMain(argv: string[], io: AgentIO): Promise<number> {
  const say = (line: string) => io.stderr.write(`onmemos agent: ${line}\n`);
  let settings: AgentSettings | 'help';
  try {
    settings = agentSettings(argv, io.env);
    if (settings === 'help') {
      io.stdout.write(AGENT_HELP);
      return 0;
    }
    prepareWorkspace(settings);
  } catch (e) {
    say((e as Error).message);
    return e instanceof OnmemosError ? e.exitCode : 1;
  }
  // node-pty's fork keeps the agent's supplementary groups (docker gives root several, disk among them), and
  // node's spawn clears them only for its own children: a root agent that drops to a user clears its own.
  if (settings.runAs) {
    try {
      process.setgroups?.([]);
    } catch (e) {
      say(`cannot clear the agent's supplementary groups (${(e as Error).message}): commands on a tty keep them`);
    }
  }
  let agent: Awaited<ReturnType<typeof startCloudAgent>>;
  try {
    agent = await startCloudAgent({ ...settings, log: say }, { port: settings.port, host: settings.host });
  } catch (e) {
    say((e as Error).message);
    return 1;
  }
  const a = agent.server.address() as { address: string; port: number };
  const shown = a.address.includes(':') ? `[${a.address}]` : a.address;
  const as = settings.runAs ? `, commands as uid ${settings.runAs.uid}` : '';
  say(
    `listening on http://${shown}:${a.port}${as}${settings.secretSha256 ? '' : ' — NO SECRET: anyone who reaches this port can run commands (--insecure-no-secret)'}`,
  );
  await new Promise<void>((resolve) => {
    const stop = () => {
      for (const sig of ['SIGINT', 'SIGTERM'] as const) io.signals.off(sig, stop);
      agent.close().then(resolve, resolve);
    };
    for (const sig of ['SIGINT', 'SIGTERM'] as const) io.signals.on(sig, stop);
  });
  return 0;
}
