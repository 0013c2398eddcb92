/**
 * google.longrunning operations as the Cloud Workstations API keeps them:
 * `projects/{p}/locations/{l}/operations/operation-{ms}-{hex}-{hex}-{hex}`, `metadata` an OperationMetadata
 * (`createTime`, `target`, `verb`, `apiVersion`, `endTime` once done) and, once `done`, either `response` (the
 * Workstation as it ended) or `error` (the store: ../operations.ts). `@type` names the API version the call came through (v1 or v1beta); an operation is found
 * under either version, as on Google.
 */
import { randomBytes } from 'node:crypto';
import { type Json, type Operation, OperationStore, type PendingOperation } from '../operations.js';

export type { Json };
export type ApiVersion = 'v1' | 'v1beta';

export const typeUrl = (version: ApiVersion, message: string) =>
  `type.googleapis.com/google.cloud.workstations.${version}.${message}`;

export type { Operation } from '../operations.js';

const hex = (bytes: number) => randomBytes(bytes).toString('hex');

export class Operations extends OperationStore {
  /** A new pending operation on `target`; finish it with `done(response)` or `fail(error)`. */
  start(o: { location: string; target: string; verb: string; version: ApiVersion }): PendingOperation {
    const name = `${o.location}/operations/operation-${Date.now()}-${hex(7).slice(0, 13)}-${hex(4)}-${hex(4)}`;
    return this.add(
      name,
      {
        '@type': typeUrl(o.version, 'OperationMetadata'),
        createTime: new Date().toISOString(),
        target: o.target,
        verb: o.verb,
        apiVersion: o.version,
      },
      {
        response: (r) => ({ '@type': typeUrl(o.version, 'Workstation'), ...r }),
        metadata: (m) => ({ ...m, endTime: new Date().toISOString() }),
      },
    );
  }

  /** The operations under `location` (`projects/p/locations/l`), oldest first. */
  list(location: string): Operation[] {
    return this.under(`${location}/operations/`);
  }
}
