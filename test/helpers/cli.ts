/** Runs the built bin/onmemos.js through pipes, bounded, with its own state directory. */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const BIN = fileURLToPath(new URL('../../bin/onmemos.js', import.meta.url));

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
    const child = spawn(process.execPath, [BIN, ...args], {
      env: { ...process.env, ...opts.env },
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

/** A private state directory, so test files never see each other's sessions. */
export class StateDir {
  readonly path = mkdtempSync(join(tmpdir(), 'onmemos-test-'));
  readonly env = { ONMEMOS_STATE_DIR: this.path };

  run(args: string[], opts: RunOptions = {}): Promise<RunResult> {
    return run(args, { ...opts, env: { ...this.env, ...opts.env } });
  }

  async create(...args: string[]): Promise<string> {
    const r = await this.run(['create', '--ttl', '10', ...args]);
    if (r.code !== 0) throw new Error(`create failed (${r.code}): ${r.stderr}`);
    return r.stdout.trim();
  }

  /** Removes every session (processes included) and the directory. */
  async cleanup(): Promise<void> {
    await this.run(['rm', '--all']);
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
