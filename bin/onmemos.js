#!/usr/bin/env node
// The only place onmemos exits. CommonJS (bin/package.json says so), like dist/cli.cjs: an ES-module entry point
// costs Node 20 several ms of start-up.
'use strict';
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 20 || (major === 20 && minor < 18)) {
  process.stderr.write(`onmemos: needs Node.js 20.18 or newer; this is ${process.version}\n`);
  process.exit(125);
}

// Descriptors the caller left open without close-on-exec would pass to every process onmemos starts: close them.
// Node's own are all close-on-exec (flag 02000000 in /proc/self/fdinfo).
closeInheritedFds();

/**
 * process.stdout and process.stderr, made on first use (making one costs ~2.5 ms for a pipe; an exec whose output
 * goes to the command itself never makes stdout). A reader that goes away (`onmemos ls | head -1`) is not an error
 * of ours.
 */
const madeStdio = new Set();
function stdio(name) {
  const s = process[name];
  if (!madeStdio.has(s)) {
    madeStdio.add(s);
    s.on('error', () => {});
  }
  return s;
}

if (process.argv[2] === 'agent') runAgent();
else runMain();

/**
 * `onmemos agent` (in a workspace container) runs its own bundle, dist/cloud-agent.cjs, without the CLI's: it is
 * up in about the time node itself takes, and writes no code cache into the workspace user's home.
 */
function runAgent() {
  const { agentMain } = require('../dist/cloud-agent.cjs');
  const io = { env: process.env, stdout: stdio('stdout'), stderr: stdio('stderr'), signals: process };
  agentMain(process.argv.slice(3), io)
    .catch((e) => {
      process.stderr.write(`onmemos agent: ${e instanceof Error ? e.message : String(e)}\n`);
      return 1;
    })
    .then(async (code) => {
      await Promise.all([process.stdout, process.stderr].map((s) => new Promise((resolve) => s.write('', resolve))));
      process.exit(code);
    });
}

function runMain() {
  // dist/cli.cjs imports its ES-module dependencies through this (see scripts/build.mjs).
  globalThis.__onmemosImport = (specifier) => import(specifier);
  const cli = loadCli();
  const { runCli, defaultRegistry } = cli.exports;

  (async () => {
    const code = await runCli(process.argv.slice(2), {
      // A getter: process.stdin is made (~2 ms) only by a command that reads it, or asks whether it is a terminal.
      get stdin() {
        return process.stdin;
      },
      stdinIsNull: isDevNull(0),
      get stdout() {
        return stdio('stdout');
      },
      get stderr() {
        return stdio('stderr');
      },
      outputFds: { stdout: 1, stderr: 2 },
      // Without making process.stderr (a create asks, to show its progress on a terminal).
      get stderrIsTTY() {
        return require('node:tty').isatty(2);
      },
      env: process.env,
      registry: defaultRegistry(process.env),
      signals: process,
    });
    // stdout and stderr may be asynchronous (pipes, here): let what is queued reach the reader before exiting.
    await Promise.all([...madeStdio].map((s) => new Promise((resolve) => s.write('', resolve))));
    cli.saveCache();
    process.exit(code);
  })();
}

/**
 * dist/cli.cjs, compiled with V8's code cache when there is one: compiling the bundle is ~4 ms of every start-up
 * (Node 20 has no module.enableCompileCache). A cache is made once per command (exec, ls, ...), after it ran, so
 * it holds the functions that command compiled, in <state dir>/cache, named by the Node version, the bundle's size
 * and mtime and the command; V8 rejects one that does not fit (then a new one is written). Only a file of our own uid that no one else
 * may write is used: it is code. Any trouble with the cache falls back to a plain require.
 */
function loadCli() {
  const fs = require('node:fs');
  const path = require('node:path');
  const file = path.join(__dirname, '..', 'dist', 'cli.cjs');
  const plain = { exports: undefined, saveCache() {} };
  let script;
  let cacheFile;
  let cached;
  let key;
  try {
    const vm = require('node:vm');
    const Module = require('node:module');
    const st = fs.statSync(file);
    const env = process.env;
    const state =
      env.ONMEMOS_STATE_DIR ||
      path.join(env.XDG_STATE_HOME || path.join(require('node:os').homedir(), '.local', 'state'), 'onmemos');
    key = `${process.version}-${process.arch}-${st.size}-${Math.floor(st.mtimeMs)}`;
    // One cache per command: each holds what its command compiled (exec's path is not create's).
    const verb = process.argv.slice(2).find((a) => !a.startsWith('-')) ?? '';
    cacheFile = path.join(state, 'cache', `cli-${key}-${/^[a-z]{1,16}$/.test(verb) ? verb : 'other'}.v8`);
    try {
      const fd = fs.openSync(cacheFile, 'r');
      try {
        const c = fs.fstatSync(fd);
        if (c.uid === process.getuid() && (c.mode & 0o022) === 0) cached = fs.readFileSync(fd);
      } finally {
        fs.closeSync(fd);
      }
    } catch {}
    // ASCII (scripts/build.mjs makes it so): latin1 is the same text, without decoding UTF-8.
    script = new vm.Script(Module.wrap(fs.readFileSync(file, 'latin1')), {
      filename: file,
      cachedData: cached,
    });
  } catch {
    plain.exports = require(file);
    return plain;
  }
  const mod = { exports: {} };
  script
    .runInThisContext()
    .call(mod.exports, mod.exports, require('node:module').createRequire(file), mod, file, path.dirname(file));
  return {
    exports: mod.exports,
    saveCache() {
      if (cached && !script.cachedDataRejected) return;
      try {
        fs.mkdirSync(path.dirname(cacheFile), { recursive: true, mode: 0o700 });
        const tmp = `${cacheFile}.${process.pid}`;
        fs.writeFileSync(tmp, script.createCachedData(), { mode: 0o600 });
        fs.renameSync(tmp, cacheFile);
        for (const name of fs.readdirSync(path.dirname(cacheFile))) {
          if (/^cli-.*\.v8$/.test(name) && !name.startsWith(`cli-${key}-`))
            fs.rmSync(path.join(path.dirname(cacheFile), name));
        }
      } catch {}
    },
  };
}

/** Whether fd is /dev/null (character device 1:3). */
function isDevNull(fd) {
  try {
    const st = require('node:fs').fstatSync(fd);
    return st.isCharacterDevice() && st.rdev === 0x103;
  } catch {
    return false;
  }
}

function closeInheritedFds() {
  const fs = require('node:fs');
  let names = [];
  try {
    names = fs.readdirSync('/proc/self/fd');
  } catch {
    return;
  }
  for (const name of names) {
    const fd = Number(name);
    if (!(fd > 2)) continue;
    try {
      const flags = /flags:\s*([0-7]+)/.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
      if (flags && (Number.parseInt(flags[1], 8) & 0o2000000) === 0) fs.closeSync(fd);
    } catch {}
  }
}
