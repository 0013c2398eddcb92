/**
 * The create of both APIs (`POST /v1/sessions`, `POST /v1/cloudrun/workspaces`), answered one of two ways:
 *
 * - as the OnMemOS document gives it: one JSON object, the session, once it is made;
 * - with `Accept: application/x-ndjson` (NDJSON), streamed: 200 and one JSON object per line, `{"progress":{step,
 *   message,id?}}` for each step, then `{"session":{...}}` (the same object as the plain answer), or
 *   `{"error":{"code","message"}}` if the create failed after the stream began. The stream begins with the first
 *   progress event, which comes once the provider is chosen and the request checked against its capabilities: a
 *   refusal before then is a plain HTTP error, as without the header.
 *
 * Either way, a client that goes away aborts the create, and the provider removes what it had made.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { InterruptedError } from '../errors.js';
import { createSession } from '../providers/index.js';
import type { CreateOptions } from '../providers/provider.js';
import { type CreateSessionRequest, NDJSON, type ProgressEvent, type Session } from '../session/model.js';
import { gone, type ServerContext } from './context.js';
import { apiError, errorStatus, sendJson } from './http.js';

/** Whether the client's Accept header asks for NDJSON (and does not refuse it with q=0). */
export function wantsNdjson(req: IncomingMessage): boolean {
  const accept = req.headers.accept;
  if (!accept) return false;
  return accept.split(',').some((range) => {
    const [type, ...params] = range.split(';').map((p) => p.trim().toLowerCase());
    if (type !== NDJSON) return false;
    const q = params.find((p) => p.startsWith('q='));
    return q === undefined || Number(q.slice(2)) > 0;
  });
}

/** Creates the session and answers with it, shown by `show`: plain JSON, or NDJSON when the client asks for it. */
export async function respondCreate(
  ctx: ServerContext,
  req: IncomingMessage,
  res: ServerResponse,
  request: CreateSessionRequest,
  show: (s: Session) => Session,
): Promise<void> {
  if (request.network === 'host' && !ctx.opts.allowHostNetwork) {
    // A session on the host's network reaches whatever this machine serves on its loopback, this server included.
    throw apiError(
      'forbidden',
      "network host is refused by this server: a session on the host's network reaches the host's loopback (serve --allow-host-network allows it)",
    );
  }
  const signal = gone(res);
  if (!wantsNdjson(req)) return sendJson(res, 200, show(await create(ctx, request, { signal })));

  let streaming = false;
  const begin = () => {
    if (streaming) return;
    streaming = true;
    res.writeHead(200, { 'content-type': NDJSON, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' });
  };
  const line = (body: unknown) => {
    if (!res.destroyed && !res.writableEnded) res.write(`${JSON.stringify(body)}\n`);
  };
  const onProgress = (e: ProgressEvent) => {
    begin();
    line({ progress: { step: e.step, message: e.message, ...(e.id === undefined ? {} : { id: e.id }) } });
  };
  let session: Session;
  try {
    session = await create(ctx, request, { signal, onProgress });
  } catch (e) {
    if (!streaming) throw e; // nothing was sent yet: a plain HTTP error
    const { status: _, ...error } = errorStatus(e);
    line({ error });
    res.end();
    return;
  }
  begin();
  line({ session: show(session) });
  res.end();
}

/**
 * createSession, plus one guarantee: when the client went away but the provider finished anyway (it did not see
 * the abort in time), the session is removed, since nobody has its id.
 */
async function create(
  ctx: ServerContext,
  request: CreateSessionRequest,
  opts: CreateOptions & { signal: AbortSignal },
): Promise<Session> {
  const session = await createSession(ctx.opts.registry, request, opts);
  // A client that went away while the create ran is known only once this process has polled its socket: a create
  // that finished without waiting on I/O after the close arrived would answer nobody. One turn of the event loop.
  await new Promise<void>((resolve) => setImmediate(resolve));
  if (opts.signal.aborted) {
    await ctx.opts.registry
      .locate(session.id)
      .then(({ provider }) => provider.delete(session.id))
      .then(() => ctx.opts.registry.forget(session.id))
      .catch(() => {});
    throw new InterruptedError(`interrupted: the client went away; session ${session.id} was removed`);
  }
  return session;
}
