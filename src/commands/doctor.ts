/**
 * `onmemos doctor`: for each provider (and remote mode), what is configured and whether it works from here, each
 * missing piece with the command that fixes it. Reads configuration as the providers do and makes one bounded
 * request to each configured backend; makes no session. The checks are in src/doctor/.
 */
import { Command } from 'commander';
import { type Ctx, out } from './context.js';

export function doctorCommand(ctx: () => Ctx, setExit: (code: number) => void): Command {
  return new Command('doctor')
    .description('check what each provider needs: programs, credentials, settings, and whether its backend answers')
    .option('--json', 'print one JSON object: providers → checks → {status, detail, fix}')
    .addHelpText(
      'after',
      `
Checks: local (bwrap, slirp4netns and the other programs, user namespaces, /dev/net/tun, cgroups, node-pty, the
state directory); gke (kubeconfig, context, credentials, the API server); cloud_run (project and region,
credentials, the Run API); workstations (cluster and config, ssh, credentials, the workstation config); remote mode
(the server's /health, the API key). Each request waits 5 s at most. A provider that is not configured is shown
with what configures it, and is not a failure.

Exit codes: 0 when the local sandbox and every configured provider work (a WARN, such as sessions without cgroup
limits, still works); 1 when something configured is broken (a check MISSING or FAILED).

Examples:
  onmemos doctor
  onmemos doctor --json | jq '.providers.gke'
  onmemos --context staging doctor      # another kubeconfig context`,
    )
    .action(async (o: { json?: boolean }, cmd: Command) => {
      const c = ctx();
      const globals = cmd.optsWithGlobals() as { server?: string; apiKey?: string; local?: boolean; context?: string };
      const env: NodeJS.ProcessEnv = { ...c.env, ...(globals.context ? { GKE_CONTEXT: globals.context } : {}) };
      const [{ localSection }, { gkeSection }, { cloudRunSection, workstationsSection }, { remoteSection }, report] =
        await Promise.all([
          import('../doctor/local.js'),
          import('../doctor/gke.js'),
          import('../doctor/google.js'),
          import('../doctor/remote.js'),
          import('../doctor/report.js'),
        ]);
      const [local, gke, cloud_run, workstations, remote] = await Promise.all([
        localSection(env),
        gkeSection(env),
        cloudRunSection(env),
        workstationsSection(env),
        remoteSection(env, globals),
      ]);
      const r = report.summarize({ local, gke, cloud_run, workstations, remote });
      if (o.json) out(c, JSON.stringify(r, null, 2));
      else out(c, report.renderText(r, !!c.stdout.isTTY && !c.env.NO_COLOR));
      if (!r.ok) setExit(1);
    });
}
