/**
 * The tunnel WebSocket: `GET /v1/sessions/{id}/tunnel?port=N`, raw bytes both ways (binary frames; text frames are
 * taken as bytes too) to TCP port N inside the session, through the provider's own tunnel (a workstation's TCP
 * tunnel). What `onmemos tunnel` uses in remote mode. The provider's tunnel is opened before the upgrade, so a
 * session without one, or a port where nothing listens, is a plain HTTP answer; the connection holds one of its
 * key's concurrency slots while it is open.
 */
import type { Duplex } from 'node:stream';
import { createWebSocketStream } from 'ws';
import { UnsupportedError } from '../errors.js';
import { acceptCounted, type Upgrade } from './context.js';
import { apiError } from './http.js';

export function tunnelPort(q: URLSearchParams): number {
  const raw = q.get('port') ?? '';
  const n = Number(raw);
  if (!/^\d{1,5}$/.test(raw) || n < 1 || n > 65535)
    throw apiError('bad_request', 'port must be a number from 1 to 65535');
  return n;
}

export async function tunnelRoute(u: Upgrade): Promise<void> {
  const port = tunnelPort(u.url.searchParams);
  if (!u.provider.tunnel) {
    throw new UnsupportedError(`provider ${u.provider.kind} has no tunnel into its sessions`);
  }
  const t: Duplex = await u.provider.tunnel(u.session.id, port);
  t.on('error', () => {});
  let accepted: Awaited<ReturnType<typeof acceptCounted>>;
  try {
    accepted = await acceptCounted(u.ctx, u.principal, u.req, u.socket, u.head);
  } catch (e) {
    t.destroy();
    throw e;
  }
  if (!accepted) {
    t.destroy();
    return;
  }
  const { ws, release } = accepted;
  const stream = createWebSocketStream(ws);
  stream.on('error', () => {});
  const done = () => {
    t.destroy();
    stream.destroy();
  };
  stream.on('close', done);
  t.on('close', done);
  stream.pipe(t);
  t.pipe(stream);
  await new Promise<void>((resolve) => ws.once('close', () => resolve()));
  done();
  release();
}
