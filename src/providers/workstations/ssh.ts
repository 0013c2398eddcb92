/**
 * Commands in a workstation over SSH, with the machine's own `ssh` client and onmemos as its transport
 * (`ProxyCommand` of `onmemos tunnel --stdio ID`), as `gcloud workstations ssh` does: onmemos' own key pair (made
 * once, 0600, in the config directory), no host-key prompt (the tunnel is already authenticated end to end, as
 * gcloud judges: StrictHostKeyChecking=no, no known_hosts), never a password prompt (BatchMode). One connection
 * per workstation is kept for 60 s and reused (ControlMaster), so a second command skips the tunnel's set-up.
 *
 * sshd ends nothing when its client goes away (without a tty), so a command runs through the pid-recording wrapper
 * of src/exec/wrapper.ts, with the session's variables and the exec's own as values, never shell text; a signal
 * (Ctrl-C, --timeout, a client gone) reaches its whole tree through a second command. With a tty, ssh runs on a
 * local pty (node-pty), so a resize reaches the remote one.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { configDir } from '../../config.js';
import { UnavailableError } from '../../errors.js';
import { pipedProcess, ptyProcess } from '../../exec/child.js';
import type { ExecSpec, RemoteProcess } from '../../exec/process.js';
import { EXEC_WRAPPER, pidFile, RUN_WRAPPER, signalArgv, wrappedArgv } from '../../exec/wrapper.js';
import { binPath } from '../../paths.js';

/** The ssh client (SSH, else `ssh` on PATH). */
export function sshClient(env: NodeJS.ProcessEnv): string {
  return env.ONMEMOS_SSH || 'ssh';
}

/** POSIX sh single quoting: the value arrives as one word, whatever it holds. */
export function shq(s: string): string {
  return /^[A-Za-z0-9_/.,:=@%+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Where onmemos' SSH key is: `<config dir>/ssh/onmemos_ed25519` (and `.pub`). */
export function keyPath(env: NodeJS.ProcessEnv): string {
  return join(configDir(env), 'ssh', 'onmemos_ed25519');
}

/**
 * onmemos' SSH key (ed25519), made on first use, 0600. The pair is made in a directory aside and renamed into
 * place whole: two onmemos making it at once keep the first one's pair, never one's key with the other's `.pub`.
 */
export async function ensureKey(env: NodeJS.ProcessEnv): Promise<string> {
  const key = keyPath(env);
  const dir = dirname(key);
  if (existsSync(key) && existsSync(`${key}.pub`)) return key;
  mkdirSync(dirname(dir), { recursive: true, mode: 0o700 });
  const tmp = mkdtempSync(join(dirname(dir), '.ssh-'));
  try {
    const made = join(tmp, basename(key));
    await new Promise<void>((resolve, reject) =>
      execFile(
        'ssh-keygen',
        ['-q', '-t', 'ed25519', '-N', '', '-C', 'onmemos', '-f', made],
        { timeout: 30_000 },
        (e) =>
          e
            ? reject(new UnavailableError(`cannot make onmemos' SSH key (ssh-keygen): ${e.message.split('\n')[0]}`))
            : resolve(),
      ),
    );
    try {
      renameSync(tmp, dir); // fails when the directory is there (and not empty)
    } catch {
      if (!existsSync(key)) {
        // The directory is there without a key (made by hand): the pair goes in, public half first.
        renameSync(`${made}.pub`, `${key}.pub`);
        renameSync(made, key);
      }
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return key;
}

export interface SshTarget {
  /** The session id: what `onmemos tunnel --stdio` is given. */
  id: string;
  user: string;
  key: string;
  env: NodeJS.ProcessEnv;
  /** Seconds an idle shared connection is kept (0: none shared). */
  reuseSeconds: number;
}

/** Where the shared connections' sockets are: short (a socket path has ~100 bytes), private to this user. */
function controlDir(): string {
  const dir = join(tmpdir(), `onmemos-ssh-${process.getuid?.() ?? 'u'}`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return dir;
}

/** The ssh options every connection to a workstation uses. */
export function sshOptions(t: SshTarget): string[] {
  const proxy = [process.execPath, binPath(), 'tunnel', '--stdio', '--port', '22', t.id].map(shq).join(' ');
  const reuse =
    t.reuseSeconds > 0
      ? [
          '-o',
          'ControlMaster=auto',
          '-o',
          `ControlPath=${join(controlDir(), '%C')}`,
          '-o',
          `ControlPersist=${t.reuseSeconds}`,
        ]
      : ['-o', 'ControlMaster=no', '-o', 'ControlPath=none'];
  return [
    '-i',
    t.key,
    '-o',
    'IdentitiesOnly=yes',
    '-o',
    'BatchMode=yes',
    '-o',
    'StrictHostKeyChecking=no',
    '-o',
    'UserKnownHostsFile=/dev/null',
    '-o',
    'LogLevel=ERROR',
    '-o',
    'ServerAliveInterval=30',
    '-o',
    `ProxyCommand=${proxy}`,
    ...reuse,
    '-l',
    t.user,
    // The name only keys the shared connection (%C): ProxyCommand is the way there.
    `onmemos-${t.id}`,
  ];
}

/** Closes the shared connection to a workstation, if one is open (a stopped or removed workstation). */
export async function closeShared(t: SshTarget): Promise<void> {
  if (t.reuseSeconds <= 0 || !existsSync(t.key)) return;
  await new Promise<void>((resolve) =>
    execFile(
      sshClient(t.env),
      [...sshOptions(t).slice(0, -1), '-O', 'exit', `onmemos-${t.id}`],
      { timeout: 10_000, env: t.env },
      () => resolve(),
    ),
  );
}

/** Runs `spec` in the workstation: the wrapper's argv as one quoted command line for the remote shell. */
export async function sshExec(
  t: SshTarget,
  spec: ExecSpec,
  sessionEnv: Record<string, string>,
): Promise<RemoteProcess> {
  await ensureKey(t.env);
  const pid = pidFile();
  // Without a tty, ssh reports a command killed by a signal as its own failure (255): the shell that stays gives 128+N.
  // The default directory is the login's, the home: a workstation's persistent disk (/workspace is not kept).
  const where = { ...spec, cwd: spec.cwd ?? '.' };
  const line = wrappedArgv(where, pid, sessionEnv, spec.tty ? EXEC_WRAPPER : RUN_WRAPPER)
    .map(shq)
    .join(' ');
  const ssh = sshClient(t.env);
  const signal = (sig: NodeJS.Signals) =>
    new Promise<void>((resolve) => {
      const cmd = signalArgv(pid, sig).map(shq).join(' ');
      execFile(ssh, [...sshOptions(t), '-T', '--', cmd], { timeout: 30_000, env: t.env }, () => resolve());
    });
  if (spec.tty) {
    const pty = await import('node-pty');
    const term = pty.spawn(ssh, [...sshOptions(t), '-tt', '--', line], {
      name: spec.term || 'xterm-256color',
      cols: spec.cols ?? 80,
      rows: spec.rows ?? 24,
      env: t.env as Record<string, string>,
    });
    return ptyProcess(term, {
      kill: (sig) => {
        void signal(sig).then(() => {
          if (sig === 'SIGKILL') term.kill('SIGKILL');
        });
      },
    });
  }
  const child = spawn(ssh, [...sshOptions(t), '-T', '--', line], {
    stdio: [spec.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
    env: t.env,
  });
  return pipedProcess(child, {
    kill: (sig) => {
      void signal(sig).then(() => {
        if (sig === 'SIGKILL') child.kill('SIGKILL');
      });
    },
  });
}
