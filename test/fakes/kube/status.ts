/**
 * metav1.Status bodies, worded as the real API server words them: clients (client-go, client-node, our gke
 * provider) branch on `reason` and `code`, and people read `message`, so both must look like a cluster's.
 */

export interface StatusCause {
  reason?: string;
  message?: string;
  field?: string;
}

export interface Status {
  kind: 'Status';
  apiVersion: 'v1';
  metadata: Record<string, never>;
  status: 'Failure' | 'Success';
  message?: string;
  reason?: string;
  details?: { name?: string; kind?: string; causes?: StatusCause[]; retryAfterSeconds?: number };
  code: number;
}

/** An error that the server answers with its Status (and code as the HTTP status). */
export class ApiError extends Error {
  constructor(readonly status: Status) {
    super(status.message);
  }
}

function failure(code: number, reason: string, message: string, details?: Status['details']): ApiError {
  const status: Status = { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
  if (details) status.details = details;
  return new ApiError(status);
}

/** `pods "x" not found` (resource is the plural: pods, namespaces, persistentvolumeclaims). */
export const notFound = (resource: string, name: string) =>
  failure(404, 'NotFound', `${resource} "${name}" not found`, { name, kind: resource });

/** A path the server has no handler for. */
export const noRoute = () => failure(404, 'NotFound', 'the server could not find the requested resource', {});

export const alreadyExists = (resource: string, name: string) =>
  failure(409, 'AlreadyExists', `${resource} "${name}" already exists`, { name, kind: resource });

/** An update from a stale resourceVersion. */
export const conflict = (resource: string, name: string) =>
  failure(
    409,
    'Conflict',
    `Operation cannot be fulfilled on ${resource} "${name}": the object has been modified; please apply your changes to the latest version and try again`,
    { name, kind: resource },
  );

export interface FieldError {
  field: string;
  /** Invalid value / Required value / Forbidden / Unsupported value … */
  type: 'FieldValueInvalid' | 'FieldValueRequired' | 'FieldValueForbidden' | 'FieldValueNotSupported';
  detail: string;
  value?: unknown;
}

/** 422: `Pod "X" is invalid: metadata.name: Invalid value: "X": …`, one cause per field. */
export function invalid(kind: string, name: string, errors: FieldError[]): ApiError {
  const text = (e: FieldError) => {
    switch (e.type) {
      case 'FieldValueRequired':
        return `Required value${e.detail ? `: ${e.detail}` : ''}`;
      case 'FieldValueForbidden':
        return `Forbidden: ${e.detail}`;
      case 'FieldValueNotSupported':
        return `Unsupported value: ${JSON.stringify(e.value)}: ${e.detail}`;
      default:
        return `Invalid value: ${JSON.stringify(e.value)}: ${e.detail}`;
    }
  };
  const causes = errors.map((e) => ({ reason: e.type, message: text(e), field: e.field }));
  const all = errors.map((e) => `${e.field}: ${text(e)}`);
  const message = `${kind} "${name}" is invalid: ${all.length === 1 ? all[0] : `[${all.join(', ')}]`}`;
  return failure(422, 'Invalid', message, { name, kind, causes });
}

export const badRequest = (message: string) => failure(400, 'BadRequest', message);

/** `pods "x" is forbidden: …` */
export const forbidden = (resource: string, name: string, why: string) =>
  failure(403, 'Forbidden', `${resource} "${name}" is forbidden: ${why}`, { name, kind: resource });

export const unauthorized = () => failure(401, 'Unauthorized', 'Unauthorized');

export const methodNotAllowed = () =>
  failure(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource', {});

export const tooLarge = () => failure(413, 'RequestEntityTooLarge', 'the server has received too large a request body');

export const unsupportedMediaType = (type: string) =>
  failure(
    415,
    'UnsupportedMediaType',
    `the body of the request was in an unknown format - accepted media types include: application/json, application/merge-patch+json, application/strategic-merge-patch+json, application/json-patch+json (got ${type})`,
  );

/** A watch from a resourceVersion older than the server keeps. */
export const expired = (asked: string, oldest: number) =>
  failure(410, 'Expired', `too old resource version: ${asked} (${oldest})`);

/** 500, as the server reports a failure of its own or of a backend. */
export const internalError = (message: string) =>
  failure(500, 'InternalError', `Internal error occurred: ${message}`, { causes: [{ message }] });

export const serviceUnavailable = (message = 'the server is currently unable to handle the request') =>
  failure(503, 'ServiceUnavailable', message, {});

export const tooManyRequests = () =>
  failure(429, 'TooManyRequests', 'the server has received too many requests and has asked us to try again later', {
    retryAfterSeconds: 1,
  });

export function success(): Record<string, unknown> {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', code: 200 };
}
