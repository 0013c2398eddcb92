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
  process.env.KUBECONFIG = join(dir, 'no-kubeconfig');
  return () => rmSync(dir, { recursive: true, force: true });
}
