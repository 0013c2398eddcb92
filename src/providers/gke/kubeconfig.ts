/**
 * The kubeconfig, as kubectl reads it: the files in KUBECONFIG (a colon-separated list; the first file that names a
 * cluster, user or context wins, and the first current-context set wins) or ~/.kube/config; the context from
 * GKE_CONTEXT (the global --context sets it), else the current context. Only files and the environment are read,
 * never the network, so `configured` is cheap enough for every command that asks which providers exist.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { homedir } from 'node:os';
import { delimiter, dirname, isAbsolute, join } from 'node:path';

/** One named entry of a kubeconfig list, with the directory of the file it came from (relative paths). */
interface Named<T> {
  name: string;
  value: T;
  dir: string;
}

export interface KubeCluster {
  server?: string;
  'certificate-authority'?: string;
  'certificate-authority-data'?: string;
  'insecure-skip-tls-verify'?: boolean;
  'tls-server-name'?: string;
  'proxy-url'?: string;
}

export interface KubeUser {
  token?: string;
  tokenFile?: string;
  'client-certificate'?: string;
  'client-certificate-data'?: string;
  'client-key'?: string;
  'client-key-data'?: string;
  username?: string;
  password?: string;
  exec?: unknown;
  'auth-provider'?: unknown;
}

export interface KubeContext {
  cluster?: string;
  user?: string;
  namespace?: string;
}

/** The context onmemos uses, resolved: everything a client needs to reach and authenticate to the cluster. */
export interface KubeTarget {
  context: string;
  clusterName: string;
  cluster: KubeCluster;
  userName: string;
  user: KubeUser;
  /** The files it came from, for messages. */
  files: string[];
}

/** The kubeconfig files kubectl would read, in order. */
export function kubeconfigFiles(env: NodeJS.ProcessEnv): string[] {
  const list = (env.KUBECONFIG ?? '').split(delimiter).filter((f) => f !== '');
  if (list.length > 0) return list;
  return [join(env.HOME || homedir(), '.kube', 'config')];
}

/** When not ok: why, and the command or setting that fixes it (onmemos doctor shows both). */
export type Resolved = { ok: true; target: KubeTarget } | { ok: false; reason: string; fix?: string };

const cache = new Map<string, Resolved>();

/** The context to use and its cluster and user, or why there is none. Memoized per environment. */
export function resolveKube(env: NodeJS.ProcessEnv): Resolved {
  const files = kubeconfigFiles(env);
  const key = `${files.join('\0')}\0${env.GKE_CONTEXT ?? ''}`;
  let r = cache.get(key);
  if (!r) {
    r = resolve(files, env.GKE_CONTEXT || undefined);
    cache.set(key, r);
  }
  return r;
}

/** Forgets what was read (tests that rewrite a kubeconfig). */
export function forgetKubeconfig(): void {
  cache.clear();
}

function resolve(files: string[], wanted: string | undefined): Resolved {
  const clusters = new Map<string, Named<KubeCluster>>();
  const users = new Map<string, Named<KubeUser>>();
  const contexts = new Map<string, Named<KubeContext>>();
  let current: string | undefined;
  const read: string[] = [];
  for (const file of files) {
    let doc: Record<string, unknown>;
    try {
      doc = parseYaml(readFileSync(file, 'utf8'));
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      if (err.code === 'ENOENT' || err.code === 'EISDIR') continue; // kubectl skips missing files too
      return {
        ok: false,
        reason: `cannot read the kubeconfig ${file}: ${err.message.split('\n')[0]}`,
        fix: `fix or remove ${file}`,
      };
    }
    read.push(file);
    const dir = dirname(file);
    collect(doc.clusters, 'cluster', dir, clusters);
    collect(doc.users, 'user', dir, users);
    collect(doc.contexts, 'context', dir, contexts);
    if (!current && typeof doc['current-context'] === 'string' && doc['current-context']) {
      current = doc['current-context'];
    }
  }
  const where = files.length === 1 ? files[0] : `KUBECONFIG (${files.join(', ')})`;
  if (read.length === 0) {
    return {
      ok: false,
      reason: `no kubeconfig at ${where} (set KUBECONFIG, or GKE_CONTEXT)`,
      fix: 'gcloud container clusters get-credentials CLUSTER --region REGION, or export KUBECONFIG=FILE',
    };
  }
  const name = wanted ?? current;
  if (!name) {
    return {
      ok: false,
      reason: `${where} has no current context (set GKE_CONTEXT or pass --context)`,
      fix: 'kubectl config use-context NAME (kubectl config get-contexts lists them), or export GKE_CONTEXT=NAME',
    };
  }
  const ctx = contexts.get(name);
  if (!ctx) {
    return {
      ok: false,
      reason: `context ${JSON.stringify(name)} is not in ${where}`,
      fix: `${wanted ? 'export GKE_CONTEXT=NAME' : 'kubectl config use-context NAME'} with a context kubectl config get-contexts lists`,
    };
  }
  const cl = ctx.value.cluster ? clusters.get(ctx.value.cluster) : undefined;
  if (!cl?.value.server) {
    return {
      ok: false,
      reason: `context ${JSON.stringify(name)} names no cluster with a server in ${where}`,
      fix: `kubectl config set-context ${shellWord(name)} --cluster=CLUSTER (one kubectl config get-clusters lists), or gcloud container clusters get-credentials CLUSTER --region REGION`,
    };
  }
  const us = ctx.value.user ? users.get(ctx.value.user) : undefined;
  return {
    ok: true,
    target: {
      context: name,
      clusterName: cl.name,
      cluster: absolutePaths(cl.value, cl.dir, ['certificate-authority']),
      userName: us?.name ?? '',
      user: us ? absolutePaths(us.value, us.dir, ['client-certificate', 'client-key', 'tokenFile']) : {},
      files: read,
    },
  };
}

/** A word as a POSIX shell reads it back (for a command shown to the user). */
function shellWord(s: string): string {
  return /^[A-Za-z0-9_./:@=+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

function collect<T>(list: unknown, key: string, dir: string, into: Map<string, Named<T>>): void {
  if (!Array.isArray(list)) return;
  for (const item of list) {
    if (!item || typeof item !== 'object') continue;
    const { name, [key]: value } = item as Record<string, unknown>;
    if (typeof name !== 'string' || into.has(name)) continue; // the first file to name it wins
    into.set(name, { name, value: (value && typeof value === 'object' ? value : {}) as T, dir });
  }
}

/** Paths in a kubeconfig are relative to the file that holds them. */
function absolutePaths<T extends object>(v: T, dir: string, keys: string[]): T {
  const out = { ...v } as Record<string, unknown>;
  for (const k of keys) {
    const p = out[k];
    if (typeof p === 'string' && p !== '' && !isAbsolute(p)) out[k] = join(dir, p);
  }
  return out as T;
}

/**
 * js-yaml is initialized only when a kubeconfig is read (a local exec never reads one). In dist/cli.cjs the
 * literal require() is bundled (with the code cache) and runs on first use; from source, it is node's require.
 */
function parseYaml(text: string): Record<string, unknown> {
  const { load } = (
    typeof require === 'function' ? require('js-yaml') : createRequire(import.meta.url)('js-yaml')
  ) as typeof import('js-yaml');
  const doc = load(text);
  return doc && typeof doc === 'object' && !Array.isArray(doc) ? (doc as Record<string, unknown>) : {};
}

/** The target as the `kubeconfig` object client-node's loadFromOptions takes (one cluster, user and context). */
export function kubeconfigOptions(t: KubeTarget) {
  const c = t.cluster;
  const u = t.user;
  return {
    clusters: [
      {
        name: t.clusterName,
        server: c.server ?? '',
        caFile: c['certificate-authority'],
        caData: c['certificate-authority-data'],
        skipTLSVerify: !!c['insecure-skip-tls-verify'],
        tlsServerName: c['tls-server-name'],
        proxyUrl: c['proxy-url'],
      },
    ],
    users: [
      {
        name: t.userName || 'onmemos',
        token: u.token,
        certFile: u['client-certificate'],
        certData: u['client-certificate-data'],
        keyFile: u['client-key'],
        keyData: u['client-key-data'],
        username: u.username,
        password: u.password,
        exec: u.exec,
        authProvider: u['auth-provider'],
      },
    ],
    contexts: [{ name: t.context, cluster: t.clusterName, user: t.userName || 'onmemos' }],
    currentContext: t.context,
  };
}
