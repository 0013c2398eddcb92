/** Formatting of sessions for people (tables) and programs (JSON). Pure functions. */
import type { Session } from '../session/model.js';

export function duration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h${m % 60 ? `${m % 60}m` : ''}`;
  return `${Math.floor(h / 24)}d`;
}

export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n');
}

export function sessionsTable(sessions: Session[], now = Date.now()): string {
  const rows = [['ID', 'PROVIDER', 'NAMESPACE', 'USER', 'STATUS', 'AGE', 'EXPIRES']];
  for (const s of sessions) {
    const left = Date.parse(s.expires_at) - now;
    rows.push([
      s.id,
      s.provider,
      s.namespace,
      s.user,
      s.status,
      duration(now - Date.parse(s.created_at)),
      left > 0 ? `in ${duration(left)}` : 'expired',
    ]);
  }
  return table(rows);
}

export function sessionDetails(s: Session, now = Date.now()): string {
  const rows: [string, string][] = [
    ['id', s.id],
    ['provider', s.provider],
    ['namespace', s.namespace],
    ['user', s.user],
    ['status', s.status],
    ['template', s.template],
    ['created', `${s.created_at} (${duration(now - Date.parse(s.created_at))} ago)`],
    ['expires', s.expires_at],
  ];
  if (s.url) rows.push(['url', s.url]);
  if (s.websocket) rows.push(['websocket', s.websocket]);
  if (s.web_terminal) rows.push(['web terminal', s.web_terminal]);
  rows.push(['ssh', String(s.ssh)]);
  for (const [k, v] of Object.entries(s.details)) if (v !== null && v !== undefined) rows.push([k, detailValue(v)]);
  const w = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${`${k}:`.padEnd(w + 2)}${v}`).join('\n');
}

/** `cpu=2 memory=2g pids=1024 disk=10g` for an object, `a; b` for a list, the value itself otherwise. */
function detailValue(v: unknown): string {
  if (Array.isArray(v)) return v.map(String).join('; ');
  if (typeof v === 'object' && v !== null) {
    return Object.entries(v)
      .map(([k, x]) => `${k}=${String(x)}`)
      .join(' ');
  }
  return String(v);
}

export function json(value: unknown): string {
  return JSON.stringify(value, null, 2);
}
