/** End to end through pipes: the built binary, real bubblewrap sessions. */
import { spawn } from 'node:child_process';
import {
  chownSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { descendants } from '../../src/providers/local/proc.js';
import { CLI, cliShell, REMOTE, ROOTLESS, StateDir, TEST_USER, waitFor } from '../helpers/cli.js';

const state = new StateDir();
let id = '';

beforeAll(async () => {
  id = await state.create('--namespace', 'team-a', '--user', 'alice', '--env', 'GREETING=hello world');
});
afterAll(() => state.cleanup());

const exec = (args: string[], input?: string) => state.run(['exec', id, '--', ...args], { input });

it(`runs in ${REMOTE ? 'remote' : ROOTLESS ? 'rootless' : 'local'} mode`, async () => {
  // A wrong API key matters only when the commands go through a server.
  const r = await state.run(['ls'], { env: { ONMEMOS_API_KEY: 'wrong-key-0123456789abcdef' } });
  expect(r.code).toBe(REMOTE ? 1 : 0);
  if (REMOTE) expect(r.stderr).toMatch(/^onmemos: invalid API key/);
  // The session's directory belongs to whoever ran onmemos: the ordinary user, rootless.
  const owner = statSync(join(state.path, 'local', 'sessions', id)).uid;
  expect(owner).toBe(ROOTLESS ? (TEST_USER?.uid ?? process.getuid?.()) : 0);
});

describe('exec through pipes', () => {
  it('exits with the remote exit code and keeps stdout and stderr apart', async () => {
    const r = await exec(['sh', '-c', 'echo out; echo err >&2; exit 3']);
    expect(r).toMatchObject({ code: 3, stdout: 'out\n', stderr: 'err\n' });
  });

  it('exits 128+N when the remote process is killed by signal N', async () => {
    expect((await exec(['sh', '-c', 'kill -TERM $$'])).code).toBe(143);
    expect((await exec(['sh', '-c', 'kill -KILL $$'])).code).toBe(137);
  });

  it("127 for a missing command, 126 for one that cannot run, with onmemos' own line", async () => {
    const made = await exec([
      'sh',
      '-c',
      'mkdir -p /tmp/codes && cd /tmp/codes && echo "echo ran" > plain && cp plain run && chmod +x run && mkdir -p dir',
    ]);
    expect(made.code).toBe(0);
    const inCodes = (args: string[]) => state.run(['exec', id, '-w', '/tmp/codes', '--', ...args]);
    expect(await exec(['python9', '-c', '1'])).toEqual(
      expect.objectContaining({ code: 127, stdout: '', stderr: 'onmemos: python9: command not found\n' }),
    );
    expect(await exec(['/etc/passwd'])).toMatchObject({
      code: 126,
      stdout: '',
      stderr: 'onmemos: /etc/passwd: permission denied\n',
    });
    expect(await inCodes(['./plain'])).toMatchObject({
      code: 126,
      stdout: '',
      stderr: 'onmemos: ./plain: permission denied\n',
    });
    expect(await inCodes(['./dir'])).toMatchObject({
      code: 126,
      stdout: '',
      stderr: 'onmemos: ./dir: is a directory\n',
    });
    expect(await exec(['/tmp'])).toMatchObject({ code: 126, stdout: '', stderr: 'onmemos: /tmp: is a directory\n' });
    expect(await inCodes(['./missing'])).toMatchObject({
      code: 127,
      stdout: '',
      stderr: 'onmemos: ./missing: no such file or directory\n',
    });
    // A builtin of sh is no command of the session.
    expect(await exec(['cd'])).toMatchObject({ code: 127, stderr: 'onmemos: cd: command not found\n' });
    // What can run still runs: by name, by path, and a script in the working directory.
    expect(await inCodes(['./run'])).toMatchObject({ code: 0, stdout: 'ran\n', stderr: '' });
    expect(await exec(['/usr/bin/env', 'true'])).toMatchObject({ code: 0, stderr: '' });
    expect(await exec(['echo', 'ok'])).toMatchObject({ code: 0, stdout: 'ok\n', stderr: '' });
    // A command found through the PATH the exec itself sets.
    const viaPath = await state.run(['exec', id, '-e', 'PATH=/tmp/codes:/usr/bin:/bin', '--', 'run']);
    expect(viaPath).toMatchObject({ code: 0, stdout: 'ran\n' });
  });

  it('126 and 127 under a tty too, the line on the terminal', async () => {
    const r = await state.run(['exec', '-t', id, '--', 'python9']);
    expect(r).toMatchObject({ code: 127, stdout: 'onmemos: python9: command not found\r\n' });
    expect(await state.run(['exec', '-t', id, '--', '/tmp'])).toMatchObject({
      code: 126,
      stdout: 'onmemos: /tmp: is a directory\r\n',
    });
  });

  it("the start of an exec leaves the command's environment alone", async () => {
    const r = await state.run(['exec', id, '-e', 'n=5', '-e', 'd=x', '-e', 'p=y', '--', 'sh', '-c', 'echo "$n $d $p"']);
    expect(r.stdout).toBe('5 x y\n');
  });

  it('delivers piped stdin with EOF', async () => {
    expect((await exec(['wc', '-l'], 'a\nb\n')).stdout.trim()).toBe('2');
    expect((await exec(['cat'])).stdout).toBe(''); // no input: EOF at once, no hang
  });

  it('reads EOF at once from a stdin that is /dev/null (not attached), and from one attached with -i', async () => {
    const viaNull = (args: string[]) =>
      new Promise<{ code: number | null; out: string }>((resolve) => {
        const child = spawn(CLI[0]!, [...CLI.slice(1), 'exec', ...args], {
          env: { ...process.env, ...state.env },
          stdio: ['ignore', 'pipe', 'inherit'], // 'ignore': /dev/null
        });
        const out: Buffer[] = [];
        child.stdout.on('data', (d) => out.push(d));
        const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
        child.on('close', (code) => {
          clearTimeout(timer);
          resolve({ code, out: Buffer.concat(out).toString() });
        });
      });
    expect(await viaNull([id, '--', 'sh', '-c', 'cat; echo done'])).toEqual({ code: 0, out: 'done\n' });
    expect(await viaNull(['-i', id, '--', 'sh', '-c', 'cat; echo done'])).toEqual({ code: 0, out: 'done\n' });
  });

  it('starts without what it does not use: no child_process, stdin stream, package.json read, http or crypto', async () => {
    // A preload reports, at exit, what the process loaded and read (the start-up cost of every command).
    const dir = mkdtempSync(join(tmpdir(), 'onmemos-startup-probe-'));
    if (TEST_USER) chownSync(dir, TEST_USER.uid, TEST_USER.gid); // the rootless project's onmemos writes the report
    try {
      const probe = join(dir, 'probe.cjs');
      const report = join(dir, 'report');
      writeFileSync(
        probe,
        [
          "const fs = require('node:fs');",
          'let pkg = 0;',
          'const read = fs.readFileSync;',
          "fs.readFileSync = function (p, ...a) { if (String(p).endsWith('package.json')) pkg++; return read.call(this, p, ...a); };",
          "const has = (m) => process.moduleLoadList.includes('NativeModule ' + m);",
          `process.on('exit', () => fs.appendFileSync(${JSON.stringify(report)}, JSON.stringify({ argv: process.argv.slice(2), child_process: has('child_process'), stdin: has('internal/fs/streams'), pkg, http: has('http'), crypto: has('crypto') }) + '\\n'));`,
        ].join('\n'),
      );
      const env = { ...state.env, NODE_OPTIONS: `--require ${probe}` };
      expect((await state.run(['--version'], { env })).code).toBe(0);
      expect((await state.run(['exec', id, '--', 'true'], { env })).code).toBe(0);
      const lines = readFileSync(report, 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
      // A local exec does its upgrade itself (src/exec/unix-ws.ts): no http, no crypto. Through a server, ws does.
      const remote = REMOTE;
      expect(lines).toEqual([
        { argv: ['--version'], child_process: false, stdin: false, pkg: 0, http: false, crypto: false },
        // Its stdin is a pipe (a socket here), attached: the stream is a net.Socket, not an fs one.
        { argv: ['exec', id, '--', 'true'], child_process: false, stdin: false, pkg: 0, http: remote, crypto: remote },
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('is binary-safe both ways', async () => {
    const bytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    const r = await new Promise<Buffer>((resolve) => {
      const child = spawn(CLI[0]!, [...CLI.slice(1), 'exec', id, '--', 'sh', '-c', 'cat; printf "\\000\\377"'], {
        env: { ...process.env, ...state.env },
      });
      const out: Buffer[] = [];
      child.stdout.on('data', (d) => out.push(d));
      child.stdin.end(bytes);
      child.on('close', () => resolve(Buffer.concat(out)));
    });
    expect(r.equals(Buffer.concat([bytes, Buffer.from([0, 255])]))).toBe(true);
  });

  it('delivers every byte to a slow reader and exits only when it is all written', async () => {
    const size = 64 * 1024 * 1024;
    const child = spawn(CLI[0]!, [...CLI.slice(1), 'exec', id, '--', 'head', '-c', String(size), '/dev/zero'], {
      env: { ...process.env, ...state.env },
    });
    let got = 0;
    child.stdout.on('data', (d: Buffer) => {
      got += d.length;
      // A slow consumer: pause now and then, so onmemos has to hold back.
      if (got % (8 * 1024 * 1024) < d.length) {
        child.stdout.pause();
        setTimeout(() => child.stdout.resume(), 50);
      }
    });
    const code = await new Promise((r) => child.on('close', r));
    expect(code).toBe(0);
    expect(got).toBe(size);
  });

  it('a closed reader ends the remote command with SIGPIPE, as in a local pipeline', async () => {
    const r = await new Promise<string>((resolve) => {
      const c = spawn('bash', ['-c', `${cliShell()} exec "$0" -- yes | head -2; echo "status \${PIPESTATUS[0]}"`, id], {
        env: { ...process.env, ...state.env },
      });
      let out = '';
      c.stdout.on('data', (d) => (out += d));
      c.stderr.on('data', (d) => (out += d));
      c.on('close', () => resolve(out));
    });
    expect(r).toBe('y\ny\nstatus 141\n');
  });

  it('passes argv exactly, never re-split', async () => {
    const r = await exec(['printf', '%s|', 'a b', "it's", '$(echo no)', '*', '-n']);
    expect(r.stdout).toBe("a b|it's|$(echo no)|*|-n|");
  });

  it('streams output as it is produced', async () => {
    const child = spawn(CLI[0]!, [...CLI.slice(1), 'exec', id, '--', 'sh', '-c', 'echo first; sleep 30'], {
      env: { ...process.env, ...state.env },
    });
    const first = await new Promise<string>((resolve) => child.stdout.once('data', (d) => resolve(String(d))));
    expect(first).toBe('first\n');
    child.kill('SIGTERM');
    await new Promise((r) => child.on('close', r));
  });

  it('sets -e variables, -w directory, and the document variables', async () => {
    const r = await state.run([
      'exec',
      '-e',
      'A=1',
      '-e',
      'B=x=y',
      '-w',
      '/tmp',
      id,
      '--',
      'sh',
      '-c',
      'echo "$A $B $(pwd) $WORKSPACE_ID $NAMESPACE $USER $BUCKET_NAME $GREETING $HOME"',
    ]);
    expect(r.stdout.trim()).toBe(`1 x=y /tmp ${id} team-a alice onmemos-${id.slice(3)} hello world /home/alice`);
    expect((await exec(['pwd'])).stdout).toBe('/workspace\n');
    expect((await state.run(['exec', '-w', '/nope', id, '--', 'true'])).code).toBe(125);
  });

  it('takes its options after the id too, before a --', async () => {
    const r = await state.run([
      'exec',
      id,
      '--timeout',
      '1',
      '-e',
      'A=1',
      '-w',
      '/tmp',
      '--',
      'sh',
      '-c',
      'echo "$A $PWD"; sleep 30',
    ]);
    expect(r).toMatchObject({ code: 124, stdout: '1 /tmp\n' });
    const refused = await state.run(['exec', id, '--timeout', '1', 'sleep', '5']);
    expect(refused.code).toBe(125);
    expect(refused.stderr).toMatch(/^onmemos: options after the id need a -- before the command/);
    expect((await state.run(['exec', id, 'sh', '-c', 'echo "$@"', 'x', '--', '-e'])).stdout).toBe('-- -e\n');
  });

  it('--timeout kills the remote process tree and exits 124', async () => {
    const r = await state.run(['exec', '--timeout', '1', id, '--', 'sh', '-c', 'sleep 300 & sleep 301; echo never']);
    expect(r.code).toBe(124);
    expect(r.stdout).toBe('');
    const ps = await exec([
      'sh',
      '-c',
      'for p in /proc/[0-9]*; do cat $p/cmdline 2>/dev/null | tr "\\0" " "; echo; done',
    ]);
    expect(ps.stdout).not.toMatch(/sleep 30[01]/);
  });

  it('SIGTERM or SIGINT to onmemos kills the remote process and leaves no orphan', async () => {
    for (const [sig, code] of [
      ['SIGTERM', 143],
      ['SIGINT', 130],
    ] as const) {
      const marker = `orphan-${sig}`;
      const child = spawn(
        CLI[0]!,
        [...CLI.slice(1), 'exec', id, '--', 'bash', '-c', `sleep 400 & exec -a ${marker} sleep 401`],
        {
          env: { ...process.env, ...state.env },
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      const onmemosPid = child.pid!;
      // Wait until the remote command runs (the [x] keeps grep from finding its own command line), then signal
      // onmemos only.
      const pattern = `${marker.slice(0, -1)}[${marker.slice(-1)}]`;
      await waitFor(async () => (await exec(['sh', '-c', `grep -l '${pattern}' /proc/[0-9]*/cmdline`])).stdout !== '');
      const closed = new Promise<number | null>((r) => child.on('close', (c) => r(c)));
      process.kill(onmemosPid, sig);
      expect(await closed).toBe(code);
      const left = await exec(['sh', '-c', 'cat /proc/[0-9]*/cmdline | tr "\\0" " "']);
      expect(left.stdout).not.toMatch(/sleep 40[01]/);
      expect(descendants(onmemosPid)).toEqual([]);
    }
  });
});

describe('a session is long-lived, like a container', () => {
  it('a background process started by one exec is seen by the next', async () => {
    const r = await exec(['sh', '-c', 'sleep 1000 > /dev/null 2>&1 & echo started']);
    expect(r).toMatchObject({ code: 0, stdout: 'started\n' });
    const ps = await exec(['sh', '-c', 'cat /proc/[0-9]*/cmdline | tr "\\0" " "']);
    expect(ps.stdout).toContain('sleep 1000');
  });

  it('exec returns when the command exits even if a background process keeps its output open', async () => {
    const r = await exec(['sh', '-c', 'sleep 1001 & echo done']);
    expect(r).toMatchObject({ code: 0, stdout: 'done\n' });
  });

  it("a server started in one exec answers on the session's localhost in the next", async () => {
    const start = await exec([
      'sh',
      '-c',
      'nohup python3 -c \'import http.server as h; h.HTTPServer(("127.0.0.1", 8765), h.SimpleHTTPRequestHandler).serve_forever()\' >/dev/null 2>&1 & echo ok',
    ]);
    expect(start.code).toBe(0);
    const probe = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8765/').status)";
    const got = await waitFor(async () => (await exec(['python3', '-c', probe])).stdout.trim() === '200');
    expect(got).toBe(true);
  });

  it('a login shell (onmemos shell) keeps the session PATH: the template names are found there too', async () => {
    const r = await state.run(['shell', id], { input: 'python -c "print(6*7)"; echo "$PATH"; exit 3\n' });
    expect(r.code).toBe(3);
    expect(r.stdout).toMatch(/\b42\r?\n/);
    expect(r.stdout).toMatch(/:\/opt\/onmemos\/bin\r?\n/);
  });

  it('files in /workspace, $HOME and /tmp persist between execs', async () => {
    await exec(['sh', '-c', 'echo w > /workspace/f; echo h > ~/f; echo t > /tmp/f']);
    expect((await exec(['sh', '-c', 'cat /workspace/f ~/f /tmp/f'])).stdout).toBe('w\nh\nt\n');
  });
});

describe('isolation', () => {
  it('has no capabilities in any session process', async () => {
    const r = await exec(['sh', '-c', 'sleep 5 & grep -h CapEff /proc/[0-9]*/status | sort -u']);
    expect(r.stdout.trim()).toBe('CapEff:\t0000000000000000');
  });

  it('runs in its own pid, uts, ipc, mount and network namespaces', async () => {
    const r = await exec([
      'sh',
      '-c',
      'for n in pid uts ipc mnt net; do readlink /proc/self/ns/$n; done; hostname; echo $$',
    ]);
    const lines = r.stdout.trim().split('\n');
    for (const [i, n] of ['pid', 'uts', 'ipc', 'mnt', 'net'].entries()) {
      expect(lines[i]).not.toBe(readlinkHost(n));
    }
    expect(lines[5]).toBe(id.slice(0, 63));
  });

  it('sees the host root read-only, and not /root, /home, the state directory or /etc/shadow', async () => {
    const r = await exec([
      'sh',
      '-c',
      `touch /usr/x 2>&1; ls /root 2>&1; ls /home; ls ${state.path} 2>&1; cat /etc/shadow 2>&1; ls /opt /var 2>&1`,
    ]);
    expect(r.stdout).toMatch(/touch: cannot touch '\/usr\/x': Read-only file system/);
    expect(r.stdout).toMatch(/ls: cannot access '\/root': No such file or directory/);
    expect(r.stdout).toMatch(/^alice$/m);
    expect(r.stdout).toMatch(new RegExp(`cannot access '${state.path}'`));
    expect(r.stdout).toMatch(/\/etc\/shadow: (Permission denied|No such file)/);
  });

  it("cannot read another session's workspace", async () => {
    const other = await state.create('--user', 'bob');
    await state.run(['exec', other, '--', 'sh', '-c', 'echo secret > /workspace/secret']);
    // The other session's data lives in its own filesystem (a disk image, or a tmpfs when rootless), reachable
    // from the host only through its session directory, which no session can see.
    const hostPath = join(state.path, 'local', 'sessions', other);
    expect(existsSync(hostPath)).toBe(true);
    const r = await exec([
      'sh',
      '-c',
      `ls ${hostPath} 2>&1; find / -path /proc -prune -o -name secret -print 2>/dev/null; grep -rl secret /proc/[0-9]*/root/workspace 2>/dev/null; echo end`,
    ]);
    expect(r.stdout).not.toContain('secret\n');
    expect(r.stdout).toMatch(/No such file or directory\nend\n$/);
    expect((await state.run(['rm', other])).code).toBe(0);
  });
});

function readlinkHost(ns: string): string {
  return readlinkSync(`/proc/self/ns/${ns}`);
}

describe('rm', () => {
  it('kills every process of the session and deletes its workspace', async () => {
    const sid = await state.create();
    await state.run(['exec', sid, '--', 'bash', '-c', '(exec -a onmemos-rm-marker sleep 1000 >/dev/null 2>&1 &)']);
    const dir = join(state.path, 'local', 'sessions', sid);
    expect(existsSync(dir)).toBe(true);
    const hostHas = () =>
      readdirSync('/proc').some((p) => {
        try {
          return readFileSync(`/proc/${p}/cmdline`, 'utf8').startsWith('onmemos-rm-marker');
        } catch {
          return false;
        }
      });
    expect(hostHas()).toBe(true);
    expect((await state.run(['rm', sid])).stdout.trim()).toBe(sid);
    expect(existsSync(dir)).toBe(false);
    expect(await waitFor(() => !hostHas())).toBe(true);
    expect((await state.run(['exec', sid, '--', 'true'])).code).toBe(125);
    expect((await state.run(['rm', sid])).code).toBe(1);
  });
});
