import { constants as osConstants } from 'node:os';
import { Command, Option } from 'commander';
import { OnmemosError } from '../errors.js';
import {
  DEFAULT_LIMITS,
  DEFAULT_TTL_MINUTES,
  NETWORK_MODES,
  normalizeCreateRequest,
  PROVIDER_KINDS,
  type Session,
  TEMPLATES,
} from '../session/model.js';
import { type Ctx, out, progress } from './context.js';
import { json } from './format.js';
import { choice, collectEnv, parseNamespace, parseTtlMinutes, parseUser } from './options.js';

/**
 * Creates a session. A SIGINT/SIGTERM/SIGHUP while it is being made does not leave it half-made: the signal
 * is held until the provider returns, the session is then removed, and the command fails with 128+N.
 */
export async function createSession(ctx: Ctx, input: Parameters<typeof normalizeCreateRequest>[0]): Promise<Session> {
  const req = normalizeCreateRequest(input);
  const { provider, reason } = await ctx.registry.forCreate(req);
  if (req.provider === 'auto') progress(ctx, `provider auto: ${provider.kind} (${reason})`);
  let interrupted: NodeJS.Signals | undefined;
  const handlers = SIGNALS.map((sig) => {
    const h = () => {
      interrupted ??= sig;
    };
    ctx.signals.on(sig, h);
    return () => ctx.signals.off(sig, h);
  });
  let session: Session;
  try {
    session = await provider.create(req, (m) => progress(ctx, m));
  } finally {
    for (const off of handlers) off();
  }
  if (interrupted) {
    await provider.delete(session.id).catch(() => {});
    throw new OnmemosError(`interrupted by ${interrupted}: session ${session.id} was removed`, {
      code: 'internal',
      exitCode: 128 + (osConstants.signals[interrupted] ?? 1),
    });
  }
  session.details = { provider_reason: reason, ...session.details }; // a server's own reason wins
  const unenforced = session.details.limits_not_enforced;
  if (Array.isArray(unenforced) && unenforced.length > 0) {
    ctx.stderr.write(
      `onmemos: warning: limits not enforced here: ${unenforced.join('; ')} (--require-limits refuses)\n`,
    );
  }
  return session;
}

const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

export function createCommand(ctx: () => Ctx): Command {
  return new Command('create')
    .description('create a session and print its id')
    .addOption(new Option('--provider <provider>', 'where the session runs').choices(PROVIDER_KINDS).default('auto'))
    .addOption(new Option('--template <template>', 'toolchain the session gets').choices(TEMPLATES).default('python'))
    .option('--namespace <name>', 'namespace (a DNS label)', parseNamespace)
    .option('--user <name>', 'user the session belongs to (a DNS label)', parseUser)
    .option('--ttl <minutes>', `minutes until the session is removed (default ${DEFAULT_TTL_MINUTES})`, parseTtlMinutes)
    .option('--env <KEY=VALUE>', 'environment variable for every process in the session (repeatable)', collectEnv)
    .option('--network <mode>', 'outbound (default), isolated, or host (local provider)', choice(NETWORK_MODES))
    .option('--cpu <cores>', `CPU time in cores, fractions allowed (default ${DEFAULT_LIMITS.cpus})`)
    .option(
      '--memory <size>',
      `memory, tmpfs included, e.g. 512m or 4g (default ${DEFAULT_LIMITS.memoryBytes / 2 ** 30}g)`,
    )
    .option('--pids <n>', `processes and threads (default ${DEFAULT_LIMITS.pids})`)
    .option(
      '--disk <size>',
      `writable storage: /workspace, home and /tmp (default ${DEFAULT_LIMITS.diskBytes / 2 ** 30}g)`,
    )
    .option('--require-limits', 'refuse to create rather than run with a limit this machine cannot enforce')
    .option('--nested-userns', 'allow user namespaces inside the session (rootless containers); off by default')
    .option('--json', 'print the session as JSON')
    .addHelpText(
      'after',
      `
Examples:
  onmemos create                                  # prints the new session's id
  id=$(onmemos create --provider auto --json | jq -r .id)
  onmemos create --template nodejs --namespace team-a --user alice --ttl 120 --env DEBUG=1
  onmemos create --network isolated               # no network but the session's own loopback
  onmemos create --cpu 0.5 --memory 512m --pids 256 --disk 2g --require-limits`,
    )
    .action(async (o) => {
      const c = ctx();
      const s = await createSession(c, {
        provider: o.provider,
        template: o.template,
        namespace: o.namespace ?? c.env.ONMEMOS_NAMESPACE,
        user: o.user ?? c.env.ONMEMOS_USER,
        ttl_minutes: o.ttl,
        env: o.env,
        network: o.network,
        limits: { cpu: o.cpu, memory: o.memory, pids: o.pids, disk: o.disk },
        require_limits: !!o.requireLimits,
        nested_userns: !!o.nestedUserns,
      });
      out(c, o.json ? json(s) : s.id);
    });
}
