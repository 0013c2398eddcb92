/**
 * Services: create, get, list, update (PATCH) and delete as the Admin API v2 does them. A create or a template
 * change makes a revision (`{service}-{generation:5}-{xyz}`) and deploys it (revisions.ts); its long-running
 * operation is done once the revision serves (`response`: the Service) or has failed (`error`: code 9
 * FAILED_PRECONDITION with Cloud Run's message). Each service has its own front end at `uri` (frontend.ts).
 * Resources come out with the fields and defaults the real API fills in (template defaults, conditions
 * `Ready` / `RoutesReady` / `ConfigurationsReady`, traffic, etag).
 */
import { alreadyExists, fieldViolation, notFound, rpcCode } from './errors.js';
import type { Faults } from './faults.js';
import { type Frontend, type FrontRequest, startFrontend } from './frontend.js';
import type { Policies } from './iam.js';
import { type Operation, type Operations, TYPE } from './operations.js';
import {
  type Condition,
  type ConditionState,
  checkServiceId,
  condition,
  encodeEnums,
  type Json,
  keepTransition,
  newEtag,
  newUid,
  now,
  type Parent,
  page,
  parentName,
  revisionId,
  sameMessage,
  withoutOutputFields,
} from './resources.js';
import { type Container, type HostDeps, type Revision, ServiceHost } from './revisions.js';

const OUTPUT_ONLY = [
  'name',
  'uid',
  'generation',
  'createTime',
  'updateTime',
  'deleteTime',
  'expireTime',
  'creator',
  'lastModifier',
  'observedGeneration',
  'terminalCondition',
  'conditions',
  'latestReadyRevision',
  'latestCreatedRevision',
  'trafficStatuses',
  'uri',
  'urls',
  'satisfiesPzs',
  'threatDetectionEnabled',
  'reconciling',
  'etag',
] as const;
const LATEST = 'TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST';

export interface ServiceRecord {
  parent: Parent;
  id: string;
  name: string;
  /** What the caller set, with the server's defaults. */
  spec: Json;
  uid: string;
  generation: number;
  observedGeneration: number;
  createTime: string;
  updateTime: string;
  creator: string;
  lastModifier: string;
  etag: string;
  terminalCondition: Condition;
  conditions: Condition[];
  latestReadyRevision?: string;
  latestCreatedRevision?: string;
  reconciling: boolean;
  host: ServiceHost;
  frontend: Frontend;
  queue: Promise<unknown>;
}

export interface ServicesDeps {
  ops: Operations;
  policies: Policies;
  faults: Faults;
  host: HostDeps;
  /** Who the caller is (creator, lastModifier). */
  account: string;
  projectNumber: string;
  onFrontRequest(r: FrontRequest): void;
}

export class Services {
  private readonly byName = new Map<string, ServiceRecord>();
  constructor(private readonly deps: ServicesDeps) {}

  all(): ServiceRecord[] {
    return [...this.byName.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  find(parent: Parent, id: string): ServiceRecord {
    const rec = this.byName.get(`${parentName(parent)}/services/${id}`);
    if (!rec) throw notFound('SERVICE', id, parent.location, parent.project);
    return rec;
  }

  /** The Service as the API returns it (enum values as names). */
  json(rec: ServiceRecord): Json {
    const s = rec.spec;
    const ready = rec.latestReadyRevision !== undefined;
    return {
      name: rec.name,
      uid: rec.uid,
      generation: String(rec.generation),
      labels: s.labels ?? {},
      annotations: s.annotations ?? {},
      createTime: rec.createTime,
      updateTime: rec.updateTime,
      creator: rec.creator,
      lastModifier: rec.lastModifier,
      ...withoutOutputFields(s, ['labels', 'annotations']),
      ingress: s.ingress ?? 'INGRESS_TRAFFIC_ALL',
      launchStage: s.launchStage ?? 'GA',
      traffic: s.traffic ?? [{ type: LATEST, percent: 100 }],
      observedGeneration: String(rec.observedGeneration),
      terminalCondition: rec.terminalCondition,
      conditions: rec.conditions,
      ...(rec.latestReadyRevision ? { latestReadyRevision: rec.latestReadyRevision } : {}),
      ...(rec.latestCreatedRevision ? { latestCreatedRevision: rec.latestCreatedRevision } : {}),
      ...(ready ? { trafficStatuses: [{ type: LATEST, percent: 100 }] } : {}),
      uri: rec.frontend.url,
      urls: [rec.frontend.url],
      ...(rec.reconciling ? { reconciling: true } : {}),
      etag: rec.etag,
    };
  }

  /** The template with what the real API fills in when the caller leaves it out. */
  private withDefaults(spec: Json): Json {
    const t = { ...(spec.template as Json) };
    const containers = ((t.containers as Container[]) ?? []).map((c, i) => {
      const port = c.ports?.[0]?.containerPort ?? 8080;
      return {
        ...c,
        resources: { cpuIdle: true, ...c.resources, limits: { cpu: '1000m', memory: '512Mi', ...c.resources?.limits } },
        ...(i === 0 ? { ports: c.ports ?? [{ name: 'http1', containerPort: port }] } : {}),
        ...(i === 0 && !c.startupProbe
          ? { startupProbe: { timeoutSeconds: 240, periodSeconds: 240, failureThreshold: 1, tcpSocket: { port } } }
          : {}),
      };
    });
    return {
      ...spec,
      template: {
        maxInstanceRequestConcurrency: 80,
        timeout: '300s',
        serviceAccount: `${this.deps.projectNumber}-compute@developer.gserviceaccount.com`,
        ...t,
        scaling: { maxInstanceCount: 100, ...(t.scaling as Json) },
        containers,
      },
    };
  }

  /** Checks and normalizes a request's Service (enums as names, output fields dropped, defaults filled). */
  private input(request: string, body: Json | undefined): Json {
    const s = encodeEnums(body ?? {}, false);
    const t = s.template as Json | undefined;
    if (!t || typeof t !== 'object') throw fieldViolation(request, 'service.template', 'required field not present.');
    const containers = t.containers as Container[] | undefined;
    if (!Array.isArray(containers) || containers.length === 0 || !containers[0]?.image) {
      throw fieldViolation(request, 'service.template.containers[0].image', 'required field not present.');
    }
    return this.withDefaults(withoutOutputFields(s, OUTPUT_ONLY));
  }

  private setConditions(rec: ServiceRecord, state: ConditionState, message?: string): void {
    const at = now();
    rec.terminalCondition = keepTransition(rec.terminalCondition, condition('Ready', state, { message }, at));
    rec.conditions = ['RoutesReady', 'ConfigurationsReady'].map((type, i) =>
      keepTransition(rec.conditions[i], condition(type, state, { message }, at)),
    );
  }

  private enqueue(rec: ServiceRecord, step: () => Promise<void>): void {
    rec.queue = rec.queue.then(step).catch(() => {});
  }

  async create(
    parent: Parent,
    serviceId: string | null,
    body: Json | undefined,
    validateOnly: boolean,
  ): Promise<Operation> {
    const id = checkServiceId(serviceId);
    const spec = this.input('CreateServiceRequest', body);
    const name = `${parentName(parent)}/services/${id}`;
    if (this.byName.has(name)) throw alreadyExists();
    if (validateOnly) {
      const op = this.deps.ops.start(parent, TYPE.service, { name, ...spec });
      op.done({ name, ...spec });
      return op.get();
    }
    const at = now();
    let rec!: ServiceRecord;
    const host = new ServiceHost(id, parent, this.deps.host, () => ({
      invoker: {
        required: rec.spec.invokerIamDisabled !== true && !this.deps.policies.isPublic(rec.name),
        audiences: [rec.frontend.url, ...((rec.spec.customAudiences as string[]) ?? [])],
      },
      minInstances:
        Number(
          (rec.spec.scaling as Json | undefined)?.minInstanceCount ??
            ((rec.spec.template as Json).scaling as Json | undefined)?.minInstanceCount ??
            0,
        ) || 0,
    }));
    const frontend = await startFrontend(host, this.deps.onFrontRequest);
    rec = {
      parent,
      id,
      name,
      spec,
      uid: newUid(),
      generation: 1,
      observedGeneration: 0,
      createTime: at,
      updateTime: at,
      creator: this.deps.account,
      lastModifier: this.deps.account,
      etag: newEtag(name),
      terminalCondition: condition('Ready', 'CONDITION_RECONCILING', {}, at),
      conditions: [],
      reconciling: true,
      host,
      frontend,
      queue: Promise.resolve(),
    };
    this.setConditions(rec, 'CONDITION_RECONCILING');
    this.byName.set(name, rec);
    const op = this.deps.ops.start(parent, TYPE.service, this.json(rec));
    const fault = this.deps.faults.takeOperationFailure('createService', id);
    this.enqueue(rec, async () => {
      if (!fault) return this.rollOut(rec, op);
      rec.reconciling = false;
      rec.observedGeneration = rec.generation;
      this.setConditions(rec, 'CONDITION_FAILED', fault.message);
      op.fail({ code: rpcCode(fault.code), message: fault.message });
    });
    return op.get();
  }

  /** Deploys a new revision of the service's template; the operation ends with it. */
  private async rollOut(rec: ServiceRecord, op: ReturnType<Operations['start']>): Promise<void> {
    const id = revisionId(rec.id, rec.generation);
    const rev: Revision = {
      id,
      name: `${rec.name}/revisions/${id}`,
      generation: rec.generation,
      template: structuredClone(rec.spec.template as Json),
      createTime: now(),
      state: 'deploying',
    };
    rec.latestCreatedRevision = rev.name;
    rec.reconciling = true;
    this.setConditions(rec, 'CONDITION_RECONCILING');
    const result = await rec.host.deploy(rev);
    rec.reconciling = false;
    rec.observedGeneration = rev.generation;
    rec.etag = newEtag(rec.name);
    if (result.ok) {
      rec.latestReadyRevision = rev.name;
      this.setConditions(rec, 'CONDITION_SUCCEEDED');
      op.done(this.json(rec));
    } else {
      this.setConditions(rec, 'CONDITION_FAILED', result.message);
      op.fail({ code: rpcCode('FAILED_PRECONDITION'), message: result.message });
    }
  }

  get(parent: Parent, id: string): Json {
    return this.json(this.find(parent, id));
  }

  /** Services under `parent` by name (location `-`: every location of the project). */
  list(parent: Parent, pageSize: number, pageToken: string): Json {
    const mine = this.all().filter(
      (r) => r.parent.project === parent.project && (parent.location === '-' || r.parent.location === parent.location),
    );
    const p = page(mine, pageSize, pageToken);
    return p.items.length === 0
      ? {}
      : { services: p.items.map((r) => this.json(r)), ...(p.nextPageToken ? { nextPageToken: p.nextPageToken } : {}) };
  }

  async update(
    parent: Parent,
    id: string,
    body: Json | undefined,
    allowMissing: boolean,
    validateOnly: boolean,
  ): Promise<Operation> {
    const name = `${parentName(parent)}/services/${id}`;
    const rec = this.byName.get(name);
    if (!rec) {
      if (allowMissing) return this.create(parent, id, body, validateOnly);
      throw notFound('SERVICE', id, parent.location, parent.project);
    }
    const spec = this.input('UpdateServiceRequest', body);
    if (validateOnly) {
      const op = this.deps.ops.start(parent, TYPE.service, this.json(rec));
      op.done({ ...this.json(rec), ...spec });
      return op.get();
    }
    const fault = this.deps.faults.takeOperationFailure('updateService', id);
    if (fault) {
      const op = this.deps.ops.start(parent, TYPE.service, this.json(rec));
      op.fail({ code: rpcCode(fault.code), message: fault.message });
      return op.get();
    }
    const newTemplate = !sameMessage(spec.template, rec.spec.template);
    rec.spec = spec;
    rec.generation++;
    rec.updateTime = now();
    rec.lastModifier = this.deps.account;
    rec.etag = newEtag(rec.name);
    if (newTemplate) rec.reconciling = true;
    const op = this.deps.ops.start(parent, TYPE.service, this.json(rec));
    this.enqueue(rec, async () => {
      if (newTemplate) return this.rollOut(rec, op);
      rec.observedGeneration = rec.generation;
      op.done(this.json(rec));
    });
    return op.get();
  }

  /** Deletes the service: its front end and every instance go (a deploy in progress ends), then the operation is done. */
  delete(parent: Parent, id: string, validateOnly: boolean): Operation {
    const rec = this.find(parent, id);
    const op = this.deps.ops.start(parent, TYPE.service, this.json(rec));
    const fault = validateOnly ? undefined : this.deps.faults.takeOperationFailure('deleteService', id);
    if (validateOnly || fault) {
      if (fault) op.fail({ code: rpcCode(fault.code), message: fault.message });
      else op.done(this.json(rec));
      return op.get();
    }
    const closing = Promise.all([rec.host.close(), rec.frontend.close()]);
    this.enqueue(rec, async () => {
      await closing;
      this.byName.delete(rec.name);
      this.deps.policies.forget(rec.name);
      op.done(this.json(rec));
    });
    return op.get();
  }

  async close(): Promise<void> {
    await Promise.all(this.all().map((r) => Promise.all([r.host.close(), r.frontend.close()])));
    await Promise.all(this.all().map((r) => r.queue));
    this.byName.clear();
  }
}
