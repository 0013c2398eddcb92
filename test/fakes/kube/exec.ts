/**
 * `pods/{name}/exec` (handleExec returns the HTTP status it answered): the checks the API server makes before it upgrades (404 for a missing pod, 400 when the
 * container is not the pod's or the pod has no node), the kubelet's when the container does not run (500,
 * `container not found ("main")`, which kubectl shows as `unable to upgrade connection: …`), the subprotocol
 * (v5.channel.k8s.io or v4; anything else is a 403 with no body, as the Go WebSocket server answers), then
 * src/exec/server.ts's serveExec with a kubelet's ways: the command runs in the pod's sandbox with the container's
 * env and working directory (onmemos' env=/workdir= parameters mean nothing here), channel 16 does not exist, a
 * client that goes away leaves a non-tty command running, and a command that cannot be started is reported as
 * containerd reports it (an InternalError status, not an exit code).
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex, Readable } from 'node:stream';
import { PassThrough } from 'node:stream';
import type { WebSocket, WebSocketServer } from 'ws';
import { type ExecSpec, type ExitStatus, exitCodeOf, type RemoteProcess } from '../../../src/exec/process.js';
import { serveExec } from '../../../src/exec/server.js';
import { statusFor } from '../../../src/exec/v5.js';
import type { Faults } from './faults.js';
import type { Kubelet } from './kubelet.js';
import type { Pod, Store } from './objects.js';
import { containerEnv, workingDir } from './pods.js';
import { type ApiError, badRequest, internalError, notFound, type Status } from './status.js';

export const EXEC_SUBPROTOCOLS = ['v5.channel.k8s.io', 'v4.channel.k8s.io'];
const truthy = (v: string | null) => v === 'true' || v === '1';

export interface ExecDeps {
  store: Store;
  kubelet: Kubelet;
  faults: Faults;
  wss: WebSocketServer;
  log: (line: string) => void;
}

/** A response on a socket that was not upgraded; returns the code. */
export function refuse(socket: Duplex, code: number, body: string, type = 'application/json'): number {
  const reason =
    { 400: 'Bad Request', 403: 'Forbidden', 404: 'Not Found', 500: 'Internal Server Error' }[code] ?? 'Error';
  const head = [`HTTP/1.1 ${code} ${reason}`, `Content-Type: ${type}`, `Content-Length: ${Buffer.byteLength(body)}`];
  socket.end(`${head.join('\r\n')}\r\nConnection: close\r\n\r\n${body}`);
  return code;
}

const refuseStatus = (socket: Duplex, s: Status) => refuse(socket, s.code, JSON.stringify(s));

/** The container an exec is for: named, or the pod's only one (the API server's rules and words). */
function pickContainer(pod: Pod, asked: string | null) {
  const name = pod.metadata.name;
  if (!asked) {
    if (pod.spec.containers.length === 1) return pod.spec.containers[0]!;
    const names = pod.spec.containers.map((c) => c.name).join(' ');
    throw badRequest(`a container name must be specified for pod ${name}, choose one of: [${names}]`);
  }
  const c = pod.spec.containers.find((x) => x.name === asked);
  if (!c) throw badRequest(`container ${asked} is not valid for pod ${name}`);
  return c;
}

export function handleExec(
  deps: ExecDeps,
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  namespace: string,
  podName: string,
  query: URLSearchParams,
): number {
  const pod = deps.store.get('pods', namespace, podName);
  if (!pod) return refuseStatus(socket, notFound('pods', podName).status);
  let container: Pod['spec']['containers'][number];
  try {
    container = pickContainer(pod, query.get('container'));
    if (!pod.spec.nodeName) throw badRequest(`pod ${podName} does not have a host assigned`);
  } catch (e) {
    return refuseStatus(socket, (e as ApiError).status);
  }
  const argv = query.getAll('command');
  const streams = {
    stdin: truthy(query.get('stdin')),
    stdout: truthy(query.get('stdout')),
    stderr: truthy(query.get('stderr')),
  };
  const tty = truthy(query.get('tty'));
  // The kubelet answers these in plain text.
  if (!streams.stdin && !streams.stdout && !streams.stderr) {
    return refuse(socket, 400, 'you must specify at least 1 of stdin, stdout, stderr', 'text/plain; charset=utf-8');
  }
  const session = deps.kubelet.sessionOf(pod);
  if (!session) return refuse(socket, 500, `container not found ("${container.name}")`, 'text/plain; charset=utf-8');
  if ((req.headers.upgrade ?? '').toLowerCase() !== 'websocket') {
    return refuseStatus(
      socket,
      badRequest('this fake API server speaks exec over WebSocket only (v5.channel.k8s.io), not SPDY').status,
    );
  }
  const offered = (req.headers['sec-websocket-protocol'] ?? '').split(',').map((p) => p.trim());
  if (!EXEC_SUBPROTOCOLS.some((p) => offered.includes(p))) return refuse(socket, 403, '', 'text/plain');
  if (argv.length === 0) {
    return refuseStatus(socket, badRequest('you must specify at least one command for the container').status);
  }

  const spec: ExecSpec = {
    argv,
    tty,
    stdin: streams.stdin,
    env: containerEnv(pod, container),
    cwd: workingDir(container),
  };
  const dropAfter = deps.faults.takeDropExec(podName);
  deps.wss.handleUpgrade(req, socket, head, (ws) => {
    let failure: (() => string | undefined) | undefined;
    const start = async () => {
      const proc = await deps.kubelet.provider.exec(session, spec);
      const k = kubeletProcess(proc, spec, streams, dropAfter === undefined ? undefined : { after: dropAfter, ws });
      failure = k.failure;
      return k.proc;
    };
    const status = (exit: ExitStatus): Record<string, unknown> => {
      const why = failure?.();
      if (why) {
        const { kind: _k, apiVersion: _a, ...s } = internalError(why).status;
        return s;
      }
      return statusFor(exitCodeOf(exit), argv);
    };
    void serveExec(ws, spec, start, { onClientGone: 'leave', signals: false, status }).catch((e) =>
      deps.log(`exec: ${e instanceof Error ? e.message : String(e)}`),
    );
  });
  return 101;
}

/**
 * What the sandbox's agent prints (src/agent/spawn.ts) when argv[0] cannot be run, and what runc says instead.
 * Only a message that is all of the command's error output, with exit 126 or 127, counts.
 */
function startFailures(argv0: string): Map<string, string> {
  const quoted = JSON.stringify(argv0);
  return new Map([
    [`onmemos: ${argv0}: command not found`, `exec: ${quoted}: executable file not found in $PATH`],
    [`onmemos: ${argv0}: no such file or directory`, `exec: ${quoted}: stat ${argv0}: no such file or directory`],
    [`onmemos: ${argv0}: is a directory`, `exec: ${quoted}: permission denied`],
    [`onmemos: ${argv0}: permission denied`, `exec: ${quoted}: permission denied`],
  ]);
}

/**
 * The local process as a kubelet would hand it on: output only on the streams the client asked for, the agent's
 * start failure (on stderr, or the tty) held back and turned into containerd's error, and, under the dropExec
 * fault, the connection cut once that much output went out.
 */
function kubeletProcess(
  proc: RemoteProcess,
  spec: ExecSpec,
  streams: { stdout: boolean; stderr: boolean },
  drop: { after: number; ws: WebSocket } | undefined,
): { proc: RemoteProcess; failure: () => string | undefined } {
  const failures = startFailures(spec.argv[0]!);
  const lines = [...failures.keys()].flatMap((m) => [`${m}\n`, `${m}\r\n`]);
  let failed: string | undefined;
  let sent = 0;
  const relay = (src: Readable, wanted: boolean, watch: boolean): PassThrough => {
    const dst = new PassThrough();
    let held: Buffer | undefined = watch ? Buffer.alloc(0) : undefined;
    const out = (d: Buffer) => {
      if (!wanted || d.length === 0) return;
      if (drop) {
        if (sent >= drop.after) return;
        if (sent + d.length >= drop.after) {
          d = d.subarray(0, drop.after - sent);
          setImmediate(() => drop.ws.terminate()); // after this last piece was handed to the socket
        }
        sent += d.length;
      }
      if (!dst.write(d)) {
        src.pause();
        dst.once('drain', () => src.resume());
      }
    };
    src.on('data', (d: Buffer) => {
      if (held === undefined) return out(d);
      const all = Buffer.concat([held, d]);
      const text = all.toString('latin1');
      if (lines.some((l) => l.startsWith(text))) held = all;
      else {
        held = undefined;
        out(all);
      }
    });
    src.once('end', () => {
      void proc.exit.then((exit) => {
        const text = held?.toString('latin1').replace(/\r?\n$/, '');
        if (text !== undefined && (exit.code === 126 || exit.code === 127) && failures.has(text)) {
          const id = randomBytes(32).toString('hex');
          failed = `error executing command in container: failed to exec in container: failed to start exec "${id}": OCI runtime exec failed: exec failed: unable to start container process: ${failures.get(text)}: unknown`;
        } else if (held) out(held);
        dst.end();
      });
    });
    src.on('error', () => dst.end());
    return dst;
  };
  const stdout = relay(proc.stdout, streams.stdout, !!spec.tty);
  const stderr = relay(proc.stderr, streams.stderr && !spec.tty, !spec.tty);
  return {
    proc: { ...proc, stdout, stderr, resize: (c, r) => proc.resize(c, r), kill: (s) => proc.kill(s) },
    failure: () => failed,
  };
}
