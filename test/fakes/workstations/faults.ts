/**
 * Faults a test can switch on, as in the Cloud Run fake: set at start (`startWorkstationsFake({ faults })`) or at any
 * time (`fake.faults.set({...})`, `fake.faults.clear()`); a change applies to what starts next (an operation, a
 * start, a request). A `Match` is `true` (everything), a string (a substring of the workstation id) or a RegExp.
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
  | 'createWorkstation'
  | 'updateWorkstation'
  | 'startWorkstation'
  | 'stopWorkstation'
  | 'deleteWorkstation';

export interface OperationFault {
  /** Which methods (default all of them). */
  method?: LroMethod | LroMethod[];
  /** The workstation's id (default all). */
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
  /**
   * Long-running operations that end `done` with an `error`: a failed create makes no workstation, a failed start
   * leaves it STATE_STOPPED, a failed stop leaves it running, a failed delete or update changes nothing.
   */
  failOperations?: OperationFault;
  /** Workstations (by id) whose start never ends: STATE_STARTING (reconciling) until stopped or deleted. */
  neverRunning?: Match;
  /** Workstations (by id) that run without sshd: the tunnel to port 22 answers 503, as for any port nothing listens on. */
  noSshd?: Match;
  /** API requests answered with an error instead (the first matching rule with requests left applies). */
  apiErrors?: ApiErrorRule[];
  /** Every API request is answered this much later. */
  latencyMs?: number;
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
}
