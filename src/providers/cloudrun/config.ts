/**
 * Where the cloud_run provider works and how it authenticates, from the environment: the document's PROJECT_ID and
 * REGION, and gcloud's own variables (PROTOCOLS.md §5), so that one setting points gcloud and onmemos at the same
 * endpoint: CLOUDSDK_CORE_PROJECT, CLOUDSDK_RUN_REGION, CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN (a regional, private
 * or test endpoint) and CLOUDSDK_AUTH_ACCESS_TOKEN_FILE (a file holding an access token). Without a token file,
 * Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud's, or the metadata server). Only the
 * environment is read here: `configured` must be cheap.
 */
import type { Template } from '../../session/model.js';
import { type GoogleEndpoint, parseEndpoint as parseGoogleEndpoint } from '../google.js';

export type CloudRunEndpoint = GoogleEndpoint;

export interface CloudRunConfig {
  project: string;
  region: string;
  /** CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN, parsed; the client's default (run.googleapis.com) when absent. */
  endpoint?: CloudRunEndpoint;
  /** CLOUDSDK_AUTH_ACCESS_TOKEN_FILE: a static access token instead of Application Default Credentials. */
  tokenFile?: string;
  /** CLOUDRUN_DEFAULT_IMAGE: the image of every template (`create --image` wins). */
  defaultImage?: string;
  /** How long a read of one service may take, retries included (default 10 s, as the client's; tests shorten it). */
  apiTimeoutMs?: number;
}

export type CloudRunResolved = { ok: true; config: CloudRunConfig } | { ok: false; reason: string };

const PROJECT = /^[a-z][a-z0-9-]{4,28}[a-z0-9]$|^[a-z0-9.:-]{1,100}$/;
const REGION = /^[a-z]+-[a-z]+[0-9]+$/;

export function cloudRunConfig(env: NodeJS.ProcessEnv): CloudRunResolved {
  const project = env.PROJECT_ID || env.CLOUDSDK_CORE_PROJECT || env.GOOGLE_CLOUD_PROJECT || undefined;
  const region = env.REGION || env.CLOUDSDK_RUN_REGION || undefined;
  if (!project) return { ok: false, reason: 'no project (set PROJECT_ID, or CLOUDSDK_CORE_PROJECT)' };
  if (!region) return { ok: false, reason: 'no region (set REGION, or CLOUDSDK_RUN_REGION)' };
  if (!PROJECT.test(project)) return { ok: false, reason: `invalid project id ${JSON.stringify(project)}` };
  if (!REGION.test(region))
    return { ok: false, reason: `invalid region ${JSON.stringify(region)} (e.g. europe-west1)` };
  const config: CloudRunConfig = { project, region };
  const override = env.CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN;
  if (override) {
    const endpoint = parseEndpoint(override);
    if (typeof endpoint === 'string') return { ok: false, reason: endpoint };
    config.endpoint = endpoint;
  }
  if (env.CLOUDSDK_AUTH_ACCESS_TOKEN_FILE) config.tokenFile = env.CLOUDSDK_AUTH_ACCESS_TOKEN_FILE;
  if (env.CLOUDRUN_DEFAULT_IMAGE) config.defaultImage = env.CLOUDRUN_DEFAULT_IMAGE;
  return { ok: true, config };
}

/** CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN as the client wants it: host, port, protocol. */
export function parseEndpoint(raw: string): CloudRunEndpoint | string {
  return parseGoogleEndpoint('CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN', raw);
}

/** The images/ recipe's image in the project's Artifact Registry (README: how to build and push it). */
export function defaultImage(c: CloudRunConfig, template: Template): string {
  return c.defaultImage ?? `${c.region}-docker.pkg.dev/${c.project}/onmemos/${template}:latest`;
}
