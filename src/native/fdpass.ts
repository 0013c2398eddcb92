/**
 * The fdpass native module (native/fdpass.c): descriptors over a unix socket (SCM_RIGHTS). The local provider's
 * exec passes the caller's stdout/stderr pipe to the session's agent with it, so that the command writes there
 * itself (no copy through onmemos). An optimisation only: where the module is missing or does not load, every
 * exec is relayed over the WebSocket as before, so nothing here throws for a missing module. It also starts
 * `onmemos rm`'s detached remover (spawnDetached).
 */
import { accessSync, constants, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { packageRoot } from '../paths.js';

/** The output streams a local exec may pass, in the order their descriptors travel. */
export type OutputStream = 'stdout' | 'stderr';
const OUTPUT_STREAMS: OutputStream[] = ['stdout', 'stderr'];
/** Their bits in the byte the descriptors come with (native/fdexec.c reads the same). */
const OUTPUT_BITS: Record<OutputStream, number> = { stdout: 1, stderr: 2 };

/** The byte that says which streams' descriptors follow (in OUTPUT_STREAMS order). */
export function preambleByte(streams: OutputStream[]): number {
  return streams.reduce((byte, s) => byte | OUTPUT_BITS[s], 0);
}

/** The streams a byte names, in the order their descriptors come; undefined for a byte with any other bit. */
export function preambleStreams(byte: number): OutputStream[] | undefined {
  if (byte & ~(OUTPUT_BITS.stdout | OUTPUT_BITS.stderr)) return undefined;
  return OUTPUT_STREAMS.filter((s) => byte & OUTPUT_BITS[s]);
}

/** The descriptor of a net Socket's or Server's libuv handle (node exposes no API for it), or undefined. */
export function handleFd(o: object | null | undefined): number | undefined {
  const fd = (o as { _handle?: { fd?: unknown } } | null | undefined)?._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

export interface Received {
  /** The data byte the descriptors came with. */
  byte: number;
  /** The descriptors, close-on-exec in this process. */
  fds: number[];
}

export interface FdPass {
  /** Sends one byte with `fds` attached on the connected unix socket `socketFd` (synchronously). */
  sendFds(socketFd: number, byte: number, fds: number[]): void;
  /**
   * Waits up to `timeoutMs` (off the main thread) for one byte on `socketFd` and the descriptors that came with it.
   * Errors: code ETIMEDOUT, ECONNRESET (the peer closed first), EPROTO (more descriptors than fit: none are kept).
   */
  recvFds(socketFd: number, timeoutMs: number, cb: (err: NodeJS.ErrnoException | null, r?: Received) => void): void;
  /** Whether `fd` is a FIFO (a pipe) open for writing; if so it is made blocking, as a command expects its output. */
  outputFifo(fd: number): boolean;
  /** Sets close-on-exec on `fd`; false if that failed. */
  closeOnExec(fd: number): boolean;
  /**
   * Starts `file` (argv[0] included in `argv`) in a session of its own with `fds[i]` as its descriptor i (-1 or
   * none: /dev/null for 0-2, nothing above), every signal at its default and no other descriptor, and returns its
   * pid (posix_spawn: node's child_process costs a process that has not loaded it ~4 ms). Nothing waits for it
   * (it is reaped once this process has exited). Throws when it cannot be started. Absent from a module built
   * before it was, as is pipe.
   */
  spawnDetached?(file: string, argv: string[], env: string[], fds: number[]): number;
  /** A pipe: [read end, write end], both close-on-exec. */
  pipe?(): [number, number];
}

/** The module's file name, next to dist/agent.cjs and dist/cli.cjs (scripts/build.mjs copies it there). */
export const FDPASS_NODE = 'fdpass.node';

/** Where the module may be: next to the running bundle (dist/), or where node-gyp built it. */
export function fdpassCandidates(): string[] {
  const root = packageRoot();
  return [join(root, 'dist', FDPASS_NODE), join(root, 'build', 'Release', FDPASS_NODE)];
}

/** fdexec (native/fdexec.c): the warm start's last step for an exec that passed descriptors (src/agent/warm.ts). */
export const FDEXEC = 'fdexec';

/** fdexec's path, next to the module that loads (dist/ or build/Release/), or undefined. */
export function fdexecPath(): string | undefined {
  const node = fdpassPath();
  if (!node) return undefined;
  const p = join(dirname(node), FDEXEC);
  try {
    accessSync(p, constants.X_OK);
    return p;
  } catch {
    return undefined;
  }
}

const loaded = new Map<string, FdPass | undefined>();

/** The module at the first of `paths` that loads, or undefined (never throws). */
export function loadFdPass(paths: string[] = fdpassCandidates()): FdPass | undefined {
  const key = paths.join('\0');
  if (loaded.has(key)) return loaded.get(key);
  let mod: FdPass | undefined;
  for (const p of paths) {
    if (!existsSync(p)) continue;
    try {
      const m = { exports: {} as Partial<FdPass> };
      process.dlopen(m, p);
      const e = m.exports;
      if (
        typeof e.sendFds === 'function' &&
        typeof e.recvFds === 'function' &&
        typeof e.outputFifo === 'function' &&
        typeof e.closeOnExec === 'function'
      ) {
        mod = e as FdPass;
        break;
      }
    } catch {}
  }
  loaded.set(key, mod);
  return mod;
}

/** The path of the module that loads (for the local provider, which passes that file into each sandbox). */
export function fdpassPath(): string | undefined {
  for (const p of fdpassCandidates()) if (loadFdPass([p])) return p;
  return undefined;
}
