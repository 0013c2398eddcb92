import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { newNonce, secretKey, sessionSecret } from '../../src/providers/cloudrun/secret.js';
import { ANNOTATION, serviceObject, sessionOf, sha256Hex, statusOf } from '../../src/providers/cloudrun/service.js';
import { normalizeCreateRequest } from '../../src/session/model.js';

const config = { project: 'my-project', region: 'europe-west1' };
const id = 'ws-team-a-alice-1756062811-ab12';

describe('a session as a Cloud Run service', () => {
  const req = normalizeCreateRequest({
    namespace: 'team-a',
    user: 'alice',
    env: { DEBUG: '1' },
    storage: { bucket: 'my-bucket', filestore: { ip: '10.0.0.2', share: 'vol1' } },
  });
  const svc = serviceObject(id, req, config, {
    secretSha256: sha256Hex('s3cret'),
    nonce: 'n1',
    now: Date.parse('2026-01-01T00:00:00Z'),
  });

  it("private, scaled to zero and to one instance with session affinity, the agent on 8080 with only the secret's hash", () => {
    const t = svc.template;
    expect(t.scaling).toEqual({ minInstanceCount: 0, maxInstanceCount: 1 });
    expect(t.sessionAffinity).toBe(true);
    expect(t.timeout).toEqual({ seconds: 3600 });
    const c = t.containers[0]!;
    expect(c.image).toBe('europe-west1-docker.pkg.dev/my-project/onmemos/python:latest');
    expect(c.ports).toEqual([{ containerPort: 8080 }]);
    expect(c.env).toEqual(
      expect.arrayContaining([
        { name: 'WORKSPACE_ID', value: id },
        { name: 'BUCKET_NAME', value: 'onmemos-team-a-alice-1756062811-ab12' },
        { name: 'DEBUG', value: '1' },
        { name: 'ONMEMOS_AGENT_SECRET_SHA256', value: sha256Hex('s3cret') },
      ]),
    );
    expect(JSON.stringify(svc)).not.toContain('s3cret');
  });

  it('Filestore is an NFS volume at /workspace, a bucket a Cloud Storage volume at /workspace/bucket (gen2)', () => {
    expect(svc.template.volumes).toEqual([
      { name: 'workspace', nfs: { server: '10.0.0.2', path: '/vol1', readOnly: false } },
      { name: 'bucket', gcs: { bucket: 'my-bucket', readOnly: false } },
    ]);
    expect(svc.template.containers[0]!.volumeMounts).toEqual([
      { name: 'workspace', mountPath: '/workspace' },
      { name: 'bucket', mountPath: '/workspace/bucket' },
    ]);
    expect(svc.template.executionEnvironment).toBe('EXECUTION_ENVIRONMENT_GEN2');
  });

  it('the session is rebuilt from the service alone; status from its terminal condition (names or numbers) and expiry', () => {
    const name = `projects/my-project/locations/europe-west1/services/${id}`;
    const live = { ...svc, name, uri: 'https://x.a.run.app', terminalCondition: { state: 'CONDITION_SUCCEEDED' } };
    expect(sessionOf(live, Date.parse('2026-01-01T00:10:00Z'))).toMatchObject({
      id,
      provider: 'cloud_run',
      namespace: 'team-a',
      user: 'alice',
      status: 'running',
      url: 'https://x.a.run.app',
      details: { service_name: name, bucket_name: 'onmemos-team-a-alice-1756062811-ab12' },
    });
    expect(statusOf({ ...live, terminalCondition: { state: 4 } }, 0)).toBe('running');
    expect(statusOf({ ...live, terminalCondition: { state: 5, message: 'x' } }, 0)).toBe('failed');
    expect(statusOf({ ...live, terminalCondition: { state: 'CONDITION_RECONCILING' } }, 0)).toBe('creating');
    expect(statusOf(live, Date.parse('2026-01-01T02:00:00Z'))).toBe('expired');
    // A service whose name does not match its session annotation (labels copied onto another) is not a session.
    expect(sessionOf({ ...live, name: `${name}-copy` })).toBeUndefined();
  });

  it('a Filestore workspace is persistent; request-based CPU by default: get says both, in fields and notes', () => {
    const name = `projects/my-project/locations/europe-west1/services/${id}`;
    expect(svc.template.containers[0]!.resources).toEqual({ limits: { cpu: '2', memory: '2048Mi' }, cpuIdle: true });
    expect(svc.annotations[ANNOTATION.cpuAlways]).toBe('false');
    const s = sessionOf({ ...svc, name });
    expect(s?.details).toMatchObject({
      cpu_always: false,
      workspace_persistent: true,
      notes: [
        'workspace: the Filestore share 10.0.0.2:/vol1, kept when the service scales to zero',
        'cpu: request-based: background processes are frozen between requests (--cpu-always keeps them running)',
      ],
    });
  });
});

describe('cpu_always: instance-based CPU', () => {
  const now = Date.parse('2026-01-01T00:00:00Z');
  const name = `projects/my-project/locations/europe-west1/services/${id}`;
  const make = (cpu_always: boolean) =>
    serviceObject(id, normalizeCreateRequest({ namespace: 'team-a', user: 'alice', cpu_always }), config, {
      secretSha256: sha256Hex('s'),
      nonce: 'n',
      now,
    });

  it('sets cpuIdle false on the container and records it in an annotation', () => {
    const svc = make(true);
    expect(svc.template.containers[0]!.resources.cpuIdle).toBe(false);
    expect(svc.annotations[ANNOTATION.cpuAlways]).toBe('true');
    expect(svc.template.scaling).toEqual({ minInstanceCount: 0, maxInstanceCount: 1 });
  });

  it('get and list rebuild it from the annotation; without Filestore the workspace is not persistent', () => {
    const s = sessionOf({ ...make(true), name });
    expect(s?.details).toEqual({
      service_name: name,
      bucket_name: 'onmemos-team-a-alice-1756062811-ab12',
      scaling: { min_instances: 0, max_instances: 1 },
      cpu_always: true,
      workspace_persistent: false,
      notes: [
        'workspace: in the instance, lost when the service scales to zero (no Filestore volume)',
        'cpu: instance-based (--cpu-always): background processes run between requests, while the instance lives',
      ],
    });
    expect(sessionOf({ ...make(false), name })?.details).toMatchObject({ cpu_always: false });
  });

  it('as the API returns it: a false cpuIdle left out (proto3 JSON) keeps it; a template turned back to cpuIdle true does not', () => {
    const svc = make(true);
    const c = svc.template.containers[0]!;
    const omitted = {
      ...svc,
      name,
      template: {
        ...svc.template,
        containers: [{ ...c, resources: { limits: c.resources.limits } }],
      },
    };
    expect(sessionOf(omitted)?.details.cpu_always).toBe(true);
    const throttled = {
      ...svc,
      name,
      template: { ...svc.template, containers: [{ ...c, resources: { ...c.resources, cpuIdle: true } }] },
    };
    expect(sessionOf(throttled)?.details.cpu_always).toBe(false);
    // A service made before the annotation existed had request-based CPU.
    const { [ANNOTATION.cpuAlways]: _, ...older } = make(false).annotations;
    expect(sessionOf({ ...make(false), annotations: older, name })?.details.cpu_always).toBe(false);
  });
});

describe('the session secret', () => {
  it('derives from a key of this user (0600, made once) and a nonce; never the same for two nonces', () => {
    const dir = mkdtempSync(join(tmpdir(), 'onmemos-crkey-'));
    try {
      const env = { ONMEMOS_CONFIG_DIR: join(dir, 'cfg') };
      const k1 = secretKey(env);
      expect(secretKey(env).equals(k1)).toBe(true);
      expect(statSync(join(dir, 'cfg', 'cloudrun.key')).mode & 0o777).toBe(0o600);
      expect(statSync(join(dir, 'cfg')).mode & 0o777).toBe(0o700);
      const a = sessionSecret(k1, 'svc', newNonce());
      expect(a).not.toBe(sessionSecret(k1, 'svc', newNonce()));
      expect(secretKey({ ONMEMOS_CLOUDRUN_KEY: 'k'.repeat(32) }).toString()).toBe('k'.repeat(32));
      expect(() => secretKey({ ONMEMOS_CLOUDRUN_KEY: 'short' })).toThrow(/at least 32/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
