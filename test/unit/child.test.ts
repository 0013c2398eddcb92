/** The adapters of src/exec/child.ts on a real pty (node-pty). */
import * as pty from 'node-pty';
import { describe, expect, it } from 'vitest';
import { ptyProcess } from '../../src/exec/child.js';

/** The stream's text once it has ended. */
const collect = (s: NodeJS.ReadableStream) => {
  const chunks: Buffer[] = [];
  s.on('data', (d: Buffer) => chunks.push(Buffer.from(d)));
  return new Promise<string>((r) => s.once('end', () => r(Buffer.concat(chunks).toString('latin1'))));
};

const spawn = (script: string) =>
  pty.spawn('/bin/sh', ['-c', script], { cols: 90, rows: 25, encoding: null } as unknown as pty.IPtyForkOptions);

/** Bounded: rejects after 15 s. */
async function within<T>(p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('no answer within 15 s')), 15_000);
  });
  try {
    return await Promise.race([p, hang]);
  } finally {
    clearTimeout(timer);
  }
}

describe('ptyProcess', () => {
  it('delivers every line and the exit code', async () => {
    const p = ptyProcess(spawn('printf "%s\\n" one two; stty size; exit 3'));
    const out = collect(p.stdout);
    expect(await within(p.exit)).toEqual({ code: 3 });
    expect(await within(out)).toBe('one\r\ntwo\r\n25 90\r\n');
  });

  it("keeps what the pty still holds when node's reader ends early", async () => {
    // libuv may end the reader at the terminal's hang-up while the kernel still holds the last output, and
    // node-pty ends it 200 ms after the exit: both destroy it. Here it is destroyed while `two` waits in the pty.
    const term = spawn('printf "%s\\n" one; sleep 0.1; printf "%s\\n" two; exec sleep 30');
    const p = ptyProcess(term);
    const out = collect(p.stdout);
    await within(new Promise((r) => p.stdout.once('data', r)));
    const t = Date.now();
    while (Date.now() - t < 500); // this loop is busy (bounded, 500 ms) while `two` is written
    (term as unknown as { _socket: { destroy(): void } })._socket.destroy();
    // Closing the pty hangs its terminal up: the command ends with SIGHUP.
    expect(await within(p.exit)).toEqual({ code: null, signal: 'SIGHUP' });
    expect(await within(out)).toBe('one\r\ntwo\r\n');
  });
});
