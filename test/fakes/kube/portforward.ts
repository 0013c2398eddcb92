/**
 * `pods/{name}/portforward` over WebSocket, as the API server hands it to the kubelet and the kubelet serves it
 * (pkg/kubelet/cri/streaming/portforward/websocket.go): `?ports=N` (repeated, or comma-separated; the API
 * server's PodPortForwardOptions), subprotocol `v4.channel.k8s.io` (or none); for port i the data channel 2i and
 * the error channel 2i+1, each opened by a message holding the port as 2 little-endian bytes; every message one
 * channel byte and its payload. Each port is a connection to the pod's loopback through the LocalProvider's
 * `tunnel` (the pod is a local sandbox); a connection that cannot be made is the kubelet's message on the error
 * channel, and the socket closes once every port's connection has ended.
 *
 * Before the upgrade, the API server's and the kubelet's refusals: 404 for a missing pod, 400 when it has no node,
 * 500 when its sandbox does not run, 400 without ports. kubectl ≥ 1.31 offers only SPDY tunnelled through the
 * WebSocket (`SPDY/3.1+portforward.k8s.io`), which this fake does not speak: that offer is refused, and kubectl's
 * SPDY fallback too (a 400 that says so).
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { WebSocket, WebSocketServer } from 'ws';
import { refuse } from './exec.js';
import type { Kubelet } from './kubelet.js';
import type { Store } from './objects.js';
import { badRequest, notFound, type Status } from './status.js';

export const PORT_FORWARD_SUBPROTOCOLS = ['v4.channel.k8s.io'];

export interface PortForwardDeps {
  store: Store;
  kubelet: Kubelet;
  wss: WebSocketServer;
  log: (line: string) => void;
}

const refuseStatus = (socket: Duplex, s: Status) => refuse(socket, s.code, JSON.stringify(s));
const text = (socket: Duplex, code: number, body: string) => refuse(socket, code, body, 'text/plain; charset=utf-8');

/** The ports asked for, or the kubelet's message about them. */
function portsOf(query: URLSearchParams): number[] | string {
  const raw = query.getAll('ports');
  if (raw.length === 0) return 'query parameter "port" is required';
  const ports: number[] = [];
  for (const s of raw) {
    if (s === '') return 'query parameter "port" cannot be empty';
    for (const p of s.split(',')) {
      const n = Number(p);
      if (!/^\d+$/.test(p) || n > 65535)
        return `unable to parse "${s}" as a port: strconv.ParseUint: parsing "${p}": invalid syntax`;
      if (n < 1) return `port "${s}" must be > 0`;
      ports.push(n);
    }
  }
  return ports;
}

export function handlePortForward(
  deps: PortForwardDeps,
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  namespace: string,
  podName: string,
  query: URLSearchParams,
): number {
  const pod = deps.store.get('pods', namespace, podName);
  if (!pod) return refuseStatus(socket, notFound('pods', podName).status);
  if (!pod.spec.nodeName)
    return refuseStatus(socket, badRequest(`pod ${podName} does not have a host assigned`).status);
  if ((req.headers.upgrade ?? '').toLowerCase() !== 'websocket') {
    return refuseStatus(
      socket,
      badRequest('this fake API server speaks port-forward over WebSocket only (v4.channel.k8s.io), not SPDY').status,
    );
  }
  const offered = (req.headers['sec-websocket-protocol'] ?? '')
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean);
  if (offered.length > 0 && !PORT_FORWARD_SUBPROTOCOLS.some((p) => offered.includes(p))) {
    return refuse(socket, 403, '', 'text/plain');
  }
  const session = deps.kubelet.sessionOf(pod);
  if (!session || pod.status.phase !== 'Running') {
    return text(socket, 500, `failed to find sandbox for pod "${podName}": pod is ${pod.status.phase ?? 'Pending'}`);
  }
  const ports = portsOf(query);
  if (typeof ports === 'string') return text(socket, 400, ports);
  const uid = pod.metadata.uid ?? '';
  deps.wss.handleUpgrade(req, socket, head, (ws) => {
    serve(ws, ports, (port) => deps.kubelet.provider.tunnel(session, port), podName, uid, deps.log);
  });
  return 101;
}

function serve(
  ws: WebSocket,
  ports: number[],
  open: (port: number) => Promise<Duplex>,
  pod: string,
  uid: string,
  log: (line: string) => void,
): void {
  const send = (channel: number, payload: Buffer, done?: () => void) => {
    if (ws.readyState !== ws.OPEN) return done?.();
    ws.send(Buffer.concat([Buffer.from([channel]), payload]), { binary: true }, () => done?.());
  };
  const conns: (Duplex | undefined)[] = ports.map(() => undefined);
  /** What the client sent before its port's connection was up. */
  const early: Buffer[][] = ports.map(() => []);
  let left = ports.length;
  const ended = () => {
    if (--left === 0 && ws.readyState === ws.OPEN) ws.close(1000);
  };
  ports.forEach((port, i) => {
    const prefix = Buffer.alloc(2);
    prefix.writeUInt16LE(port);
    send(2 * i, prefix);
    send(2 * i + 1, prefix);
    open(port).then(
      (conn) => {
        if (ws.readyState !== ws.OPEN) return void conn.destroy();
        conns[i] = conn;
        for (const d of early[i]!) conn.write(d);
        early[i] = [];
        conn.on('data', (d: Buffer) => {
          // Backpressure: the connection waits while much is queued on the socket.
          if (ws.bufferedAmount > 1 << 20) {
            conn.pause();
            send(2 * i, d, () => conn.resume());
          } else send(2 * i, d);
        });
        conn.on('error', () => {});
        let done = false;
        const finish = () => {
          if (done) return;
          done = true;
          conns[i] = undefined;
          ended();
        };
        conn.once('end', finish);
        conn.once('close', finish);
      },
      (e: Error) => {
        // The kubelet's words, with containerd's for a port where nothing listens.
        const why = /nothing listens/.test(e.message)
          ? `failed to connect to localhost:${port} inside namespace "${pod}", IPv4: dial tcp4 127.0.0.1:${port}: connect: connection refused IPv6 dial tcp6 [::1]:${port}: connect: connection refused`
          : e.message;
        log(`portforward ${pod}:${port}: ${why}`);
        send(2 * i + 1, Buffer.from(`error forwarding port ${port} to pod ${pod}, uid ${uid}: ${why}`), ended);
      },
    );
  });
  ws.on('message', (d: Buffer, isBinary: boolean) => {
    if (!isBinary || d.length === 0) return;
    const channel = d[0]!;
    const i = channel / 2;
    if (!Number.isInteger(i) || i >= ports.length) return; // error channels are written by the server only
    const payload = d.subarray(1);
    if (payload.length === 0) return;
    const conn = conns[i];
    if (conn) conn.write(payload);
    else early[i]!.push(Buffer.from(payload));
  });
  ws.on('error', () => {});
  ws.once('close', () => {
    for (const c of conns) c?.destroy();
  });
}
