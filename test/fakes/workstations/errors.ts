/**
 * Google API errors as Google's front end and the Cloud Workstations API word them. The shape (and the class) is the
 * Cloud Run fake's: over REST `{"error":{"code":<HTTP status>,"message","status":"<RPC code name>","details":[…]}}`,
 * in a finished operation a google.rpc.Status `{"code":<RPC code number>,"message"}`.
 */
import { type ErrorDetail, GoogleApiError } from '../cloudrun/errors.js';

export { GoogleApiError, type RpcStatus, rpcCode } from '../cloudrun/errors.js';

const AUTH_HELP =
  'Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.';

const errorInfo = (reason: string, method: string): ErrorDetail => ({
  '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
  reason,
  domain: 'googleapis.com',
  metadata: { method, service: 'workstations.googleapis.com' },
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

/** `Resource 'projects/…/workstations/w' was not found`, the newer Google APIs' wording. */
export const notFound = (name: string) => new GoogleApiError('NOT_FOUND', `Resource '${name}' was not found`);

export const alreadyExists = (name: string) =>
  new GoogleApiError('ALREADY_EXISTS', `Resource '${name}' already exists`);

export const invalidArgument = (message: string) => new GoogleApiError('INVALID_ARGUMENT', message);

export const failedPrecondition = (message: string) => new GoogleApiError('FAILED_PRECONDITION', message);

/** A field that fails validation, with a google.rpc.BadRequest detail. */
export const fieldViolation = (field: string, description: string) =>
  new GoogleApiError('INVALID_ARGUMENT', `Invalid value for field '${field}': ${description}`, [
    { '@type': 'type.googleapis.com/google.rpc.BadRequest', fieldViolations: [{ field, description }] },
  ]);

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
            "Quota exceeded for quota metric 'Read requests' and limit 'Read requests per minute' of service 'workstations.googleapis.com'.",
        )
      : new GoogleApiError('INTERNAL', message ?? 'Internal error encountered.');
