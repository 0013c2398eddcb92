/**
 * Runs one command inside the session, as the agent's child, and turns it into a RemoteProcess (the shape every
 * transport shares, src/providers/provider.ts): through pipes, or through a pty from the session's own devpts
 * (node-pty). The agent already runs inside the sandbox as the session user, so the environment, the working
 * directory and argv are applied here, inside, after privileges were dropped — never by a process on the host.
 *
 * Every command starts through a fixed sh prologue that joins its exec group (a cgroup of its own where the
 * session has one), closes the agent's listening socket, makes itself the likelier OOM victim than the agent,
 * and changes to the working directory; user values arrive only as positional parameters.
 */
import { spawn as spawnChild } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import { PassThrough, type Readable, Writable } from 'node:stream';
import { descendants, processTable } from '../providers/local/proc.js';
import type { ExecSpec, ExitStatus, RemoteProcess } from '../providers/provider.js';

/** The fd the agent listens on (see LISTEN_FD in the local provider); closed in every command. */
export const AGENT_LISTEN_FD = 3;

/**
 * $1: how many cgroup.procs files follow; then the files; then the working directory; then argv. A missing
 * directory exits 125, as docker exec reports it; a missing command 127 and one that cannot run 126 (sh's own).
 */
export const EXEC_PROLOGUE = [
  'n=$1; shift',
  'while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n - 1)); done',
  `exec ${AGENT_LISTEN_FD}>&-`,
  'echo 500 > /proc/self/oom_score_adj 2>/dev/null',
  'cd -- "$1" 2>/dev/null || { echo "onmemos: no such directory: $1" >&2; exit 125; }',
  'shift',
  'exec "$@"',
].join('\n');

export function prologueArgv(procsFiles: string[], cwd: string, argv: string[]): string[] {
  return ['/bin/sh', '-c', EXEC_PROLOGUE, 'onmemos-exec', String(procsFiles.length), ...procsFiles, cwd, ...argv];
}

/** How an exec's processes are found and signalled: its cgroup when the session has them, else its process tree. */
export interface ExecGroup {
  /** cgroup.procs files the command joins before it runs (empty without cgroups). */
  procsFiles: string[];
  /** Sends `signal` to every process of the exec; SIGKILL kills it whole, race-free where the kernel allows. */
  signal(signal: NodeJS.Signals, mainPid: number | undefined): void;
  /** Called when the exec has ended; removes the group if nothing of it is left. */
  release(): void;
}

/** After the main process exits, output still buffered is delivered; background processes keep no exec open. */
const DRAIN_IDLE_MS = 30;
const DRAIN_QUIET_CHECKS = 3;
const DRAIN_MAX_MS = 2000;

export function spawnPiped(spec: ExecSpec, env: Record<string, string>, cwd: string, group: ExecGroup): RemoteProcess {
  const child = spawnChild('/bin/sh', prologueArgv(group.procsFiles, cwd, spec.argv).slice(1), {
    argv0: 'sh',
    detached: true, // its own session and process group: signals to the agent do not reach it, and vice versa
    env,
    cwd: '/',
    stdio: [spec.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
  });
  const stdin = child.stdin ?? new PassThrough();
  stdin.on('error', () => {}); // the command did not read all of its stdin: not an error of ours
  const stdout = child.stdout!;
  const stderr = child.stderr!;
  const exit = new Promise<ExitStatus>((resolve) => {
    child.on('error', (e) => {
      stderr.emit('data', Buffer.from(`onmemos: ${e.message}\n`));
      resolve({ code: 125 });
    });
    child.on('exit', async (code, signal) => {
      await Promise.all([drain(stdout), drain(stderr)]);
      resolve(signal ? { code: null, signal } : { code: code ?? 125 });
      setImmediate(() => group.release()); // after the status has gone out
    });
  });
  return {
    stdin,
    stdout,
    stderr,
    resize() {},
    kill(signal = 'SIGKILL') {
      group.signal(signal, child.pid);
    },
    exit,
  };
}

/** TTY exec through node-pty (loaded only here). stderr is merged into the tty, so the stream is empty. */
export async function spawnTty(
  spec: ExecSpec,
  env: Record<string, string>,
  cwd: string,
  group: ExecGroup,
): Promise<RemoteProcess> {
  const pty = await import('node-pty');
  const argv = prologueArgv(group.procsFiles, cwd, spec.argv);
  const term = pty.spawn(argv[0]!, argv.slice(1), {
    name: env.TERM ?? 'xterm-256color',
    cols: spec.cols ?? 80,
    rows: spec.rows ?? 24,
    cwd: '/',
    env,
    encoding: null,
  });
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  stderr.end();
  const dataSub = term.onData((d: string | Buffer) => stdout.write(d));
  // node-pty queues every write until the pty takes it: a command that never reads its terminal would let a
  // client's input grow the agent without bound. Each chunk waits for the queue to empty (backpressure).
  const queue = (term as unknown as { _writeStream?: { _writeQueue?: unknown[] } })._writeStream?._writeQueue;
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
  let exited = false;
  const exit = new Promise<ExitStatus>((resolve) => {
    term.onExit(({ exitCode, signal }) => {
      exited = true;
      dataSub.dispose();
      stdout.end();
      resolve(signal ? { code: null, signal: signalName(signal) } : { code: exitCode });
      setImmediate(() => group.release());
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
      group.signal(signal, term.pid);
    },
    exit,
  };
}

function signalName(n: number): NodeJS.Signals | undefined {
  for (const [name, num] of Object.entries(osConstants.signals)) if (num === n) return name as NodeJS.Signals;
  return undefined;
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

/**
 * Without cgroups an exec is its main process's tree plus its process group: a process that left both (setsid
 * and a double fork) is out of reach until the session ends. Bounded: at most 20 rounds for SIGKILL.
 */
export function treeGroup(): ExecGroup {
  const members = (root: number) => {
    const table = processTable();
    const out = new Set([...table.filter((p) => p.pgrp === root).map((p) => p.pid), ...descendants(root, table)]);
    if (table.some((p) => p.pid === root)) out.add(root);
    return [...out];
  };
  return {
    procsFiles: [],
    signal(signal, mainPid) {
      if (!mainPid) return;
      for (let round = 0; round < (signal === 'SIGKILL' ? 20 : 1); round++) {
        const pids = members(mainPid);
        for (const pid of pids) {
          try {
            process.kill(pid, signal);
          } catch {}
        }
        if (pids.length === 0) return;
      }
    },
    release() {},
  };
}
