/**
 * google.longrunning operations, as the Cloud Run Admin API v2 keeps them (the store: ../operations.ts):
 * `projects/{p}/locations/{l}/operations/{uuid}`, `metadata` the resource as it was when the call was made, and
 * once `done`, either `response` (the resource as it ended) or `error`. Both carry `@type`.
 */
import { randomUUID } from 'node:crypto';
import { type Operation, OperationStore, type PendingOperation } from '../operations.js';
import { type Json, type Parent, parentName } from './resources.js';

export const TYPE = {
  service: 'type.googleapis.com/google.cloud.run.v2.Service',
  job: 'type.googleapis.com/google.cloud.run.v2.Job',
  execution: 'type.googleapis.com/google.cloud.run.v2.Execution',
} as const;

export type { Operation } from '../operations.js';

export class Operations extends OperationStore {
  /** A new pending operation; finish it with `done(response)` or `fail(error)`. */
  start(parent: Parent, typeUrl: string, metadata: Json): PendingOperation {
    return this.add(
      `${parentName(parent)}/operations/${randomUUID()}`,
      { '@type': typeUrl, ...metadata },
      { response: (r) => ({ '@type': typeUrl, ...r }) },
    );
  }

  /** The operations under `parent`, oldest first. */
  list(parent: Parent): Operation[] {
    return this.under(`${parentName(parent)}/operations/`);
  }
}
