/** What a command needs from the outside world; tests pass their own. */
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

export function out(ctx: CliIO, text: string): void {
  ctx.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
}

export function progress(ctx: CliIO, text: string): void {
  if (ctx.stderr.isTTY) ctx.stderr.write(`${text}\n`);
}

/** Finds the provider that holds a session id (the registry routes by a hint, never by asking every provider). */
export function locate(ctx: Ctx, id: string): Promise<{ provider: Provider; session: Session }> {
  return ctx.registry.locate(id);
}
