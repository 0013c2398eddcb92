/**
 * `npm run fake -- kube [--port N] [--verbose] [--require-token] [--network outbound|isolated] [--bucket NAME]...`:
 * the Kubernetes fake, standalone. Prints shell lines for `eval` (`export KUBECONFIG=…`, and comments) on stdout, logs requests on
 * stderr with --verbose, and serves until SIGINT or SIGTERM, then removes every pod's sandbox and its files.
 * scripts/fake.mjs builds this file and calls main().
 */
import { parseArgs } from 'node:util';
import { bucketNameProblem } from '../buckets.js';
import { untilStopped } from '../foreground.js';
import { startKubeFake } from './server.js';

const USAGE =
  'usage: npm run fake -- kube [--port N] [--verbose] [--require-token] [--network outbound|isolated] [--bucket NAME]...';

const quote = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;

export async function main(args: string[]): Promise<number> {
  let values: {
    port?: string;
    verbose?: boolean;
    'require-token'?: boolean;
    network?: string;
    bucket?: string[];
    help?: boolean;
  };
  try {
    values = parseArgs({
      args,
      options: {
        port: { type: 'string' },
        verbose: { type: 'boolean' },
        'require-token': { type: 'boolean' },
        network: { type: 'string' },
        bucket: { type: 'string', multiple: true },
        help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const port = values.port === undefined ? 0 : Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    process.stderr.write(`--port must be a port number\n${USAGE}\n`);
    return 2;
  }
  if (values.network !== undefined && values.network !== 'outbound' && values.network !== 'isolated') {
    process.stderr.write(`--network must be outbound or isolated\n${USAGE}\n`);
    return 2;
  }
  for (const b of values.bucket ?? []) {
    const why = bucketNameProblem(b);
    if (why) {
      process.stderr.write(`--bucket ${b}: ${why}\n${USAGE}\n`);
      return 2;
    }
  }
  const fake = await startKubeFake({
    port,
    buckets: values.bucket,
    requireToken: values['require-token'],
    network: values.network as 'outbound' | 'isolated' | undefined,
    log: values.verbose ? (line) => process.stderr.write(`kube-fake: ${line}\n`) : undefined,
  });
  process.stdout.write(
    [
      `# onmemos Kubernetes fake at ${fake.url}, context ${fake.context}; it stops (removing its pods) on SIGINT/SIGTERM`,
      `# kubectl sends no token over http${values['require-token'] ? ' and is refused (--require-token)' : '; client libraries send the kubeconfig token'}`,
      ...fake.buckets.list().map((b) => `# bucket ${b} (GCS FUSE volumes mount it): ${fake.buckets.dir(b)}`),
      `export KUBECONFIG=${quote(fake.kubeconfigPath)}`,
      '',
    ].join('\n'),
  );
  await untilStopped('kube-fake');
  await fake.close();
  return 0;
}
