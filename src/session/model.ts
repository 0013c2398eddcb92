/**
 * The session model shared by every provider, the commands and (later) the server: request fields and
 * defaults as the OnMemOS v3 document gives them, validation, ids, and the response shape.
 */
import { UserError } from '../errors.js';

export const PROVIDER_KINDS = ['auto', 'local', 'cloud_run', 'gke', 'workstations'] as const;
export type ProviderChoice = (typeof PROVIDER_KINDS)[number];
export type ProviderKind = Exclude<ProviderChoice, 'auto'> | 'remote';

export const TEMPLATES = ['python', 'nodejs', 'go'] as const;
export type Template = (typeof TEMPLATES)[number];

export const NETWORK_MODES = ['outbound', 'isolated', 'host'] as const;
export type NetworkMode = (typeof NETWORK_MODES)[number];

export const DEFAULT_TTL_MINUTES = 60;

/** What a session may use; every session has all four, enforced by the kernel (README: Limits). */
export interface Limits {
  /** CPU time, in cores (fractions allowed). */
  cpus: number;
  /** Memory, tmpfs included; over it, the kernel kills the largest process (exit 137). */
  memoryBytes: number;
  /** Processes and threads together. */
  pids: number;
  /** Writable storage: /workspace, the home directory and /tmp together. */
  diskBytes: number;
}

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
export const DEFAULT_LIMITS: Limits = { cpus: 2, memoryBytes: 2 * GiB, pids: 1024, diskBytes: 10 * GiB };
const LIMIT_BOUNDS = {
  cpus: [0.01, 1024],
  memoryBytes: [64 * MiB, 1024 * GiB],
  pids: [16, 4_194_304],
  diskBytes: [16 * MiB, 16 * 1024 * GiB],
} as const;
export const MAX_TTL_MINUTES = 7 * 24 * 60;

export interface CreateSessionRequest {
  provider: ProviderChoice;
  template: Template;
  namespace: string;
  user: string;
  ttl_minutes: number;
  env: Record<string, string>;
  network: NetworkMode;
  storage?: { bucket?: string; filestore?: { ip: string; share: string } };
  needs_ssh: boolean;
  long_lived: boolean;
  expected_duration_minutes?: number;
  limits: Limits;
  /** Refuse to create rather than run with a limit the machine cannot enforce. */
  require_limits: boolean;
  /** Allow user namespaces inside the session (rootless containers, bwrap); off by default. */
  nested_userns: boolean;
}

/** A request's limits as given (CLI flags or API fields): sizes as bytes or with a unit, "512m", "2g", "1.5GiB". */
export interface LimitsInput {
  cpu?: number | string;
  memory?: number | string;
  pids?: number | string;
  disk?: number | string;
}

export type SessionStatus = 'creating' | 'running' | 'exited' | 'expired';

/** The document's response fields, plus times the CLI shows. */
export interface Session {
  id: string;
  provider: ProviderKind;
  namespace: string;
  user: string;
  status: SessionStatus;
  url: string | null;
  websocket: string | null;
  ssh: boolean;
  template: Template;
  created_at: string;
  expires_at: string;
  details: Record<string, unknown>;
}

/** The document's execute response (server, SDK). */
export interface ExecuteResult {
  stdout: string;
  stderr: string;
  returncode: number;
  success: boolean;
  /** Present when a stream was cut at the output cap. */
  truncated?: boolean;
}

export interface SessionFilter {
  namespace?: string;
  user?: string;
  provider?: ProviderKind;
}

const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** Namespace and user become parts of ids, hostnames and backend resource names: DNS labels only. */
export function validateName(kind: 'namespace' | 'user', value: string): string {
  if (!DNS_LABEL.test(value)) {
    throw new UserError(
      `invalid ${kind} ${JSON.stringify(value)}: must be a DNS label (lowercase letters, digits and '-', ` +
        `starting and ending with a letter or digit, at most 63 characters)`,
    );
  }
  return value;
}

const ENV_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * The largest single argument or `KEY=VALUE` string Linux passes to a new program (MAX_ARG_STRLEN, 128 KiB, counts
 * the terminating NUL). One byte more and every exec in the session fails with E2BIG.
 */
export const MAX_ARG_BYTES = 128 * 1024 - 1;
/**
 * The most environment (the bytes of every `KEY=VALUE`, plus one each for its NUL) a session, or one exec, may set.
 * Linux allows 2 MiB of argv and environment together; this leaves the command line most of it.
 */
export const MAX_ENV_TOTAL_BYTES = 256 * 1024;

/** Parses `K=V` (the value may contain '='); rejects keys a shell could not name and strings exec would refuse. */
export function parseEnvAssignment(raw: string): [string, string] {
  const eq = raw.indexOf('=');
  const key = eq < 0 ? raw : raw.slice(0, eq);
  if (eq < 0 || !ENV_KEY.test(key)) {
    const shown = raw.length > 80 ? `${raw.slice(0, 80)}…` : raw;
    throw new UserError(
      `invalid environment assignment ${JSON.stringify(shown)}: expected KEY=VALUE with KEY like [A-Za-z_][A-Za-z0-9_]*`,
    );
  }
  const value = raw.slice(eq + 1);
  if (value.includes('\0')) throw new UserError(`environment value for ${key} contains a NUL byte`);
  const bytes = Buffer.byteLength(raw);
  if (bytes > MAX_ARG_BYTES) {
    throw new UserError(
      `environment variable ${key} is ${bytes} bytes: KEY=VALUE may be at most ${MAX_ARG_BYTES} bytes (128 KiB - 1)`,
    );
  }
  return [key, value];
}

/** Checks a whole environment against MAX_ENV_TOTAL_BYTES (each variable is checked by parseEnvAssignment). */
export function validateEnvTotal(env: Record<string, string>): Record<string, string> {
  let total = 0;
  for (const [k, v] of Object.entries(env)) total += Buffer.byteLength(k) + 1 + Buffer.byteLength(v) + 1;
  if (total > MAX_ENV_TOTAL_BYTES) {
    throw new UserError(
      `the environment is ${total} bytes in all: at most ${MAX_ENV_TOTAL_BYTES} bytes (256 KiB) of KEY=VALUE strings`,
    );
  }
  return env;
}

/** A string that becomes one argument of a program (argv element, `sh -c` command): at most MAX_ARG_BYTES. */
export function validateArgument(what: string, value: string): string {
  const bytes = Buffer.byteLength(value);
  if (bytes > MAX_ARG_BYTES) {
    throw new UserError(`${what} is ${bytes} bytes: at most ${MAX_ARG_BYTES} bytes (128 KiB - 1) fit in one argument`);
  }
  return value;
}

export function validateTtl(minutes: number): number {
  if (!Number.isFinite(minutes) || minutes <= 0 || minutes > MAX_TTL_MINUTES) {
    throw new UserError(`invalid TTL ${minutes}: must be more than 0 and at most ${MAX_TTL_MINUTES} minutes`);
  }
  return minutes;
}

function oneOf<T extends string>(kind: string, allowed: readonly T[], value: string): T {
  if (!(allowed as readonly string[]).includes(value)) {
    throw new UserError(`invalid ${kind} ${JSON.stringify(value)}: expected one of ${allowed.join(', ')}`);
  }
  return value as T;
}
export const parseProvider = (v: string) => oneOf('provider', PROVIDER_KINDS, v);
export const parseTemplate = (v: string) => oneOf('template', TEMPLATES, v);
export const parseNetwork = (v: string) => oneOf('network mode', NETWORK_MODES, v);

/** Bytes from `1073741824`, `512m`, `2g`, `1.5GiB`, `64MB` (binary units, as docker's --memory). */
export function parseSize(what: string, v: number | string): number {
  if (typeof v === 'number') {
    if (!Number.isFinite(v) || v <= 0) throw new UserError(`invalid ${what} ${v}: must be a positive size`);
    return Math.floor(v);
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$/i.exec(v);
  if (!m) throw new UserError(`invalid ${what} ${JSON.stringify(v)}: expected a size such as 512m, 2g or 1073741824`);
  const unit = { '': 1, k: 1024, m: MiB, g: GiB, t: 1024 * GiB }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  return Math.floor(Number(m[1]) * unit);
}

function inBounds(name: keyof Limits, label: string, value: number, shown: (n: number) => string): number {
  const [lo, hi] = LIMIT_BOUNDS[name];
  if (!(value >= lo && value <= hi)) {
    throw new UserError(`invalid ${label} ${shown(value)}: must be from ${shown(lo)} to ${shown(hi)}`);
  }
  return value;
}

const bytesShown = (n: number) => (n % GiB === 0 ? `${n / GiB}g` : n % MiB === 0 ? `${n / MiB}m` : `${n} bytes`);

/** Validates limits, filling in the documented defaults (DEFAULT_LIMITS). */
export function normalizeLimits(input: LimitsInput = {}): Limits {
  const num = (what: string, v: number | string) => {
    const n = typeof v === 'number' ? v : Number(v);
    if (!Number.isFinite(n) || (typeof v === 'string' && !/^\s*\d+(\.\d+)?\s*$/.test(v))) {
      throw new UserError(`invalid ${what} ${JSON.stringify(v)}: expected a number`);
    }
    return n;
  };
  const cpus = input.cpu === undefined ? DEFAULT_LIMITS.cpus : num('--cpu', input.cpu);
  const pids = input.pids === undefined ? DEFAULT_LIMITS.pids : num('--pids', input.pids);
  if (!Number.isInteger(pids)) throw new UserError(`invalid --pids ${pids}: expected a whole number`);
  return {
    cpus: inBounds('cpus', '--cpu', cpus, String),
    memoryBytes: inBounds(
      'memoryBytes',
      '--memory',
      input.memory === undefined ? DEFAULT_LIMITS.memoryBytes : parseSize('--memory', input.memory),
      bytesShown,
    ),
    pids: inBounds('pids', '--pids', pids, String),
    diskBytes: inBounds(
      'diskBytes',
      '--disk',
      input.disk === undefined ? DEFAULT_LIMITS.diskBytes : parseSize('--disk', input.disk),
      bytesShown,
    ),
  };
}

/** Applies the document's defaults and validates every field; throws UserError before anything is made. */
export function normalizeCreateRequest(
  input: Partial<Omit<CreateSessionRequest, 'limits'>> & { limits?: LimitsInput },
): CreateSessionRequest {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(input.env ?? {})) {
    const [key, value] = parseEnvAssignment(`${k}=${v}`);
    env[key] = value;
  }
  validateEnvTotal(env);
  const req: CreateSessionRequest = {
    provider: parseProvider(input.provider ?? 'auto'),
    template: parseTemplate(input.template ?? 'python'),
    namespace: validateName('namespace', input.namespace ?? 'default'),
    user: validateName('user', input.user ?? 'user'),
    ttl_minutes: validateTtl(input.ttl_minutes ?? DEFAULT_TTL_MINUTES),
    env,
    network: parseNetwork(input.network ?? 'outbound'),
    needs_ssh: input.needs_ssh ?? false,
    long_lived: input.long_lived ?? false,
    limits: normalizeLimits(input.limits),
    require_limits: input.require_limits ?? false,
    nested_userns: input.nested_userns ?? false,
  };
  if (input.storage) req.storage = input.storage;
  if (input.expected_duration_minutes !== undefined) req.expected_duration_minutes = input.expected_duration_minutes;
  return req;
}

/** Limits as the API's create request carries them (`cpu`, `memory`, `pids`, `disk`). */
export function limitsInput(l: Limits): LimitsInput {
  return { cpu: l.cpus, memory: l.memoryBytes, pids: l.pids, disk: l.diskBytes };
}

/**
 * `n` random base-36 characters. Only uniqueness is asked of them (a clash is detected where it matters), so
 * Math.random serves, and start-up does not pay for loading node:crypto.
 */
export function randomSuffix(n: number): string {
  let s = '';
  while (s.length < n) s += Math.floor(Math.random() * 36).toString(36);
  return s;
}

/**
 * `ws-{namespace}-{user}-{unix seconds}` as the document gives it, plus a short random suffix so two creates
 * in the same second never collide.
 */
export function newSessionId(namespace: string, user: string, now = Date.now()): string {
  const suffix = randomSuffix(4);
  return `ws-${namespace}-${user}-${Math.floor(now / 1000)}-${suffix}`;
}

const SESSION_ID = /^ws-[a-z0-9-]{1,200}$/;
/** Ids come from users and end up in paths: only the shape newSessionId makes is accepted. */
export function validateSessionId(id: string): string {
  if (!SESSION_ID.test(id) || id.endsWith('-')) {
    throw new UserError(`invalid session id ${JSON.stringify(id)}: expected ws-<namespace>-<user>-<time>-<suffix>`, {
      code: 'invalid_argument',
    });
  }
  return id;
}

/** BUCKET_NAME as in the document: onmemos-{namespace}-{user}-{timestamp}. */
export function bucketNameFor(id: string): string {
  return `onmemos-${id.slice(3)}`;
}

/** The environment every session process sees (the document's variables). */
export function sessionEnvironment(s: { id: string; namespace: string; user: string }): Record<string, string> {
  return { WORKSPACE_ID: s.id, NAMESPACE: s.namespace, USER: s.user, BUCKET_NAME: bucketNameFor(s.id) };
}

export function isExpired(s: Pick<Session, 'expires_at'>, now = Date.now()): boolean {
  return Date.parse(s.expires_at) <= now;
}

export function matchesFilter(s: Session, f: SessionFilter = {}): boolean {
  return (
    (f.namespace === undefined || s.namespace === f.namespace) &&
    (f.user === undefined || s.user === f.user) &&
    (f.provider === undefined || s.provider === f.provider)
  );
}

/**
 * The document's provider choice for `auto`: `needs_ssh` or `expected_duration_minutes > 60` → workstations;
 * `long_lived` → gke; otherwise cloud_run. Returns the choice and the reason.
 */
export function chooseProvider(
  req: Pick<CreateSessionRequest, 'provider' | 'needs_ssh' | 'long_lived' | 'expected_duration_minutes'>,
): {
  provider: Exclude<ProviderChoice, 'auto'>;
  reason: string;
} {
  if (req.provider !== 'auto') return { provider: req.provider, reason: 'requested' };
  if (req.needs_ssh) return { provider: 'workstations', reason: 'needs_ssh' };
  if (req.expected_duration_minutes !== undefined && req.expected_duration_minutes > 60) {
    return { provider: 'workstations', reason: 'expected_duration_minutes > 60' };
  }
  if (req.long_lived) return { provider: 'gke', reason: 'long_lived' };
  return { provider: 'cloud_run', reason: 'short-lived by default' };
}
