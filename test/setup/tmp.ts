/**
 * Global set-up of every vitest project: one temporary directory for the run, named in ONMEMOS_TEST_TMP (the test
 * processes inherit it), where the in-process fake provider keeps its sessions' directories, and which is removed
 * when the run ends, however its test processes ended.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export default function setup(): () => void {
  const dir = mkdtempSync(join(tmpdir(), 'onmemos-run-'));
  process.env.ONMEMOS_TEST_TMP = dir;
  return () => rmSync(dir, { recursive: true, force: true });
}
