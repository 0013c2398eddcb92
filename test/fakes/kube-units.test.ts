/** The Kubernetes fake's pure parts: selectors, patches, the protobuf body kubectl sends, printing, pod mapping. */
import { describe, expect, it } from 'vitest';
import type { Pod } from './kube/objects.js';
import { applyPatch, jsonPatch, mergePatch } from './kube/patch.js';
import { fullImage, idBudget, quantity, sessionRequest, templateFor } from './kube/pods.js';
import { decodeProtobuf } from './kube/protobuf.js';
import { fieldSelector, labelSelector } from './kube/selectors.js';
import { ApiError } from './kube/status.js';
import { humanDuration, wantsTable } from './kube/table.js';

const status = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    if (e instanceof ApiError) return e.status;
    throw e;
  }
  throw new Error('expected an ApiError');
};

describe('label selectors', () => {
  const pick = (sel: string, ...sets: Record<string, string>[]) => sets.map((l) => labelSelector(sel)(l));
  it('reads equality, inequality, existence and sets, all of which must hold', () => {
    const a = { app: 'x', tier: 'web' };
    const b = { app: 'y' };
    const c = {};
    expect(pick('app=x', a, b, c)).toEqual([true, false, false]);
    expect(pick('app==x', a, b, c)).toEqual([true, false, false]);
    expect(pick('app!=x', a, b, c)).toEqual([false, true, true]);
    expect(pick('tier', a, b, c)).toEqual([true, false, false]);
    expect(pick('!tier', a, b, c)).toEqual([false, true, true]);
    expect(pick('app in (x, y)', a, b, c)).toEqual([true, true, false]);
    expect(pick('app notin (x)', a, b, c)).toEqual([false, true, true]);
    expect(pick('app in (x,y),tier!=web', a, b, c)).toEqual([false, true, false]);
    expect(pick('', a, b, c)).toEqual([true, true, true]);
    expect(pick('n>3', { n: '4' }, { n: '2' }, {})).toEqual([true, false, false]);
  });
  it('refuses what does not parse with a BadRequest', () => {
    expect(status(() => labelSelector('app=(x'))).toMatchObject({ code: 400, reason: 'BadRequest' });
    expect(status(() => labelSelector('a b'))).toMatchObject({ code: 400 });
  });
});

describe('field selectors', () => {
  const fields = { 'metadata.name': (o: { name: string }) => o.name };
  it('matches =, == and !=; an unknown field is a BadRequest', () => {
    expect(fieldSelector('metadata.name=a', fields)({ name: 'a' })).toBe(true);
    expect(fieldSelector('metadata.name==a', fields)({ name: 'b' })).toBe(false);
    expect(fieldSelector('metadata.name!=a', fields)({ name: 'b' })).toBe(true);
    expect(status(() => fieldSelector('spec.foo=a', fields))).toMatchObject({
      code: 400,
      message: 'field label not supported: spec.foo',
    });
  });
});

describe('patches', () => {
  const doc = { metadata: { name: 'p', labels: { a: '1', b: '2' } }, spec: { list: [1, 2] } };
  it('merge patch: null removes, objects merge, the rest replaces', () => {
    expect(mergePatch(doc, { metadata: { labels: { a: null, c: '3' } }, spec: { list: [9] } })).toEqual({
      metadata: { name: 'p', labels: { b: '2', c: '3' } },
      spec: { list: [9] },
    });
  });
  it('JSON patch: add, replace, remove, test, move; a failed test or a missing path is a BadRequest', () => {
    expect(
      jsonPatch(doc, [
        { op: 'add', path: '/metadata/annotations', value: { x: 'y' } },
        { op: 'replace', path: '/metadata/labels/a', value: '9' },
        { op: 'remove', path: '/metadata/labels/b' },
        { op: 'add', path: '/spec/list/-', value: 3 },
        { op: 'test', path: '/metadata/name', value: 'p' },
        { op: 'move', from: '/metadata/annotations/x', path: '/metadata/labels/x' },
      ]),
    ).toEqual({ metadata: { name: 'p', labels: { a: '9', x: 'y' }, annotations: {} }, spec: { list: [1, 2, 3] } });
    expect(status(() => jsonPatch(doc, [{ op: 'test', path: '/metadata/name', value: 'q' }]))).toMatchObject({
      code: 400,
    });
    expect(status(() => jsonPatch(doc, [{ op: 'replace', path: '/nope/x', value: 1 }]))).toMatchObject({ code: 400 });
    expect(doc.metadata.labels).toEqual({ a: '1', b: '2' }); // the original is left alone
  });
  it('chooses by Content-Type; server-side apply is an unsupported media type', () => {
    expect(applyPatch(doc, { spec: null }, 'application/strategic-merge-patch+json; charset=utf-8')).toEqual({
      metadata: doc.metadata,
    });
    expect(status(() => applyPatch(doc, {}, 'application/apply-patch+yaml'))).toMatchObject({ code: 415 });
  });
});

/** A protobuf field: tag, then a length-delimited payload. */
const field = (no: number, payload: Buffer | string) => {
  const body = Buffer.from(payload);
  return Buffer.concat([Buffer.from([(no << 3) | 2, body.length]), body]);
};

describe('the protobuf Namespace kubectl create namespace sends', () => {
  it('reads the name, labels and annotations out of the k8s envelope', () => {
    const meta = Buffer.concat([
      field(1, 'made'),
      field(11, Buffer.concat([field(1, 'team'), field(2, 'a')])),
      field(12, Buffer.concat([field(1, 'note'), field(2, 'hi')])),
    ]);
    const envelope = Buffer.concat([
      Buffer.from('k8s\0', 'latin1'),
      field(1, Buffer.concat([field(1, 'v1'), field(2, 'Namespace')])),
      field(2, Buffer.concat([field(1, meta), field(2, ''), field(3, '')])),
    ]);
    expect(decodeProtobuf(envelope)).toEqual({
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: 'made', labels: { team: 'a' }, annotations: { note: 'hi' } },
    });
  });
  it('refuses another kind (415) and a body without the magic (400)', () => {
    const pod = Buffer.concat([
      Buffer.from('k8s\0', 'latin1'),
      field(1, Buffer.concat([field(1, 'v1'), field(2, 'Pod')])),
    ]);
    expect(status(() => decodeProtobuf(pod))).toMatchObject({ code: 415 });
    expect(status(() => decodeProtobuf(Buffer.from('{}')))).toMatchObject({ code: 400 });
  });
});

describe('printing', () => {
  it('ages read as kubectl shows them', () => {
    const s = 1000;
    expect(
      [0, 45 * s, 119 * s, 182 * s, 25 * 60 * s, 5 * 3600 * s + 3 * 60 * s, 20 * 3600 * s].map(humanDuration),
    ).toEqual(['0s', '45s', '119s', '3m2s', '25m', '5h3m', '20h']);
    expect(humanDuration((3 * 24 + 4) * 3600 * s)).toBe('3d4h');
  });
  it('knows the Table accept header kubectl get sends', () => {
    expect(
      wantsTable(
        'application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json',
      ),
    ).toBe('v1');
    expect(wantsTable('application/json, */*')).toBeUndefined();
  });
});

describe('pods as local sessions', () => {
  const pod = (namespace: string, name: string, image: string, limits?: Record<string, string>) =>
    ({
      metadata: { namespace, name },
      spec: { containers: [{ name: 'main', image, ...(limits ? { resources: { limits } } : {}) }] },
      status: { phase: 'Pending' },
    }) as unknown as Pod;
  it('take a template from the image, and a short id that fits the socket path', () => {
    expect(['python:3.12', 'node:20-slim', 'golang:1.23', 'gcr.io/x/go:1', 'busybox'].map(templateFor)).toEqual([
      'python',
      'nodejs',
      'go',
      'go',
      'python',
    ]);
    const dir = '/tmp/k-abcdef/s';
    const req = sessionRequest(
      pod('a-rather-long-namespace-name', 'an.even.longer.pod-name-here', 'node:20'),
      'isolated',
      idBudget(dir),
    );
    expect(req.namespace.length + req.user.length).toBeLessThanOrEqual(idBudget(dir));
    expect(req.user).toMatch(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/);
    expect(req.template).toBe('nodejs');
  });
  it('take limits from the first container, as quantities', () => {
    expect([quantity('500m'), quantity('2'), quantity('512Mi'), quantity('1G'), quantity('x')]).toEqual([
      0.5,
      2,
      512 * 2 ** 20,
      1e9,
      undefined,
    ]);
    const req = sessionRequest(pod('ns', 'p', 'python', { cpu: '500m', memory: '256Mi' }), 'isolated', 20);
    expect(req.limits).toMatchObject({ cpus: 0.5, memoryBytes: 256 * 2 ** 20 });
  });
  it('spell images as containerd does', () => {
    expect(fullImage('python')).toBe('docker.io/library/python:latest');
    expect(fullImage('me/app:1')).toBe('docker.io/me/app:1');
    expect(fullImage('gcr.io/p/app')).toBe('gcr.io/p/app:latest');
    expect(fullImage('localhost:5000/app@sha256:abc')).toBe('localhost:5000/app@sha256:abc');
  });
});
