/**
 * Where the workstations provider works and how it authenticates, from the environment: the document's PROJECT_ID,
 * WORKSTATIONS_REGION, WORKSTATIONS_CLUSTER and WORKSTATIONS_CONFIG (or gcloud's own properties as variables:
 * CLOUDSDK_CORE_PROJECT, CLOUDSDK_WORKSTATIONS_REGION, _CLUSTER, _CONFIG), and gcloud's overrides (PROTOCOLS.md
 * §5): CLOUDSDK_API_ENDPOINT_OVERRIDES_WORKSTATIONS, CLOUDSDK_AUTH_ACCESS_TOKEN_FILE, and
 * CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE (a CA the workstation hosts' TLS is also checked against, as gcloud's
 * start-tcp-tunnel does). Only the environment is read here: `configured` must be cheap.
 */
import { type GoogleEndpoint, parseEndpoint } from '../google.js';

export interface WorkstationsConfig {
  project: string;
  region: string;
  cluster: string;
  config: string;
  /** CLOUDSDK_API_ENDPOINT_OVERRIDES_WORKSTATIONS, parsed; workstations.googleapis.com when absent. */
  endpoint?: GoogleEndpoint;
  /** CLOUDSDK_AUTH_ACCESS_TOKEN_FILE: a static access token instead of Application Default Credentials. */
  tokenFile?: string;
  /** CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE: a CA bundle trusted for the workstations' hosts, besides Node's own. */
  caFile?: string;
  /** The account SSH logs in as in the workstation (WORKSTATIONS_USER; `user`, as gcloud's default). */
  user: string;
}

export type WorkstationsResolved = { ok: true; config: WorkstationsConfig } | { ok: false; reason: string };

const PROJECT = /^[a-z][a-z0-9-]{4,28}[a-z0-9]$|^[a-z0-9.:-]{1,100}$/;
const REGION = /^[a-z]+-[a-z]+[0-9]+$/;
const ID = /^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/;
const USER = /^[a-z_][a-z0-9_-]{0,31}$/;

/** The variables that say the workstations provider is meant to be used (one set, and it is configured or broken). */
export const WORKSTATIONS_SETTINGS = [
  'WORKSTATIONS_REGION',
  'WORKSTATIONS_CLUSTER',
  'WORKSTATIONS_CONFIG',
  'CLOUDSDK_WORKSTATIONS_REGION',
  'CLOUDSDK_WORKSTATIONS_CLUSTER',
  'CLOUDSDK_WORKSTATIONS_CONFIG',
  'CLOUDSDK_API_ENDPOINT_OVERRIDES_WORKSTATIONS',
] as const;

export function workstationsConfig(env: NodeJS.ProcessEnv): WorkstationsResolved {
  const project = env.PROJECT_ID || env.CLOUDSDK_CORE_PROJECT || env.GOOGLE_CLOUD_PROJECT || undefined;
  const region = env.WORKSTATIONS_REGION || env.CLOUDSDK_WORKSTATIONS_REGION || undefined;
  const cluster = env.WORKSTATIONS_CLUSTER || env.CLOUDSDK_WORKSTATIONS_CLUSTER || undefined;
  const config = env.WORKSTATIONS_CONFIG || env.CLOUDSDK_WORKSTATIONS_CONFIG || undefined;
  const missing = [
    project ? '' : 'PROJECT_ID',
    region ? '' : 'WORKSTATIONS_REGION',
    cluster ? '' : 'WORKSTATIONS_CLUSTER',
    config ? '' : 'WORKSTATIONS_CONFIG',
  ].filter(Boolean);
  if (missing.length > 0) return { ok: false, reason: `set ${missing.join(', ')}` };
  if (!PROJECT.test(project!)) return { ok: false, reason: `invalid project id ${JSON.stringify(project)}` };
  if (!REGION.test(region!)) return { ok: false, reason: `invalid WORKSTATIONS_REGION ${JSON.stringify(region)}` };
  if (!ID.test(cluster!)) return { ok: false, reason: `invalid WORKSTATIONS_CLUSTER ${JSON.stringify(cluster)}` };
  if (!ID.test(config!)) return { ok: false, reason: `invalid WORKSTATIONS_CONFIG ${JSON.stringify(config)}` };
  const user = env.WORKSTATIONS_USER || 'user';
  if (!USER.test(user)) return { ok: false, reason: `invalid WORKSTATIONS_USER ${JSON.stringify(user)}` };
  const c: WorkstationsConfig = { project: project!, region: region!, cluster: cluster!, config: config!, user };
  const override = env.CLOUDSDK_API_ENDPOINT_OVERRIDES_WORKSTATIONS;
  if (override) {
    const endpoint = parseEndpoint('CLOUDSDK_API_ENDPOINT_OVERRIDES_WORKSTATIONS', override);
    if (typeof endpoint === 'string') return { ok: false, reason: endpoint };
    c.endpoint = endpoint;
  }
  if (env.CLOUDSDK_AUTH_ACCESS_TOKEN_FILE) c.tokenFile = env.CLOUDSDK_AUTH_ACCESS_TOKEN_FILE;
  if (env.CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE) c.caFile = env.CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE;
  return { ok: true, config: c };
}

/** The workstation config's full resource name: the parent of every workstation this provider makes. */
export function configName(c: WorkstationsConfig): string {
  return `projects/${c.project}/locations/${c.region}/workstationClusters/${c.cluster}/workstationConfigs/${c.config}`;
}
