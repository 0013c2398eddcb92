/**
 * `onmemos agent`: the exec endpoint inside a session. In the local sandbox it is the session's main process
 * (bwrap's child): it runs as the session user, listens on a socket onmemos made on the host and passed in as
 * fd 3 (the socket's path lives in the host's session directory, which the session cannot see), and serves the
 * same exec WebSocket as `onmemos serve` (v5.channel.k8s.io, src/exec/server.ts). Each command is spawned
 * here, inside, with the session's environment applied here — the host never runs a session command itself.
 *
 * Bundled on its own (dist/agent.cjs) so it starts fast; node-pty's native module is found next to it.
 */
import { closeSync, readdirSync, readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { RemoteProcess } from '../exec/process.js';
import { execSpecFromQuery, execWebSocketServer, serveExec } from '../exec/server.js';
import { connectLoopback, joinTunnel, tunnelPort } from '../exec/tunnel.js';
import { AGENT_LISTEN_FD, type ExecGroup, spawnPiped, spawnTty, treeGroup } from './spawn.js';
import { type WarmStarter, warmStarter } from './warm.js';

export interface AgentConfig {
  /** The environment of every command: the session's base variables, the create-time env, the document's. */
  env: Record<string, string>;
  /** Where a command starts unless it asks for another directory. */
  workdir: string;
  /** Exec groups: how to make one for each command (absent: the process tree stands in). */
  execGroups?: (id: string) => ExecGroup;
}

const O_CLOEXEC = 0o2000000;

/**
 * Closes every descriptor above the listening socket that the agent did not open itself (those are all
 * close-on-exec): whatever the caller of onmemos left open must not reach a session, nor stay readable through
 * /proc/<agent>/fd by a session process.
 */
export function closeInheritedFds(keep: number): number[] {
  const closed: number[] = [];
  for (const name of readdirSync('/proc/self/fd')) {
    const fd = Number(name);
    if (!Number.isInteger(fd) || fd <= 2 || fd === keep) continue;
    let flags: number;
    try {
      flags = Number.parseInt(/flags:\s*([0-7]+)/.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))?.[1] ?? '0', 8);
    } catch {
      continue; // the directory's own descriptor, gone already
    }
    if (flags & O_CLOEXEC) continue;
    try {
      closeSync(fd);
      closed.push(fd);
    } catch {}
  }
  return closed;
}

export async function runAgent(config: AgentConfig, listen: { fd: number } | { port: number; host: string }) {
  // ws is loaded once the first request has its answer (or by the first exec): ~5 ms that the creator's /health,
  // which the create waits for, does not need.
  let wss: ReturnType<typeof execWebSocketServer> | undefined;
  const webSockets = () => {
    wss ??= execWebSocketServer();
    return wss;
  };
  let execs = 0;
  const execGroups = config.execGroups;
  // With cgroups, a process waits in the next exec group (warm.ts): joining one is most of a short command's time.
  const warm: WarmStarter | undefined = execGroups && warmStarter(() => execGroups(`e${++execs}`));
  const start = async (spec: ReturnType<typeof execSpecFromQuery>): Promise<RemoteProcess> => {
    const env: Record<string, string> = { ...config.env, ...spec.env };
    if (spec.tty) env.TERM = spec.term || 'xterm-256color';
    const cwd = spec.cwd ?? config.workdir;
    const parked = warm?.take(spec, env, cwd);
    const proc = parked ?? (await startNew(spec, env, cwd));
    // The next one is parked once this command has ended, so that its start takes nothing from this one.
    if (warm) proc.exit.finally(() => setImmediate(() => warm.refill()));
    return proc;
  };
  const startNew = (spec: ReturnType<typeof execSpecFromQuery>, env: Record<string, string>, cwd: string) => {
    const group = execGroups ? execGroups(`e${++execs}`) : treeGroup();
    return spec.tty ? spawnTty(spec, env, cwd, group) : spawnPiped(spec, env, cwd, group);
  };
  // The first process is parked once the first request has its answer (the creator's /health, or an exec): spawning
  // it takes the event loop a few ms, which must not delay that answer. So is ws loaded.
  let primed = false;
  const prime = () => {
    if (primed) return;
    primed = true;
    setImmediate(() => {
      warm?.refill();
      webSockets().catch(() => {});
    });
  };
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    res.on('finish', prime);
    const body = req.url === '/health' ? '{"status":"ok"}' : '{"error":{"code":"not_found","message":"no route"}}';
    res.writeHead(req.url === '/health' ? 200 : 404, { 'content-type': 'application/json' }).end(body);
  });
  server.on('clientError', (_e, socket) => socket.destroy());
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => {});
    const url = new URL(req.url ?? '/', 'http://agent');
    const refuse = (status: string, code: string, message: string) => {
      const body = JSON.stringify({ error: { code, message } });
      socket.end(
        `HTTP/1.1 ${status}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
      );
    };
    if (url.pathname === '/tunnel') {
      tunnelUpgrade(url, req, socket, head, webSockets, refuse);
      return;
    }
    let spec: ReturnType<typeof execSpecFromQuery>;
    try {
      if (url.pathname !== '/exec') throw new Error('no WebSocket route');
      spec = execSpecFromQuery(url.searchParams);
    } catch (e) {
      refuse('400 Bad Request', 'bad_request', (e as Error).message);
      return;
    }
    prime();
    webSockets().then(
      (w) =>
        w.handleUpgrade(req, socket, head, (ws) => {
          serveExec(ws, spec, () => start(spec)).catch(() => ws.terminate());
        }),
      () => socket.destroy(),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    if ('fd' in listen) server.listen({ fd: listen.fd }, resolve);
    else server.listen(listen.port, listen.host, resolve);
  });
  return server;
}

/**
 * `/tunnel?port=N`: a TCP connection to port N on the session's own loopback (the agent is in the session's network
 * namespace), as raw bytes over the WebSocket: what `onmemos tunnel` uses for local sessions. Only 127.0.0.1: the
 * tunnel reaches into the session, never through it. Nothing listening there is a 503 before the upgrade.
 */
function tunnelUpgrade(
  url: URL,
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  webSockets: () => Promise<import('ws').WebSocketServer>,
  refuse: (status: string, code: string, message: string) => void,
): void {
  let port: number;
  try {
    port = tunnelPort(url.searchParams);
  } catch (e) {
    refuse('400 Bad Request', 'bad_request', (e as Error).message);
    return;
  }
  connectLoopback(port).then(
    async (conn) => {
      try {
        const w = await webSockets();
        w.handleUpgrade(req, socket, head, (ws) => void joinTunnel(ws, conn));
      } catch {
        conn.destroy();
        socket.destroy();
      }
    },
    (e: Error) => refuse('503 Service Unavailable', 'unavailable', e.message),
  );
}

/** The local sandbox's entry point: `node agent.cjs <config.json>`, listening on fd 3. */
export async function main(argv: string[]): Promise<void> {
  closeInheritedFds(AGENT_LISTEN_FD);
  const file = argv[0];
  if (!file) throw new Error('usage: agent <config.json>');
  const raw = JSON.parse(readFileSync(file, 'utf8')) as {
    env: Record<string, string>;
    workdir: string;
    cgroups?: import('./groups.js').InsideCgroups;
  };
  let execGroups: AgentConfig['execGroups'];
  if (raw.cgroups) {
    const { cgroupExecGroups } = await import('./groups.js');
    execGroups = cgroupExecGroups(raw.cgroups);
  }
  // Signals aimed at the agent (a session process may try) do not stop it; the session ends with bwrap.
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGPIPE'] as const) process.on(sig, () => {});
  await runAgent({ env: raw.env, workdir: raw.workdir, execGroups }, { fd: AGENT_LISTEN_FD });
}
