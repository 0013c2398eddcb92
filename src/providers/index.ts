/**
 * The registry: which providers this process can use, as a table. Each kind declares `configured(env)` (cheap:
 * environment and files only, never the network) and a lazy `load()`, so nothing heavy loads for a provider that
 * is not used. `auto` applies the document's rule over the configured kinds; a command on one id goes to the
 * provider that holds it without asking the others; `list` asks every configured provider at once and returns
 * what it could reach, naming what it could not.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { NotFoundError, UnavailableError, UnsupportedError } from '../errors.js';
import {
  type CreateSessionRequest,
  chooseProvider,
  type ProviderKind,
  type Session,
  type SessionFilter,
  validateSessionId,
} from '../session/model.js';
import { cloudRunConfig } from './cloudrun/config.js';
import { resolveKube } from './gke/kubeconfig.js';
import { stateDir } from './local/store.js';
import type { Capabilities, CreateOptions, Provider } from './provider.js';
import { workstationsConfig } from './workstations/config.js';

export type BackendKind = Exclude<ProviderKind, 'remote'>;

/** One row of the table. */
export interface ProviderEntry {
  kind: ProviderKind;
  /** Whether this kind can be used here; when not, why (one sentence, with what would configure it). */
  configured(env: NodeJS.ProcessEnv): { ok: true } | { ok: false; reason: string };
  load(env: NodeJS.ProcessEnv): Promise<Provider>;
}

/** Sessions from every provider that answered, and the providers that did not. */
export interface SessionList {
  sessions: Session[];
  unreachable: { provider: ProviderKind; message: string }[];
}

export interface ProviderRegistry {
  /** Every kind in the table, configured or not (and why not). */
  kinds(): { kind: ProviderKind; configured: boolean; reason?: string }[];
  /** The provider that makes a session for this request, and why it was chosen. */
  forCreate(req: CreateSessionRequest): Promise<{ provider: Provider; reason: string }>;
  /** Notes where a new session lives, so later commands on its id go straight there. */
  remember(id: string, kind: ProviderKind): void;
  /** Drops that note once the session is removed. */
  forget(id: string): void;
  /** The provider that holds a session, and the session (NotFoundError when none does). */
  locate(id: string): Promise<{ provider: Provider; session: Session }>;
  /**
   * Every configured provider's sessions at once; one that fails or does not answer in time is named, not fatal.
   * Expired sessions are removed as they are seen, and not listed.
   */
  list(filter?: SessionFilter): Promise<SessionList>;
  /** Removes expired sessions: on the configured providers of these kinds, or on every one configured. */
  reapExpired(opts?: { kinds?: ProviderKind[]; ifDue?: boolean }): Promise<string[]>;
  /** The configured providers, loaded. */
  all(): Promise<Provider[]>;
  /** The same table with these variables set (the global --context is GKE_CONTEXT); undefined in remote mode. */
  withEnv?(extra: NodeJS.ProcessEnv): ProviderRegistry;
}

/** A provider that does not answer `list` in this long is reported unreachable. */
export const LIST_TIMEOUT_MS = 20_000;

/** The kinds this build knows, in the order `ls` shows them. */
export function defaultEntries(): ProviderEntry[] {
  return [
    {
      kind: 'local',
      configured: () => ({ ok: true }),
      load: async (env) => new (await import('./local/local.js')).LocalProvider({ env }),
    },
    {
      kind: 'cloud_run',
      configured: (env) => {
        const r = cloudRunConfig(env);
        return r.ok ? { ok: true } : { ok: false, reason: r.reason };
      },
      load: async (env) => (await import('./cloudrun/cloudrun.js')).loadCloudRunProvider(env),
    },
    {
      kind: 'gke',
      configured: (env) => {
        const r = resolveKube(env);
        return r.ok ? { ok: true } : { ok: false, reason: r.reason };
      },
      load: async (env) => (await import('./gke/gke.js')).loadGkeProvider(env),
    },
    {
      kind: 'workstations',
      configured: (env) => {
        const r = workstationsConfig(env);
        return r.ok ? { ok: true } : { ok: false, reason: r.reason };
      },
      load: async (env) => (await import('./workstations/workstations.js')).loadWorkstationsProvider(env),
    },
  ];
}

export function defaultRegistry(env: NodeJS.ProcessEnv = process.env): ProviderRegistry {
  return tableRegistry(defaultEntries(), env, { hints: hintsDir(env) });
}

/** Where a CLI notes which provider holds each session it made (one small file per id). */
function hintsDir(env: NodeJS.ProcessEnv): string {
  return join(stateDir(env), 'hints');
}

export function tableRegistry(
  entries: ProviderEntry[],
  env: NodeJS.ProcessEnv,
  opts: { hints?: string } = {},
): ProviderRegistry {
  const loaded = new Map<ProviderKind, Promise<Provider>>();
  const configuredKinds = () => entries.filter((e) => e.configured(env).ok);
  const load = (e: ProviderEntry): Promise<Provider> => {
    let p = loaded.get(e.kind);
    if (!p) {
      p = e.load(env);
      loaded.set(e.kind, p);
      // A provider that failed to load is an error each time it is asked for, never a silent stand-in.
      p.catch(() => loaded.delete(e.kind));
    }
    return p;
  };
  const entry = (kind: ProviderKind) => {
    const e = entries.find((x) => x.kind === kind);
    if (!e) throw new UnavailableError(`provider ${kind} is not known to this build of onmemos`);
    const c = e.configured(env);
    if (!c.ok) throw new UnavailableError(`provider ${kind} is not configured: ${c.reason}`);
    return e;
  };
  const hints = opts.hints ? new Hints(opts.hints) : undefined;

  /** Where a session is: the hinted provider (or local, whose state directory is its own hint), else all at once. */
  const find = async (id: string): Promise<{ provider: Provider; session: Session }> => {
    validateSessionId(id);
    const hinted = hints?.read(id);
    // Only the hinted kind (else local) is checked first: a local exec reads no kubeconfig.
    const usable = (kind: ProviderKind | undefined) => entries.find((e) => e.kind === kind && e.configured(env).ok);
    const first = usable(hinted) ?? usable('local');
    if (first) {
      const provider = await load(first);
      try {
        return { provider, session: await provider.get(id) };
      } catch (e) {
        if (!(e instanceof NotFoundError)) throw e;
        if (first.kind === hinted) {
          hints?.remove(id); // the provider is the source of truth: the session is gone
          throw e;
        }
      }
    }
    // No hint: every other configured provider is asked at once; the first that has it answers.
    const answers = await Promise.allSettled(
      configuredKinds()
        .filter((e) => e.kind !== first?.kind)
        .map(async (e) => {
          const provider = await load(e);
          return { provider, session: await provider.get(id) };
        }),
    );
    for (const a of answers) if (a.status === 'fulfilled') return a.value;
    for (const a of answers) if (a.status === 'rejected' && !(a.reason instanceof NotFoundError)) throw a.reason;
    throw new NotFoundError(`no such session: ${id}`, { hint: 'list sessions with: onmemos ls' });
  };

  return {
    kinds: () =>
      entries.map((e) => {
        const c = e.configured(env);
        return c.ok ? { kind: e.kind, configured: true } : { kind: e.kind, configured: false, reason: c.reason };
      }),

    async forCreate(req) {
      if (req.provider !== 'auto') return { provider: await load(entry(req.provider)), reason: 'requested' };
      const configured = configuredKinds();
      const pick = chooseProvider(req);
      const picked = configured.find((e) => e.kind === pick.provider);
      if (picked) return { provider: await load(picked), reason: `auto: ${pick.reason}` };
      // The document's pick is not configured here: the local sandbox stands in, and the reason says so.
      const local = configured.find((e) => e.kind === 'local') ?? configured[0];
      if (!local) throw new UnavailableError('no provider is configured', { hint: 'run onmemos --help' });
      const why = entries.find((e) => e.kind === pick.provider)?.configured(env);
      const because = why && !why.ok ? `: ${why.reason}` : '';
      return {
        provider: await load(local),
        reason: `auto picks ${pick.provider} (${pick.reason}), which is not configured${because}; ${local.kind} stands in`,
      };
    },

    remember(id, kind) {
      if (kind !== 'local') hints?.write(id, kind); // the local state directory is its own hint
    },

    forget(id) {
      hints?.remove(id);
    },

    async locate(id) {
      const found = await find(id);
      // An expired session is removed by whoever notices first (the document's rule), and then is not found.
      if (found.session.status === 'expired') {
        await found.provider.delete(id).catch(() => {});
        hints?.remove(id);
        throw new NotFoundError(`no such session: ${id} (it expired at ${found.session.expires_at})`);
      }
      return found;
    },

    async list(filter = {}) {
      const asked = configuredKinds().filter((e) => !filter.provider || e.kind === filter.provider);
      const results = await Promise.all(
        asked.map(async (e) => {
          try {
            const provider = await load(e);
            const listed = await withTimeout(provider.list(filter), LIST_TIMEOUT_MS, e.kind);
            // An expired session is removed by whoever notices first, as locate does; it is not listed.
            const expired = listed.filter((x) => x.status === 'expired');
            await Promise.all(expired.map((x) => provider.delete(x.id).catch(() => {})));
            return { kind: e.kind, sessions: listed.filter((x) => x.status !== 'expired') };
          } catch (error) {
            return { kind: e.kind, error };
          }
        }),
      );
      const out: SessionList = { sessions: [], unreachable: [] };
      for (const r of results) {
        if (r.sessions) out.sessions.push(...r.sessions);
        else out.unreachable.push({ provider: r.kind, message: (r.error as Error)?.message ?? String(r.error) });
      }
      // When nothing answered, that is the command's failure, not a partial result.
      const failed = results.find((r) => !r.sessions);
      if (failed && out.unreachable.length === results.length) throw failed.error;
      return out;
    },

    async reapExpired(o = {}) {
      const removed: string[] = [];
      for (const e of configuredKinds()) {
        if (o.kinds && !o.kinds.includes(e.kind)) continue;
        const p = await load(e).catch(() => undefined);
        if (p?.reapExpired) removed.push(...(await p.reapExpired({ ifDue: o.ifDue }).catch(() => [])));
      }
      return removed;
    },

    all: () => Promise.all(configuredKinds().map(load)),

    withEnv: (extra) => tableRegistry(entries, { ...env, ...extra }, opts),
  };
}

/** Every command against one onmemos server (remote mode): the server chooses and knows where each session is. */
export function remoteRegistry(opts: { server: string; apiKey?: string }): ProviderRegistry {
  const entry: ProviderEntry = {
    kind: 'remote',
    configured: () => ({ ok: true }),
    load: async () => new (await import('./remote.js')).RemoteProvider(opts),
  };
  const inner = tableRegistry([entry], {});
  return {
    ...inner,
    async list(filter = {}) {
      const remote = (await inner.all())[0] as import('./remote.js').RemoteProvider;
      return remote.listAll(filter);
    },
    forCreate: async () => ({ provider: await entry.load({}), reason: `the server at ${opts.server} chooses` }),
    reapExpired: async () => [], // the server's own reaper does this
    withEnv: undefined, // the server's providers are configured where it runs
  };
}

/**
 * Refuses, before anything is made, a request the provider's capabilities cannot honour: one sentence that names
 * the provider and what it lacks.
 */
export function checkRequest(kind: ProviderKind, caps: Capabilities, req: CreateSessionRequest): void {
  const refuse = (what: string, hint?: string) => {
    throw new UnsupportedError(`provider ${kind} ${what}`, { hint });
  };
  if (!caps.templates.includes(req.template)) refuse(`has no template ${req.template}`);
  if (!caps.networks.includes(req.network)) {
    refuse(`cannot give network mode ${req.network}`, `it has ${caps.networks.join(', ')}`);
  }
  if (req.storage?.bucket && !caps.storage.includes('bucket')) {
    refuse('cannot mount a bucket', 'drop the bucket (--bucket, storage.bucket), or use gke or cloud_run');
  }
  if (req.storage?.filestore && !caps.storage.includes('filestore')) {
    refuse('cannot mount a Filestore share', 'drop storage.filestore, or use gke or cloud_run');
  }
  if (req.storage?.volume && !caps.storage.includes('volume')) {
    refuse('cannot give a persistent volume', 'drop --storage-size/--storage-class (storage.volume), or use gke');
  }
  if (req.image && !caps.images)
    refuse('cannot run a container image', 'drop --image (image), or use gke or cloud_run');
  if (req.ttl_minutes > caps.maxTtlMinutes) refuse(`allows a TTL of at most ${caps.maxTtlMinutes} minutes`);
  if (req.nested_userns && !caps.nestedUserns) refuse('cannot allow user namespaces inside a session');
  if (req.cpu_always && caps.backgroundWhileIdle === 'never') {
    refuse('cannot keep CPU for a session between requests', 'drop --cpu-always (cpu_always)');
  }
  const missing = (['cpus', 'memoryBytes', 'pids', 'diskBytes'] as const).filter((l) => !caps.limits.includes(l));
  if (req.require_limits && missing.length > 0) {
    const names = { cpus: 'cpu', memoryBytes: 'memory', pids: 'pids', diskBytes: 'disk' };
    refuse(`cannot enforce ${missing.map((l) => names[l]).join(', ')} (--require-limits)`);
  }
}

/**
 * The one create path of the CLI and the server: choose the provider, check the request against its capabilities,
 * create (progress and abort passed through), and note where the session lives.
 */
export async function createSession(
  registry: ProviderRegistry,
  req: CreateSessionRequest,
  opts: CreateOptions = {},
): Promise<Session> {
  const { provider, reason } = await registry.forCreate(req);
  // A remote provider's server checks against the provider it picks.
  if (provider.kind !== 'remote') checkRequest(provider.kind, provider.capabilities, req);
  opts.onProgress?.({ step: 'provider', message: `provider ${provider.kind} (${reason})` });
  const session = await provider.create(req, opts);
  registry.remember(session.id, session.provider);
  // A server's own reason wins over the remote registry's "the server chooses".
  return { ...session, details: { provider_reason: reason, ...session.details } };
}

async function withTimeout<T>(p: Promise<T>, ms: number, kind: ProviderKind): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new UnavailableError(`${kind} did not answer within ${ms / 1000}s`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** id → kind, one file per id in a 0700 directory. Only a hint: the provider it names has the last word. */
class Hints {
  constructor(private readonly dir: string) {}
  read(id: string): ProviderKind | undefined {
    try {
      return readFileSync(join(this.dir, id), 'utf8').trim() as ProviderKind;
    } catch {
      return undefined;
    }
  }
  write(id: string, kind: ProviderKind): void {
    try {
      mkdirSync(this.dir, { recursive: true, mode: 0o700 });
      writeFileSync(join(this.dir, id), kind, { mode: 0o600 });
    } catch {} // a hint that cannot be written costs a lookup later, nothing more
  }
  remove(id: string): void {
    rmSync(join(this.dir, id), { force: true });
  }
}
