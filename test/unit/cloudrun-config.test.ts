import { describe, expect, it } from 'vitest';
import { cloudRunConfig, defaultImage, parseEndpoint } from '../../src/providers/cloudrun/config.js';
import { jobName, serviceName } from '../../src/providers/cloudrun/names.js';

describe('cloud_run configuration', () => {
  it("the document's PROJECT_ID and REGION, else gcloud's own variables; says what is missing", () => {
    expect(cloudRunConfig({ PROJECT_ID: 'my-project', REGION: 'europe-west1' })).toEqual({
      ok: true,
      config: { project: 'my-project', region: 'europe-west1' },
    });
    expect(cloudRunConfig({ CLOUDSDK_CORE_PROJECT: 'p-123456', CLOUDSDK_RUN_REGION: 'us-central1' })).toMatchObject({
      ok: true,
      config: { project: 'p-123456', region: 'us-central1' },
    });
    expect(cloudRunConfig({ REGION: 'europe-west1' })).toMatchObject({
      ok: false,
      reason: expect.stringContaining('no project'),
    });
    expect(cloudRunConfig({ PROJECT_ID: 'my-project' })).toMatchObject({
      ok: false,
      reason: expect.stringContaining('no region'),
    });
    expect(cloudRunConfig({ PROJECT_ID: 'my-project', REGION: 'Mars 1' })).toMatchObject({ ok: false });
  });

  it("gcloud's endpoint override and token file, as PROTOCOLS.md §5 gives them", () => {
    const r = cloudRunConfig({
      PROJECT_ID: 'my-project',
      REGION: 'europe-west1',
      CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN: 'http://127.0.0.1:4567/',
      CLOUDSDK_AUTH_ACCESS_TOKEN_FILE: '/run/token',
    });
    expect(r).toMatchObject({
      ok: true,
      config: { endpoint: { host: '127.0.0.1', port: 4567, protocol: 'http' }, tokenFile: '/run/token' },
    });
    expect(parseEndpoint('https://europe-west1-run.googleapis.com/')).toEqual({
      host: 'europe-west1-run.googleapis.com',
      port: 443,
      protocol: 'https',
    });
    expect(parseEndpoint('ftp://x/')).toMatch(/http\(s\) URL/);
    expect(parseEndpoint('https://x/v2/')).toMatch(/not a path/);
    expect(parseEndpoint('not a url')).toMatch(/not a URL/);
  });

  it("images: the recipe's image in the project's Artifact Registry, or CLOUDRUN_DEFAULT_IMAGE", () => {
    const c = { project: 'my-project', region: 'europe-west1' };
    expect(defaultImage(c, 'nodejs')).toBe('europe-west1-docker.pkg.dev/my-project/onmemos/nodejs:latest');
    expect(defaultImage({ ...c, defaultImage: 'img:1' }, 'go')).toBe('img:1');
  });
});

describe('cloud_run names', () => {
  const valid = /^[a-z]([a-z0-9-]{0,47}[a-z0-9])?$/;
  it('an id that fits is its own service name; a longer one is shortened with a hash, deterministically', () => {
    expect(serviceName('ws-team-a-alice-1756062811-ab12')).toBe('ws-team-a-alice-1756062811-ab12');
    const long = `ws-${'n'.repeat(30)}-${'u'.repeat(30)}-1756062811-ab12`;
    const name = serviceName(long);
    expect(name).toMatch(valid);
    expect(name.length).toBeLessThanOrEqual(49);
    expect(serviceName(long)).toBe(name);
    expect(serviceName(long.replace(/ab12$/, 'ab13'))).not.toBe(name);
    // A cut that lands on a '-' does not leave '--'.
    expect(serviceName(`ws-${'a'.repeat(36)}-b-1756062811-ab12`)).not.toContain('--');
  });

  it('a job is named as its service: valid, and two sessions created in one second get two jobs', () => {
    const a = `ws-${'n'.repeat(40)}-u-1756062811-ab12`;
    for (const id of ['ws-a-b-1-c', a]) {
      expect(jobName(id)).toMatch(valid);
      expect(jobName(id)).toBe(serviceName(id));
    }
    expect(jobName(a.replace(/ab12$/, 'ab13'))).not.toBe(jobName(a));
  });
});
