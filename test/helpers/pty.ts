/** A program on a real pty (node-pty), for the tests that drive a terminal. */
import * as pty from 'node-pty';
import { readRestOnDestroy } from '../../src/exec/child.js';

/**
 * pty.spawn, with every piece of output passed to `onText` as it comes, including what the pty still holds when
 * node's reader ends early (src/exec/child.ts readRestOnDestroy: without it, the last line a program wrote just
 * before it exited can be missing under load).
 */
export function spawnPty(
  file: string,
  args: string[],
  opts: pty.IPtyForkOptions,
  onText: (text: string) => void,
): pty.IPty {
  const p = pty.spawn(file, args, opts);
  p.onData(onText);
  readRestOnDestroy(p, (d) => onText(d.toString('utf8')));
  return p;
}
