/**
 * `npm run fake -- cloudrun` (scripts/fake.mjs), run in a network namespace of its own that has only a loopback:
 * it prints the export lines, and real gcloud 528 with exactly those lists the fake's services (no Google host is
 * reachable from there, and under strace gcloud connects to nothing but the fake: the two CLOUDSDK_ variables that
 * stop its GCE metadata lookup are among the exports). `--region` works where REGION-localhost resolves to the
 * fake (a hosts file in a mount namespace of gcloud's own). SIGTERM removes every sandbox and file.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { waitFor } from '../helpers/cli.js';
import { webContainer } from '../helpers/cloudrun.js';

const SCRIPT = fileURLToPath(new URL('../../scripts/fake.mjs', import.meta.url));
const GCLOUD = '/usr/bin/gcloud';
const STRACE = '/usr/bin/strace';
const work = mkdtempSync(join(tmpdir(), 'onmemos-gcloud-'));
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  rmSync(work, { recursive: true, force: true });
});

/** Runs argv to its end (bounded), output collected. */
function run(argv: string[], env: NodeJS.ProcessEnv = process.env, timeoutMs = 60_000) {
  return new Promise<{ code: number | null; out: string; err: string }>((resolve, reject) => {
    const p = spawn(argv[0]!, argv.slice(1), { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('error', reject);
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out, err });
    });
  });
}

describe.skipIf(!existsSync(GCLOUD))('npm run fake -- cloudrun', () => {
  it('prints the exports; gcloud run services list works with them, offline; SIGTERM removes everything', async () => {
    // The fake in a network namespace with only loopback: nothing it or gcloud does can leave the machine.
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
        'cloudrun',
        '--network',
        'isolated',
        '--bucket',
        'my-bucket',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    children.push(child);
    const io = { out: '', err: '' };
    child.stdout!.on('data', (d) => (io.out += d));
    child.stderr!.on('data', (d) => (io.err += d));
    const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    expect(await waitFor(() => /^export REGION=/m.test(io.out), 30_000, 20)).toBe(true);
    expect(io.out).toMatch(
      /^# onmemos Cloud Run fake at http:\/\/127\.0\.0\.1:\d+ \(project onmemos-fake, region us-central1\)/,
    );
    // --bucket (repeatable): a directory of the fake's, named in a comment line.
    const bucket = /^# bucket my-bucket \(gcs volumes mount it\): (.+)$/m.exec(io.out)?.[1];
    expect(bucket).toBeDefined();
    expect(existsSync(bucket!)).toBe(true);
    const exports = Object.fromEntries([...io.out.matchAll(/^export (\w+)='([^']*)'$/gm)].map((m) => [m[1]!, m[2]!]));
    expect(Object.keys(exports)).toEqual([
      'CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN',
      'CLOUDSDK_AUTH_ACCESS_TOKEN_FILE',
      'CLOUDSDK_CORE_PROJECT',
      'PROJECT_ID',
      'REGION',
      'CLOUDSDK_CORE_CHECK_GCE_METADATA',
      'CLOUDSDK_METRICS_ENVIRONMENT',
    ]);
    const url = exports.CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN!;
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    const tokenFile = exports.CLOUDSDK_AUTH_ACCESS_TOKEN_FILE!;
    expect(statSync(tokenFile).mode & 0o777).toBe(0o600);
    expect(statSync(dirname(tokenFile)).mode & 0o777).toBe(0o700);
    const token = readFileSync(tokenFile, 'utf8').trim();
    const inside = ['/usr/bin/nsenter', `--target=${child.pid}`, '--net', '--'];

    // A service, made through the REST API from inside the namespace (as any client would).
    const make = `
      const [url, token, body] = process.argv.slice(1);
      const h = { authorization: 'Bearer ' + token, 'content-type': 'application/json' };
      let op = await (await fetch(url + 'v2/projects/onmemos-fake/locations/us-central1/services?serviceId=hello', { method: 'POST', headers: h, body })).json();
      while (!op.done) op = await (await fetch(url + 'v2/' + op.name, { headers: h })).json();
      console.log(JSON.stringify(op.response ?? op.error));`;
    const made = await run([
      ...inside,
      process.execPath,
      '--input-type=module',
      '-e',
      make,
      url,
      token,
      JSON.stringify({ template: { containers: [webContainer()] } }),
    ]);
    expect(made.err).toBe('');
    const svc = JSON.parse(made.out) as { uri: string; terminalCondition: { state: string } };
    expect(svc.terminalCondition.state).toBe('CONDITION_SUCCEEDED');

    const gcloudEnv = {
      ...process.env,
      ...exports,
      CLOUDSDK_CONFIG: join(work, 'gcloud'),
      CLOUDSDK_CORE_DISABLE_PROMPTS: '1',
    };
    const trace = join(work, 'connects');
    const traced = existsSync(STRACE) ? [STRACE, '-f', '-qq', '-e', 'trace=connect', '-o', trace] : [];
    const list = await run([...inside, ...traced, GCLOUD, 'run', 'services', 'list'], gcloudEnv);
    expect(list.err).toBe('');
    expect(list.code).toBe(0);
    expect(list.out).toMatch(/^\s+SERVICE\s+REGION\s+URL\s+LAST DEPLOYED BY\s+LAST DEPLOYED AT\n/);
    expect(list.out).toMatch(
      new RegExp(
        `\\S\\s+hello\\s+us-central1\\s+${svc.uri.replaceAll('.', '\\.')}\\s+tester@example\\.com\\s+\\d{4}-\\d\\d-\\d\\dT`,
      ),
    );
    if (traced.length > 0) {
      const inet = readFileSync(trace, 'utf8')
        .split('\n')
        .filter((l) => /sa_family=AF_INET6?\b/.test(l))
        .map((l) =>
          /sin6?_port=htons\((\d+)\), sin6?_addr=inet_(?:addr|pton)\((?:AF_INET6, )?"([^"]+)"/
            .exec(l)
            ?.slice(1)
            .join(' '),
        );
      expect(inet.length).toBeGreaterThan(0);
      expect(new Set(inet)).toEqual(new Set([`${new URL(url).port} 127.0.0.1`]));
    }

    // --region: gcloud asks REGION-<host>; a hosts file (in a mount namespace of gcloud's own) names the fake.
    const hosts = join(work, 'hosts');
    writeFileSync(hosts, `${readFileSync('/etc/hosts', 'utf8')}\n127.0.0.1 us-central1-localhost\n`);
    const regional = await run(
      [
        ...inside,
        '/usr/bin/unshare',
        '--mount',
        '--',
        'sh',
        '-c',
        'mount --bind "$0" /etc/hosts && exec "$@"',
        hosts,
        GCLOUD,
        'run',
        'services',
        'list',
        '--region',
        'us-central1',
        '--format',
        'value(metadata.name,status.url,status.conditions[0].status)',
      ],
      { ...gcloudEnv, CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN: url.replace('127.0.0.1', 'localhost') },
    );
    expect(regional.err).toBe('');
    expect(regional.out).toBe(`hello\t${svc.uri}\tTrue\n`);

    child.kill('SIGTERM');
    expect(await exit).toBe(0);
    expect(io.err).toContain('cloudrun-fake: SIGTERM: stopping');
    expect(existsSync(tokenFile)).toBe(false);
    expect(existsSync(dirname(tokenFile))).toBe(false);
    expect(existsSync(bucket!)).toBe(false);
  });
});
