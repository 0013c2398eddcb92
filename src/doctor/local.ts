/**
 * `onmemos doctor` for the local sandbox: the programs it runs (the provider's own list), user namespaces as bwrap
 * uses them (a real, bounded bwrap run), /dev/net/tun for slirp4netns, cgroups for the limits (the provider's own
 * detection and placement), node-pty's native module, onmemos' own native parts, and the state directory.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, join } from 'node:path';
import { loadFdPass } from '../native/fdpass.js';
import { packageRoot } from '../paths.js';
import { detectCgroups, sessionParent } from '../providers/local/cgroups.js';
import { tunOpenToAll, uidBase } from '../providers/local/host.js';
import { BIN, checkStateRoot, hostPrograms, launcherPath, ptyNative } from '../providers/local/launch.js';
import { stateDir } from '../providers/local/store.js';
import { type Check, configured, oneLine, type Section } from './report.js';

export const PROBE_MS = 5_000;

export async function localSection(env: NodeJS.ProcessEnv): Promise<Section> {
  const root = process.getuid?.() === 0;
  const checks: Check[] = [];
  for (const [path, pkg] of hostPrograms(root)) {
    checks.push(
      existsSync(path)
        ? { name: basename(path), status: 'ok', detail: path }
        : { name: basename(path), status: 'missing', detail: `${path} is missing`, fix: `apt-get install -y ${pkg}` },
    );
  }
  checks.push(await userNamespaces());
  checks.push(tun(root));
  checks.push(cgroups(env));
  checks.push(nodePty());
  checks.push(nativeParts());
  checks.push(stateDirectory(env));
  if (root) checks.push(sandboxUids(env));
  return configured(checks);
}

/** What bwrap does for every session, tried once: its own user, pid, ipc, uts, cgroup and network namespaces. */
function userNamespaces(): Promise<Check> {
  const name = 'user namespaces';
  if (!existsSync(BIN.bwrap)) {
    return Promise.resolve({
      name,
      status: 'missing',
      detail: `not tried: ${BIN.bwrap} is missing`,
      fix: 'apt-get install -y bubblewrap',
    });
  }
  const args = [
    '--unshare-user',
    '--unshare-pid',
    '--unshare-ipc',
    '--unshare-uts',
    '--unshare-cgroup',
    '--unshare-net',
    '--die-with-parent',
    '--ro-bind',
    '/',
    '/',
    '--proc',
    '/proc',
    '--dev',
    '/dev',
    '--',
    BIN.bash,
    '-c',
    'exit 0',
  ];
  return new Promise((resolve) => {
    execFile(BIN.bwrap, args, { timeout: PROBE_MS, killSignal: 'SIGKILL', env: {} }, (err, _out, stderr) => {
      if (!err) {
        return resolve({ name, status: 'ok', detail: 'bwrap made a sandbox (user, pid, network namespaces)' });
      }
      const why = (err as { killed?: boolean }).killed
        ? `bwrap did not finish within ${PROBE_MS / 1000}s`
        : String(stderr).trim().split('\n')[0] || oneLine(err);
      resolve({ name, status: 'failed', detail: `bwrap cannot make a sandbox: ${why}`, fix: usernsFix() });
    });
  });
}

/** The kernel setting that stops unprivileged user namespaces here, as a command that lifts it. */
function usernsFix(): string {
  const read = (f: string) => {
    try {
      return readFileSync(f, 'utf8').trim();
    } catch {
      return undefined;
    }
  };
  if (read('/proc/sys/kernel/apparmor_restrict_unprivileged_userns') === '1') {
    return 'sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 (or an AppArmor profile that allows bwrap userns)';
  }
  if (read('/proc/sys/kernel/unprivileged_userns_clone') === '0') return 'sysctl -w kernel.unprivileged_userns_clone=1';
  if (read('/proc/sys/user/max_user_namespaces') === '0') return 'sysctl -w user.max_user_namespaces=15000';
  return 'allow user namespaces here (in a container: run it with a seccomp profile that allows unshare and clone)';
}

/** slirp4netns (outbound networking, the default) opens /dev/net/tun as the session's own unprivileged uid. */
function tun(root: boolean): Check {
  const name = '/dev/net/tun';
  if (!existsSync('/dev/net/tun')) {
    return {
      name,
      status: 'missing',
      detail: 'no /dev/net/tun: sessions with outbound networking cannot start',
      fix: 'modprobe tun (as root), or create with --network isolated',
    };
  }
  if (!root && !tunOpenToAll()) {
    return {
      name,
      status: 'failed',
      detail: 'not open to every user (crw-rw-rw-): sessions with outbound networking cannot start',
      fix: 'chmod 0666 /dev/net/tun (as root), or create with --network isolated',
    };
  }
  return { name, status: 'ok', detail: 'present, for slirp4netns' };
}

/** Where the provider puts session cgroups (its own detection and placement), or why sessions get no limits. */
function cgroups(env: NodeJS.ProcessEnv): Check {
  const name = 'cgroups';
  const sys = detectCgroups();
  if (!sys) {
    return {
      name,
      status: 'warn',
      detail: 'no cgroup filesystem is mounted: sessions get no cpu, memory or pids limits',
      fix: 'mount -t cgroup2 none /sys/fs/cgroup (as root)',
    };
  }
  const where =
    sys.version === 2 ? `cgroup v2 at ${sys.mount}` : `cgroup v1 (${Object.keys(sys.mounts).sort().join(', ')})`;
  let base: ReturnType<typeof sessionParent>;
  try {
    base = sessionParent(sys, env, process.getuid?.() ?? 0);
  } catch (e) {
    return {
      name,
      status: 'failed',
      detail: oneLine(e),
      fix: 'set ONMEMOS_CGROUP_PARENT to an existing cgroup you can write, or unset it',
    };
  }
  if ('unavailable' in base) {
    // Sessions work without limits (the rootless provider's usual case): a warning, not a broken provider.
    return {
      name,
      status: 'warn',
      detail: `${where}, but sessions get no cpu, memory or pids limits: ${base.unavailable}`,
      fix:
        sys.version === 1
          ? 'run onmemos as root, or on a cgroup v2 system'
          : 'systemd-run --user --scope onmemos ... (a delegated cgroup), or set ONMEMOS_CGROUP_PARENT',
    };
  }
  return { name, status: 'ok', detail: `${where}; session limits go under ${base.path}` };
}

/** The PTY of `onmemos shell`: node-pty's native module, which each sandbox's agent loads. */
function nodePty(): Check {
  const name = 'node-pty';
  let path = '';
  try {
    path = ptyNative();
    createRequire(join(packageRoot(), 'package.json'))(path);
    return { name, status: 'ok', detail: `${path} loads` };
  } catch (e) {
    return {
      name,
      status: 'failed',
      detail: `node-pty's native module does not load${path ? ` (${path})` : ''}: ${oneLine(e)}`,
      fix: `cd ${packageRoot()} && npm rebuild node-pty`,
    };
  }
}

/** native/: each session's launcher, and the module that starts it (and passes an exec's descriptors). */
function nativeParts(): Check {
  const name = 'native parts';
  const fix = `cd ${packageRoot()} && npm run build (it needs make and a C compiler: apt-get install -y build-essential)`;
  let launcher: string;
  try {
    launcher = launcherPath();
  } catch (e) {
    return { name, status: 'missing', detail: oneLine(e), fix };
  }
  const native = loadFdPass();
  if (!native?.spawnDetached || !native.pipe) {
    return { name, status: 'missing', detail: 'dist/fdpass.node does not load, or predates spawnDetached', fix };
  }
  return { name, status: 'ok', detail: `${launcher} and dist/fdpass.node` };
}

/** The state directory: made if need be (as any command would), and a file written and removed in it. */
function stateDirectory(env: NodeJS.ProcessEnv): Check {
  const name = 'state directory';
  const dir = stateDir(env);
  const fix = `export ONMEMOS_STATE_DIR=DIR (a directory of your own), or make ${dir} writable by you`;
  try {
    checkStateRoot(dir);
  } catch (e) {
    return { name, status: 'failed', detail: oneLine(e), fix: 'export ONMEMOS_STATE_DIR=DIR (a path without ":")' };
  }
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const probe = join(dir, `.doctor-${process.pid}`);
    writeFileSync(probe, '', { mode: 0o600 });
    rmSync(probe, { force: true });
    return { name, status: 'ok', detail: `${dir} is writable` };
  } catch (e) {
    return { name, status: 'failed', detail: `${dir} is not writable: ${oneLine(e)}`, fix };
  }
}

/** As root each session runs as a host uid of its own, from ONMEMOS_SANDBOX_UID's range. */
function sandboxUids(env: NodeJS.ProcessEnv): Check {
  const name = 'sandbox uids';
  try {
    const base = uidBase(env);
    return { name, status: 'ok', detail: `sessions run as host uids ${base} and up, one each` };
  } catch (e) {
    return { name, status: 'failed', detail: oneLine(e), fix: 'unset ONMEMOS_SANDBOX_UID, or set it to a free range' };
  }
}
