/**
 * The adapters that turn a local child into a RemoteProcess: one for a child on pipes (node:child_process), one
 * for a child on a pty (node-pty). Used by the agent inside each sandbox, by the test fake, and by any transport
 * that runs a local program (ssh, kubectl). How a command's processes are signalled is the caller's (`kill`): a
 * cgroup, a process tree, or the child alone.
 */
import type { ChildProcess } from 'node:child_process';
import { constants as fsConstants, readFileSync, readSync } from 'node:fs';
import { PassThrough, type Readable, Writable } from 'node:stream';
import type { IPty } from 'node-pty';
import { type ExitStatus, type RemoteProcess, signalName } from './process.js';

export interface ChildControl {
  /** Signals the command; SIGKILL should take everything it started. Default: the child alone. */
  kill?(signal: NodeJS.Signals): void;
  /** Called once after the exit status is known (and has been handed on). */
  released?(): void;
}

/** After the main process exits, output still buffered is delivered; background processes keep no exec open. */
const DRAIN_IDLE_MS = 30;
const DRAIN_QUIET_CHECKS = 3;
const DRAIN_MAX_MS = 2000;

/** A child spawned with stdio [pipe|ignore, pipe, pipe]. A spawn failure is exit 125 with its message on stderr. */
export function pipedProcess(child: ChildProcess, ctl: ChildControl = {}): RemoteProcess {
  const stdin = child.stdin ?? new PassThrough();
  stdin.on('error', () => {}); // the command did not read all of its stdin: not an error of ours
  const stdout = child.stdout ?? endedStream();
  const stderr = child.stderr ?? endedStream();
  const exit = new Promise<ExitStatus>((resolve) => {
    child.on('error', (e) => {
      stderr.emit('data', Buffer.from(`onmemos: ${e.message}\n`));
      resolve({ code: 125 });
    });
    child.on('exit', async (code, signal) => {
      await Promise.all([drain(stdout), drain(stderr)]);
      resolve(signal ? { code: null, signal } : { code: code ?? 125 });
      if (ctl.released) setImmediate(ctl.released); // after the status has gone out
    });
  });
  return {
    stdin,
    stdout,
    stderr,
    resize() {},
    kill(signal = 'SIGKILL') {
      if (ctl.kill) ctl.kill(signal);
      else child.kill(signal);
    },
    exit,
  };
}

/** A child on a pty (node-pty). stderr is merged into the tty, so that stream is empty. */
export function ptyProcess(term: IPty, ctl: ChildControl = {}): RemoteProcess {
  const stdout = new PassThrough();
  const stderr = endedStream();
  const dataSub = term.onData((d: string | Buffer) => stdout.write(d));
  readRestOnDestroy(term, (d) => {
    if (!stdout.writableEnded) stdout.write(d);
  });
  // node-pty queues every write until the pty takes it: a command that never reads its terminal would let a
  // client's input grow this process without bound. Each chunk waits for the queue to empty (backpressure).
  const queue = (term as unknown as { _writeStream?: { _writeQueue?: unknown[] } })._writeStream?._writeQueue;
  let exited = false;
  const stdin = new Writable({
    write(chunk: Buffer, _enc, cb) {
      term.write(chunk as unknown as string);
      let wait = 1;
      const check = () => {
        if (!queue || queue.length === 0 || exited) return cb();
        wait = Math.min(wait * 2, 50);
        setTimeout(check, wait);
      };
      check();
    },
  });
  const exit = new Promise<ExitStatus>((resolve) => {
    term.onExit(({ exitCode, signal }) => {
      exited = true;
      dataSub.dispose();
      stdout.end();
      resolve(signal ? { code: null, signal: signalName(signal) } : { code: exitCode });
      if (ctl.released) setImmediate(ctl.released);
    });
  });
  return {
    stdin,
    stdout,
    stderr,
    resize(cols, rows) {
      try {
        term.resize(Math.max(1, cols), Math.max(1, rows));
      } catch {}
    },
    kill(signal = 'SIGKILL') {
      if (ctl.kill) ctl.kill(signal);
      else term.kill(signal);
    },
    exit,
  };
}

function endedStream(): PassThrough {
  const s = new PassThrough();
  s.end();
  return s;
}

/**
 * Resolves when `stream` has ended, or when the main process is gone and nothing more arrives (a background
 * process may hold the pipe open for ever; docker exec and kubectl exec return all the same). "Nothing more"
 * means DRAIN_QUIET_CHECKS checks in a row, each a separate turn of the event loop (so an I/O poll ran in
 * between and read whatever was waiting), found no new data, and DRAIN_IDLE_MS have passed: time alone is
 * not enough, since after the loop was busy a timer can fire before the pipe is read.
 */
function drain(stream: Readable): Promise<void> {
  if (stream.readableEnded || stream.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const started = Date.now();
    let quiet = 0;
    let timer: NodeJS.Timeout | undefined;
    const onData = () => {
      quiet = 0;
    };
    const done = () => {
      clearTimeout(timer);
      stream.off('data', onData);
      stream.off('end', done);
      stream.off('close', done);
      resolve();
    };
    const check = () => {
      const waiting = stream.isPaused() || stream.readableLength > 0;
      quiet = waiting ? 0 : quiet + 1;
      const elapsed = Date.now() - started;
      if ((quiet >= DRAIN_QUIET_CHECKS && elapsed >= DRAIN_IDLE_MS) || elapsed > DRAIN_MAX_MS) {
        stream.destroy();
        return done();
      }
      timer = setTimeout(check, DRAIN_IDLE_MS / DRAIN_QUIET_CHECKS);
    };
    stream.on('data', onData);
    stream.once('end', done);
    stream.once('close', done);
    timer = setTimeout(check, DRAIN_IDLE_MS / DRAIN_QUIET_CHECKS);
  });
}

/** What readRestOnDestroy reads at most: a process still writing to the terminal does not hold the exit up. */
const REST_MAX_BYTES = 4 << 20;

/**
 * Node's reader of a pty can end before the pty is drained, and what the command wrote last is then lost:
 * - libuv ends a stream at POLLHUP after a read that did not fill its buffer (uv__stream_io). A pty master is hung
 *   up as soon as the last descriptor of its terminal closes, while the kernel may still hold output the command
 *   wrote just before it exited (a kernel worker passes it on): under load, `echo a; echo b` may come out as `a`.
 * - node-pty destroys its reader 200 ms after the command exited if the terminal has not closed by then.
 * Both destroy the reader (`_socket`), so before it is destroyed, what the pty holds is read at once: the
 * descriptor is non-blocking, and a read of a pty master first waits for the kernel's pending output.
 */
export function readRestOnDestroy(term: IPty, onData: (d: Buffer) => void): void {
  const inner = term as unknown as { _socket?: { destroy: (e?: Error) => unknown }; _fd?: number };
  const socket = inner._socket;
  const fd = inner._fd;
  if (!socket || typeof fd !== 'number') return;
  const destroy = socket.destroy.bind(socket);
  let read = false;
  socket.destroy = (e?: Error) => {
    if (!read) {
      read = true;
      readNonBlocking(fd, onData);
    }
    return destroy(e);
  };
}

/** Reads fd until it would block, hangs up or REST_MAX_BYTES; nothing at all unless fd is non-blocking. */
function readNonBlocking(fd: number, onData: (d: Buffer) => void): void {
  try {
    const flags = /flags:\s*([0-7]+)/.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'latin1'));
    if (!flags || (Number.parseInt(flags[1]!, 8) & fsConstants.O_NONBLOCK) === 0) return;
    const buf = Buffer.allocUnsafe(65536);
    for (let total = 0; total < REST_MAX_BYTES; ) {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n <= 0) return;
      onData(Buffer.from(buf.subarray(0, n)));
      total += n;
    }
  } catch {} // EAGAIN: nothing more now; EIO: the terminal hung up
}
