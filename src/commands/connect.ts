import { Command } from 'commander';
import { validateSessionId } from '../session/model.js';
import { type Ctx, locate, out } from './context.js';
import { json } from './format.js';

/** How to reach a session: the provider's ConnectInfo (web URL, exec and shell WebSockets, SSH). */
export function connectCommand(ctx: () => Ctx): Command {
  return new Command('connect')
    .description('show how to reach a session: its web URL, exec WebSocket, shell, and SSH where it has it')
    .argument('<id>', 'session id')
    .option('--json', 'print the connection info as JSON')
    .addHelpText('after', '\nExamples:\n  onmemos connect "$id"\n  onmemos connect "$id" --json | jq -r .exec.url')
    .action(async (id: string, o) => {
      const c = ctx();
      const { provider } = await locate(c, validateSessionId(id));
      const info = await provider.connect(id);
      if (o.json) return out(c, json(info));
      const rows: [string, string][] = [
        ['id', info.id],
        ['provider', info.provider],
        ['status', info.status],
        ['url', info.url ?? '-'],
        ['exec', info.exec ? `${info.exec.url} (${info.exec.protocol})` : '-'],
        ['shell', info.shell ? info.shell.argv.join(' ') : '-'],
        ['json shell', info.json_shell ?? '-'],
        ['web terminal', info.web_terminal ?? '-'],
        [
          'ssh',
          info.ssh
            ? `${info.ssh.user}@${info.ssh.host}:${info.ssh.port}${info.ssh.tunnel ? ` via ${info.ssh.tunnel}` : ''}`
            : '-',
        ],
      ];
      out(c, rows.map(([k, v]) => `${`${k}:`.padEnd(14)}${v}`).join('\n'));
    });
}
