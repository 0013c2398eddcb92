/**
 * Connects a RemoteProcess to this process's terminal or pipes: stdin (with EOF), stdout/stderr as produced,
 * raw mode and resize for a tty, signal forwarding, a timeout, and the ssh-style `~.` escape. Every listener
 * it adds it removes, and the terminal is restored on every way out.
 */
import { constants as osConstants } from 'node:os';
import type { Readable, Writable } from 'node:stream';
import type { RemoteProcess } from '../exec/process.js';
import { exitCodeOf } from '../exec/process.js';
import { EscapeFilter } from './escape.js';

/** The terminal or pipes a command runs on (the CLI's own, or a test's). */
export interface CliIO {
  stdin: Readable & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown; fd?: number };
  stdout: Writable & { isTTY?: boolean; columns?: number; rows?: number };
  stderr: Writable & { isTTY?: boolean };
  /**
   * stdin is /dev/null (`< /dev/null`, a service, a script's `stdio: 'ignore'`): nothing to forward, and the stream
   * need not be made (the CLI passes stdin as a getter; making it is ~2 ms of an exec's start-up).
   */
  stdinIsNull?: boolean;
  /**
   * The descriptors behind stdout and stderr, where they are this process's own (the CLI's 1 and 2): a local exec
   * may give them to the command itself (ExecSpec.outputFds). A test's streams have none.
   */
  outputFds?: { stdout?: number; stderr?: number };
  /** Whether stderr is a terminal, where that is known without making the stream (the CLI's: isatty(2)). */
  stderrIsTTY?: boolean;
}

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
/** Exit code after `~.`, as ssh gives. */
export const DISCONNECT_EXIT = 255;
/** After forwarding SIGINT/SIGTERM, a remote process that has not exited within this grace is killed. */
const KILL_GRACE_MS = 2000;
const signalNumbers = osConstants.signals as unknown as Record<string, number>;

/**
 * Copies `from` to `to` with backpressure (pausing `from` while `to` is full); returns the undo. `to` may be a
 * function that makes it, called on the first data (the CLI's stdout is made only if something is written to it).
 */
function forward(
  from: Readable,
  target: Writable | (() => Writable),
  map: (d: Buffer) => Buffer = (d) => d,
): () => void {
  let to = typeof target === 'function' ? undefined : target;
  const resume = () => from.resume();
  const onData = (d: Buffer) => {
    const chunk = map(d);
    if (chunk.length === 0) return;
    to ??= (target as () => Writable)();
    if (!to.write(chunk)) {
      from.pause();
      to.once('drain', resume);
    }
  };
  from.on('data', onData);
  return () => {
    from.off('data', onData);
    to?.off('drain', resume);
  };
}

/**
 * Starts the remote process with `start` and connects it; resolves with the exit code onmemos should exit with.
 * Signal handlers go in first, so a Ctrl-C or SIGTERM that arrives while the process is being started still
 * ends it.
 */
export async function attach(io: CliIO, start: () => Promise<RemoteProcess>, opts: AttachOptions): Promise<number> {
  const cleanups: (() => void)[] = [];
  let forcedCode: number | undefined;
  let pendingSignal: NodeJS.Signals | undefined;
  let proc: RemoteProcess | undefined;
  /** Asks the remote process to end with `sig`, and kills its whole tree if it has not after a grace period. */
  const stop = (p: RemoteProcess, sig: NodeJS.Signals) => {
    p.kill(sig);
    setTimeout(() => p.kill('SIGKILL'), KILL_GRACE_MS).unref();
  };
  try {
    // Signals to onmemos end the remote process too.
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
      const handler = () => {
        forcedCode ??= 128 + (signalNumbers[sig] ?? 1);
        if (proc) stop(proc, sig);
        else pendingSignal ??= sig;
      };
      opts.signals.on(sig, handler);
      cleanups.push(() => opts.signals.off(sig, handler));
    }
    const p = await start();
    proc = p;
    if (pendingSignal) stop(p, pendingSignal);

    // Output as produced, at the pace the reader takes it. If our stdout is closed (`| head -1`), the remote
    // command gets SIGPIPE, just as it would in a local pipeline.
    // Our stdout and stderr are taken only when something comes for them (an exec whose output went to the
    // command itself, ExecSpec.outputFds, never makes them).
    const onOutError = () => {
      forcedCode ??= 128 + (signalNumbers.SIGPIPE ?? 13);
      p.kill('SIGPIPE');
      p.stdout.destroy();
    };
    let stdout: Writable | undefined;
    const takeStdout = () => {
      if (!stdout) {
        stdout = io.stdout;
        stdout.on('error', onOutError);
      }
      return stdout;
    };
    cleanups.push(
      forward(p.stdout, takeStdout),
      forward(p.stderr, () => io.stderr),
    );
    cleanups.push(() => stdout?.off('error', onOutError));

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
          forcedCode ??= DISCONNECT_EXIT;
          stop(p, 'SIGHUP');
        }
        return r.data;
      };
      const onEnd = () => p.stdin.end();
      cleanups.push(forward(io.stdin, p.stdin, applyEscapes));
      io.stdin.on('end', onEnd);
      io.stdin.resume();
      cleanups.push(() => {
        io.stdin.off('end', onEnd);
        io.stdin.pause();
      });
    } else {
      p.stdin.end();
    }

    if (opts.tty && io.stdout.isTTY) {
      const onResize = () => p.resize(io.stdout.columns ?? 80, io.stdout.rows ?? 24);
      io.stdout.on('resize', onResize);
      cleanups.push(() => io.stdout.off('resize', onResize));
    }

    if (opts.timeoutSeconds !== undefined) {
      const t = setTimeout(() => {
        forcedCode ??= TIMEOUT_EXIT;
        p.kill('SIGKILL');
      }, opts.timeoutSeconds * 1000);
      cleanups.push(() => clearTimeout(t));
    }

    const status = await p.exit;
    if (forcedCode !== undefined) p.kill('SIGKILL'); // leave no orphan of an interrupted command
    return forcedCode ?? exitCodeOf(status, signalNumbers);
  } finally {
    for (const c of cleanups.reverse()) c();
  }
}
