/**
 * An attacker's test for each security finding against the local sandbox: what a session (or whoever calls
 * onmemos) tries, and what must hold on the host afterwards. Every test can fail: each was run against the code
 * before the security rewrite and failed there.
 *
 * Runs as root on the real machine (bubblewrap, cgroups, the host's /proc). Everything is bounded; every session
 * goes in afterAll, and so does every host file this file makes. Host state (process tables, cgroup files,
 * /proc/meminfo, statfs) is only read.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  statfsSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { stateKey } from '../../src/providers/local/local.js';
import { BIN, type RunResult, StateDir, waitFor } from '../helpers/cli.js';

const state = new StateDir();
/** Host files and directories this file made (removed in afterAll). */
const hostTemp: string[] = [];
/** Processes this file spawned directly (killed in afterAll if still there). */
const spawned: ChildProcess[] = [];
/** State directories of tests that need their own (cleaned in afterAll even when the test failed). */
const ownStates: StateDir[] = [];

afterAll(async () => {
  for (const c of spawned) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const s of ownStates) await s.cleanup();
  await state.cleanup();
  for (const p of hostTemp) rmSync(p, { recursive: true, force: true });
}, 120_000);

const MiB = 1024 * 1024;
const rand = (n = 8) => Array.from({ length: n }, () => Math.floor(Math.random() * 36).toString(36)).join('');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const exec = (id: string, argv: string[], opts: { input?: string; timeoutMs?: number } = {}) =>
  state.run(['exec', id, '--', ...argv], opts);

/** Every process visible in the session, one command line per line (NUL bytes as spaces). */
const PS = 'for p in /proc/[0-9]*; do tr "\\0" " " < $p/cmdline 2>/dev/null; echo; done';

// ---------------------------------------------------------------------------------------------------------------
// The host as a test sees it (root): processes, cgroups, mounts.

interface HostProc {
  pid: number;
  ppid: number;
  uid: number;
  state: string;
  cmdline: string;
  environ: string;
  cgroup: string;
}

function readOr(path: string, fallback = ''): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return fallback;
  }
}

/** Every process on the host except zombies (a zombie runs nothing; the machine's init reaps them lazily). */
function hostProcs(): HostProc[] {
  const out: HostProc[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const status = readOr(`/proc/${name}/status`);
    const st = /^State:\s+(\S)/m.exec(status)?.[1];
    if (!st || st === 'Z') continue;
    out.push({
      pid: Number(name),
      ppid: Number(/^PPid:\s+(\d+)/m.exec(status)?.[1]),
      uid: Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]),
      state: st,
      cmdline: readOr(`/proc/${name}/cmdline`).replace(/\0/g, ' '),
      environ: readOr(`/proc/${name}/environ`),
      cgroup: readOr(`/proc/${name}/cgroup`),
    });
  }
  return out;
}

const hostProcessCount = () => hostProcs().length;

/** v1 controller mount points (or the v2 mount as 'unified'), from mountinfo. */
function cgroupMounts(): { version: 1 | 2; mounts: Record<string, string> } {
  const mounts: Record<string, string> = {};
  let v2 = '';
  for (const line of readOr('/proc/self/mountinfo').split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const mountPoint = line.slice(0, sep).split(' ')[4] ?? '';
    const [fstype, , opts = ''] = line.slice(sep + 3).split(' ');
    if (fstype === 'cgroup') {
      for (const c of ['pids', 'memory', 'cpu', 'freezer']) if (opts.split(',').includes(c)) mounts[c] ??= mountPoint;
    } else if (fstype === 'cgroup2' && (!v2 || mountPoint === '/sys/fs/cgroup')) v2 = mountPoint;
  }
  return Object.keys(mounts).length > 0 ? { version: 1, mounts } : { version: 2, mounts: { unified: v2 } };
}
const CG = cgroupMounts();

/** A session's cgroup directory in a hierarchy: `<hierarchy>/onmemos/<one per state directory>/<id>`. */
function sessionCgroupDir(mount: string, id: string): string {
  for (const key of readdirOr(join(mount, 'onmemos'))) {
    const dir = join(mount, 'onmemos', key, id);
    if (existsSync(dir)) return dir;
  }
  return join(mount, 'onmemos', '(none)', id);
}

/** A file of a session's own cgroup, in the hierarchy of `controller`. */
function sessionCgroupFile(id: string, controller: 'pids' | 'memory' | 'cpu', file: string): string {
  const mount = CG.version === 1 ? CG.mounts[controller] : CG.mounts.unified;
  if (!mount) throw new Error(`the ${controller} cgroup controller is not mounted`);
  return join(sessionCgroupDir(mount, id), file);
}

/** Every cgroup directory of any hierarchy under `<hierarchy>/onmemos/` (two levels) whose name contains `tag`. */
function cgroupDirsNamed(tag: string): string[] {
  const out: string[] = [];
  for (const mount of new Set(Object.values(CG.mounts))) {
    for (const key of readdirOr(join(mount, 'onmemos'))) {
      if (key.includes(tag)) out.push(join(mount, 'onmemos', key));
      for (const n of readdirOr(join(mount, 'onmemos', key)))
        if (n.includes(tag)) out.push(join(mount, 'onmemos', key, n));
    }
  }
  return out;
}

function readdirOr(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** Host processes in a session's cgroup (the launcher, outside it, is not). */
function sessionProcs(id: string): HostProc[] {
  return hostProcs().filter((p) => p.cgroup.includes(`/${id}/`) || p.cgroup.includes(`/${id}\n`));
}

/** The host uid a session's processes run as (they all share one). */
function sessionUid(id: string): number {
  const uids = new Set(sessionProcs(id).map((p) => p.uid));
  expect(uids.size, `host uids of ${id}: ${[...uids]}`).toBe(1);
  return [...uids][0]!;
}

const hostShmemBytes = () => Number(/^Shmem:\s+(\d+) kB/m.exec(readOr('/proc/meminfo'))?.[1]) * 1024;
const freeBytes = (path: string) => {
  const s = statfsSync(path);
  return s.bavail * s.bsize;
};

/** Runs bin/onmemos.js through pipes with stdout as bytes (run() decodes it as UTF-8). */
function runBinary(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: Buffer }> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: 'pipe' });
    spawned.push(c);
    const out: Buffer[] = [];
    c.stdout.on('data', (d: Buffer) => out.push(d));
    c.stderr.resume();
    c.stdin.end();
    const timer = setTimeout(() => c.kill('SIGKILL'), 30_000);
    c.on('error', reject);
    c.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out) });
    });
  });
}

/** Runs a program through pipes (no stdin), killed after 60 s. */
function runProgram(file: string, args: string[], env: NodeJS.ProcessEnv): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const c = spawn(file, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    spawned.push(c);
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d) => (stdout += d));
    c.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => c.kill('SIGKILL'), 60_000);
    c.on('error', reject);
    c.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Starts bin/onmemos.js and returns at once: the child, what it printed so far, and its end. */
function start(args: string[], env: Record<string, string>, hangGuardMs = 60_000) {
  const child = spawn(process.execPath, [BIN, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  spawned.push(child);
  const out = { stdout: '', stderr: '' };
  child.stdout!.on('data', (d) => (out.stdout += d));
  child.stderr!.on('data', (d) => (out.stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), hangGuardMs);
  const done = new Promise<RunResult>((resolve) => {
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, ...out });
    });
  });
  return { child, out, done };
}

// ---------------------------------------------------------------------------------------------------------------
// 1. No user value reaches a process outside the sandbox.

describe('1. user values stay inside the sandbox', () => {
  it('an LD_PRELOAD library built in a session, given to create --env and exec -e, never runs on the host', async () => {
    const tag = rand();
    // The constructor creates this file: in the host's /tmp when a host process loads the library, in the
    // session's own /tmp when a session process does.
    const marker = `/tmp/onmemos-preload-${tag}`;
    const hostSo = join(tmpdir(), `onmemos-preload-lib-${tag}.so`);
    hostTemp.push(marker, hostSo);
    const source =
      '#include <fcntl.h>\n#include <unistd.h>\n' +
      '__attribute__((constructor)) static void onmemos_test_init(void) {\n' +
      `  int fd = open("${marker}", O_WRONLY | O_CREAT | O_APPEND, 0644);\n` +
      '  if (fd >= 0) { (void)write(fd, "loaded\\n", 7); close(fd); }\n}\n';
    const build = 'cat > /workspace/e.c && cc -shared -fPIC -o /workspace/e.so /workspace/e.c && echo built';

    const builder = await state.create('--network', 'isolated');
    expect(await exec(builder, ['sh', '-c', build], { input: source })).toMatchObject({ code: 0, stdout: 'built\n' });
    // The attacker gets the library onto the host: through the sandbox's root where a pid is published, else by
    // any host path it can reach (here the test, as root, copies it out).
    const details = JSON.parse((await state.run(['get', builder, '--json'])).stdout).details;
    const so = await runBinary(['exec', builder, '--', 'cat', '/workspace/e.so'], state.env);
    expect(so.code).toBe(0);
    writeFileSync(hostSo, so.stdout, { mode: 0o755 });
    const hostPaths = [
      hostSo,
      ...(typeof details.pid === 'number' ? [`/proc/${details.pid}/root/workspace/e.so`] : []),
    ];
    // The host paths first, then the session's own copy: inside, ld.so skips what it cannot open and loads the rest.
    const preload = [...hostPaths, '/workspace/e.so'].join(':');

    const victim = await state.create('--network', 'isolated', '--env', `LD_PRELOAD=${preload}`);
    const install = 'base64 -d > /workspace/e.so && echo installed';
    const r1 = await exec(victim, ['sh', '-c', install], { input: so.stdout.toString('base64') });
    expect(r1.stdout).toBe('installed\n');
    const probe = `printf '%s\\n' "$LD_PRELOAD"; cat ${marker}`;
    const r2 = await exec(victim, ['sh', '-c', probe]);
    const r3 = await state.run(['exec', '-e', `LD_PRELOAD=${preload}`, builder, '--', 'sh', '-c', probe]);

    expect(existsSync(marker), `${marker} on the host: a host process ran the session's library`).toBe(false);
    // Not vacuous: inside, the variable is set as given and the library really runs.
    for (const r of [r2, r3]) {
      expect(r.code).toBe(0);
      expect(r.stdout.split('\n')[0]).toBe(preload);
      expect(r.stdout).toContain('loaded\n');
    }

    // Nothing names a host process or a host path: no pid in the session object, no state directory or other
    // host directory in the session's mount table.
    const got = JSON.parse((await state.run(['get', victim, '--json'])).stdout);
    expect(JSON.stringify(got)).not.toMatch(/"pid"/);
    const mountinfo = (await exec(victim, ['cat', '/proc/self/mountinfo'])).stdout;
    expect(mountinfo).toMatch(/ \/usr \/usr /);
    expect(mountinfo).not.toContain(state.path);
    expect(hostPathsIn(mountinfo)).toEqual([]);
  });
});

/** Host directories the session may see (read-only): /usr, /etc, and node's and Python's prefixes. */
function allowedHostRoots(): string[] {
  const prefix = (p: string) => dirname(dirname(realpathSync(p)));
  const roots = ['/usr', '/etc', prefix(process.execPath)];
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir.startsWith('/') || dir.includes('/shims') || !existsSync(join(dir, 'python3'))) continue;
    roots.push(prefix(join(dir, 'python3')));
    break;
  }
  return roots;
}

/**
 * Mounts in a session's mountinfo that show a host directory outside the allowed ones: entries on a filesystem
 * the host has mounted (same device) whose root within it is not under an allowed directory. The session's own
 * data image and its tmpfs, proc, devpts and cgroup mounts are not host directories.
 */
function hostPathsIn(mountinfo: string): string[] {
  const virtual = new Set(['proc', 'sysfs', 'tmpfs', 'devtmpfs', 'devpts', 'mqueue', 'cgroup', 'cgroup2']);
  const hostDevices = new Set(
    readOr('/proc/self/mountinfo')
      .split('\n')
      .map((l) => l.split(' ')[2]),
  );
  const allowed = allowedHostRoots();
  const bad: string[] = [];
  for (const line of mountinfo.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const [, , device = '', root = ''] = line.slice(0, sep).split(' ');
    const fstype = line.slice(sep + 3).split(' ')[0] ?? '';
    if (virtual.has(fstype) || !hostDevices.has(device)) continue;
    if (!allowed.some((a) => root === a || root.startsWith(`${a}/`))) bad.push(line);
  }
  return bad;
}

// ---------------------------------------------------------------------------------------------------------------
// 2. The caller's descriptors do not reach a session.

/**
 * Runs bin/onmemos.js with extra inherited descriptors, as a careless caller leaves them: the write end of a pipe
 * at 251 and the host's /tmp (a directory) at 9 and at 250. (node marks some inherited low descriptors
 * close-on-exec as it starts, 9 among them as seen here; 250 it passes on to what it runs.) Returns the pipe's inode.
 */
async function runWithFds(args: string[]): Promise<RunResult & { pipeIno: number }> {
  const inoFile = join(tmpdir(), `onmemos-fds-${rand()}`);
  hostTemp.push(inoFile);
  const wrapper = [
    'import os, sys',
    'r, w = os.pipe()',
    'os.dup2(w, 251, inheritable=True)',
    "d = os.open('/tmp', os.O_RDONLY | os.O_DIRECTORY)",
    'os.dup2(d, 9, inheritable=True)',
    'os.dup2(d, 250, inheritable=True)',
    "open(sys.argv[1], 'w').write(str(os.fstat(251).st_ino))",
    'os.execv(sys.argv[2], sys.argv[2:])',
  ].join('\n');
  const r = await runProgram('/usr/bin/python3', ['-c', wrapper, inoFile, process.execPath, BIN, ...args], {
    ...process.env,
    ...state.env,
  });
  return { ...r, pipeIno: Number(readFileSync(inoFile, 'utf8')) };
}

/** Lists every descriptor of every process visible in the session: [pid, fd, target, isDirectory, inode, isFifo]. */
const FD_SCAN = `
import json, os, stat
out = []
for p in os.listdir('/proc'):
    if not p.isdigit():
        continue
    try:
        fds = os.listdir('/proc/%s/fd' % p)
    except OSError:
        continue
    for n in fds:
        f = '/proc/%s/fd/%s' % (p, n)
        try:
            t = os.readlink(f)
            st = os.stat(f)
        except OSError:
            continue
        out.append([int(p), int(n), t, stat.S_ISDIR(st.st_mode), st.st_ino, stat.S_ISFIFO(st.st_mode)])
print(json.dumps({'self': os.getpid(), 'parent': os.getppid(), 'fds': out}))
`;

type FdEntry = [number, number, string, boolean, number, boolean];

/** Asserts nothing visible in the session holds the caller's descriptors (by number, kind or inode). */
function expectNoCallerFds(scan: { self: number; parent: number; fds: FdEntry[] }, pipeIno: number): void {
  const own = scan.fds.filter(([pid]) => pid === scan.self);
  const agent = scan.fds.filter(([pid]) => pid === scan.parent);
  expect(own.length, 'the scan sees its own descriptors').toBeGreaterThanOrEqual(3);
  expect(own.map(([, n]) => n).sort((a, b) => a - b)).toEqual([0, 1, 2]);
  if (scan.parent > 0) expect(agent.length, "the scan sees its parent's descriptors").toBeGreaterThan(0);
  // Descriptor numbers like 9 are the agent's own (node's eventfds and pipes): what is looked for is the caller's.
  const leaked = scan.fds.filter(([, n, , isDir, ino, isFifo]) => n === 251 || isDir || (isFifo && ino === pipeIno));
  expect(leaked).toEqual([]);
}

/** Host processes of a session (its cgroup) and its launcher (outside it) that hold the pipe or the host's /tmp. */
function hostHolders(id: string, pipeIno: number): string[] {
  const tmp = statSync('/tmp');
  const procs = hostProcs().filter(
    (p) => p.cgroup.includes(`/${id}/`) || p.environ.split('\0').includes(`ONMEMOS_SESSION=${id}`),
  );
  expect(procs.length).toBeGreaterThan(0);
  const out: string[] = [];
  for (const p of procs) {
    let fds: string[] = [];
    try {
      fds = readdirSync(`/proc/${p.pid}/fd`);
    } catch {}
    for (const n of fds) {
      try {
        const st = statSync(`/proc/${p.pid}/fd/${n}`);
        const isTmp = st.dev === tmp.dev && st.ino === tmp.ino;
        if (isTmp || (st.isFIFO() && st.ino === pipeIno)) out.push(`${p.pid} fd ${n}: ${p.cmdline.slice(0, 60)}`);
      } catch {}
    }
  }
  return out;
}

describe("2. the caller's descriptors stay out", () => {
  it('an exec started with a pipe at fd 251 and a host directory at fds 9 and 250 shows none of them inside', async () => {
    const id = await state.create('--network', 'isolated');
    const r = await runWithFds(['exec', id, '--', 'python3', '-c', FD_SCAN]);
    expect(r.code, r.stderr).toBe(0);
    expectNoCallerFds(JSON.parse(r.stdout), r.pipeIno);
    const ls = await runWithFds(['exec', id, '--', 'sh', '-c', 'ls /proc/self/fd/9/ /proc/self/fd/250/']);
    expect(ls.code).not.toBe(0);
    expect(ls.stdout).toBe('');
  });

  it('a session created with them open holds neither, inside or in its host processes', async () => {
    const r = await runWithFds(['create', '--ttl', '10']);
    expect(r.code, r.stderr).toBe(0);
    const id = r.stdout.trim();
    const scan = await exec(id, ['python3', '-c', FD_SCAN]);
    expect(scan.code, scan.stderr).toBe(0);
    expectNoCallerFds(JSON.parse(scan.stdout), r.pipeIno);
    const ls = 'ls /proc/[0-9]*/fd/9/ /proc/[0-9]*/fd/250/ 2>/dev/null';
    expect((await exec(id, ['sh', '-c', ls])).stdout).toBe('');
    expect(hostHolders(id, r.pipeIno)).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// 3. Limits.

describe('3. every session has kernel-enforced limits', () => {
  it('pids: a fork loop stops at --pids 64 inside; the host is untouched and the session answers afterwards', async () => {
    const id = await state.create('--network', 'isolated', '--pids', '64');
    const got = JSON.parse((await state.run(['get', id, '--json'])).stdout);
    expect(got.details.limits.pids).toBe(64);
    const hostBefore = hostProcessCount();
    // The loop runs in a subshell: when a fork fails (dash: "Cannot fork") only the subshell ends, the outer
    // shell reports it and becomes a sleep (exec needs no new process) until the timeout kills the exec whole.
    const loop = start(
      [
        'exec',
        '--timeout',
        '10',
        id,
        '--',
        'sh',
        '-c',
        '(for i in $(seq 200); do sleep 30 & done); echo "loop exited $?"; exec sleep 300',
      ],
      state.env,
    );
    expect(await waitFor(() => loop.out.stdout.includes('loop exited'), 20_000)).toBe(true);
    const uid = sessionUid(id);
    const ofSession = hostProcs().filter((p) => p.uid === uid);
    const sleeps = ofSession.filter((p) => p.cmdline.startsWith('sleep 30 '));
    const current = Number(readOr(sessionCgroupFile(id, 'pids', 'pids.current')));
    expect(loop.out.stdout).toMatch(/loop exited [1-9]/);
    expect(loop.out.stderr).toMatch(/Cannot fork|Resource temporarily unavailable/);
    expect(sleeps.length).toBeGreaterThan(0);
    expect(sleeps.length).toBeLessThan(64);
    expect(ofSession.length).toBeLessThanOrEqual(64);
    expect(current).toBeLessThanOrEqual(64);
    // The host can still fork, and did not gain the 200.
    expect(spawnSync('/bin/true').status).toBe(0);
    expect(hostProcessCount()).toBeLessThan(hostBefore + 100);

    const r = await loop.done;
    expect(r.code).toBe(124);
    expect(
      await waitFor(() => hostProcs().filter((p) => p.uid === uid && p.cmdline.startsWith('sleep 30')).length === 0),
    ).toBe(true);
    expect(await exec(id, ['echo', 'still here'])).toMatchObject({ code: 0, stdout: 'still here\n' });
  });

  it('memory: --memory 128m stops a 400 MB allocation (137); 30 MB works', async () => {
    const id = await state.create('--network', 'isolated', '--memory', '128m');
    expect(JSON.parse((await state.run(['get', id, '--json'])).stdout).details.limits.memory).toBe('128m');
    const alloc = (mb: number) => `b = b"x" * (${mb} << 20); print(len(b) >> 20)`;
    expect(await exec(id, ['python3', '-c', alloc(30)])).toMatchObject({ code: 0, stdout: '30\n' });
    const big = await exec(id, ['python3', '-c', alloc(400)]);
    expect(big.code).toBe(137);
    expect(big.stdout).toBe('');
    // The session survives its OOM kill.
    expect((await exec(id, ['echo', 'ok'])).stdout).toBe('ok\n');
  });

  it('tmpfs counts: /dev/shm is 64 MiB and is charged to the session, and the host gets it back at rm', async () => {
    const plain = await state.create('--network', 'isolated');
    const fill = await exec(plain, ['sh', '-c', 'head -c 100m /dev/zero > /dev/shm/fill; echo "rc=$?"']);
    expect(fill.stdout).toBe('rc=1\n');
    expect(fill.stderr).toMatch(/No space left on device/);
    expect((await exec(plain, ['sh', '-c', 'rm /dev/shm/fill && echo removed'])).stdout).toBe('removed\n');

    const shmemBefore = hostShmemBytes();
    const id = await state.create('--network', 'isolated', '--memory', '96m');
    const run = (argv: string[]) => exec(id, argv);
    const alloc = 'b = b"x" * (60 << 20); print("allocated")';
    // Control: 60 MB fits in 96m while /dev/shm is empty.
    expect(await run(['python3', '-c', alloc])).toMatchObject({ code: 0, stdout: 'allocated\n' });
    const w = await run(['sh', '-c', 'head -c 60m /dev/zero > /dev/shm/fill; echo "rc=$?"']);
    expect(w.stdout).toBe('rc=0\n');
    // The writer has exited; the 60 MB stay, in the host's shared memory and charged to the session.
    expect(hostShmemBytes() - shmemBefore).toBeGreaterThan(40 * MiB);
    // v1: total_shmem counts the subtree (the writer's exec group is below); v2: shmem is hierarchical. The kernel
    // flushes memory.stat lazily (per-cpu counters, a few seconds apart), so it is read until it shows the write.
    const shmem = () => {
      const stat = readOr(sessionCgroupFile(id, 'memory', 'memory.stat'));
      return Number(/^total_shmem (\d+)$/m.exec(stat)?.[1] ?? /^shmem (\d+)$/m.exec(stat)?.[1]);
    };
    await waitFor(() => shmem() >= 55 * MiB, 10_000);
    expect(shmem()).toBeGreaterThanOrEqual(55 * MiB);
    const again = await run(['python3', '-c', alloc]);
    expect(again.code).toBe(137);
    expect(again.stdout).toBe('');
    expect((await state.run(['rm', id])).code).toBe(0);
    expect(
      await waitFor(() => Math.abs(hostShmemBytes() - shmemBefore) <= 16 * MiB, 15_000),
      `host Shmem ${hostShmemBytes() / MiB} MiB, before ${shmemBefore / MiB} MiB`,
    ).toBe(true);
  });

  it('disk: --disk 64m stops a 100 MB write to /workspace and to /tmp; the host does not lose 100 MB', async () => {
    const id = await state.create('--network', 'isolated', '--disk', '64m');
    expect(JSON.parse((await state.run(['get', id, '--json'])).stdout).details.limits.disk).toBe('64m');
    const before = freeBytes(state.path);
    for (const dir of ['/workspace', '/tmp']) {
      const r = await exec(id, ['sh', '-c', `head -c 100m /dev/zero > ${dir}/big; echo "rc=$?"; ls -l ${dir}/big`]);
      expect(r.stdout).toMatch(/^rc=1\n/);
      expect(r.stderr).toMatch(/No space left on device/);
      const size = Number(r.stdout.split('\n')[1]?.split(/\s+/)[4]);
      expect(size).toBeLessThan(64 * MiB);
      const drop = before - freeBytes(state.path);
      expect(drop, `the host's free space dropped by ${drop / MiB} MiB`).toBeLessThan(100 * MiB);
      expect((await exec(id, ['rm', `${dir}/big`])).code).toBe(0);
    }
  });

  it("disk: each session's disk starts empty from the kept filesystem, which is used only if no one else could write it", async () => {
    const disks = join(state.path, 'local', 'disks');
    const a = await state.create('--network', 'isolated', '--disk', '64m');
    expect((await exec(a, ['sh', '-c', 'echo secret > /workspace/a; echo secret > /tmp/a'])).code).toBe(0);
    const ofThisSize = () => readdirSync(disks).filter((f) => f.startsWith(`ext4-${64 * MiB}-`));
    const kept = ofThisSize();
    expect(kept).toHaveLength(1);
    const cache = join(disks, kept[0]!);
    expect(statSync(cache).mode & 0o777).toBe(0o600);
    const empty = async (id: string) =>
      (await exec(id, ['sh', '-c', 'ls -A /workspace /tmp; stat -c "%U %a" /workspace'])).stdout;
    const fresh = '/tmp:\n\n/workspace:\nuser 755\n'; // ls sorts its arguments
    expect(await empty(await state.create('--network', 'isolated', '--disk', '64m'))).toBe(fresh);
    // A kept filesystem that another user could have written is never mounted: it is made anew.
    chmodSync(cache, 0o666);
    const c = await state.create('--network', 'isolated', '--disk', '64m');
    expect(await empty(c)).toBe(fresh);
    expect(statSync(cache).mode & 0o777).toBe(0o600);
    expect(ofThisSize()).toEqual(kept); // replaced where it was, and no file of the making left
  });

  it('disk: a large disk (100g: 68 runs of data) is copied from its kept filesystem too, not made anew', async () => {
    const disks = join(state.path, 'local', 'disks');
    const id = await state.create('--network', 'isolated', '--disk', '100g');
    const cache = join(disks, readdirSync(disks).find((f) => f.startsWith(`ext4-${100 * 1024 * MiB}-`))!);
    const uuid = (image: string) =>
      /^Filesystem UUID:\s+(\S+)$/m.exec(
        spawnSync('/usr/sbin/dumpe2fs', ['-h', image], { encoding: 'utf8', timeout: 10_000 }).stdout,
      )?.[1];
    const image = join(state.path, 'local', 'sessions', id, 'disk.img');
    expect(uuid(cache)).toMatch(/^[0-9a-f-]{36}$/);
    expect(uuid(image)).toBe(uuid(cache)); // a copy: mkfs would have drawn a new UUID
    expect((await state.run(['rm', id])).code).toBe(0);
  });

  it('disk: a kept filesystem with more data than an empty one has (a host without holes) is not copied', async () => {
    // 128 MiB written: what SEEK_DATA shows of every file on a filesystem that does not report holes.
    const disks = join(state.path, 'local', 'disks');
    const bytes = 128 * MiB;
    const probe = await state.create('--network', 'isolated', '--disk', '128m');
    expect((await state.run(['rm', probe])).code).toBe(0);
    const cache = join(disks, readdirSync(disks).find((f) => f.startsWith(`ext4-${bytes}-`))!);
    writeFileSync(cache, Buffer.alloc(bytes, 1), { mode: 0o600 });
    const id = await state.create('--network', 'isolated', '--disk', '128m');
    const r = await exec(id, ['sh', '-c', 'ls -A /workspace; df -k /workspace | tail -1']);
    expect(r.stdout).toMatch(/^\S+\s+12\d{4}\s/); // a filesystem of ~128 MiB, made in place
    const image = join(state.path, 'local', 'sessions', id, 'disk.img');
    expect(statSync(image).blocks * 512).toBeLessThan(16 * MiB); // sparse: nothing was copied
    expect(statSync(cache).size).toBe(bytes);
  });

  it('cpu: --cpu 0.25 is a 25 ms per 100 ms quota, and a busy loop gets throttled', async () => {
    const id = await state.create('--network', 'isolated', '--cpu', '0.25');
    expect(JSON.parse((await state.run(['get', id, '--json'])).stdout).details.limits.cpu).toBe(0.25);
    if (CG.version === 1) {
      expect(readOr(sessionCgroupFile(id, 'cpu', 'cpu.cfs_quota_us')).trim()).toBe('25000');
      expect(readOr(sessionCgroupFile(id, 'cpu', 'cpu.cfs_period_us')).trim()).toBe('100000');
    } else {
      expect(readOr(sessionCgroupFile(id, 'cpu', 'cpu.max')).trim()).toBe('25000 100000');
    }
    const throttled = () => Number(/^nr_throttled (\d+)$/m.exec(readOr(sessionCgroupFile(id, 'cpu', 'cpu.stat')))?.[1]);
    const before = throttled();
    const busy = 'import time\nt = time.time() + 1\nwhile time.time() < t: pass\nprint("done")';
    expect((await exec(id, ['python3', '-c', busy])).stdout).toBe('done\n');
    expect(throttled()).toBeGreaterThan(before);
  });

  it('--require-limits refuses with one line and leaves nothing when the cgroup parent does not exist', async () => {
    const own = new StateDir();
    ownStates.push(own);
    const tag = `nolimits${rand(6)}`;
    const parent = `/onmemos-missing-${rand()}`;
    const r = await own.run(['create', '--require-limits', '--namespace', tag, '--network', 'isolated'], {
      env: { ONMEMOS_CGROUP_PARENT: parent },
    });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^onmemos: .*(require-limits|cgroup)/);
    const sessions = join(own.path, 'local', 'sessions');
    expect(existsSync(sessions) ? readdirSync(sessions) : []).toEqual([]);
    expect(cgroupDirsNamed(tag)).toEqual([]);
    for (const mount of new Set(Object.values(CG.mounts))) expect(existsSync(join(mount, parent))).toBe(false);
    expect(hostProcs().filter((p) => p.environ.includes(own.path))).toEqual([]);
  });

  it('--require-limits refuses with one line and makes nothing for a user the cgroups are not delegated to', async () => {
    // nobody, rootless: cgroup v1 cannot be delegated to it, and on v2 nothing here delegates a subtree to it.
    const home = mkdtempSync(join(tmpdir(), 'onmemos-nobody-'));
    hostTemp.push(home);
    chownSync(home, 65534, 65534);
    const stateDir = join(home, 'state');
    const argv = ['create', '--require-limits', '--network', 'isolated', '--ttl', '1'];
    const r = await runProgram(
      '/usr/bin/setpriv',
      ['--reuid=65534', '--regid=65534', '--clear-groups', '--', process.execPath, BIN, ...argv],
      { PATH: '/usr/bin:/bin', HOME: home, ONMEMOS_STATE_DIR: stateDir },
    );
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^onmemos: --require-limits: cannot enforce /);
    const sessions = join(stateDir, 'local', 'sessions');
    expect(existsSync(sessions) ? readdirSync(sessions) : []).toEqual([]);
    expect(hostProcs().filter((p) => p.environ.includes(stateDir))).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// 4. Processes do not outlive their command.

describe('4. an exec ends whole', () => {
  it('--timeout kills what the command started, also what left its process group or was reparented', async () => {
    const id = await state.create('--network', 'isolated');
    const r = await state.run([
      'exec',
      '--timeout',
      '2',
      id,
      '--',
      'sh',
      '-c',
      '(setsid sleep 301 &); (sleep 302 &) ; sleep 303',
    ]);
    expect(r.code).toBe(124);
    const gone = await waitFor(async () => !/sleep 30[123]/.test((await exec(id, ['sh', '-c', PS])).stdout), 10_000);
    expect(gone, (await exec(id, ['sh', '-c', PS])).stdout).toBe(true);
  });

  it('kill -9 of onmemos exec takes the command and what it started with it', async () => {
    const id = await state.create('--network', 'isolated');
    const running = start(['exec', id, '--', 'sh', '-c', 'setsid sleep 304 & sleep 305'], state.env);
    const seen = await waitFor(async () => /sleep 304/.test((await exec(id, ['sh', '-c', PS])).stdout), 15_000, 200);
    expect(seen).toBe(true);
    running.child.kill('SIGKILL');
    expect((await running.done).signal).toBe('SIGKILL');
    const gone = await waitFor(
      async () => !/sleep 30[45]/.test((await exec(id, ['sh', '-c', PS])).stdout),
      15_000,
      200,
    );
    expect(gone, (await exec(id, ['sh', '-c', PS])).stdout).toBe(true);
  });

  it('kill -9 of onmemos serve takes the commands its clients were running', async () => {
    const id = await state.create('--network', 'isolated');
    const serve = start(['serve', '--host', '127.0.0.1', '--port', '0', '--insecure-no-auth'], {
      ...state.env,
      ONMEMOS_SERVER: '',
    });
    expect(await waitFor(() => /serving the \/v1 API on http:\/\/\S+/.test(serve.out.stderr), 15_000)).toBe(true);
    const url = /serving the \/v1 API on (http:\/\/\S+)/.exec(serve.out.stderr)![1]!;
    // A remote exec through the server, as the SDK or `onmemos --server` would run it.
    const running = start(['exec', id, '--', 'sh', '-c', 'setsid sleep 308 & sleep 309'], {
      ...state.env,
      ONMEMOS_SERVER: url,
    });
    const seen = await waitFor(async () => /sleep 308/.test((await exec(id, ['sh', '-c', PS])).stdout), 15_000, 200);
    expect(seen).toBe(true);
    serve.child.kill('SIGKILL');
    expect((await serve.done).signal).toBe('SIGKILL');
    await running.done;
    const gone = await waitFor(
      async () => !/sleep 30[89]/.test((await exec(id, ['sh', '-c', PS])).stdout),
      15_000,
      200,
    );
    expect(gone, (await exec(id, ['sh', '-c', PS])).stdout).toBe(true);
  });

  it('a fork bomb under --pids 128 --timeout 5 ends with its exec; the session and the host are fine', async () => {
    const id = await state.create('--network', 'isolated', '--pids', '128');
    // The session at rest: its agent started (create does not wait for it) and served a command.
    expect(await exec(id, ['true'])).toMatchObject({ code: 0 });
    const baseline = Number(readOr(sessionCgroupFile(id, 'pids', 'pids.current')));
    const hostBefore = hostProcessCount();
    // The classic bomb; its first shell then becomes a sleep, so the exec lasts until the timeout.
    const r = await state.run(['exec', '--timeout', '5', id, '--', 'bash', '-c', ':(){ :|:& };:; exec sleep 60'], {
      timeoutMs: 60_000,
    });
    expect(r.code).toBe(124);
    expect(await exec(id, ['echo', 'alive'])).toMatchObject({ code: 0, stdout: 'alive\n' });
    const settled = await waitFor(
      () => Number(readOr(sessionCgroupFile(id, 'pids', 'pids.current'))) <= baseline + 2,
      15_000,
    );
    expect(settled, `pids.current ${readOr(sessionCgroupFile(id, 'pids', 'pids.current'))}, baseline ${baseline}`).toBe(
      true,
    );
    const hostOk = await waitFor(() => hostProcessCount() <= hostBefore + 20, 20_000, 250);
    expect(hostOk, `host processes ${hostProcessCount()}, before ${hostBefore}`).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// 5. Races and crashes leak nothing.

/**
 * What is left on the host of a state directory: processes whose environment names it (launcher, bwrap,
 * slirp4netns, the expiry timer) or that run as a uid of its private range, or sit in a cgroup named with `tag`;
 * cgroups named with `tag`; loop devices backed by a file in it.
 */
function leftovers(stateDir: string, uidBase: number, tag: string): string[] {
  const procs = hostProcs()
    .filter(
      (p) => p.environ.includes(stateDir) || (p.uid >= uidBase && p.uid < uidBase + 65536) || p.cgroup.includes(tag),
    )
    .map((p) => `process ${p.pid} (uid ${p.uid}, ${p.state}): ${p.cmdline.slice(0, 80)}`);
  const loops: string[] = [];
  for (const dev of existsSync('/sys/block') ? readdirSync('/sys/block') : []) {
    const backing = readOr(`/sys/block/${dev}/loop/backing_file`).trim();
    if (backing.startsWith(stateDir)) loops.push(`loop device ${dev}: ${backing}`);
  }
  // The state directory's own cgroup parent goes with its last session.
  const key = stateKey(stateDir);
  return [...procs, ...[...cgroupDirsNamed(tag), ...cgroupDirsNamed(key)].map((d) => `cgroup ${d}`), ...loops];
}

/** A uid range of this test's own (ONMEMOS_SANDBOX_UID), so its processes are told apart from other sessions'. */
const privateUidBase = () => 0x50000000 + Math.floor(Math.random() * 4096) * 0x10000;

describe('5. races and crashes leak nothing', () => {
  it('16 creates racing rm --all loops: each create gives an id or one line, and nothing is left', async () => {
    const own = new StateDir();
    ownStates.push(own);
    const tag = `race${rand(6)}`;
    const uidBase = privateUidBase();
    const env = { ONMEMOS_SANDBOX_UID: String(uidBase) };
    // Two loops of rm --all, back to back, for as long as creates run: every step of a create meets a removal.
    let running = 16;
    let rounds = 0;
    const creates = Array.from({ length: 16 }, async (_, i) => {
      await sleep(i * 120);
      const network = i % 2 === 0 ? 'outbound' : 'isolated';
      const args = ['create', '--ttl', '5', '--namespace', tag, '--network', network];
      return own.run(args, { env, timeoutMs: 120_000 }).finally(() => running--);
    });
    const removeAll = async () => {
      while (running > 0) {
        await own.run(['rm', '--all'], { env, timeoutMs: 60_000 });
        rounds++;
      }
    };
    const removals = Promise.all([removeAll(), sleep(75).then(removeAll)]);
    const results = await Promise.all(creates);
    await removals;
    expect(rounds).toBeGreaterThanOrEqual(6);
    // An id, or exactly one line on stderr (no stack: a stack means an error nobody expected).
    const idLine = new RegExp(`^ws-${tag}-user-\\d+-[a-z0-9]+\\n$`);
    const bad = results.filter((r) =>
      r.code === 0
        ? !idLine.test(r.stdout)
        : r.code !== 1 || r.stderr.trim().split('\n').length !== 1 || !r.stderr.startsWith('onmemos: '),
    );
    expect(bad.map((r) => `exit ${r.code}: ${r.stdout}${r.stderr}`)).toEqual([]);
    expect((await own.run(['rm', '--all'], { env })).code).toBe(0);
    expect(JSON.parse((await own.run(['ls', '--json'], { env })).stdout)).toEqual([]);
    expect(readdirSync(join(own.path, 'local', 'sessions'))).toEqual([]);
    const clean = await waitFor(() => leftovers(own.path, uidBase, tag).length === 0, 15_000, 250);
    expect(clean ? [] : leftovers(own.path, uidBase, tag)).toEqual([]);
  }, 240_000);

  it('kill -9 of onmemos serve in the middle of a create: a fresh onmemos then leaves nothing behind', async () => {
    const own = new StateDir();
    ownStates.push(own);
    const tag = `crash${rand(6)}`;
    const uidBase = privateUidBase();
    const env = { ONMEMOS_SANDBOX_UID: String(uidBase) };
    const serve = start(['serve', '--host', '127.0.0.1', '--port', '0', '--insecure-no-auth'], {
      ONMEMOS_STATE_DIR: own.path,
      ONMEMOS_SERVER: '',
      ...env,
    });
    expect(await waitFor(() => /serving the \/v1 API on http:\/\/\S+/.test(serve.out.stderr), 15_000)).toBe(true);
    const url = /serving the \/v1 API on (http:\/\/\S+)/.exec(serve.out.stderr)![1]!;
    const request = fetch(`${url}/v1/sessions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ namespace: tag, network: 'outbound', ttl_minutes: 10 }),
      signal: AbortSignal.timeout(30_000),
    }).then(
      (res) => `HTTP ${res.status}`,
      (e: Error) => `failed: ${e.message}`,
    );
    // The middle of the create: its launcher runs (it makes the disk and starts the sandbox at once) and the create
    // has not answered yet; the sandbox itself (bwrap) is up only a few ms before the answer. Only command lines are
    // read in the loop (environments only of launchers), to be quick.
    const sandboxStarted = () =>
      readdirSync('/proc').some(
        (n) =>
          /^\d+$/.test(n) &&
          readOr(`/proc/${n}/cmdline`).startsWith('onmemos-launcher\0') &&
          readOr(`/proc/${n}/environ`).includes(own.path),
      );
    expect(await waitFor(sandboxStarted, 20_000, 1)).toBe(true);
    serve.child.kill('SIGKILL');
    expect((await serve.done).signal).toBe('SIGKILL');
    expect(await request).toMatch(/^failed/);
    // The kill may land after the create wrote its session as running (the answer was not sent yet): that session
    // is whole and listed, and goes with rm. Anything else of the create goes by itself at the next onmemos.
    const listed = async () => JSON.parse((await own.run(['ls', '--json'], { env })).stdout) as { status: string }[];
    const clean = await waitFor(
      async () => (await listed()).length > 0 || leftovers(own.path, uidBase, tag).length === 0,
      20_000,
      1000,
    );
    expect(clean).toBe(true);
    const sessions = await listed();
    expect(sessions.filter((s) => s.status !== 'running')).toEqual([]);
    if (sessions.length > 0) expect((await own.run(['rm', '--all'], { env })).code).toBe(0);
    const gone = await waitFor(() => leftovers(own.path, uidBase, tag).length === 0, 20_000, 200);
    expect(gone ? [] : leftovers(own.path, uidBase, tag)).toEqual([]);
  }, 120_000);
});

// ---------------------------------------------------------------------------------------------------------------
// 6. Sessions do not share per-uid kernel limits.

describe('6. sessions do not starve each other', () => {
  it('a session holding every inotify instance its uid may have does not stop another session', async () => {
    const max = Number(readFileSync('/proc/sys/fs/inotify/max_user_instances', 'utf8'));
    expect(max).toBeGreaterThan(0);
    const hog = await state.create('--network', 'isolated');
    const other = await state.create('--network', 'isolated');
    const hold = [
      'import ctypes, time',
      'libc = ctypes.CDLL(None, use_errno=True)',
      'fds = []',
      `while len(fds) < ${max}:`,
      '    fd = libc.inotify_init()',
      '    if fd < 0: break',
      '    fds.append(fd)',
      "open('/tmp/held.tmp', 'w').write(str(len(fds)))",
      "__import__('os').rename('/tmp/held.tmp', '/tmp/held')",
      'time.sleep(600)',
    ].join('\n');
    await exec(hog, ['sh', '-c', 'nohup python3 -c "$1" >/dev/null 2>&1 &', 'sh', hold]);
    const held = await waitFor(async () => (await exec(hog, ['cat', '/tmp/held'])).stdout, 15_000, 200);
    expect(Number(held)).toBe(max);
    const one =
      'import ctypes; libc = ctypes.CDLL(None, use_errno=True); fd = libc.inotify_init(); print(fd, ctypes.get_errno())';
    const r = await exec(other, ['python3', '-c', one]);
    const [fd, errno] = r.stdout.trim().split(' ').map(Number);
    expect(errno === 24 ? 'EMFILE' : 'ok').toBe('ok');
    expect(fd).toBeGreaterThanOrEqual(0);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// 7. Hardening.

describe('7. hardening', () => {
  it('no nested user namespace unless --nested-userns', async () => {
    const id = await state.create('--network', 'isolated');
    const denied = await exec(id, ['unshare', '-U', 'true']);
    expect(denied.code).not.toBe(0);
    const nested = await state.create('--network', 'isolated', '--nested-userns');
    expect(await exec(nested, ['unshare', '-U', 'true'])).toMatchObject({ code: 0 });
  });

  it('keyctl and add_key answer EPERM; the seccomp filter and no_new_privs are on', async () => {
    const id = await state.create('--network', 'isolated');
    const calls = [
      'import ctypes',
      'libc = ctypes.CDLL(None, use_errno=True)',
      // x86_64: add_key 248, keyctl 250; aarch64: add_key 217, keyctl 219. KEY_SPEC_SESSION_KEYRING is -3.
      "import platform; add_key, keyctl = (217, 219) if platform.machine() == 'aarch64' else (248, 250)",
      'r = libc.syscall(keyctl, 0, -3, 0); print("keyctl", r, ctypes.get_errno())',
      'ctypes.set_errno(0)',
      'r = libc.syscall(add_key, b"user", b"onmemos-test", b"v", 1, -3); print("add_key", r, ctypes.get_errno())',
    ].join('\n');
    const r = await exec(id, ['python3', '-c', calls]);
    expect(r.stdout).toBe('keyctl -1 1\nadd_key -1 1\n');
    const status = (await exec(id, ['cat', '/proc/self/status'])).stdout;
    expect(status).toMatch(/^Seccomp:\s+2$/m);
    expect(status).toMatch(/^NoNewPrivs:\s+1$/m);
  });
});
