import { Command, Option } from 'commander';
import type { Session, SessionFilter } from '../session/model.js';
import { type Ctx, out } from './context.js';
import { json, sessionsTable } from './format.js';
import { parseNamespace, parseUser } from './options.js';

/** Every provider's sessions; a provider that cannot be reached is named in one stderr line each, not fatal. */
export async function listSessions(ctx: Ctx, filter: SessionFilter): Promise<Session[]> {
  const { sessions, unreachable } = await ctx.registry.list(filter);
  for (const u of unreachable) ctx.stderr.write(`onmemos: warning: ${u.provider} not listed: ${u.message}\n`);
  return sessions;
}

export function lsCommand(ctx: () => Ctx): Command {
  return new Command('ls')
    .alias('list')
    .description('list sessions')
    .option('--namespace <name>', 'only this namespace', parseNamespace)
    .option('--user <name>', 'only this user', parseUser)
    .addOption(
      new Option('--provider <provider>', 'only this provider').choices(['local', 'cloud_run', 'gke', 'workstations']),
    )
    .option('--json', 'print a JSON array')
    .addHelpText('after', "\nExamples:\n  onmemos ls\n  onmemos ls --namespace team-a --json | jq -r '.[].id'")
    .action(async (o) => {
      const c = ctx();
      const sessions = await listSessions(c, { namespace: o.namespace, user: o.user, provider: o.provider });
      if (o.json) out(c, json(sessions));
      else out(c, sessionsTable(sessions, c.now?.()));
    });
}
