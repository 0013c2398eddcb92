/** `npm run fake -- kube` (scripts/fake.mjs): export lines on stdout, kubectl works with them, SIGTERM cleans up. */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { waitFor } from '../helpers/cli.js';
import { KUBECTL } from '../helpers/kube.js';

const SCRIPT = fileURLToPath(new URL('../../scripts/fake.mjs', import.meta.url));
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

function start(args: string[]) {
  const child = spawn(process.execPath, [SCRIPT, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  const io = { out: '', err: '' };
  child.stdout!.on('data', (d) => (io.out += d));
  child.stderr!.on('data', (d) => (io.err += d));
  const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return { child, io, exit };
}

describe('npm run fake', () => {
  it('kube: prints the export lines, serves kubectl, and removes everything on SIGTERM', async () => {
    const { child, io, exit } = start(['kube', '--network', 'isolated', '--bucket', 'my-bucket', '--bucket', 'b-2']);
    expect(await waitFor(() => /^export KUBECONFIG=/m.test(io.out), 30_000, 20)).toBe(true);
    expect(io.out).toMatch(/^# onmemos Kubernetes fake at http:\/\/127\.0\.0\.1:\d+, context onmemos-fake/);
    const kubeconfig = /^export KUBECONFIG='([^']+)'$/m.exec(io.out)![1]!;
    // Each bucket (--bucket, repeatable) is a directory of the fake's, named in a comment line.
    const buckets = [...io.out.matchAll(/^# bucket (\S+) \(GCS FUSE volumes mount it\): (.+)$/gm)];
    expect(buckets.map((m) => m[1])).toEqual(['b-2', 'my-bucket']);
    expect(buckets.map((m) => m[2])).toEqual(['b-2', 'my-bucket'].map((b) => join(dirname(kubeconfig), 'buckets', b)));
    for (const m of buckets) expect(existsSync(m[2]!)).toBe(true);
    const ns = await new Promise<string>((resolve) => {
      const k = spawn(KUBECTL, [
        `--kubeconfig=${kubeconfig}`,
        `--cache-dir=${join(dirname(kubeconfig), 'cache')}`,
        'get',
        'ns',
        '-o',
        'name',
      ]);
      let out = '';
      k.stdout.on('data', (d) => (out += d));
      const timer = setTimeout(() => k.kill('SIGKILL'), 30_000);
      k.on('close', () => {
        clearTimeout(timer);
        resolve(out);
      });
    });
    expect(ns).toContain('namespace/default\n');
    child.kill('SIGTERM');
    expect(await exit).toBe(0);
    expect(io.err).toContain('SIGTERM: stopping');
    expect(existsSync(dirname(kubeconfig))).toBe(false);
  });

  it('kube --bucket with a name GCS would refuse: exit 2 and why', async () => {
    const { io, exit } = start(['kube', '--bucket', 'Not_A_Bucket']);
    expect(await exit).toBe(2);
    expect(io.err).toMatch(/^--bucket Not_A_Bucket: a bucket name has 3 to 63 lowercase letters/);
    expect(io.err).toContain('[--bucket NAME]...');
  });

  it('a fake that does not exist: exit 2, its name and the usage', async () => {
    const { io, exit } = start(['nope']);
    expect(await exit).toBe(2);
    expect(io.err).toMatch(/^no fake named nope\nusage: npm run fake -- kube/);
    expect(io.err).toContain('npm run fake -- workstations');
  });
});
