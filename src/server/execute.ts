/**
 * The buffered execute of the OnMemOS document: the command runs under `/bin/sh -c`, its output is collected
 * up to a cap per stream (`truncated: true` when cut), and a timeout kills it (returncode 124).
 *
 * Memory: each stream keeps at most `cap` bytes in one buffer that grows as output arrives; what comes past the
 * cap is read (so the command never blocks on a full pipe) and dropped at once. The text is decoded once, from
 * those bytes, however long a line is. With the concurrency cap of the server (serve --max-concurrent), the worst
 * case is bounded: 2 streams x cap per execute in flight, plus the response being written.
 */

import type { ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { UnavailableError, UserError } from '../errors.js';
import { type ExecSpec, exitCodeOf, type RemoteProcess } from '../exec/process.js';
import { checkExecSpec, type Provider } from '../providers/provider.js';
import { type ExecuteResult, validateArgument } from '../session/model.js';
import type { Principal } from './auth.js';
import { gone, type ServerContext } from './context.js';
import { sendJson } from './http.js';

/** Default cap on each of stdout and stderr (the same as the request body and WebSocket message limits). */
export const DEFAULT_OUTPUT_CAP = 1 << 20;
/** The longest timeout an execute may ask for, in seconds. */
const MAX_EXECUTE_TIMEOUT = 24 * 3600;

/** An execute's `timeout`: seconds, more than 0 and at most a day (422 otherwise). */
export function checkTimeout(timeout: unknown): number {
  if (typeof timeout !== 'number' || !(timeout > 0) || timeout > MAX_EXECUTE_TIMEOUT) {
    throw new UserError(`"timeout" must be a number of seconds, more than 0 and at most ${MAX_EXECUTE_TIMEOUT}`);
  }
  return timeout;
}

export interface ExecuteOptions {
  /** Run it as a one-shot job (cloud_run's Cloud Run Jobs) instead of in the session. */
  via?: 'job';
  /**
   * When the session's own transport cannot start the command (its agent does not answer), run it as a job
   * instead, where the provider has jobs (the legacy Cloud Run route's behaviour).
   */
  fallbackToJob?: boolean;
}

/**
 * The buffered execute of both APIs as an HTTP answer, counted against the key's concurrency limit; a client that
 * goes away kills the command.
 */
export async function respondExecute(
  ctx: ServerContext,
  principal: Principal,
  res: ServerResponse,
  provider: Provider,
  id: string,
  command: string,
  timeout: number,
  opts: ExecuteOptions = {},
): Promise<void> {
  const release = ctx.limit.acquire(principal.id);
  try {
    const run = (via?: 'job') => executeBuffered(provider, id, command, timeout, ctx.opts.outputCap, gone(res), via);
    let result: ExecuteResult;
    try {
      result = await run(opts.via);
    } catch (e) {
      // Only a command that never started is run again, as a job: one that started may have done its work.
      const jobs = provider.capabilities.exec.includes('job');
      if (!(opts.fallbackToJob && !opts.via && jobs && e instanceof UnavailableError)) throw e;
      result = await run('job');
      result.stderr = `onmemos: ${e.message}; ran as a job instead\n${result.stderr}`;
    }
    sendJson(res, 200, result);
  } finally {
    release();
  }
}

/** Starts a command somewhere (a provider's session, the agent's own children): what a buffered execute runs on. */
export type StartProcess = (spec: ExecSpec) => Promise<RemoteProcess>;

/** The buffered execute on a session of a provider (as a job with `via`: checked against its capabilities). */
export function executeBuffered(
  provider: Provider,
  id: string,
  command: string,
  timeoutSeconds: number,
  cap = DEFAULT_OUTPUT_CAP,
  /** Aborted when the client goes away: the command and everything it started are killed. */
  signal?: AbortSignal,
  via?: 'job',
): Promise<ExecuteResult> {
  const start: StartProcess = (spec) => {
    const s = via ? { ...spec, via } : spec;
    checkExecSpec(provider.kind, provider.capabilities, s);
    return provider.exec(id, s);
  };
  return runBuffered(start, command, timeoutSeconds, cap, signal);
}

/** The buffered execute on whatever `start` runs commands on (the server's providers, the Cloud Run agent). */
export async function runBuffered(
  start: StartProcess,
  command: string,
  timeoutSeconds: number,
  cap = DEFAULT_OUTPUT_CAP,
  /** Aborted when the client goes away: the command and everything it started are killed. */
  signal?: AbortSignal,
): Promise<ExecuteResult> {
  validateArgument('the command', command);
  const proc = await start({ argv: ['/bin/sh', '-c', command], stdin: false, timeoutSeconds });
  const onAbort = () => proc.kill('SIGKILL');
  if (signal?.aborted) onAbort();
  signal?.addEventListener('abort', onAbort);
  proc.stdin.on('error', () => {});
  proc.stdin.end();
  const out = collect(proc.stdout, cap);
  const err = collect(proc.stderr, cap);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    proc.kill('SIGKILL');
  }, timeoutSeconds * 1000);
  try {
    const status = await proc.exit;
    const returncode = timedOut ? 124 : exitCodeOf(status);
    const result: ExecuteResult = { stdout: out.text(), stderr: err.text(), returncode, success: returncode === 0 };
    if (timedOut) result.stderr += `onmemos: timed out after ${timeoutSeconds} s\n`;
    if (out.truncated() || err.truncated()) result.truncated = true;
    return result;
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onAbort);
  }
}

/** Keeps the first `cap` bytes of a stream in one growing buffer; reads and drops the rest. */
function collect(stream: Readable, cap: number) {
  let buf = Buffer.alloc(0);
  let size = 0;
  let cut = false;
  stream.on('error', () => {});
  stream.on('data', (d: Buffer) => {
    const n = Math.min(cap - size, d.length);
    if (n < d.length) cut = true;
    if (n <= 0) return;
    if (size + n > buf.length) {
      // Doubling keeps copies few; never past the cap, so a small output costs a small buffer.
      const grown = Buffer.allocUnsafe(Math.min(cap, Math.max(size + n, 2 * buf.length, 64 * 1024)));
      buf.copy(grown, 0, 0, size);
      buf = grown;
    }
    d.copy(buf, size, 0, n);
    size += n;
  });
  return {
    truncated: () => cut,
    // Cut output ends on a character boundary, not in the middle of a multi-byte UTF-8 sequence.
    text: () => buf.toString('utf8', 0, cut ? utf8Boundary(buf, size) : size),
  };
}

/** The largest end <= `end` that does not split a UTF-8 sequence of `buf`. */
export function utf8Boundary(buf: Buffer, end: number): number {
  let start = end - 1;
  // Back over continuation bytes (10xxxxxx), at most 3, to the lead byte of the last sequence.
  while (start >= 0 && end - start < 4 && (buf[start]! & 0xc0) === 0x80) start--;
  if (start < 0) return end;
  const lead = buf[start]!;
  const length = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
  return start + length > end ? start : end;
}
