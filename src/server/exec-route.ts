/**
 * The streaming exec WebSocket: `GET /v1/sessions/{id}/exec?command=a&command=b&stdin=1&tty=1&env=K=V&workdir=/dir
 * &cols=&rows=&term=&via=job&timeout=`, speaking v5.channel.k8s.io through the same pump as the agent (src/exec/server.ts). The
 * query and the subprotocol are checked before the upgrade, so a refusal is a plain HTTP answer; the connection
 * holds one of its key's concurrency slots, and the process is killed if the client goes away before it ends.
 */
import { execSpecFromQuery, serveExec } from '../exec/server.js';
import { SERVER_SUBPROTOCOLS, V5 } from '../exec/v5.js';
import { checkExecSpec } from '../providers/provider.js';
import { acceptCounted, type Upgrade } from './context.js';
import { apiError } from './http.js';

/** The upgrade of an exec route (checked up to a running session by the server). */
export async function execRoute(u: Upgrade): Promise<void> {
  const spec = execSpecFromQuery(u.url.searchParams);
  checkExecSpec(u.provider.kind, u.provider.capabilities, spec);
  const protocols = String(u.req.headers['sec-websocket-protocol'] ?? '');
  if (!SERVER_SUBPROTOCOLS.some((p) => protocols.split(/\s*,\s*/).includes(p))) {
    throw apiError('bad_request', `offer the ${V5} subprotocol`);
  }
  const accepted = await acceptCounted(u.ctx, u.principal, u.req, u.socket, u.head);
  if (!accepted) return;
  const { ws, release } = accepted;
  // From here the connection is a WebSocket: a failure closes it, never writes HTTP onto it.
  await serveExec(ws, spec, () => u.provider.exec(u.session.id, spec))
    .catch(() => ws.terminate())
    .finally(release);
}
