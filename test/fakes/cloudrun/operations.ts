/**
 * google.longrunning operations, as the Cloud Run Admin API v2 keeps them: `projects/{p}/locations/{l}/operations/{uuid}`,
 * `metadata` the resource as it was when the call was made, and once `done`, either `response` (the resource as it
 * ended) or `error` (a google.rpc.Status). Both carry `@type`. A pending operation has no `done` field (proto3 JSON
 * leaves out false), which is how the client reads it.
 */
import { randomUUID } from 'node:crypto';
import type { RpcStatus } from './errors.js';
import { type Json, type Parent, parentName } from './resources.js';

export const TYPE = {
  service: 'type.googleapis.com/google.cloud.run.v2.Service',
  job: 'type.googleapis.com/google.cloud.run.v2.Job',
  execution: 'type.googleapis.com/google.cloud.run.v2.Execution',
} as const;

export interface Operation {
  name: string;
  metadata: Json;
  done?: true;
  response?: Json;
  error?: RpcStatus;
}

interface Entry {
  op: Operation;
  waiters: Set<() => void>;
}

/** At most this many operations are kept (oldest first out), as Google keeps them only for a while. */
const MAX_KEPT = 1000;

export class Operations {
  private readonly ops = new Map<string, Entry>();

  /** A new pending operation; finish it with `done(response)` or `fail(error)`. */
  start(parent: Parent, typeUrl: string, metadata: Json) {
    const name = `${parentName(parent)}/operations/${randomUUID()}`;
    const entry: Entry = { op: { name, metadata: { '@type': typeUrl, ...metadata } }, waiters: new Set() };
    this.ops.set(name, entry);
    if (this.ops.size > MAX_KEPT) this.ops.delete(this.ops.keys().next().value!);
    const settle = (patch: Partial<Operation>) => {
      if (entry.op.done) return;
      entry.op = { ...entry.op, done: true, ...patch };
      for (const w of entry.waiters) w();
      entry.waiters.clear();
    };
    return {
      name,
      done: (response: Json) => settle({ response: { '@type': typeUrl, ...response } }),
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

  /** The operations under `parent`, oldest first. */
  list(parent: Parent): Operation[] {
    const prefix = `${parentName(parent)}/operations/`;
    return [...this.ops.values()].filter((e) => e.op.name.startsWith(prefix)).map((e) => structuredClone(e.op));
  }

  /** Resolves when the operation is done, or after `timeoutMs` with it as it is then. */
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

  /** Wakes every waiter (the fake is closing). */
  wakeAll(): void {
    for (const e of this.ops.values()) {
      for (const w of e.waiters) w();
    }
  }
}
