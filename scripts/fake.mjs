// `npm run fake -- kube|cloudrun|workstations [options]`: starts a cloud API fake from test/fakes standalone.
// The fake is TypeScript, built here on demand with esbuild into dist/fakes/ (its dependencies stay in
// node_modules; dist/ is where the local provider finds the agent it puts in each sandbox), so it never enters
// the published bundles. Needs `npm run build` first, for that agent.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const [kind, ...args] = process.argv.slice(2);
const usage = [
  'usage: npm run fake -- kube [--port N] [--verbose] [--require-token] [--network outbound|isolated] [--bucket NAME]...',
  '       npm run fake -- cloudrun [--port N] [--project ID] [--region R] [--verbose] [--network outbound|isolated] [--startup-timeout SECONDS] [--scale-to-zero SECONDS] [--freeze-idle] [--bucket NAME]...',
  '       npm run fake -- workstations [--port N] [--project ID] [--region R] [--cluster ID] [--config ID] [--authorized-keys PATH]... [--start-time SECONDS] [--network outbound|isolated] [--verbose]',
].join('\n');

if (kind !== 'kube' && kind !== 'cloudrun' && kind !== 'workstations') {
  process.stderr.write(`${kind === undefined ? 'which fake?' : `no fake named ${kind}`}\n${usage}\n`);
  process.exit(2);
}
if (!existsSync(join(root, 'dist', 'agent.cjs'))) {
  process.stderr.write('onmemos fake: dist/agent.cjs is missing: run `npm run build` first\n');
  process.exit(2);
}
const { build } = await import('esbuild');
const outfile = join(root, 'dist', 'fakes', `${kind}.mjs`);
await build({
  entryPoints: [join(root, 'test', 'fakes', kind, 'main.ts')],
  outfile,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20.18',
  packages: 'external',
  logLevel: 'warning',
});
const { main } = await import(pathToFileURL(outfile).href);
process.exitCode = await main(args);
