/**
 * Run by test/e2e/local-binds.test.ts as an ordinary user (bundled to dist/fakes/ with esbuild, so that it finds
 * the package's dist/agent.cjs and node_modules): makes a local session with host binds (the internal option the
 * fakes use), runs one shell script in it, removes it, and prints `{code, stdout, stderr}` as JSON.
 * argv: STATE_DIR BINDS_JSON SCRIPT
 */
import { type HostBind, LocalProvider } from '../../src/providers/local/local.js';
import { normalizeCreateRequest } from '../../src/session/model.js';

const [stateDir, bindsJson, script] = process.argv.slice(2) as [string, string, string];
const provider = new LocalProvider({ env: { ...process.env, ONMEMOS_STATE_DIR: stateDir }, hostBinds: true });
const binds = JSON.parse(bindsJson) as HostBind[];
const s = await provider.create(
  normalizeCreateRequest({
    provider: 'local',
    namespace: 'binds',
    user: 'child',
    ttl_minutes: 10,
    network: 'isolated',
  }),
  { binds },
);
try {
  const p = await provider.exec(s.id, { argv: ['sh', '-c', script] });
  let stdout = '';
  let stderr = '';
  p.stdout.on('data', (d) => (stdout += d));
  p.stderr.on('data', (d) => (stderr += d));
  const { code } = await p.exit;
  process.stdout.write(`${JSON.stringify({ code, stdout, stderr })}\n`);
} finally {
  await provider.delete(s.id);
}
