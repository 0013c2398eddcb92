/**
 * End to end on the machine's real cgroup filesystem: session groups with limits that bite, delegation to an
 * unprivileged uid, exec groups that kill a double-forking tree, removal that leaves nothing. Written for both
 * versions, but only cgroup v1 (the development machine's hybrid layout) has run for real; the v2 branches
 * here have not, and v2 is otherwise covered against a fake tree only (test/unit/cgroups.test.ts).
 * Everything lives under a unique parent (/onmemos-test-<random>) that afterAll kills and removes.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildSync } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type CgroupSystem,
  detectCgroups,
  ExecGroups,
  type Limits,
  SessionGroup,
  sessionParent,
} from '../../src/providers/local/cgroups.js';
import { isAlive, procRef, trySignal } from '../../src/providers/local/proc.js';
import { randomSuffix } from '../../src/session/model.js';
import { waitFor } from '../helpers/cli.js';

const sys = detectCgroups();
const isRoot = process.getuid?.() === 0;
const skipReason = !isRoot ? 'skipped: not root' : !sys ? 'skipped: no cgroup filesystem mounted' : '';
/** The reason a test is skipped goes into its name. */
const named = (name: string) =>
  skipReason ? `${name} (${skipReason})` : `${name} (root, real cgroup v${sys?.version})`;
const skip = skipReason !== '';

const PARENT = `/onmemos-test-${randomSuffix(8)}`;
const DELEGATE_UID = 1234567;
const MiB = 1024 * 1024;
const tag = randomSuffix(4);
let counter = 0;
const newName = () => `ws-test-e2e-${Math.floor(Date.now() / 1000)}-${tag}${counter++}`;

/** The mount of every hierarchy the module uses. */
const hierarchyDirs = (): string[] => (sys ? (sys.version === 2 ? [sys.mount] : Object.values(sys.mounts)) : []);
/** A limit file of `<name>` for a controller: v1 files live in that controller's hierarchy. */
const groupFile = (name: string, controller: 'pids' | 'memory' | 'cpu' | 'freezer', file: string): string => {
  if (!sys) throw new Error('no cgroups');
  const mount = sys.version === 2 ? sys.mount : sys.mounts[controller];
  if (!mount) throw new Error(`${controller} is not mounted`);
  return join(mount, PARENT, name, file);
};
const v = (v1: string, v2: string) => (sys?.version === 2 ? v2 : v1);
/**
 * Where an event counter of `<name>` is read. v2's pids.events and memory.events count hierarchically, so
 * `<name>` has them; v1 counts a failed fork or an OOM kill only in the group of the process concerned
 * (seen here on 6.18), which is `sandbox`.
 */
const eventsAt = (file: string) => v(`sandbox/${file}`, file);
const readTrim = (p: string) => readFileSync(p, 'utf8').trim();
/** "key N" from a flat keyed file (pids.events, memory.events, memory.oom_control, cpu.stat). */
const keyed = (p: string, key: string) => Number(new RegExp(`^${key} (\\d+)$`, 'm').exec(readFileSync(p, 'utf8'))?.[1]);

const children: ChildProcess[] = [];
interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}
/** Runs `sh -c` that first writes its own pid into every file given, then runs `script`. */
function spawnJoined(files: string[], script: string) {
  const args = ['-c', `for f; do echo 0 > "$f" || exit 99; done; ${script}`, 'sh', ...files];
  const child = spawn('sh', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d) => {
    stdout += d;
  });
  child.stderr?.on('data', (d) => {
    stderr += d;
  });
  const exit = new Promise<Exit>((resolve, reject) => {
    const guard = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${script} did not finish in 30 s`));
    }, 30_000);
    child.on('close', (code, signal) => {
      clearTimeout(guard);
      resolve({ code, signal, stdout, stderr });
    });
  });
  exit.catch(() => {});
  return { child, pid: child.pid!, exit };
}

function hostPidsIn(files: string[]): number[] {
  const out = new Set<number>();
  for (const f of files) {
    for (const line of (existsSync(f) ? readFileSync(f, 'utf8') : '').split('\n')) if (line) out.add(Number(line));
  }
  return [...out];
}

function expectGone(name: string): void {
  for (const h of hierarchyDirs()) expect(existsSync(join(h, PARENT, name)), join(h, PARENT, name)).toBe(false);
}

function create(limits: Limits, opts: { delegateTo?: number } = {}): SessionGroup {
  const g = SessionGroup.create(sys!, PARENT, newName(), limits, opts);
  // A host without swap accounting says so; nothing else may be left unapplied on a host with all four hierarchies.
  expect(g.unapplied.filter((u) => !u.includes('swap is not accounted'))).toEqual([]);
  return g;
}

/** Test-side cleanup, independent of the module under test: kill, thaw and rmdir whatever is under PARENT. */
async function cleanupParent(): Promise<void> {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  const walk = (d: string, out: string[] = []): string[] => {
    let entries: string[] = [];
    try {
      entries = readdirSync(d, { withFileTypes: true })
        .filter((e) => e.isDirectory())
        .map((e) => e.name);
    } catch {
      return out;
    }
    for (const e of entries) walk(join(d, e), out);
    out.push(d);
    return out;
  };
  for (const h of hierarchyDirs()) {
    const top = join(h, PARENT);
    for (let round = 0; round < 40 && existsSync(top); round++) {
      const dirs = walk(top);
      for (const d of dirs) {
        for (const pid of hostPidsIn([join(d, 'cgroup.procs')])) trySignal(pid, 'SIGKILL');
        try {
          writeFileSync(join(d, 'freezer.state'), 'THAWED');
        } catch {}
      }
      for (const d of dirs) {
        try {
          rmdirSync(d);
        } catch {}
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/**
 * The agent's side, run as the delegated uid: ExecGroups (bundled from the source) makes an exec group, starts
 * a double-forking tree in it, kills it and removes the group, then reports which of those pids still live.
 */
const AGENT = `
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { ExecGroups } from './cgroups.mjs';
const inside = JSON.parse(readFileSync(new URL('./inside.json', import.meta.url), 'utf8'));
const ex = new ExecGroups(inside);
const files = ex.create('job-1');
const child = spawn('sh', ['-c', 'for f; do echo 0 > "$f" || exit 99; done; (setsid sleep 300 </dev/null >/dev/null 2>&1 &); sleep 300', 'sh', ...files], { stdio: 'ignore' });
const listed = () => [...new Set(files.flatMap((f) => readFileSync(f, 'utf8').split('\\n').filter(Boolean).map(Number)))];
const comm = (pid) => { try { return readFileSync('/proc/' + pid + '/comm', 'utf8').trim(); } catch { return ''; } };
const state = (pid) => { try { const t = readFileSync('/proc/' + pid + '/stat', 'utf8'); return t.slice(t.lastIndexOf(')') + 2).split(' ')[0]; } catch { return 'gone'; } };
for (let i = 0; i < 500 && listed().filter((p) => comm(p) === 'sleep').length < 2; i++) await new Promise((r) => setTimeout(r, 20));
const pids = listed();
ex.kill('job-1');
const after = listed();
ex.remove('job-1');
ex.remove('job-1');
await new Promise((r) => child.once('exit', r));
console.log(JSON.stringify({ uid: process.getuid(), pids, after, states: pids.map(state), cgroup: readFileSync('/proc/self/cgroup', 'utf8') }));
`;
let agentDir = '';

beforeAll(() => {
  if (skip) return;
  // The unique parent, made in every hierarchy as an administrator would for ONMEMOS_CGROUP_PARENT.
  for (const h of hierarchyDirs()) mkdirSync(join(h, PARENT), { mode: 0o755 });
});
afterAll(async () => {
  if (agentDir) rmSync(agentDir, { recursive: true, force: true });
  if (skip) return;
  await cleanupParent();
  for (const h of hierarchyDirs()) expect(existsSync(join(h, PARENT)), join(h, PARENT)).toBe(false);
});

describe('session cgroups on the real cgroup filesystem', () => {
  it.skipIf(skip)(named('ONMEMOS_CGROUP_PARENT names the parent when it exists in every hierarchy'), () => {
    expect(sessionParent(sys!, { ONMEMOS_CGROUP_PARENT: PARENT }, 0)).toEqual({ path: PARENT });
    expect(() => sessionParent(sys!, { ONMEMOS_CGROUP_PARENT: `${PARENT}-absent` }, 0)).toThrow(/does not exist/);
  });

  it.skipIf(skip)(
    named('a process joins sandbox in every hierarchy; pids() sees it, kill() ends it, remove() leaves nothing'),
    async () => {
      const g = create({ pids: 64, memoryBytes: 256 * MiB, cpus: 1 });
      expect(SessionGroup.list(sys!, PARENT)).toContain(g.name);
      const p = spawnJoined(g.joinFiles(), 'exec sleep 60');
      expect(await waitFor(() => g.pids().includes(p.pid), 10_000, 20)).toBe(true);
      const lines = readFileSync(`/proc/${p.pid}/cgroup`, 'utf8').split('\n');
      const want = `${PARENT}/${g.name}/sandbox`;
      for (const { controller } of g.sandboxDirs()) {
        const line = lines.find((l) =>
          controller ? l.split(':')[1]?.split(',').includes(controller) : l.startsWith('0::'),
        );
        expect(line?.endsWith(`:${want}`), `${controller}: ${line}`).toBe(true);
      }
      const use = g.usage();
      expect(use.pids).toBe(1);
      expect(use.memoryBytes).toBeGreaterThan(0);
      g.kill();
      expect(g.pids()).toEqual([]);
      expect((await p.exit).signal).toBe('SIGKILL');
      g.remove();
      expectGone(g.name);
      g.remove(); // idempotent
    },
  );

  it.skipIf(skip)(
    named('pids.max stops a fork loop: the shell fails to fork, then kill() ends what it started'),
    async () => {
      const g = create({ pids: 10 });
      expect(readTrim(groupFile(g.name, 'pids', 'pids.max'))).toBe('10');
      const p = spawnJoined(
        g.joinFiles(),
        'for i in $(seq 100); do sleep 30 </dev/null >/dev/null 2>&1 & done; echo all-started',
      );
      const r = await p.exit;
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/fork/i);
      expect(r.stdout).not.toContain('all-started');
      expect(keyed(groupFile(g.name, 'pids', eventsAt('pids.events')), 'max')).toBeGreaterThan(0);
      const left = g.pids();
      expect(left.length).toBeGreaterThan(0); // the sleeps it did start
      expect(left.length).toBeLessThanOrEqual(10);
      g.kill();
      expect(g.pids()).toEqual([]);
      for (const pid of left) expect(isAlive(procRef(pid)), `pid ${pid}`).toBe(false);
      g.remove();
      expectGone(g.name);
    },
  );

  it.skipIf(skip)(named('a 64 MiB memory limit: 20 MB is fine, 200 MB is OOM-killed with SIGKILL'), async () => {
    const g = create({ memoryBytes: 64 * MiB });
    expect(readTrim(groupFile(g.name, 'memory', v('memory.limit_in_bytes', 'memory.max')))).toBe(String(64 * MiB));
    const swapFile = groupFile(g.name, 'memory', v('memory.memsw.limit_in_bytes', 'memory.swap.max'));
    if (existsSync(swapFile)) expect(readTrim(swapFile)).toBe(v(String(64 * MiB), '0'));
    const py = (mb: number) => `exec /usr/bin/python3 -c "b=bytearray(${mb}*1024*1024); print(len(b))"`;
    const small = await spawnJoined(g.joinFiles(), py(20)).exit;
    expect(small).toMatchObject({ code: 0, signal: null, stdout: `${20 * MiB}\n` });
    const big = await spawnJoined(g.joinFiles(), py(200)).exit;
    expect(big).toMatchObject({ code: null, signal: 'SIGKILL', stdout: '' });
    expect(
      keyed(groupFile(g.name, 'memory', eventsAt(v('memory.oom_control', 'memory.events'))), 'oom_kill'),
    ).toBeGreaterThanOrEqual(1);
    g.remove();
    expectGone(g.name);
  });

  it.skipIf(skip)(named('cpus 0.5: the quota file says 50000 per 100000 and a busy loop gets throttled'), async () => {
    const g = create({ cpus: 0.5 });
    if (sys!.version === 2) {
      expect(readTrim(groupFile(g.name, 'cpu', 'cpu.max'))).toBe('50000 100000');
    } else {
      expect(readTrim(groupFile(g.name, 'cpu', 'cpu.cfs_quota_us'))).toBe('50000');
      expect(readTrim(groupFile(g.name, 'cpu', 'cpu.cfs_period_us'))).toBe('100000');
    }
    const busy = 'exec /usr/bin/python3 -c "import time\nt=time.time()\nwhile time.time()-t<0.6: pass"';
    expect((await spawnJoined(g.joinFiles(), busy).exit).code).toBe(0);
    expect(keyed(groupFile(g.name, 'cpu', 'cpu.stat'), 'nr_throttled')).toBeGreaterThan(0);
    g.remove();
    expectGone(g.name);
  });

  it.skipIf(skip)(
    named('delegation: the uid makes exec groups below sandbox and moves itself in, but cannot write the limits'),
    async () => {
      const g = create({ pids: 50, memoryBytes: 256 * MiB, cpus: 1 }, { delegateTo: DELEGATE_UID });
      const delegated = v('cgroup.procs tasks', 'cgroup.procs cgroup.subtree_control cgroup.threads').split(' ');
      for (const { dir } of g.sandboxDirs()) {
        for (const p of [dir, ...delegated.map((f) => join(dir, f))]) expect(statSync(p).uid, p).toBe(DELEGATE_UID);
        expect(statSync(join(dir, '..')).uid).toBe(0);
      }
      const limitFiles =
        sys!.version === 2
          ? ['pids.max', 'memory.max', 'cpu.max', 'cgroup.procs'].map((f) => groupFile(g.name, 'pids', f))
          : [
              groupFile(g.name, 'pids', 'pids.max'),
              groupFile(g.name, 'pids', 'sandbox/pids.max'),
              groupFile(g.name, 'memory', 'memory.limit_in_bytes'),
              groupFile(g.name, 'cpu', 'cpu.cfs_quota_us'),
            ];
      // Joined as root, then running as the uid (as the agent will): mkdir exec groups, move itself, poke the limits.
      const script = [
        'import errno, json, os, sys',
        'n = int(sys.argv[1]); dirs = sys.argv[2:2+n]; limits = sys.argv[2+n:]',
        'out = {}',
        'def put(path, text):',
        '    fd = os.open(path, os.O_WRONLY)',
        '    try:',
        '        os.write(fd, text.encode())',
        '    finally:',
        '        os.close(fd)',
        'def attempt(key, fn):',
        '    try:',
        '        fn(); out[key] = "ok"',
        '    except OSError as e:',
        '        out[key] = errno.errorcode[e.errno]',
        'for d in dirs:',
        '    attempt("mkdir " + d, lambda: os.mkdir(d + "/e1"))',
        '    attempt("join " + d, lambda: put(d + "/e1/cgroup.procs", str(os.getpid())))',
        'for f in limits:',
        '    attempt("write " + f, lambda: put(f, "999999999"))',
        'print(json.dumps({"uid": os.getuid(), "cgroup": open("/proc/self/cgroup").read(), **out}))',
      ].join('\n');
      const dirs = g.sandboxDirs().map((s) => s.dir);
      const setpriv = `setpriv --reuid=${DELEGATE_UID} --regid=${DELEGATE_UID} --clear-groups`;
      const args = [String(dirs.length), ...dirs, ...limitFiles].map((a) => `'${a}'`).join(' ');
      const r = await spawnJoined(
        g.joinFiles(),
        `exec ${setpriv} /usr/bin/python3 -c '${script.replaceAll("'", '"')}' ${args}`,
      ).exit;
      expect(r.stderr).toBe('');
      const got = JSON.parse(r.stdout) as Record<string, string | number>;
      expect(got['uid']).toBe(DELEGATE_UID);
      for (const d of dirs) {
        expect(got[`mkdir ${d}`], d).toBe('ok');
        expect(got[`join ${d}`], d).toBe('ok');
        // The kernel gives a new group's directory and files to whoever made it.
        expect(statSync(join(d, 'e1')).uid).toBe(DELEGATE_UID);
        expect(statSync(join(d, 'e1', 'cgroup.procs')).uid).toBe(DELEGATE_UID);
      }
      expect(String(got['cgroup'])).toContain(`${PARENT}/${g.name}/sandbox/e1`);
      for (const f of limitFiles) expect(got[`write ${f}`], f).toBe('EACCES');
      expect(readTrim(groupFile(g.name, 'pids', 'pids.max'))).toBe('50');
      g.remove();
      expectGone(g.name);
    },
  );

  it.skipIf(skip)(
    named('ExecGroups kills a double-forking tree completely and leaves the rest of the session alone'),
    async () => {
      const g = create({ pids: 100 });
      const sandboxes = g.sandboxDirs();
      const inside: CgroupSystem =
        sys!.version === 2
          ? { version: 2, mount: sandboxes[0]!.dir }
          : { version: 1, mounts: Object.fromEntries(sandboxes.map((s) => [s.controller, s.dir])) };
      const ex = new ExecGroups(inside);
      const bystander = spawnJoined(g.joinFiles(), 'exec sleep 300');
      const files = ex.create('e1');
      const tree = spawnJoined(
        [...g.joinFiles(), ...files],
        '(setsid sleep 300 </dev/null >/dev/null 2>&1 &) ; sleep 300',
      );
      const comm = (pid: number) => (existsSync(`/proc/${pid}/comm`) ? readTrim(`/proc/${pid}/comm`) : '');
      const sleepers = () => hostPidsIn(files).filter((pid) => comm(pid) === 'sleep');
      expect(await waitFor(() => sleepers().length === 2, 10_000, 20)).toBe(true);
      const inGroup = hostPidsIn(files);
      expect(inGroup).toContain(tree.pid);
      const escaped = sleepers().find(
        (pid) => readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ')[1] !== String(tree.pid),
      );
      expect(escaped, 'the setsid sleep has left the shell as its parent').toBeDefined();
      const refs = inGroup.map((pid) => procRef(pid));
      ex.kill('e1');
      expect(hostPidsIn(files)).toEqual([]);
      // Scan /proc: none of them lives on (a zombie counts as dead: pid 1 here reaps orphans only seconds later).
      for (const [i, ref] of refs.entries()) expect(isAlive(ref), `pid ${inGroup[i]}`).toBe(false);
      expect(isAlive(procRef(bystander.pid))).toBe(true);
      expect((await tree.exit).signal).toBe('SIGKILL');
      ex.remove('e1');
      ex.remove('e1');
      for (const s of sandboxes) expect(existsSync(join(s.dir, 'e1'))).toBe(false);
      g.remove();
      expect((await bystander.exit).signal).toBe('SIGKILL');
      expectGone(g.name);
    },
  );

  it.skipIf(skip)(
    named('the agent itself, as the delegated uid, kills a double-forking tree with ExecGroups'),
    async () => {
      const g = create({ pids: 100 }, { delegateTo: DELEGATE_UID });
      agentDir = mkdtempSync(join(tmpdir(), 'onmemos-cgroups-agent-'));
      chmodSync(agentDir, 0o755);
      const src = new URL('../../src/providers/local/cgroups.ts', import.meta.url).pathname;
      buildSync({
        entryPoints: [src],
        bundle: true,
        format: 'esm',
        platform: 'node',
        outfile: join(agentDir, 'cgroups.mjs'),
        logLevel: 'error',
      });
      writeFileSync(join(agentDir, 'agent.mjs'), AGENT);
      // What the agent would see inside the session, where the sandbox directories are bound.
      const inside: CgroupSystem =
        sys!.version === 2
          ? { version: 2, mount: g.sandboxDirs()[0]!.dir }
          : { version: 1, mounts: Object.fromEntries(g.sandboxDirs().map((s) => [s.controller, s.dir])) };
      writeFileSync(join(agentDir, 'inside.json'), JSON.stringify(inside));
      const setpriv = `setpriv --reuid=${DELEGATE_UID} --regid=${DELEGATE_UID} --clear-groups`;
      const r = await spawnJoined(g.joinFiles(), `exec ${setpriv} ${process.execPath} ${join(agentDir, 'agent.mjs')}`)
        .exit;
      expect(r.stderr).toBe('');
      const got = JSON.parse(r.stdout) as {
        uid: number;
        pids: number[];
        after: number[];
        states: string[];
        cgroup: string;
      };
      expect(got.uid).toBe(DELEGATE_UID);
      expect(got.cgroup).toContain(`${PARENT}/${g.name}/sandbox`);
      expect(got.pids.length).toBeGreaterThanOrEqual(3); // sh, its sleep and the setsid sleep
      expect(got.after).toEqual([]);
      // Gone, or a zombie: the orphans' parent is pid 1, which on this machine reaps them only seconds later.
      for (const st of got.states) expect(['gone', 'Z']).toContain(st);
      for (const { dir } of g.sandboxDirs()) expect(existsSync(join(dir, 'job-1'))).toBe(false);
      g.remove();
      expectGone(g.name);
    },
  );

  it.skipIf(skip)(named('nothing is left under the test parent in any hierarchy'), () => {
    expect(SessionGroup.list(sys!, PARENT)).toEqual([]);
    for (const h of hierarchyDirs()) {
      const sub = readdirSync(join(h, PARENT), { withFileTypes: true }).filter((e) => e.isDirectory());
      expect(
        sub.map((e) => e.name),
        h,
      ).toEqual([]);
    }
  });
});
