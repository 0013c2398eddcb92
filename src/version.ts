import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from './paths.js';

/** Set by the build (scripts/build.mjs) from package.json; undefined when the sources run as they are (tests). */
declare const __ONMEMOS_VERSION__: string | undefined;

/** The package version, from package.json (one source of truth): put in by the build, else read at start-up. */
export const VERSION: string =
  typeof __ONMEMOS_VERSION__ === 'string'
    ? __ONMEMOS_VERSION__
    : (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;
