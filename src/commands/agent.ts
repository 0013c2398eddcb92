/**
 * `onmemos agent`: the agent of a workspace container (src/agent/cloud-main.ts, bundled alone as
 * dist/cloud-agent.cjs). The agent parses its own options, so that bin/onmemos.js can run the bundle without the
 * CLI's; this command lists it in `onmemos --help` and hands its arguments over unparsed (its --help is the agent's:
 * cli.ts turns commander's off after copying the program's settings, which would turn it back on).
 */
import { Command } from 'commander';
import type { Ctx } from './context.js';

export function agentCommand(ctx: () => Ctx, setExit: (code: number) => void): Command {
  return new Command('agent')
    .description('serve exec and shell inside a workspace container (Cloud Run, images/)')
    .usage('[--port N] [--host ADDRESS] [--insecure-no-secret]')
    .allowUnknownOption()
    .allowExcessArguments()
    .argument('[options...]')
    .addHelpText('after', "\nRun 'onmemos agent --help' for its options, environment and routes.")
    .action(async (args: string[]) => {
      const c = ctx();
      const { agentMain } = await import('../agent/cloud-main.js');
      setExit(await agentMain(args, { env: c.env, stdout: c.stdout, stderr: c.stderr, signals: c.signals }));
    });
}
