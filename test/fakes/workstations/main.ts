/**
 * `npm run fake -- workstations [options]`: the Cloud Workstations fake, standalone. Prints shell lines for `eval`
 * (gcloud's override variables, the CA, the project, region, cluster and config, and comments) on stdout, logs
 * requests, tunnels and sshd on stderr with --verbose, and serves until SIGINT or SIGTERM (or until `npm` dies),
 * then removes every sandbox and its files (the token file, the CA and the saved homes with them).
 * scripts/fake.mjs builds this file and calls main().
 */
import { homedir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { untilStopped } from '../foreground.js';
import { startWorkstationsFake } from './server.js';

const USAGE =
  'usage: npm run fake -- workstations [--port N] [--project ID] [--region R] [--cluster ID] [--config ID] [--authorized-keys PATH]... [--start-time SECONDS] [--network outbound|isolated] [--verbose]';

const quote = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;
const ID = /^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/;

export async function main(args: string[]): Promise<number> {
  let o: ReturnType<typeof parse>;
  let startTimeMs: number | undefined;
  let port = 0;
  try {
    o = parse(args);
    if (o.help) {
      process.stdout.write(`${USAGE}\n`);
      return 0;
    }
    port = o.port === undefined ? 0 : Number(o.port);
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error('--port must be a port number');
    if (o.project !== undefined && !/^[a-z][-a-z0-9]{4,28}[a-z0-9]$/.test(o.project)) {
      throw new Error('--project must be a project id (6 to 30 lowercase letters, digits and hyphens)');
    }
    if (o.region !== undefined && !/^[a-z]+-[a-z]+\d+$/.test(o.region))
      throw new Error('--region must be a region (us-central1)');
    for (const k of ['cluster', 'config'] as const) {
      if (o[k] !== undefined && !ID.test(o[k])) throw new Error(`--${k} must be an id (lowercase letters, digits, -)`);
    }
    if (o['start-time'] !== undefined) {
      const n = Number(o['start-time']);
      if (!Number.isFinite(n) || n < 0) throw new Error('--start-time must be a number of seconds');
      startTimeMs = Math.round(n * 1000);
    }
    if (o.network !== undefined && o.network !== 'outbound' && o.network !== 'isolated') {
      throw new Error('--network must be outbound or isolated');
    }
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const keyFiles = o['authorized-keys'] ?? [join(homedir(), '.ssh')];
  const fake = await startWorkstationsFake({
    port,
    project: o.project,
    region: o.region,
    cluster: o.cluster,
    config: o.config,
    startTimeMs,
    authorizedKeyFiles: keyFiles,
    network: o.network as 'outbound' | 'isolated' | undefined,
    log: o.verbose ? (line) => process.stderr.write(`workstations-fake: ${line}\n`) : undefined,
  });
  process.stdout.write(
    [
      `# onmemos Cloud Workstations fake at ${fake.url} (project ${fake.project}, region ${fake.region}, cluster ${fake.cluster}, config ${fake.config}); it stops (removing every sandbox) on SIGINT/SIGTERM`,
      `# workstations run sshd as user; it accepts the public keys in ${keyFiles.join(', ')} (read again at each connection)`,
      '# a workstation host is https://127.0.0.1:PORT signed by the CA below: gcloud workstations start-tcp-tunnel and ssh work as they are',
      ...Object.entries(fake.env).map(([k, v]) => `export ${k}=${quote(v)}`),
      '',
    ].join('\n'),
  );
  await untilStopped('workstations-fake');
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
      cluster: { type: 'string' },
      config: { type: 'string' },
      'authorized-keys': { type: 'string', multiple: true },
      'start-time': { type: 'string' },
      network: { type: 'string' },
      verbose: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  }).values;
}
