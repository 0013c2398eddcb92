/**
 * What the Cloud Run Admin API v2 stamps on its resources: names, ids and their validation, timestamps, etags,
 * conditions, and enum values in either JSON encoding (the client asks `$alt=json;enum-encoding=int` and then reads
 * numbers; gcloud and operation polls read names).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { fieldViolation, invalidArgument } from './errors.js';

export type Json = Record<string, unknown>;

/** `projects/{project}/locations/{location}`. */
export interface Parent {
  project: string;
  location: string;
}

export const parentName = (p: Parent) => `projects/${p.project}/locations/${p.location}`;

/** RFC 3339 with microseconds, as Google writes timestamps. */
export function now(): string {
  const us = Math.floor((performance.timeOrigin + performance.now()) * 1000);
  const iso = new Date(Math.floor(us / 1000)).toISOString();
  return `${iso.slice(0, 23)}${String(us % 1000).padStart(3, '0')}Z`;
}

export const newUid = () => randomUUID();

/** An etag as the API returns one: quoted, opaque, new at every change. */
export const newEtag = (name: string) =>
  `"${randomBytes(9).toString('base64url')}/${Buffer.from(name).toString('base64url')}"`;

const LOWER_ALNUM = 'abcdefghijklmnopqrstuvwxyz0123456789';
/** n random lowercase letters and digits (revision and execution suffixes: `hello-00001-dj9`, `job-vnttt`). */
export function suffix(n: number): string {
  const bytes = randomBytes(n);
  return [...bytes].map((b) => LOWER_ALNUM[b % LOWER_ALNUM.length]).join('');
}

export const revisionId = (service: string, generation: number) =>
  `${service}-${String(generation).padStart(5, '0')}-${suffix(3)}`;

const ID_RULE = 'only lowercase, digits, and hyphens; must begin with letter, and cannot end with hyphen';

/** Service ids: at most 49 characters. */
export function checkServiceId(id: string | null): string {
  if (!id || !/^[a-z]([-a-z0-9]{0,47}[a-z0-9])?$/.test(id)) {
    throw fieldViolation('CreateServiceRequest', 'service_id', `${ID_RULE}; must be less than 50 characters.`);
  }
  return id;
}

/** Job ids: at most 63 characters (the service limit's wording, with the job limit). */
export function checkJobId(id: string | null): string {
  if (!id || !/^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/.test(id)) {
    throw fieldViolation('CreateJobRequest', 'job_id', `${ID_RULE}; must be less than 64 characters.`);
  }
  return id;
}

export type ConditionState = 'CONDITION_PENDING' | 'CONDITION_RECONCILING' | 'CONDITION_FAILED' | 'CONDITION_SUCCEEDED';

export interface Condition {
  type: string;
  state: ConditionState;
  message?: string;
  lastTransitionTime?: string;
  severity?: 'ERROR' | 'WARNING' | 'INFO';
  revisionReason?: string;
  executionReason?: string;
}

/** A condition; `at` is when it last changed (kept when the state did not change). */
export function condition(type: string, state: ConditionState, extra: Partial<Condition> = {}, at = now()): Condition {
  return {
    type,
    state,
    ...(extra.message ? { message: extra.message } : {}),
    lastTransitionTime: at,
    ...(state === 'CONDITION_FAILED' ? { severity: 'ERROR' as const } : {}),
    ...(extra.revisionReason ? { revisionReason: extra.revisionReason } : {}),
    ...(extra.executionReason ? { executionReason: extra.executionReason } : {}),
  };
}

/** Keeps the transition time of a condition whose state did not change. */
export function keepTransition(before: Condition | undefined, after: Condition): Condition {
  return before && before.state === after.state && before.lastTransitionTime
    ? { ...after, lastTransitionTime: before.lastTransitionTime }
    : after;
}

const table = (...names: string[]) => names;
/** Enum values by field name (index = number; a gap is an empty string). */
const ENUMS: Record<string, string[]> = {
  state: table(
    'STATE_UNSPECIFIED',
    'CONDITION_PENDING',
    'CONDITION_RECONCILING',
    'CONDITION_FAILED',
    'CONDITION_SUCCEEDED',
  ),
  severity: table('SEVERITY_UNSPECIFIED', 'ERROR', 'WARNING', 'INFO'),
  revisionReason: table(
    'REVISION_REASON_UNDEFINED',
    'PENDING',
    'RESERVE',
    'RETIRED',
    'RETIRING',
    'RECREATING',
    'HEALTH_CHECK_CONTAINER_ERROR',
    'CUSTOMIZED_PATH_RESPONSE_PENDING',
    'MIN_INSTANCES_NOT_PROVISIONED',
    'ACTIVE_REVISION_LIMIT_REACHED',
    'NO_DEPLOYMENT',
    'HEALTH_CHECK_SKIPPED',
    'MIN_INSTANCES_WARMING',
  ),
  executionReason: table(
    'EXECUTION_REASON_UNDEFINED',
    'JOB_STATUS_SERVICE_POLLING_ERROR',
    'NON_ZERO_EXIT_CODE',
    'CANCELLED',
    'CANCELLING',
    'DELETED',
    'DELAYED_START_PENDING',
  ),
  launchStage: table(
    'LAUNCH_STAGE_UNSPECIFIED',
    'EARLY_ACCESS',
    'ALPHA',
    'BETA',
    'GA',
    'DEPRECATED',
    'UNIMPLEMENTED',
    'PRELAUNCH',
  ),
  ingress: table(
    'INGRESS_TRAFFIC_UNSPECIFIED',
    'INGRESS_TRAFFIC_ALL',
    'INGRESS_TRAFFIC_INTERNAL_ONLY',
    'INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER',
    'INGRESS_TRAFFIC_NONE',
  ),
  executionEnvironment: table(
    'EXECUTION_ENVIRONMENT_UNSPECIFIED',
    'EXECUTION_ENVIRONMENT_GEN1',
    'EXECUTION_ENVIRONMENT_GEN2',
  ),
  completionStatus: table(
    'COMPLETION_STATUS_UNSPECIFIED',
    'EXECUTION_SUCCEEDED',
    'EXECUTION_FAILED',
    'EXECUTION_RUNNING',
    'EXECUTION_PENDING',
    'EXECUTION_CANCELLED',
  ),
  scalingMode: table('SCALING_MODE_UNSPECIFIED', 'AUTOMATIC', 'MANUAL'),
  egress: table('VPC_EGRESS_UNSPECIFIED', 'ALL_TRAFFIC', 'PRIVATE_RANGES_ONLY'),
  encryptionKeyRevocationAction: table('ENCRYPTION_KEY_REVOCATION_ACTION_UNSPECIFIED', 'PREVENT_NEW', 'SHUTDOWN'),
  medium: table('MEDIUM_UNSPECIFIED', 'MEMORY'),
};
/** `type` is an enum only in traffic targets (a condition's `type` is a string). */
const TRAFFIC_TYPE = table(
  'TRAFFIC_TARGET_ALLOCATION_TYPE_UNSPECIFIED',
  'TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST',
  'TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION',
);

function enumTable(key: string, parent: string | undefined): string[] | undefined {
  if (key === 'type') return parent === 'traffic' || parent === 'trafficStatuses' ? TRAFFIC_TYPE : undefined;
  return Object.hasOwn(ENUMS, key) ? ENUMS[key] : undefined;
}

/**
 * A deep copy with every enum value as a number (`ints`) or as its name. Unknown numbers and names are kept as
 * they are; `@type`-tagged values are walked like any other object.
 */
export function encodeEnums<T>(value: T, ints: boolean, key?: string, parent?: string): T {
  if (Array.isArray(value)) return value.map((v) => encodeEnums(v, ints, undefined, key)) as T;
  if (value !== null && typeof value === 'object') {
    const out: Json = {};
    for (const [k, v] of Object.entries(value)) out[k] = encodeEnums(v, ints, k, key ?? parent);
    return out as T;
  }
  const names = key === undefined ? undefined : enumTable(key, parent);
  if (!names) return value;
  if (ints && typeof value === 'string') {
    const i = names.indexOf(value);
    return (i >= 0 ? i : value) as T;
  }
  if (!ints && typeof value === 'number') return (names[value] || value) as T;
  return value;
}

/** One page of `items` (`pageSize` 0 or absent: all); the token is the next offset, opaque to clients. */
export function page<T>(items: T[], pageSize: number, pageToken: string): { items: T[]; nextPageToken?: string } {
  let offset = 0;
  if (pageToken) {
    const m = /^o(\d+)$/.exec(Buffer.from(pageToken, 'base64url').toString('utf8'));
    if (!m) throw invalidArgument('The page token is invalid.');
    offset = Number(m[1]);
  }
  if (!Number.isInteger(pageSize) || pageSize < 0) throw invalidArgument('page_size must not be negative.');
  const size = pageSize || items.length;
  const slice = items.slice(offset, offset + size);
  const next = offset + size < items.length ? Buffer.from(`o${offset + size}`).toString('base64url') : undefined;
  return next ? { items: slice, nextPageToken: next } : { items: slice };
}

/** A request body's copy without the fields the server sets. */
export function withoutOutputFields(o: Json, fields: readonly string[]): Json {
  const out: Json = { ...o };
  for (const f of fields) delete out[f];
  return out;
}

/** `v` without proto3 default values (empty strings, lists and maps, zero, false, null), keys sorted. */
export function canonical(v: unknown): unknown {
  if (Array.isArray(v)) return v.length === 0 ? undefined : v.map(canonical);
  if (v !== null && typeof v === 'object') {
    const out: Json = {};
    for (const k of Object.keys(v).sort()) {
      const c = canonical((v as Json)[k]);
      if (c !== undefined) out[k] = c;
    }
    return Object.keys(out).length === 0 ? undefined : out;
  }
  return v === '' || v === 0 || v === false || v === null ? undefined : v;
}

/** Whether two messages are the same once defaults are left out (what a client sends back is fuller than what it got). */
export const sameMessage = (a: unknown, b: unknown) => JSON.stringify(canonical(a)) === JSON.stringify(canonical(b));
