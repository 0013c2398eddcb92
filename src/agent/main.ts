/**
 * `onmemos agent`: the exec endpoint inside a session. In the local sandbox it is the session's main process
 * (bwrap's child): it runs as the session user, listens on a socket onmemos made on the host and passed in as
 * fd 3 (the socket's path lives in the host's session directory, which the session cannot see), and serves the
 * same exec WebSocket as `onmemos serve` (v5.channel.k8s.io, src/exec/server.ts). Each command is spawned
 * here, inside, with the session's environment applied here — the host never runs a session command itself.
 *
 * Bundled on its own (dist/agent.cjs) so it starts fast; node-pty's native module is found next to it.
 */
import { closeSync, fstatSync, readdirSync, readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import type { Duplex } from 'node:stream';
import { UserError } from '../errors.js';
import type { RemoteProcess } from '../exec/process.js';
import { execSpecFromQuery, execWebSocketServer, serveExec } from '../exec/server.js';
import { connectLoopback, joinTunnel, tunnelPort } from '../exec/tunnel.js';
import { FDEXEC, FDPASS_NODE, type FdPass, handleFd, loadFdPass, preambleStreams } from '../native/fdpass.js';
import { AGENT_FDPASS_FD, AGENT_LISTEN_FD, type ExecGroup, spawnPiped, spawnTty, treeGroup } from './spawn.js';
import { type WarmStarter, warmStarter } from './warm.js';

export interface AgentConfig {
  /** The environment of every command: the session's base variables, the create-time env, the document's. */
  env: Record<string, string>;
  /** Where a command starts unless it asks for another directory. */
  workdir: string;
  /** Exec groups: how to make one for each command (absent: the process tree stands in). */
  execGroups?: (id: string) => ExecGroup;
  /** fdexec inside the session: the parked process takes passed descriptors through it (warm.ts). */
  fdexec?: import('./warm.js').FdExec;
}

const O_CLOEXEC = 0o2000000;

/**
 * Closes every descriptor above the listening socket that the agent did not open itself (those are all
 * close-on-exec): whatever the caller of onmemos left open must not reach a session, nor stay readable through
 * /proc/<agent>/fd by a session process.
 */
export function closeInheritedFds(keep: number[]): number[] {
  const closed: number[] = [];
  for (const name of readdirSync('/proc/self/fd')) {
    const fd = Number(name);
    if (!Number.isInteger(fd) || fd <= 2 || keep.includes(fd)) continue;
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

/** How long a connection to the descriptor socket may take to send its preamble (the byte the descriptors come with). */
const PREAMBLE_MS = 2_000;

/** The output descriptors a connection to the descriptor socket passed, until its exec request claims them. */
interface Passed {
  stdout?: number;
  stderr?: number;
}

function isSocket(fd: number): boolean {
  try {
    return fstatSync(fd).isSocket();
  } catch {
    return false;
  }
}

function closeFds(fds: Iterable<number | undefined>): void {
  for (const fd of fds) {
    if (fd === undefined) continue;
    try {
      closeSync(fd);
    } catch {}
  }
}

export async function runAgent(
  config: AgentConfig,
  listen: { fd: number } | { port: number; host: string },
  /** The second socket, whose connections pass the command's output descriptors first (local.ts passOutput). */
  fdListen?: { fd: number; fdpass: FdPass },
) {
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
  const warm: WarmStarter | undefined = execGroups && warmStarter(() => execGroups(`e${++execs}`), config.fdexec);
  const start = async (spec: ReturnType<typeof execSpecFromQuery>): Promise<RemoteProcess> => {
    const env: Record<string, string> = { ...config.env, ...spec.env };
    if (spec.tty) env.TERM = spec.term || 'xterm-256color';
    const cwd = spec.cwd ?? config.workdir;
    // An exec that passed its output descriptors takes the parked process only through fdexec (warm.ts).
    const parked = warm?.take(spec, env, cwd);
    let proc: RemoteProcess;
    try {
      proc = parked ?? (await startNew(spec, env, cwd));
    } finally {
      // The command has its own copies now (or never will): the agent keeps none.
      if (spec.outputFds) closeFds([spec.outputFds.stdout, spec.outputFds.stderr]);
    }
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
  /** What each connection to the descriptor socket passed, until its request claims it (or it closes). */
  const passedBy = new WeakMap<Duplex, Passed>();
  const takePassed = (socket: Duplex): Passed | undefined => {
    const p = passedBy.get(socket);
    passedBy.delete(socket);
    return p;
  };
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => {});
    const url = new URL(req.url ?? '/', 'http://agent');
    const passed = takePassed(socket);
    const refuse = (status: string, code: string, message: string) => {
      const body = JSON.stringify({ error: { code, message } });
      socket.end(
        `HTTP/1.1 ${status}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
      );
    };
    if (url.pathname === '/tunnel') {
      closeFds([passed?.stdout, passed?.stderr]);
      tunnelUpgrade(url, req, socket, head, webSockets, refuse);
      return;
    }
    let spec: ReturnType<typeof execSpecFromQuery>;
    try {
      if (url.pathname !== '/exec') throw new Error('no WebSocket route');
      spec = execSpecFromQuery(url.searchParams, passed && checkPassed(passed, fdListen!.fdpass));
    } catch (e) {
      closeFds([passed?.stdout, passed?.stderr]);
      refuse('400 Bad Request', 'bad_request', (e as Error).message);
      return;
    }
    // Descriptors the request did not claim are closed now; the claimed ones once the command has them.
    if (passed?.stdout !== undefined && spec.outputFds?.stdout === undefined) closeFds([passed.stdout]);
    if (passed?.stderr !== undefined && spec.outputFds?.stderr === undefined) closeFds([passed.stderr]);
    prime();
    let started = false;
    const unstarted = () => {
      if (!started && spec.outputFds) closeFds([spec.outputFds.stdout, spec.outputFds.stderr]);
      started = true;
    };
    webSockets().then(
      (w) => {
        socket.once('close', unstarted); // a client gone before the upgrade completed
        w.handleUpgrade(req, socket, head, (ws) => {
          socket.off('close', unstarted);
          started = true;
          serveExec(ws, spec, () => start(spec)).catch(() => ws.terminate());
        });
      },
      () => {
        unstarted();
        socket.destroy();
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    if ('fd' in listen) server.listen({ fd: listen.fd }, resolve);
    else server.listen(listen.port, listen.host, resolve);
  });
  if (fdListen) {
    // Each connection first passes the command's output descriptors with one byte (preambleByte: which streams, the
    // descriptors in that order), read here before anything else of the socket is; then it is an ordinary connection of the
    // HTTP server above, whose exec request claims them. Nothing is read from it until then (pauseOnConnect).
    const { fdpass } = fdListen;
    const fdServer = createNetServer({ pauseOnConnect: true }, (socket: Socket) => {
      socket.on('error', () => {});
      const fd = handleFd(socket);
      if (fd === undefined) return void socket.destroy();
      fdpass.recvFds(fd, PREAMBLE_MS, (err, r) => {
        const fds = r?.fds ?? [];
        const want = r ? preambleStreams(r.byte) : undefined;
        if (err || socket.destroyed || !want || want.length === 0 || fds.length !== want.length) {
          closeFds(fds);
          socket.destroy();
          return;
        }
        const passed: Passed = {};
        for (const [i, stream] of want.entries()) passed[stream] = fds[i];
        passedBy.set(socket, passed);
        socket.once('close', () => {
          const left = takePassed(socket);
          closeFds([left?.stdout, left?.stderr]);
        });
        server.emit('connection', socket);
        socket.resume();
      });
    });
    fdServer.on('error', () => {});
    await new Promise<void>((resolve, reject) => {
      fdServer.once('error', reject);
      fdServer.listen({ fd: fdListen.fd }, resolve);
    });
  }
  return server;
}

/**
 * Each passed descriptor must be a pipe open for writing (made blocking for the command); anything else (a tty, a
 * socket, a file, a directory) is refused: the client is not trusted with what a command's output goes to.
 */
function checkPassed(passed: Passed, fdpass: FdPass): Passed {
  for (const fd of [passed.stdout, passed.stderr]) {
    if (fd !== undefined && !fdpass.outputFifo(fd)) {
      throw new UserError('a passed output descriptor is not a pipe open for writing');
    }
  }
  return passed;
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

/**
 * The local sandbox's entry point: `node agent.cjs <config.json>`, listening on fd 3, and, where the config says so
 * (`fdpass`), on AGENT_FDPASS_FD for execs that pass their output descriptors, with the fdpass module next to
 * agent.cjs. Without that module (or where it does not load) the second socket is closed: its clients fall back.
 */
export async function main(argv: string[]): Promise<void> {
  const file = argv[0];
  if (!file) throw new Error('usage: agent <config.json>');
  const raw = JSON.parse(readFileSync(file, 'utf8')) as {
    env: Record<string, string>;
    workdir: string;
    cgroups?: import('./groups.js').InsideCgroups;
    fdpass?: boolean;
    fdexec?: boolean;
  };
  // Descriptor 14 is the second socket only when the config says it was passed; otherwise that number may well
  // be one of node's own (which are close-on-exec, and never touched here).
  closeInheritedFds(raw.fdpass ? [AGENT_LISTEN_FD, AGENT_FDPASS_FD] : [AGENT_LISTEN_FD]);
  let fdListen: { fd: number; fdpass: FdPass } | undefined;
  if (raw.fdpass && isSocket(AGENT_FDPASS_FD)) {
    const fdpass = loadFdPass([join(dirname(process.argv[1] ?? '.'), FDPASS_NODE)]);
    // No command may inherit the second socket: the prologue's sh cannot close a descriptor above 9, so it is
    // close-on-exec; without the module it is closed (its clients' connections are refused: they relay).
    if (fdpass?.closeOnExec(AGENT_FDPASS_FD)) fdListen = { fd: AGENT_FDPASS_FD, fdpass };
    else closeFds([AGENT_FDPASS_FD]);
  }
  let execGroups: AgentConfig['execGroups'];
  if (raw.cgroups) {
    const { cgroupExecGroups } = await import('./groups.js');
    execGroups = cgroupExecGroups(raw.cgroups);
  }
  // Signals aimed at the agent (a session process may try) do not stop it; the session ends with bwrap.
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGPIPE'] as const) process.on(sig, () => {});
  const fdexec =
    fdListen && raw.fdexec ? { path: join(dirname(process.argv[1]!), FDEXEC), fdpass: fdListen.fdpass } : undefined;
  await runAgent({ env: raw.env, workdir: raw.workdir, execGroups, fdexec }, { fd: AGENT_LISTEN_FD }, fdListen);
}
