/** Small HTTP helpers: JSON responses, the `{"error":{"code","message"}}` shape, bounded JSON bodies. */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { type ErrorCode, OnmemosError } from '../errors.js';

/** An error of the API, in the one vocabulary of src/errors.ts (its code decides the status). */
export function apiError(code: ErrorCode, message: string): OnmemosError {
  return new OnmemosError(message, { code });
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** The HTTP status for an error: our own codes map to the document's statuses; anything else is a 500. */
export function errorStatus(e: unknown): { status: number; code: ErrorCode; message: string; hint?: string } {
  if (e instanceof OnmemosError) {
    return { status: e.status, code: e.code, message: e.message, ...(e.hint ? { hint: e.hint } : {}) };
  }
  return { status: 500, code: 'internal', message: 'internal error' };
}

/** `{"error":{"code","message","hint"?}}` with the code's status; the hint reaches a remote CLI's error line. */
export function sendError(res: ServerResponse, e: unknown): void {
  const { status, ...error } = errorStatus(e);
  if (!res.headersSent) sendJson(res, status, { error });
  else res.destroy();
}

/** Reads a JSON object body of at most `limit` bytes: 413 past it, 400 for anything that is not an object. */
export async function readJsonBody(req: IncomingMessage, limit: number): Promise<Record<string, unknown>> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limit) throw apiError('too_large', `request body over ${limit} bytes`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw apiError('too_large', `request body over ${limit} bytes`);
    chunks.push(chunk as Buffer);
  }
  if (size === 0) return {};
  let body: unknown;
  try {
    body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw apiError('bad_request', 'the request body is not valid JSON');
  }
  if (!body || typeof body !== 'object' || Array.isArray(body)) {
    throw apiError('bad_request', 'the request body must be a JSON object');
  }
  return body as Record<string, unknown>;
}
