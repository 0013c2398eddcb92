/**
 * For tests against the Cloud Run fake (test/fakes/cloudrun): the real @google-cloud/run clients pointed at it over
 * their REST fallback with a static token (one google-auth-library in the tree), and small builders.
 */
import { ExecutionsClient, JobsClient, ServicesClient, TasksClient } from '@google-cloud/run';
import { OAuth2Client } from 'google-auth-library';
import { SandboxRuntime } from '../fakes/cloudrun/runtime.js';
import type { CloudRunFake } from '../fakes/cloudrun/server.js';

export const NODE = '/usr/bin/node';

/** What the client library needs to talk to the fake: endpoint, port, http, REST, and a token it will not refresh. */
export function clientOptions(fake: CloudRunFake, token = fake.token) {
  const authClient = new OAuth2Client();
  authClient.setCredentials({ access_token: token, expiry_date: Date.now() + 3600e3 });
  return { apiEndpoint: '127.0.0.1', port: fake.port, protocol: 'http', fallback: true as const, authClient };
}

export function clients(fake: CloudRunFake, token?: string) {
  const o = clientOptions(fake, token);
  return {
    services: new ServicesClient(o),
    jobs: new JobsClient(o),
    executions: new ExecutionsClient(o),
    tasks: new TasksClient(o),
  };
}

export const parentOf = (fake: CloudRunFake) => `projects/${fake.project}/locations/${fake.region}`;

/**
 * A container that needs nothing from the image: node serving `/health` on $PORT (and echoing its environment on
 * `/env`), as any web container does.
 */
export function webContainer(env: Record<string, string> = {}) {
  const script = [
    "const http = require('node:http');",
    'http.createServer((q, s) => {',
    "  s.setHeader('content-type', 'application/json');",
    "  if (q.url === '/env') return s.end(JSON.stringify(process.env));",
    "  s.end(JSON.stringify({ status: 'ok', url: q.url, auth: q.headers.authorization ?? null }));",
    "}).listen(Number(process.env.PORT), '127.0.0.1', () => console.log('listening on', process.env.PORT));",
  ].join('\n');
  return {
    image: 'us-docker.pkg.dev/cloudrun/container/hello',
    command: [NODE, '-e', script],
    env: Object.entries(env).map(([name, value]) => ({ name, value })),
  };
}

/** A job whose task runs `sh -c script` (retries off unless asked). */
export function shellJob(script: string, o: { maxRetries?: number; taskCount?: number; timeout?: string } = {}) {
  return {
    template: {
      taskCount: o.taskCount ?? 1,
      template: {
        containers: [{ image: 'us-docker.pkg.dev/cloudrun/container/job', command: ['sh', '-c', script] }],
        maxRetries: o.maxRetries ?? 0,
        ...(o.timeout ? { timeout: { seconds: Number.parseInt(o.timeout, 10) } } : {}),
      },
    },
  };
}

/** The local sessions the fake's containers run in now (none once everything is deleted). */
export async function sandboxes(fake: CloudRunFake): Promise<string[]> {
  if (!(fake.runtime instanceof SandboxRuntime)) return [];
  return (await fake.runtime.provider.list()).map((s) => s.id);
}

/** The error a call that must fail rejects with (its gRPC code, HTTP status and details as the client gives them). */
export async function failure(
  p: Promise<unknown>,
): Promise<Error & { code: number; httpStatusCode?: number; details?: unknown }> {
  try {
    await p;
  } catch (e) {
    return e as Error & { code: number };
  }
  throw new Error('expected the call to fail');
}
