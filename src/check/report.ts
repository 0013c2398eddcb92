/**
 * The report of `onmemos check`, in the document's format (test_session_backends.py): a section per backend with
 * each test's result, then a summary table and the counts. SKIPPED carries its reason, FAILED its evidence. Colour
 * only when asked (stdout a terminal, NO_COLOR unset); `--json` is one object instead.
 */
import type { Backend, CheckReport, TestName, TestResult } from './model.js';

const TITLES: Record<Backend, string> = {
  local: 'LOCAL',
  gke: 'GKE',
  cloud_run: 'CLOUD RUN',
  workstations: 'CLOUD WORKSTATIONS',
};

const RULE = '='.repeat(60);

function paint(colour: boolean, code: number, s: string): string {
  return colour ? `\x1b[${code}m${s}\x1b[0m` : s;
}

function verdict(r: TestResult, colour: boolean): string {
  if (r.status === 'passed') return `✅ ${paint(colour, 32, 'PASSED')}`;
  if (r.status === 'skipped') return `⏭️  ${paint(colour, 33, 'SKIPPED')}`;
  return `❌ ${paint(colour, 31, 'FAILED')}`;
}

export function renderText(r: CheckReport, colour: boolean): string {
  const lines: string[] = [];
  for (const b of r.backends) {
    lines.push(`🚀 Session Backends Capability Test Suite - ${TITLES[b.backend]}`, RULE, '');
    for (const [test, res] of Object.entries(b.results) as [TestName, TestResult][]) {
      lines.push(`🔍 Testing: ${test}`, `   Result: ${verdict(res, colour)}`);
      if (res.status === 'passed' && res.checked) lines.push(`   Checked: ${res.checked}`);
      if (res.status === 'skipped') lines.push(`   Reason: ${res.reason}`);
      if (res.status === 'failed') lines.push(`   Evidence: ${res.evidence}`);
      lines.push('');
    }
  }
  lines.push(RULE, '📊 Session Backends Capability Test Summary', RULE);
  const many = r.backends.length > 1;
  for (const b of r.backends) {
    for (const [test, res] of Object.entries(b.results) as [TestName, TestResult][]) {
      const name = many ? `${b.backend}/${test}` : test;
      lines.push(`${name.padEnd(many ? 38 : 25)} ${verdict(res, colour)}`);
    }
  }
  lines.push(
    '',
    `✅ Passed : ${r.summary.passed}`,
    `⏭️  Skipped: ${r.summary.skipped}`,
    `❌ Failed : ${r.summary.failed}`,
  );
  return lines.join('\n');
}

/**
 * `{ok, backends: {local: {one_shot_commands: {status, ms, checked|reason|evidence}}}, summary, idle_wait_seconds}`
 * (idle_wait_seconds: scale_to_zero's `--idle-wait`, null without it).
 */
export function toJson(r: CheckReport): unknown {
  return {
    ok: r.ok,
    backends: Object.fromEntries(r.backends.map((b) => [b.backend, b.results])),
    summary: r.summary,
    idle_wait_seconds: r.idleWaitSeconds ?? null,
  };
}
