import { constants as osConstants } from 'node:os';
import { Command, Option } from 'commander';
import { InterruptedError } from '../errors.js';
import { createSession as createIn } from '../providers/index.js';
import {
  DEFAULT_LIMITS,
  DEFAULT_TTL_MINUTES,
  NETWORK_MODES,
  PROVIDER_KINDS,
  parseCreateRequest,
  type Session,
  TEMPLATES,
} from '../session/model.js';
import { type Ctx, out, progress } from './context.js';
import { json } from './format.js';
import { choice, collectEnv, parseMinutes, parseNamespace, parseTtlMinutes, parseUser } from './options.js';

/**
 * Creates a session, with a progress line per step on a terminal's stderr. Ctrl-C (or SIGTERM, SIGHUP) aborts the
 * create: whatever was made is removed, and the command fails with 128+N.
 */
export async function createSession(ctx: Ctx, input: Record<string, unknown>): Promise<Session> {
  const req = parseCreateRequest(input);
  const ac = new AbortController();
  let interrupted: NodeJS.Signals | undefined;
  const handlers = SIGNALS.map((sig) => {
    const h = () => {
      if (interrupted) return;
      interrupted = sig;
      progress(ctx, `onmemos: ${sig}: stopping the create and removing what it made`);
      ac.abort();
    };
    ctx.signals.on(sig, h);
    return () => ctx.signals.off(sig, h);
  });
  let session: Session;
  try {
    session = await createIn(ctx.registry, req, {
      signal: ac.signal,
      onProgress: (e) => progress(ctx, `${e.message}`),
    });
  } catch (e) {
    if (interrupted && e instanceof InterruptedError) {
      throw new InterruptedError(e.message, { signalNumber: osConstants.signals[interrupted] });
    }
    throw e;
  } finally {
    for (const off of handlers) off();
  }
  const unenforced = session.details.limits_not_enforced;
  if (Array.isArray(unenforced) && unenforced.length > 0) {
    ctx.stderr.write(
      `onmemos: warning: limits not enforced here: ${unenforced.join('; ')} (--require-limits refuses)\n`,
    );
  }
  return session;
}

const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/** `storage` of the API request from --bucket and the volume flags (any of which asks for a volume). */
function storageOf(o: { bucket?: string; storageSize?: string; storageClass?: string; keepStorage?: boolean }) {
  const volume =
    o.storageSize !== undefined || o.storageClass !== undefined || o.keepStorage
      ? { size: o.storageSize, storage_class: o.storageClass, keep: o.keepStorage || undefined }
      : undefined;
  if (!o.bucket && !volume) return undefined;
  return { ...(o.bucket ? { bucket: o.bucket } : {}), ...(volume ? { volume } : {}) };
}

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
    .option(
      '--cpu-always',
      'CPU all the time, so background processes keep running between execs (cloud_run: instance-based CPU, billed while the instance lives; local and gke always do)',
    )
    .option('--long-lived', "a long-lived session: auto picks gke (the document's rule)")
    .option('--needs-ssh', 'the session needs SSH: auto picks workstations')
    .option('--expected-duration <minutes>', 'how long it will be used; over 60, auto picks workstations', parseMinutes)
    .option('--bucket <name>', 'mount this bucket at /workspace/bucket (providers that mount buckets; local refuses)')
    .option(
      '--image <ref>',
      "container image to run instead of the template's (gke, cloud_run; also GKE_DEFAULT_IMAGE)",
    )
    .option('--storage-size <size>', 'a persistent volume of this size at /workspace, e.g. 10Gi (gke: a PVC)')
    .option('--storage-class <name>', "storage class of that volume (default: the cluster's)")
    .option('--keep-storage', 'keep that volume when the session is removed')
    .option('--json', 'print the session as JSON')
    .addHelpText(
      'after',
      `
Examples:
  onmemos create                                  # prints the new session's id
  id=$(onmemos create --provider auto --json | jq -r .id)
  onmemos create --provider auto --long-lived     # auto: gke when configured, else local stands in
  onmemos create --template nodejs --namespace team-a --user alice --ttl 120 --env DEBUG=1
  onmemos create --network isolated               # no network but the session's own loopback
  onmemos create --cpu 0.5 --memory 512m --pids 256 --disk 2g --require-limits
  onmemos create --provider gke --storage-size 20Gi --keep-storage --image python:3.12
  onmemos create --provider cloud_run --cpu-always  # background processes run between execs`,
    )
    .action(async (o) => {
      const c = ctx();
      const s = await createSession(c, {
        provider: o.provider,
        template: o.template,
        namespace: o.namespace ?? (c.env.ONMEMOS_NAMESPACE || undefined),
        user: o.user ?? (c.env.ONMEMOS_USER || undefined),
        ttl_minutes: o.ttl,
        env: o.env,
        network: o.network,
        cpu: o.cpu,
        memory: o.memory,
        pids: o.pids,
        disk: o.disk,
        require_limits: !!o.requireLimits,
        nested_userns: !!o.nestedUserns,
        cpu_always: !!o.cpuAlways,
        storage: storageOf(o),
        long_lived: !!o.longLived,
        needs_ssh: !!o.needsSsh,
        expected_duration_minutes: o.expectedDuration,
        image: o.image,
      });
      out(c, o.json ? json(s) : s.id);
    });
}
