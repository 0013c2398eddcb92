/**
 * `onmemos check`: the document's capability suite (test_session_backends.py) against the chosen backends. It makes
 * real sessions through the registry (in remote mode, through the server), runs each capability's probe, removes
 * everything it made (also on Ctrl-C, SIGTERM or a failure halfway), and prints the report. The probes and the
 * report are in src/check/.
 */
import { constants as osConstants } from 'node:os';
import { Command, InvalidArgumentError, Option } from 'commander';
import { BACKENDS, type Backend, TESTS, type TestName } from '../check/model.js';
import { InterruptedError } from '../errors.js';
import { type Ctx, out, progress } from './context.js';
import { parseNamespace } from './options.js';

const TEST_NAMES = TESTS;
const BACKEND_NAMES = BACKENDS;
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

function collectTest(v: string, prev: string[] = []): string[] {
  if (!(TEST_NAMES as readonly string[]).includes(v)) {
    throw new InvalidArgumentError(`unknown test; the tests are ${TEST_NAMES.join(', ')}`);
  }
  return prev.includes(v) ? prev : [...prev, v];
}

/** The longest --idle-wait: an hour (Cloud Run keeps an idle instance up to 15 minutes). */
const MAX_IDLE_WAIT_S = 3600;

function parseIdleWait(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || n < 1 || n > MAX_IDLE_WAIT_S) {
    throw new InvalidArgumentError(`a whole number of seconds from 1 to ${MAX_IDLE_WAIT_S}`);
  }
  return n;
}

export function checkCommand(ctx: () => Ctx, setExit: (code: number) => void): Command {
  return new Command('check')
    .description(
      "run the capability suite on real sessions of each backend, and report what works (the document's test_session_backends)",
    )
    .addOption(
      new Option('--backend <name>', 'the backend to check, or all (the configured ones; others are SKIPPED)')
        .choices([...BACKEND_NAMES, 'all'])
        .default('all'),
    )
    .option('--test <name>', `only this test (repeatable): ${TEST_NAMES.join(', ')}`, collectTest)
    .option(
      '--bucket <name>',
      'check bucket_mount with this bucket (mounted at /workspace/bucket; a file is written there and removed)',
    )
    .option(
      '--idle-wait <seconds>',
      'scale_to_zero: also observe the scale-down: mark the serving instance, leave the session idle this long, then check that a new instance serves it (give more than the backend keeps an idle instance: Cloud Run keeps one up to 15 minutes, so more than 900)',
      parseIdleWait,
    )
    .option('--namespace <name>', 'namespace of the sessions it makes (default check)', parseNamespace)
    .option(
      '--json',
      'print one JSON object: backends → tests → {status, checked|reason|evidence, ms}, summary, idle_wait_seconds',
    )
    .addHelpText(
      'after',
      `
Tests: one_shot_commands, persistent_storage, bucket_mount, scale_to_zero, session_duration (the slow one: it
waits out a 1-minute TTL, about 1-2 minutes), isolation_model, shell_interactive, web_terminal (through a server).
scale_to_zero reads the backend's scaling settings; with --idle-wait it also sees a new instance serve the session
after that long idle (a marker in the instance's /tmp is gone), and is FAILED if the same instance still serves.
A capability the backend does not have is SKIPPED with the reason, never PASSED. Every session made is removed,
also on Ctrl-C.

Exit codes: 0 when nothing FAILED (SKIPPED is fine); 1 when a test FAILED, or a --backend named is not
configured; 2 for a usage error (unknown backend or test); 128+N when interrupted by signal N (130 for Ctrl-C).

Examples:
  onmemos check                                   # every configured backend, every test
  onmemos check --backend gke --test one_shot_commands
  onmemos check --backend cloud_run --bucket my-bucket
  onmemos check --backend cloud_run --test scale_to_zero --idle-wait 960
  onmemos check --json | jq '.backends.local'`,
    )
    .action(
      async (
        o: {
          backend: string;
          test?: string[];
          bucket?: string;
          idleWait?: number;
          namespace?: string;
          json?: boolean;
        },
        cmd: Command,
      ) => {
        const c = ctx();
        const [{ runCheck }, report, { remoteRegistry }] = await Promise.all([
          import('../check/run.js'),
          import('../check/report.js'),
          import('../providers/index.js'),
        ]);
        const globals = cmd.optsWithGlobals() as { server?: string; apiKey?: string; local?: boolean };
        const remote = c.registry.kinds().some((k) => k.kind === 'remote');
        let server: { url: string; apiKey?: string } | undefined;
        if (remote) {
          const { remoteTarget } = await import('../config.js');
          const target = await remoteTarget(c.env, globals);
          if (target) server = { url: target.server, apiKey: target.apiKey };
        }
        const ac = new AbortController();
        const handlers = SIGNALS.map((sig) => {
          const h = () => {
            if (ac.signal.aborted) return;
            progress(c, `onmemos: ${sig}: stopping the check and removing the sessions it made`);
            ac.abort(
              new InterruptedError(`check interrupted by ${sig}: the sessions it made were removed`, {
                signalNumber: osConstants.signals[sig],
              }),
            );
          };
          c.signals.on(sig, h);
          return () => c.signals.off(sig, h);
        });
        try {
          const r = await runCheck({
            registry: c.registry,
            backends: o.backend === 'all' ? [...BACKENDS] : [o.backend as Backend],
            explicit: o.backend !== 'all',
            tests: (o.test as TestName[] | undefined) ?? [...TESTS],
            bucket: o.bucket,
            idleWaitSeconds: o.idleWait,
            server,
            namespace: o.namespace,
            reconnect: () =>
              server
                ? remoteRegistry({ server: server.url, apiKey: server.apiKey })
                : (c.registry.withEnv?.({}) ?? c.registry),
            signal: ac.signal,
            onProgress: (line) => progress(c, line),
          });
          if (o.json) out(c, JSON.stringify(report.toJson(r), null, 2));
          else out(c, report.renderText(r, !!c.stdout.isTTY && !c.env.NO_COLOR));
          if (!r.ok) setExit(1);
        } finally {
          for (const off of handlers) off();
        }
      },
    );
}
