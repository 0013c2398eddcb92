/**
 * The buffered execute of the OnMemOS document: the command runs under `/bin/sh -c`, its output is collected
 * up to a cap per stream (`truncated: true` when cut), and a timeout kills it (returncode 124).
 */

import { constants as osConstants } from 'node:os';
import type { Provider } from '../providers/provider.js';
import { exitCodeOf } from '../providers/provider.js';
import type { ExecuteResult } from '../session/model.js';

export const DEFAULT_OUTPUT_CAP = 16 * 1024 * 1024;

export async function executeBuffered(
  provider: Provider,
  id: string,
  command: string,
  timeoutSeconds: number,
  cap = DEFAULT_OUTPUT_CAP,
  /** Aborted when the client goes away: the command and everything it started are killed. */
  signal?: AbortSignal,
): Promise<ExecuteResult> {
  const proc = await provider.exec(id, { argv: ['/bin/sh', '-c', command], stdin: false });
  const onAbort = () => proc.kill('SIGKILL');
  if (signal?.aborted) onAbort();
  signal?.addEventListener('abort', onAbort);
  proc.stdin.end();
  let truncated = false;
  const collect = (stream: NodeJS.ReadableStream) => {
    const chunks: Buffer[] = [];
    let size = 0;
    stream.on('data', (d: Buffer) => {
      const room = cap - size;
      if (d.length > room) truncated = true;
      if (room <= 0) return;
      const part = d.length > room ? d.subarray(0, room) : d;
      chunks.push(part);
      size += part.length;
    });
    return () => Buffer.concat(chunks).toString('utf8');
  };
  const out = collect(proc.stdout);
  const err = collect(proc.stderr);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    proc.kill('SIGKILL');
  }, timeoutSeconds * 1000);
  try {
    const status = await proc.exit;
    const returncode = timedOut ? 124 : exitCodeOf(status, osConstants.signals as unknown as Record<string, number>);
    const result: ExecuteResult = { stdout: out(), stderr: err(), returncode, success: returncode === 0 };
    if (timedOut) result.stderr += `onmemos: timed out after ${timeoutSeconds} s\n`;
    if (truncated) result.truncated = true;
    return result;
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onAbort);
  }
}
