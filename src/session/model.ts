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
  storage?: {
    bucket?: string;
    filestore?: { ip: string; share: string };
    /** A persistent volume at /workspace (gke: a PVC), kept after the session with `keep`. */
    volume?: { size?: string; storage_class?: string; keep?: boolean };
  };
  /** The container image to run, for providers that run images (gke, cloud_run); else the template's. */
  image?: string;
  needs_ssh: boolean;
  long_lived: boolean;
  expected_duration_minutes?: number;
  limits: Limits;
  /** Refuse to create rather than run with a limit the machine cannot enforce. */
  require_limits: boolean;
  /** Allow user namespaces inside the session (rootless containers, bwrap); off by default. */
  nested_userns: boolean;
  /**
   * CPU for the session all the time, not only while a request is served, so that background processes keep running
   * between execs (cloud_run: instance-based CPU, `cpuIdle: false`). Where that is always so (local, gke) it is
   * satisfied as it is; a provider that cannot give it refuses (Capabilities.backgroundWhileIdle).
   */
  cpu_always: boolean;
}

/** A request's limits as given (CLI flags or API fields): sizes as bytes or with a unit, "512m", "2g", "1.5GiB". */
export interface LimitsInput {
  cpu?: number | string;
  memory?: number | string;
  pids?: number | string;
  disk?: number | string;
}

/**
 * A session's life: creating → (starting →) running ⇄ stopping → stopped → starting → running; it ends as exited
 * (its processes are gone), failed (the backend could not run it) or expired (past its TTL, not yet removed).
 */
export const SESSION_STATUSES = [
  'creating',
  'starting',
  'running',
  'stopping',
  'stopped',
  'exited',
  'failed',
  'expired',
] as const;
export type SessionStatus = (typeof SESSION_STATUSES)[number];

/** One step of a long operation (a create), for a progress line; `--json` output never carries them. */
export interface ProgressEvent {
  /** A stable name for the step: `provider`, `prepare`, `limits`, `launch`, `network`, `ready`, … */
  step: string;
  message: string;
  /** The session's id, once it has one. */
  id?: string;
}

/** The header in which GET /v1/sessions names the providers it could not reach (URI-encoded JSON array). */
export const UNREACHABLE_HEADER = 'x-onmemos-unreachable';
/**
 * The media type of a create that streams its progress (POST /v1/sessions with this in Accept): one JSON object per
 * line, `{"progress":{...}}` for each step, then `{"session":{...}}` or `{"error":{"code","message"}}`.
 */
export const NDJSON = 'application/x-ndjson';

/** How to reach a session, as its provider knows it (GET /v1/sessions/{id}/connect, `onmemos connect`). */
export interface ConnectInfo {
  id: string;
  provider: ProviderKind;
  status: SessionStatus;
  /** The session's own web address (a Cloud Run service, a workstation), or null. */
  url: string | null;
  /** The exec WebSocket (v5.channel.k8s.io). Through a server: a path on that server. */
  exec: { url: string; protocol: string } | null;
  /** The interactive shell: this argv through the exec WebSocket with a tty. */
  shell: { argv: string[] } | null;
  /** The document's JSON shell WebSocket (`{"type":"command"}`), where one is served. */
  json_shell: string | null;
  /** For backends reached over SSH: where, as whom, and the tunnel that carries it. */
  ssh: { host: string; port: number; user: string; tunnel?: string } | null;
  /** The web UI's terminal (onmemos serve): a page on the server, or null where no server serves one. */
  web_terminal?: string | null;
}

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
  /** The web UI's terminal of the session, where a server serves one (onmemos serve, remote mode). */
  web_terminal?: string;
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

/**
 * A create request as the API, the CLI and the SDK receive it (the document's fields, plus `cpu`, `memory`, `pids`,
 * `disk`, `env`, `network`, `require_limits`, `nested_userns`, `cpu_always`): types are checked here (bad_request, 400), values
 * by normalizeCreateRequest (invalid_argument, 422).
 */
export function parseCreateRequest(input: unknown): CreateSessionRequest {
  if (input === undefined || input === null) input = {};
  if (typeof input !== 'object' || Array.isArray(input)) throw badRequest('the create request must be an object');
  const body = input as Record<string, unknown>;
  const typed = <T>(k: string, type: string, ok: (v: unknown) => boolean): T | undefined => {
    const v = body[k];
    if (v === undefined || v === null) return undefined;
    if (!ok(v)) throw badRequest(`"${k}" must be ${type}`);
    return v as T;
  };
  const str = (k: string) => typed<string>(k, 'a string', (v) => typeof v === 'string');
  const num = (k: string) => typed<number>(k, 'a number', (v) => typeof v === 'number');
  const bool = (k: string) => typed<boolean>(k, 'a boolean', (v) => typeof v === 'boolean');
  const size = (k: string) =>
    typed<number | string>(
      k,
      'a number or a string such as "2g"',
      (v) => typeof v === 'number' || typeof v === 'string',
    );
  const isObject = (v: unknown) => typeof v === 'object' && v !== null && !Array.isArray(v);
  const env = typed<Record<string, string>>(
    'env',
    'an object of strings',
    (v) => isObject(v) && Object.values(v as object).every((x) => typeof x === 'string'),
  );
  const storage = typed<Record<string, unknown>>('storage', 'an object', isObject);
  return normalizeCreateRequest({
    provider: str('provider') as ProviderChoice | undefined,
    template: str('template') as Template | undefined,
    namespace: str('namespace'),
    user: str('user'),
    ttl_minutes: num('ttl_minutes'),
    env,
    network: str('network') as NetworkMode | undefined,
    storage: storage === undefined ? undefined : parseStorage(storage),
    image: str('image'),
    needs_ssh: bool('needs_ssh'),
    long_lived: bool('long_lived'),
    expected_duration_minutes: num('expected_duration_minutes'),
    limits: { cpu: size('cpu'), memory: size('memory'), pids: size('pids'), disk: size('disk') },
    require_limits: bool('require_limits'),
    nested_userns: bool('nested_userns'),
    cpu_always: bool('cpu_always'),
  });
}

const badRequest = (message: string) => new UserError(message, { code: 'bad_request' });

/** The document's storage options: `{bucket?: "name", filestore?: {ip, share}}`. */
function parseStorage(raw: Record<string, unknown>): NonNullable<CreateSessionRequest['storage']> {
  const out: NonNullable<CreateSessionRequest['storage']> = {};
  for (const k of Object.keys(raw)) {
    if (k !== 'bucket' && k !== 'filestore' && k !== 'volume')
      throw badRequest(`unknown storage option "${k}": expected bucket, filestore, volume`);
  }
  if (raw.bucket !== undefined && raw.bucket !== null) {
    if (typeof raw.bucket !== 'string') throw badRequest('"storage.bucket" must be a string');
    if (!/^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$/.test(raw.bucket)) {
      throw new UserError(`invalid bucket name ${JSON.stringify(raw.bucket.slice(0, 80))}`);
    }
    out.bucket = raw.bucket;
  }
  const fs = raw.filestore;
  if (fs !== undefined && fs !== null) {
    const f = fs as Record<string, unknown>;
    if (typeof fs !== 'object' || typeof f.ip !== 'string' || typeof f.share !== 'string') {
      throw badRequest('"storage.filestore" must be {"ip": "10.0.0.2", "share": "name"}');
    }
    if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(f.ip) || !/^[A-Za-z0-9_-]{1,64}$/.test(f.share)) {
      throw new UserError('invalid filestore: ip must be an IPv4 address and share a file share name');
    }
    out.filestore = { ip: f.ip, share: f.share };
  }
  if (raw.volume !== undefined && raw.volume !== null) out.volume = parseVolume(raw.volume);
  return out;
}

/** `storage.volume`: `{size?: "10Gi", storage_class?: "standard-rwo", keep?: false}`. */
function parseVolume(raw: unknown): NonNullable<NonNullable<CreateSessionRequest['storage']>['volume']> {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw badRequest('"storage.volume" must be {"size": "10Gi", "storage_class": "name", "keep": false}');
  }
  const v = raw as Record<string, unknown>;
  for (const k of Object.keys(v)) {
    if (k !== 'size' && k !== 'storage_class' && k !== 'keep') {
      throw badRequest(`unknown storage.volume option "${k}": expected size, storage_class, keep`);
    }
  }
  const out: { size?: string; storage_class?: string; keep?: boolean } = {};
  if (v.size !== undefined && v.size !== null) {
    if (typeof v.size !== 'string') throw badRequest('"storage.volume.size" must be a string such as "10Gi"');
    if (!/^[1-9][0-9]{0,8}(Ki|Mi|Gi|Ti|k|M|G|T)?$/.test(v.size)) {
      throw new UserError(
        `invalid volume size ${JSON.stringify(v.size.slice(0, 40))}: expected a quantity such as 10Gi`,
      );
    }
    out.size = v.size;
  }
  if (v.storage_class !== undefined && v.storage_class !== null) {
    if (typeof v.storage_class !== 'string') throw badRequest('"storage.volume.storage_class" must be a string');
    if (!/^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/.test(v.storage_class)) {
      throw new UserError(`invalid storage class ${JSON.stringify(v.storage_class.slice(0, 80))}`);
    }
    out.storage_class = v.storage_class;
  }
  if (v.keep !== undefined && v.keep !== null) {
    if (typeof v.keep !== 'boolean') throw badRequest('"storage.volume.keep" must be a boolean');
    out.keep = v.keep;
  }
  return out;
}

/** A container image reference: registry/path:tag or @sha256:digest. */
export function validateImage(v: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,511}$/.test(v) || v.includes('//')) {
    throw new UserError(
      `invalid image ${JSON.stringify(v.slice(0, 80))}: expected a reference such as python:3.12-slim`,
    );
  }
  return v;
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
    cpu_always: input.cpu_always ?? false,
  };
  if (input.storage && (input.storage.bucket || input.storage.filestore || input.storage.volume)) {
    req.storage = input.storage;
  }
  if (input.image !== undefined) req.image = validateImage(input.image);
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

/** The sessions `describe` finds among a backend's resources (pods, services, records...), filtered, oldest first. */
export function sessionsAmong<T>(
  items: Iterable<T>,
  describe: (item: T) => Session | undefined,
  filter: SessionFilter = {},
): Session[] {
  const out: Session[] = [];
  for (const item of items) {
    const s = describe(item);
    if (s && matchesFilter(s, filter)) out.push(s);
  }
  return out.sort((a, b) => a.created_at.localeCompare(b.created_at) || a.id.localeCompare(b.id));
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
