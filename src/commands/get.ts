import { Command } from 'commander';
import { validateSessionId } from '../session/model.js';
import { type Ctx, locate, out } from './context.js';
import { json, sessionDetails } from './format.js';

export function getCommand(ctx: () => Ctx): Command {
  return new Command('get')
    .description('show one session')
    .argument('<id>', 'session id')
    .option('--json', 'print the session as JSON')
    .addHelpText(
      'after',
      '\nExamples:\n  onmemos get ws-default-user-1764027000-a1b2\n  onmemos get "$id" --json | jq -r .status',
    )
    .action(async (id: string, o) => {
      const c = ctx();
      const { session } = await locate(c, validateSessionId(id));
      out(c, o.json ? json(session) : sessionDetails(session, c.now?.()));
    });
}
