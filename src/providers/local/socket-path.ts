/**
 * A unix socket's address is at most 108 bytes (sun_path, NUL included), and a session's agent socket lives at
 * `<state dir>/local/sessions/<id>/agent.sock`: a state directory under a long home or temporary path would not
 * fit. Such a socket is bound and connected through `/proc/self/fd/<fd of its directory>/<name>` instead, which
 * the kernel resolves as the same file (the directory stays open until the bind or connect is done).
 */
import { closeSync, constants, openSync } from 'node:fs';
import { basename, dirname } from 'node:path';

/** sun_path's 108 bytes, less the terminating NUL. */
export const MAX_SOCKET_PATH_BYTES = 107;

export interface SocketPath {
  /** The path to bind or connect to: `path` itself, or its short form through the open directory. */
  readonly path: string;
  /** Closes the directory once the bind or connect is done (nothing for a short path). */
  close(): void;
}

export function socketPath(path: string): SocketPath {
  if (Buffer.byteLength(path) <= MAX_SOCKET_PATH_BYTES) return { path, close() {} };
  const fd = openSync(dirname(path), constants.O_RDONLY | constants.O_DIRECTORY);
  const short = `/proc/self/fd/${fd}/${basename(path)}`;
  if (Buffer.byteLength(short) > MAX_SOCKET_PATH_BYTES) {
    closeSync(fd);
    throw new Error(`the socket name ${JSON.stringify(basename(path))} is too long`);
  }
  let open = true;
  return {
    path: short,
    close() {
      if (open) closeSync(fd);
      open = false;
    },
  };
}

/** Runs `use` with the socket's reachable path, and closes what that took once `use` has settled. */
export async function withSocketPath<T>(path: string, use: (path: string) => Promise<T>): Promise<T> {
  const p = socketPath(path);
  try {
    return await use(p.path);
  } finally {
    p.close();
  }
}
