/**
 * The document's legacy Cloud Run routes (their JSON shell WebSocket is in json-shell.ts):
 *
 *   POST   /v1/cloudrun/workspaces                         create (`storage_options` for `storage`); NDJSON as create.ts
 *   GET    /v1/cloudrun/workspaces/{id}
 *   DELETE /v1/cloudrun/workspaces/{id}
 *   POST   /v1/cloudrun/workspaces/{id}/execute?command=…&timeout=…   (a Cloud Run job when the agent does not answer)
 *
 * Where Cloud Run is not configured, the provider `auto` picks stands in, and `details.provider_reason` says so.
 */
import { parseCreateRequest, type Session } from '../session/model.js';
import { type ApiRequest, authorizedSession, bodyLimit, checkNamespace, shown } from './context.js';
import { respondCreate } from './create.js';
import { checkTimeout, respondExecute } from './execute.js';
import { apiError, readJsonBody, sendJson } from './http.js';

/** A workspace as the legacy API shows it: with the path of its legacy JSON shell. */
const shownLegacy = (s: Session) => shown(s, `/v1/cloudrun/workspaces/${s.id}/shell`);

/** Answers a request whose path is /v1/cloudrun/workspaces or under it. */
export async function legacyRoutes(a: ApiRequest): Promise<void> {
  const { ctx, req, res, url, path, method, principal } = a;
  if (path === '/v1/cloudrun/workspaces' && method === 'POST') {
    const { storage_options, ...rest } = await readJsonBody(req, bodyLimit(ctx));
    const request = parseCreateRequest({ ...rest, storage: storage_options });
    checkNamespace(principal, request.namespace);
    // Cloud Run where it is configured; where it is not, the auto rule's stand-in, and the reason says so.
    const configured = ctx.opts.registry.kinds().some((k) => k.kind === 'cloud_run' && k.configured);
    return respondCreate(ctx, req, res, { ...request, provider: configured ? 'cloud_run' : 'auto' }, shownLegacy);
  }
  const m = /^\/v1\/cloudrun\/workspaces\/([^/]+)(?:\/(execute))?$/.exec(path);
  if (!m) throw apiError('not_found', `no route for ${method} ${path}`);
  const { provider, session } = await authorizedSession(ctx.opts, principal, m[1]!);
  if (!m[2] && method === 'GET') return sendJson(res, 200, shownLegacy(session));
  if (!m[2] && method === 'DELETE') {
    await provider.delete(session.id);
    ctx.opts.registry.forget(session.id);
    return sendJson(res, 200, { id: session.id, deleted: true });
  }
  if (m[2] === 'execute' && method === 'POST') {
    const command = url.searchParams.get('command');
    if (!command) throw apiError('bad_request', 'give the command as ?command=');
    const raw = url.searchParams.get('timeout');
    const timeout = checkTimeout(raw === null ? 120 : Number(raw));
    // As the document's Cloud Run backend did: when the workspace's agent does not answer, a Cloud Run job runs it.
    return respondExecute(ctx, principal, res, provider, session.id, command, timeout, { fallbackToJob: true });
  }
  throw apiError('method_not_allowed', `${method} is not allowed on ${path}`);
}
