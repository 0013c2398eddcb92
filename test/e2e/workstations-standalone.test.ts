/**
 * `npm run fake -- workstations` (scripts/fake.mjs), run in a network namespace of its own that has only a
 * loopback: it prints the export lines; real gcloud 528 with exactly those creates, starts, lists and describes a
 * workstation, and its `workstations start-tcp-tunnel` (the config, the workstation, generateAccessToken, then
 * wss://{host}/_workstation/tcp/22 trusting the fake's CA through CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE, bytes in text
 * frames) carries a real ssh to the workstation's sshd. SIGTERM removes every sandbox and file.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { waitFor } from '../helpers/cli.js';
import { runProcess, SSH, sshKey } from '../helpers/workstations.js';

const SCRIPT = fileURLToPath(new URL('../../scripts/fake.mjs', import.meta.url));
const GCLOUD = '/usr/bin/gcloud';
const SSHD = '/usr/sbin/sshd';
const work = mkdtempSync(join(tmpdir(), 'onmemos-wsf-'));
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  rmSync(work, { recursive: true, force: true });
});

/** Pids of the processes whose environment names `session` (WORKSPACE_ID, ONMEMOS_SESSION). */
function processesOf(session: string): number[] {
  const pids: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (
        readFileSync(`/proc/${d}/environ`, 'latin1')
          .split('\0')
          .some((e) => e.endsWith(`=${session}`))
      )
        pids.push(Number(d));
    } catch {}
  }
  return pids;
}

describe.skipIf(!existsSync(GCLOUD) || !existsSync(SSHD))('npm run fake -- workstations', () => {
  it('prints the exports; gcloud makes and starts a workstation, and ssh goes through its start-tcp-tunnel, offline', async () => {
    const key = sshKey(work);
    const child = spawn(
      '/usr/bin/unshare',
      [
        '--net',
        '--',
        'sh',
        '-c',
        'ip link set lo up && exec "$@"',
        'sh',
        process.execPath,
        SCRIPT,
        'workstations',
        '--authorized-keys',
        `${key.key}.pub`,
        '--verbose',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    children.push(child);
    const io = { out: '', err: '' };
    child.stdout!.on('data', (d) => (io.out += d));
    child.stderr!.on('data', (d) => (io.err += d));
    const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    expect(await waitFor(() => /^export CLOUDSDK_METRICS_ENVIRONMENT=/m.test(io.out), 30_000, 20)).toBe(true);
    expect(io.out).toMatch(
      /^# onmemos Cloud Workstations fake at http:\/\/127\.0\.0\.1:\d+ \(project onmemos-fake, region us-central1, cluster onmemos-cluster, config onmemos-config\)/,
    );
    const exports = Object.fromEntries([...io.out.matchAll(/^export (\w+)='([^']*)'$/gm)].map((m) => [m[1]!, m[2]!]));
    expect(Object.keys(exports)).toEqual([
      'CLOUDSDK_API_ENDPOINT_OVERRIDES_WORKSTATIONS',
      'CLOUDSDK_AUTH_ACCESS_TOKEN_FILE',
      'CLOUDSDK_CORE_PROJECT',
      'CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE',
      'NODE_EXTRA_CA_CERTS',
      'PROJECT_ID',
      'WORKSTATIONS_REGION',
      'WORKSTATIONS_CLUSTER',
      'WORKSTATIONS_CONFIG',
      'CLOUDSDK_WORKSTATIONS_REGION',
      'CLOUDSDK_WORKSTATIONS_CLUSTER',
      'CLOUDSDK_WORKSTATIONS_CONFIG',
      'CLOUDSDK_CORE_CHECK_GCE_METADATA',
      'CLOUDSDK_METRICS_ENVIRONMENT',
    ]);
    expect(exports.CLOUDSDK_API_ENDPOINT_OVERRIDES_WORKSTATIONS).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    const tokenFile = exports.CLOUDSDK_AUTH_ACCESS_TOKEN_FILE!;
    expect(statSync(tokenFile).mode & 0o777).toBe(0o600);
    expect(statSync(dirname(tokenFile)).mode & 0o777).toBe(0o700);
    expect(readFileSync(exports.CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE!, 'utf8')).toMatch(/^-----BEGIN CERTIFICATE-----/);

    const inside = ['/usr/bin/nsenter', `--target=${child.pid}`, '--net', '--'];
    const env = {
      ...process.env,
      ...exports,
      CLOUDSDK_CONFIG: join(work, 'gcloud'),
      CLOUDSDK_CORE_DISABLE_PROMPTS: '1',
    };
    const gcloud = (...args: string[]) => runProcess([...inside, GCLOUD, ...args], { env, timeoutMs: 60_000 });

    const created = await gcloud('workstations', 'create', 'w1');
    expect(created.err).toContain('Created workstation [w1].');
    expect(created.code).toBe(0);
    const started = await gcloud('workstations', 'start', 'w1');
    expect(started.err).toContain('Started workstation [w1].');
    const list = await gcloud('workstations', 'list', '--format=value(name.basename(),state)');
    expect(list.out).toBe('w1\tRUNNING\n');
    const session = /running in (ws-\S+),/.exec(io.err)?.[1] ?? '';
    expect(session).toMatch(/^ws-w1-user-\d+-\w+$/);
    expect(processesOf(session).length).toBeGreaterThan(0);
    const host = (await gcloud('workstations', 'describe', 'w1', '--format=value(host)')).out.trim();
    expect(host).toMatch(/^127\.0\.0\.1:\d+$/);

    // The tunnel, as `gcloud workstations ssh` starts it, on a port of its choosing.
    const tunnel = spawn(
      inside[0]!,
      [...inside.slice(1), GCLOUD, 'workstations', 'start-tcp-tunnel', 'w1', '22', '--local-host-port=localhost:0'],
      { env, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    children.push(tunnel);
    let tunnelErr = '';
    tunnel.stderr!.on('data', (d) => (tunnelErr += d));
    expect(await waitFor(() => /Listening on port \[\d+\]/.test(tunnelErr), 30_000, 20)).toBe(true);
    const localPort = /Listening on port \[(\d+)\]/.exec(tunnelErr)![1]!;
    const ssh = (command: string, input?: Buffer) =>
      runProcess(
        [
          ...inside,
          SSH,
          '-F',
          'none',
          '-i',
          key.key,
          '-o',
          'IdentitiesOnly=yes',
          '-o',
          'BatchMode=yes',
          '-o',
          'StrictHostKeyChecking=no',
          '-o',
          'UserKnownHostsFile=/dev/null',
          '-o',
          'LogLevel=ERROR',
          '-p',
          localPort,
          'user@localhost',
          command,
        ],
        { input },
      );
    const hello = await ssh('echo "hello from $(id -un) in $PWD"; exit 4');
    expect(hello).toMatchObject({ out: 'hello from user in /home/user\n', err: '', code: 4 });
    // Arbitrary bytes both ways (gcloud sends them to the fake in text frames, which the fake takes as bytes).
    const bytes = randomBytes(1 << 20);
    const echoed = await ssh('cat', bytes);
    expect(echoed.code).toBe(0);
    expect(echoed.raw.equals(bytes)).toBe(true);
    expect(io.err).toMatch(/workstations-fake: host w1: tunnel to 22 ok -> 101/);
    tunnel.kill('SIGINT');

    child.kill('SIGTERM');
    expect(await exit).toBe(0);
    expect(io.err).toContain('workstations-fake: SIGTERM: stopping');
    expect(existsSync(dirname(tokenFile))).toBe(false);
    // No process of the workstation's sandbox is left (its agent's environment names the session).
    expect(session).toMatch(/^ws-w1-user-\d+-\w+$/);
    expect(processesOf(session)).toEqual([]);
  });
});
