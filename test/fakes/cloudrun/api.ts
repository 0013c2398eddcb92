/**
 * The routes: the Admin API v2 paths of the proto http rules (services, jobs, executions, operations), what gcloud
 * reads of v1 (knative.ts), and the fake's own `GET /logs/{execution}` (an execution's logUri). Each route names
 * its RPC method (google.cloud.run.v2.Services.GetService …), which Google's errors carry in their ErrorInfo.
 */
import { invalidArgument, noMethod, operationNotFound } from './errors.js';
import type { Policies } from './iam.js';
import type { Jobs } from './jobs.js';
import { knativeList, knativeService, regionOfHost } from './knative.js';
import type { Operations } from './operations.js';
import { encodeEnums, type Json, type Parent } from './resources.js';
import type { Services } from './services.js';

export interface ApiCall {
  method: string;
  path: string;
  query: URLSearchParams;
  host?: string;
  body(): Promise<Json | undefined>;
  signal: AbortSignal;
}

export interface ApiDeps {
  policies: Policies;
  services: Services;
  jobs: Jobs;
  ops: Operations;
  projectNumber: string;
}

export type Reply = { code: number; body: unknown; text?: false } | { code: number; body: string; text: true };

type Handler = (d: ApiDeps, m: string[], c: ApiCall) => Promise<unknown> | unknown;

const P = '/v2/projects/([^/:]+)/locations/([^/:]+)';
const V1 = '/v1/projects/([^/:]+)/locations/([^/:]+)';
const KN = '/apis/serving.knative.dev/v1/namespaces/([^/:]+)';
const S = 'google.cloud.run.v2.Services';
const J = 'google.cloud.run.v2.Jobs';
const T = 'google.cloud.run.v2.Tasks';
const E = 'google.cloud.run.v2.Executions';
const O = 'google.longrunning.Operations';

const parent = (m: string[]): Parent => ({ project: m[1]!, location: m[2]! });
const flag = (c: ApiCall, k: string) => c.query.get(k) === 'true';
const size = (c: ApiCall) => Number(c.query.get('pageSize') ?? 0);
const token = (c: ApiCall) => c.query.get('pageToken') ?? '';

/** `"30s"` → ms, for operations:wait (at most 60 s, as Google's own cap on a wait). */
function waitMs(body: Json | undefined): number {
  const m = typeof body?.timeout === 'string' ? /^(\d+(?:\.\d+)?)s$/.exec(body.timeout) : null;
  return Math.min(60_000, m ? Number(m[1]) * 1000 : 60_000);
}

const ROUTES: [string, RegExp, string, Handler][] = [
  [
    'POST',
    new RegExp(`^${P}/services$`),
    `${S}.CreateService`,
    async (d, m, c) => d.services.create(parent(m), c.query.get('serviceId'), await c.body(), flag(c, 'validateOnly')),
  ],
  [
    'GET',
    new RegExp(`^${P}/services$`),
    `${S}.ListServices`,
    (d, m, c) => d.services.list(parent(m), size(c), token(c)),
  ],
  ['GET', new RegExp(`^${P}/services/([^/:]+)$`), `${S}.GetService`, (d, m) => d.services.get(parent(m), m[3]!)],
  [
    'PATCH',
    new RegExp(`^${P}/services/([^/:]+)$`),
    `${S}.UpdateService`,
    async (d, m, c) =>
      d.services.update(parent(m), m[3]!, await c.body(), flag(c, 'allowMissing'), flag(c, 'validateOnly')),
  ],
  [
    'DELETE',
    new RegExp(`^${P}/services/([^/:]+)$`),
    `${S}.DeleteService`,
    (d, m, c) => d.services.delete(parent(m), m[3]!, flag(c, 'validateOnly')),
  ],
  [
    'POST',
    new RegExp(`^${P}/jobs$`),
    `${J}.CreateJob`,
    async (d, m, c) => d.jobs.createJob(parent(m), c.query.get('jobId'), await c.body(), flag(c, 'validateOnly')),
  ],
  ['GET', new RegExp(`^${P}/jobs$`), `${J}.ListJobs`, (d, m, c) => d.jobs.listJobs(parent(m), size(c), token(c))],
  ['GET', new RegExp(`^${P}/jobs/([^/:]+)$`), `${J}.GetJob`, (d, m) => d.jobs.getJob(parent(m), m[3]!)],
  [
    'PATCH',
    new RegExp(`^${P}/jobs/([^/:]+)$`),
    `${J}.UpdateJob`,
    async (d, m, c) =>
      d.jobs.updateJob(parent(m), m[3]!, await c.body(), flag(c, 'allowMissing'), flag(c, 'validateOnly')),
  ],
  [
    'DELETE',
    new RegExp(`^${P}/jobs/([^/:]+)$`),
    `${J}.DeleteJob`,
    (d, m, c) => d.jobs.deleteJob(parent(m), m[3]!, flag(c, 'validateOnly')),
  ],
  [
    'POST',
    new RegExp(`^${P}/jobs/([^/:]+):run$`),
    `${J}.RunJob`,
    async (d, m, c) => d.jobs.runJob(parent(m), m[3]!, await c.body()),
  ],
  [
    'GET',
    new RegExp(`^${P}/jobs/([^/:]+)/executions$`),
    `${E}.ListExecutions`,
    (d, m, c) => d.jobs.listExecutions(parent(m), m[3]!, size(c), token(c)),
  ],
  [
    'GET',
    new RegExp(`^${P}/jobs/([^/:]+)/executions/([^/:]+)$`),
    `${E}.GetExecution`,
    (d, m) => d.jobs.getExecution(parent(m), m[3]!, m[4]!),
  ],
  [
    'DELETE',
    new RegExp(`^${P}/jobs/([^/:]+)/executions/([^/:]+)$`),
    `${E}.DeleteExecution`,
    (d, m) => d.jobs.deleteExecution(parent(m), m[3]!, m[4]!),
  ],
  [
    'GET',
    new RegExp(`^${P}/jobs/([^/:]+)/executions/([^/:]+)/tasks$`),
    `${T}.ListTasks`,
    (d, m, c) => d.jobs.listTasks(parent(m), m[3]!, m[4]!, size(c), token(c)),
  ],
  [
    'GET',
    new RegExp(`^${P}/jobs/([^/:]+)/executions/([^/:]+)/tasks/([^/:]+)$`),
    `${T}.GetTask`,
    (d, m) => d.jobs.getTask(parent(m), m[3]!, m[4]!, m[5]!),
  ],
  [
    'POST',
    new RegExp(`^${P}/jobs/([^/:]+)/executions/([^/:]+):cancel$`),
    `${E}.CancelExecution`,
    (d, m) => d.jobs.cancelExecution(parent(m), m[3]!, m[4]!),
  ],
  [
    'GET',
    new RegExp(`^${P}/operations$`),
    `${O}.ListOperations`,
    (d, m) => {
      const operations = d.ops.list(parent(m));
      return operations.length === 0 ? {} : { operations };
    },
  ],
  [
    'GET',
    new RegExp(`^${P}/operations/([^/:]+)$`),
    `${O}.GetOperation`,
    (d, _m, c) => {
      const name = c.path.slice('/v2/'.length);
      const op = d.ops.get(name);
      if (!op) throw operationNotFound(name);
      return op;
    },
  ],
  [
    'DELETE',
    new RegExp(`^${P}/operations/([^/:]+)$`),
    `${O}.DeleteOperation`,
    (d, _m, c) => {
      const name = c.path.slice('/v2/'.length);
      if (!d.ops.delete(name)) throw operationNotFound(name);
      return {};
    },
  ],
  [
    'POST',
    new RegExp(`^${P}/operations/([^/:]+):wait$`),
    `${O}.WaitOperation`,
    async (d, _m, c) => {
      const name = c.path.slice('/v2/'.length, -':wait'.length);
      const op = await d.ops.wait(name, waitMs(await c.body()), c.signal);
      if (!op) throw operationNotFound(name);
      return op;
    },
  ],
  // IAM of services and jobs (the resource must exist).
  ...(['services', 'jobs'] as const).flatMap((kind): [string, RegExp, string, Handler][] => {
    const rpc = kind === 'services' ? S : J;
    const path = (verb: string) => new RegExp(`^${P}/${kind}/([^/:]+):${verb}$`);
    const name = (d: ApiDeps, m: string[]) => {
      if (kind === 'services') return d.services.find(parent(m), m[3]!).name;
      return d.jobs.getJob(parent(m), m[3]!).name as string;
    };
    return [
      ['GET', path('getIamPolicy'), `${rpc}.GetIamPolicy`, (d, m) => d.policies.get(name(d, m))],
      [
        'POST',
        path('setIamPolicy'),
        `${rpc}.SetIamPolicy`,
        async (d, m, c) => d.policies.set(name(d, m), await c.body()),
      ],
      [
        'POST',
        path('testIamPermissions'),
        `${rpc}.TestIamPermissions`,
        async (d, m, c) => {
          name(d, m);
          return d.policies.test(await c.body());
        },
      ],
    ];
  }),
  // v1, read-only, for gcloud.
  [
    'GET',
    new RegExp(`^${V1}/services$`),
    'google.cloud.run.v1.Services.ListServices',
    (d, m) =>
      knativeList(
        d.services
          .all()
          .filter((r) => r.parent.project === m[1] && (m[2] === '-' || r.parent.location === m[2]))
          .map((r) => knativeService(d.services, r, d.projectNumber)),
      ),
  ],
  [
    'GET',
    new RegExp(`^${V1}/services/([^/:]+)$`),
    'google.cloud.run.v1.Services.GetService',
    (d, m) => knativeService(d.services, d.services.find(parent(m), m[3]!), d.projectNumber),
  ],
  [
    'GET',
    new RegExp(`^${KN}/services$`),
    'google.cloud.run.v1.Services.ListServices',
    (d, m, c) => {
      const region = regionOfHost(c.host);
      return knativeList(
        d.services
          .all()
          .filter((r) => r.parent.project === m[1] && (!region || r.parent.location === region))
          .map((r) => knativeService(d.services, r, d.projectNumber)),
      );
    },
  ],
  [
    'GET',
    new RegExp(`^${KN}/services/([^/:]+)$`),
    'google.cloud.run.v1.Services.GetService',
    (d, m, c) => {
      const region = regionOfHost(c.host);
      if (!region) throw invalidArgument('This API method requires a regional endpoint (REGION-run.googleapis.com).');
      return knativeService(d.services, d.services.find({ project: m[1]!, location: region }, m[2]!), d.projectNumber);
    },
  ],
  // The fake's own: what an execution's tasks wrote (its logUri).
  [
    'GET',
    /^\/logs\/(projects\/[^/]+\/locations\/[^/]+\/jobs\/[^/]+\/executions\/[^/]+)$/,
    'logs',
    (d, m) => {
      const e = d.jobs.executionByName(m[1]!);
      if (!e) throw noMethod('GET', `/logs/${m[1]}`);
      return { text: e.run.output() };
    },
  ],
];

/** The RPC method a request names (for errors before it is handled, such as a 401), or undefined. */
export function methodOf(method: string, path: string): string | undefined {
  return ROUTES.find(([verb, re]) => verb === method && re.test(path))?.[2];
}

export async function handleApi(d: ApiDeps, c: ApiCall): Promise<Reply> {
  const route = ROUTES.find(([verb, re]) => verb === c.method && re.test(c.path));
  if (!route) throw noMethod(c.method, c.path);
  const m = route[1].exec(c.path)!.map((g) => (g === undefined ? g : decodeURIComponent(g)));
  const result = await route[3](d, m as string[], c);
  if (route[2] === 'logs') return { code: 200, body: (result as { text: string }).text, text: true };
  // The client asks `$alt=json;enum-encoding=int`; gcloud and operation polls ask nothing (names).
  const ints = (c.query.get('$alt') ?? '').includes('enum-encoding=int');
  return { code: 200, body: encodeEnums(result, ints) };
}
