/**
 * The eight probes of `onmemos check`. Each checks behaviour through the Provider contract (the path every command
 * takes), never configuration: it passes by returning what it saw, is SKIPPED by throwing Skip (with the capability
 * matrix, the provider's capabilities or a missing flag as the reason), and FAILS by throwing CheckFailure (or any
 * error) with the evidence. Every wait is bounded and ends when the run is aborted.
 */
import { randomBytes } from 'node:crypto';
import { errorFromResponse, NotFoundError } from '../errors.js';
import { exitCodeOf, type RemoteProcess } from '../exec/process.js';
import type { ProviderRegistry } from '../providers/index.js';
import type { Capabilities, Provider } from '../providers/provider.js';
import type { Session } from '../session/model.js';
import { type Backend, CheckFailure, matrixLacks, Skip, type TestName } from './model.js';

/** What a probe gets: its backend, where to make sessions, and its (bounded) abort signal. */
export interface ProbeEnv {
  backend: Backend;
  caps: Capabilities;
  registry: ProviderRegistry;
  /** Aborted on Ctrl-C/SIGTERM or when the probe's own time is up. */
  signal: AbortSignal;
  bucket?: string;
  /** Through an onmemos server (remote mode): its URL and key, for the web terminal. */
  server?: { url: string; apiKey?: string };
  /**
   * scale_to_zero: how long to leave the session idle to observe the scale-down (`--idle-wait`); without it, only
   * the backend's scaling settings are read.
   */
  idleWaitSeconds?: number;
  /** session_duration: the TTL of its session, and how long after the expiry it may take to be removed. */
  ttlMinutes: number;
  ttlGraceMs: number;
  /** A session of this backend made for this probe (removed at the end of the run, whatever happens). */
  create(fields?: Record<string, unknown>): Promise<{ session: Session; provider: Provider }>;
  /** The backend's shared session (made once, for the probes that need no session of their own). */
  main(): Promise<{ session: Session; provider: Provider }>;
  /** A new registry, as a new onmemos process has it (the "reconnect" of persistent_storage). */
  reconnect(): ProviderRegistry;
  /** Notes the step the probe is at (for the evidence when its time runs out). */
  step(what: string): void;
}

export type Probe = (e: ProbeEnv) => Promise<string>;

export interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

const token = () => randomBytes(6).toString('hex');

/** A value for evidence: quoted, and cut when long. */
export function show(v: unknown, max = 300): string {
  const s = typeof v === 'string' ? JSON.stringify(v) : (JSON.stringify(v) ?? String(v));
  return s.length > max ? `${s.slice(0, max)}…(${s.length} chars)` : s;
}

const argvText = (argv: string[]) => argv.map((a) => (/^[\w./=:-]+$/.test(a) ? a : `'${a}'`)).join(' ');

/** Resolves with p, or rejects as soon as the probe is aborted (its time is up, or the run was interrupted). */
export function guard<T>(e: Pick<ProbeEnv, 'signal'>, p: Promise<T>): Promise<T> {
  if (e.signal.aborted) return Promise.reject(e.signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(e.signal.reason);
    e.signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        e.signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (err) => {
        e.signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}

export function sleep(e: Pick<ProbeEnv, 'signal'>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  return guard(e, new Promise<void>((r) => (timer = setTimeout(r, ms)))).finally(() => clearTimeout(timer));
}

/** A process's output and exit code; killed when the probe is aborted or after guardMs. */
export async function collect(
  e: Pick<ProbeEnv, 'signal'>,
  p: RemoteProcess,
  what: string,
  o: { input?: string; guardMs?: number } = {},
): Promise<Ran> {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  p.stdout.on('data', (d: Buffer) => out.push(d));
  p.stderr.on('data', (d: Buffer) => err.push(d));
  p.stdin.on('error', () => {});
  if (o.input !== undefined) p.stdin.end(o.input);
  let timedOut = false;
  const kill = () => p.kill('SIGKILL');
  const timer = setTimeout(() => {
    timedOut = true;
    kill();
  }, o.guardMs ?? 60_000);
  e.signal.addEventListener('abort', kill, { once: true });
  try {
    const status = await guard(e, p.exit);
    const r = {
      code: exitCodeOf(status),
      stdout: Buffer.concat(out).toString(),
      stderr: Buffer.concat(err).toString(),
    };
    if (timedOut) {
      throw new CheckFailure(
        `${what} did not finish within ${(o.guardMs ?? 60_000) / 1000}s (output so far: ${show(r.stdout)})`,
      );
    }
    return r;
  } finally {
    clearTimeout(timer);
    e.signal.removeEventListener('abort', kill);
  }
}

export async function run(
  e: Pick<ProbeEnv, 'signal'>,
  provider: Provider,
  id: string,
  argv: string[],
  o: { input?: string; guardMs?: number } = {},
): Promise<Ran> {
  const p = await guard(e, provider.exec(id, { argv, stdin: o.input !== undefined }));
  return collect(e, p, argvText(argv), o);
}

const ran = (argv: string[], r: Ran) =>
  `${argvText(argv)} gave exit ${r.code}, stdout ${show(r.stdout)}, stderr ${show(r.stderr)}`;

/** Runs argv and insists on exit 0. */
async function ok(e: ProbeEnv, provider: Provider, id: string, argv: string[], input?: string): Promise<Ran> {
  const r = await run(e, provider, id, argv, { input });
  if (r.code !== 0) throw new CheckFailure(ran(argv, r));
  return r;
}

/** one_shot_commands: exit codes, stdout and stderr apart, stdin delivered up to its EOF. */
const oneShotCommands: Probe = async (e) => {
  e.step('making a session');
  const { session, provider } = await e.main();
  e.step('running sh -c "…; exit 3"');
  const argv = ['sh', '-c', 'echo to-stdout; echo to-stderr >&2; exit 3'];
  const r = await run(e, provider, session.id, argv);
  if (r.code !== 3 || r.stdout !== 'to-stdout\n' || r.stderr !== 'to-stderr\n') {
    throw new CheckFailure(`expected exit 3, stdout "to-stdout\\n", stderr "to-stderr\\n"; ${ran(argv, r)}`);
  }
  e.step('piping 100000 bytes to wc -c');
  const input = 'onmemos-check\n'.repeat(7143).slice(0, 100_000);
  const wc = await run(e, provider, session.id, ['wc', '-c'], { input });
  if (wc.code !== 0 || wc.stdout.trim() !== '100000') {
    throw new CheckFailure(`stdin: expected wc -c to count 100000 bytes and end at EOF; ${ran(['wc', '-c'], wc)}`);
  }
  e.step('running cat without stdin');
  const cat = await run(e, provider, session.id, ['cat'], { guardMs: 20_000 });
  if (cat.code !== 0 || cat.stdout !== '') {
    throw new CheckFailure(`without stdin a command reads EOF at once; ${ran(['cat'], cat)}`);
  }
  return 'exit 3 came back as 3, stdout and stderr apart, 100000 bytes of stdin to EOF (wc -c), no stdin is EOF';
};

/** persistent_storage: a file in the workspace is there for the next exec, after a reconnect, and after stop/start. */
const persistentStorage: Probe = async (e) => {
  e.step('making a session');
  const { session, provider } = await e.main();
  const t = token();
  const name = `.onmemos-check-${t}`;
  e.step('writing a file in the workspace');
  const w = await ok(e, provider, session.id, ['sh', '-c', `printf %s ${t} > ${name} && pwd`]);
  const path = `${w.stdout.trim()}/${name}`;
  const read = async (p: Provider, when: string) => {
    e.step(`reading it ${when}`);
    const r = await run(e, p, session.id, ['cat', path]);
    if (r.code !== 0 || r.stdout !== t) {
      throw new CheckFailure(`${path} was written with ${show(t)}; ${when}: ${ran(['cat', path], r)}`);
    }
  };
  await read(provider, 'in another exec');
  e.step('reconnecting (a new registry, as a new onmemos process)');
  const again = await guard(e, e.reconnect().locate(session.id));
  await read(again.provider, 'after a reconnect');
  const seen = [`${path} written in one exec, read in another and after a reconnect`];
  const caps = e.caps;
  if (caps.lifecycle.stop && caps.lifecycle.start && caps.persistentWorkspace && provider.stop && provider.start) {
    e.step('stopping the session');
    const stopped = await guard(e, provider.stop(session.id));
    if (stopped.status !== 'stopped') throw new CheckFailure(`stop answered status ${stopped.status}, not stopped`);
    e.step('starting it again');
    const started = await guard(e, provider.start(session.id));
    if (started.status !== 'running') throw new CheckFailure(`start answered status ${started.status}, not running`);
    await read(provider, 'after a stop and a start');
    seen.push('and after a stop/start');
  } else {
    seen.push(
      `(no stop/start: provider ${e.backend} ${caps.lifecycle.stop ? 'keeps no workspace across one' : 'cannot stop a session'})`,
    );
  }
  return seen.join(' ');
};

/** Where the providers that mount buckets mount them (gke, cloud_run). */
export const BUCKET_PATH = '/workspace/bucket';

/** bucket_mount: the bucket given with --bucket is mounted at /workspace/bucket; a file written there is listed. */
const bucketMount: Probe = async (e) => {
  if (!e.bucket) throw new Skip('give --bucket NAME to check that a bucket is mounted');
  if (!e.caps.storage.includes('bucket')) {
    throw new Skip(
      `provider ${e.backend} cannot mount buckets (its capabilities: storage ${e.caps.storage.join(', ') || 'none'})`,
    );
  }
  e.step(`making a session with the bucket ${e.bucket}`);
  const { session, provider } = await e.create({ storage: { bucket: e.bucket } });
  const name = `.onmemos-check-${token()}`;
  const file = `${BUCKET_PATH}/${name}`;
  e.step(`writing ${file}`);
  // The directory is not made here: a missing mount is a failure, not something to paper over.
  const argv = [
    'sh',
    '-c',
    `test -d ${BUCKET_PATH} || { echo "${BUCKET_PATH} is not there" >&2; exit 9; }; printf x > ${file} && ls -a ${BUCKET_PATH}`,
  ];
  try {
    const r = await run(e, provider, session.id, argv);
    if (r.code !== 0 || !r.stdout.split('\n').includes(name)) {
      throw new CheckFailure(`expected ${name} listed in ${BUCKET_PATH}; ${ran(argv, r)}`);
    }
  } finally {
    // Nothing of the check is left in the user's bucket.
    await run(e, provider, session.id, ['rm', '-f', file]).catch(() => {});
  }
  return `bucket ${e.bucket} mounted at ${BUCKET_PATH}: a file written there was listed (and removed)`;
};

/**
 * Where scale_to_zero marks the serving instance: /tmp is the instance's own on Cloud Run (its in-memory file
 * system, gone with the instance), where /workspace may be a Filestore share and /workspace/bucket a bucket that
 * outlive it.
 */
export const INSTANCE_MARK_DIR = '/tmp';

/**
 * scale_to_zero: the backend's own scaling settings say it scales to zero (cloud_run: minInstanceCount 0); with an
 * idle wait, the scale-down itself: the serving instance is marked (a file in /tmp, the instance's own), the session
 * is left without a request for that long, and the next command must be served by a new instance (no marker).
 */
const scaleToZero: Probe = async (e) => {
  const lacks = matrixLacks('scale_to_zero', e.backend);
  if (lacks) throw new Skip(lacks);
  e.step('making a session');
  const { session, provider } = await e.main();
  e.step("reading the service's scaling settings");
  const { session: now } = await guard(e, e.registry.locate(session.id));
  const scaling = now.details.scaling as { min_instances?: unknown; max_instances?: unknown } | undefined;
  if (!scaling || typeof scaling !== 'object') {
    throw new CheckFailure(
      `the session's details carry no scaling settings of the backend (details: ${show(Object.keys(now.details))})`,
    );
  }
  if (scaling.min_instances !== 0) {
    throw new CheckFailure(
      `the service keeps ${show(scaling.min_instances)} instances when idle (minInstanceCount), so it never scales to zero`,
    );
  }
  const settings = `the service's scaling: minInstanceCount 0, maxInstanceCount ${String(scaling.max_instances ?? 'unset')}`;
  const wait = e.idleWaitSeconds;
  if (wait === undefined) {
    return `${settings}; the scale-down itself was not observed (with --idle-wait SECONDS, longer than the backend keeps an idle instance — up to 15 minutes on Cloud Run — the probe leaves the session idle that long and checks that a new instance serves it)`;
  }
  const t = token();
  const marker = `${INSTANCE_MARK_DIR}/.onmemos-check-instance-${t}`;
  e.step(`marking the serving instance (${marker}, the instance's own)`);
  await ok(e, provider, session.id, ['sh', '-c', `printf %s ${t} > ${marker} && test "$(cat ${marker})" = ${t}`]);
  e.step(`leaving the session idle for ${wait} s (no request to it)`);
  await sleep(e, wait * 1000);
  e.step('running a command again, after the idle time');
  const argv = ['sh', '-c', `if [ -e ${marker} ]; then cat ${marker}; else echo no-marker; fi`];
  const after = await run(e, provider, session.id, argv);
  if (after.code !== 0) throw new CheckFailure(`after ${wait} s idle: ${ran(argv, after)}`);
  if (after.stdout.trim() === 'no-marker') {
    return `observed: a new instance served after ${wait} s idle (scaled to zero): ${marker}, written in the instance that served before, was gone; ${settings}`;
  }
  // The same instance: the mark is removed, so that nothing of the check is left in it.
  await run(e, provider, session.id, ['rm', '-f', marker]).catch(() => {});
  throw new CheckFailure(
    `after ${wait} s idle the same instance served: ${marker}, written in it before, was still there (${ran(argv, after)}); no scale to zero observed, though ${settings}`,
  );
};

/** session_duration: a session made with a short TTL is removed once it has expired (bounded: TTL + grace). */
const sessionDuration: Probe = async (e) => {
  e.step(`making a session with a TTL of ${e.ttlMinutes} minutes`);
  const { session, provider } = await e.create({ ttl_minutes: e.ttlMinutes });
  await ok(e, provider, session.id, ['true']);
  const expires = Date.parse(session.expires_at);
  e.step(`waiting for its expiry at ${session.expires_at}`);
  await sleep(e, Math.max(0, expires - Date.now()) + 500);
  const deadline = expires + e.ttlGraceMs;
  let last: Session | undefined;
  e.step('waiting for the backend to remove it');
  while (Date.now() < deadline) {
    try {
      last = await guard(e, provider.get(session.id));
    } catch (err) {
      if (err instanceof NotFoundError) {
        return `a session with a TTL of ${e.ttlMinutes} min was removed by the backend ${Math.round((Date.now() - expires) / 1000)}s after it expired`;
      }
      throw err;
    }
    await sleep(e, 1_000);
  }
  if (last?.status !== 'expired') {
    throw new CheckFailure(
      `${session.id} is still ${last?.status ?? 'there'} ${Math.round((Date.now() - expires) / 1000)}s after its TTL ended (${session.expires_at})`,
    );
  }
  // The backend marks it expired and leaves the removal to onmemos (whoever notices first: the server's reaper, the CLI).
  e.step('removing it as onmemos does when it notices an expired session');
  await guard(e, e.registry.reapExpired()).catch(() => []);
  await guard(e, e.registry.locate(session.id)).then(
    () => {
      throw new CheckFailure(`${session.id} expired at ${session.expires_at} and can still be found`);
    },
    (err) => {
      if (!(err instanceof NotFoundError)) throw err;
    },
  );
  return `a session with a TTL of ${e.ttlMinutes} min expired at its TTL and was removed when onmemos noticed (the backend keeps expired sessions until then)`;
};

/** Lists A's IPv4 addresses (the kernel's local routes), loopback included. */
const ADDRESSES_PY = `
import re, socket
found = set(['127.0.0.1'])
try:
    text = open('/proc/net/fib_trie').read()
    for m in re.finditer(r'\\|-- (\\d+\\.\\d+\\.\\d+\\.\\d+)\\n\\s+/32 host LOCAL', text):
        found.add(m.group(1))
except OSError:
    pass
try:
    found.add(socket.gethostbyname(socket.gethostname()))
except OSError:
    pass
print(' '.join(sorted(found)))
`;

/** Fetches http://ADDR:PORT/token for each address given; prints `ADDR reached BODY` or `ADDR no (why)`. */
const REACH_PY = `
import sys, urllib.request
port = sys.argv[1]
for a in sys.argv[2:]:
    try:
        body = urllib.request.urlopen('http://%s:%s/token' % (a, port), timeout=3).read().decode(errors='replace')
        print(a, 'reached', body)
    except Exception as e:
        print(a, 'no', '(%s)' % type(e).__name__)
`;

const procScan = (marker: string) =>
  `n=0; for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < "$f" 2>/dev/null | grep -q '^${marker} ' && n=$((n+1)); done; echo $n`;

/**
 * isolation_model: a second session B cannot see session A's files, processes, or a TCP server listening in A
 * (each checked in A first, so a pass is never a probe that saw nothing).
 */
const isolationModel: Probe = async (e) => {
  e.step('making session A');
  const a = await e.main();
  e.step('making session B');
  const b = await e.create();
  const t = token();
  const port = 20_000 + Math.floor(Math.random() * 30_000);
  const marker = `sleep ${100_000 + Math.floor(Math.random() * 800_000)}`;
  e.step('writing a marker file in A');
  const dirName = `.onmemos-check-${t}`;
  const w = await ok(e, a.provider, a.session.id, [
    'sh',
    '-c',
    `mkdir -p ${dirName} && printf %s ${t} > ${dirName}/token && cd ${dirName} && pwd`,
  ]);
  const dir = w.stdout.trim();
  e.step(`starting "${marker}" and an HTTP server on port ${port} in A`);
  // Held open as one exec, so the server and the sleep run (and are not frozen) while B looks; killed after.
  const server = await guard(
    e,
    a.provider.exec(a.session.id, {
      argv: ['sh', '-c', `${marker} & cd ${dir} && exec python3 -m http.server ${port} --bind 0.0.0.0`],
    }),
  );
  const serverOut: Buffer[] = [];
  server.stdout.on('data', (d: Buffer) => serverOut.push(d));
  server.stderr.on('data', (d: Buffer) => serverOut.push(d));
  let serverExit: string | undefined;
  void server.exit.then((s) => (serverExit = `exited ${exitCodeOf(s)}`));
  try {
    e.step('checking in A itself that the server answers and the sleep runs');
    const reachArgv = ['python3', '-c', REACH_PY, String(port), '127.0.0.1'];
    let inA: Ran | undefined;
    for (let i = 0; i < 40 && !serverExit; i++) {
      inA = await run(e, a.provider, a.session.id, reachArgv);
      if (inA.stdout.includes(`reached ${t}`)) break;
      await sleep(e, 250);
    }
    if (!inA?.stdout.includes(`reached ${t}`)) {
      throw new CheckFailure(
        `the control failed: the server in A does not answer in A itself (${serverExit ?? 'running'}; its output ${show(Buffer.concat(serverOut).toString())}; ${inA ? ran(reachArgv, inA) : ''})`,
      );
    }
    const psA = await ok(e, a.provider, a.session.id, ['sh', '-c', procScan(marker)]);
    if (psA.stdout.trim() === '0') throw new CheckFailure(`the control failed: A does not see its own "${marker}"`);
    const addrs = (await ok(e, a.provider, a.session.id, ['python3', '-c', ADDRESSES_PY])).stdout.trim().split(/\s+/);

    e.step("looking for A's file from B");
    const seeFile = await run(e, b.provider, b.session.id, ['cat', `${dir}/token`]);
    if (seeFile.code === 0 && seeFile.stdout === t) {
      throw new CheckFailure(`session B reads session A's file ${dir}/token (${show(t)})`);
    }
    e.step("looking for A's processes from B");
    const psB = await ok(e, b.provider, b.session.id, ['sh', '-c', procScan(marker)]);
    if (psB.stdout.trim() !== '0') throw new CheckFailure(`session B sees session A's process "${marker}" in /proc`);
    e.step(`connecting from B to A's addresses (${addrs.join(', ')}) on port ${port}`);
    const reachB = await run(e, b.provider, b.session.id, ['python3', '-c', REACH_PY, String(port), ...addrs]);
    const reached = reachB.stdout.split('\n').filter((l) => l.includes(`reached ${t}`));
    if (reached.length > 0) {
      throw new CheckFailure(`session B reached the server listening in session A: ${reached.join('; ')}`);
    }
    if (reachB.code !== 0)
      throw new CheckFailure(`the connection attempt from B did not run: ${ran(['python3', '…'], reachB)}`);
    return `B sees neither A's file ${dir}/token nor its "${marker}", and cannot reach A's server on port ${port} at ${addrs.join(', ')}`;
  } finally {
    server.kill('SIGKILL');
    await Promise.race([server.exit, new Promise((r) => setTimeout(r, 5_000).unref())]);
  }
};

/** shell_interactive: the login shell over the exec path with a tty, as `onmemos shell`: its size, a command, its exit code. */
const shellInteractive: Probe = async (e) => {
  if (!e.caps.tty || !e.caps.shell) {
    throw new Skip(
      `provider ${e.backend} has no interactive shell (its capabilities: tty ${e.caps.tty}, shell ${e.caps.shell})`,
    );
  }
  e.step('making a session');
  const { session, provider } = await e.main();
  e.step('asking for the shell');
  const info = await guard(e, provider.connect(session.id));
  const argv = info.shell?.argv;
  if (!argv?.length) throw new CheckFailure('connect gives no shell argv for the session');
  const t = token();
  const [cols, rows] = [97, 31];
  e.step(`running ${argvText(argv)} with a ${cols}x${rows} tty`);
  const p = await guard(e, provider.exec(session.id, { argv, tty: true, stdin: true, cols, rows, term: 'xterm' }));
  // The echo of what is typed has `$((6*7))`; only the shell's own output has 42.
  const r = await collect(e, p, `the shell ${argvText(argv)}`, {
    input: `stty size; echo shell-$((6*7))-${t}; exit 7\n`,
    guardMs: 30_000,
  });
  const out = r.stdout.replace(/\r/g, '');
  const problems: string[] = [];
  if (!new RegExp(`(?<![\\d;])${rows} ${cols}\\n`).test(out)) problems.push(`stty size is not "${rows} ${cols}"`);
  if (!out.includes(`shell-42-${t}`)) problems.push(`no output "shell-42-${t}" of the command`);
  if (r.code !== 7) problems.push(`the shell exited ${r.code}, not 7`);
  if (problems.length > 0) throw new CheckFailure(`${problems.join('; ')}; the terminal showed ${show(out, 500)}`);
  return `a ${cols}x${rows} tty (stty size), a command's output, and the shell's exit code 7`;
};

/** web_terminal: the server's terminal page for the session answers, and its exec WebSocket (tty) runs a command. */
const webTerminal: Probe = async (e) => {
  if (!e.server) {
    throw new Skip('no server serves a web terminal in local mode; run check through onmemos serve (--server URL)');
  }
  e.step('making a session');
  const { session, provider } = await e.main();
  const info = await guard(e, provider.connect(session.id));
  if (!info.web_terminal) throw new CheckFailure('the server gives the session no web_terminal');
  e.step(`GET ${info.web_terminal}`);
  const res = await guard(e, fetch(info.web_terminal, { signal: e.signal }));
  const body = await guard(e, res.text());
  if (res.status !== 200 || !/text\/html/.test(res.headers.get('content-type') ?? '')) {
    throw new CheckFailure(
      `GET ${info.web_terminal} answered ${res.status} ${res.headers.get('content-type') ?? ''}: ${show(body, 200)}`,
    );
  }
  if (!info.exec) throw new CheckFailure('the server gives the session no exec WebSocket for its terminal');
  const t = token();
  e.step(`running a command over ${info.exec.url} with tty=1`);
  const { openExec } = await import('../exec/client.js');
  const p = await guard(
    e,
    openExec(
      { argv: ['sh', '-c', `echo web-$((6*7))-${t}`], tty: true, stdin: true, cols: 80, rows: 24, term: 'xterm' },
      {
        url: info.exec.url,
        headers: e.server.apiKey ? { 'x-api-key': e.server.apiKey } : {},
        peer: `the onmemos server at ${e.server.url}`,
        refused: errorFromResponse,
      },
    ),
  );
  const r = await collect(e, p, 'the web terminal exec', { guardMs: 30_000 });
  if (r.code !== 0 || !r.stdout.includes(`web-42-${t}`)) {
    throw new CheckFailure(`the terminal's exec WebSocket with tty=1 gave exit ${r.code}, output ${show(r.stdout)}`);
  }
  return `the page ${info.web_terminal} answers 200, and its exec WebSocket (tty) ran a command`;
};

export const PROBES: Record<TestName, Probe> = {
  one_shot_commands: oneShotCommands,
  persistent_storage: persistentStorage,
  bucket_mount: bucketMount,
  scale_to_zero: scaleToZero,
  session_duration: sessionDuration,
  isolation_model: isolationModel,
  shell_interactive: shellInteractive,
  web_terminal: webTerminal,
};
