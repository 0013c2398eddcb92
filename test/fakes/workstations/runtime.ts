/**
 * How a running workstation runs: a local sandbox (LocalProvider with a state directory of the fake's own) in a
 * network of its own, as a Cloud Workstation is a VM of its own: network mode `outbound` (slirp4netns: outbound
 * access, the host's loopback and every other workstation out of reach) or `isolated` (loopback only), never `host`.
 * Its user is `user` (uid 1000, home `/home/user`, login shell bash: the sandbox's own /etc/passwd), in which
 * Debian's real `/usr/sbin/sshd` runs as that user, not root, as one long exec (`sshd -D -e`, its log the
 * workstation's log). The host reaches a port of the workstation only through the local provider's `tunnel` (the
 * sandbox agent's `/tunnel`: a connection to 127.0.0.1:port inside the sandbox), which is what the workstation's
 * TCP tunnel (tunnel.ts) opens for each connection.
 *
 * sshd listens on 127.0.0.1:2222 inside (SSHD_PORT), and the tunnel's port 22 is that port. Not 22 itself: binding a
 * port below 1024 takes CAP_NET_BIND_SERVICE or `net.ipv4.ip_unprivileged_port_start` at or below it in the
 * network namespace, and the sandbox's user has no capability while its namespace keeps the kernel's 1024 (checked:
 * `cat /proc/sys/net/ipv4/ip_unprivileged_port_start` says 1024 in a local session, a bind to 22 is EACCES, and the
 * file is not writable from inside). Only the namespace's owner — the local provider's launcher, as root of the
 * session's outer user namespace — could lower it, and the fake does not change the local provider for that. So a
 * process in the workstation finds sshd at 127.0.0.1:2222, not :22 (on Cloud Workstations it is :22); through the
 * tunnel both 22 and 2222 reach it.
 *
 * sshd (see README, "SSH"): config, host key and the fake's authorized keys in `/run/workstation` (a tmpfs of the
 * sandbox: made anew at each start), `AllowUsers user`, public keys only, from the user's own
 * `~/.ssh/authorized_keys` and from `/run/workstation/authorized_keys`, which the fake writes. A non-root sshd can
 * run no AuthorizedKeysCommand (it must be owned by uid 0, which nothing in the sandbox is), so "any key" is not
 * possible: the fake authorizes the keys it is given.
 *
 * The home persists across stop and start as a workstation's persistent disk does: a stop stops sshd, writes the
 * home out as a tar file in the fake's directory and removes the sandbox; the next start unpacks it into the new
 * sandbox's home (a first start copies /etc/skel). Delete removes the tar file. Nothing else persists (`/workspace`,
 * `/tmp` are the sandbox's, gone at stop, as a workstation's container filesystem is).
 */
import { createReadStream, createWriteStream, existsSync, renameSync, rmSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ExitStatus, RemoteProcess } from '../../../src/exec/process.js';
import { LocalProvider } from '../../../src/providers/local/local.js';
import { LocalStore } from '../../../src/providers/local/store.js';
import { normalizeCreateRequest } from '../../../src/session/model.js';

/** The workstation's user: gcloud's default remote user, and the sandbox's passwd name (uid 1000). */
export const WORKSTATION_USER = 'user';
export const HOME = `/home/${WORKSTATION_USER}`;
export const RUN_DIR = '/run/workstation';
export const SSHD = '/usr/sbin/sshd';
/** The port sshd listens on inside the workstation (its own loopback); the tunnel's port 22 is this one. */
export const SSHD_PORT = 2222;

/** sshd's config (its port, SSHD_PORT, comes with `-p`). */
export function sshdConfig(): string {
  return [
    'ListenAddress 127.0.0.1',
    `HostKey ${RUN_DIR}/ssh_host_ed25519_key`,
    `PidFile ${RUN_DIR}/sshd.pid`,
    `AllowUsers ${WORKSTATION_USER}`,
    'PubkeyAuthentication yes',
    `AuthorizedKeysFile .ssh/authorized_keys ${RUN_DIR}/authorized_keys`,
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'UsePAM no',
    // The sandbox shows the host's root-owned /etc and /usr as nobody's: the ownership checks would refuse them.
    'StrictModes no',
    'PrintMotd no',
    'PrintLastLog no',
    'AcceptEnv LANG LC_*',
    'Subsystem sftp /usr/lib/openssh/sftp-server',
    '',
  ].join('\n');
}

/** Runs in the new sandbox: the run directory, a host key, sshd's config, the keys; then the saved home or /etc/skel. */
const SETUP = [
  'set -e',
  'umask 077',
  `mkdir -p ${RUN_DIR}`,
  `ssh-keygen -q -t ed25519 -N '' -C "$4" -f ${RUN_DIR}/ssh_host_ed25519_key`,
  `printf '%s' "$1" > ${RUN_DIR}/sshd_config`,
  `printf '%s' "$2" > ${RUN_DIR}/authorized_keys`,
  'umask 022',
  `if [ "$3" = restore ]; then tar -xpf - -C ${HOME}; else cat > /dev/null; cp -rT /etc/skel ${HOME} 2>/dev/null || true; fi`,
].join('\n');

export interface MachineSpec {
  /** The workstation id (names the sandbox). */
  id: string;
  /** A tar file of the home to restore, when one was saved. */
  homeTar?: string;
  /** The authorized_keys text sshd starts with. */
  authorizedKeys: string;
  /** Start sshd (false: the workstation runs, nothing listens on 22). */
  sshd: boolean;
  /** Each line sshd logs. */
  onLine?: (line: string) => void;
}

export interface RunningMachine {
  /** The local session the workstation runs in. */
  readonly session: string;
  /** The port sshd listens on inside the workstation (127.0.0.1 there: SSHD_PORT), when it runs. */
  readonly sshPort?: number;
  /**
   * The workstation's network namespace as a host path (`/proc/{pid}/ns/net` of the sandbox's first process), for
   * root on the host to `nsenter --net=` it (the bench's plain ssh straight to sshd); undefined when not known.
   */
  readonly netns?: string;
  /** sshd's end (never, for a machine without sshd, until stopped). */
  readonly exit: Promise<ExitStatus>;
  /**
   * A connection to `port` inside the workstation (22: sshd), or undefined when nothing listens there (or sshd does
   * not run, for 22).
   */
  connect(port: number): Promise<Duplex | undefined>;
  /** Replaces the fake's authorized keys file. */
  writeKeys(text: string): Promise<void>;
  /** Stops sshd, writes the home to `saveTo` (when given), removes the sandbox. */
  stop(saveTo?: string): Promise<void>;
}

/** A DNS label of at most `max` characters from `name`. */
function label(name: string, max: number): string {
  const l = name
    .toLowerCase()
    .replace(/[^a-z0-9-]/g, '-')
    .slice(0, Math.max(1, max))
    .replace(/^-+|-+$/g, '');
  return l || 'w';
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });

/** Runs argv in the sandbox to its end, with `input` on stdin; rejects with its stderr on a non-zero exit. */
async function run(provider: LocalProvider, id: string, argv: string[], input?: Buffer | NodeJS.ReadableStream) {
  const p = await provider.exec(id, { argv, stdin: true, cwd: '/' });
  let err = '';
  p.stdout.resume();
  p.stderr.on('data', (d) => (err += d));
  if (input === undefined) p.stdin.end();
  else if (Buffer.isBuffer(input)) p.stdin.end(input);
  else input.pipe(p.stdin);
  const { code, signal } = await p.exit;
  if (code !== 0)
    throw new Error(`${argv.slice(0, 2).join(' ')} in the workstation failed (${code ?? signal}): ${err.trim()}`);
}

export class WorkstationRuntime {
  readonly provider: LocalProvider;
  private readonly sessions = new Set<string>();

  constructor(
    private readonly opts: {
      stateDir: string;
      log: (line: string) => void;
      /** Characters the session's namespace part may have (socket paths are bounded). */
      idBudget: number;
      /** The sandbox's disk (home, /workspace, /tmp), default 1 GiB. */
      diskBytes?: number;
      /** The sandbox's network: `outbound` (default) or `isolated`, a namespace of its own either way. */
      network?: 'outbound' | 'isolated';
    },
  ) {
    this.provider = new LocalProvider({ env: { ...process.env, ONMEMOS_STATE_DIR: opts.stateDir } });
  }

  async start(spec: MachineSpec, signal?: AbortSignal): Promise<RunningMachine> {
    const request = normalizeCreateRequest({
      provider: 'local',
      namespace: label(spec.id, this.opts.idBudget - WORKSTATION_USER.length - 1),
      user: WORKSTATION_USER,
      ttl_minutes: 7 * 24 * 60,
      network: this.opts.network ?? 'outbound',
      limits: { disk: this.opts.diskBytes ?? 2 ** 30 },
    });
    const s = await this.provider.create(request, { signal });
    this.sessions.add(s.id);
    try {
      const restore = spec.homeTar !== undefined && existsSync(spec.homeTar);
      await run(
        this.provider,
        s.id,
        [
          '/bin/sh',
          '-c',
          SETUP,
          'setup',
          sshdConfig(),
          spec.authorizedKeys,
          restore ? 'restore' : 'fresh',
          `root@${spec.id}`,
        ],
        restore ? createReadStream(spec.homeTar!) : undefined,
      );
      let sshd: { proc: RemoteProcess; port: number; exit: Promise<ExitStatus> } | undefined;
      if (spec.sshd) {
        // The sandbox's network is its own and new: nothing else can hold the port.
        const port = SSHD_PORT;
        const proc = await this.provider.exec(s.id, {
          argv: [
            '/usr/bin/env',
            '-i',
            'PATH=/usr/sbin:/usr/bin:/sbin:/bin',
            SSHD,
            '-D',
            '-e',
            '-p',
            String(port),
            '-f',
            `${RUN_DIR}/sshd_config`,
          ],
          cwd: '/',
        });
        const ready = this.follow(proc, port, spec.onLine);
        const waited = new AbortController();
        const timeout = sleep(15_000, signal ? AbortSignal.any([signal, waited.signal]) : waited.signal);
        const up = await Promise.race([ready.listening, timeout.then(() => false)]);
        waited.abort();
        if (!up) {
          proc.kill('SIGKILL');
          const ended = await ready.exit;
          if (signal?.aborted) throw new Error('start cancelled');
          throw new Error(`sshd did not start (${ended.code ?? ended.signal ?? 'timed out'}): ${ready.lastLine()}`);
        }
        sshd = { proc, port, exit: ready.exit };
      }
      const proc = sshd?.proc;
      const exit = sshd?.exit ?? new Promise<ExitStatus>(() => {});
      const provider = this.provider;
      const log = this.opts.log;
      const init = new LocalStore(this.opts.stateDir).read(s.id)?.procs.init?.pid;
      let stopping: Promise<void> | undefined;
      return {
        session: s.id,
        ...(sshd ? { sshPort: sshd.port } : {}),
        ...(init ? { netns: `/proc/${init}/ns/net` } : {}),
        exit,
        connect: async (port) => {
          const inside = port === 22 ? sshd?.port : port;
          if (inside === undefined || stopping) return undefined;
          try {
            return await provider.tunnel(s.id, inside);
          } catch (e) {
            // The agent's 503 "nothing listens on port N in the session" is the usual answer; anything else is
            // the sandbox's trouble, worth a line.
            if (!/nothing listens/.test((e as Error).message))
              log(`${spec.id}: tunnel to ${port}: ${(e as Error).message}`);
            return undefined;
          }
        },
        writeKeys: (text) =>
          run(
            provider,
            s.id,
            [
              '/bin/sh',
              '-c',
              `umask 077; cat > ${RUN_DIR}/.keys.$$ && mv ${RUN_DIR}/.keys.$$ ${RUN_DIR}/authorized_keys`,
            ],
            Buffer.from(text),
          ),
        stop: (saveTo) => {
          stopping ??= (async () => {
            try {
              if (proc) {
                proc.kill('SIGTERM');
                await Promise.race([exit, new Promise((r) => setTimeout(r, 2_000))]);
              }
              if (saveTo) await this.save(s.id, saveTo);
            } finally {
              await this.remove(s.id);
            }
          })();
          return stopping;
        },
      };
    } catch (e) {
      await this.remove(s.id);
      throw e;
    }
  }

  /**
   * sshd's log, a line at a time; `listening` resolves true once it says it listens on `port` (`sshd -e` logs
   * "Server listening on 127.0.0.1 port N."), false if it ends first.
   */
  private follow(proc: RemoteProcess, port: number, onLine?: (line: string) => void) {
    let partial = '';
    let last = '';
    let up!: (v: boolean) => void;
    const listening = new Promise<boolean>((r) => (up = r));
    const line = (l: string) => {
      last = l;
      if (l.startsWith(`Server listening on 127.0.0.1 port ${port}.`)) up(true);
      onLine?.(l);
    };
    const take = (d: Buffer) => {
      const lines = (partial + d.toString('utf8')).split('\n');
      partial = lines.pop() ?? '';
      for (const l of lines) line(l);
    };
    proc.stdout.on('data', take);
    proc.stderr.on('data', take);
    const exit = proc.exit.then((s) => {
      if (partial) line(partial);
      up(false);
      return s;
    });
    return { listening, exit, lastLine: () => last };
  }

  /** The home as a tar file (written next to `file`, then renamed: a failed save keeps the previous one). */
  private async save(id: string, file: string): Promise<void> {
    const p = await this.provider.exec(id, { argv: ['tar', '-cf', '-', '-C', HOME, '.'], cwd: '/' });
    let err = '';
    p.stderr.on('data', (d) => (err += d));
    const tmp = `${file}.part`;
    await pipeline(p.stdout, createWriteStream(tmp, { mode: 0o600 }));
    const { code } = await p.exit;
    // tar exits 1 when a file changed as it read it: the archive is still good.
    if (code !== 0 && code !== 1) {
      rmSync(tmp, { force: true });
      throw new Error(`could not save the workstation's home: ${err.trim()}`);
    }
    renameSync(tmp, file);
  }

  private async remove(id: string): Promise<void> {
    this.sessions.delete(id);
    await this.provider.delete(id).catch(() => {});
  }

  /** Removes every sandbox it made (and any of its state directory a start did not get to record). */
  async close(): Promise<void> {
    await Promise.all([...this.sessions].map((id) => this.remove(id)));
    for (const s of await this.provider.list().catch(() => [])) await this.provider.delete(s.id).catch(() => {});
  }
}
