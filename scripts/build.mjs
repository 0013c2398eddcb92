// Builds dist/: one esbuild bundle with code splitting (start-up reads a few files instead of a module graph,
// and code a command does not use is not loaded), plus tsc declarations for the SDK's types.
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { build } from 'esbuild';

rmSync('dist', { recursive: true, force: true });
await build({
  entryPoints: ['src/cli.ts', 'src/index.ts'],
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20.18',
  outdir: 'dist',
  chunkNames: 'chunk-[hash]',
  // Native or large optional modules stay in node_modules and load only when used.
  external: ['node-pty', 'ws', 'undici', 'chalk', 'conf', 'ink'],
  // commander is CommonJS: give the ESM bundle a require() for its built-in imports.
  banner: { js: "import { createRequire as __onmemosCreateRequire } from 'node:module'; const require = __onmemosCreateRequire(import.meta.url);" },
  logLevel: 'warning',
});
execFileSync('npx', ['tsc', '-p', 'tsconfig.build.json', '--emitDeclarationOnly'], { stdio: 'inherit' });
