/**
 * `onmemos doctor` for remote mode: the server and key every other command would use (the CLI's own resolution:
 * --server, ONMEMOS_SERVER, the current context), GET /health, and an authenticated GET /v1/sessions, each bounded.
 */
import { configFile, remoteTarget } from '../config.js';
import { OnmemosError } from '../errors.js';
import { PROBE_MS } from './local.js';
import { type Check, configured, notConfigured, oneLine, type Section } from './report.js';

const SET_CONTEXT =
  'printf %s "$KEY" | onmemos config set-context NAME --server URL --api-key-stdin && onmemos config use-context NAME';

export async function remoteSection(
  env: NodeJS.ProcessEnv,
  o: { server?: string; apiKey?: string; local?: boolean },
): Promise<Section> {
  if (o.local) return notConfigured('--local: local mode, whatever server is configured', SET_CONTEXT);
  let target: Awaited<ReturnType<typeof remoteTarget>>;
  try {
    target = await remoteTarget(env, o);
  } catch (e) {
    return configured([
      {
        name: 'settings',
        status: 'failed',
        detail: oneLine(e),
        fix: e instanceof OnmemosError && e.hint ? e.hint : `fix or remove ${configFile(env)}`,
      },
    ]);
  }
  if (!target) {
    return notConfigured(
      'no server (--server, ONMEMOS_SERVER or a saved context): commands act on this machine',
      `${SET_CONTEXT} (or export ONMEMOS_SERVER=URL ONMEMOS_API_KEY=KEY)`,
    );
  }
  const fixServer =
    target.source === 'ONMEMOS_SERVER'
      ? 'export ONMEMOS_SERVER=URL of a running onmemos serve'
      : target.source === '--server'
        ? 'pass --server the URL of a running onmemos serve'
        : `onmemos config set-context ${target.source.slice('context '.length)} --server URL (a running onmemos serve)`;
  const fixKey = target.source.startsWith('context ')
    ? `printf %s "$KEY" | onmemos config set-context ${target.source.slice('context '.length)} --server ${target.server} --api-key-stdin`
    : "export ONMEMOS_API_KEY=KEY (one of the server's ONMEMOS_API_KEYS), or --api-key KEY";
  let base: URL;
  try {
    base = new URL(target.server);
    if (base.protocol !== 'http:' && base.protocol !== 'https:') throw new Error('not an http(s) URL');
  } catch (e) {
    return configured([
      {
        name: 'server',
        status: 'failed',
        detail: `${target.server} (${target.source}): ${oneLine(e)}`,
        fix: fixServer,
      },
    ]);
  }
  const url = (path: string) => new URL(path, base.href.endsWith('/') ? base.href : `${base.href}/`).href;
  const checks: Check[] = [];
  try {
    const res = await fetch(url('health'), { signal: AbortSignal.timeout(PROBE_MS), redirect: 'manual' });
    const body = (await res.json().catch(() => undefined)) as
      | { status?: unknown; version?: unknown; providers?: unknown }
      | undefined;
    if (res.status !== 200 || body?.status !== 'ok') {
      throw new Error(`GET /health answered HTTP ${res.status}${body ? '' : ' without JSON'}: not an onmemos server?`);
    }
    const providers = Array.isArray(body.providers) ? ` with ${body.providers.join(', ')}` : '';
    checks.push({
      name: 'server',
      status: 'ok',
      detail: `${target.server} (${target.source}): onmemos ${String(body.version ?? '?')}${providers}`,
    });
  } catch (e) {
    checks.push({
      name: 'server',
      status: 'failed',
      detail: `${target.server} (${target.source}): ${timeoutSaid(e)}`,
      fix: fixServer,
    });
    return configured(checks);
  }
  try {
    const res = await fetch(url('v1/sessions'), {
      headers: target.apiKey ? { 'x-api-key': target.apiKey } : {},
      signal: AbortSignal.timeout(PROBE_MS),
      redirect: 'manual',
    });
    const body = (await res.json().catch(() => undefined)) as { error?: { message?: unknown } } | unknown[] | undefined;
    if (res.status === 200) {
      const n = Array.isArray(body) ? ` (${body.length} sessions visible)` : '';
      checks.push({
        name: 'API key',
        status: 'ok',
        detail: target.apiKey ? `the server accepts the key${n}` : `the server needs no key${n}`,
      });
    } else if (res.status === 401 || res.status === 403) {
      const said = (body as { error?: { message?: unknown } })?.error?.message;
      checks.push({
        name: 'API key',
        status: target.apiKey ? 'failed' : 'missing',
        detail: target.apiKey
          ? `the server refuses the key (HTTP ${res.status}${typeof said === 'string' ? `: ${said}` : ''})`
          : `no key (--api-key, ONMEMOS_API_KEY or the context), and the server wants one (HTTP ${res.status})`,
        fix: fixKey,
      });
    } else {
      checks.push({
        name: 'API key',
        status: 'failed',
        detail: `GET /v1/sessions answered HTTP ${res.status}`,
        fix: "see the server's log (onmemos serve)",
      });
    }
  } catch (e) {
    checks.push({ name: 'API key', status: 'failed', detail: `GET /v1/sessions: ${timeoutSaid(e)}`, fix: fixServer });
  }
  return configured(checks);
}

function timeoutSaid(e: unknown): string {
  const name = (e as { name?: unknown })?.name;
  return name === 'TimeoutError' || name === 'AbortError' ? `no answer within ${PROBE_MS / 1000}s` : oneLine(e);
}
