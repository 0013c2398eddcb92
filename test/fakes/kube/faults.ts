/**
 * Faults a test can switch on, each showing what a real cluster shows in that case: set at start
 * (`startKubeFake({ faults })`) or at any time (`fake.faults.set({...})`, `fake.faults.clear()`); pods already there
 * follow the change (a pod stuck on an image pull starts once the fault is cleared, as after a fixed registry).
 *
 * A `Match` is `true` (everything), a string (a substring of the name) or a RegExp.
 */
import { internalError, type Status, serviceUnavailable, tooManyRequests } from './status.js';

export type Match = boolean | string | RegExp;

export function matches(m: Match | undefined, name: string): boolean {
  if (m === undefined || m === false) return false;
  if (m === true) return true;
  return typeof m === 'string' ? name.includes(m) : m.test(name);
}

export interface ApiErrorRule {
  /** Requests whose path (without the query) matches; every request when absent. */
  path?: string | RegExp;
  /** Only this method (GET, POST, DELETE…). */
  method?: string;
  /** How many matching requests fail; unbounded when absent (until the fault is cleared). */
  count?: number;
  /** 500 InternalError (default), 503 ServiceUnavailable or 429 TooManyRequests, each as the real server says it. */
  code?: 500 | 503 | 429;
  message?: string;
}

export interface FaultSpec {
  /** Images that fail to pull: the container waits in ErrImagePull, then ImagePullBackOff; the pod stays Pending. */
  imagePull?: Match;
  /** Pods (by name) that run but never become Ready, as with a failing readiness probe. */
  neverReady?: Match;
  /** Pods (by name) that no node takes: PodScheduled False, reason Unschedulable; the pod stays Pending. */
  unschedulable?: Match;
  /** Requests answered with an error Status instead (the first matching rule with requests left applies). */
  apiErrors?: ApiErrorRule[];
  /**
   * Exec streams cut mid-way: the connection is dropped without a close frame once `afterBytes` of output were
   * sent (the command itself runs on, as on a real node when the connection breaks). `count` streams (default all).
   */
  dropExec?: { afterBytes: number; pod?: Match; count?: number };
  /** Every request (exec upgrades included) is answered this much later. */
  latencyMs?: number;
  /** A deleted pod stays Terminating this long (at most its grace period) before its sandbox goes. */
  terminatingMs?: number;
}

export class Faults {
  private spec: FaultSpec = {};
  constructor(
    initial: FaultSpec = {},
    private readonly changed: () => void = () => {},
  ) {
    this.spec = { ...initial, apiErrors: initial.apiErrors?.map((r) => ({ ...r })) };
  }

  get current(): Readonly<FaultSpec> {
    return this.spec;
  }

  /** Merges `patch` into the faults in force (a key set to undefined removes that fault). */
  set(patch: FaultSpec): void {
    this.spec = { ...this.spec, ...patch };
    if (patch.apiErrors) this.spec.apiErrors = patch.apiErrors.map((r) => ({ ...r }));
    this.changed();
  }

  clear(): void {
    this.spec = {};
    this.changed();
  }

  /** The Status to fail this request with, if an apiErrors rule takes it (which uses up one of its count). */
  apiError(method: string, path: string): Status | undefined {
    for (const r of this.spec.apiErrors ?? []) {
      if (r.count !== undefined && r.count <= 0) continue;
      if (r.method && r.method.toUpperCase() !== method) continue;
      if (r.path !== undefined && !(typeof r.path === 'string' ? path.includes(r.path) : r.path.test(path))) continue;
      if (r.count !== undefined) r.count--;
      const e =
        r.code === 503
          ? serviceUnavailable(r.message)
          : r.code === 429
            ? tooManyRequests()
            : internalError(r.message ?? 'injected fault');
      return e.status;
    }
    return undefined;
  }

  /** Whether to cut this exec stream, and after how many bytes of output (uses up one of its count). */
  takeDropExec(pod: string): number | undefined {
    const d = this.spec.dropExec;
    if (!d || (d.pod !== undefined && !matches(d.pod, pod))) return undefined;
    if (d.count !== undefined) {
      if (d.count <= 0) return undefined;
      d.count--;
    }
    return d.afterBytes;
  }
}
