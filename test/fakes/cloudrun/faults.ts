/**
 * Faults a test can switch on, each showing what the real Cloud Run shows in that case: set at start
 * (`startCloudRunFake({ faults })`) or at any time (`fake.faults.set({...})`, `fake.faults.clear()`); a change
 * applies to what starts next (a revision being deployed, a task, a request).
 *
 * A `Match` is `true` (everything), a string (a substring of the resource's short name) or a RegExp.
 */
import { type GoogleApiError, injected } from './errors.js';

export type Match = boolean | string | RegExp;

export function matches(m: Match | undefined, name: string): boolean {
  if (m === undefined || m === false) return false;
  if (m === true) return true;
  return typeof m === 'string' ? name.includes(m) : m.test(name);
}

/** The long-running methods an operation fault can take. */
export type LroMethod =
  | 'createService'
  | 'updateService'
  | 'deleteService'
  | 'createJob'
  | 'updateJob'
  | 'deleteJob'
  | 'runJob'
  | 'cancelExecution'
  | 'deleteExecution';

export interface OperationFault {
  /** Which methods (default all of them). */
  method?: LroMethod | LroMethod[];
  /** The service's, job's or execution's id (default all). */
  name?: Match;
  /** The google.rpc.Code name the operation fails with (default INTERNAL), and its message. */
  code?: 'INTERNAL' | 'FAILED_PRECONDITION' | 'PERMISSION_DENIED' | 'RESOURCE_EXHAUSTED' | 'UNAVAILABLE';
  message?: string;
  /** How many operations fail (unbounded when absent). */
  count?: number;
}

export interface ApiErrorRule {
  /** Requests whose path (without the query) matches; every request when absent. */
  path?: string | RegExp;
  method?: string;
  /** How many matching requests fail; unbounded when absent (until cleared). */
  count?: number;
  /** 500 INTERNAL (default), 503 UNAVAILABLE or 429 RESOURCE_EXHAUSTED, worded as Google words them. */
  code?: 500 | 503 | 429;
  message?: string;
}

export interface FaultSpec {
  /** Long-running operations that end `done` with an `error` (the resource is left as it was, as a failed deploy leaves it). */
  failOperations?: OperationFault;
  /**
   * Services (by id) whose container starts but never listens on $PORT: the revision stays RECONCILING until the
   * startup timeout, then fails with the real "failed to start and listen on the port" message.
   */
  neverListen?: Match;
  /** Jobs (by id) whose every task exits with this code (default 1) instead of running its command. */
  failTasks?: { job?: Match; exitCode?: number };
  /** API requests answered with an error instead (the first matching rule with requests left applies). */
  apiErrors?: ApiErrorRule[];
  /** Every API request is answered this much later. */
  latencyMs?: number;
  /** A container (service instance or task) starts this much later, as a slow image pull or cold start would. */
  coldStartMs?: number;
}

export class Faults {
  private spec: FaultSpec = {};
  constructor(initial: FaultSpec = {}) {
    this.set(initial);
  }

  get current(): Readonly<FaultSpec> {
    return this.spec;
  }

  /** Merges `patch` into the faults in force (a key set to undefined removes that fault). */
  set(patch: FaultSpec): void {
    this.spec = { ...this.spec, ...patch };
    if (patch.apiErrors) this.spec.apiErrors = patch.apiErrors.map((r) => ({ ...r }));
    if (patch.failOperations) this.spec.failOperations = { ...patch.failOperations };
  }

  clear(): void {
    this.spec = {};
  }

  /** The error to answer this request with, if an apiErrors rule takes it (using up one of its count). */
  apiError(method: string, path: string): GoogleApiError | undefined {
    for (const r of this.spec.apiErrors ?? []) {
      if (r.count !== undefined && r.count <= 0) continue;
      if (r.method && r.method.toUpperCase() !== method) continue;
      if (r.path !== undefined && !(typeof r.path === 'string' ? path.includes(r.path) : r.path.test(path))) continue;
      if (r.count !== undefined) r.count--;
      return injected(r.code ?? 500, r.message);
    }
    return undefined;
  }

  /** The failure for an operation of `method` on `id`, if one is set (using up one of its count). */
  takeOperationFailure(
    method: LroMethod,
    id: string,
  ): { code: NonNullable<OperationFault['code']>; message: string } | undefined {
    const f = this.spec.failOperations;
    if (!f) return undefined;
    const methods = f.method === undefined ? undefined : Array.isArray(f.method) ? f.method : [f.method];
    if (methods && !methods.includes(method)) return undefined;
    if (f.name !== undefined && !matches(f.name, id)) return undefined;
    if (f.count !== undefined) {
      if (f.count <= 0) return undefined;
      f.count--;
    }
    return { code: f.code ?? 'INTERNAL', message: f.message ?? 'Internal error encountered.' };
  }

  /** The exit code a task of this job is forced to, if any. */
  forcedExit(job: string): number | undefined {
    const f = this.spec.failTasks;
    if (!f || (f.job !== undefined && !matches(f.job, job))) return undefined;
    return f.exitCode ?? 1;
  }
}
