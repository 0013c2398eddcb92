/**
 * The Python SDK (sdk/python) with its own pytest suite, against a real `onmemos serve` that the suite starts: a
 * fresh venv in the run's temporary directory, `pip install sdk/python[test]` (a copy, so the checkout gets no
 * build files; offline through the machine's package mirror where pip is configured so), then pytest with a hang
 * guard. Skipped, saying why, only where `python3 -m venv` is not available.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { BIN } from '../helpers/cli.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const PYTHON = process.env.ONMEMOS_PYTHON || 'python3';
/** The tests of sdk/python/tests, all of which must run and pass. */
const EXPECTED_TESTS = 27;

const venvProbe = spawnSync(PYTHON, ['-c', 'import venv, ensurepip'], { encoding: 'utf8', timeout: 30_000 });
const venvMissing =
  venvProbe.status === 0
    ? ''
    : `${PYTHON} -m venv is not available here (${(venvProbe.stderr || venvProbe.error?.message || '').trim().split('\n').pop()}): install python3-venv and python3-pip`;

const dir = mkdtempSync(join(process.env.ONMEMOS_TEST_TMP ?? tmpdir(), 'py-sdk-'));
// The server's state directory: short, as StateDir's are (a session's agent socket path must fit in 108 bytes).
const stateDir = mkdtempSync(join(tmpdir(), 'onmemos-py-'));
const children = new Set<ChildProcess>();

/** Runs a command to its end with a hang guard (its whole process group is killed past `timeoutMs`). */
function run(
  cmd: string,
  args: string[],
  opts: { env?: Record<string, string>; timeoutMs: number },
): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: ROOT,
      env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1', PIP_DISABLE_PIP_VERSION_CHECK: '1', ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    children.add(child);
    let output = '';
    child.stdout!.on('data', (d) => {
      output += d;
    });
    child.stderr!.on('data', (d) => {
      output += d;
    });
    const guard = setTimeout(() => {
      output += `\n[hang guard: killed after ${opts.timeoutMs} ms]\n`;
      killGroup(child, 'SIGTERM');
      setTimeout(() => killGroup(child, 'SIGKILL'), 5_000).unref();
    }, opts.timeoutMs);
    child.once('error', (e) => {
      clearTimeout(guard);
      children.delete(child);
      reject(e);
    });
    child.once('close', (code) => {
      clearTimeout(guard);
      children.delete(child);
      resolve({ code, output });
    });
  });
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  try {
    if (child.pid) process.kill(-child.pid, signal);
  } catch {
    // already gone
  }
}

/**
 * The wheels of the package's dependencies (httpx, websockets, pytest... and setuptools to build it), fetched once
 * through pip's configured index (the machine's mirror here) into node_modules/.cache/onmemos-py, keyed by the
 * pyproject and the Python version. Wheels never change once made, so runs (and worktrees) may share them; a new
 * set is made aside and renamed into place.
 */
async function wheelhouse(python: string, pkg: string): Promise<string> {
  const version = spawnSync(python, ['-c', 'import sys; print(sys.version)'], { encoding: 'utf8' }).stdout;
  const key = createHash('sha256')
    .update(readFileSync(join(ROOT, 'sdk/python/pyproject.toml')))
    .update(version)
    .digest('hex')
    .slice(0, 16);
  const cache = join(ROOT, 'node_modules/.cache/onmemos-py');
  const wheels = join(cache, `wheels-${key}`);
  if (existsSync(join(wheels, 'complete'))) return wheels;
  mkdirSync(cache, { recursive: true });
  const making = mkdtempSync(join(cache, `making-${key}-`));
  const made = await run(
    python,
    ['-m', 'pip', 'wheel', '--quiet', '--wheel-dir', making, `${pkg}[test]`, 'setuptools'],
    { timeoutMs: 600_000 },
  );
  if (made.code !== 0) {
    rmSync(making, { recursive: true, force: true });
    throw new Error(`pip wheel failed:\n${made.output}`);
  }
  for (const f of readdirSync(making)) if (f.startsWith('onmemos-')) rmSync(join(making, f));
  writeFileSync(join(making, 'complete'), '');
  try {
    renameSync(making, wheels);
  } catch {
    rmSync(making, { recursive: true, force: true }); // another run made it first
  }
  return wheels;
}

afterAll(async () => {
  for (const child of children) killGroup(child, 'SIGKILL');
  // Whatever a killed pytest left: the sessions of its server's state directory, then the directory itself.
  if (existsSync(join(stateDir, 'local'))) {
    spawnSync(process.execPath, [BIN, '--local', 'rm', '--all'], {
      env: { ...process.env, ONMEMOS_STATE_DIR: stateDir, ONMEMOS_SERVER: '', ONMEMOS_API_KEY: '' },
      stdio: 'ignore',
      timeout: 120_000,
    });
  }
  rmSync(stateDir, { recursive: true, force: true });
  rmSync(dir, { recursive: true, force: true });
}, 180_000);

describe('the Python SDK (sdk/python)', () => {
  it('passes its pytest suite against a real onmemos serve', async (ctx) => {
    if (venvMissing) ctx.skip(venvMissing);
    const venv = join(dir, 'venv');
    const made = await run(PYTHON, ['-m', 'venv', venv], { timeoutMs: 120_000 });
    expect(made.code, made.output).toBe(0);
    // A copy of the package: pip builds in the source tree, and the checkout stays clean.
    const pkg = join(dir, 'pkg');
    cpSync(join(ROOT, 'sdk/python'), pkg, {
      recursive: true,
      filter: (src) => !/(^|\/)(build|tests|__pycache__|[^/]*\.egg-info)$/.test(src),
    });
    const python = join(venv, 'bin/python');
    const wheels = await wheelhouse(python, pkg);
    // Offline from the wheelhouse: the package itself is built from the copy, and installed as a user would.
    const installed = await run(
      python,
      ['-m', 'pip', 'install', '--quiet', '--no-index', '--find-links', wheels, `${pkg}[test]`],
      { timeoutMs: 300_000 },
    );
    expect(installed.code, installed.output).toBe(0);

    const junit = join(dir, 'junit.xml');
    const tested = await run(
      python,
      [
        '-m',
        'pytest',
        '-q',
        '-p',
        'no:cacheprovider',
        '-c',
        'sdk/python/pyproject.toml',
        '--rootdir',
        'sdk/python',
        `--junitxml=${junit}`,
        'sdk/python/tests',
      ],
      { env: { ONMEMOS_PY_SDK_STATE_DIR: stateDir, ONMEMOS_NODE: process.execPath }, timeoutMs: 480_000 },
    );
    expect(tested.code, tested.output).toBe(0);
    const xml = readFileSync(junit, 'utf8');
    const suite = /<testsuite [^>]*>/.exec(xml)?.[0] ?? '';
    const attr = (name: string) => Number(new RegExp(`\\b${name}="(\\d+)"`).exec(suite)?.[1] ?? Number.NaN);
    expect({
      tests: attr('tests'),
      failures: attr('failures'),
      errors: attr('errors'),
      skipped: attr('skipped'),
    }).toEqual({ tests: EXPECTED_TESTS, failures: 0, errors: 0, skipped: 0 });
  }, 900_000);
});
