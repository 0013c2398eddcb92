/**
 * Connects a RemoteProcess to this process's terminal or pipes: stdin (with EOF), stdout/stderr as produced,
 * raw mode and resize for a tty, signal forwarding, a timeout, and the ssh-style `~.` escape. Every listener
 * it adds it removes, and the terminal is restored on every way out.
 */
import { constants as osConstants } from 'node:os';
import type { Readable, Writable } from 'node:stream';
import type { CliIO } from '../commands/context.js';
import type { RemoteProcess } from '../providers/provider.js';
import { exitCodeOf } from '../providers/provider.js';
import { EscapeFilter } from './escape.js';

export interface AttachOptions {
  tty: boolean;
  stdin: boolean;
  /** Put the local terminal in raw mode (stdin is a terminal and the remote side has a tty). */
  raw: boolean;
  escape: boolean;
  timeoutSeconds?: number;
  signals: NodeJS.EventEmitter;
}

export const TIMEOUT_EXIT = 124;

/** Copies `from` to `to` with backpressure (pausing `from` while `to` is full); returns the undo. */
function forward(from: Readable, to: Writable, map: (d: Buffer) => Buffer = (d) => d): () => void {
  const resume = () => from.resume();
  const onData = (d: Buffer) => {
    const chunk = map(d);
    if (chunk.length > 0 && !to.write(chunk)) {
      from.pause();
      to.once('drain', resume);
    }
  };
  from.on('data', onData);
  return () => {
    from.off('data', onData);
    to.off('drain', resume);
  };
}
/** After forwarding SIGINT/SIGTERM, a remote process that has not exited within this grace is killed. */
const KILL_GRACE_MS = 2000;

const signalNumbers = osConstants.signals as unknown as Record<string, number>;

/**
 * Starts the remote process with `start` and connects it. Signal handlers go in first, so a Ctrl-C or SIGTERM
 * that arrives while the process is being started still ends it.
 */
export async function attach(io: CliIO, start: () => Promise<RemoteProcess>, opts: AttachOptions): Promise<number> {
  const cleanups: (() => void)[] = [];
  let forcedCode: number | undefined;
  let proc: RemoteProcess | undefined;
  const stop = (sig: NodeJS.Signals) => {
    if (!proc) return;
    const p = proc;
    p.kill(sig);
    setTimeout(() => p.kill('SIGKILL'), KILL_GRACE_MS).unref();
  };

  // Signals to onmemos end the remote process too: forwarded, then SIGKILL of its tree after a grace period.
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const handler = () => {
      forcedCode ??= 128 + (signalNumbers[sig] ?? 1);
      stop(sig);
    };
    opts.signals.on(sig, handler);
    cleanups.push(() => opts.signals.off(sig, handler));
  }
  try {
    proc = await start();
  } catch (e) {
    for (const c of cleanups.reverse()) c();
    throw e;
  }
  if (forcedCode !== undefined) stop('SIGTERM');
  return connect(
    io,
    proc,
    opts,
    cleanups,
    () => forcedCode,
    (c) => {
      forcedCode ??= c;
    },
  );
}

async function connect(
  io: CliIO,
  proc: RemoteProcess,
  opts: AttachOptions,
  cleanups: (() => void)[],
  forced: () => number | undefined,
  force: (code: number) => void,
): Promise<number> {
  // Output as produced, at the pace the reader takes it. If our stdout is closed (`| head -1`), the remote
  // command gets SIGPIPE, just as it would in a local pipeline.
  cleanups.push(forward(proc.stdout, io.stdout), forward(proc.stderr, io.stderr));
  const onOutError = () => {
    proc.kill('SIGPIPE');
    proc.stdout.destroy();
  };
  io.stdout.on('error', onOutError);
  cleanups.push(() => io.stdout.off('error', onOutError));

  if (opts.raw && io.stdin.isTTY && io.stdin.setRawMode) {
    io.stdin.setRawMode(true);
    cleanups.push(() => io.stdin.setRawMode?.(false));
  }

  if (opts.stdin) {
    const filter = opts.escape ? new EscapeFilter() : undefined;
    const applyEscapes = (d: Buffer): Buffer => {
      if (!filter) return d;
      const r = filter.push(d);
      if (r.disconnect) {
        io.stderr.write(opts.raw ? '\r\nonmemos: disconnected\r\n' : 'onmemos: disconnected\n');
        force(255);
        proc.kill('SIGHUP');
        setTimeout(() => proc.kill('SIGKILL'), KILL_GRACE_MS).unref();
      }
      return r.data;
    };
    const onEnd = () => proc.stdin.end();
    cleanups.push(forward(io.stdin, proc.stdin, applyEscapes));
    io.stdin.on('end', onEnd);
    io.stdin.resume();
    cleanups.push(() => {
      io.stdin.off('end', onEnd);
      io.stdin.pause();
    });
  } else {
    proc.stdin.end();
  }

  if (opts.tty && io.stdout.isTTY) {
    const onResize = () => proc.resize(io.stdout.columns ?? 80, io.stdout.rows ?? 24);
    io.stdout.on('resize', onResize);
    cleanups.push(() => io.stdout.off('resize', onResize));
  }

  if (opts.timeoutSeconds !== undefined) {
    const t = setTimeout(() => {
      force(TIMEOUT_EXIT);
      proc.kill('SIGKILL');
    }, opts.timeoutSeconds * 1000);
    cleanups.push(() => clearTimeout(t));
  }

  try {
    const status = await proc.exit;
    const code = forced();
    if (code !== undefined) proc.kill('SIGKILL'); // leave no orphan of an interrupted command
    return code ?? exitCodeOf(status, signalNumbers);
  } finally {
    for (const c of cleanups.reverse()) c();
  }
}
