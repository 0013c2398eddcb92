/**
 * gke benchmarks, against the Kubernetes API fake (`npm run fake -- kube`, in a process of its own) in the same run:
 *
 *   gke exec -- true   `onmemos exec $id -- true` vs `kubectl exec $pod -- true`             goal: <= 0.7x kubectl
 *   gke throughput     `onmemos exec $id -- head -c 1G /dev/zero | wc -c` vs kubectl's    goal: >= 1.0x kubectl
 *
 * kubectl is the machine's (/usr/bin/kubectl: the Google Cloud SDK's, which first asks the server's version to
 * pick a release), with its discovery cache in a directory of the bench's own. Both reach the same pod, whose
 * commands run in a local sandbox.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';

const KUBECTL = '/usr/bin/kubectl';
const THROUGHPUT_BYTES = 1024 ** 3;

/** Starts the fake; resolves with its KUBECONFIG and a stop() that waits until it has removed its pods. */
export function startKubeFake(node, root, env) {
  return new Promise((resolve, reject) => {
    const child = spawn(node, [join(root, 'scripts', 'fake.mjs'), 'kube'], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`the Kubernetes fake did not start: ${err}`));
    }, 30_000);
    child.stderr.on('data', (d) => {
      err += d;
    });
    child.stdout.on('data', (d) => {
      out += d;
      const m = /^export KUBECONFIG='([^']+)'$/m.exec(out);
      if (!m) return;
      clearTimeout(timer);
      const exited = new Promise((r) => child.once('exit', r));
      resolve({
        kubeconfig: m[1],
        stop: async () => {
          child.kill('SIGTERM');
          const force = setTimeout(() => child.kill('SIGKILL'), 20_000);
          await exited;
          clearTimeout(force);
        },
      });
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the Kubernetes fake exited ${code}: ${err}`));
    });
  });
}

/** Both gke benchmarks; `t` carries the runner's helpers (run, interleave, median, shq) and settings. */
export async function benchGke(t, fake, cacheDir) {
  const env = { ...t.env, KUBECONFIG: fake.kubeconfig };
  const made = await t.run(t.node, [t.bin, 'create', '--provider', 'gke', '--namespace', 'bench', '--json'], { env });
  const session = JSON.parse(made.stdout);
  const { id } = session;
  const pod = session.details.pod;
  const ns = session.details.k8s_namespace;
  const kubectl = [
    `--kubeconfig=${fake.kubeconfig}`,
    `--cache-dir=${cacheDir}`,
    'exec',
    '-n',
    ns,
    pod,
    '-c',
    'workspace',
    '--',
  ];
  try {
    const s = await t.interleave(
      {
        kubectl: async () => (await t.run(KUBECTL, [...kubectl, 'true'], { env })).ms,
        onmemos: async () => (await t.run(t.node, [t.bin, 'exec', id, '--', 'true'], { env })).ms,
        node: async () => (await t.run(t.node, ['-e', '0'], { env })).ms,
      },
      t.iterations,
    );
    const subject = t.median(s.onmemos);
    const baseline = t.median(s.kubectl);
    const ratio = subject / baseline;
    const exec = {
      name: 'gke exec -- true',
      unit: 'ms',
      subject: { what: 'onmemos exec $id -- true (gke, the fake)', median: subject, samples: s.onmemos },
      baseline: { what: 'kubectl exec $pod -- true', median: baseline, samples: s.kubectl },
      result: { kind: 'ratio', value: ratio, text: `${ratio.toFixed(2)}x` },
      goal: '<= 0.7x',
      status: ratio <= 0.7 ? 'PASS' : 'MISS',
      // What any Node.js CLI starts from: the floor under the ratio on this machine.
      note: `node -e 0 alone takes ${t.median(s.node).toFixed(1)} ms, ${(t.median(s.node) / baseline).toFixed(2)}x kubectl's exec`,
    };

    const n = THROUGHPUT_BYTES;
    const lost = [];
    const pipe = async (command) => {
      const r = await t.run('/bin/sh', ['-c', `${command} | wc -c`], { env, timeoutMs: 120_000 });
      if (Number(r.stdout.trim()) !== n) lost.push(r.stdout.trim());
      return r.ms;
    };
    const head = `head -c ${n} /dev/zero`;
    const q = await t.interleave(
      {
        kubectl: () => pipe(`${KUBECTL} ${kubectl.map(t.shq).join(' ')} ${head}`),
        onmemos: () => pipe(`${t.shq(t.node)} ${t.shq(t.bin)} exec ${t.shq(id)} -- ${head}`),
      },
      t.throughputIterations,
    );
    const rate = (ms) => n / 1e6 / (ms / 1000);
    const sub = rate(t.median(q.onmemos));
    const base = rate(t.median(q.kubectl));
    const throughput = {
      name: 'gke throughput 1 GiB',
      unit: 'MB/s',
      subject: {
        what: 'onmemos exec $id -- head -c 1G /dev/zero | wc -c',
        median: sub,
        samples: q.onmemos.map(rate),
      },
      baseline: {
        what: 'kubectl exec $pod -- head -c 1G /dev/zero | wc -c',
        median: base,
        samples: q.kubectl.map(rate),
      },
      result: { kind: 'ratio', value: sub / base, text: `${(sub / base).toFixed(2)}x` },
      goal: '>= 1.0x',
      status: sub / base >= 1 ? 'PASS' : 'MISS',
    };
    if (lost.length > 0) {
      throughput.status = 'FAIL';
      throughput.note = `wc counted ${lost.join(', ')} bytes, not ${n}`;
    }
    return [exec, throughput];
  } finally {
    await t.run(t.node, [t.bin, 'rm', id], { env, cleanup: true }).catch(() => {});
  }
}
