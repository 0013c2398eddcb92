/**
 * `onmemos check`: the document's capability suite (test_session_backends.py) as data. The eight capabilities, what
 * a result is, and where a backend lacks a capability: the document's capability matrix and the provider's own
 * Capabilities. Nothing here makes a session; the probes (probes.ts) do, through the registry.
 */
import type { Capabilities } from '../providers/provider.js';
import type { ProviderKind } from '../session/model.js';

export const TESTS = [
  'one_shot_commands',
  'persistent_storage',
  'bucket_mount',
  'scale_to_zero',
  'session_duration',
  'isolation_model',
  'shell_interactive',
  'web_terminal',
] as const;
export type TestName = (typeof TESTS)[number];

export const BACKENDS = ['local', 'gke', 'cloud_run', 'workstations'] as const;
export type Backend = (typeof BACKENDS)[number];

export type Status = 'passed' | 'skipped' | 'failed';

/** One probe's outcome: PASSED (with what it saw), SKIPPED (with why), FAILED (with the evidence). */
export type TestResult =
  | { status: 'passed'; ms: number; checked?: string }
  | { status: 'skipped'; ms: number; reason: string }
  | { status: 'failed'; ms: number; evidence: string };

export interface BackendReport {
  backend: Backend;
  results: Partial<Record<TestName, TestResult>>;
}

export interface CheckReport {
  ok: boolean;
  backends: BackendReport[];
  summary: { passed: number; skipped: number; failed: number };
  /** scale_to_zero's idle wait (`--idle-wait`), null when the scale-down was not to be observed. */
  idleWaitSeconds?: number | null;
}

/** A probe saw the capability not work: the evidence is what it saw, against what it expected. */
export class CheckFailure extends Error {}

/** A probe that does not apply here: the reason names the capability matrix, the provider's capabilities, or a flag. */
export class Skip extends Error {}

/** The document's capability matrix, where it says a backend does not have a capability (❌). */
const MATRIX_LACKS: Partial<Record<TestName, Partial<Record<Backend, string>>>> = {
  scale_to_zero: {
    gke: "the document's capability matrix: GKE Autopilot has no scale to zero (❌ Pod lifecycle: a pod runs until it is removed)",
    workstations:
      "the document's capability matrix: Cloud Workstations has no scale to zero (❌ Always-on: a workstation runs until it is stopped)",
    local: 'the local sandbox has no scale to zero (not in the capability matrix: a session runs until it is removed)',
  },
};

/** Why a backend lacks a capability by the matrix, or undefined. */
export function matrixLacks(test: TestName, backend: Backend): string | undefined {
  return MATRIX_LACKS[test]?.[backend];
}

/**
 * Each built-in provider's capabilities, for a backend reached through a server (remote mode: the remote provider's
 * own capabilities are the server's union). Loaded only when needed (the cloud providers' modules are heavy).
 */
export async function builtinCapabilities(kind: ProviderKind): Promise<Capabilities | undefined> {
  switch (kind) {
    case 'local':
      return (await import('../providers/local/local.js')).LOCAL_CAPABILITIES;
    case 'gke':
      return (await import('../providers/gke/gke.js')).GKE_CAPABILITIES;
    case 'cloud_run':
      return (await import('../providers/cloudrun/cloudrun.js')).CLOUDRUN_CAPABILITIES;
    case 'workstations':
      return (await import('../providers/workstations/workstations.js')).WORKSTATIONS_CAPABILITIES;
    default:
      return undefined;
  }
}

export function summarize(backends: BackendReport[]): CheckReport {
  const summary = { passed: 0, skipped: 0, failed: 0 };
  for (const b of backends) for (const r of Object.values(b.results)) if (r) summary[r.status]++;
  return { ok: summary.failed === 0, backends, summary };
}
