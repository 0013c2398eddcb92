/**
 * The in-process fake provider: the whole Provider contract with nothing behind it but this process. Sessions are
 * records in memory; each has a directory of its own (its "workspace", the cwd of every exec, so files persist
 * between execs); exec runs argv on the host through the shared child adapters (src/exec/child.ts), on pipes or a
 * real pty. It has a TTL, start/stop/extend, progress and abort, and capabilities as data, so the conformance suite,
 * the CLI's in-process tests and the server's own tests (which need no root) all run against it.
 *
 * Not a sandbox: it is for tests of everything around a provider, never of isolation.
 */
import { spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import type { CliDeps } from '../../src/commands/context.js';
import { ConflictError, InterruptedError, NotFoundError } from '../../src/errors.js';
import { pipedProcess, ptyProcess } from '../../src/exec/child.js';
import { V5 } from '../../src/exec/v5.js';
import { type ProviderRegistry, tableRegistry } from '../../src/providers/index.js';
import {
  type Capabilities,
  type CreateOptions,
  capabilities,
  type ExecSpec,
  type Provider,
  type RemoteProcess,
} from '../../src/providers/provider.js';
import {
  type ConnectInfo,
  type CreateSessionRequest,
  isExpired,
  matchesFilter,
  newSessionId,
  type ProviderKind,
  type Session,
  type SessionFilter,
  sessionEnvironment,
} from '../../src/session/model.js';

export const FAKE_CAPABILITIES: Capabilities = capabilities({ storage: ['volume'], nestedUserns: false });

export interface FakeOptions {
  kind?: ProviderKind;
  capabilities?: Partial<Capabilities>;
  /** Each create takes this long, in steps that report progress and notice an abort (default 0). */
  createMs?: number;
}

export class FakeProvider implements Provider {
  readonly kind: ProviderKind;
  readonly capabilities: Capabilities;
  sessions = new Map<string, Session>();
  execs: ExecSpec[] = [];
  /** Calls by method, so tests can see which provider was asked. */
  calls: string[] = [];
  private readonly root = fakeRoot();
  private readonly running = new Set<RemoteProcess>();

  constructor(private readonly opts: FakeOptions = {}) {
    this.kind = opts.kind ?? 'local';
    this.capabilities = { ...FAKE_CAPABILITIES, ...opts.capabilities };
  }

  private workspace(id: string): string {
    return join(this.root, id);
  }

  async create(req: CreateSessionRequest, o: CreateOptions = {}): Promise<Session> {
    this.calls.push('create');
    const now = Date.now();
    const id = newSessionId(req.namespace, req.user, now);
    const s: Session = {
      id,
      provider: this.kind,
      namespace: req.namespace,
      user: req.user,
      status: 'creating',
      url: null,
      websocket: null,
      ssh: false,
      template: req.template,
      created_at: new Date(now).toISOString(),
      expires_at: new Date(now + req.ttl_minutes * 60_000).toISOString(),
      details: { env: req.env },
    };
    this.sessions.set(id, s);
    mkdirSync(this.workspace(id), { recursive: true });
    const steps = 4;
    for (let i = 1; i <= steps; i++) {
      o.onProgress?.({ step: `step${i}`, message: `fake step ${i} of ${steps}`, id });
      if ((this.opts.createMs ?? 0) > 0) await new Promise((r) => setTimeout(r, (this.opts.createMs ?? 0) / steps));
      if (o.signal?.aborted) {
        await this.delete(id).catch(() => {});
        throw new InterruptedError(`interrupted: session ${id} was removed`);
      }
    }
    s.status = 'running';
    return { ...s };
  }

  private record(id: string): Session {
    const s = this.sessions.get(id);
    if (!s) throw new NotFoundError(`no such session: ${id}`);
    if (isExpired(s)) s.status = 'expired';
    return s;
  }

  async get(id: string): Promise<Session> {
    this.calls.push('get');
    return { ...this.record(id) };
  }

  async list(f?: SessionFilter): Promise<Session[]> {
    this.calls.push('list');
    return [...this.sessions.keys()].map((id) => ({ ...this.record(id) })).filter((s) => matchesFilter(s, f));
  }

  async delete(id: string): Promise<void> {
    this.calls.push('delete');
    if (!this.sessions.delete(id)) throw new NotFoundError(`no such session: ${id}`);
    rmSync(this.workspace(id), { recursive: true, force: true });
  }

  async reapExpired(): Promise<string[]> {
    const gone = [...this.sessions.values()].filter((s) => isExpired(s)).map((s) => s.id);
    for (const id of gone) await this.delete(id).catch(() => {});
    return gone;
  }

  async start(id: string): Promise<Session> {
    const s = this.record(id);
    if (s.status !== 'stopped' && s.status !== 'running') throw new ConflictError(`session ${id} is ${s.status}`);
    s.status = 'running';
    return { ...s };
  }

  async stop(id: string): Promise<Session> {
    const s = this.record(id);
    if (s.status !== 'running' && s.status !== 'stopped') throw new ConflictError(`session ${id} is ${s.status}`);
    for (const p of this.running) p.kill('SIGKILL');
    s.status = 'stopped';
    return { ...s };
  }

  async extend(id: string, minutes: number): Promise<Session> {
    const s = this.record(id);
    if (s.status === 'expired') throw new ConflictError(`session ${id} has expired`);
    s.expires_at = new Date(Date.now() + minutes * 60_000).toISOString();
    return { ...s };
  }

  async connect(id: string): Promise<ConnectInfo> {
    const s = this.record(id);
    return {
      id,
      provider: this.kind,
      status: s.status,
      url: null,
      exec: { url: `fake://${id}/exec`, protocol: V5 },
      shell: { argv: ['/bin/sh'] },
      json_shell: null,
      ssh: null,
    };
  }

  async exec(id: string, spec: ExecSpec): Promise<RemoteProcess> {
    const s = this.record(id);
    if (s.status !== 'running') throw new ConflictError(`session ${id} is not running (${s.status})`);
    this.execs.push(spec);
    const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: this.workspace(id), ...sessionEnvironment(s) };
    Object.assign(env, s.details.env as Record<string, string>, spec.env);
    const cwd = spec.cwd ?? this.workspace(id);
    let proc: RemoteProcess;
    if (spec.tty) {
      const pty = await import('node-pty');
      const term = pty.spawn(spec.argv[0]!, spec.argv.slice(1), {
        name: spec.term ?? 'xterm',
        cols: spec.cols ?? 80,
        rows: spec.rows ?? 24,
        cwd,
        env,
        encoding: null,
      });
      proc = ptyProcess(term, { kill: (sig) => killGroup(term.pid, sig) });
    } else {
      const child = spawn(spec.argv[0]!, spec.argv.slice(1), {
        stdio: [spec.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
        env,
        cwd,
        detached: true,
      });
      proc = pipedProcess(child, { kill: (sig) => child.pid && killGroup(child.pid, sig) });
    }
    this.running.add(proc);
    void proc.exit.then(() => this.running.delete(proc));
    return proc;
  }

  /** Removes its directories; tests call it in afterAll. */
  dispose(): void {
    for (const p of this.running) p.kill('SIGKILL');
    rmSync(this.root, { recursive: true, force: true });
  }
}

/** A fake's directory: in the test run's own (test/setup/tmp.ts), removed with it whether or not dispose() ran. */
function fakeRoot(): string {
  return mkdtempSync(join(process.env.ONMEMOS_TEST_TMP || tmpdir(), 'onmemos-fake-'));
}

/** The command's process group: what it started goes with it. */
function killGroup(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pid, sig);
  } catch {
    try {
      process.kill(pid, sig);
    } catch {}
  }
}

export function fakeRegistry(...providers: Provider[]): ProviderRegistry {
  return tableRegistry(
    providers.map((p) => ({ kind: p.kind, configured: () => ({ ok: true as const }), load: async () => p })),
    {},
  );
}

export class Capture extends PassThrough {
  chunks: Buffer[] = [];
  isTTY = false;
  constructor() {
    super();
    this.on('data', (d: Buffer) => this.chunks.push(d));
  }
  get text(): string {
    return Buffer.concat(this.chunks).toString();
  }
}

export function fakeDeps(p: Provider, input = ''): CliDeps & { stdout: Capture; stderr: Capture } {
  const stdin = new PassThrough();
  stdin.end(input);
  return {
    stdin,
    stdout: new Capture(),
    stderr: new Capture(),
    env: {},
    registry: fakeRegistry(p),
    signals: new EventEmitter(),
  };
}
