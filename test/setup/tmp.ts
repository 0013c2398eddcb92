/**
 * Global set-up of every vitest project: one temporary directory for the run, named in ONMEMOS_TEST_TMP (the test
 * processes inherit it), where the in-process fake provider keeps its sessions' directories, and which is removed
 * when the run ends, however its test processes ended. KUBECONFIG names a file that is not there.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export default function setup(): () => void {
  const dir = mkdtempSync(join(tmpdir(), 'onmemos-run-'));
  process.env.ONMEMOS_TEST_TMP = dir;
  // No test sees this machine's kubeconfig (gke would count as configured, and ls would ask its cluster): a test
  // of the gke provider points KUBECONFIG at its own fake.
  // The one exception, the conformance suite against a real cluster, finds the machine's own here.
  process.env.ONMEMOS_TEST_REAL_KUBECONFIG ??= process.env.KUBECONFIG ?? '';
  process.env.KUBECONFIG = join(dir, 'no-kubeconfig');
  return () => rmSync(dir, { recursive: true, force: true });
}
