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

// A reader that goes away (`onmemos ls | head -1`) is not an error of ours.
for (const s of [process.stdout, process.stderr]) s.on('error', () => {});

const { runCli, defaultRegistry } = require('../dist/cli.cjs');

(async () => {
  const code = await runCli(process.argv.slice(2), {
    stdin: process.stdin,
    stdout: process.stdout,
    stderr: process.stderr,
    env: process.env,
    registry: defaultRegistry(process.env),
    signals: process,
  });
  // stdout and stderr may be asynchronous (pipes, here): let what is queued reach the reader before exiting.
  await Promise.all([process.stdout, process.stderr].map((s) => new Promise((resolve) => s.write('', resolve))));
  process.exit(code);
})();

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
