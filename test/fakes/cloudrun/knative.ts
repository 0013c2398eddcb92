/**
 * The Admin API v1 (Knative serving.knative.dev/v1) view of the same services, read-only, as far as gcloud reads
 * it: `gcloud run services list` asks `GET /v1/projects/{p}/locations/-/services` on the global endpoint, and with
 * `--region R` asks `GET /apis/serving.knative.dev/v1/namespaces/{p}/services` on the regional one, whose host
 * gcloud makes by prefixing the endpoint's host with `R-` (so the region comes from the Host header here).
 */
import type { Condition, Json } from './resources.js';
import type { ServiceRecord, Services } from './services.js';

const STATUS: Record<string, string> = { CONDITION_SUCCEEDED: 'True', CONDITION_FAILED: 'False' };

function knCondition(c: Condition): Json {
  return {
    type: c.type,
    status: STATUS[c.state] ?? 'Unknown',
    ...(c.message ? { message: c.message } : {}),
    ...(c.lastTransitionTime ? { lastTransitionTime: c.lastTransitionTime } : {}),
  };
}

const short = (name: string | undefined) => name?.split('/').at(-1);

/** A service as serving.knative.dev/v1 shows it. */
export function knativeService(services: Services, rec: ServiceRecord, namespace: string): Json {
  const v2 = services.json(rec);
  const t = v2.template as Json;
  const c0 = ((t.containers as Json[]) ?? [])[0] ?? {};
  const ready = rec.latestReadyRevision;
  return {
    apiVersion: 'serving.knative.dev/v1',
    kind: 'Service',
    metadata: {
      name: rec.id,
      namespace,
      selfLink: `/apis/serving.knative.dev/v1/namespaces/${namespace}/services/${rec.id}`,
      uid: rec.uid,
      resourceVersion: rec.etag.replaceAll('"', ''),
      generation: rec.generation,
      creationTimestamp: rec.createTime.replace(/\.\d+Z$/, 'Z'),
      labels: { ...(v2.labels as Json), 'cloud.googleapis.com/location': rec.parent.location },
      annotations: {
        ...(v2.annotations as Json),
        'serving.knative.dev/creator': rec.creator,
        'serving.knative.dev/lastModifier': rec.lastModifier,
        'run.googleapis.com/ingress': 'all',
        'run.googleapis.com/ingress-status': 'all',
        'run.googleapis.com/urls': JSON.stringify(v2.urls),
      },
    },
    spec: {
      template: {
        metadata: {
          annotations: { 'autoscaling.knative.dev/maxScale': String((t.scaling as Json)?.maxInstanceCount ?? 100) },
        },
        spec: {
          containerConcurrency: t.maxInstanceRequestConcurrency,
          timeoutSeconds: Number.parseInt(String(t.timeout ?? '300s'), 10),
          serviceAccountName: t.serviceAccount,
          containers: [
            {
              image: c0.image,
              ...(c0.command ? { command: c0.command } : {}),
              ...(c0.args ? { args: c0.args } : {}),
              ...(c0.env ? { env: c0.env } : {}),
              ports: c0.ports,
              resources: c0.resources,
            },
          ],
        },
      },
      traffic: [{ percent: 100, latestRevision: true }],
    },
    status: {
      observedGeneration: rec.observedGeneration,
      conditions: [rec.terminalCondition, ...rec.conditions].map(knCondition),
      ...(ready ? { latestReadyRevisionName: short(ready) } : {}),
      ...(rec.latestCreatedRevision ? { latestCreatedRevisionName: short(rec.latestCreatedRevision) } : {}),
      ...(ready ? { traffic: [{ revisionName: short(ready), percent: 100, latestRevision: true }] } : {}),
      url: v2.uri,
      address: { url: v2.uri },
    },
  };
}

export function knativeList(items: Json[]): Json {
  return { apiVersion: 'serving.knative.dev/v1', kind: 'ServiceList', metadata: {}, items };
}

/** The region a regional endpoint's host names (`us-central1-localhost:8080` → `us-central1`), if it names one. */
export function regionOfHost(host: string | undefined): string | undefined {
  const m = /^([a-z]+-[a-z]+\d+)-/.exec(host ?? '');
  return m?.[1];
}
