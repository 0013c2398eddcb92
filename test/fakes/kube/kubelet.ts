/**
 * The fake's scheduler and kubelet: moves each pod Pending → (scheduled) → Running, and runs it as a real local
 * sandbox (LocalProvider, with a state directory of the fake's own, so fake pods never show among the user's local
 * sessions). The faults in force decide where a pod stops: unschedulable, an image that does not pull, never Ready.
 *
 * Every step of one pod runs in order on that pod's queue (creation, status updates, deletion), so a delete that
 * arrives while the sandbox is being made waits for it and then removes it.
 *
 * Known differences from a real node: all containers of a pod share one sandbox; the containers' command and args
 * are not run (the sandbox is the container: exec is what runs there); a PersistentVolumeClaim mounted at
 * /workspace is the sandbox's own /workspace, so its data lives and dies with the pod, and a claim at another path is
 * an empty directory; the hostname is the local session's id (HOSTNAME is the pod's name). A GCS FUSE volume is the
 * fake's directory for its bucket (volumes.ts), bound into the sandbox; one that cannot be mounted leaves the pod
 * ContainerCreating with a FailedMount event (events.ts), as the kubelet does.
 */
import { type HostBind, LocalProvider } from '../../../src/providers/local/local.js';
import type { NetworkMode } from '../../../src/session/model.js';
import type { Buckets } from '../buckets.js';
import { Events } from './events.js';
import { type Faults, matches } from './faults.js';
import { now, type Pod, type Store } from './objects.js';
import {
  condition,
  HOST_IP,
  idBudget,
  MESSAGES,
  mergeConditions,
  NODE_NAME,
  newContainerId,
  qosClass,
  runningStatus,
  sessionRequest,
  waitingStatus,
  workingDir,
} from './pods.js';
import { podBinds } from './volumes.js';

/** After this long in ErrImagePull a container shows ImagePullBackOff. */
const BACKOFF_MS = 500;

interface Sandbox {
  /** The local session, once made. */
  session?: string;
  startedAt?: string;
  containerIDs?: string[];
  podIP?: string;
  /** Why the sandbox could not be made (the container shows CreateContainerError). */
  failed?: string;
  pullFailedAt?: number;
}

export interface KubeletOptions {
  stateDir: string;
  network: NetworkMode;
  /** The fake's Cloud Storage: what a pod's GCS FUSE volumes mount (volumes.ts). */
  buckets: Buckets;
  log: (line: string) => void;
}

export class Kubelet {
  readonly provider: LocalProvider;
  /** What the kubelet said about pods (FailedMount), for GET …/events. */
  readonly events = new Events();
  private readonly sandboxes = new Map<string, Sandbox>();
  private readonly queues = new Map<string, Promise<void>>();
  private readonly kicked = new Set<string>();
  /** Pending timers, each with what it does (run at once on close, so that no wait outlives the fake). */
  private readonly timers = new Map<NodeJS.Timeout, () => void>();
  private readonly abort = new AbortController();
  private nextIp = 0;
  private closed = false;

  constructor(
    private readonly store: Store,
    private readonly faults: Faults,
    private readonly opts: KubeletOptions,
  ) {
    if (idBudget(opts.stateDir) < 4)
      throw new Error(`the state directory ${opts.stateDir} is too long for socket paths`);
    // hostBinds: the internal option that mounts a bucket's directory (only the fakes' providers have it).
    this.provider = new LocalProvider({
      env: { ...process.env, ONMEMOS_STATE_DIR: opts.stateDir },
      hostBinds: true,
    });
  }

  /** Runs `fn` after everything queued for this pod. */
  private enqueue(uid: string, fn: () => Promise<void>): Promise<void> {
    const next = (this.queues.get(uid) ?? Promise.resolve())
      .then(fn)
      .catch((e) => this.opts.log(`kubelet: pod ${uid}: ${e instanceof Error ? e.message : String(e)}`));
    this.queues.set(uid, next);
    void next.then(() => {
      if (this.queues.get(uid) === next) this.queues.delete(uid);
    });
    return next;
  }

  /** Moves a pod on as far as it can go now (at most one pending step per pod). */
  kick(namespace: string, name: string): void {
    const pod = this.store.get('pods', namespace, name);
    const uid = pod?.metadata.uid;
    if (!uid || this.closed || this.kicked.has(uid)) return;
    this.kicked.add(uid);
    void this.enqueue(uid, async () => {
      this.kicked.delete(uid);
      await this.step(namespace, name, uid);
    });
  }

  /** After a change that may unblock pods (a claim created, faults changed). */
  kickAll(): void {
    for (const p of this.store.list('pods')) this.kick(p.metadata.namespace!, p.metadata.name!);
  }

  private later(ms: number, fn: () => void): void {
    if (this.closed) {
      fn();
      return;
    }
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.set(t, fn);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** The pod as stored, if it is still the same pod (a name can be reused by a new pod with another uid). */
  private current(namespace: string, name: string, uid: string): Pod | undefined {
    const pod = this.store.get('pods', namespace, name);
    return pod && pod.metadata.uid === uid ? pod : undefined;
  }

  /** Writes the pod back if this changed its spec.nodeName or status. */
  private save(before: Pod, after: Pod): void {
    const same =
      before.spec.nodeName === after.spec.nodeName && JSON.stringify(before.status) === JSON.stringify(after.status);
    if (!same) this.store.update('pods', after);
  }

  private async step(namespace: string, name: string, uid: string): Promise<void> {
    const pod = this.current(namespace, name, uid);
    if (!pod || pod.metadata.deletionTimestamp || this.closed) return;
    const next = structuredClone(pod);
    const sb = this.sandboxes.get(uid) ?? {};
    this.sandboxes.set(uid, sb);
    if (!next.spec.nodeName && !this.schedule(next)) return this.save(pod, next);
    // The pod's volumes are mounted before its images are pulled: a mount that fails leaves it ContainerCreating,
    // with a FailedMount event each time it is tried again (here: each time the pod is kicked, say by a bucket
    // made meanwhile).
    const mounts: ReturnType<typeof podBinds> = sb.session ? { binds: [] } : podBinds(next, this.opts.buckets);
    if ('failedMount' in mounts) {
      this.events.record(next, 'Warning', 'FailedMount', mounts.failedMount);
      this.opts.log(`kubelet: pod ${namespace}/${name}: ${mounts.failedMount}`);
      this.pending(
        next,
        next.spec.containers.map((c) => waitingStatus(c, 'ContainerCreating')),
      );
      return this.save(pod, next);
    }
    const pull = sb.session
      ? undefined
      : next.spec.containers.find((c) => matches(this.faults.current.imagePull, c.image));
    if (pull) {
      sb.pullFailedAt ??= Date.now();
      const backoff = Date.now() - sb.pullFailedAt >= BACKOFF_MS;
      this.pending(
        next,
        next.spec.containers.map((c) =>
          c === pull
            ? waitingStatus(
                c,
                backoff ? 'ImagePullBackOff' : 'ErrImagePull',
                backoff ? MESSAGES.backOff(c.image) : MESSAGES.pullFailed(c.image),
              )
            : waitingStatus(c, 'ContainerCreating'),
        ),
      );
      if (!backoff) this.later(BACKOFF_MS, () => this.kick(namespace, name));
      return this.save(pod, next);
    }
    sb.pullFailedAt = undefined;
    if (!sb.session && !sb.failed) {
      this.save(pod, next); // scheduled, ContainerCreating, while the sandbox is made
      await this.start(next, sb, mounts.binds);
      const after = this.current(namespace, name, uid);
      if (!after || after.metadata.deletionTimestamp) return;
      return this.step(namespace, name, uid);
    }
    if (sb.failed) {
      this.pending(
        next,
        next.spec.containers.map((c) => waitingStatus(c, 'CreateContainerError', sb.failed)),
      );
      return this.save(pod, next);
    }
    this.running(next, sb);
    this.save(pod, next);
  }

  /** Binds the pod to the node, or says why not (false: it stays Pending, unschedulable). */
  private schedule(pod: Pod): boolean {
    const missing = (pod.spec.volumes ?? [])
      .map((v) => v.persistentVolumeClaim?.claimName)
      .find((c) => c !== undefined && !this.store.get('persistentvolumeclaims', pod.metadata.namespace, c));
    const why = matches(this.faults.current.unschedulable, pod.metadata.name ?? '')
      ? MESSAGES.unschedulable
      : missing !== undefined
        ? MESSAGES.missingClaim(missing)
        : undefined;
    if (why) {
      pod.status.conditions = mergeConditions(pod.status.conditions, [
        condition('PodScheduled', false, 'Unschedulable', why),
      ]);
      return false;
    }
    pod.spec.nodeName = NODE_NAME;
    pod.status.hostIP = HOST_IP;
    pod.status.startTime ??= now();
    this.pending(
      pod,
      pod.spec.containers.map((c) => waitingStatus(c, 'ContainerCreating')),
    );
    return true;
  }

  /** Scheduled, containers not running: the conditions a node reports meanwhile. */
  private pending(pod: Pod, statuses: NonNullable<Pod['status']['containerStatuses']>): void {
    const names = pod.spec.containers.map((c) => c.name);
    pod.status.phase = 'Pending';
    pod.status.containerStatuses = statuses;
    pod.status.qosClass = qosClass(pod);
    pod.status.conditions = mergeConditions(pod.status.conditions, [
      condition('PodReadyToStartContainers', false),
      condition('Initialized', true),
      condition('Ready', false, 'ContainersNotReady', MESSAGES.notReady(names)),
      condition('ContainersReady', false, 'ContainersNotReady', MESSAGES.notReady(names)),
      condition('PodScheduled', true),
    ]);
  }

  private running(pod: Pod, sb: Sandbox): void {
    const ready = !matches(this.faults.current.neverReady, pod.metadata.name ?? '');
    const names = pod.spec.containers.map((c) => c.name);
    pod.status.phase = 'Running';
    pod.status.podIP = sb.podIP;
    pod.status.podIPs = [{ ip: sb.podIP! }];
    pod.status.qosClass = qosClass(pod);
    pod.status.containerStatuses = pod.spec.containers.map((c, i) =>
      runningStatus(c, sb.startedAt!, ready, sb.containerIDs![i]!),
    );
    const notReady = ready ? [] : ['ContainersNotReady', MESSAGES.notReady(names)];
    pod.status.conditions = mergeConditions(pod.status.conditions, [
      condition('PodReadyToStartContainers', true),
      condition('Initialized', true),
      condition('Ready', ready, ...notReady),
      condition('ContainersReady', ready, ...notReady),
      condition('PodScheduled', true),
    ]);
  }

  /** Makes the pod's sandbox, and each container's working directory in it (as a runtime creates it). */
  private async start(pod: Pod, sb: Sandbox, binds: HostBind[]): Promise<void> {
    const label = `${pod.metadata.namespace}/${pod.metadata.name}`;
    try {
      const request = sessionRequest(pod, this.opts.network, idBudget(this.opts.stateDir));
      const s = await this.provider.create(request, { signal: this.abort.signal, binds });
      sb.session = s.id;
      this.opts.log(`kubelet: pod ${label} runs as local session ${s.id}`);
      const dirs = [...new Set(pod.spec.containers.map(workingDir))];
      const mk = await this.provider.exec(s.id, { argv: ['mkdir', '-p', '--', ...dirs] });
      let err = '';
      mk.stdout.resume();
      mk.stderr.on('data', (d) => (err += d));
      const { code } = await mk.exit;
      if (code !== 0) {
        sb.failed = `failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: error during container init: ${err.trim() || `mkdir ${dirs.join(' ')} failed`}`;
        return;
      }
      sb.startedAt = now();
      sb.containerIDs = pod.spec.containers.map(newContainerId);
      sb.podIP = `10.88.${Math.floor(this.nextIp / 250)}.${(this.nextIp % 250) + 2}`;
      this.nextIp++;
    } catch (e) {
      if (this.closed) return;
      sb.failed = e instanceof Error ? e.message : String(e);
      this.opts.log(`kubelet: pod ${label}: the sandbox could not be made: ${sb.failed}`);
    }
  }

  /** The local session of a pod whose containers run; undefined otherwise. */
  sessionOf(pod: Pod): string | undefined {
    const sb = this.sandboxes.get(pod.metadata.uid ?? '');
    return sb?.startedAt ? sb.session : undefined;
  }

  /**
   * Deletes a pod: one that no node took, or asked with a grace period of 0, goes at once (its sandbox is removed
   * behind it); otherwise it shows as Terminating (deletionTimestamp) until its sandbox is gone.
   */
  delete(pod: Pod, gracePeriodSeconds: number | undefined): Pod {
    const uid = pod.metadata.uid!;
    const grace = gracePeriodSeconds ?? pod.spec.terminationGracePeriodSeconds ?? 30;
    const ns = pod.metadata.namespace!;
    const name = pod.metadata.name!;
    if (pod.metadata.deletionTimestamp) return pod;
    if (!pod.spec.nodeName || grace === 0) {
      this.store.remove('pods', ns, name);
      void this.enqueue(uid, () => this.removeSandbox(uid));
      return pod;
    }
    pod.metadata.deletionTimestamp = new Date(Date.now() + grace * 1000).toISOString().replace(/\.\d+Z$/, 'Z');
    pod.metadata.deletionGracePeriodSeconds = grace;
    const terminating = this.store.update('pods', pod);
    const wait = Math.min(this.faults.current.terminatingMs ?? 0, grace * 1000);
    void this.enqueue(uid, async () => {
      if (wait > 0) await new Promise((r) => this.later(wait, () => r(undefined)));
      await this.removeSandbox(uid);
      if (this.current(ns, name, uid)) this.store.remove('pods', ns, name);
    });
    return terminating;
  }

  private async removeSandbox(uid: string): Promise<void> {
    const sb = this.sandboxes.get(uid);
    this.sandboxes.delete(uid);
    if (sb?.session) await this.provider.delete(sb.session).catch(() => {});
  }

  /** Resolves once every queued step (deletions included) has run. */
  async idle(): Promise<void> {
    while (this.queues.size > 0) await Promise.all([...this.queues.values()]);
  }

  /** Stops every pod: pending steps end, every sandbox is removed. */
  async close(): Promise<void> {
    this.closed = true;
    this.abort.abort();
    for (const [t, fn] of this.timers) {
      clearTimeout(t);
      fn();
    }
    this.timers.clear();
    await this.idle();
    await Promise.all([...this.sandboxes.keys()].map((uid) => this.removeSandbox(uid)));
    // Sessions of this state directory that a step did not get to record (a create that finished as we closed).
    for (const s of await this.provider.list().catch(() => [])) await this.provider.delete(s.id).catch(() => {});
  }
}
