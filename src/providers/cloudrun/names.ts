/**
 * Cloud Run names derived from a session id. A service id is lowercase letters, digits and '-', starts with a
 * letter and has at most 49 characters (PROTOCOLS.md §2); session ids start with `ws-` and are longer when the
 * namespace and user are. A longer id keeps its first 40 characters and gains 8 hex characters of its SHA-256:
 * deterministic (any onmemos finds the service again from the id alone), and two ids that share those 40
 * characters still get different names.
 */
import { boundedName } from '../google.js';

export const MAX_SERVICE_ID = 49;

export function serviceName(id: string): string {
  return boundedName(id, MAX_SERVICE_ID);
}

/**
 * The job for a session's one-shot commands: the service's name. Jobs and services are apart in the API (and in
 * gcloud: `gcloud run jobs list`), so the same name collides with nothing, and it is as unique as the service's.
 */
export function jobName(id: string): string {
  return serviceName(id);
}
