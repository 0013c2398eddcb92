import { Command } from 'commander';
import { NotFoundError, UserError } from '../errors.js';
import { validateSessionId } from '../session/model.js';
import { type Ctx, locate, out } from './context.js';
import { json } from './format.js';
import { listSessions } from './ls.js';
import { parseNamespace, parseUser } from './options.js';

export interface RmResult {
  removed: string[];
  missing: string[];
}

/** Removes every id it can; unknown ids are collected (an error unless --force), never half-done. */
export async function removeSessions(ctx: Ctx, ids: string[]): Promise<RmResult> {
  const res: RmResult = { removed: [], missing: [] };
  for (const id of ids) {
    try {
      const { provider } = await locate(ctx, id);
      await provider.delete(id);
      ctx.registry.forget(id);
      res.removed.push(id);
    } catch (e) {
      if (e instanceof NotFoundError) res.missing.push(id);
      else throw e;
    }
  }
  return res;
}

export function rmCommand(ctx: () => Ctx): Command {
  return new Command('rm')
    .alias('delete')
    .description('remove sessions: their processes are killed and their workspaces deleted')
    .argument('[ids...]', 'session ids')
    .option('--all', 'remove every session (narrowed by --namespace and --user)')
    .option('--namespace <name>', 'with --all: only this namespace', parseNamespace)
    .option('--user <name>', 'with --all: only this user', parseUser)
    .option('-f, --force', 'an unknown id is not an error')
    .option('--json', 'print {"removed":[...],"missing":[...]}')
    .addHelpText(
      'after',
      '\nExamples:\n  onmemos rm "$id"\n  onmemos rm --all --namespace team-a\n  onmemos rm --force "$id"   # no error if it is already gone',
    )
    .action(async (ids: string[], o) => {
      const c = ctx();
      if (o.all && ids.length > 0) throw new UserError('give session ids or --all, not both');
      if (!o.all && ids.length === 0) throw new UserError('give one or more session ids, or --all');
      if (!o.all && (o.namespace || o.user)) throw new UserError('--namespace and --user go with --all');
      for (const id of ids) validateSessionId(id);
      const targets = o.all ? (await listSessions(c, { namespace: o.namespace, user: o.user })).map((s) => s.id) : ids;
      const res = await removeSessions(c, targets);
      if (o.json) out(c, json(res));
      else if (res.removed.length) out(c, res.removed.join('\n'));
      if (res.missing.length && !o.force && !o.all) {
        throw new NotFoundError(`no such session: ${res.missing.join(', ')}`, {
          hint: 'use --force to ignore unknown ids',
        });
      }
    });
}
