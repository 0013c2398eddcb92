/**
 * `onmemos doctor` for cloud_run and workstations: the provider's own configuration reader, the caller's
 * credentials (CLOUDSDK_AUTH_ACCESS_TOKEN_FILE, else Application Default Credentials), and one bounded REST read
 * as the providers make theirs, at the endpoint gcloud's override names (CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN,
 * …_WORKSTATIONS) else Google's: cloud_run lists the region's services, workstations gets the workstation config.
 */
import { existsSync } from 'node:fs';
import { cloudRunConfig } from '../providers/cloudrun/config.js';
import { accessHeaders, apiBase, GoogleApiError, googleCall } from '../providers/google-rest.js';
import { configName, WORKSTATIONS_SETTINGS, workstationsConfig } from '../providers/workstations/config.js';
import { keyPath, sshClient } from '../providers/workstations/ssh.js';
import { bounded, onPath } from './gke.js';
import { PROBE_MS } from './local.js';
import { type Check, configured, notConfigured, oneLine, type Section } from './report.js';

const ADC_LOGIN = 'gcloud auth application-default login';

export async function cloudRunSection(env: NodeJS.ProcessEnv): Promise<Section> {
  const r = cloudRunConfig(env);
  const fix = 'export PROJECT_ID=PROJECT REGION=REGION (e.g. europe-west1)';
  const meant = env.REGION || env.CLOUDSDK_RUN_REGION || env.CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN;
  if (!r.ok && !meant) return notConfigured(r.reason, fix);
  if (!r.ok) {
    const override = r.reason.startsWith('CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN');
    return configured([
      {
        name: override ? 'endpoint' : 'project and region',
        status: 'failed',
        detail: r.reason,
        fix: override ? 'export CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN=https://HOST[:PORT]/ (or unset it)' : fix,
      },
    ]);
  }
  const c = r.config;
  const base = apiBase(c.endpoint, `${c.region}-run.googleapis.com`);
  const checks: Check[] = [
    { name: 'project and region', status: 'ok', detail: `project ${c.project}, region ${c.region}` },
  ];
  const creds = await credentials(c, env);
  checks.push(creds.check);
  if (creds.check.status !== 'ok') return configured(checks);
  const via = c.endpoint ? ' (CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN)' : '';
  try {
    await googleCall(base, creds.headers, `v2/projects/${c.project}/locations/${c.region}/services?pageSize=1`, {
      timeoutMs: PROBE_MS,
    });
    checks.push({ name: 'Run API', status: 'ok', detail: `${base}${via}: the services of ${c.region} can be listed` });
  } catch (e) {
    checks.push(
      apiFailure('Run API', `${base}${via}`, e, {
        project: c.project,
        service: 'run.googleapis.com',
        role: 'roles/run.developer',
        notFound: `check PROJECT_ID and REGION (gcloud run regions list --project ${c.project})`,
        override: 'CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN',
      }),
    );
  }
  return configured(checks);
}

export async function workstationsSection(env: NodeJS.ProcessEnv): Promise<Section> {
  const r = workstationsConfig(env);
  const fix =
    'export PROJECT_ID=PROJECT WORKSTATIONS_REGION=REGION WORKSTATIONS_CLUSTER=CLUSTER WORKSTATIONS_CONFIG=CONFIG';
  const meant = WORKSTATIONS_SETTINGS.some((v) => env[v]);
  if (!r.ok && !meant) return notConfigured(r.reason, fix);
  if (!r.ok) {
    const override = r.reason.startsWith('CLOUDSDK_API_ENDPOINT_OVERRIDES_WORKSTATIONS');
    return configured([
      {
        name: override ? 'endpoint' : 'cluster and config',
        status: override ? 'failed' : 'missing',
        detail: r.reason,
        fix: override ? 'export CLOUDSDK_API_ENDPOINT_OVERRIDES_WORKSTATIONS=https://HOST[:PORT]/ (or unset it)' : fix,
      },
    ]);
  }
  const c = r.config;
  const name = configName(c);
  const base = apiBase(c.endpoint, 'workstations.googleapis.com');
  const checks: Check[] = [
    {
      name: 'cluster and config',
      status: 'ok',
      detail: `project ${c.project}, region ${c.region}, cluster ${c.cluster}, config ${c.config}`,
    },
  ];
  checks.push(sshCheck(env));
  const creds = await credentials(c, env);
  checks.push(creds.check);
  if (creds.check.status !== 'ok') return configured(checks);
  const via = c.endpoint ? ' (CLOUDSDK_API_ENDPOINT_OVERRIDES_WORKSTATIONS)' : '';
  try {
    await googleCall(base, creds.headers, `v1/${name}`, { timeoutMs: PROBE_MS });
    checks.push({ name: 'workstation config', status: 'ok', detail: `${base}${via}: ${name} exists` });
  } catch (e) {
    checks.push(
      apiFailure('workstation config', `${base}${via}`, e, {
        project: c.project,
        service: 'workstations.googleapis.com',
        role: 'roles/workstations.user',
        notFound: `gcloud workstations configs list --cluster=${c.cluster} --region=${c.region} --project=${c.project}, then export WORKSTATIONS_CONFIG=CONFIG`,
        override: 'CLOUDSDK_API_ENDPOINT_OVERRIDES_WORKSTATIONS',
      }),
    );
  }
  return configured(checks);
}

/** Shell and exec reach a workstation with ssh (ONMEMOS_SSH, else ssh on PATH); its key is made with ssh-keygen. */
function sshCheck(env: NodeJS.ProcessEnv): Check {
  const client = sshClient(env);
  const ssh = onPath(client, env);
  const keygen = existsSync(keyPath(env)) ? 'the key exists' : onPath('ssh-keygen', env);
  if (!ssh || !keygen) {
    const what = !ssh ? `${client}${env.ONMEMOS_SSH ? ' (ONMEMOS_SSH)' : ''}` : 'ssh-keygen';
    return {
      name: 'ssh',
      status: 'missing',
      detail: `${what} is not installed: shell and exec go over ssh`,
      fix:
        env.ONMEMOS_SSH && !ssh ? 'unset ONMEMOS_SSH, or set it to an ssh client' : 'apt-get install -y openssh-client',
    };
  }
  return { name: 'ssh', status: 'ok', detail: `${ssh}${keygen === 'the key exists' ? '' : `, ${keygen}`}` };
}

type Headers = ReturnType<typeof accessHeaders>;

/** The caller's access token: read (the token file) or obtained (ADC), bounded. */
async function credentials(
  c: { tokenFile?: string; project: string },
  env: NodeJS.ProcessEnv,
): Promise<{ check: Check; headers: Headers }> {
  const headers = accessHeaders(c);
  try {
    const h = await bounded(headers());
    if (!h.authorization) throw new Error('no access token');
    const what = c.tokenFile
      ? `an access token from ${c.tokenFile} (CLOUDSDK_AUTH_ACCESS_TOKEN_FILE)`
      : `Application Default Credentials${env.GOOGLE_APPLICATION_CREDENTIALS ? ` (${env.GOOGLE_APPLICATION_CREDENTIALS})` : ''}`;
    return { check: { name: 'credentials', status: 'ok', detail: what }, headers };
  } catch (e) {
    if (c.tokenFile) {
      return {
        check: {
          name: 'credentials',
          status: 'failed',
          detail: `cannot read CLOUDSDK_AUTH_ACCESS_TOKEN_FILE ${c.tokenFile}: ${oneLine(e)}`,
          fix: `gcloud auth print-access-token > ${c.tokenFile}, or unset CLOUDSDK_AUTH_ACCESS_TOKEN_FILE`,
        },
        headers,
      };
    }
    return {
      check: {
        name: 'credentials',
        status: 'missing',
        detail: `no Application Default Credentials: ${oneLine(e)}`,
        fix: ADC_LOGIN,
      },
      headers,
    };
  }
}

/** A failed read, said as what it means and what to do: credentials, permission, API, name, or the network. */
function apiFailure(
  name: string,
  where: string,
  e: unknown,
  o: { project: string; service: string; role: string; notFound: string; override: string },
): Check {
  if (e instanceof GoogleApiError) {
    const said = `${where} answered HTTP ${e.httpStatus}: ${e.message.split('\n')[0]}`;
    if (e.code === 16 || e.httpStatus === 401) {
      return { name, status: 'failed', detail: said, fix: `${ADC_LOGIN} (or a fresh CLOUDSDK_AUTH_ACCESS_TOKEN_FILE)` };
    }
    if (e.code === 7 || e.httpStatus === 403) {
      const disabled = /has not been used|is disabled|SERVICE_DISABLED/i.test(e.message);
      return {
        name,
        status: 'failed',
        detail: said,
        fix: disabled
          ? `gcloud services enable ${o.service} --project ${o.project}`
          : `gcloud projects add-iam-policy-binding ${o.project} --member=user:EMAIL --role=${o.role}`,
      };
    }
    if (e.code === 5 || e.httpStatus === 404) return { name, status: 'failed', detail: said, fix: o.notFound };
    return {
      name,
      status: 'failed',
      detail: said,
      fix: `retry; if it persists, check ${o.override} and the service's status`,
    };
  }
  return {
    name,
    status: 'failed',
    detail: `cannot reach ${where}: ${oneLine(e)}`,
    fix: `check the network, or ${o.override} (unset it for Google's endpoint)`,
  };
}
