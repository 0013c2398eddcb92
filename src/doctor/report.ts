/**
 * The shape of `onmemos doctor`'s report and its two renderings: one JSON object, or a grouped text report
 * (colour only where asked for). The checks themselves are in checks.ts.
 */

/** ok; warn: works without it, with less (say, no session limits); missing or failed: broken, exit 1. */
export type CheckStatus = 'ok' | 'warn' | 'missing' | 'failed';

/** One thing looked at: what it found in one line and, when not ok, the command or setting that fixes it. */
export interface Check {
  name: string;
  status: CheckStatus;
  detail: string;
  fix?: string;
}

export type SectionKind = 'local' | 'gke' | 'cloud_run' | 'workstations' | 'remote';

/** One provider (or remote mode): not configured (and what configures it), or its checks. */
export interface Section {
  configured: boolean;
  /** ok: every check passed; broken: one did not; not_configured: nothing was checked. */
  status: 'ok' | 'broken' | 'not_configured';
  /** When not configured: why not. */
  detail?: string;
  /** When not configured: what configures it. */
  fix?: string;
  checks: Check[];
}

export interface DoctorReport {
  /** Every configured provider's checks passed (the exit code is 0 exactly then). */
  ok: boolean;
  providers: Record<SectionKind, Section>;
}

export const SECTION_ORDER: SectionKind[] = ['local', 'gke', 'cloud_run', 'workstations', 'remote'];

export function notConfigured(detail: string, fix: string): Section {
  return { configured: false, status: 'not_configured', detail, fix, checks: [] };
}

export function configured(checks: Check[]): Section {
  const works = checks.every((c) => c.status === 'ok' || c.status === 'warn');
  return { configured: true, status: works ? 'ok' : 'broken', checks };
}

export function summarize(providers: Record<SectionKind, Section>): DoctorReport {
  // The local sandbox is always configured (it is the stand-in for every other kind), so it always counts.
  return { ok: SECTION_ORDER.every((k) => providers[k].status !== 'broken'), providers };
}

const TITLES: Record<SectionKind, string> = {
  local: 'local (bubblewrap sandbox)',
  gke: 'gke (Kubernetes)',
  cloud_run: 'cloud_run (Cloud Run)',
  workstations: 'workstations (Cloud Workstations)',
  remote: 'remote mode (onmemos server)',
};

const COLOURS = { green: 32, yellow: 33, red: 31, dim: 2, bold: 1 } as const;

/** The report as text: one group per provider, each check on a line, its fix under it. */
export function renderText(r: DoctorReport, colour: boolean): string {
  const paint = (c: keyof typeof COLOURS, s: string) => (colour ? `\x1b[${COLOURS[c]}m${s}\x1b[0m` : s);
  const STATUS: Record<CheckStatus, string> = {
    ok: paint('green', 'OK     '),
    warn: paint('yellow', 'WARN   '),
    missing: paint('yellow', 'MISSING'),
    failed: paint('red', 'FAILED '),
  };
  const lines: string[] = [];
  for (const kind of SECTION_ORDER) {
    const s = r.providers[kind];
    const state =
      s.status === 'ok'
        ? paint('green', 'ok')
        : s.status === 'broken'
          ? paint('red', 'broken')
          : paint('dim', 'not configured');
    lines.push(`${paint('bold', TITLES[kind])}: ${state}`);
    if (!s.configured) {
      if (s.detail) lines.push(`  ${s.detail}`);
      if (s.fix) lines.push(`  to configure: ${s.fix}`);
    }
    const width = Math.max(0, ...s.checks.map((c) => c.name.length));
    for (const c of s.checks) {
      lines.push(`  ${STATUS[c.status]}  ${c.name.padEnd(width)}  ${c.detail}`);
      if (c.fix && c.status !== 'ok') lines.push(`  ${' '.repeat(7)}  ${' '.repeat(width)}  fix: ${c.fix}`);
    }
    lines.push('');
  }
  const broken = SECTION_ORDER.filter((k) => r.providers[k].status === 'broken');
  lines.push(r.ok ? 'Every configured provider works.' : `Not working: ${broken.join(', ')} (see the fixes above).`);
  return `${lines.join('\n')}\n`;
}

/** One line, whatever an error holds (its first line; a socket error's code when it has one). */
export function oneLine(e: unknown): string {
  const err = e as { message?: unknown; code?: unknown; cause?: unknown };
  let message = typeof err?.message === 'string' && err.message ? err.message : String(e);
  // fetch's "fetch failed" says nothing: its cause (ECONNREFUSED...) does.
  const cause = err?.cause as { message?: unknown; code?: unknown } | undefined;
  if (message === 'fetch failed' && cause) message = typeof cause.message === 'string' ? cause.message : String(cause);
  return message.split('\n')[0]!.trim();
}
