/**
 * Global set-up of every vitest project: one temporary directory for the run, named in ONMEMOS_TEST_TMP (the test
 * processes inherit it), where the in-process fake provider keeps its sessions' directories, and which is removed
 * when the run ends, however its test processes ended. KUBECONFIG names a file that is not there.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WORKSTATIONS_SETTINGS } from '../../src/providers/workstations/config.js';

const CLOUD_RUN_VARIABLES = [
  'PROJECT_ID',
  'REGION',
  'GOOGLE_CLOUD_PROJECT',
  'CLOUDSDK_CORE_PROJECT',
  'CLOUDSDK_RUN_REGION',
  'CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN',
  'CLOUDSDK_AUTH_ACCESS_TOKEN_FILE',
  ...WORKSTATIONS_SETTINGS,
  'CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE',
];

export default function setup(): () => void {
  const dir = mkdtempSync(join(tmpdir(), 'onmemos-run-'));
  process.env.ONMEMOS_TEST_TMP = dir;
  // No test sees this machine's kubeconfig (gke would count as configured, and ls would ask its cluster): a test
  // of the gke provider points KUBECONFIG at its own fake.
  // The one exception, the conformance suite against a real cluster, finds the machine's own here.
  process.env.ONMEMOS_TEST_REAL_KUBECONFIG ??= process.env.KUBECONFIG ?? '';
  process.env.KUBECONFIG = join(dir, 'no-kubeconfig');
  // Nor this machine's Google project: cloud_run and workstations are configured only where a test points them at
  // its own fake.
  for (const name of CLOUD_RUN_VARIABLES) {
    if (process.env[name] !== undefined) process.env[`ONMEMOS_TEST_REAL_${name}`] ??= process.env[name];
    delete process.env[name];
  }
  return () => rmSync(dir, { recursive: true, force: true });
}
