/**
 * `onmemos doctor` through the built binary: the local sandbox on this machine; gke, cloud_run and workstations
 * against their fakes (started as the other suites start them, the CLI given the same environment), each
 * configured and reachable, then broken one piece at a time (FAILED or MISSING, the fix, exit 1); nothing
 * configured (exit 0); remote mode against a real `onmemos serve` with a good, a wrong and no key.
 */
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WORKSTATIONS_SETTINGS } from '../../src/providers/workstations/config.js';
import { type CloudRunFake, startCloudRunFake } from '../fakes/cloudrun/server.js';
import { type KubeFake, startKubeFake } from '../fakes/kube/server.js';
import { startWorkstationsFake, type WorkstationsFake } from '../fakes/workstations/server.js';
import { BIN, CLI, type RunResult, StateDir } from '../helpers/cli.js';
import { spawnPty } from '../helpers/pty.js';
import { type Served, startServe } from '../helpers/serve.js';

interface Check {
  name: string;
  status: 'ok' | 'warn' | 'missing' | 'failed';
  detail: string;
  fix?: string;
}
interface Section {
  configured: boolean;
  status: 'ok' | 'broken' | 'not_configured';
  detail?: string;
  fix?: string;
  checks: Check[];
}
interface Report {
  ok: boolean;
  providers: Record<'local' | 'gke' | 'cloud_run' | 'workstations' | 'remote', Section>;
}

const state = new StateDir();
let kube: KubeFake;
let cloudrun: CloudRunFake;
let workstations: WorkstationsFake;

/** Nothing of the caller's environment configures anything: no kubeconfig, no project, no server. */
const clean = (): Record<string, string> => {
  const home = join(state.path, 'home');
  mkdirSync(home, { recursive: true });
  const blank = [
    'KUBECONFIG',
    'GKE_CONTEXT',
    'PROJECT_ID',
    'CLOUDSDK_CORE_PROJECT',
    'GOOGLE_CLOUD_PROJECT',
    'REGION',
    'CLOUDSDK_RUN_REGION',
    'CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN',
    'CLOUDSDK_AUTH_ACCESS_TOKEN_FILE',
    ...WORKSTATIONS_SETTINGS,
    'ONMEMOS_SERVER',
    'ONMEMOS_API_KEY',
    'ONMEMOS_SSH',
    'XDG_CONFIG_HOME',
    'NO_COLOR',
  ];
  return {
    ...Object.fromEntries(blank.map((k) => [k, ''])),
    HOME: home,
    ONMEMOS_STATE_DIR: state.path,
    ONMEMOS_CONFIG_DIR: join(state.path, 'config'),
  };
};

/** `onmemos [global options] doctor [args]`. */
const doctor = (env: Record<string, string>, args: string[] = [], global: string[] = []) =>
  state.run([...global, 'doctor', ...args], { env: { ...clean(), ...env } });

async function doctorJson(
  env: Record<string, string>,
  global: string[] = [],
): Promise<{ r: RunResult; report: Report }> {
  const r = await doctor(env, ['--json'], global);
  let report: Report;
  try {
    report = JSON.parse(r.stdout);
  } catch {
    throw new Error(`doctor --json printed no JSON (exit ${r.code}): ${r.stdout}${r.stderr}`);
  }
  return { r, report };
}

const check = (s: Section, name: string) => {
  const c = s.checks.find((x) => x.name === name);
  if (!c) throw new Error(`no check ${name} in ${JSON.stringify(s)}`);
  return c;
};

/** A port nothing listens on (bound, then closed). */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

beforeAll(async () => {
  [kube, cloudrun, workstations] = await Promise.all([
    startKubeFake({ network: 'isolated' }),
    startCloudRunFake(),
    startWorkstationsFake(),
  ]);
}, 120_000);
afterAll(async () => {
  await Promise.all([kube?.close(), cloudrun?.close(), workstations?.close()]);
  await state.cleanup();
}, 120_000);

/** `onmemos doctor --json` run through `wrapper` (bwrap, setpriv…), with clean() and `env`; killed after 30 s. */
function doctorUnder(wrapper: string[], env: Record<string, string> = {}): Promise<RunResult> {
  return new Promise<RunResult>((resolve, reject) => {
    const child = spawn(wrapper[0]!, [...wrapper.slice(1), process.execPath, BIN, 'doctor', '--json'], {
      env: { ...process.env, ...clean(), ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

describe('nothing configured', () => {
  it('local works, the cloud providers and remote mode are "not configured" with what configures them: exit 0', async () => {
    const { r, report } = await doctorJson({});
    expect(r.code, r.stderr).toBe(0);
    expect(report.ok).toBe(true);
    expect(Object.keys(report.providers)).toEqual(['local', 'gke', 'cloud_run', 'workstations', 'remote']);
    expect(report.providers.local).toMatchObject({ configured: true, status: 'ok' });
    for (const c of report.providers.local.checks) {
      expect(c).toMatchObject({ status: 'ok', name: expect.any(String), detail: expect.any(String) });
    }
    const names = report.providers.local.checks.map((c) => c.name);
    expect(names).toEqual(
      expect.arrayContaining([
        'bwrap',
        'slirp4netns',
        'user namespaces',
        '/dev/net/tun',
        'cgroups',
        'node-pty',
        'native parts',
        'state directory',
      ]),
    );
    for (const kind of ['gke', 'cloud_run', 'workstations', 'remote'] as const) {
      expect(report.providers[kind]).toMatchObject({
        configured: false,
        status: 'not_configured',
        checks: [],
        detail: expect.any(String),
        fix: expect.any(String),
      });
    }
    expect(report.providers.cloud_run.fix).toContain('export PROJECT_ID=');
    expect(report.providers.gke.fix).toContain('gcloud container clusters get-credentials');
    expect(report.providers.remote.fix).toContain('onmemos config set-context');
  });

  it('the text report groups the providers, without colour when stdout is not a terminal', async () => {
    const r = await doctor({});
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).not.toContain('\x1b[');
    expect(r.stdout).toMatch(/^local \(bubblewrap sandbox\): ok$/m);
    expect(r.stdout).toMatch(/^ {2}OK +bwrap +\/usr\/bin\/bwrap$/m);
    expect(r.stdout).toMatch(/^gke \(Kubernetes\): not configured$/m);
    expect(r.stdout).toMatch(/^ {2}to configure: export PROJECT_ID=/m);
    expect(r.stdout).toContain('Every configured provider works.');
  });

  it('on a terminal the statuses are coloured, unless NO_COLOR is set', async () => {
    const onTty = (env: Record<string, string>) =>
      new Promise<{ code: number; out: string }>((resolve) => {
        let out = '';
        const p = spawnPty(
          CLI[0]!,
          [...CLI.slice(1), 'doctor'],
          {
            cols: 200,
            rows: 50,
            env: { ...process.env, ...clean(), TERM: 'xterm-256color', ...env } as Record<string, string>,
          },
          (d) => {
            out += d;
          },
        );
        const timer = setTimeout(() => p.kill('SIGKILL'), 30_000);
        p.onExit(({ exitCode }) => {
          clearTimeout(timer);
          resolve({ code: exitCode, out });
        });
      });
    const coloured = await onTty({});
    expect(coloured.code, coloured.out).toBe(0);
    expect(coloured.out).toContain('\x1b[32mOK');
    const plain = await onTty({ NO_COLOR: '1' });
    expect(plain.code, plain.out).toBe(0);
    expect(plain.out).not.toContain('\x1b[');
    expect(plain.out).toContain('local (bubblewrap sandbox): ok');
  });

  it('--help says what it checks and its exit codes', async () => {
    const r = await doctor({}, ['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('--json');
    expect(r.stdout).toMatch(/1 when something configured is broken/);
  });
});

describe('local, broken', () => {
  it('a state directory that cannot be written is FAILED with the fix: exit 1', async () => {
    const file = join(state.path, 'a-file');
    writeFileSync(file, '');
    const { r, report } = await doctorJson({ ONMEMOS_STATE_DIR: join(file, 'state') });
    expect(r.code).toBe(1);
    expect(report.ok).toBe(false);
    expect(report.providers.local.status).toBe('broken');
    expect(check(report.providers.local, 'state directory')).toMatchObject({
      status: 'failed',
      fix: expect.stringContaining('ONMEMOS_STATE_DIR'),
    });
    const colon = await doctorJson({ ONMEMOS_STATE_DIR: join(state.path, 'a:b') });
    expect(colon.r.code).toBe(1);
    expect(check(colon.report.providers.local, 'state directory').detail).toContain("contains ':'");
  });

  it('an ordinary user whose sessions cannot have cgroups gets a WARN (no limits), not a broken provider: exit 0', async () => {
    // nobody: cgroup v1 cannot be delegated to it, and on v2 its cgroup is root's, not its own.
    const home = mkdtempSync(join(tmpdir(), 'onmemos-nobody-')); // state.path is root's alone
    chmodSync(home, 0o777);
    const r = await doctorUnder(['/usr/bin/setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'], {
      HOME: home,
      ONMEMOS_STATE_DIR: join(home, 'state'),
    }).finally(() => rmSync(home, { recursive: true, force: true }));
    const report = JSON.parse(r.stdout) as Report;
    const cgroups = check(report.providers.local, 'cgroups');
    if (existsSync('/sys/fs/cgroup/memory/tasks') || cgroups.status !== 'ok') {
      expect(cgroups).toMatchObject({
        status: 'warn',
        detail: expect.stringContaining('sessions get no cpu, memory or pids limits'),
        fix: expect.any(String),
      });
    }
    expect(report.providers.local.status).toBe('ok');
    expect(report.ok).toBe(true);
    expect(r.code, r.stderr).toBe(0);
  });

  it('missing programs (/usr/bin hidden in a mount namespace) are MISSING with the apt-get line: exit 1', async () => {
    // bwrap gives the doctor a view of this machine whose /usr/bin is empty but for node.
    const r = await doctorUnder([
      '/usr/bin/bwrap',
      '--dev-bind',
      '/',
      '/',
      '--tmpfs',
      '/usr/bin',
      '--ro-bind',
      process.execPath,
      process.execPath,
      '--',
    ]);
    expect(r.code, r.stderr).toBe(1);
    const report = JSON.parse(r.stdout) as Report;
    expect(check(report.providers.local, 'bwrap')).toMatchObject({
      status: 'missing',
      detail: '/usr/bin/bwrap is missing',
      fix: 'apt-get install -y bubblewrap',
    });
    expect(check(report.providers.local, 'slirp4netns')).toMatchObject({
      status: 'missing',
      fix: 'apt-get install -y slirp4netns',
    });
    expect(check(report.providers.local, 'user namespaces')).toMatchObject({ status: 'missing' });
    // What does not live in /usr/bin is still found.
    expect(check(report.providers.local, 'node-pty').status).toBe('ok');
    expect(check(report.providers.local, 'native parts').status).toBe('ok');
  });
});

describe('gke against the kube fake', () => {
  it('configured and reachable: kubeconfig, context, credentials, API server, sessions', async () => {
    const { r, report } = await doctorJson({ KUBECONFIG: kube.kubeconfigPath });
    expect(r.code, r.stdout).toBe(0);
    const gke = report.providers.gke;
    expect(gke).toMatchObject({ configured: true, status: 'ok' });
    expect(gke.checks.map((c) => [c.name, c.status])).toEqual([
      ['kubeconfig', 'ok'],
      ['context', 'ok'],
      ['credentials', 'ok'],
      ['API server', 'ok'],
      ['sessions', 'ok'],
    ]);
    expect(check(gke, 'context').detail).toContain('onmemos-fake');
    expect(check(gke, 'API server').detail).toContain(kube.url);
    expect(check(gke, 'credentials').detail).toContain('a bearer token');
  });

  it('a context that names no cluster is FAILED with the kubectl fix: exit 1', async () => {
    const path = join(state.path, 'kubeconfig-nocluster');
    writeFileSync(
      path,
      readFileSync(kube.kubeconfigPath, 'utf8').replace(/cluster: onmemos-fake\b/, 'cluster: no-such-cluster'),
    );
    const { r, report } = await doctorJson({ KUBECONFIG: path });
    expect(r.code).toBe(1);
    expect(report.providers.gke.status).toBe('broken');
    expect(check(report.providers.gke, 'context')).toMatchObject({
      status: 'failed',
      detail: expect.stringContaining('names no cluster'),
      fix: expect.stringContaining('kubectl config set-context onmemos-fake --cluster='),
    });
  });

  it('--context naming a context the kubeconfig lacks is FAILED (and the doctor still runs): exit 1', async () => {
    const { r, report } = await doctorJson({ KUBECONFIG: kube.kubeconfigPath }, ['--context', 'nope']);
    expect(r.code, r.stderr).toBe(1);
    expect(check(report.providers.gke, 'context')).toMatchObject({
      status: 'failed',
      detail: expect.stringContaining('"nope" is not in'),
      fix: expect.stringContaining('GKE_CONTEXT'),
    });
  });

  it('a token file that is missing is FAILED under credentials: exit 1', async () => {
    const path = join(state.path, 'kubeconfig-tokenfile');
    writeFileSync(
      path,
      readFileSync(kube.kubeconfigPath, 'utf8').replace(/token: \S+/, `tokenFile: ${join(state.path, 'no-token')}`),
    );
    const { r, report } = await doctorJson({ KUBECONFIG: path });
    expect(r.code).toBe(1);
    expect(check(report.providers.gke, 'credentials')).toMatchObject({
      status: 'failed',
      detail: expect.stringContaining('no-token'),
      fix: expect.stringContaining('gcloud container clusters get-credentials'),
    });
  });

  it('a token the API server refuses is FAILED under sessions (HTTP 401), with the get-credentials fix', async () => {
    const path = join(state.path, 'kubeconfig-wrongtoken');
    writeFileSync(path, readFileSync(kube.kubeconfigPath, 'utf8').replace(/token: \S+/, 'token: not-the-token'));
    const { r, report } = await doctorJson({ KUBECONFIG: path });
    expect(r.code).toBe(1);
    expect(check(report.providers.gke, 'sessions')).toMatchObject({
      status: 'failed',
      detail: expect.stringContaining('HTTP 401'),
      fix: expect.stringContaining('gcloud container clusters get-credentials'),
    });
  });

  // (This machine has gke-gcloud-auth-plugin on PATH: the kubeconfig names one at a path where there is none.)
  it('an exec plugin that is not installed is MISSING with the command that installs it', async () => {
    const path = join(state.path, 'kubeconfig-exec');
    const plugin = [
      '    exec:',
      '      apiVersion: client.authentication.k8s.io/v1beta1',
      `      command: ${join(state.path, 'gke-gcloud-auth-plugin')}`,
      '      interactiveMode: Never',
    ].join('\n');
    writeFileSync(path, readFileSync(kube.kubeconfigPath, 'utf8').replace(/ {4}token: \S+/, plugin));
    const { r, report } = await doctorJson({ KUBECONFIG: path });
    expect(r.code).toBe(1);
    expect(check(report.providers.gke, 'credentials')).toMatchObject({
      status: 'missing',
      fix: expect.stringContaining('gcloud components install gke-gcloud-auth-plugin'),
    });
  });

  it('a server on a port nothing listens on is FAILED under API server: exit 1', async () => {
    const path = join(state.path, 'kubeconfig-port');
    const port = await closedPort();
    writeFileSync(path, readFileSync(kube.kubeconfigPath, 'utf8').replace(kube.url, `http://127.0.0.1:${port}`));
    const { r, report } = await doctorJson({ KUBECONFIG: path });
    expect(r.code).toBe(1);
    expect(check(report.providers.gke, 'API server')).toMatchObject({
      status: 'failed',
      detail: expect.stringContaining('ECONNREFUSED'),
      fix: expect.stringContaining('kubectl cluster-info'),
    });
  });
});

describe('cloud_run against the Cloud Run fake', () => {
  it('configured and reachable: project and region, credentials, the Run API at the override', async () => {
    const { r, report } = await doctorJson(cloudrun.env);
    expect(r.code, r.stdout).toBe(0);
    const s = report.providers.cloud_run;
    expect(s).toMatchObject({ configured: true, status: 'ok' });
    expect(s.checks.map((c) => [c.name, c.status])).toEqual([
      ['project and region', 'ok'],
      ['credentials', 'ok'],
      ['Run API', 'ok'],
    ]);
    expect(check(s, 'Run API').detail).toContain(`127.0.0.1:${cloudrun.port}`);
    expect(check(s, 'credentials').detail).toContain('CLOUDSDK_AUTH_ACCESS_TOKEN_FILE');
    // The doctor listed the services, with the token: the fake saw it.
    expect(cloudrun.requests.some((q) => q.method === 'GET' && /\/services\b/.test(q.url))).toBe(true);
  });

  it('an override on a port nothing listens on is FAILED with the fix: exit 1', async () => {
    const port = await closedPort();
    const { r, report } = await doctorJson({
      ...cloudrun.env,
      CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN: `http://127.0.0.1:${port}/`,
    });
    expect(r.code).toBe(1);
    expect(check(report.providers.cloud_run, 'Run API')).toMatchObject({
      status: 'failed',
      detail: expect.stringContaining('ECONNREFUSED'),
      fix: expect.stringContaining('CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN'),
    });
  });

  it('a missing token file is FAILED under credentials; a wrong token is refused by the API: exit 1', async () => {
    const missing = await doctorJson({
      ...cloudrun.env,
      CLOUDSDK_AUTH_ACCESS_TOKEN_FILE: join(state.path, 'no-token'),
    });
    expect(missing.r.code).toBe(1);
    expect(check(missing.report.providers.cloud_run, 'credentials')).toMatchObject({
      status: 'failed',
      fix: expect.stringContaining('gcloud auth print-access-token >'),
    });
    const wrong = join(state.path, 'wrong-token');
    writeFileSync(wrong, 'ya29.wrong\n');
    const refused = await doctorJson({ ...cloudrun.env, CLOUDSDK_AUTH_ACCESS_TOKEN_FILE: wrong });
    expect(refused.r.code).toBe(1);
    expect(check(refused.report.providers.cloud_run, 'Run API')).toMatchObject({
      status: 'failed',
      detail: expect.stringContaining('401'),
      fix: expect.stringContaining('gcloud auth application-default login'),
    });
  });

  it('a region but no project is FAILED with the export line: exit 1', async () => {
    const { r, report } = await doctorJson({ REGION: 'europe-west1' });
    expect(r.code).toBe(1);
    expect(report.providers.cloud_run.checks[0]).toMatchObject({
      name: 'project and region',
      status: 'failed',
      fix: expect.stringContaining('export PROJECT_ID='),
    });
  });
});

describe('workstations against the Cloud Workstations fake', () => {
  it('configured and reachable: cluster and config, ssh, credentials, the workstation config', async () => {
    const { r, report } = await doctorJson(workstations.env);
    expect(r.code, r.stdout).toBe(0);
    const s = report.providers.workstations;
    expect(s).toMatchObject({ configured: true, status: 'ok' });
    expect(s.checks.map((c) => [c.name, c.status])).toEqual([
      ['cluster and config', 'ok'],
      ['ssh', 'ok'],
      ['credentials', 'ok'],
      ['workstation config', 'ok'],
    ]);
    expect(check(s, 'workstation config').detail).toContain(workstations.configName);
  });

  it('a config the cluster does not have is FAILED with the gcloud line that lists them: exit 1', async () => {
    const { r, report } = await doctorJson({ ...workstations.env, WORKSTATIONS_CONFIG: 'no-such-config' });
    expect(r.code).toBe(1);
    expect(check(report.providers.workstations, 'workstation config')).toMatchObject({
      status: 'failed',
      detail: expect.stringContaining('404'),
      fix: expect.stringContaining('gcloud workstations configs list'),
    });
  });

  it('an ssh client that is not there (ONMEMOS_SSH) is MISSING: exit 1', async () => {
    const { r, report } = await doctorJson({ ...workstations.env, ONMEMOS_SSH: join(state.path, 'no-ssh') });
    expect(r.code).toBe(1);
    expect(check(report.providers.workstations, 'ssh')).toMatchObject({
      status: 'missing',
      fix: expect.stringContaining('ONMEMOS_SSH'),
    });
  });

  it('an override on a port nothing listens on is FAILED: exit 1', async () => {
    const port = await closedPort();
    const { r, report } = await doctorJson({
      ...workstations.env,
      CLOUDSDK_API_ENDPOINT_OVERRIDES_WORKSTATIONS: `http://127.0.0.1:${port}/`,
    });
    expect(r.code).toBe(1);
    expect(check(report.providers.workstations, 'workstation config')).toMatchObject({
      status: 'failed',
      detail: expect.stringContaining('ECONNREFUSED'),
    });
  });
});

describe('every provider at once', () => {
  it('gke and cloud_run configured together both pass; the text report shows each check', async () => {
    const r = await doctor({ ...cloudrun.env, KUBECONFIG: kube.kubeconfigPath });
    expect(r.code, r.stdout).toBe(0);
    expect(r.stdout).toMatch(/^gke \(Kubernetes\): ok$/m);
    expect(r.stdout).toMatch(/^cloud_run \(Cloud Run\): ok$/m);
    expect(r.stdout).toMatch(/^ {2}OK +Run API +http:\/\/127\.0\.0\.1:\d+/m);
  });

  it('one broken provider among working ones: exit 1, the text report gives the fix under the check', async () => {
    const port = await closedPort();
    const r = await doctor({
      ...cloudrun.env,
      KUBECONFIG: kube.kubeconfigPath,
      CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN: `http://127.0.0.1:${port}/`,
    });
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^gke \(Kubernetes\): ok$/m);
    expect(r.stdout).toMatch(/^cloud_run \(Cloud Run\): broken$/m);
    expect(r.stdout).toMatch(/^ {2}FAILED +Run API +cannot reach/m);
    expect(r.stdout).toMatch(/^ +fix: check the network, or CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN/m);
    expect(r.stdout).toContain('Not working: cloud_run');
  });
});

describe('a backend that accepts connections and never answers', () => {
  it('every probe gives up (gke, cloud_run, workstations, remote at once): FAILED, exit 1, no hang', async () => {
    const held: import('node:net').Socket[] = [];
    const silent = createServer((s) => {
      s.on('error', () => {});
      held.push(s);
    });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(silent.address() as { port: number }).port}`;
    try {
      const path = join(state.path, 'kubeconfig-silent');
      writeFileSync(path, readFileSync(kube.kubeconfigPath, 'utf8').replace(kube.url, url));
      const { r, report } = await doctorJson({
        KUBECONFIG: path,
        ...cloudrun.env,
        CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN: `${url}/`,
        WORKSTATIONS_REGION: workstations.env.WORKSTATIONS_REGION!,
        WORKSTATIONS_CLUSTER: workstations.env.WORKSTATIONS_CLUSTER!,
        WORKSTATIONS_CONFIG: workstations.env.WORKSTATIONS_CONFIG!,
        CLOUDSDK_API_ENDPOINT_OVERRIDES_WORKSTATIONS: `${url}/`,
        ONMEMOS_SERVER: url,
        ONMEMOS_API_KEY: 'k',
      });
      expect(r.code, r.stderr).toBe(1);
      const p = report.providers;
      expect(check(p.gke, 'API server')).toMatchObject({ status: 'failed', detail: expect.stringContaining('within') });
      expect(check(p.cloud_run, 'Run API')).toMatchObject({
        status: 'failed',
        detail: expect.stringContaining('within'),
      });
      expect(check(p.workstations, 'workstation config')).toMatchObject({
        status: 'failed',
        detail: expect.stringContaining('within'),
      });
      expect(check(p.remote, 'server')).toMatchObject({ status: 'failed', detail: expect.stringContaining('within') });
    } finally {
      for (const s of held) s.destroy();
      await new Promise((r) => silent.close(r));
    }
  });
});

describe('remote mode against onmemos serve', () => {
  let served: Served;
  const key = 'doctor-e2e-key-0123456789abcdef';
  const serveState = new StateDir();
  beforeAll(async () => {
    served = await startServe({ ONMEMOS_STATE_DIR: serveState.path, ONMEMOS_API_KEYS: key });
  });
  afterAll(async () => {
    await served?.stop();
    await serveState.cleanup();
  });

  it('the server answers /health and accepts the key: exit 0', async () => {
    const { r, report } = await doctorJson({ ONMEMOS_SERVER: served.url, ONMEMOS_API_KEY: key });
    expect(r.code, r.stdout).toBe(0);
    const s = report.providers.remote;
    expect(s).toMatchObject({ configured: true, status: 'ok' });
    expect(check(s, 'server').detail).toContain(`${served.url} (ONMEMOS_SERVER): onmemos `);
    expect(check(s, 'API key')).toMatchObject({ status: 'ok', detail: expect.stringContaining('accepts the key') });
    // Local is still checked in remote mode.
    expect(report.providers.local.status).toBe('ok');
  });

  it('a wrong key is FAILED, no key MISSING, each with the fix: exit 1', async () => {
    const wrong = await doctorJson({}, ['--server', served.url, '--api-key', 'not-the-key']);
    expect(wrong.r.code).toBe(1);
    expect(check(wrong.report.providers.remote, 'server').status).toBe('ok');
    expect(check(wrong.report.providers.remote, 'API key')).toMatchObject({
      status: 'failed',
      detail: expect.stringContaining('refuses the key'),
      fix: expect.stringContaining('ONMEMOS_API_KEY'),
    });
    const none = await doctorJson({ ONMEMOS_SERVER: served.url });
    expect(none.r.code).toBe(1);
    expect(check(none.report.providers.remote, 'API key').status).toBe('missing');
  });

  it('a saved context is what it checks, and its fix names the context', async () => {
    const env = { ...clean(), ONMEMOS_CONFIG_DIR: join(state.path, 'config-ctx') };
    const set = await state.run(['config', 'set-context', 'dev', '--server', served.url, '--api-key-stdin'], {
      env,
      input: 'wrong-key',
    });
    expect(set.code, set.stderr).toBe(0);
    expect((await state.run(['config', 'use-context', 'dev'], { env })).code).toBe(0);
    const { r, report } = await doctorJson({ ONMEMOS_CONFIG_DIR: env.ONMEMOS_CONFIG_DIR });
    expect(r.code).toBe(1);
    expect(check(report.providers.remote, 'server').detail).toContain('(context dev)');
    expect(check(report.providers.remote, 'API key').fix).toContain('onmemos config set-context dev');
    // --local: remote mode is not used, so not checked.
    const local = await doctorJson({ ONMEMOS_CONFIG_DIR: env.ONMEMOS_CONFIG_DIR }, ['--local']);
    expect(local.r.code).toBe(0);
    expect(local.report.providers.remote.status).toBe('not_configured');
  });

  it('a server nothing listens on is FAILED; an unreadable config file is FAILED, not a crash: exit 1', async () => {
    const port = await closedPort();
    const down = await doctorJson({ ONMEMOS_SERVER: `http://127.0.0.1:${port}`, ONMEMOS_API_KEY: key });
    expect(down.r.code).toBe(1);
    expect(check(down.report.providers.remote, 'server')).toMatchObject({
      status: 'failed',
      detail: expect.stringContaining('ECONNREFUSED'),
      fix: expect.stringContaining('ONMEMOS_SERVER'),
    });
    const dir = join(state.path, 'config-bad');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'config.json'), '{ not json');
    const bad = await doctorJson({ ONMEMOS_CONFIG_DIR: dir });
    expect(bad.r.code, bad.r.stderr).toBe(1);
    expect(bad.report.providers.remote.checks[0]).toMatchObject({
      name: 'settings',
      status: 'failed',
      detail: expect.stringContaining('not valid JSON'),
    });
  });
});
