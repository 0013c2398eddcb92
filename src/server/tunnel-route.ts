/**
 * The tunnel WebSocket: `GET /v1/sessions/{id}/tunnel?port=N`, raw bytes both ways (binary frames; text frames are
 * taken as bytes too) to TCP port N inside the session, through the provider's own tunnel (a workstation's TCP
 * tunnel). What `onmemos tunnel` uses in remote mode. The provider's tunnel is opened before the upgrade, so a
 * session without one, or a port where nothing listens, is a plain HTTP answer; the connection holds one of its
 * key's concurrency slots while it is open.
 */
import type { Duplex } from 'node:stream';
import { UnsupportedError } from '../errors.js';
import { joinTunnel, tunnelPort } from '../exec/tunnel.js';
import { acceptCounted, type Upgrade } from './context.js';

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
  await joinTunnel(accepted.ws, t).finally(accepted.release);
}
