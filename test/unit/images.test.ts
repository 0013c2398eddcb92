/**
 * The workspace images' recipes (images/<template>/Dockerfile). No Docker engine here, so each recipe is parsed and
 * its structure checked: the stages, the language and node on PATH, the non-root workspace user owning /workspace,
 * the document's variables, the port, tini and the agent as the command, nothing secret baked in; and the agent
 * bundle is run under this Node when it is the major the images install.
 */
import { readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { startAgent } from '../helpers/agent.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const TEMPLATES = { python: 'python:3.12-slim-bookworm', nodejs: 'node:20-bookworm-slim', go: 'golang:1.23-bookworm' };
/** What each template must have on PATH besides node, and where it comes from. */
const LANGUAGE: Record<string, RegExp> = { python: /^python:/, nodejs: /^node:/, go: /^golang:/ };

interface Instruction {
  keyword: string;
  args: string;
  line: number;
}

/** A Dockerfile as instructions: comments dropped, continuation lines joined, keywords upper-cased. */
function parseDockerfile(text: string): Instruction[] {
  const out: Instruction[] = [];
  let pending = '';
  let start = 0;
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trimEnd();
    if (!pending && (line.trim() === '' || line.trimStart().startsWith('#'))) continue;
    if (!pending) start = i + 1;
    if (pending && line.trimStart().startsWith('#')) continue; // a comment inside a continued instruction
    if (line.endsWith('\\')) {
      pending += `${line.slice(0, -1)} `;
      continue;
    }
    const whole = (pending + line).trim();
    pending = '';
    const m = /^(\S+)\s*(.*)$/s.exec(whole)!;
    out.push({ keyword: m[1]!.toUpperCase(), args: m[2]!.replace(/\s+/g, ' ').trim(), line: start });
  }
  return out;
}

/** The stages: each FROM and the instructions after it. */
function stages(ins: Instruction[]) {
  const list: { from: string; name?: string; body: Instruction[] }[] = [];
  for (const i of ins) {
    if (i.keyword === 'FROM') {
      const m = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(i.args)!;
      list.push({ from: m[1]!, name: m[2], body: [] });
    } else list.at(-1)?.body.push(i);
  }
  return list;
}

/** ENV KEY=VALUE pairs (the `ENV KEY=VALUE KEY2="v"` form). */
function envOf(body: Instruction[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const i of body.filter((b) => b.keyword === 'ENV')) {
    for (const m of i.args.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S*)/g))
      env[m[1]!] = m[2]!.replace(/^"|"$/g, '');
  }
  return env;
}

const read = (template: string) => readFileSync(join(ROOT, 'images', template, 'Dockerfile'), 'utf8');

describe('the workspace image recipes', () => {
  it('parses continuation lines and comments as Docker does', () => {
    expect(parseDockerfile('# c\nFROM a AS b\nRUN x \\\n  # inside\n && y\ncmd ["z"]\n')).toEqual([
      { keyword: 'FROM', args: 'a AS b', line: 2 },
      { keyword: 'RUN', args: 'x && y', line: 3 },
      { keyword: 'CMD', args: '["z"]', line: 6 },
    ]);
  });

  for (const [template, base] of Object.entries(TEMPLATES)) {
    describe(`images/${template}/Dockerfile`, () => {
      const text = read(template);
      const ins = parseDockerfile(text);
      const all = stages(ins);
      const final = all.at(-1)!;
      const body = final.body;
      const last = (keyword: string) => body.filter((i) => i.keyword === keyword).at(-1)?.args;

      it('builds the package in a Node 20 stage and runs on the slim base of its language', () => {
        expect(all).toHaveLength(2);
        expect(all[0]).toMatchObject({ from: 'node:20-bookworm', name: 'onmemos' });
        expect(final.from).toBe(base);
        expect(final.from).toMatch(LANGUAGE[template]!);
        // The package as npm publishes it, with the lock file's production dependencies.
        const build = all[0]!.body.map((i) => i.args).join('\n');
        expect(build).toMatch(/npm ci\b/);
        expect(build).toMatch(/npm run build/);
        expect(build).toMatch(/npm pack/);
        expect(build).toMatch(/npm ci --omit=dev/);
        expect(text.split('\n')[0]).toBe('# syntax=docker/dockerfile:1');
      });

      it('has python, node or go on PATH as its template says, node for the agent in every one', () => {
        const copies = body.filter((i) => i.keyword === 'COPY').map((i) => i.args);
        if (final.from.startsWith('node:')) expect(copies.some((c) => c.includes('/usr/local/bin/node'))).toBe(false);
        else expect(copies).toContain('--from=onmemos /usr/local/bin/node /usr/local/bin/node');
        expect(copies).toContain('--from=onmemos /opt/onmemos /opt/onmemos');
        expect(body.find((i) => i.keyword === 'RUN')?.args).toContain(
          'ln -s /opt/onmemos/bin/onmemos.js /usr/local/bin/onmemos',
        );
      });

      it('runs as the non-root user 1000, who owns /workspace, its WORKDIR and HOME', () => {
        const user = last('USER');
        expect(user).toBe('1000:1000'); // numeric, so that Kubernetes' runAsNonRoot can verify it
        const run = body
          .filter((i) => i.keyword === 'RUN')
          .map((i) => i.args)
          .join(' ');
        if (template === 'nodejs') expect(run).toMatch(/usermod --login workspace --home \/workspace node/);
        else expect(run).toMatch(/useradd --uid 1000 --user-group --home-dir \/workspace/);
        expect(run).toMatch(/mkdir -p \/workspace && chown 1000:1000 \/workspace/);
        expect(last('WORKDIR')).toBe('/workspace');
        // USER comes after everything that needs root.
        const userAt = body.findIndex((i) => i.keyword === 'USER');
        expect(body.slice(userAt).filter((i) => i.keyword === 'RUN' || i.keyword === 'COPY')).toEqual([]);
      });

      it("sets the document's variables with empty defaults", () => {
        expect(envOf(body)).toEqual({ HOME: '/workspace', WORKSPACE_ID: '', NAMESPACE: '', USER: '', BUCKET_NAME: '' });
      });

      it('exposes 8080 and runs `onmemos agent` under tini', () => {
        expect(last('EXPOSE')).toBe('8080');
        expect(JSON.parse(last('ENTRYPOINT')!)).toEqual(['/usr/bin/tini', '--']);
        expect(JSON.parse(last('CMD')!)).toEqual(['onmemos', 'agent']);
        expect(body.find((i) => i.keyword === 'RUN')?.args).toMatch(/apt-get install -y --no-install-recommends tini/);
      });

      it('bakes in no secret', () => {
        for (const i of ins) {
          if (i.keyword === 'ENV' || i.keyword === 'ARG') {
            expect(i.args, `line ${i.line}`).not.toMatch(/SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|API_KEY|PRIVATE/i);
          }
          if (i.keyword === 'COPY' || i.keyword === 'ADD') {
            expect(i.args, `line ${i.line}`).not.toMatch(/\.env\b|\.npmrc|\.pem\b|\.key\b|credentials|\.ssh|\.docker/i);
          }
          expect(i.args, `line ${i.line}`).not.toMatch(/--insecure-no-secret|ONMEMOS_AGENT_SECRET|--mount=type=secret/);
        }
        expect(ins.filter((i) => i.keyword === 'ADD')).toEqual([]);
      });
    });
  }

  it('share one build stage, word for word', () => {
    const first = (t: string) => stages(parseDockerfile(read(t)))[0];
    expect(first('nodejs')).toEqual(first('python'));
    expect(first('go')).toEqual(first('python'));
  });

  it('send Docker only what the build needs (.dockerignore, an allow list)', () => {
    const lines = readFileSync(join(ROOT, '.dockerignore'), 'utf8')
      .split('\n')
      .filter((l) => l && !l.startsWith('#'));
    expect(lines[0]).toBe('*');
    const allowed = lines.slice(1).map((l) => {
      expect(l.startsWith('!'), l).toBe(true);
      return l.slice(1).replace(/\/$/, '');
    });
    expect(allowed.sort()).toEqual(
      [
        'README.md',
        'bin',
        'binding.gyp',
        'native',
        'package-lock.json',
        'package.json',
        'scripts/build.mjs',
        'src',
        'tsconfig.build.json',
        'tsconfig.json',
      ].sort(),
    );
    // Everything the build reads is there: the build script's own inputs and the package's files.
    const build = readFileSync(join(ROOT, 'scripts', 'build.mjs'), 'utf8');
    for (const input of build.matchAll(/'(src\/[^']+|tsconfig[^']*\.json)'/g)) {
      expect(
        allowed.some((a) => input[1] === a || input[1]!.startsWith(`${a}/`)),
        input[1],
      ).toBe(true);
    }
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { files: string[] };
    for (const f of pkg.files.filter((f) => !f.startsWith('!') && f !== 'dist')) expect(allowed).toContain(f);
  });
});

describe('the agent bundle on the images’ Node', () => {
  const majors = Object.keys(TEMPLATES).map((t) => Number(/^FROM node:(\d+)-/m.exec(read(t))?.[1] ?? Number.NaN));
  const imageMajor = majors[0]!;

  it('is built for the Node major the images install, which the package supports', () => {
    expect(new Set(majors)).toEqual(new Set([20]));
    const target = /target: 'node(\d+)\.(\d+)'/.exec(readFileSync(join(ROOT, 'scripts', 'build.mjs'), 'utf8'));
    expect(Number(target?.[1])).toBe(imageMajor);
    const engines = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).engines.node as string;
    expect(Number(/^>=(\d+)\./.exec(engines)?.[1])).toBe(imageMajor);
  });

  it('needs nothing the package does not install, and nothing of the local provider', () => {
    const bundle = readFileSync(join(ROOT, 'dist', 'cloud-agent.cjs'), 'utf8');
    expect(bundle.length).toBeLessThan(300_000);
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { dependencies: object };
    const optional = ['bufferutil', 'utf-8-validate']; // ws's, required inside a try
    for (const [, name] of bundle.matchAll(/require\("([^"]+)"\)/g)) {
      const bare = name!.replace(/^node:/, '');
      if (builtinModules.includes(bare) || optional.includes(name!)) continue;
      expect(Object.keys(pkg.dependencies), name).toContain(name);
    }
    for (const local of ['src/providers/local/local.ts', 'src/providers/local/sandbox.ts', 'bwrap']) {
      expect(bundle).not.toContain(local);
    }
  });

  it.skipIf(Number(process.versions.node.split('.')[0]) !== imageMajor)(
    `starts and answers under Node ${imageMajor} (this one: ${process.versions.node})`,
    async () => {
      const agent = await startAgent();
      try {
        const res = await fetch(`${agent.base}/health`);
        expect(await res.json()).toEqual({ status: 'ok' });
        const r = await fetch(`${agent.base}/v1/execute`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-onmemos-secret': 'agent-test-secret-0123456789abcdef' },
          body: JSON.stringify({ command: 'node -p process.versions.node' }),
        });
        // A command finds node of that major on PATH (here the host's; in an image, the agent's).
        expect(((await r.json()) as { stdout: string }).stdout.trim()).toMatch(new RegExp(`^${imageMajor}\\.`));
      } finally {
        await agent.stop();
      }
    },
  );
});
