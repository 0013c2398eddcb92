/**
 * The seccomp filter applied for real: bubblewrap installs it (`--seccomp 3`) in a sandbox shaped like a
 * session's (new user and pid namespaces, uid 1000, no capabilities). Where a call would fail without the
 * filter too, the same command also runs unfiltered (or with CAP_SYS_ADMIN) as a control, so each assertion
 * shows the filter's own effect.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { seccompFilter } from '../../src/providers/local/seccomp.js';

interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

interface SandboxOptions {
  /** The program bwrap reads on fd 3; none: no --seccomp (a control run). */
  filter?: Buffer;
  /** uid 0 with CAP_SYS_ADMIN inside the sandbox instead of uid 1000 with nothing. */
  admin?: boolean;
}

const STRICT = seccompFilter();
const USERNS = seccompFilter({ allowUserNamespaces: true });

/** Runs argv in a bwrap sandbox, killed (with everything in it: --die-with-parent) after 30 s. */
function sandbox(argv: string[], opts: SandboxOptions = {}): Promise<Result> {
  const who = opts.admin
    ? ['--uid', '0', '--gid', '0', '--cap-add', 'CAP_SYS_ADMIN']
    : ['--uid', '1000', '--gid', '1000'];
  const args = [
    '--die-with-parent',
    '--unshare-user',
    ...who,
    '--unshare-pid',
    '--ro-bind',
    '/usr',
    '/usr',
    '--symlink',
    'usr/bin',
    '/bin',
    '--symlink',
    'usr/lib',
    '/lib',
    '--symlink',
    'usr/lib64',
    '/lib64',
    '--proc',
    '/proc',
    '--dev',
    '/dev',
    '--tmpfs',
    '/tmp',
    ...(opts.filter ? ['--seccomp', '3'] : []),
    '--',
    ...argv,
  ];
  return new Promise((resolve, reject) => {
    const child = spawn('/usr/bin/bwrap', args, {
      // Nothing of the test runner's environment leaks in (NODE_OPTIONS and the like).
      env: { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8' },
      stdio: ['ignore', 'pipe', 'pipe', opts.filter ? 'pipe' : 'ignore'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on('data', (d: Buffer) => out.push(d));
    child.stderr?.on('data', (d: Buffer) => err.push(d));
    // bwrap reads the program to EOF before it sets anything up.
    const fd3 = child.stdio[3];
    if (opts.filter && fd3 && 'end' in fd3) {
      fd3.on('error', () => {});
      fd3.end(opts.filter);
    }
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
    });
  });
}

/** Python calling keyctl and bpf directly (no libc wrappers exist), printing "name result errno" lines. */
const PROBE = `
import ctypes, platform
nrs = {'x86_64': {'keyctl': 250, 'bpf': 321}, 'aarch64': {'keyctl': 219, 'bpf': 280}}[platform.machine()]
libc = ctypes.CDLL(None, use_errno=True)
calls = {'keyctl': (0, -3, 0), 'bpf': (9999, 0, 0)}  # KEYCTL_GET_KEYRING_ID of the session keyring; a bad bpf cmd
for name, args in calls.items():
    ctypes.set_errno(0)
    r = libc.syscall(nrs[name], *args)
    print(name, r, ctypes.get_errno())
`;

function probe(stdout: string): Record<string, { ret: number; errno: number }> {
  const out: Record<string, { ret: number; errno: number }> = {};
  for (const line of stdout.trim().split('\n')) {
    const [name, ret, errno] = line.split(' ');
    if (name) out[name] = { ret: Number(ret), errno: Number(errno) };
  }
  return out;
}

const EPERM = 1;
const EINVAL = 22;

describe('the default filter', () => {
  it('is installed: /proc/self/status shows a seccomp filter (and none without --seccomp)', async () => {
    const r = await sandbox(['cat', '/proc/self/status'], { filter: STRICT });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Name:\tcat$/m);
    expect(r.stdout).toMatch(/^Seccomp:\t2$/m);
    expect(r.stdout).toMatch(/^NoNewPrivs:\t1$/m);
    expect((await sandbox(['cat', '/proc/self/status'])).stdout).toMatch(/^Seccomp:\t0$/m);
  });

  it('runs a shell and ls', async () => {
    expect(await sandbox(['sh', '-c', 'echo ok'], { filter: STRICT })).toMatchObject({ code: 0, stdout: 'ok\n' });
    const ls = await sandbox(['ls', '-la', '/proc/self', '/proc/self/'], { filter: STRICT });
    expect(ls.code).toBe(0);
    expect(ls.stdout).toMatch(/\/proc\/self -> \d+/);
    expect(ls.stdout).toMatch(/ exe -> /);
  });

  it('runs Python with threads and subprocesses', async () => {
    const script =
      'import threading, subprocess\n' +
      'out = []\n' +
      't = threading.Thread(target=lambda: out.append(subprocess.run(["echo", "hi"], capture_output=True).stdout))\n' +
      't.start(); t.join()\n' +
      'print(out[0].decode().strip(), threading.active_count())';
    expect(await sandbox(['python3', '-c', script], { filter: STRICT })).toMatchObject({ code: 0, stdout: 'hi 1\n' });
  });

  it('runs Node: child processes, worker threads, fs through the thread pool', async () => {
    const simple = await sandbox(['node', '-e', "require('child_process').execSync('true'); console.log(1)"], {
      filter: STRICT,
    });
    expect(simple).toMatchObject({ code: 0, stdout: '1\n' });
    const script = `
      const { Worker } = require('worker_threads');
      const fs = require('fs');
      fs.writeFileSync('/tmp/a', 'x');
      fs.promises.readFile('/tmp/a', 'utf8').then((s) => {
        const w = new Worker('require("worker_threads").parentPort.postMessage(require("fs").readFileSync("/tmp/a", "utf8") + "y")', { eval: true });
        w.on('message', (m) => console.log(s, m, require('child_process').execFileSync('echo', ['z']).toString().trim()));
      });`;
    expect(await sandbox(['node', '-e', script], { filter: STRICT })).toMatchObject({ code: 0, stdout: 'x xy z\n' });
  });

  it.skipIf(!existsSync('/usr/bin/strace'))('allows ptrace: strace works in the sandbox', async () => {
    const r = await sandbox(['strace', '-f', '-o', '/dev/null', 'sh', '-c', 'echo traced'], { filter: STRICT });
    expect(r).toMatchObject({ code: 0, stdout: 'traced\n' });
  });

  it('answers keyctl and bpf EPERM (unfiltered: a keyring id, EINVAL)', async () => {
    const control = probe((await sandbox(['python3', '-c', PROBE])).stdout);
    expect(control.keyctl?.ret).toBeGreaterThan(0);
    expect(control.bpf).toEqual({ ret: -1, errno: EINVAL });
    const filtered = probe((await sandbox(['python3', '-c', PROBE], { filter: STRICT })).stdout);
    expect(filtered).toEqual({ keyctl: { ret: -1, errno: EPERM }, bpf: { ret: -1, errno: EPERM } });
  });

  it('refuses a nested user namespace (unfiltered, one is allowed)', async () => {
    expect((await sandbox(['unshare', '-U', 'true'])).code).toBe(0);
    const r = await sandbox(['unshare', '-U', 'true'], { filter: STRICT });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/Operation not permitted/);
  });

  it('refuses mount, even to a process holding CAP_SYS_ADMIN', async () => {
    const plain = await sandbox(['mount', '-t', 'tmpfs', 'x', '/tmp'], { filter: STRICT });
    expect(plain.code).not.toBe(0);
    const mountTmp = ['sh', '-c', 'mount -t tmpfs x /tmp && echo mounted'];
    expect(await sandbox(mountTmp, { admin: true })).toMatchObject({ code: 0, stdout: 'mounted\n' });
    const admin = await sandbox(mountTmp, { admin: true, filter: STRICT });
    expect(admin.code).not.toBe(0);
    expect(admin.stdout).toBe('');
    expect(admin.stderr).toMatch(/permission denied/i);
  });

  // Machine code run through ctypes: getpid through the i386 gate (int 0x80), and as an x32 call.
  it.skipIf(process.arch !== 'x64')('kills a process making i386 or x32 syscalls (SIGSYS, exit 159)', async () => {
    const code = { int80: 'b8140000 00cd80c3', x32: 'b8270000 400f05c3' };
    for (const hex of Object.values(code)) {
      const script =
        'import ctypes, mmap\n' +
        `code = bytes.fromhex("${hex}")\n` +
        'buf = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n' +
        'buf.write(code)\n' +
        'f = ctypes.CFUNCTYPE(ctypes.c_long)(ctypes.addressof(ctypes.c_char.from_buffer(buf)))\n' +
        'print("returned", f())';
      expect(await sandbox(['python3', '-c', script])).toMatchObject({
        code: 0,
        stdout: expect.stringMatching(/^returned/),
      });
      expect(await sandbox(['python3', '-c', script], { filter: STRICT })).toMatchObject({
        code: 128 + 31,
        stdout: '',
      });
    }
  });
});

describe('allowUserNamespaces', () => {
  it('allows a nested user namespace, and mounting inside it', async () => {
    expect((await sandbox(['unshare', '-U', 'true'], { filter: USERNS })).code).toBe(0);
    const r = await sandbox(['unshare', '-rm', 'sh', '-c', 'mount -t tmpfs x /tmp && echo mounted'], {
      filter: USERNS,
    });
    expect(r).toMatchObject({ code: 0, stdout: 'mounted\n' });
  });

  it('still denies the rest', async () => {
    const filtered = probe((await sandbox(['python3', '-c', PROBE], { filter: USERNS })).stdout);
    expect(filtered).toEqual({ keyctl: { ret: -1, errno: EPERM }, bpf: { ret: -1, errno: EPERM } });
  });
});
