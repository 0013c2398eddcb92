/**
 * google.longrunning operations as the Cloud Workstations API keeps them:
 * `projects/{p}/locations/{l}/operations/operation-{ms}-{hex}-{hex}-{hex}`, `metadata` an OperationMetadata
 * (`createTime`, `target`, `verb`, `apiVersion`, `endTime` once done) and, once `done`, either `response` (the
 * Workstation as it ended) or `error` (a google.rpc.Status). A pending operation has no `done` field (proto3 JSON
 * leaves out false). `@type` names the API version the call came through (v1 or v1beta); an operation is found
 * under either version, as on Google.
 */
import { randomBytes } from 'node:crypto';
import type { RpcStatus } from './errors.js';

export type Json = Record<string, unknown>;
export type ApiVersion = 'v1' | 'v1beta';

export const typeUrl = (version: ApiVersion, message: string) =>
  `type.googleapis.com/google.cloud.workstations.${version}.${message}`;

export type Operation = {
  name: string;
  metadata: Json;
  done?: true;
  response?: Json;
  error?: RpcStatus;
};

interface Entry {
  op: Operation;
  waiters: Set<() => void>;
}

const MAX_KEPT = 1000;

const hex = (bytes: number) => randomBytes(bytes).toString('hex');

export class Operations {
  private readonly ops = new Map<string, Entry>();

  /** A new pending operation on `target`; finish it with `done(response)` or `fail(error)`. */
  start(o: { location: string; target: string; verb: string; version: ApiVersion }) {
    const name = `${o.location}/operations/operation-${Date.now()}-${hex(7).slice(0, 13)}-${hex(4)}-${hex(4)}`;
    const metadata: Json = {
      '@type': typeUrl(o.version, 'OperationMetadata'),
      createTime: new Date().toISOString(),
      target: o.target,
      verb: o.verb,
      apiVersion: o.version,
    };
    const entry: Entry = { op: { name, metadata }, waiters: new Set() };
    this.ops.set(name, entry);
    if (this.ops.size > MAX_KEPT) this.ops.delete(this.ops.keys().next().value!);
    const settle = (patch: Partial<Operation>) => {
      if (entry.op.done) return;
      entry.op = {
        ...entry.op,
        metadata: { ...entry.op.metadata, endTime: new Date().toISOString() },
        done: true,
        ...patch,
      };
      for (const w of entry.waiters) w();
      entry.waiters.clear();
    };
    return {
      name,
      done: (response: Json) => settle({ response: { '@type': typeUrl(o.version, 'Workstation'), ...response } }),
      fail: (error: RpcStatus) => settle({ error }),
      get: () => structuredClone(entry.op),
    };
  }

  get(name: string): Operation | undefined {
    const e = this.ops.get(name);
    return e ? structuredClone(e.op) : undefined;
  }

  delete(name: string): boolean {
    return this.ops.delete(name);
  }

  /** The operations under `location` (`projects/p/locations/l`), oldest first. */
  list(location: string): Operation[] {
    const prefix = `${location}/operations/`;
    return [...this.ops.values()].filter((e) => e.op.name.startsWith(prefix)).map((e) => structuredClone(e.op));
  }

  /** Resolves when the operation is done (or once `timeoutMs` passed), with it as it is then. */
  async wait(name: string, timeoutMs: number, signal?: AbortSignal): Promise<Operation | undefined> {
    const e = this.ops.get(name);
    if (!e) return undefined;
    if (!e.op.done) {
      await new Promise<void>((resolve) => {
        const finish = () => {
          clearTimeout(timer);
          signal?.removeEventListener('abort', finish);
          e.waiters.delete(finish);
          resolve();
        };
        const timer = setTimeout(finish, timeoutMs);
        signal?.addEventListener('abort', finish, { once: true });
        e.waiters.add(finish);
      });
    }
    return structuredClone(e.op);
  }

  wakeAll(): void {
    for (const e of this.ops.values()) for (const w of e.waiters) w();
  }
}
