/**
 * `onmemos agent` start-up: from spawn to the first answer of GET /health (what Cloud Run's startup probe waits
 * for), next to a bare node HTTP server measured the same way, interleaved. Each one listens on 127.0.0.1:0 and
 * names its port on stderr; /health is asked the moment the line arrives. Also `onmemos --debug agent`, which goes
 * through the CLI bundle instead of bin/onmemos.js's direct path, for what that path saves.
 *
 *   agent start-up   bin/onmemos.js agent vs a bare node server   goal: <= +25 ms
 *
 * Runs on its own too: `node bench/agent.mjs` (after `npm run build`).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const GOAL_MS = 25;
const BARE =
  'const s=require(\'node:http\').createServer((q,r)=>r.end(\'{"status":"ok"}\'));' +
  "s.listen(0,'127.0.0.1',()=>process.stderr.write('listening on http://127.0.0.1:'+s.address().port+'\\n'));" +
  "process.on('SIGTERM',()=>process.exit(0))";

/** Milliseconds from spawn to /health answering 200; the process is stopped (SIGTERM) and reaped. */
export function timeToHealth(node, argv, env) {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const child = spawn(node, argv, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    let ms;
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    child.stderr.on('data', (d) => {
      err += d;
      const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(err);
      if (!m || ms !== undefined) return;
      ms = -1;
      const req = request({ host: '127.0.0.1', port: Number(m[1]), path: '/health' }, (res) => {
        res.resume();
        res.on('end', () => {
          ms = res.statusCode === 200 ? Number(process.hrtime.bigint() - started) / 1e6 : -1;
          child.kill('SIGTERM');
        });
      });
      req.on('error', () => child.kill('SIGKILL'));
      req.end();
    });
    child.on('error', reject);
    child.on('close', () => {
      clearTimeout(timer);
      if (ms === undefined || ms < 0) reject(new Error(`no /health answer: ${err.trim()}`));
      else resolve(ms);
    });
  });
}

/** `t`: the runner's node, bin, interleave, median and iterations. */
export async function benchAgentStart(t) {
  const ws = mkdtempSync(join(tmpdir(), 'onmemos-bench-agent-'));
  const env = { ...t.env, ONMEMOS_AGENT_SECRET: 'bench-secret-0123456789', ONMEMOS_WORKSPACE: ws };
  const agent = ['agent', '--port', '0', '--host', '127.0.0.1'];
  try {
    const s = await t.interleave(
      {
        bare: () => timeToHealth(t.node, ['-e', BARE], env),
        agent: () => timeToHealth(t.node, [t.bin, ...agent], env),
        viaCli: () => timeToHealth(t.node, [t.bin, '--debug', ...agent], env),
      },
      t.iterations,
    );
    const added = t.median(s.agent) - t.median(s.bare);
    return {
      name: 'agent start-up',
      unit: 'ms',
      subject: { what: 'onmemos agent: spawn to GET /health answered', median: t.median(s.agent), samples: s.agent },
      baseline: { what: 'a bare node http server, the same way', median: t.median(s.bare), samples: s.bare },
      result: { kind: 'added_ms', value: added, text: `+${added.toFixed(1)} ms` },
      goal: `<= +${GOAL_MS} ms`,
      status: added <= GOAL_MS ? 'PASS' : 'MISS',
      note: `through the CLI bundle (onmemos --debug agent): ${t.median(s.viaCli).toFixed(1)} ms`,
    };
  } finally {
    rmSync(ws, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const median = (xs) => {
    const a = [...xs].sort((x, y) => x - y);
    const m = Math.floor(a.length / 2);
    return a.length % 2 ? a[m] : (a[m - 1] + a[m]) / 2;
  };
  const interleave = async (steps, n) => {
    const out = Object.fromEntries(Object.keys(steps).map((k) => [k, []]));
    for (const f of Object.values(steps)) await f(); // warm-up, not counted
    for (let i = 0; i < n; i++) for (const [k, f] of Object.entries(steps)) out[k].push(await f());
    return out;
  };
  const bin = join(dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'onmemos.js');
  const r = await benchAgentStart({
    env: process.env,
    node: process.execPath,
    bin,
    interleave,
    median,
    iterations: 15,
  });
  process.stdout.write(
    `${r.name}: ${r.subject.median.toFixed(1)} ms (bare node server ${r.baseline.median.toFixed(1)} ms, ${r.result.text}, goal ${r.goal}: ${r.status}); ${r.note}\n`,
  );
}
