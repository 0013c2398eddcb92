/**
 * For tests against the Cloud Workstations fake (test/fakes/workstations): its REST API called as the proto's http
 * rules say (`@google-cloud/workstations` is not in this tree), long-running operations awaited, access tokens,
 * an ssh key pair, and the argv of a real `ssh` that reaches a workstation through the tunnel (ProxyCommand: the
 * test-only ws-tunnel.mjs beside this file).
 */
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { WorkstationsFake } from '../fakes/workstations/server.js';

export const SSH = '/usr/bin/ssh';
export const SSH_KEYGEN = '/usr/bin/ssh-keygen';
export const TUNNEL_SCRIPT = fileURLToPath(new URL('./ws-tunnel.mjs', import.meta.url));

export type Obj = Record<string, unknown>;

export interface Operation {
  name: string;
  done?: boolean;
  metadata?: Obj;
  response?: Obj & { state?: string | number; host?: string };
  error?: { code: number; message: string };
}

/** A REST call to the fake with its token (or `token`); the status and the parsed JSON. */
export async function call(
  fake: WorkstationsFake,
  method: string,
  path: string,
  body?: unknown,
  token: string | null = fake.token,
): Promise<{ status: number; body: Obj }> {
  const r = await fetch(`${fake.url}${path}`, {
    method,
    headers: {
      ...(token === null ? {} : { authorization: `Bearer ${token}` }),
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await r.text();
  return { status: r.status, body: text ? (JSON.parse(text) as Obj) : {} };
}

/** The call's body, or a thrown error naming the status and the Google error. */
export async function ok(p: Promise<{ status: number; body: Obj }>): Promise<Obj> {
  const r = await p;
  if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${JSON.stringify(r.body)}`);
  return r.body;
}

export const wsName = (fake: WorkstationsFake, id: string) => `${fake.configName}/workstations/${id}`;

/** Polls an operation (as a client does, at `version`) until done. */
export async function waitOperation(
  fake: WorkstationsFake,
  op: Obj,
  version: 'v1' | 'v1beta' = 'v1',
  timeoutMs = 30_000,
): Promise<Operation> {
  let cur = op as unknown as Operation;
  const t0 = Date.now();
  while (!cur.done) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`operation ${cur.name} not done after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
    cur = (await ok(call(fake, 'GET', `/${version}/${cur.name}`))) as unknown as Operation;
  }
  return cur;
}

/** Creates a workstation (STATE_STOPPED) and waits for its operation. */
export async function createWorkstation(fake: WorkstationsFake, id: string, body: Obj = {}): Promise<Operation> {
  const op = await ok(call(fake, 'POST', `/v1/${fake.configName}/workstations?workstationId=${id}`, body));
  return waitOperation(fake, op);
}

export async function startWorkstation(fake: WorkstationsFake, id: string): Promise<Operation> {
  return waitOperation(fake, await ok(call(fake, 'POST', `/v1/${wsName(fake, id)}:start`, {})));
}

export async function stopWorkstation(fake: WorkstationsFake, id: string): Promise<Operation> {
  return waitOperation(fake, await ok(call(fake, 'POST', `/v1/${wsName(fake, id)}:stop`, {})));
}

export async function deleteWorkstation(fake: WorkstationsFake, id: string): Promise<Operation> {
  return waitOperation(fake, await ok(call(fake, 'DELETE', `/v1/${wsName(fake, id)}`)));
}

/** generateAccessToken: `{accessToken, expireTime}`. */
export async function accessToken(
  fake: WorkstationsFake,
  id: string,
  ttl = '3600s',
): Promise<{ accessToken: string; expireTime: string }> {
  const b = await ok(call(fake, 'POST', `/v1/${wsName(fake, id)}:generateAccessToken`, { ttl }));
  return b as { accessToken: string; expireTime: string };
}

/** An ed25519 key pair in `dir` (`id_ed25519`, `id_ed25519.pub`): the private key's path and the public line. */
export function sshKey(dir: string, name = 'id_ed25519'): { key: string; pub: string } {
  const key = join(dir, name);
  execFileSync(SSH_KEYGEN, ['-q', '-t', 'ed25519', '-N', '', '-C', `test@${name}`, '-f', key]);
  return { key, pub: readFileSync(`${key}.pub`, 'utf8').trim() };
}

/** Writes the token where the ProxyCommand reads it (at each ssh start). */
export function writeToken(file: string, token: string): void {
  writeFileSync(file, `${token}\n`, { mode: 0o600 });
}

/**
 * ssh's argv (after /usr/bin/ssh) to `user@workstation` through the tunnel of `host`: no config file, no agent, no
 * known hosts (gcloud's own options), only `key`, BatchMode (no prompt ever).
 */
export function sshArgs(o: { host: string; key: string; tokenFile: string; caFile: string; port?: number }): string[] {
  return [
    '-F',
    'none',
    '-i',
    o.key,
    '-o',
    'IdentitiesOnly=yes',
    '-o',
    'IdentityAgent=none',
    '-o',
    'BatchMode=yes',
    '-o',
    'StrictHostKeyChecking=no',
    '-o',
    'UserKnownHostsFile=/dev/null',
    '-o',
    'LogLevel=ERROR',
    '-o',
    `ProxyCommand=${process.execPath} ${TUNNEL_SCRIPT} ${o.host} ${o.port ?? 22} ${o.tokenFile} ${o.caFile}`,
    'user@workstation',
  ];
}

export interface Ran {
  code: number | null;
  signal: NodeJS.Signals | null;
  out: string;
  /** stdout as bytes. */
  raw: Buffer;
  err: string;
}

/** Runs argv to its end (bounded), with `input` on stdin; output collected. */
export function runProcess(
  argv: string[],
  o: { input?: string | Buffer; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const p = spawn(argv[0]!, argv.slice(1), { env: o.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    p.stdout.on('data', (d: Buffer) => out.push(d));
    p.stderr.on('data', (d) => (err += d));
    p.stdin.on('error', () => {});
    p.stdin.end(o.input ?? '');
    const timer = setTimeout(() => p.kill('SIGKILL'), o.timeoutMs ?? 30_000);
    p.on('error', reject);
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      const raw = Buffer.concat(out);
      resolve({ code, signal, out: raw.toString('utf8'), raw, err });
    });
  });
}

/** The local sessions the fake's workstations run in now (none once every workstation is stopped or deleted). */
export async function sandboxes(fake: WorkstationsFake): Promise<string[]> {
  return (await fake.runtime.provider.list()).map((s) => s.id);
}
