/**
 * The provider conformance suite: what every Provider must do, written once and run against each (local,
 * remote ∘ serve ∘ local, the in-process fake; each cloud provider against its fake). Everything goes through the
 * registry (the path every command and the server take), and each test is bounded.
 *
 *   providerConformance('local', async () => ({ registry, provider, expect: {...}, teardown }))
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InterruptedError, NotFoundError, type OnmemosError } from '../../src/errors.js';
import { exitCodeOf, type RemoteProcess } from '../../src/exec/process.js';
import { createSession, type ProviderRegistry } from '../../src/providers/index.js';
import { type Provider, runsInBackground } from '../../src/providers/provider.js';
import { executeBuffered } from '../../src/server/execute.js';
import { parseCreateRequest, type Session } from '../../src/session/model.js';
import { heartbeatAcrossIdle } from '../helpers/background.js';

export interface Subject {
  registry: ProviderRegistry;
  /** The provider sessions are made with (what the registry's forCreate picks). */
  provider: Provider;
  /** What this provider is expected to do where the contract lets providers differ. */
  expects: { stop: boolean; tty: boolean };
  teardown(): Promise<void>;
}

/** Collects a process's output and exit code, with a hang guard. */
export async function finish(p: RemoteProcess, input?: Buffer | string, guardMs = 30_000) {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  p.stdout.on('data', (d: Buffer) => out.push(d));
  p.stderr.on('data', (d: Buffer) => err.push(d));
  if (input !== undefined) p.stdin.end(input);
  const guard = setTimeout(() => p.kill('SIGKILL'), guardMs);
  const status = await p.exit;
  clearTimeout(guard);
  return { code: exitCodeOf(status), stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString() };
}

async function poll<T>(fn: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let v = await fn();
  while (!ok(v) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    v = await fn();
  }
  return v;
}

export function providerConformance(name: string, setup: () => Promise<Subject>): void {
  describe(`provider conformance: ${name}`, () => {
    let s: Subject;
    let ns = 0;
    /** A namespace of its own for each test, so lists are the test's alone. */
    const namespace = () => `conf-${process.pid}-${++ns}`;
    const made: string[] = [];
    /** No network where the provider can (cheaper: no slirp4netns), else what it has. */
    const network = () => (s.provider.capabilities.networks.includes('isolated') ? 'isolated' : 'outbound');
    const create = async (fields: Record<string, unknown> = {}) => {
      const session = await createSession(
        s.registry,
        parseCreateRequest({ ttl_minutes: 10, network: network(), namespace: namespace(), ...fields }),
      );
      made.push(session.id);
      return session;
    };
    const run = async (id: string, argv: string[], o: { input?: Buffer | string; cwd?: string } = {}) =>
      finish(await s.provider.exec(id, { argv, stdin: o.input !== undefined, cwd: o.cwd }), o.input);

    beforeAll(async () => {
      s = await setup();
    });
    afterAll(async () => {
      for (const id of made) await s.provider.delete(id).catch(() => {});
      await s.teardown();
    });

    describe('lifecycle', () => {
      let session: Session;
      beforeAll(async () => {
        session = await create({ user: 'alice', template: 'python' });
      });

      it('create answers the document fields, running', () => {
        expect(session).toMatchObject({
          namespace: expect.stringMatching(/^conf-/),
          user: 'alice',
          template: 'python',
        });
        expect(session.status).toBe('running');
        expect(session.id).toMatch(/^ws-conf-\d+-\d+-alice-\d+-[0-9a-z]{4}$/);
        for (const k of ['url', 'websocket', 'ssh', 'created_at', 'expires_at', 'details'])
          expect(session).toHaveProperty(k);
        expect(Date.parse(session.expires_at) - Date.parse(session.created_at)).toBeGreaterThan(9 * 60_000);
      });

      it('get and locate find it; list (filtered) has it and only what matches', async () => {
        expect((await s.provider.get(session.id)).id).toBe(session.id);
        expect((await s.registry.locate(session.id)).session.status).toBe('running');
        const { sessions, unreachable } = await s.registry.list({ namespace: session.namespace });
        expect(unreachable).toEqual([]);
        expect(sessions.map((x) => x.id)).toEqual([session.id]);
        expect((await s.registry.list({ namespace: session.namespace, user: 'bob' })).sessions).toEqual([]);
      });

      it('connect: the shell argv, and the exec WebSocket or SSH its transports say', async () => {
        const info = await s.provider.connect(session.id);
        expect(info).toMatchObject({ id: session.id, status: 'running' });
        expect(info.shell?.argv.length).toBeGreaterThan(0);
        const transports = s.provider.capabilities.exec;
        if (transports.includes('websocket')) expect(info.exec?.protocol).toBe('v5.channel.k8s.io');
        else expect(info.ssh).toMatchObject({ port: 22, user: expect.any(String) });
      });

      it('extend moves the expiry to that many minutes from now', async () => {
        const before = Date.now();
        const extended = await s.provider.extend!(session.id, 120);
        const at = Date.parse(extended.expires_at);
        expect(at).toBeGreaterThanOrEqual(before + 119 * 60_000);
        expect(at).toBeLessThanOrEqual(Date.now() + 121 * 60_000);
        expect(Date.parse((await s.provider.get(session.id)).expires_at)).toBe(at);
      });

      it('stop and start where the provider can; refused as unsupported where it cannot', async () => {
        if (!s.expects.stop) {
          if (s.provider.stop && s.provider.capabilities.lifecycle.stop) {
            await expect(s.provider.stop(session.id)).rejects.toMatchObject({ code: 'unsupported' });
          } else {
            expect(s.provider.capabilities.lifecycle.stop).toBe(false);
          }
          return;
        }
        const other = await create();
        await run(other.id, ['sh', '-c', 'echo kept > kept.txt']);
        expect((await s.provider.stop!(other.id)).status).toBe('stopped');
        await expect(s.provider.exec(other.id, { argv: ['true'] })).rejects.toMatchObject({ code: 'conflict' });
        expect((await s.provider.start!(other.id)).status).toBe('running');
        expect((await run(other.id, ['cat', 'kept.txt'])).stdout.toString()).toBe('kept\n');
      });

      it('delete removes it; then it is not found, and a second delete says so', async () => {
        const gone = await create();
        await s.provider.delete(gone.id);
        await expect(s.provider.get(gone.id)).rejects.toBeInstanceOf(NotFoundError);
        await expect(s.registry.locate(gone.id)).rejects.toBeInstanceOf(NotFoundError);
        await expect(s.provider.delete(gone.id)).rejects.toBeInstanceOf(NotFoundError);
      });
    });

    describe('exec', () => {
      let id: string;
      beforeAll(async () => {
        id = (await create()).id;
      });

      it('passes argv exactly: spaces, quotes, $, empty strings, newlines', async () => {
        const args = ['a b', '$HOME', '"q"', "it's", '', 'x\ny', '--', '-c'];
        const r = await run(id, ['printf', '%s|', ...args]);
        expect(r.stdout.toString()).toBe(`${args.join('|')}|`);
        expect(r.code).toBe(0);
      });

      it('exit codes, and 128+N for a signal', async () => {
        expect((await run(id, ['sh', '-c', 'exit 7'])).code).toBe(7);
        expect((await run(id, ['sh', '-c', 'kill -TERM $$'])).code).toBe(143);
        expect((await run(id, ['sh', '-c', 'kill -KILL $$'])).code).toBe(137);
      });

      it('stdin reaches the command and then EOF; stderr stays apart from stdout', async () => {
        const r = await run(id, ['sh', '-c', 'wc -c; echo to-stderr >&2'], { input: 'abc' });
        expect(r.stdout.toString().trim()).toBe('3');
        expect(r.stderr).toBe('to-stderr\n');
        // Without stdin the command reads EOF at once.
        expect((await run(id, ['cat'])).stdout.length).toBe(0);
      });

      it('is binary safe both ways (every byte value, 1 MiB)', async () => {
        const data = Buffer.alloc(1 << 20);
        for (let i = 0; i < data.length; i++) data[i] = (i * 7 + (i >> 8)) & 0xff;
        const r = await run(id, ['cat'], { input: data });
        expect(r.stdout.equals(data)).toBe(true);
      });

      it('a timeout kills the command: returncode 124', async () => {
        const r = await executeBuffered(s.provider, id, 'sleep 30', 1);
        expect(r.returncode).toBe(124);
        expect(r.success).toBe(false);
      });

      it('kill leaves nothing of the command behind, background children included', async () => {
        // A duration of its own marks this test's sleeps in /proc.
        const marker = `sleep ${3000 + Math.floor(Math.random() * 5000)}`;
        const p = await s.provider.exec(id, { argv: ['sh', '-c', `${marker} & ${marker} & wait`] });
        const count = async () =>
          Number(
            (
              await run(id, [
                'sh',
                '-c',
                `n=0; for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < "$f" 2>/dev/null | grep -q '^${marker} ' && n=$((n+1)); done; echo $n`,
              ])
            ).stdout.toString(),
          );
        expect(await poll(count, (n) => n === 2)).toBe(2);
        p.kill('SIGKILL');
        await p.exit;
        expect(await poll(count, (n) => n === 0)).toBe(0);
      });

      it('a background process started by one exec keeps running while the session is idle, for the next exec', async (ctx) => {
        const caps = s.provider.capabilities;
        // Only where the provider promises it for a session made without cpu_always: never a pass by accident.
        if (!runsInBackground(caps, { cpu_always: false })) {
          ctx.skip(
            `provider ${s.provider.kind} declares backgroundWhileIdle: '${caps.backgroundWhileIdle}'` +
              (caps.backgroundWhileIdle === 'cpu_always'
                ? ': without cpu_always its background processes are frozen between requests'
                : ''),
          );
        }
        const beat = await heartbeatAcrossIdle((argv) => run(id, argv));
        expect(beat.spanMs).toBeGreaterThanOrEqual(2_500);
        expect(beat.maxGapMs).toBeLessThan(1_250);
      });

      it('files persist across execs, in the working directory and by absolute path', async () => {
        await run(id, ['sh', '-c', 'echo one > persisted.txt && mkdir -p sub && echo two > sub/f']);
        expect((await run(id, ['cat', 'persisted.txt'])).stdout.toString()).toBe('one\n');
        const where = (await run(id, ['pwd'])).stdout.toString().trim();
        expect((await run(id, ['cat', 'f'], { cwd: `${where}/sub` })).stdout.toString()).toBe('two\n');
      });

      it('a TTY: the command sees a terminal of the size asked, and resize reaches it', async () => {
        if (!s.expects.tty) return expect(s.provider.capabilities.tty).toBe(false);
        const p = await s.provider.exec(id, {
          argv: ['sh', '-c', 'stty size; [ -t 0 ] && echo is-a-tty; read x; stty size'],
          tty: true,
          stdin: true,
          cols: 100,
          rows: 30,
        });
        let out = '';
        p.stdout.on('data', (d: Buffer) => {
          out += d.toString();
        });
        expect(
          await poll(
            async () => out,
            (o) => o.includes('is-a-tty'),
          ),
        ).toContain('30 100');
        p.resize(120, 40);
        await new Promise((r) => setTimeout(r, 200));
        p.stdin.write('\n');
        const status = await p.exit;
        expect(exitCodeOf(status)).toBe(0);
        expect(out).toMatch(/40 120/);
      });
    });

    describe('sessions', () => {
      it('concurrent creates give distinct sessions that all run commands', async () => {
        const ns = namespace();
        const many = await Promise.all([1, 2, 3, 4].map(() => create({ namespace: ns })));
        expect(new Set(many.map((m) => m.id)).size).toBe(4);
        const outs = await Promise.all(many.map((m) => run(m.id, ['sh', '-c', 'echo $WORKSPACE_ID'])));
        expect(outs.map((o) => o.stdout.toString().trim())).toEqual(many.map((m) => m.id));
      });

      it('a TTL ends the session: it is then not found, whoever looks', async () => {
        const short = await create({ ttl_minutes: 0.03 }); // 1.8 s
        await new Promise((r) => setTimeout(r, 2500));
        await s.registry.reapExpired();
        await expect(s.registry.locate(short.id)).rejects.toBeInstanceOf(NotFoundError);
        const left = await poll(
          async () => (await s.registry.list({ namespace: short.namespace })).sessions,
          (l) => l.length === 0,
        );
        expect(left).toEqual([]);
      });

      it('progress events arrive during a create', async () => {
        const events: { step: string; message: string }[] = [];
        const made2 = await createSession(s.registry, parseCreateRequest({ namespace: namespace(), ttl_minutes: 5 }), {
          onProgress: (e) => events.push(e),
        });
        made.push(made2.id);
        expect(events.length).toBeGreaterThanOrEqual(2);
        for (const e of events) expect(typeof e.step === 'string' && typeof e.message === 'string').toBe(true);
      });

      it('an abort mid-create removes everything it made and rejects as interrupted', async () => {
        const ns = namespace();
        const ac = new AbortController();
        const pending = createSession(s.registry, parseCreateRequest({ namespace: ns, ttl_minutes: 5 }), {
          signal: ac.signal,
          // The first step is reported as the create begins: abort there, while it is half made.
          onProgress: (e) => {
            if (e.step !== 'provider') ac.abort();
          },
        });
        const err = await pending.then(
          (made3) => {
            made.push(made3.id);
            return undefined;
          },
          (e) => e,
        );
        expect(err).toBeInstanceOf(InterruptedError);
        expect((err as OnmemosError).code).toBe('interrupted');
        const left = await poll(
          async () => (await s.registry.list({ namespace: ns })).sessions,
          (l) => l.length === 0,
        );
        expect(left).toEqual([]);
      });

      it('cpu_always: background processes run between execs; refused only where they never can', async () => {
        const caps = s.provider.capabilities;
        const ns = namespace();
        if (caps.backgroundWhileIdle === 'never') {
          await expect(
            createSession(s.registry, parseCreateRequest({ namespace: ns, cpu_always: true })),
          ).rejects.toMatchObject({ code: 'unsupported' });
          expect((await s.registry.list({ namespace: ns })).sessions).toEqual([]);
          return;
        }
        // Where they always run, cpu_always is accepted and changes nothing.
        const session = await create({ namespace: ns, cpu_always: true });
        const beat = await heartbeatAcrossIdle((argv) => run(session.id, argv));
        expect(beat.spanMs).toBeGreaterThanOrEqual(2_500);
        expect(beat.maxGapMs).toBeLessThan(1_250);
      });

      it('a request the provider cannot honour is refused before anything is made', async () => {
        const ns = namespace();
        const caps = s.provider.capabilities;
        if (caps.storage.includes('bucket')) return;
        await expect(
          createSession(s.registry, parseCreateRequest({ namespace: ns, storage: { bucket: 'my-bucket' } })),
        ).rejects.toMatchObject({ code: 'unsupported', message: expect.stringMatching(/cannot mount a bucket/) });
        expect((await s.registry.list({ namespace: ns })).sessions).toEqual([]);
      });
    });
  });
}
