/**
 * The /v1/sessions routes (the WebSocket ones are in exec-route.ts and json-shell.ts):
 *
 *   POST   /v1/sessions                      create (create.ts)
 *   GET    /v1/sessions?namespace=&user=&provider=
 *                                            list; providers that did not answer are named in x-onmemos-unreachable
 *   GET    /v1/sessions/{id}
 *   DELETE /v1/sessions/{id}
 *   POST   /v1/sessions/{id}/execute         {command, timeout} → {stdout, stderr, returncode, success}
 *   GET    /v1/sessions/{id}/connect         ConnectInfo
 */
import { V5 } from '../exec/v5.js';
import {
  type ConnectInfo,
  parseCreateRequest,
  type SessionFilter,
  UNREACHABLE_HEADER,
  validateName,
} from '../session/model.js';
import { allows } from './auth.js';
import { type ApiRequest, authorizedSession, bodyLimit, checkNamespace, shown } from './context.js';
import { respondCreate } from './create.js';
import { checkTimeout, respondExecute } from './execute.js';
import { apiError, readJsonBody, sendJson } from './http.js';

/** Answers a request whose path is /v1/sessions or under it. */
export async function sessionRoutes(a: ApiRequest): Promise<void> {
  const { ctx, req, res, url, path, method, principal } = a;
  if (path === '/v1/sessions') {
    if (method === 'POST') {
      const request = parseCreateRequest(await readJsonBody(req, bodyLimit(ctx)));
      checkNamespace(principal, request.namespace);
      return respondCreate(ctx, req, res, request, (s) => shown(s));
    }
    if (method === 'GET') {
      const { sessions, unreachable } = await ctx.opts.registry.list(filterFrom(url));
      if (unreachable.length > 0) res.setHeader(UNREACHABLE_HEADER, encodeURIComponent(JSON.stringify(unreachable)));
      return sendJson(
        res,
        200,
        sessions.filter((s) => allows(principal, s.namespace)).map((s) => shown(s)),
      );
    }
    throw apiError('method_not_allowed', `${method} is not allowed on ${path}`);
  }

  const m = /^\/v1\/sessions\/([^/]+)(?:\/(execute|connect))?$/.exec(path);
  if (!m) throw apiError('not_found', `no route for ${method} ${path}`);
  const [, rawId, action] = m;
  const { provider, session } = await authorizedSession(ctx.opts, principal, rawId!);

  if (!action && method === 'GET') return sendJson(res, 200, shown(session));
  if (!action && method === 'DELETE') {
    await provider.delete(session.id);
    return sendJson(res, 200, { id: session.id, deleted: true });
  }
  if (action === 'execute' && method === 'POST') {
    const body = await readJsonBody(req, bodyLimit(ctx));
    const command = body.command;
    if (typeof command !== 'string' || command.length === 0) {
      throw apiError('bad_request', '"command" must be a non-empty string');
    }
    return respondExecute(ctx, principal, res, provider, session.id, command, checkTimeout(body.timeout ?? 120));
  }
  if (action === 'connect' && method === 'GET') {
    const info = await provider.connect(session.id);
    // The provider's own exec URL (a socket on this host) is not the client's: it reaches the session through here.
    return sendJson(res, 200, {
      ...info,
      exec: { url: `/v1/sessions/${session.id}/exec`, protocol: V5 },
      json_shell: `/v1/sessions/${session.id}/shell`,
    } satisfies ConnectInfo);
  }
  throw apiError('method_not_allowed', `${method} is not allowed on ${path}`);
}

function filterFrom(url: URL): SessionFilter {
  const f: SessionFilter = {};
  const ns = url.searchParams.get('namespace');
  const user = url.searchParams.get('user');
  const provider = url.searchParams.get('provider');
  if (ns) f.namespace = validateName('namespace', ns);
  if (user) f.user = validateName('user', user);
  if (provider) f.provider = provider as SessionFilter['provider'];
  return f;
}
