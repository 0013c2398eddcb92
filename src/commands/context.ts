/** What a command needs from the outside world; tests pass their own. */
import { writeSync } from 'node:fs';
import type { ProviderRegistry } from '../providers/index.js';
import type { Provider } from '../providers/provider.js';
import type { Session } from '../session/model.js';
import type { CliIO } from '../tty/attach.js';

export type { CliIO };

export interface CliDeps extends CliIO {
  env: NodeJS.ProcessEnv;
  registry: ProviderRegistry;
  /** Process-level signals (tests pass an EventEmitter). */
  signals: NodeJS.EventEmitter;
  now?: () => number;
}

export interface Ctx extends CliDeps {
  debug: boolean;
}

/**
 * A command's result, on stdout: written straight to the CLI's own descriptor where there is one, so that a command
 * that prints a line does not make process.stdout (1-2.5 ms). Order holds: on Linux process.stdout is synchronous
 * for files, pipes and terminals alike. What cannot be written at once (a full non-blocking pipe) goes through the
 * stream.
 */
export function out(ctx: CliIO, text: string): void {
  const line = text.endsWith('\n') ? text : `${text}\n`;
  const fd = ctx.outputFds?.stdout;
  const rest = fd === undefined ? Buffer.from(line) : writeOwn(fd, line);
  if (rest.length > 0) ctx.stdout.write(rest);
}

/** Writes `text` to `fd`; returns what is left for the stream (a reader that went away takes nothing, as there). */
function writeOwn(fd: number, text: string): Buffer {
  let buf = Buffer.from(text);
  while (buf.length > 0) {
    try {
      buf = buf.subarray(writeSync(fd, buf));
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === 'EPIPE' ? Buffer.alloc(0) : buf;
    }
  }
  return buf;
}

/** A progress line, on stderr when it is a terminal (never into a script's captured output). */
export function progress(ctx: CliIO, text: string): void {
  if (ctx.stderrIsTTY ?? ctx.stderr.isTTY) ctx.stderr.write(`${text}\n`);
}

/** Finds the provider that holds a session id (the registry routes by a hint, never by asking every provider). */
export function locate(ctx: Ctx, id: string): Promise<{ provider: Provider; session: Session }> {
  return ctx.registry.locate(id);
}
