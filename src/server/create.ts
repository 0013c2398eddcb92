/**
 * The create of both APIs (`POST /v1/sessions`, `POST /v1/cloudrun/workspaces`): one JSON object, the session,
 * once it is made, as the OnMemOS document gives it. A client that goes away aborts the create, and the provider
 * removes what it had made.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createSession } from '../providers/index.js';
import type { CreateSessionRequest, Session } from '../session/model.js';
import { gone, type ServerContext } from './context.js';
import { sendJson } from './http.js';

/** Creates the session and answers with it, shown by `show`. */
export async function respondCreate(
  ctx: ServerContext,
  _req: IncomingMessage,
  res: ServerResponse,
  request: CreateSessionRequest,
  show: (s: Session) => Session,
): Promise<void> {
  const session = await createSession(ctx.opts.registry, request, { signal: gone(res) });
  sendJson(res, 200, show(session));
}
