/** An in-memory Provider for in-process command tests: exec runs argv on the host through pipes. */
import { spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { PassThrough } from 'node:stream';
import type { CliDeps } from '../../src/commands/context.js';
import { NotFoundError } from '../../src/errors.js';
import type { ProviderRegistry } from '../../src/providers/index.js';
import type { ExecSpec, Provider, RemoteProcess } from '../../src/providers/provider.js';
import {
  type CreateSessionRequest,
  matchesFilter,
  newSessionId,
  type Session,
  type SessionFilter,
} from '../../src/session/model.js';

export class FakeProvider implements Provider {
  readonly kind = 'local' as const;
  readonly capabilities = { oneShot: true, shell: true, tty: false, persistentStorage: true };
  sessions = new Map<string, Session>();
  execs: ExecSpec[] = [];

  async create(req: CreateSessionRequest): Promise<Session> {
    const now = Date.now();
    const s: Session = {
      id: newSessionId(req.namespace, req.user, now),
      provider: 'local',
      namespace: req.namespace,
      user: req.user,
      status: 'running',
      url: null,
      websocket: null,
      ssh: false,
      template: req.template,
      created_at: new Date(now).toISOString(),
      expires_at: new Date(now + req.ttl_minutes * 60_000).toISOString(),
      details: { env: req.env },
    };
    this.sessions.set(s.id, s);
    return s;
  }
  async get(id: string): Promise<Session> {
    const s = this.sessions.get(id);
    if (!s) throw new NotFoundError(`no such session: ${id}`);
    return s;
  }
  async list(f?: SessionFilter): Promise<Session[]> {
    return [...this.sessions.values()].filter((s) => matchesFilter(s, f));
  }
  async delete(id: string): Promise<void> {
    if (!this.sessions.delete(id)) throw new NotFoundError(`no such session: ${id}`);
  }
  async loginShell(): Promise<string[]> {
    return ['/bin/sh'];
  }
  async exec(_id: string, spec: ExecSpec): Promise<RemoteProcess> {
    this.execs.push(spec);
    const child = spawn(spec.argv[0]!, spec.argv.slice(1), {
      stdio: [spec.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH, ...spec.env },
    });
    const stdin = child.stdin ?? new PassThrough();
    stdin.on('error', () => {});
    return {
      stdin,
      stdout: child.stdout!,
      stderr: child.stderr!,
      resize() {},
      kill: (sig = 'SIGKILL') => child.kill(sig),
      exit: new Promise((resolve) =>
        child.on('close', (code, signal) => resolve(signal ? { code: null, signal } : { code: code ?? 1 })),
      ),
    };
  }
}

export function fakeRegistry(p: Provider): ProviderRegistry {
  return {
    forCreate: async () => ({ provider: p, reason: 'test' }),
    all: async () => [p],
  };
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
