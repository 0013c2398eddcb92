/**
 * What the API server checks and fills in on create and update, for the three resources the fake has: names
 * (DNS-1123 labels for namespaces, subdomains for pods and claims), labels, containers, claims, and the defaults a
 * created object comes back with. Errors are 422 Invalid with one cause per field, worded as the real ones.
 */
import type { Container, KObject, Namespace, ObjectMeta, Pod, Pvc } from './objects.js';
import { fullImage } from './pods.js';
import { labelKeyProblem, labelValueProblem } from './selectors.js';
import { type FieldError, invalid } from './status.js';

const LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_MSG =
  "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const SUBDOMAIN_MSG =
  "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

export function dnsLabelErrors(field: string, v: string): FieldError[] {
  const out: FieldError[] = [];
  if (v.length > 63)
    out.push({ field, type: 'FieldValueInvalid', value: v, detail: 'must be no more than 63 characters' });
  if (!LABEL.test(v)) out.push({ field, type: 'FieldValueInvalid', value: v, detail: LABEL_MSG });
  return out;
}

export function subdomainErrors(field: string, v: string): FieldError[] {
  const out: FieldError[] = [];
  if (v.length > 253)
    out.push({ field, type: 'FieldValueInvalid', value: v, detail: 'must be no more than 253 characters' });
  if (!SUBDOMAIN.test(v)) out.push({ field, type: 'FieldValueInvalid', value: v, detail: SUBDOMAIN_MSG });
  return out;
}

function metaErrors(meta: ObjectMeta, nameRule: typeof dnsLabelErrors): FieldError[] {
  const out: FieldError[] = [];
  if (!meta.name)
    out.push({ field: 'metadata.name', type: 'FieldValueRequired', detail: 'name or generateName is required' });
  else out.push(...nameRule('metadata.name', meta.name));
  for (const [k, v] of Object.entries(meta.labels ?? {})) {
    const kp = labelKeyProblem(k);
    if (kp) out.push({ field: 'metadata.labels', type: 'FieldValueInvalid', value: k, detail: kp });
    const vp = typeof v === 'string' ? labelValueProblem(v) : 'must be a string';
    if (vp) out.push({ field: 'metadata.labels', type: 'FieldValueInvalid', value: v, detail: vp });
  }
  for (const [k, v] of Object.entries(meta.annotations ?? {})) {
    if (typeof v !== 'string')
      out.push({
        field: `metadata.annotations[${k}]`,
        type: 'FieldValueInvalid',
        value: v,
        detail: 'must be a string',
      });
  }
  return out;
}

/** Gives a generateName its random suffix (five characters, as the server does). */
export function nameFromGenerate(meta: ObjectMeta): void {
  if (meta.name || !meta.generateName) return;
  const chars = 'bcdfghjklmnpqrstvwxz2456789';
  let s = '';
  for (let i = 0; i < 5; i++) s += chars[Math.floor(Math.random() * chars.length)];
  meta.name = `${meta.generateName}${s}`;
}

function containerErrors(c: Container, i: number, seen: Set<string>): FieldError[] {
  const at = `spec.containers[${i}]`;
  const out: FieldError[] = [];
  if (!c || typeof c !== 'object') return [{ field: at, type: 'FieldValueRequired', detail: '' }];
  if (!c.name) out.push({ field: `${at}.name`, type: 'FieldValueRequired', detail: '' });
  else {
    out.push(...dnsLabelErrors(`${at}.name`, c.name));
    if (seen.has(c.name))
      out.push({ field: `${at}.name`, type: 'FieldValueInvalid', value: c.name, detail: 'Duplicate value' });
    seen.add(c.name);
  }
  if (!c.image || typeof c.image !== 'string')
    out.push({ field: `${at}.image`, type: 'FieldValueRequired', detail: '' });
  if (c.workingDir !== undefined && (typeof c.workingDir !== 'string' || !c.workingDir.startsWith('/'))) {
    out.push({
      field: `${at}.workingDir`,
      type: 'FieldValueInvalid',
      value: c.workingDir,
      detail: 'must be an absolute path',
    });
  }
  (c.env ?? []).forEach((e, j) => {
    if (!e?.name) out.push({ field: `${at}.env[${j}].name`, type: 'FieldValueRequired', detail: '' });
    else if (e.value !== undefined && typeof e.value !== 'string') {
      out.push({
        field: `${at}.env[${j}].value`,
        type: 'FieldValueInvalid',
        value: e.value,
        detail: 'must be a string',
      });
    }
  });
  return out;
}

/** Validates a new pod and fills in the server's defaults; the status is the server's own (Pending). */
export function preparePod(pod: Pod): Pod {
  nameFromGenerate(pod.metadata);
  const errors = metaErrors(pod.metadata, subdomainErrors);
  const containers = pod.spec?.containers;
  if (!Array.isArray(containers) || containers.length === 0) {
    errors.push({ field: 'spec.containers', type: 'FieldValueRequired', detail: '' });
  } else {
    const seen = new Set<string>();
    containers.forEach((c, i) => {
      errors.push(...containerErrors(c, i, seen));
    });
  }
  const volumes = new Set<string>();
  (pod.spec?.volumes ?? []).forEach((v, i) => {
    if (!v?.name) errors.push({ field: `spec.volumes[${i}].name`, type: 'FieldValueRequired', detail: '' });
    else volumes.add(v.name);
    if (v?.persistentVolumeClaim && !v.persistentVolumeClaim.claimName) {
      errors.push({
        field: `spec.volumes[${i}].persistentVolumeClaim.claimName`,
        type: 'FieldValueRequired',
        detail: '',
      });
    }
  });
  (containers ?? []).forEach((c, i) => {
    (c?.volumeMounts ?? []).forEach((m, j) => {
      if (!volumes.has(m.name)) {
        errors.push({
          field: `spec.containers[${i}].volumeMounts[${j}].name`,
          type: 'FieldValueNotSupported',
          value: m.name,
          detail: "supported values: the pod's volumes",
        });
      }
    });
  });
  if (errors.length > 0) throw invalid('Pod', pod.metadata.name ?? '', errors);
  pod.apiVersion = 'v1';
  pod.kind = 'Pod';
  pod.spec.restartPolicy ??= 'Always';
  pod.spec.terminationGracePeriodSeconds ??= 30;
  pod.spec.dnsPolicy ??= 'ClusterFirst';
  pod.spec.schedulerName ??= 'default-scheduler';
  pod.spec.serviceAccountName ??= 'default';
  pod.spec.enableServiceLinks ??= true;
  pod.spec.securityContext ??= {};
  for (const c of pod.spec.containers) {
    c.imagePullPolicy ??= fullImage(c.image).endsWith(':latest') ? 'Always' : 'IfNotPresent';
    c.terminationMessagePath ??= '/dev/termination-log';
    c.terminationMessagePolicy ??= 'File';
    c.resources ??= {};
  }
  pod.status = { phase: 'Pending', qosClass: 'BestEffort' };
  delete pod.spec.nodeName; // bound by the scheduler, not by the creator (a pod naming its node is not supported)
  return pod;
}

export function prepareNamespace(ns: Namespace): Namespace {
  nameFromGenerate(ns.metadata);
  const errors = metaErrors(ns.metadata, dnsLabelErrors);
  if (errors.length > 0) throw invalid('Namespace', ns.metadata.name ?? '', errors);
  ns.apiVersion = 'v1';
  ns.kind = 'Namespace';
  ns.metadata.labels = { ...ns.metadata.labels, 'kubernetes.io/metadata.name': ns.metadata.name! };
  ns.spec = { finalizers: ['kubernetes'] };
  ns.status = { phase: 'Active' };
  return ns;
}

/** A claim is bound at once, to a volume named after it, with the capacity it asked for. */
export function preparePvc(pvc: Pvc): Pvc {
  nameFromGenerate(pvc.metadata);
  const errors = metaErrors(pvc.metadata, subdomainErrors);
  const modes = pvc.spec?.accessModes;
  if (!Array.isArray(modes) || modes.length === 0) {
    errors.push({
      field: 'spec.accessModes',
      type: 'FieldValueRequired',
      detail: 'at least 1 access mode is required',
    });
  }
  const storage = pvc.spec?.resources?.requests?.storage;
  if (!storage) errors.push({ field: 'spec.resources[storage]', type: 'FieldValueRequired', detail: '' });
  if (errors.length > 0) throw invalid('PersistentVolumeClaim', pvc.metadata.name ?? '', errors);
  pvc.apiVersion = 'v1';
  pvc.kind = 'PersistentVolumeClaim';
  pvc.spec.storageClassName ??= 'standard-rwo';
  pvc.spec.volumeMode ??= 'Filesystem';
  return pvc;
}

/** Labels and annotations checked again after an update or patch. */
export function checkUpdatedMeta(kind: string, o: KObject): void {
  const errors = metaErrors(o.metadata, () => []);
  if (errors.length > 0) throw invalid(kind, o.metadata.name ?? '', errors);
}
