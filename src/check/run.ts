/**
 * Runs the capability probes on each chosen backend (backends at once, a backend's probes one after another, its
 * slow session_duration beside them), and removes every session it made: at the end, after a failure, and when
 * the run is aborted (Ctrl-C, SIGTERM). Sessions are made through the registry, so in remote mode through the
 * server.
 */
import { InterruptedError, NotFoundError, type OnmemosError, UnavailableError } from '../errors.js';
import { createSession, type ProviderRegistry } from '../providers/index.js';
import type { Capabilities, Provider } from '../providers/provider.js';
import { parseCreateRequest, type Session } from '../session/model.js';
import {
  type Backend,
  type BackendReport,
  builtinCapabilities,
  CheckFailure,
  type CheckReport,
  Skip,
  summarize,
  type TestName,
  type TestResult,
} from './model.js';
import { guard, PROBES, type ProbeEnv } from './probes.js';

export interface CheckOptions {
  registry: ProviderRegistry;
  backends: Backend[];
  /** The backends were named one by one (`--backend gke`): one that is not configured is an error, not a skip. */
  explicit: boolean;
  tests: TestName[];
  bucket?: string;
  /** Remote mode: the server's URL and key (the web terminal probe's). */
  server?: { url: string; apiKey?: string };
  /** A new registry, as a new onmemos process builds it (persistent_storage's reconnect). */
  reconnect?: () => ProviderRegistry;
  /** Aborting stops the probes; what they made is removed, then runCheck rejects with the signal's reason. */
  signal?: AbortSignal;
  /** One line about what runs now (the command shows it on a terminal's stderr). */
  onProgress?: (line: string) => void;
  /**
   * scale_to_zero: leave the session idle this long, then check that a new instance serves it (observes the
   * scale-down); without it the probe reads the scaling settings only. It adds to that probe's bound.
   */
  idleWaitSeconds?: number;
  /** session_duration's TTL (default 1 minute) and how long after it the removal may take (default 90 s). */
  ttlMinutes?: number;
  ttlGraceMs?: number;
  /** A probe's bound (default 180 s; session_duration's is its TTL and grace on top). */
  probeTimeoutMs?: number;
  namespace?: string;
}

export const CHECK_NAMESPACE = 'check';

/** How long the removal waits for creates under way (aborted) to end. */
const CREATE_SETTLE_MS = 60_000;

/** Every session a run made, by id, with the provider that holds it: removed in the end, whatever happens. */
class Made {
  private readonly ids = new Map<string, { provider: Provider; registry: ProviderRegistry }>();
  private readonly inFlight = new Set<Promise<unknown>>();
  /** A create under way: the removal waits for it (aborted, it removes what it made; done, its id is here). */
  creating<T>(p: Promise<T>): Promise<T> {
    const settled = p.then(
      () => {},
      () => {},
    );
    this.inFlight.add(settled);
    void settled.then(() => this.inFlight.delete(settled));
    return p;
  }
  /** Waits (at most `ms`) for the creates under way to end. */
  async settle(ms: number): Promise<void> {
    if (this.inFlight.size === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(this.inFlight),
      new Promise((r) => {
        timer = setTimeout(r, ms);
      }),
    ]);
    clearTimeout(timer);
  }
  add(id: string, provider: Provider, registry: ProviderRegistry) {
    this.ids.set(id, { provider, registry });
  }
  get size() {
    return this.ids.size;
  }
  async removeAll(): Promise<string[]> {
    const failed: string[] = [];
    await Promise.all(
      [...this.ids].map(async ([id, { provider, registry }]) => {
        try {
          await provider.delete(id);
        } catch (e) {
          if (!(e instanceof NotFoundError)) failed.push(`${id}: ${(e as Error).message}`);
        }
        registry.forget(id);
        this.ids.delete(id);
      }),
    );
    return failed;
  }
}

function notConfigured(e: unknown): string | undefined {
  const err = e as OnmemosError;
  if (err?.code === 'unavailable' && /not configured|not known/.test(err.message)) return err.message;
  return undefined;
}

export async function runCheck(o: CheckOptions): Promise<CheckReport> {
  const signal = o.signal ?? new AbortController().signal;
  const remote = o.registry.kinds().some((k) => k.kind === 'remote');
  const kinds = o.registry.kinds();
  // A named backend that is not configured is refused before anything is made.
  if (o.explicit && !remote) {
    for (const b of o.backends) {
      const k = kinds.find((x) => x.kind === b);
      if (!k) throw new UnavailableError(`provider ${b} is not known to this build of onmemos`);
      if (!k.configured) throw new UnavailableError(`provider ${b} is not configured: ${k.reason}`);
    }
  }
  const made = new Made();
  const progress = o.onProgress ?? (() => {});
  let reports: BackendReport[] = [];
  try {
    // Every backend is let finish (or give up) before anything is removed, so nothing is made after the removal.
    const settled = await Promise.allSettled(
      o.backends.map((b) => checkBackend(o, b, { remote, made, signal, progress })),
    );
    for (const s of settled) if (s.status === 'rejected' && !signal.aborted) throw s.reason;
    reports = settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  } finally {
    // A create a probe gave up on (its bound, or the abort) is aborted too; its end is awaited, so nothing it
    // made appears after the removal.
    await made.settle(CREATE_SETTLE_MS);
    if (made.size > 0) progress(`check: removing the ${made.size} session(s) it made`);
    const left = await made.removeAll();
    if (left.length > 0) progress(`check: could not remove: ${left.join('; ')}`);
  }
  if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new InterruptedError('interrupted');
  return { ...summarize(reports), idleWaitSeconds: o.idleWaitSeconds ?? null };
}

async function checkBackend(
  o: CheckOptions,
  backend: Backend,
  run: { remote: boolean; made: Made; signal: AbortSignal; progress: (l: string) => void },
): Promise<BackendReport> {
  const results: BackendReport['results'] = {};
  const skipAll = (reason: string) => {
    for (const t of o.tests) results[t] = { status: 'skipped', ms: 0, reason };
    return { backend, results };
  };
  if (!run.remote) {
    const k = o.registry.kinds().find((x) => x.kind === backend);
    if (!k?.configured) return skipAll(`not configured: ${k?.reason ?? `provider ${backend} is not in this build`}`);
  }
  let caps: Capabilities | undefined;
  if (!run.remote) {
    try {
      caps = (await o.registry.forCreate(parseCreateRequest({ provider: backend }))).provider.capabilities;
    } catch (e) {
      if (o.explicit) throw e;
      return skipAll(`not configured: ${(e as Error).message}`);
    }
  } else {
    caps = await builtinCapabilities(backend);
    if (!caps) return skipAll(`provider ${backend} is not known to this build of onmemos`);
  }
  const namespace = o.namespace ?? CHECK_NAMESPACE;

  const create = async (signal: AbortSignal, fields: Record<string, unknown> = {}) => {
    const req = parseCreateRequest({ provider: backend, namespace, ttl_minutes: 30, ...fields });
    const { provider } = await o.registry.forCreate(req);
    // Noted as made the moment it exists, before anything else can fail.
    const session = await run.made.creating(
      createSession(o.registry, req, { signal }).then((s) => {
        run.made.add(s.id, provider, o.registry);
        return s;
      }),
    );
    if (session.provider !== backend) {
      throw new CheckFailure(`asked for a ${backend} session, got one of ${session.provider} (${session.id})`);
    }
    return { session, provider };
  };
  // The shared session's create is the backend's, not one probe's: it is aborted once the backend is done.
  const done = new AbortController();
  const backendSignal = AbortSignal.any([run.signal, done.signal]);
  let main: Promise<{ session: Session; provider: Provider }> | undefined;
  const mainSession = () => {
    main ??= create(backendSignal);
    return main;
  };

  // In remote mode only the server knows what it has configured: the first create says.
  if (run.remote) {
    try {
      run.progress(`check: ${backend}: making a session`);
      await mainSession();
    } catch (e) {
      const why = notConfigured(e);
      if (why && !o.explicit) return skipAll(`not configured: ${why}`);
      if (why || run.signal.aborted) throw e;
      // Any other failure is each probe's, with the evidence.
    }
  }

  const probe = async (test: TestName): Promise<TestResult> => {
    const started = Date.now();
    const ms = () => Date.now() - started;
    const ttlMinutes = o.ttlMinutes ?? 1;
    const ttlGraceMs = o.ttlGraceMs ?? 90_000;
    const bound =
      (o.probeTimeoutMs ?? 180_000) +
      (test === 'session_duration' ? ttlMinutes * 60_000 + ttlGraceMs : 0) +
      (test === 'scale_to_zero' ? (o.idleWaitSeconds ?? 0) * 1000 : 0);
    const timeout = new AbortController();
    const timer = setTimeout(
      () => timeout.abort(new CheckFailure(`did not finish within ${Math.round(bound / 1000)}s`)),
      bound,
    );
    const signal = AbortSignal.any([run.signal, timeout.signal]);
    let at = 'starting';
    const env: ProbeEnv = {
      backend,
      caps: caps!,
      registry: o.registry,
      signal,
      bucket: o.bucket,
      server: o.server,
      idleWaitSeconds: o.idleWaitSeconds,
      ttlMinutes,
      ttlGraceMs,
      // Bounded like the rest of the probe: a create that never answers is the probe's failure at its bound.
      create: (fields) => guard({ signal }, create(signal, fields)),
      main: () => guard({ signal }, mainSession()),
      reconnect: o.reconnect ?? (() => o.registry),
      step: (what) => {
        at = what;
        run.progress(`check: ${backend}: ${test}: ${what}`);
      },
    };
    try {
      run.progress(`check: ${backend}: ${test}`);
      const checked = await PROBES[test](env);
      return { status: 'passed', ms: ms(), checked };
    } catch (e) {
      if (run.signal.aborted) throw run.signal.reason;
      if (e instanceof Skip) return { status: 'skipped', ms: ms(), reason: e.message };
      const message = e instanceof Error ? e.message : String(e);
      const evidence = e instanceof CheckFailure ? message : `${(e as OnmemosError).code ?? 'error'}: ${message}`;
      return { status: 'failed', ms: ms(), evidence: timeout.signal.aborted ? `${evidence} (at: ${at})` : evidence };
    } finally {
      clearTimeout(timer);
    }
  };

  try {
    return await runProbes(o, backend, run.signal, probe);
  } finally {
    done.abort(new InterruptedError(`check of ${backend} is done`));
  }
}

async function runProbes(
  o: CheckOptions,
  backend: Backend,
  signal: AbortSignal,
  probe: (t: TestName) => Promise<TestResult>,
): Promise<BackendReport> {
  const results: BackendReport['results'] = {};
  // The slow one (it waits out a TTL) runs beside the others.
  const slow = o.tests.includes('session_duration') ? probe('session_duration') : undefined;
  slow?.catch(() => {}); // awaited below, whatever the others do
  try {
    for (const t of o.tests) {
      if (t === 'session_duration') continue;
      if (signal.aborted) break;
      results[t] = await probe(t);
    }
  } finally {
    if (slow) await slow.then((r) => (results.session_duration = r)).catch(() => {});
  }
  if (signal.aborted) throw signal.reason;
  // The report lists them in the document's order.
  const ordered: BackendReport['results'] = {};
  for (const t of o.tests) if (results[t]) ordered[t] = results[t];
  return { backend, results: ordered };
}
