/**
 * Typed errors, one vocabulary for the CLI, the server and the SDK. Every failure onmemos itself reports is an
 * OnmemosError: a one-line message, a stable machine-readable code (in `--json` error output and the HTTP API's
 * `{"error":{"code","message"}}`), the HTTP status that code has, an exit code, and an optional hint. Only
 * bin/onmemos.js turns them into a process exit.
 */

/** Each code with its HTTP status and the CLI's exit code. */
export const ERROR_CODES = {
  usage: { status: 400, exit: 2 },
  bad_request: { status: 400, exit: 2 },
  invalid_argument: { status: 422, exit: 2 },
  /** The provider cannot do what the request asks (a capability it lacks). */
  unsupported: { status: 422, exit: 2 },
  auth: { status: 401, exit: 1 },
  forbidden: { status: 403, exit: 1 },
  not_found: { status: 404, exit: 1 },
  method_not_allowed: { status: 405, exit: 1 },
  conflict: { status: 409, exit: 1 },
  too_large: { status: 413, exit: 1 },
  unsupported_media_type: { status: 415, exit: 1 },
  misdirected_request: { status: 421, exit: 1 },
  too_many_requests: { status: 429, exit: 1 },
  /** The caller went away, or was interrupted (Ctrl-C): what was being made was removed. */
  interrupted: { status: 499, exit: 130 },
  internal: { status: 500, exit: 1 },
  provider_error: { status: 502, exit: 1 },
  unavailable: { status: 503, exit: 1 },
} as const satisfies Record<string, { status: number; exit: number }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export class OnmemosError extends Error {
  readonly code: ErrorCode;
  exitCode: number;
  readonly hint?: string;
  constructor(message: string, opts: { code?: ErrorCode; exitCode?: number; hint?: string; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.code = opts.code ?? 'internal';
    this.exitCode = opts.exitCode ?? ERROR_CODES[this.code].exit;
    this.hint = opts.hint;
  }
  /** The HTTP status the server answers this error with. */
  get status(): number {
    return ERROR_CODES[this.code].status;
  }
}

/** A bad flag, argument or request field: nothing was made. */
export class UserError extends OnmemosError {
  constructor(message: string, opts: { hint?: string; exitCode?: number; code?: ErrorCode } = {}) {
    super(message, { code: opts.code ?? 'invalid_argument', exitCode: opts.exitCode ?? 2, hint: opts.hint });
  }
}

/** A request the provider's capabilities cannot honour: refused before anything was made. */
export class UnsupportedError extends OnmemosError {
  constructor(message: string, opts: { hint?: string } = {}) {
    super(message, { code: 'unsupported', hint: opts.hint });
  }
}

export class NotFoundError extends OnmemosError {
  constructor(message: string, opts: { hint?: string } = {}) {
    super(message, { code: 'not_found', hint: opts.hint });
  }
}

/** A session exists but cannot do what was asked (stopped, expired, being made). */
export class ConflictError extends OnmemosError {
  constructor(message: string, opts: { hint?: string } = {}) {
    super(message, { code: 'conflict', hint: opts.hint });
  }
}

/** Something this machine lacks (a system package, a toolchain, kernel support), or a backend out of reach. */
export class UnavailableError extends OnmemosError {
  constructor(message: string, opts: { hint?: string; cause?: unknown } = {}) {
    super(message, { code: 'unavailable', hint: opts.hint, cause: opts.cause });
  }
}

/** A backend call failed; the original error is kept as `cause` (shown with --debug). */
export class ProviderError extends OnmemosError {
  constructor(message: string, opts: { hint?: string; cause?: unknown } = {}) {
    super(message, { code: 'provider_error', hint: opts.hint, cause: opts.cause });
  }
}

/** No API key, or a wrong one. */
export class AuthError extends OnmemosError {
  constructor(message: string, opts: { hint?: string } = {}) {
    super(message, { code: 'auth', hint: opts.hint });
  }
}

/** The API key may not use that namespace. */
export class ForbiddenError extends OnmemosError {
  constructor(message: string, opts: { hint?: string } = {}) {
    super(message, { code: 'forbidden', hint: opts.hint });
  }
}

/**
 * A create (or another long step) stopped by Ctrl-C, a signal or a client that went away; whatever it had made was
 * removed. The exit code is 128+N for signal N (130 for SIGINT).
 */
export class InterruptedError extends OnmemosError {
  constructor(message: string, opts: { signal?: NodeJS.Signals; signalNumber?: number } = {}) {
    super(message, { code: 'interrupted', exitCode: 128 + (opts.signalNumber ?? 2) });
  }
}

const isCode = (c: unknown): c is ErrorCode => typeof c === 'string' && Object.hasOwn(ERROR_CODES, c);

/** The typed error for an error response of the API (`{"error":{"code","message"}}` with its status). */
export function errorFromResponse(status: number, body: unknown): OnmemosError {
  const e = (body as { error?: { code?: unknown; message?: unknown; hint?: unknown } } | undefined)?.error;
  const message = typeof e?.message === 'string' ? e.message : `the server answered HTTP ${status}`;
  const hint = typeof e?.hint === 'string' ? e.hint : undefined;
  const code: ErrorCode = isCode(e?.code) ? e.code : codeForStatus(status);
  switch (code) {
    case 'auth':
      return new AuthError(message, { hint: hint ?? 'set ONMEMOS_API_KEY or --api-key' });
    case 'forbidden':
      return new ForbiddenError(message, { hint });
    case 'not_found':
      return new NotFoundError(message, { hint });
    case 'conflict':
      return new ConflictError(message, { hint });
    case 'unsupported':
      return new UnsupportedError(message, { hint });
    case 'unavailable':
      return new UnavailableError(message, { hint });
    case 'provider_error':
      return new ProviderError(message, { hint });
    case 'usage':
    case 'bad_request':
    case 'invalid_argument':
      return new UserError(message, { code, hint });
    default:
      return new OnmemosError(message, { code, hint });
  }
}

/** The code an error status stands for, for a server that sent no code of ours. */
function codeForStatus(status: number): ErrorCode {
  for (const [code, v] of Object.entries(ERROR_CODES)) if (v.status === status) return code as ErrorCode;
  return status >= 500 ? 'provider_error' : 'bad_request';
}

export function isOnmemosError(e: unknown): e is OnmemosError {
  return e instanceof OnmemosError;
}
