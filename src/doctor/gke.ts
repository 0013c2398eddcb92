/**
 * `onmemos doctor` for gke: the kubeconfig and its context (the provider's own reader), the context's credentials,
 * and the API server: GET /version, then the read `onmemos ls` makes (the sessions' pods), each bounded. A
 * kubeconfig whose credentials need client-node (an exec plugin such as gke-gcloud-auth-plugin, an auth provider,
 * a proxy) is asked through the provider itself.
 */
import { accessSync, constants, existsSync } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';
import { KubeApiError, type KubeConnection, kubeRequest, simpleConnection } from '../providers/gke/http.js';
import { type KubeTarget, kubeconfigFiles, resolveKube } from '../providers/gke/kubeconfig.js';
import { MANAGED_BY } from '../providers/gke/pod.js';
import { PROBE_MS } from './local.js';
import { type Check, configured, notConfigured, oneLine, type Section } from './report.js';

const GET_CREDENTIALS = 'gcloud container clusters get-credentials CLUSTER --region REGION --project PROJECT';

export async function gkeSection(env: NodeJS.ProcessEnv): Promise<Section> {
  const files = kubeconfigFiles(env);
  const found = files.filter((f) => existsSync(f));
  const r = resolveKube(env);
  // Someone meant to use gke when they named a kubeconfig or a context, or have one: then what is wrong is a failure.
  if (!r.ok && found.length === 0 && !env.KUBECONFIG && !env.GKE_CONTEXT) {
    return notConfigured(r.reason, r.fix ?? GET_CREDENTIALS);
  }
  const checks: Check[] = [];
  checks.push(
    found.length > 0
      ? { name: 'kubeconfig', status: 'ok', detail: found.join(', ') }
      : {
          name: 'kubeconfig',
          status: 'missing',
          detail: `no kubeconfig at ${files.join(', ')}`,
          fix: `${GET_CREDENTIALS}, or export KUBECONFIG=FILE`,
        },
  );
  if (!r.ok) {
    if (found.length > 0) checks.push({ name: 'context', status: 'failed', detail: r.reason, fix: r.fix });
    return configured(checks);
  }
  const t = r.target;
  checks.push({
    name: 'context',
    status: 'ok',
    detail: `${t.context} (cluster ${t.clusterName} at ${t.cluster.server}${env.GKE_CONTEXT ? ', from GKE_CONTEXT' : ''})`,
  });
  const creds = credentials(t, env);
  checks.push(creds.check);
  if (creds.check.status !== 'ok') return configured(checks);
  checks.push(...(creds.conn ? await simpleProbe(t, creds.conn, env) : await clientNodeProbe(t, env)));
  return configured(checks);
}

/** What the context's user authenticates with, and the connection when it needs nothing but files. */
function credentials(t: KubeTarget, env: NodeJS.ProcessEnv): { check: Check; conn?: KubeConnection } {
  const name = 'credentials';
  const u = t.user;
  const who = t.userName ? `user ${t.userName}` : 'no user';
  if (u.exec) {
    const command = String((u.exec as { command?: unknown }).command ?? '');
    const path = onPath(command, env);
    if (!path) {
      return {
        check: {
          name,
          status: 'missing',
          detail: `${who} runs ${command || 'an exec plugin'}, which is not installed`,
          fix: command.endsWith('gke-gcloud-auth-plugin')
            ? 'gcloud components install gke-gcloud-auth-plugin (or apt-get install -y google-cloud-cli-gke-gcloud-auth-plugin)'
            : `install ${command || 'the exec plugin the kubeconfig names'}`,
        },
      };
    }
    return { check: { name, status: 'ok', detail: `${who}: the exec plugin ${path}` } };
  }
  if (u['auth-provider']) return { check: { name, status: 'ok', detail: `${who}: an auth provider` } };
  try {
    const conn = simpleConnection(t);
    const what = u.tokenFile
      ? `a token from ${u.tokenFile}`
      : u.token
        ? 'a bearer token'
        : u['client-certificate'] || u['client-certificate-data']
          ? 'a client certificate'
          : u.username !== undefined
            ? 'a user name and password'
            : 'none (anonymous)';
    return { check: { name, status: 'ok', detail: `${who}: ${what}` }, conn };
  } catch (e) {
    return {
      check: {
        name,
        status: 'failed',
        detail: `cannot read the credentials of context ${t.context}: ${oneLine(e)}`,
        fix: `fix the files ${who} names in ${t.files.join(', ')}, or ${GET_CREDENTIALS}`,
      },
    };
  }
}

/** GET /version (the server answers), then the pods `onmemos ls` lists (the credentials are accepted). */
async function simpleProbe(t: KubeTarget, conn: KubeConnection, env: NodeJS.ProcessEnv): Promise<Check[]> {
  const server = t.cluster.server ?? '';
  let version: string;
  try {
    const v = (await bounded(kubeRequest(conn, 'GET', '/version', PROBE_MS))) as { gitVersion?: unknown };
    version = typeof v?.gitVersion === 'string' ? `Kubernetes ${v.gitVersion}` : 'it answers';
  } catch (e) {
    if (!(e instanceof KubeApiError && (e.code === 401 || e.code === 403))) {
      return [apiFailure(server, e)];
    }
    version = 'it answers'; // /version is not public on every cluster: the read below says what the key can do
  }
  const checks: Check[] = [{ name: 'API server', status: 'ok', detail: `${server}: ${version}` }];
  const selector = encodeURIComponent(`${MANAGED_BY}=onmemos`);
  try {
    await bounded(kubeRequest(conn, 'GET', `/api/v1/pods?labelSelector=${selector}&limit=1`, PROBE_MS));
    checks.push({ name: 'sessions', status: 'ok', detail: 'the credentials may list the sessions (pods)' });
  } catch (e) {
    checks.push(sessionsFailure(t, e, env));
  }
  return checks;
}

/** Credentials only client-node handles: the provider's own list, bounded. */
async function clientNodeProbe(t: KubeTarget, env: NodeJS.ProcessEnv): Promise<Check[]> {
  try {
    const { loadGkeProvider } = await import('../providers/gke/gke.js');
    const provider = await loadGkeProvider(env);
    const sessions = await bounded(provider.list());
    return [
      { name: 'API server', status: 'ok', detail: `${t.cluster.server}: it answers` },
      { name: 'sessions', status: 'ok', detail: `the credentials may list the sessions (${sessions.length} now)` },
    ];
  } catch (e) {
    return [apiFailure(t.cluster.server ?? '', e)];
  }
}

function apiFailure(server: string, e: unknown): Check {
  return {
    name: 'API server',
    status: 'failed',
    detail: `${server}: ${e instanceof KubeApiError ? `answered HTTP ${e.code}` : oneLine(e)}`,
    fix: `check the cluster's server in the kubeconfig (kubectl cluster-info), or ${GET_CREDENTIALS}`,
  };
}

function sessionsFailure(t: KubeTarget, e: unknown, env: NodeJS.ProcessEnv): Check {
  const name = 'sessions';
  if (e instanceof KubeApiError && e.code === 401) {
    return {
      name,
      status: 'failed',
      detail: `the API server refuses the credentials of context ${t.context} (HTTP 401)`,
      fix: GET_CREDENTIALS,
    };
  }
  if (e instanceof KubeApiError && e.code === 403) {
    const prefix = env.GKE_NAMESPACE_PREFIX || 'onmemos';
    return {
      name,
      status: 'failed',
      detail: `${t.userName || 'the user'} may not list pods (HTTP 403)`,
      fix: `grant it pods (list, create, delete, exec) in the ${prefix}-* namespaces; kubectl auth can-i list pods -A shows it`,
    };
  }
  return { ...apiFailure(t.cluster.server ?? '', e), name };
}

/** A program as the kubeconfig names it: a path, or a name found on PATH (as kubectl runs it). */
export function onPath(command: string, env: NodeJS.ProcessEnv): string | undefined {
  if (!command) return undefined;
  const candidates = isAbsolute(command)
    ? [command]
    : (env.PATH ?? '').split(delimiter).map((d) => join(d || '.', command));
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK);
      return c;
    } catch {}
  }
  return undefined;
}

/** `p`, or a timeout error after PROBE_MS (a request that hangs on the way, a plugin that never answers). */
export function bounded<T>(p: Promise<T>, ms = PROBE_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms / 1000}s`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}
