/**
 * google.longrunning operations as Google's APIs keep them, for the fakes of those APIs (Cloud Run, Cloud
 * Workstations): each has a `name`, `metadata`, and once `done`, either `response` or `error` (a
 * google.rpc.Status). A pending operation has no `done` field (proto3 JSON leaves out false), which is how clients
 * read it. Each fake names its operations and shapes their metadata and response as its API does (its own
 * operations.ts); keeping, settling, listing and waiting are here.
 */
import type { RpcStatus } from './cloudrun/errors.js';

export type Json = Record<string, unknown>;

/** A type, not an interface: an operation is also plain JSON (`Json`) where a fake answers it. */
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

/** At most this many operations are kept (oldest first out), as Google keeps them only for a while. */
const MAX_KEPT = 1000;

/** What a fake does with an operation it started: settle it once, and read it. */
export interface PendingOperation {
  name: string;
  done(response: Json): void;
  fail(error: RpcStatus): void;
  get(): Operation;
}

export class OperationStore {
  private readonly ops = new Map<string, Entry>();

  /**
   * A new pending operation; `settled` shapes what it says once done (the response's `@type`, metadata such as an
   * `endTime`).
   */
  protected add(
    name: string,
    metadata: Json,
    settled: { response: (r: Json) => Json; metadata?: (m: Json) => Json },
  ): PendingOperation {
    const entry: Entry = { op: { name, metadata }, waiters: new Set() };
    this.ops.set(name, entry);
    if (this.ops.size > MAX_KEPT) this.ops.delete(this.ops.keys().next().value!);
    const settle = (patch: Partial<Operation>) => {
      if (entry.op.done) return;
      const m = settled.metadata ? settled.metadata(entry.op.metadata) : entry.op.metadata;
      entry.op = { ...entry.op, metadata: m, done: true, ...patch };
      for (const w of entry.waiters) w();
      entry.waiters.clear();
    };
    return {
      name,
      done: (response: Json) => settle({ response: settled.response(response) }),
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

  /** The operations whose names start with `prefix`, oldest first. */
  protected under(prefix: string): Operation[] {
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
    for (const e of this.ops.values()) for (const w of e.waiters) w();
  }
}
