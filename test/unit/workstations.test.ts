/**
 * The pure parts of the workstations provider: its configuration from the environment (the document's variables and
 * gcloud's), a session as a Workstation and back, and the ssh command line (quoting, options).
 */
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { configName, workstationsConfig } from '../../src/providers/workstations/config.js';
import { shq, sshOptions } from '../../src/providers/workstations/ssh.js';
import { sessionOf, statusOf, workstationId, workstationObject } from '../../src/providers/workstations/workstation.js';
import { parseCreateRequest } from '../../src/session/model.js';

const base = {
  PROJECT_ID: 'my-project',
  WORKSTATIONS_REGION: 'us-central1',
  WORKSTATIONS_CLUSTER: 'c1',
  WORKSTATIONS_CONFIG: 'cfg',
};

describe('workstationsConfig', () => {
  it('needs the project, region, cluster and config, and names what is missing', () => {
    expect(workstationsConfig({})).toEqual({
      ok: false,
      reason: 'set PROJECT_ID, WORKSTATIONS_REGION, WORKSTATIONS_CLUSTER, WORKSTATIONS_CONFIG',
    });
    expect(workstationsConfig({ ...base, WORKSTATIONS_CONFIG: '' })).toMatchObject({
      ok: false,
      reason: 'set WORKSTATIONS_CONFIG',
    });
    const r = workstationsConfig(base);
    expect(r).toMatchObject({ ok: true, config: { project: 'my-project', user: 'user' } });
    if (r.ok) {
      expect(configName(r.config)).toBe(
        'projects/my-project/locations/us-central1/workstationClusters/c1/workstationConfigs/cfg',
      );
    }
  });

  it("takes gcloud's variables: the properties, the endpoint override, the token file and the CA bundle", () => {
    const r = workstationsConfig({
      CLOUDSDK_CORE_PROJECT: 'p-123',
      CLOUDSDK_WORKSTATIONS_REGION: 'europe-west1',
      CLOUDSDK_WORKSTATIONS_CLUSTER: 'c',
      CLOUDSDK_WORKSTATIONS_CONFIG: 'k',
      CLOUDSDK_API_ENDPOINT_OVERRIDES_WORKSTATIONS: 'http://127.0.0.1:4567/',
      CLOUDSDK_AUTH_ACCESS_TOKEN_FILE: '/tmp/t',
      CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE: '/tmp/ca.pem',
      WORKSTATIONS_USER: 'dev',
    });
    expect(r).toEqual({
      ok: true,
      config: {
        project: 'p-123',
        region: 'europe-west1',
        cluster: 'c',
        config: 'k',
        endpoint: { host: '127.0.0.1', port: 4567, protocol: 'http' },
        tokenFile: '/tmp/t',
        caFile: '/tmp/ca.pem',
        user: 'dev',
      },
    });
  });

  it('refuses malformed values in one line', () => {
    expect(workstationsConfig({ ...base, WORKSTATIONS_CLUSTER: 'Bad_Name' })).toMatchObject({ ok: false });
    expect(workstationsConfig({ ...base, WORKSTATIONS_USER: 'x y' })).toMatchObject({ ok: false });
    expect(workstationsConfig({ ...base, CLOUDSDK_API_ENDPOINT_OVERRIDES_WORKSTATIONS: 'x' })).toMatchObject({
      ok: false,
      reason: expect.stringContaining('CLOUDSDK_API_ENDPOINT_OVERRIDES_WORKSTATIONS is not a URL'),
    });
  });
});

describe('a session as a workstation', () => {
  const req = parseCreateRequest({ provider: 'workstations', namespace: 'team', user: 'ann', ttl_minutes: 30 });
  const id = 'ws-team-ann-1764000000-ab12';
  const name = `projects/p/locations/l/workstationClusters/c/workstationConfigs/k/workstations/${id}`;

  it('carries the session in labels and annotations, the document variables in env, and comes back', () => {
    const w = workstationObject(id, req, Date.parse('2026-11-26T00:00:00Z'));
    expect(w.labels).toEqual({
      'managed-by': 'onmemos',
      'onmemos-namespace': 'team',
      'onmemos-user': 'ann',
      'onmemos-template': 'python',
    });
    expect(w.env).toMatchObject({ WORKSPACE_ID: id, NAMESPACE: 'team', USER: 'ann' });
    const s = sessionOf(
      { ...w, name, state: 'STATE_RUNNING', host: 'h.example.dev' },
      Date.parse('2026-11-26T00:01:00Z'),
    );
    expect(s).toMatchObject({
      id,
      provider: 'workstations',
      status: 'running',
      url: 'https://h.example.dev',
      ssh: true,
      expires_at: '2026-11-26T00:30:00.000Z',
      details: { workstation_name: name, host: 'h.example.dev' },
    });
    // A label copied onto another workstation is not that session.
    expect(sessionOf({ ...w, name: `${name}-copy` })).toBeUndefined();
  });

  it('states by name or number; past the expiry it is expired', () => {
    const at = Date.parse('2026-11-26T00:00:00Z');
    const annotations = { 'onmemos.dev/expires-at': '2026-11-26T01:00:00Z' };
    expect(statusOf({ state: 1, annotations }, at)).toBe('starting');
    expect(statusOf({ state: 'STATE_RUNNING', annotations }, at)).toBe('running');
    expect(statusOf({ state: 3, annotations }, at)).toBe('stopping');
    expect(statusOf({ state: 'STATE_STOPPED', annotations }, at)).toBe('stopped');
    expect(statusOf({ state: 0, annotations }, at)).toBe('creating');
    expect(statusOf({ state: 2, annotations }, Date.parse('2026-11-26T02:00:00Z'))).toBe('expired');
  });

  it('workstation ids stay within 63 characters, deterministically', () => {
    const long = `ws-${'n'.repeat(40)}-${'u'.repeat(30)}-1764000000-ab12`;
    expect(workstationId(id)).toBe(id);
    expect(workstationId(long)).toHaveLength(63);
    expect(workstationId(long)).toMatch(/^[a-z]([-a-z0-9]*[a-z0-9])?$/);
    expect(workstationId(long.replace(/ab12$/, 'ab13'))).not.toBe(workstationId(long));
  });
});

describe('the ssh command line', () => {
  it('shq keeps every argument one word for the remote sh', () => {
    const args = ['plain', 'two words', "it's", '$HOME `id` $(id)', 'new\nline', '', '-e'];
    const line = args.map(shq).join(' ');
    const back = execFileSync('/bin/sh', ['-c', `for a in ${line}; do printf '[%s]' "$a"; done`], { encoding: 'utf8' });
    expect(back).toBe(args.map((a) => `[${a}]`).join(''));
  });

  it('goes through `onmemos tunnel --stdio`, with its own key, no prompts, and a shared connection when asked', () => {
    const o = sshOptions({ id: 'ws-a-b-1-c', user: 'user', key: '/k/id', env: {}, reuseSeconds: 60 });
    const opt = (k: string) => o[o.indexOf('-o') >= 0 ? o.findIndex((x) => x.startsWith(`${k}=`)) : -1];
    expect(o.slice(0, 2)).toEqual(['-i', '/k/id']);
    expect(opt('ProxyCommand')).toMatch(/ tunnel --stdio --port 22 ws-a-b-1-c$/);
    expect(opt('BatchMode')).toBe('BatchMode=yes');
    expect(opt('StrictHostKeyChecking')).toBe('StrictHostKeyChecking=no');
    expect(opt('ControlMaster')).toBe('ControlMaster=auto');
    expect(o.slice(-3)).toEqual(['-l', 'user', 'onmemos-ws-a-b-1-c']);
    const none = sshOptions({ id: 'ws-a-b-1-c', user: 'user', key: '/k/id', env: {}, reuseSeconds: 0 });
    expect(none).toContain('ControlPath=none');
  });
});
