/**
 * The onmemos workspace image as far as the fake needs it: what `onmemos agent` needs to run inside a local
 * sandbox, which sees only the host's /usr and /etc, never this repository. The files are copied into a staging
 * directory once, packed into a tar, and unpacked at IMAGE_DIR in each sandbox whose container runs `onmemos`
 * (the way the local provider hands its own agent, dist/agent.cjs, to each sandbox — but through an exec, since the
 * fake does not change how the local provider builds a sandbox):
 *
 *   bin/onmemos.js, bin/package.json, bin/onmemos → onmemos.js   the real binary, which runs dist/cloud-agent.cjs
 *   dist/cloud-agent.cjs                                        `onmemos agent` (built by `npm run build` once the
 *                                                               agent is there: branch h-agent)
 *   node_modules/node-pty/{package.json,lib,build/Release}      for tty execs
 */
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, symlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { packageRoot } from '../../../src/paths.js';

/** Where the image's files are in a sandbox; its bin/ leads the container's PATH. */
export const IMAGE_DIR = '/tmp/onmemos-image';
export const IMAGE_PATH = `${IMAGE_DIR}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`;

/** The agent package the fake puts in its sandboxes: ONMEMOS_FAKE_AGENT_ROOT, else this package. */
export function agentRoot(env: NodeJS.ProcessEnv = process.env): string {
  return env.ONMEMOS_FAKE_AGENT_ROOT || packageRoot();
}

export class OnmemosImage {
  private tar: Buffer | undefined;

  constructor(
    /** A package root with bin/onmemos.js and dist/cloud-agent.cjs. */
    readonly root: string,
    /** Where the staging copy goes (in the fake's own directory). */
    private readonly staging: string,
  ) {}

  /** Why `onmemos agent` cannot run from this image, or undefined when it can. */
  missing(): string | undefined {
    for (const f of ['bin/onmemos.js', 'dist/cloud-agent.cjs']) {
      if (!existsSync(join(this.root, f))) {
        return `${join(this.root, f)} is missing (onmemos agent comes with branch h-agent; then npm run build, or set ONMEMOS_FAKE_AGENT_ROOT to a package root that has it)`;
      }
    }
    return undefined;
  }

  /** The image as a tar stream (made once). */
  tarball(): Buffer {
    if (this.tar) return this.tar;
    const s = this.staging;
    mkdirSync(join(s, 'bin'), { recursive: true });
    mkdirSync(join(s, 'dist'), { recursive: true });
    cpSync(join(this.root, 'bin', 'onmemos.js'), join(s, 'bin', 'onmemos.js'));
    if (existsSync(join(this.root, 'bin', 'package.json'))) {
      cpSync(join(this.root, 'bin', 'package.json'), join(s, 'bin', 'package.json'));
    }
    symlinkSync('onmemos.js', join(s, 'bin', 'onmemos'));
    cpSync(join(this.root, 'dist', 'cloud-agent.cjs'), join(s, 'dist', 'cloud-agent.cjs'));
    try {
      const pty = dirname(createRequire(join(this.root, 'package.json')).resolve('node-pty/package.json'));
      const to = join(s, 'node_modules', 'node-pty');
      cpSync(join(pty, 'package.json'), join(to, 'package.json'));
      cpSync(join(pty, 'lib'), join(to, 'lib'), {
        recursive: true,
        filter: (f) => !f.endsWith('.map') && !f.endsWith('.test.js'),
      });
      cpSync(join(pty, 'build', 'Release', 'pty.node'), join(to, 'build', 'Release', 'pty.node'));
    } catch {
      // Without node-pty only tty execs fail (the agent loads it with the first one).
    }
    this.tar = execFileSync('tar', ['-C', s, '--owner=0', '--group=0', '-cf', '-', '.'], {
      maxBuffer: 64 << 20,
    });
    return this.tar;
  }
}
