/**
 * How the fake runs a container: a local sandbox (LocalProvider with a state directory of the fake's own, so its
 * sandboxes never show among the user's local sessions) in which the container's command runs as one long exec,
 * with exactly the container's environment (`env -i`, so nothing of the sandbox's own session environment shows).
 * The exec's output is the container's log; its end is the container's exit. Every container (service instance or
 * job task) has a network of its own (the fake's `network`: `outbound` or `isolated`, never the host's), as each
 * Cloud Run instance has; the fake reaches a port the container listens on through `connect`, the local provider's
 * `tunnel` (the sandbox's agent connects to 127.0.0.1:port inside the sandbox).
 *
 * `ContainerRuntime` is the seam: a test can give the fake another one (say, plain child processes).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import type { ExitStatus, RemoteProcess } from '../../../src/exec/process.js';
import { type CgroupSystem, detectCgroups, SessionGroup } from '../../../src/providers/local/cgroups.js';
import { type HostBind, LocalProvider } from '../../../src/providers/local/local.js';
import { type NetworkMode, normalizeCreateRequest } from '../../../src/session/model.js';
import { IMAGE_DIR, IMAGE_PATH, type OnmemosImage } from './image.js';

export interface ContainerSpec {
  /** command + args, as the container runs them (image defaults applied). */
  argv: string[];
  /** The whole environment of the process. */
  env: Record<string, string>;
  workingDir?: string;
  /** Cloud Run's resource limits (`cpu: "1"`, `"500m"`; `memory: "512Mi"`). */
  limits?: Record<string, string>;
  network: NetworkMode;
  /** A short name for the sandbox (a DNS label): the service or job id. */
  label: string;
  /** Each line of output as it comes (stdout and stderr together). */
  onLine?: (line: string) => void;
  /** Host directories the container sees (its Cloud Storage volumes: volumes.ts). */
  mounts?: HostBind[];
}

export interface RunningContainer {
  /** The local session the container runs in. */
  readonly session: string;
  readonly exit: Promise<ExitStatus>;
  /** What the container wrote (stdout and stderr interleaved; the last MAX_OUTPUT bytes). */
  output(): string;
  /**
   * A connection to `port` on the container's own loopback (its network is its own: the host cannot reach it
   * otherwise); rejects when nothing listens there or the container is gone.
   */
  connect(port: number): Promise<Duplex>;
  /** SIGTERM, then SIGKILL after `graceMs`; then the sandbox is removed. */
  stop(graceMs?: number): Promise<void>;
  /**
   * Freezes every process of the container (or thaws them), as request-based CPU leaves an instance between
   * requests; false when the runtime cannot.
   */
  freeze?(frozen: boolean): boolean;
}

export interface ContainerRuntime {
  start(spec: ContainerSpec, signal?: AbortSignal): Promise<RunningContainer>;
  /** Removes every sandbox it made. */
  close(): Promise<void>;
}

const MAX_OUTPUT = 1 << 20;

/** `1`, `0.5`, `500m` → cores. */
export function parseCpu(v: string | undefined): number | undefined {
  if (!v) return undefined;
  const m = /^(\d+(?:\.\d+)?)(m?)$/.exec(v.trim());
  if (!m) return undefined;
  return m[2] ? Number(m[1]) / 1000 : Number(m[1]);
}

/** `512Mi`, `1Gi`, `2G`, `1000000` → bytes. */
export function parseMemory(v: string | undefined): number | undefined {
  if (!v) return undefined;
  const m = /^(\d+(?:\.\d+)?)([KMGT]i?)?$/.exec(v.trim());
  if (!m) return undefined;
  const units: Record<string, number> = {
    K: 1e3,
    M: 1e6,
    G: 1e9,
    T: 1e12,
    Ki: 2 ** 10,
    Mi: 2 ** 20,
    Gi: 2 ** 30,
    Ti: 2 ** 40,
  };
  return Math.floor(Number(m[1]) * (m[2] ? units[m[2]]! : 1));
}

/** A DNS label of at most `max` characters from `name`. */
function label(name: string, max: number): string {
  const l = name
    .toLowerCase()
    .replace(/[^a-z0-9-]/g, '-')
    .slice(0, Math.max(1, max))
    .replace(/^-+|-+$/g, '');
  return l || 'c';
}

export class SandboxRuntime implements ContainerRuntime {
  readonly provider: LocalProvider;
  private readonly running = new Map<string, { proc?: RemoteProcess }>();

  constructor(
    private readonly opts: {
      stateDir: string;
      image: OnmemosImage;
      log: (line: string) => void;
      /** Characters the session's user part may have (socket paths are bounded; see the kube fake's idBudget). */
      idBudget: number;
    },
  ) {
    // hostBinds: the internal option that mounts a bucket's directory (only the fakes' providers have it).
    this.provider = new LocalProvider({ env: { ...process.env, ONMEMOS_STATE_DIR: opts.stateDir }, hostBinds: true });
  }

  async start(spec: ContainerSpec, signal?: AbortSignal): Promise<RunningContainer> {
    const cpu = parseCpu(spec.limits?.cpu);
    const memory = parseMemory(spec.limits?.memory);
    const request = normalizeCreateRequest({
      provider: 'local',
      namespace: 'run',
      user: label(spec.label, this.opts.idBudget - 3),
      ttl_minutes: 7 * 24 * 60,
      network: spec.network,
      limits: {
        cpu: cpu === undefined ? undefined : Math.min(64, Math.max(0.01, cpu)),
        memory: memory === undefined ? undefined : Math.max(64 * 2 ** 20, memory),
        disk: 512 * 2 ** 20,
      },
    });
    const s = await this.provider.create(request, { signal, binds: spec.mounts });
    const entry: { proc?: RemoteProcess } = {};
    this.running.set(s.id, entry);
    // An abort after the create (a cancelled execution) must not leave a container its caller never got to stop.
    const aborted = () => {
      if (signal?.aborted) throw new Error('the start was cancelled');
    };
    try {
      aborted();
      if (spec.argv[0] === 'onmemos') await this.stage(s.id);
      aborted();
      const cwd = spec.workingDir ?? '/workspace';
      // An image's own environment (PATH with the onmemos image first, HOME), under the container's.
      const env = { PATH: IMAGE_PATH, HOME: `/home/${request.user}`, ...spec.env };
      const pairs = Object.entries(env).map(([k, v]) => `${k}=${v}`);
      // env -i: the container's environment exactly; env looks argv[0] up in the PATH given here.
      const proc = await this.provider.exec(s.id, { argv: ['/usr/bin/env', '-i', '--', ...pairs, ...spec.argv], cwd });
      entry.proc = proc;
      if (signal?.aborted) proc.kill('SIGKILL');
      aborted();
      return this.watch(s.id, proc, spec.onLine);
    } catch (e) {
      await this.remove(s.id);
      throw e;
    }
  }

  /** Unpacks the onmemos image at IMAGE_DIR (nothing when it has no agent: the command then fails as a missing binary does). */
  private async stage(id: string): Promise<void> {
    const why = this.opts.image.missing();
    if (why) {
      this.opts.log(`image: ${why}`);
      return;
    }
    const p = await this.provider.exec(id, {
      argv: ['sh', '-c', `mkdir -p ${IMAGE_DIR} && tar -xf - -C ${IMAGE_DIR}`],
      stdin: true,
    });
    let err = '';
    p.stdout.resume();
    p.stderr.on('data', (d) => (err += d));
    p.stdin.end(this.opts.image.tarball());
    const { code } = await p.exit;
    if (code !== 0) throw new Error(`could not unpack the onmemos image in the sandbox: ${err.trim()}`);
  }

  private watch(id: string, proc: RemoteProcess, onLine?: (line: string) => void): RunningContainer {
    let out = '';
    let partial = '';
    const take = (d: Buffer) => {
      const text = d.toString('utf8');
      out += text;
      if (out.length > MAX_OUTPUT) out = out.slice(out.length - MAX_OUTPUT);
      if (!onLine) return;
      const lines = (partial + text).split('\n');
      partial = lines.pop() ?? '';
      for (const l of lines) onLine(l);
    };
    proc.stdout.on('data', take);
    proc.stderr.on('data', take);
    const exit = proc.exit.then((s) => {
      if (partial && onLine) onLine(partial);
      return s;
    });
    let stopping: Promise<void> | undefined;
    return {
      session: id,
      exit,
      output: () => out,
      connect: (port) => this.provider.tunnel(id, port),
      freeze: (frozen) => this.freeze(id, frozen),
      stop: (graceMs = 2_000) => {
        stopping ??= (async () => {
          proc.kill('SIGTERM');
          const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
          await Promise.race([exit, new Promise((r) => setTimeout(r, graceMs + 1_000))]);
          clearTimeout(timer);
          await this.remove(id);
        })();
        return stopping;
      },
    };
  }

  /**
   * The cgroup freezer on the sandbox's group (v1 `freezer.state`, v2 `cgroup.freeze`): every process in it stops
   * where it is, and goes on once thawed. Killing a frozen sandbox works (the local provider thaws what it kills).
   */
  private freeze(id: string, frozen: boolean): boolean {
    if (this.cgroups === null) this.cgroups = detectCgroups();
    const parent = this.provider.store.read(id)?.cgroup_parent;
    if (!this.cgroups || !parent) return false;
    try {
      const dirs = SessionGroup.open(this.cgroups, parent, id).sandboxDirs();
      const v2 = dirs.find((d) => d.controller === null);
      const v1 = dirs.find((d) => d.controller === 'freezer');
      if (v2) writeFileSync(join(v2.dir, 'cgroup.freeze'), frozen ? '1' : '0');
      else if (v1) writeFileSync(join(v1.dir, 'freezer.state'), frozen ? 'FROZEN' : 'THAWED');
      else return false;
      return true;
    } catch {
      return false;
    }
  }
  private cgroups: CgroupSystem | undefined | null = null;

  private async remove(id: string): Promise<void> {
    this.running.delete(id);
    await this.provider.delete(id).catch(() => {});
  }

  async close(): Promise<void> {
    for (const e of this.running.values()) e.proc?.kill('SIGKILL');
    await Promise.all([...this.running.keys()].map((id) => this.remove(id)));
    // Sessions of this state directory that a start did not get to record.
    for (const s of await this.provider.list().catch(() => [])) await this.provider.delete(s.id).catch(() => {});
  }
}
