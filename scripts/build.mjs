// Builds dist/ with esbuild, plus tsc declarations for the SDK's types.
// - dist/cli.cjs: the CLI, one CommonJS file. Start-up reads one file, and built-in modules load through
//   require(), which is several ms cheaper per process than their ESM facades on Node 20. Code a command does
//   not use (the local provider, node-pty) is evaluated only when first needed.
// - dist/index.js: the SDK, an ES module (the package is ESM).
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { build } from 'esbuild';

rmSync('dist', { recursive: true, force: true });
const { version } = JSON.parse(readFileSync('package.json', 'utf8'));
const common = {
  bundle: true,
  platform: 'node',
  target: 'node20.18',
  // Native or optional modules stay in node_modules and load only when used. ws is bundled: every exec loads it,
  // and an external one would go through the ES-module loader (import() of a CommonJS package), ~20 ms.
  external: ['node-pty', 'undici', 'chalk', 'conf', 'ink', 'react', 'bufferutil', 'utf-8-validate', '@kubernetes/client-node', '@google-cloud/run', '@google-cloud/workstations', 'google-auth-library'],
  logLevel: 'warning',
  plugins: [lazyRequires()],
  // src/version.ts: the version without reading package.json at every start-up.
  define: { __ONMEMOS_VERSION__: JSON.stringify(version) },
};
await build({
  ...common,
  plugins: [...common.plugins, vendored(), builtinImportsAsRequire({ viaBin: true })],
  entryPoints: ['src/cli.ts'],
  outfile: 'dist/cli.cjs',
  format: 'cjs',
  define: { ...common.define, 'import.meta.url': '__onmemos_import_meta_url' },
  banner: {
    js:
      "const __onmemos_import_meta_url = require('node:url').pathToFileURL(__filename).href;\n" +
      'const __onmemos_import = globalThis.__onmemosImport ?? ((s) => import(s));',
  },
});
// dist/kube.cjs: what the gke provider uses of @kubernetes/client-node, in one file. Loading the package itself
// (hundreds of ES modules) costs ~450 ms; this, ~80 ms. Only a command that uses gke loads it.
await build({
  ...common,
  external: ['bufferutil', 'utf-8-validate'],
  stdin: { contents: "export { KubeConfig, CoreV1Api } from '@kubernetes/client-node';", resolveDir: '.', loader: 'js' },
  outfile: 'dist/kube.cjs',
  format: 'cjs',
});
// dist/agent.cjs: the agent inside each local session, self-contained (the session sees no node_modules): ws and
// node-pty's JavaScript are bundled; node-pty's native module is copied in next to it (build/Release/pty.node).
await build({
  ...common,
  external: ['bufferutil', 'utf-8-validate'],
  plugins: [...common.plugins, builtinImportsAsRequire()],
  entryPoints: ['src/agent/entry.ts'],
  outfile: 'dist/agent.cjs',
  format: 'cjs',
  define: { ...common.define, 'import.meta.url': '__onmemos_import_meta_url' },
  banner: { js: "const __onmemos_import_meta_url = require('node:url').pathToFileURL(__filename).href;" },
  logOverride: { 'unsupported-require-call': 'silent' },
});
// dist/fdpass.node: the fdpass native module (native/fdpass.c, built by node-gyp on npm install), next to
// dist/agent.cjs and dist/cli.cjs, which load it from there; the local provider passes it into each sandbox as it
// does pty.node. Without it (not built) exec relays output over the WebSocket as before.
// node-gyp (npm's own: npm run sets npm_config_node_gyp) brings build/Release up to date with native/: `make`
// rebuilds what changed; an install that predates a native target (or never configured one) gets a rebuild.
if (process.env.npm_config_node_gyp) {
  const configured = existsSync('build/Makefile') && ['fdpass.node', 'launcher'].every((f) => existsSync(`build/Release/${f}`));
  try {
    execFileSync(process.execPath, [process.env.npm_config_node_gyp, configured ? 'build' : 'rebuild', '--loglevel=warn'], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
  } catch {}
}
if (existsSync('build/Release/fdpass.node')) {
  copyFileSync('build/Release/fdpass.node', 'dist/fdpass.node');
  // fdexec (native/fdexec.c): the warm start's last step for such an exec, passed into each sandbox the same way.
  if (existsSync('build/Release/fdexec')) copyFileSync('build/Release/fdexec', 'dist/fdexec');
}
else console.warn('build: build/Release/fdpass.node is missing (node-gyp rebuild): exec will relay all output');
// dist/launcher (native/launcher.c): each local session's launcher. The local provider needs it.
if (existsSync('build/Release/launcher')) copyFileSync('build/Release/launcher', 'dist/launcher');
else console.warn('build: build/Release/launcher is missing (node-gyp rebuild failed): the local provider cannot start sessions');
// dist/cloud-agent.cjs: `onmemos agent` in a workspace container (Cloud Run, images/), which bin/onmemos.js runs
// without dist/cli.cjs: the agent, ws and node's own argument parser. node-pty stays in node_modules (an image
// installs the package with its dependencies) and loads with the first tty.
await build({
  ...common,
  external: ['node-pty', 'bufferutil', 'utf-8-validate'],
  plugins: [...common.plugins, builtinImportsAsRequire({ commonjs: ['node-pty'] })],
  entryPoints: ['src/agent/cloud-main.ts'],
  outfile: 'dist/cloud-agent.cjs',
  format: 'cjs',
});
await build({
  ...common,
  entryPoints: ['src/index.ts'],
  outfile: 'dist/index.js',
  format: 'esm',
  // Bundled CommonJS dependencies (commander) need a require() inside the ES module.
  banner: { js: "import { createRequire as __onmemosCreateRequire } from 'node:module'; const require = __onmemosCreateRequire(import.meta.url);" },
});
// dist/web: the web UI that onmemos serve serves (src/server/web.ts): the dashboard and terminal scripts and their
// stylesheets, for browsers, minified and named by content hash (cached for good); manifest.json maps each entry
// (dashboard.js, terminal.css, …) to its file. xterm and its stylesheet are bundled in: nothing loads from a CDN.
const web = await build({
  bundle: true,
  platform: 'browser',
  format: 'esm',
  target: ['chrome110', 'firefox115', 'safari16'],
  minify: true,
  entryPoints: ['web/dashboard.ts', 'web/terminal.ts', 'web/app.css', 'web/terminal.css'],
  outdir: 'dist/web',
  entryNames: '[name]-[hash]',
  assetNames: '[name]-[hash]',
  metafile: true,
  logLevel: 'warning',
});
const entries = {};
for (const [file, out] of Object.entries(web.metafile.outputs)) {
  if (!out.entryPoint) continue;
  const name = out.entryPoint.split('/').pop().replace(/\.ts$/, '.js');
  entries[name] = file.split('/').pop();
}
writeFileSync('dist/web/manifest.json', `${JSON.stringify({ entries }, null, 2)}\n`);
execFileSync('npx', ['tsc', '-p', 'tsconfig.build.json', '--emitDeclarationOnly'], { stdio: 'inherit' });

/**
 * Modules that load built-ins at start-up only for features onmemos does not use on the path that loads them:
 * those requires are deferred to first use (a Proxy that requires on first property access). commander loads
 * node:child_process for executable subcommands (~5 ms of every start-up); ws loads https and tls (for wss:,
 * which only remote mode over TLS needs), zlib (for permessage-deflate, which onmemos turns off), and http and
 * crypto (for its own handshakes, which a local exec does without): ~12 ms of every exec. Each replaced line must
 * still be there, or the build fails (the package changed).
 */
function lazyRequires() {
  const lazy = (name, mod) =>
    `let __lazy_${name}; const ${name} = new Proxy({}, { get: (_, k) => (__lazy_${name} ??= require('${mod}'))[k] });`;
  // A function of a module whose line destructures it (`const { f } = require(m)`): loaded on its first call.
  const lazyFns = (names, mod) =>
    names.map((f) => `const ${f} = (...a) => require('${mod}').${f}(...a);`).join(' ');
  const table = [
    [/commander[\\/]lib[\\/]command\.js$/, [["const childProcess = require('node:child_process');", 'childProcess', 'node:child_process']]],
    [
      /ws[\\/]lib[\\/]websocket\.js$/,
      [
        ["const https = require('https');", 'https', 'https'],
        ["const tls = require('tls');", 'tls', 'tls'],
        // http and crypto (~4 ms together) serve ws's own client handshake, which a local exec does not use
        // (src/exec/unix-ws.ts), and its server's.
        ["const http = require('http');", 'http', 'http'],
        ["const { randomBytes, createHash } = require('crypto');", lazyFns(['randomBytes', 'createHash'], 'crypto')],
      ],
    ],
    [
      /ws[\\/]lib[\\/]websocket-server\.js$/,
      [
        ["const http = require('http');", 'http', 'http'],
        ["const { createHash } = require('crypto');", lazyFns(['createHash'], 'crypto')],
      ],
    ],
    [/ws[\\/]lib[\\/]sender\.js$/, [["const { randomFillSync } = require('crypto');", lazyFns(['randomFillSync'], 'crypto')]]],
    // ws takes native masking from http where Node has it (newer than 20, whose http has neither function).
    [
      /ws[\\/]lib[\\/]buffer-util\.js$/,
      [
        [
          "const { websocketMask, websocketUnmask } = require('http');",
          "const { websocketMask, websocketUnmask } = Number(process.versions.node.split('.')[0]) > 20 ? require('http') : {};",
        ],
      ],
    ],
    [/ws[\\/]lib[\\/]permessage-deflate\.js$/, [["const zlib = require('zlib');", 'zlib', 'zlib']]],
  ];
  return {
    name: 'lazy-requires',
    setup(b) {
      for (const [filter, lines] of table) {
        b.onLoad({ filter }, (args) => {
          let src = readFileSync(args.path, 'utf8');
          for (const [eager, name, mod] of lines) {
            if (!src.includes(eager)) throw new Error(`'${eager}' not found in ${args.path}: the package changed`);
            src = src.replace(eager, mod === undefined ? name : lazy(name, mod));
          }
          return { contents: src, loader: 'js' };
        });
      }
    },
  };
}

/**
 * In dist/cli.cjs, @kubernetes/client-node is dist/kube.cjs, and the agent of `onmemos agent` is
 * dist/cloud-agent.cjs, each required when first used.
 */
function vendored() {
  return {
    name: 'vendored',
    setup(b) {
      b.onResolve({ filter: /^@kubernetes\/client-node$/ }, () => ({ path: './kube.cjs', external: true }));
      b.onResolve({ filter: /[\\/]agent[\\/]cloud-main\.js$/ }, () => ({ path: './cloud-agent.cjs', external: true }));
    },
  };
}

/**
 * In a CommonJS bundle, `await import('node:x')` of a built-in stays a real import(): the first one starts Node's
 * ES-module loader, ~4 ms (create paid it for child_process, http and net). A built-in's namespace has the same
 * named exports as its require(), so these become a resolved require(). With `viaBin` (dist/cli.cjs), the other
 * import()s (ES-module packages: conf, undici, chalk) go through bin/onmemos.js's import(): the bundle is compiled
 * there as a vm.Script (for the code cache), whose own import() would need an experimental loader option.
 * `commonjs` names external CommonJS packages whose import() becomes a require() too (the same exports).
 */
function builtinImportsAsRequire({ viaBin = false, commonjs = [] } = {}) {
  return {
    name: 'builtin-imports-as-require',
    setup(b) {
      b.onEnd((result) => {
        if (result.errors.length > 0) return;
        const file = b.initialOptions.outfile;
        const src = readFileSync(file, 'utf8');
        let out = src.replace(
          /\bimport\(("node:[a-z_/]+"|"\.\/kube\.cjs"|"\.\/cloud-agent\.cjs")\)/g,
          'Promise.resolve(require($1))',
        );
        for (const name of commonjs) out = out.replaceAll(`import("${name}")`, `Promise.resolve(require("${name}"))`);
        if (viaBin) {
          out = out.replace(/\bimport\(("[^"]+")\)/g, '__onmemos_import($1)');
          // bin/onmemos.js reads the bundle as latin1 (~2 ms quicker than decoding 800 KB of UTF-8), so it must be
          // ASCII. esbuild escapes every string, template and regular expression; what is left is in comments.
          out = out.replace(/[^\x00-\x7f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
        }
        writeFileSync(file, out);
      });
    },
  };
}
