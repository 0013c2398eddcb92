/** Runs the built bin/onmemos.js through pipes, bounded, with its own state directory. */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { chownSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const BIN = fileURLToPath(new URL('../../bin/onmemos.js', import.meta.url));

/**
 * ONMEMOS_TEST_MODE=rootless runs the end-to-end suites with onmemos as an ordinary user: as root, the user that
 * test/setup/rootless.ts made (setpriv drops to it, in place, so pids and signals are onmemos' own); otherwise as
 * whoever runs the tests.
 */
export const ROOTLESS = process.env.ONMEMOS_TEST_MODE === 'rootless';
export const TEST_USER_NAME = 'onmemos-test';
export const TEST_USER =
  ROOTLESS && process.getuid?.() === 0
    ? {
        uid: Number(execFileSync('id', ['-u', TEST_USER_NAME], { encoding: 'utf8' })),
        gid: Number(execFileSync('id', ['-g', TEST_USER_NAME], { encoding: 'utf8' })),
        home: `/home/${TEST_USER_NAME}`,
      }
    : undefined;

/** The command that runs onmemos (file and leading arguments). */
export const CLI: string[] = TEST_USER
  ? [
      '/usr/bin/setpriv',
      `--reuid=${TEST_USER.uid}`,
      `--regid=${TEST_USER.gid}`,
      '--init-groups',
      '--',
      process.execPath,
      BIN,
    ]
  : [process.execPath, BIN];

/** CLI for a shell command line, each word quoted. */
export const cliShell = () => CLI.map((w) => `'${w.replaceAll("'", "'\\''")}'`).join(' ');

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  input?: string | Buffer;
  env?: NodeJS.ProcessEnv;
  /** Hang guard: the process is killed after this many ms (default 30 s). */
  timeoutMs?: number;
  onSpawn?: (child: ChildProcess) => void;
}

export function run(args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(CLI[0]!, [...CLI.slice(1), ...args], {
      env: { ...process.env, ...(TEST_USER ? { HOME: TEST_USER.home } : {}), ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d) => out.push(d));
    child.stderr.on('data', (d) => err.push(d));
    child.stdin.on('error', () => {});
    if (opts.input !== undefined) child.stdin.end(opts.input);
    else child.stdin.end();
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
    });
    opts.onSpawn?.(child);
  });
}

/**
 * ONMEMOS_TEST_MODE=remote runs the end-to-end suites in remote mode: every StateDir starts its own
 * `onmemos serve` (127.0.0.1, port 0) over its state directory, and every onmemos the tests run is its client.
 */
export const REMOTE = process.env.ONMEMOS_TEST_MODE === 'remote';
const REMOTE_KEY = 'e2e-remote-mode-key-0123456789';

/** A private state directory, so test files never see each other's sessions (in remote mode, with its server). */
export class StateDir {
  readonly path = mkdtempSync(join(tmpdir(), 'onmemos-test-'));
  constructor() {
    if (TEST_USER) chownSync(this.path, TEST_USER.uid, TEST_USER.gid);
  }
  private server?: { url: string; child: ChildProcess };

  /** Environment for an onmemos of this state directory (in remote mode: start() first). */
  get env(): Record<string, string> {
    if (TEST_USER) return { ONMEMOS_STATE_DIR: this.path, HOME: TEST_USER.home };
    if (!REMOTE) return { ONMEMOS_STATE_DIR: this.path };
    if (!this.server) throw new Error('remote mode: StateDir.start() before using env');
    return { ONMEMOS_STATE_DIR: this.path, ONMEMOS_SERVER: this.server.url, ONMEMOS_API_KEY: REMOTE_KEY };
  }

  /** In remote mode, starts this directory's server (once). */
  async start(): Promise<void> {
    if (!REMOTE || this.server) return;
    this.server = await new Promise((resolve, reject) => {
      // --allow-host-network: the suites run here create network host sessions too (a server refuses them by default).
      const child = spawn(process.execPath, [BIN, 'serve', '--port', '0', '--allow-host-network'], {
        env: { ...process.env, ONMEMOS_STATE_DIR: this.path, ONMEMOS_API_KEYS: REMOTE_KEY, ONMEMOS_SERVER: '' },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let err = '';
      child.stderr.on('data', (d) => {
        err += d;
        const m = /serving the \/v1 API on (http:\/\/\S+)/.exec(err);
        if (m) resolve({ url: m[1]!, child });
      });
      child.on('exit', (code) => reject(new Error(`onmemos serve exited ${code}: ${err}`)));
    });
  }

  async run(args: string[], opts: RunOptions = {}): Promise<RunResult> {
    await this.start();
    return run(args, { ...opts, env: { ...this.env, ...opts.env } });
  }

  async create(...args: string[]): Promise<string> {
    const r = await this.run(['create', '--ttl', '10', ...args]);
    if (r.code !== 0) throw new Error(`create failed (${r.code}): ${r.stderr}`);
    return r.stdout.trim();
  }

  /** Removes every session (processes included), the server, and the directory. */
  async cleanup(): Promise<void> {
    await this.run(['rm', '--all']);
    if (this.server) {
      const { child } = this.server;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
    rmSync(this.path, { recursive: true, force: true });
  }
}

/** Polls `fn` until it returns a truthy value (bounded); returns the last value. */
export async function waitFor<T>(fn: () => T | Promise<T>, timeoutMs = 15_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let v = await fn();
  while (!v && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, everyMs));
    v = await fn();
  }
  return v;
}
