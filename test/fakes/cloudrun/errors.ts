/**
 * Google API errors as Google's front end and the Cloud Run Admin API word them. Over REST an error is
 * `{"error":{"code":<HTTP status>,"message","status":"<RPC code name>","details":[…]}}`; in a finished long-running
 * operation it is a google.rpc.Status, `{"code":<RPC code number>,"message"}`. google-gax turns the first into a
 * GoogleError whose `.code` is the RPC code number (5 for NOT_FOUND) and `.httpStatusCode` the HTTP status.
 */

/** google.rpc.Code: name → [number, HTTP status]. */
const CODES = {
  INVALID_ARGUMENT: [3, 400],
  DEADLINE_EXCEEDED: [4, 504],
  NOT_FOUND: [5, 404],
  ALREADY_EXISTS: [6, 409],
  PERMISSION_DENIED: [7, 403],
  RESOURCE_EXHAUSTED: [8, 429],
  FAILED_PRECONDITION: [9, 400],
  ABORTED: [10, 409],
  UNIMPLEMENTED: [12, 501],
  INTERNAL: [13, 500],
  UNAVAILABLE: [14, 503],
  UNAUTHENTICATED: [16, 401],
} as const;
export type RpcCode = keyof typeof CODES;

/** One of google.rpc's detail messages, with its @type. */
export type ErrorDetail = { '@type': string } & Record<string, unknown>;

/** google.rpc.Status, as a finished operation carries it. */
export interface RpcStatus {
  code: number;
  message: string;
  details?: ErrorDetail[];
}

export class GoogleApiError extends Error {
  constructor(
    readonly status: RpcCode,
    message: string,
    readonly details?: ErrorDetail[],
  ) {
    super(message);
  }

  get httpCode(): number {
    return CODES[this.status][1];
  }

  /** The REST body. */
  body(): { error: { code: number; message: string; status: RpcCode; details?: ErrorDetail[] } } {
    return {
      error: {
        code: this.httpCode,
        message: this.message,
        status: this.status,
        ...(this.details ? { details: this.details } : {}),
      },
    };
  }

  /** The same error inside a finished operation. */
  rpcStatus(): RpcStatus {
    return { code: CODES[this.status][0], message: this.message, ...(this.details ? { details: this.details } : {}) };
  }
}

export const rpcCode = (name: RpcCode): number => CODES[name][0];

const AUTH_HELP =
  'Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.';

const errorInfo = (reason: string, method: string): ErrorDetail => ({
  '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
  reason,
  domain: 'googleapis.com',
  metadata: { method, service: 'run.googleapis.com' },
});

/** No Authorization header (what Google's front end answers before the API sees the request). */
export const credentialsMissing = (method: string) =>
  new GoogleApiError('UNAUTHENTICATED', `Request is missing required authentication credential. ${AUTH_HELP}`, [
    errorInfo('CREDENTIALS_MISSING', method),
  ]);

/** A token that is not one the front end accepts. */
export const badCredentials = (method: string) =>
  new GoogleApiError('UNAUTHENTICATED', `Request had invalid authentication credentials. ${AUTH_HELP}`, [
    errorInfo('ACCESS_TOKEN_TYPE_UNSUPPORTED', method),
  ]);

/** `Resource 'x' of kind 'SERVICE' in region 'r' in project 'p' does not exist.` */
export const notFound = (
  kind: 'SERVICE' | 'JOB' | 'EXECUTION' | 'TASK' | 'REVISION',
  id: string,
  region: string,
  project: string,
) =>
  new GoogleApiError(
    'NOT_FOUND',
    `Resource '${id}' of kind '${kind}' in region '${region}' in project '${project}' does not exist.`,
  );

export const operationNotFound = (name: string) =>
  new GoogleApiError('NOT_FOUND', `Operation '${name}' does not exist.`);

export const alreadyExists = () => new GoogleApiError('ALREADY_EXISTS', 'Resource already exists.');

/** A field that fails validation: `Violation in <Request>.<field>: <description>`, with a BadRequest detail. */
export const fieldViolation = (request: string, field: string, description: string) => {
  const where = `Violation in ${request}.${field}`;
  return new GoogleApiError('INVALID_ARGUMENT', `${where}: ${description}`, [
    { '@type': 'type.googleapis.com/google.rpc.BadRequest', fieldViolations: [{ field: where, description }] },
  ]);
};

export const invalidArgument = (message: string) => new GoogleApiError('INVALID_ARGUMENT', message);

/** A URL that names no method (Google's front end answers these with an HTML 404; JSON here). */
export const noMethod = (method: string, path: string) =>
  new GoogleApiError('NOT_FOUND', `The requested URL ${path} was not found on this server. (${method})`);

export const injected = (code: 500 | 503 | 429, message?: string) =>
  code === 503
    ? new GoogleApiError('UNAVAILABLE', message ?? 'The service is currently unavailable.')
    : code === 429
      ? new GoogleApiError(
          'RESOURCE_EXHAUSTED',
          message ??
            "Quota exceeded for quota metric 'Read requests' and limit 'Read requests per minute per region' of service 'run.googleapis.com'.",
        )
      : new GoogleApiError('INTERNAL', message ?? 'Internal error encountered.');
