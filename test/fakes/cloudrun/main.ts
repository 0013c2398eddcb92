/**
 * `npm run fake -- cloudrun [options]`: the Cloud Run fake, standalone. Prints shell lines for `eval` (gcloud's
 * override variables, a project and a region, and comments) on stdout, logs requests and containers' output on
 * stderr with --verbose, and serves until SIGINT or SIGTERM (or until `npm` dies), then removes every sandbox and
 * its files (the token file with them). scripts/fake.mjs builds this file and calls main().
 */
import { parseArgs } from 'node:util';
import { bucketNameProblem } from '../buckets.js';
import { untilStopped } from '../foreground.js';
import { startCloudRunFake } from './server.js';

const USAGE =
  'usage: npm run fake -- cloudrun [--port N] [--project ID] [--region R] [--verbose] [--network outbound|isolated] [--startup-timeout SECONDS] [--scale-to-zero SECONDS] [--freeze-idle] [--bucket NAME]...';

const quote = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;

function seconds(v: string | undefined, what: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${what} must be a number of seconds`);
  return Math.round(n * 1000);
}

export async function main(args: string[]): Promise<number> {
  let o: ReturnType<typeof parse>;
  let startupTimeoutMs: number | undefined;
  let scaleToZeroAfterMs: number | undefined;
  try {
    o = parse(args);
    if (o.help) {
      process.stdout.write(`${USAGE}\n`);
      return 0;
    }
    const port = o.port === undefined ? 0 : Number(o.port);
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error('--port must be a port number');
    if (o.network !== undefined && o.network !== 'outbound' && o.network !== 'isolated') {
      throw new Error('--network must be outbound or isolated');
    }
    if (o.project !== undefined && !/^[a-z][-a-z0-9]{4,28}[a-z0-9]$/.test(o.project)) {
      throw new Error('--project must be a project id (6 to 30 lowercase letters, digits and hyphens)');
    }
    if (o.region !== undefined && !/^[a-z]+-[a-z]+\d+$/.test(o.region))
      throw new Error('--region must be a region (us-central1)');
    for (const b of o.bucket ?? []) {
      const why = bucketNameProblem(b);
      if (why) throw new Error(`--bucket ${b}: ${why}`);
    }
    startupTimeoutMs = seconds(o['startup-timeout'], '--startup-timeout');
    scaleToZeroAfterMs = seconds(o['scale-to-zero'], '--scale-to-zero');
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const fake = await startCloudRunFake({
    port: o.port === undefined ? 0 : Number(o.port),
    project: o.project,
    region: o.region,
    network: o.network as 'outbound' | 'isolated' | undefined,
    startupTimeoutMs,
    scaleToZeroAfterMs,
    freezeIdle: o['freeze-idle'],
    buckets: o.bucket,
    log: o.verbose ? (line) => process.stderr.write(`cloudrun-fake: ${line}\n`) : undefined,
  });
  const missing = fake.image.missing();
  process.stdout.write(
    [
      `# onmemos Cloud Run fake at ${fake.url} (project ${fake.project}, region ${fake.region}); it stops (removing every sandbox) on SIGINT/SIGTERM`,
      missing
        ? `# no onmemos agent: ${missing}; a service whose container runs it fails to start`
        : `# revisions run onmemos agent from ${fake.image.root}`,
      '# services are private: call a uri with an ID token whose audience is that uri (unchecked signature), or set invokerIamDisabled',
      ...fake.buckets.list().map((b) => `# bucket ${b} (gcs volumes mount it): ${fake.buckets.dir(b)}`),
      `# gcloud run … --region R asks R-127.0.0.1, which no resolver knows: see test/fakes/cloudrun/README.md (gcloud run services list without --region works as is)`,
      ...Object.entries(fake.env).map(([k, v]) => `export ${k}=${quote(v)}`),
      '',
    ].join('\n'),
  );
  await untilStopped('cloudrun-fake');
  await fake.close();
  return 0;
}

function parse(args: string[]) {
  return parseArgs({
    args,
    options: {
      port: { type: 'string' },
      project: { type: 'string' },
      region: { type: 'string' },
      verbose: { type: 'boolean' },
      network: { type: 'string' },
      'startup-timeout': { type: 'string' },
      'scale-to-zero': { type: 'string' },
      'freeze-idle': { type: 'boolean' },
      bucket: { type: 'string', multiple: true },
      help: { type: 'boolean', short: 'h' },
    },
  }).values;
}
