/** Runs the built `onmemos agent` (bin/onmemos.js) on 127.0.0.1 port 0, bounded, and stops it. */
import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN } from './cli.js';

export const AGENT_SECRET = 'agent-test-secret-0123456789abcdef';

export interface RunningAgent {
  child: ChildProcess;
  port: number;
  base: string;
  /** The workspace (made by the agent, under a directory of the test's own). */
  workspace: string;
  /** What the agent wrote on stderr so far. */
  stderr(): string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code and signal. Removes the workspace. */
  stop(graceMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * Starts the agent with `env` on top of this process's environment (the secret unless `env` says otherwise) and
 * resolves once it names its port; rejects with its stderr if it exits first.
 */
export function startAgent(env: Record<string, string | undefined> = {}, args: string[] = []): Promise<RunningAgent> {
  // A directory every user may pass through, so that the workspace user reaches the workspace the agent makes in it.
  const dir = mkdtempSync(join(tmpdir(), 'onmemos-agent-'));
  chmodSync(dir, 0o755);
  const workspace = join(dir, 'workspace');
  const childEnv: NodeJS.ProcessEnv = {
    ...process.env,
    ONMEMOS_AGENT_SECRET: AGENT_SECRET,
    ONMEMOS_WORKSPACE: workspace,
  };
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) delete childEnv[k];
    else childEnv[k] = v;
  }
  const child = spawn(process.execPath, [BIN, 'agent', '--port', '0', '--host', '127.0.0.1', ...args], {
    env: childEnv,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  child.stderr!.on('data', (d) => {
    err += d;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const stop = async (graceMs = 10_000) => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    const force = setTimeout(() => child.kill('SIGKILL'), graceMs);
    const r = await exited;
    clearTimeout(force);
    rmSync(dir, { recursive: true, force: true });
    return r;
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      void stop(0);
      reject(new Error(`the agent did not start: ${err}`));
    }, 15_000);
    child.stderr!.on('data', () => {
      const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(err);
      if (!m) return;
      clearTimeout(timer);
      const port = Number(m[1]);
      resolve({ child, port, base: `http://127.0.0.1:${port}`, workspace, stderr: () => err, stop });
    });
    void exited.then(({ code }) => {
      clearTimeout(timer);
      rmSync(dir, { recursive: true, force: true });
      reject(new Error(`the agent exited ${code}: ${err}`));
    });
  });
}
