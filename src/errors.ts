/**
 * Typed errors. Every failure onmemos itself reports is an OnmemosError: a one-line message, a stable
 * machine-readable code (also used in `--json` error output and by the HTTP API), an exit code, and an
 * optional hint. Only bin/onmemos.js turns them into a process exit.
 */
export type ErrorCode =
  | 'usage'
  | 'invalid_argument'
  | 'not_found'
  | 'conflict'
  | 'unavailable'
  | 'provider_error'
  | 'auth'
  | 'forbidden'
  | 'internal';

export class OnmemosError extends Error {
  readonly code: ErrorCode;
  exitCode: number;
  readonly hint?: string;
  constructor(message: string, opts: { code?: ErrorCode; exitCode?: number; hint?: string; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.code = opts.code ?? 'internal';
    this.exitCode = opts.exitCode ?? 1;
    this.hint = opts.hint;
  }
}

/** A bad flag, argument or request field: nothing was made. */
export class UserError extends OnmemosError {
  constructor(message: string, opts: { hint?: string; exitCode?: number; code?: ErrorCode } = {}) {
    super(message, { code: opts.code ?? 'invalid_argument', exitCode: opts.exitCode ?? 2, hint: opts.hint });
  }
}

export class NotFoundError extends OnmemosError {
  constructor(message: string, opts: { hint?: string } = {}) {
    super(message, { code: 'not_found', exitCode: 1, hint: opts.hint });
  }
}

/** A session exists but cannot do what was asked (stopped, expired, capability missing). */
export class ConflictError extends OnmemosError {
  constructor(message: string, opts: { hint?: string } = {}) {
    super(message, { code: 'conflict', exitCode: 1, hint: opts.hint });
  }
}

/** Something this machine lacks (a system package, a toolchain, kernel support). */
export class UnavailableError extends OnmemosError {
  constructor(message: string, opts: { hint?: string; cause?: unknown } = {}) {
    super(message, { code: 'unavailable', exitCode: 1, hint: opts.hint, cause: opts.cause });
  }
}

/** A backend call failed; the original error is kept as `cause` (shown with --debug). */
export class ProviderError extends OnmemosError {
  constructor(message: string, opts: { hint?: string; cause?: unknown } = {}) {
    super(message, { code: 'provider_error', exitCode: 1, hint: opts.hint, cause: opts.cause });
  }
}

/** No API key, or a wrong one. */
export class AuthError extends OnmemosError {
  constructor(message: string, opts: { hint?: string } = {}) {
    super(message, { code: 'auth', exitCode: 1, hint: opts.hint });
  }
}

/** The API key may not use that namespace. */
export class ForbiddenError extends OnmemosError {
  constructor(message: string, opts: { hint?: string } = {}) {
    super(message, { code: 'forbidden', exitCode: 1, hint: opts.hint });
  }
}

/** The typed error for an error response of the API (`{"error":{"code","message"}}` with its status). */
export function errorFromResponse(status: number, body: unknown): OnmemosError {
  const e = (body as { error?: { code?: string; message?: string } } | undefined)?.error;
  const message = e?.message ?? `the server answered HTTP ${status}`;
  if (status === 401) return new AuthError(message, { hint: 'set ONMEMOS_API_KEY or --api-key' });
  if (status === 403) return new ForbiddenError(message);
  if (status === 404) return new NotFoundError(message);
  if (status === 409) return new ConflictError(message);
  if (status === 400 || status === 413 || status === 415 || status === 421 || status === 422) {
    return new UserError(message);
  }
  if (status === 503 || status === 429) return new UnavailableError(message);
  return new ProviderError(message);
}

export function isOnmemosError(e: unknown): e is OnmemosError {
  return e instanceof OnmemosError;
}
