#!/usr/bin/env node
/**
 * onmemos micro-benchmarks for the local provider: every number is compared with a baseline measured in the same
 * run, interleaved with it (A, B, A, B, ...) so machine noise hits both alike. Run with `npm run bench` (builds
 * first); `--json` prints JSON instead of the table. Needs root (it measures the root path of the local provider:
 * a host uid of its own per session, cgroups, disk images) and bubblewrap.
 *
 *   --version      `onmemos --version` vs `node -e 0`                                   goal: ratio <= 1.3x
 *   exec -- true   `onmemos exec $id -- true` vs `node -e 0` + the same under bwrap     goal: adds <= 25 ms
 *   create + rm    create --ttl 5 then rm, beyond two `node -e 0` start-ups            goal: <= 60 ms
 *   throughput     `onmemos exec $id -- head -c 1G /dev/zero | wc -c` vs the bare pipe  goal: ratio >= 0.8x
 *   limits         what limits add to create + rm: the session's cgroup (cpu, memory, pids, delegated) and its disk
 *                  image, made and removed as create and rm do, next to the whole create + rm    goal: <= 10 ms
 *   gke ...        exec and throughput on the gke provider next to kubectl, against the Kubernetes fake (gke.mjs)
 *   cloud_run ...  exec next to a local exec, and create → first exec in its parts (API time, agent start),
 *                  against the Cloud Run fake (cloudrun.mjs)
 *   workstations ... exec with a reused and a new SSH connection next to a local exec, and the tunnel's
 *                  throughput next to a plain ssh to the same sshd, against the Cloud Workstations fake
 *                  (workstations.mjs)
 *   agent start-up `onmemos agent` from spawn to /health answered, next to a bare node server (agent.mjs)
 *
 * Both onmemos and the baseline run on this Node (process.execPath), so the comparison is of onmemos's own work.
 * Times are wall clock from spawn to the child's close; MB is 10^6 bytes. All state lives in a fresh temporary
 * ONMEMOS_STATE_DIR, removed at the end with every session the bench made, also on failure or Ctrl-C.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchAgentStart } from './agent.mjs';
import { benchCloudRun, startCloudRunFake } from './cloudrun.mjs';
import { benchGke, startKubeFake } from './gke.mjs';
import {
  benchBigOutputs,
  benchConcurrent,
  benchKeystroke,
  benchRoundTrip,
  benchServerThroughput,
  benchStdinFlood,
  startServer,
} from './server.mjs';
import { benchWorkstations, startWorkstationsFake } from './workstations.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const BIN = join(ROOT, 'bin', 'onmemos.js');
const NODE = process.execPath;
const ITERATIONS = 15;
const THROUGHPUT_ITERATIONS = 3;
const THROUGHPUT_BYTES = 1024 ** 3;
const THROUGHPUT_GOAL = 0.8;
const TIMEOUT_MS = 30_000;
const THROUGHPUT_TIMEOUT_MS = 120_000;
const BWRAP_TRUE = [
  '--unshare-all',
  '--ro-bind',
  '/usr',
  '/usr',
  '--symlink',
  'usr/bin',
  '/bin',
  '--symlink',
  'usr/lib',
  '/lib',
  '--symlink',
  'usr/lib64',
  '/lib64',
  '--proc',
  '/proc',
  '--dev',
  '/dev',
  '--die-with-parent',
  '/usr/bin/true',
];

const args = process.argv.slice(2);
const USAGE = 'usage: node bench/run.mjs [--json] [--only NAME[,NAME...]]';
let asJson = false;
/** --only: the benchmarks whose names start with one of these (for a quick look at one figure); all by default. */
let only;
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--json') asJson = true;
  else if (args[i] === '--only' && args[i + 1])
    only = args[++i]
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
  else fatal(`unknown argument ${args[i]} (${USAGE})`);
}

function fatal(message) {
  process.stderr.write(`bench: ${message}\n`);
  process.exit(1);
}

// --- running and timing commands --------------------------------------------------------------------------

let interrupted = null;
let current = null;

/** Runs a command to completion; resolves with its wall time in ms and its output. Rejects on failure. */
function run(cmd, argv, { env, timeoutMs = TIMEOUT_MS, cleanup = false } = {}) {
  if (interrupted && !cleanup) return Promise.reject(new Error(`interrupted by ${interrupted}`));
  return new Promise((resolve, reject) => {
    const out = [];
    const err = [];
    const start = process.hrtime.bigint();
    // Its own process group, so a timeout or Ctrl-C can kill all of it (sh, onmemos, head, wc).
    const child = spawn(cmd, argv, { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    current = child;
    const timer = setTimeout(() => killGroup(child), timeoutMs);
    child.stdout.on('data', (d) => out.push(d));
    child.stderr.on('data', (d) => err.push(d));
    child.on('error', (e) => {
      clearTimeout(timer);
      current = null;
      reject(e);
    });
    child.on('close', (code, signal) => {
      const ms = Number(process.hrtime.bigint() - start) / 1e6;
      clearTimeout(timer);
      current = null;
      const stdout = Buffer.concat(out).toString('utf8');
      const stderr = Buffer.concat(err).toString('utf8').trim();
      if (code === 0) return resolve({ ms, stdout, stderr });
      const what = [cmd === NODE ? 'node' : cmd, ...argv].join(' ');
      const how = signal
        ? `was killed by ${signal}${ms >= timeoutMs ? ` after ${timeoutMs / 1000} s` : ''}`
        : `exited with ${code}`;
      reject(new Error(`${what} ${how}${stderr ? `: ${stderr.split('\n').slice(-3).join(' | ')}` : ''}`));
    });
  });
}

/** SIGTERM to the child's process group (onmemos then undoes a half-made session), SIGKILL 3 s later. */
function killGroup(child) {
  const signal = (sig) => {
    try {
      process.kill(-child.pid, sig);
    } catch {
      // already gone
    }
  };
  signal('SIGTERM');
  setTimeout(() => signal('SIGKILL'), 3000).unref();
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Runs each step once to warm up, then `n` rounds of all steps in order (interleaved). A step returns its time
 * in ms; the result holds every step's samples.
 */
async function interleave(steps, n) {
  for (const step of Object.values(steps)) await step();
  const samples = Object.fromEntries(Object.keys(steps).map((k) => [k, []]));
  for (let i = 0; i < n; i++) {
    for (const [k, step] of Object.entries(steps)) samples[k].push(await step());
  }
  return samples;
}

const round = (x, d = 1) => Math.round(x * 10 ** d) / 10 ** d;
const shq = (s) => `'${String(s).replaceAll("'", `'\\''`)}'`;

// --- the benchmarks -----------------------------------------------------------------------------------------

async function benchVersion(env) {
  const onmemos = [BIN, '--version'];
  const s = await interleave(
    {
      node: async () => (await run(NODE, ['-e', '0'], { env })).ms,
      onmemos: async () => (await run(NODE, onmemos, { env })).ms,
    },
    ITERATIONS,
  );
  const subject = median(s.onmemos);
  const baseline = median(s.node);
  const ratio = subject / baseline;
  return {
    name: '--version',
    unit: 'ms',
    subject: { what: 'onmemos --version', median: subject, samples: s.onmemos },
    baseline: { what: 'node -e 0', median: baseline, samples: s.node },
    result: { kind: 'ratio', value: ratio, text: `${ratio.toFixed(2)}x` },
    goal: '<= 1.3x',
    status: ratio <= 1.3 ? 'PASS' : 'MISS',
  };
}

async function benchExec(env, id) {
  const s = await interleave(
    {
      node: async () => (await run(NODE, ['-e', '0'], { env })).ms,
      bwrap: async () => (await run('bwrap', BWRAP_TRUE, { env })).ms,
      onmemos: async () => (await run(NODE, [BIN, 'exec', id, '--', 'true'], { env })).ms,
    },
    ITERATIONS,
  );
  const subject = median(s.onmemos);
  const node = median(s.node);
  const bwrap = median(s.bwrap);
  const added = subject - (node + bwrap);
  return {
    name: 'exec -- true',
    unit: 'ms',
    subject: { what: 'onmemos exec $id -- true', median: subject, samples: s.onmemos },
    baseline: {
      what: 'node -e 0 + bwrap ... /usr/bin/true',
      median: node + bwrap,
      parts: { node: { median: node, samples: s.node }, bwrap: { median: bwrap, samples: s.bwrap } },
    },
    result: { kind: 'added_ms', value: added, text: `${added >= 0 ? '+' : ''}${added.toFixed(1)} ms` },
    goal: '<= +25 ms',
    status: added <= 25 ? 'PASS' : 'MISS',
  };
}

async function benchCreateRm(env, live) {
  const create = async () => {
    const c = await run(NODE, [BIN, 'create', '--provider', 'local', '--ttl', '5'], { env });
    const id = c.stdout.trim();
    if (!/^[a-z0-9-]+$/.test(id)) throw new Error(`onmemos create printed ${JSON.stringify(c.stdout)}, not an id`);
    live.add(id);
    return { id, ms: c.ms };
  };
  const rm = async (id) => {
    const r = await run(NODE, [BIN, 'rm', id], { env });
    live.delete(id);
    return r.ms;
  };
  const createRm = async () => {
    const c = await create();
    return c.ms + (await rm(c.id));
  };
  // What a script sees: create, then its first command (which meets the agent still starting: create does not
  // wait for it).
  const firstExec = async () => {
    const c = await create();
    const e = await run(NODE, [BIN, 'exec', c.id, '--', 'true'], { env });
    await rm(c.id);
    return c.ms + e.ms;
  };
  const s = await interleave(
    { node: async () => (await run(NODE, ['-e', '0'], { env })).ms, onmemos: createRm, firstExec },
    ITERATIONS,
  );
  const subject = median(s.onmemos);
  const node = median(s.node);
  const beyond = subject - 2 * node;
  const flow = median(s.firstExec);
  const flowBeyond = flow - 2 * node;
  const firstExecRow = {
    name: 'create → first exec',
    unit: 'ms',
    subject: { what: 'onmemos create --ttl 5 + onmemos exec $id -- true', median: flow, samples: s.firstExec },
    baseline: { what: '2 x node -e 0', median: 2 * node, parts: { node: { median: node, samples: s.node } } },
    result: { kind: 'beyond_ms', value: flowBeyond, text: `+${flowBeyond.toFixed(1)} ms` },
    goal: '-',
    status: 'INFO',
  };
  return [createRmRow(), firstExecRow];

  function createRmRow() {
    return {
      name: 'create + rm',
      unit: 'ms',
      subject: { what: 'onmemos create --ttl 5 + onmemos rm $id', median: subject, samples: s.onmemos },
      baseline: { what: '2 x node -e 0', median: 2 * node, parts: { node: { median: node, samples: s.node } } },
      result: { kind: 'beyond_ms', value: beyond, text: `${beyond >= 0 ? '+' : ''}${beyond.toFixed(1)} ms` },
      goal: '<= +60 ms',
      status: beyond <= 60 ? 'PASS' : 'MISS',
    };
  }
}

async function benchLimits(createRm) {
  const { internals } = await import(join(ROOT, 'dist', 'index.js'));
  const sys = internals.detectCgroups();
  if (!sys) throw new Error('no cgroup filesystem is mounted');
  const parent = internals.sessionParent(sys, process.env, process.getuid());
  if (!parent.path) throw new Error(`no cgroup parent: ${parent.unavailable}`);
  const dir = mkdtempSync(join(tmpdir(), 'onmemos-bench-disk-'));
  const samples = [];
  try {
    for (let i = 0; i < ITERATIONS; i++) {
      const name = `ws-bench-limits-${Date.now()}-${i}`;
      const image = join(dir, `${i}.img`);
      const start = process.hrtime.bigint();
      const group = internals.SessionGroup.create(
        sys,
        parent.path,
        name,
        { cpus: 2, memoryBytes: 2 * 1024 ** 3, pids: 1024 },
        { delegateTo: 0x6fff0000 },
      );
      await internals.makeDiskImage(image, 10 * 1024 ** 3);
      group.remove();
      rmSync(image, { force: true });
      samples.push(Number(process.hrtime.bigint() - start) / 1e6);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const added = median(samples);
  return {
    name: 'limits',
    unit: 'ms',
    subject: {
      what: 'cgroup create + limits + delegate + remove, mkfs of a 10 GiB image + unlink',
      median: added,
      samples,
    },
    baseline: { what: 'create + rm', median: createRm?.subject.median },
    result: { kind: 'added_ms', value: added, text: `+${added.toFixed(1)} ms` },
    goal: '<= +10 ms',
    status: added <= 10 ? 'PASS' : 'MISS',
  };
}

async function benchThroughput(env, id) {
  const n = THROUGHPUT_BYTES;
  const lost = { bare: [], onmemos: [] };
  const pipe = async (which, command) => {
    const r = await run('/bin/sh', ['-c', `${command} | wc -c`], { env, timeoutMs: THROUGHPUT_TIMEOUT_MS });
    const got = Number(r.stdout.trim());
    if (got !== n) lost[which].push(got);
    return r.ms;
  };
  const head = `head -c ${n} /dev/zero`;
  const onmemos = `${shq(NODE)} ${shq(BIN)} exec ${shq(id)} -- ${head}`;
  const s = await interleave(
    { bare: () => pipe('bare', head), onmemos: () => pipe('onmemos', onmemos) },
    THROUGHPUT_ITERATIONS,
  );
  const rate = (ms) => n / 1e6 / (ms / 1000);
  const subject = rate(median(s.onmemos));
  const baseline = rate(median(s.bare));
  const ratio = subject / baseline;
  const short = Object.entries(lost).filter(([, counts]) => counts.length > 0);
  const res = {
    name: 'throughput 1 GiB',
    unit: 'MB/s',
    subject: {
      what: 'onmemos exec $id -- head -c 1G /dev/zero | wc -c',
      median: subject,
      samples: s.onmemos.map(rate),
    },
    baseline: { what: 'head -c 1G /dev/zero | wc -c', median: baseline, samples: s.bare.map(rate) },
    result: { kind: 'ratio', value: ratio, text: `${ratio.toFixed(2)}x` },
    goal: `>= ${THROUGHPUT_GOAL}x`,
    status: ratio >= THROUGHPUT_GOAL ? 'PASS' : 'MISS',
  };
  if (short.length > 0) {
    // Output went missing: the rate is meaningless (the run ended early), and that is a bug, not a slow run.
    res.status = 'FAIL';
    const runs = THROUGHPUT_ITERATIONS + 1;
    res.note = short
      .map(
        ([k, counts]) => `${k}: wc counted ${counts.join(', ')} bytes, not ${n}, in ${counts.length} of ${runs} runs`,
      )
      .join('; ');
  }
  return res;
}

// --- report -------------------------------------------------------------------------------------------------

function table(meta, results) {
  const fmt = (r, v) => (v === undefined ? '-' : `${round(v, r.unit === 'ms' ? 1 : 0)} ${r.unit}`);
  const rows = [['benchmark', 'subject', 'baseline', 'result', 'goal', 'status']];
  for (const r of results) {
    if (r.error) {
      rows.push([r.name, '-', '-', '-', r.goal, 'ERROR']);
      continue;
    }
    let base = fmt(r, r.baseline.median);
    if (r.name === 'exec -- true') {
      const { node, bwrap } = r.baseline.parts;
      base = `${round(node.median)} node + ${round(bwrap.median)} bwrap`;
    } else if (r.name === 'create + rm' || r.name === 'create → first exec') {
      base = `2 x ${round(r.baseline.parts.node.median)} node`;
    } else if (r.name === 'limits') {
      base = r.baseline.median === undefined ? '-' : `of ${round(r.baseline.median)} ms create + rm`;
    }
    rows.push([r.name, fmt(r, r.subject.median), base, r.result.text, r.goal, r.status]);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  const line = (row) =>
    row
      .map((c, i) => c.padEnd(widths[i]))
      .join('   ')
      .trimEnd();
  const out = [
    `onmemos bench: node ${meta.node}, ${meta.cpus} CPUs, medians of ${meta.iterations} runs ` +
      `(throughput ${meta.throughputIterations}), baselines interleaved`,
    '',
    line(rows[0]),
    line(rows[0].map((_, i) => '-'.repeat(widths[i]))),
    ...rows.slice(1).map(line),
  ];
  const notes = results.filter((r) => r.error || r.note);
  if (notes.length > 0) out.push('', ...notes.map((r) => `${r.name}: ${r.error ?? r.note}`));
  out.push('', `took ${round(meta.seconds)} s`);
  return `${out.join('\n')}\n`;
}

// --- main ---------------------------------------------------------------------------------------------------

async function main() {
  const probe = spawnSync('bwrap', ['--version'], { stdio: 'ignore' });
  if (probe.error) fatal('bwrap (bubblewrap) is not installed or not on PATH: apt-get install -y bubblewrap');
  if (process.getuid?.() !== 0)
    fatal('must run as root: it measures the root path of the local provider (cgroups, disk images)');
  if (!existsSync(join(ROOT, 'dist', 'cli.cjs')))
    fatal('dist/cli.cjs is missing; run `npm run bench` (it builds first)');

  const started = process.hrtime.bigint();
  const stateDir = mkdtempSync(join(tmpdir(), 'onmemos-bench-'));
  const env = { ...process.env, ONMEMOS_STATE_DIR: stateDir };
  delete env.ONMEMOS_SERVER;
  // This machine's clusters and projects are not the bench's: gke is measured against its own fake, and `rm --all`
  // below must never reach a real cluster or project.
  env.KUBECONFIG = join(stateDir, 'no-kubeconfig');
  for (const name of ['PROJECT_ID', 'REGION', 'GOOGLE_CLOUD_PROJECT']) delete env[name];
  for (const name of Object.keys(env)) if (name.startsWith('WORKSTATIONS_')) delete env[name];
  // gcloud's own (CLOUDSDK_CORE_PROJECT, CLOUDSDK_RUN_REGION, the endpoint override, the token file): cloud_run is
  // measured against its own fake, with the variables it prints.
  for (const name of Object.keys(env)) if (name.startsWith('CLOUDSDK_')) delete env[name];
  delete env.ONMEMOS_LOG;
  const live = new Set();
  const onSignal = (sig) => {
    interrupted = sig;
    if (current) killGroup(current);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const results = [];
  let stopServer;
  let stopKube;
  let stopCloudRun;
  let stopWorkstations;
  try {
    const c = await run(NODE, [BIN, 'create', '--provider', 'local', '--ttl', '10'], { env });
    const id = c.stdout.trim();
    live.add(id);
    const benches = [
      ['--version', '<= 1.3x', () => benchVersion(env)],
      ['exec -- true', '<= +25 ms', () => benchExec(env, id)],
      ['create + rm', '<= +60 ms', () => benchCreateRm(env, live)],
      ['limits', '<= +10 ms', () => benchLimits(results.find((r) => r.name === 'create + rm'))],
      ['throughput 1 GiB', `>= ${THROUGHPUT_GOAL}x`, () => benchThroughput(env, id)],
    ];
    // The server (issue 3): one `onmemos serve` on 127.0.0.1:0 over the same state directory.
    const server = await startServer(NODE, BIN, env);
    stopServer = server.stop;
    const { LocalProvider } = await import(join(ROOT, 'dist', 'index.js'));
    benches.push(
      ['execute round trip', '-', () => benchRoundTrip(server.url, id, LocalProvider, stateDir, ITERATIONS)],
      ['200 concurrent executes', 'all 200 ok', () => benchConcurrent(server.url, server.pid)],
      ['shell keystroke echo', 'p99 < 5 ms', () => benchKeystroke(server.url, id, 200)],
      ['exec throughput via server', '>= 200 MB/s', () => benchServerThroughput(server.url, id, THROUGHPUT_ITERATIONS)],
      ['RSS, stdin flood', 'under 200 MiB', () => benchStdinFlood(server.url, id, server.pid)],
      ['RSS, 8 x 100 MB executes', 'under 200 MiB', () => benchBigOutputs(server.url, id, server.pid)],
    );
    // gke (issue 8): the Kubernetes fake in a process of its own, its pods local sandboxes.
    benches.push([
      'gke exec -- true',
      '<= 0.7x',
      async () => {
        const fake = await startKubeFake(NODE, ROOT, env);
        stopKube = fake.stop;
        const t = { env, node: NODE, bin: BIN, run, interleave, median, shq, iterations: ITERATIONS };
        return benchGke({ ...t, throughputIterations: THROUGHPUT_ITERATIONS }, fake, join(stateDir, 'kubectl-cache'));
      },
    ]);
    // cloud_run: the Cloud Run fake in a process of its own, its services' containers local sandboxes.
    benches.push([
      'cloud_run exec -- true',
      '<= +150 ms',
      async () => {
        const fake = await startCloudRunFake(NODE, ROOT, env);
        stopCloudRun = fake.stop;
        const t = { env, node: NODE, bin: BIN, run, interleave, median, iterations: ITERATIONS };
        return benchCloudRun(t, fake, id);
      },
    ]);
    // workstations: the Cloud Workstations fake in a process of its own, its workstations' sshd in local sandboxes;
    // onmemos' SSH key is made in a config directory of the bench's own, whose ssh/ the fake's sshd takes keys from.
    benches.push([
      'workstations exec -- true (reused)',
      '<= +150 ms',
      async () => {
        const configDir = join(stateDir, 'config');
        mkdirSync(join(configDir, 'ssh'), { recursive: true, mode: 0o700 });
        const fake = await startWorkstationsFake(NODE, ROOT, env, join(configDir, 'ssh'));
        stopWorkstations = fake.stop;
        const t = { env, node: NODE, bin: BIN, root: ROOT, configDir, run, interleave, median, shq };
        return benchWorkstations(
          { ...t, iterations: ITERATIONS, throughputIterations: THROUGHPUT_ITERATIONS },
          fake,
          id,
        );
      },
    ]);
    // The Cloud Run agent: its start-up, which a cold start waits for.
    benches.push([
      'agent start-up',
      '<= +25 ms',
      () => benchAgentStart({ env, node: NODE, bin: BIN, interleave, median, iterations: ITERATIONS }),
    ]);
    for (const [name, goal, bench] of benches) {
      if (only && !only.some((prefix) => name.startsWith(prefix))) continue;
      if (!asJson) process.stderr.write(`bench: ${name} ...\n`);
      try {
        results.push(...[await bench()].flat());
      } catch (e) {
        if (interrupted) throw e;
        results.push({ name, goal, status: 'ERROR', error: e instanceof Error ? e.message : String(e) });
      }
    }
  } finally {
    await stopServer?.();
    await stopKube?.();
    await stopCloudRun?.();
    await stopWorkstations?.();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    // --all also catches a session whose create was cut short (its id never printed); the state dir is ours alone.
    try {
      await run(NODE, [BIN, 'rm', '--all'], { env, cleanup: true });
    } catch (e) {
      const left = [...live].join(' ') || '(none known)';
      process.stderr.write(`bench: could not remove the bench's sessions ${left}: ${e.message}\n`);
    }
    rmSync(stateDir, { recursive: true, force: true });
  }

  const meta = {
    node: process.versions.node,
    cpus: availableParallelism(),
    iterations: ITERATIONS,
    throughputIterations: THROUGHPUT_ITERATIONS,
    seconds: Number(process.hrtime.bigint() - started) / 1e9,
  };
  if (asJson) process.stdout.write(`${JSON.stringify({ ...meta, results }, null, 2)}\n`);
  else process.stdout.write(table(meta, results));
  return results.some((r) => r.status === 'ERROR' || r.status === 'FAIL') ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    process.stderr.write(
      `bench: ${interrupted ? `interrupted by ${interrupted}` : e instanceof Error ? e.message : e}\n`,
    );
    process.exitCode = interrupted ? 130 : 1;
  },
);
