/**
 * The /v1/sessions routes (the WebSocket ones are in exec-route.ts and json-shell.ts):
 *
 *   POST   /v1/sessions                      create; streamed progress with Accept: application/x-ndjson (create.ts)
 *   GET    /v1/sessions?namespace=&user=&provider=
 *                                            list; providers that did not answer are named in x-onmemos-unreachable
 *   GET    /v1/sessions/{id}
 *   DELETE /v1/sessions/{id}
 *   POST   /v1/sessions/{id}/execute         {command, timeout, via?: "job"} → {stdout, stderr, returncode, success}
 *   GET    /v1/sessions/{id}/connect         ConnectInfo
 *   POST   /v1/sessions/{id}/start | stop    → the session
 *   POST   /v1/sessions/{id}/extend          {ttl_minutes} → the session, expiring that long from now
 */
import { UnsupportedError } from '../errors.js';
import { V5 } from '../exec/v5.js';
import type { Provider } from '../providers/provider.js';
import {
  type ConnectInfo,
  parseCreateRequest,
  type Session,
  type SessionFilter,
  UNREACHABLE_HEADER,
  validateName,
  validateTtl,
} from '../session/model.js';
import { allows } from './auth.js';
import { type ApiRequest, authorizedSession, bodyLimit, checkNamespace, shown, webTerminalPath } from './context.js';
import { respondCreate } from './create.js';
import { checkTimeout, respondExecute } from './execute.js';
import { apiError, readJsonBody, sendJson } from './http.js';

const LIFECYCLE = ['start', 'stop', 'extend'] as const;
type LifecycleVerb = (typeof LIFECYCLE)[number];

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

  const m = /^\/v1\/sessions\/([^/]+)(?:\/(execute|connect|start|stop|extend))?$/.exec(path);
  if (!m) throw apiError('not_found', `no route for ${method} ${path}`);
  const [, rawId, action] = m;
  const { provider, session } = await authorizedSession(ctx.opts, principal, rawId!);

  if (!action && method === 'GET') return sendJson(res, 200, shown(session));
  if (!action && method === 'DELETE') {
    await provider.delete(session.id);
    ctx.opts.registry.forget(session.id);
    return sendJson(res, 200, { id: session.id, deleted: true });
  }
  if (action === 'execute' && method === 'POST') {
    const body = await readJsonBody(req, bodyLimit(ctx));
    const command = body.command;
    if (typeof command !== 'string' || command.length === 0) {
      throw apiError('bad_request', '"command" must be a non-empty string');
    }
    const via = body.via;
    if (via !== undefined && via !== 'job') throw apiError('bad_request', '"via" must be "job" when given');
    return respondExecute(ctx, principal, res, provider, session.id, command, checkTimeout(body.timeout ?? 120), {
      via,
    });
  }
  if (action === 'connect' && method === 'GET') {
    const info = await provider.connect(session.id);
    // The provider's own exec URL (a socket on this host) is not the client's: it reaches the session through here.
    return sendJson(res, 200, {
      ...info,
      exec: { url: `/v1/sessions/${session.id}/exec`, protocol: V5 },
      json_shell: `/v1/sessions/${session.id}/shell`,
      web_terminal: webTerminalPath(session.id),
    } satisfies ConnectInfo);
  }
  if (isLifecycle(action) && method === 'POST') {
    const body = await readJsonBody(req, bodyLimit(ctx));
    return sendJson(res, 200, shown(await lifecycle(provider, session.id, action, body)));
  }
  throw apiError('method_not_allowed', `${method} is not allowed on ${path}`);
}

const isLifecycle = (action: string | undefined): action is LifecycleVerb =>
  (LIFECYCLE as readonly (string | undefined)[]).includes(action);

/**
 * start, stop or extend, where the provider can (capabilities.lifecycle, and the method): 422 unsupported where
 * it cannot. extend's `ttl_minutes` must be a number (400), a valid TTL (422) within the provider's maximum (422).
 */
async function lifecycle(
  provider: Provider,
  id: string,
  verb: LifecycleVerb,
  body: Record<string, unknown>,
): Promise<Session> {
  let minutes = 0;
  if (verb === 'extend') {
    if (typeof body.ttl_minutes !== 'number') throw apiError('bad_request', '"ttl_minutes" must be a number');
    minutes = validateTtl(body.ttl_minutes);
  }
  if (!provider.capabilities.lifecycle[verb] || !provider[verb]) {
    throw new UnsupportedError(`provider ${provider.kind} cannot ${verb} a session`);
  }
  if (verb === 'start') return provider.start!(id);
  if (verb === 'stop') return provider.stop!(id);
  const max = provider.capabilities.maxTtlMinutes;
  if (minutes > max) throw new UnsupportedError(`provider ${provider.kind} allows a TTL of at most ${max} minutes`);
  return provider.extend!(id, minutes);
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
