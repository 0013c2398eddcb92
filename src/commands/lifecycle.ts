/**
 * `onmemos start`, `stop` and `extend`: the lifecycle verbs of the Provider contract. A provider without the
 * capability refuses in one line (UnsupportedError), before anything is asked of the backend.
 */
import { Command } from 'commander';
import { UnsupportedError } from '../errors.js';
import type { Provider } from '../providers/provider.js';
import { type Session, validateSessionId } from '../session/model.js';
import { type Ctx, locate, out, progress } from './context.js';
import { json, sessionDetails } from './format.js';
import { parseTtlMinutes } from './options.js';

type Verb = 'start' | 'stop' | 'extend';

/** Runs one lifecycle verb on a session, through the provider that holds it. */
export async function lifecycle(ctx: Ctx, verb: Verb, id: string, minutes?: number): Promise<Session> {
  const { provider } = await locate(ctx, validateSessionId(id));
  const fn = method(provider, verb);
  if (!fn || !provider.capabilities.lifecycle[verb]) {
    throw new UnsupportedError(`provider ${provider.kind} cannot ${verb} a session`, {
      hint: verb === 'extend' ? undefined : 'its sessions run until they are removed or expire',
    });
  }
  if (verb !== 'extend') progress(ctx, `${verb === 'start' ? 'starting' : 'stopping'} ${id}`);
  return fn(id, minutes ?? 0);
}

function method(p: Provider, verb: Verb): ((id: string, minutes: number) => Promise<Session>) | undefined {
  if (verb === 'extend') return p.extend ? (id, m) => p.extend!(id, m) : undefined;
  const f = p[verb];
  return f ? (id) => f.call(p, id) : undefined;
}

function verbCommand(ctx: () => Ctx, verb: 'start' | 'stop', description: string): Command {
  return new Command(verb)
    .description(description)
    .argument('<id>', 'session id')
    .option('--json', 'print the session as JSON')
    .addHelpText('after', `\nExamples:\n  onmemos ${verb} "$id"`)
    .action(async (id: string, o) => {
      const c = ctx();
      const s = await lifecycle(c, verb, id);
      out(c, o.json ? json(s) : sessionDetails(s, c.now?.()));
    });
}

export const startCommand = (ctx: () => Ctx) =>
  verbCommand(ctx, 'start', 'start a stopped session (providers that can stop one)');
export const stopCommand = (ctx: () => Ctx) =>
  verbCommand(ctx, 'stop', 'stop a session, keeping its workspace, until start (providers that can stop)');

export function extendCommand(ctx: () => Ctx): Command {
  return new Command('extend')
    .description("move a session's expiry: it is removed this many minutes from now")
    .argument('<id>', 'session id')
    .requiredOption('--ttl <minutes>', 'minutes from now until the session is removed', parseTtlMinutes)
    .option('--json', 'print the session as JSON')
    .addHelpText('after', '\nExamples:\n  onmemos extend "$id" --ttl 120      # removed two hours from now')
    .action(async (id: string, o) => {
      const c = ctx();
      const s = await lifecycle(c, 'extend', id, o.ttl);
      out(c, o.json ? json(s) : `${s.id} expires at ${s.expires_at}`);
    });
}
