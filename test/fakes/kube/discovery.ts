/**
 * Discovery: what kubectl and client libraries ask before anything else. `/version` matters more than it seems:
 * the Google Cloud SDK's kubectl is a dispatcher that picks the kubectl release matching the server's version
 * from it. Only the legacy (unaggregated) documents are served: kubectl asks for the aggregated
 * `apidiscovery.k8s.io/v2` form first, sees `application/json` come back, and reads them as the legacy kind.
 */

export const SERVER_VERSION = {
  major: '1',
  minor: '32',
  gitVersion: 'v1.32.4',
  gitCommit: '0000000000000000000000000000000000000000',
  gitTreeState: 'clean',
  buildDate: '2025-04-22T00:00:00Z',
  goVersion: 'go1.23.8',
  compiler: 'gc',
  platform: 'linux/amd64',
};

export const apiVersions = (serverAddress: string) => ({
  kind: 'APIVersions',
  versions: ['v1'],
  serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress }],
});

/** No API groups: everything the fake serves is in the core group (/api/v1). */
export const apiGroupList = () => ({ kind: 'APIGroupList', apiVersion: 'v1', groups: [] });

const RW = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'];

export const coreV1Resources = () => ({
  kind: 'APIResourceList',
  groupVersion: 'v1',
  resources: [
    {
      name: 'namespaces',
      singularName: 'namespace',
      namespaced: false,
      kind: 'Namespace',
      verbs: ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'],
      shortNames: ['ns'],
    },
    { name: 'namespaces/status', singularName: '', namespaced: false, kind: 'Namespace', verbs: ['get'] },
    {
      name: 'persistentvolumeclaims',
      singularName: 'persistentvolumeclaim',
      namespaced: true,
      kind: 'PersistentVolumeClaim',
      verbs: RW,
      shortNames: ['pvc'],
    },
    {
      name: 'persistentvolumeclaims/status',
      singularName: '',
      namespaced: true,
      kind: 'PersistentVolumeClaim',
      verbs: ['get'],
    },
    {
      name: 'pods',
      singularName: 'pod',
      namespaced: true,
      kind: 'Pod',
      verbs: RW,
      shortNames: ['po'],
      categories: ['all'],
    },
    { name: 'pods/exec', singularName: '', namespaced: true, kind: 'PodExecOptions', verbs: ['create', 'get'] },
    { name: 'pods/log', singularName: '', namespaced: true, kind: 'Pod', verbs: ['get'] },
    { name: 'pods/status', singularName: '', namespaced: true, kind: 'Pod', verbs: ['get'] },
  ],
});

/**
 * OpenAPI v3, only as far as kubectl reads it before `create -f` / `apply -f`: whether the PATCH of each kind takes
 * `fieldValidation`, which lets it leave validation to the server (with no document at all, kubectl refuses to
 * create from a file: "failed to download openapi"). Schemas are not served (`kubectl explain` has nothing).
 */
export const openapiV3Root = () => ({
  paths: { 'api/v1': { serverRelativeURL: `/openapi/v3/api/v1?hash=${OPENAPI_HASH}` } },
});
const OPENAPI_HASH = 'onmemos-fake-1';

export function openapiV3CoreV1() {
  const patch = (kind: string, plural: string, namespaced: boolean) => ({
    [`/api/v1/${namespaced ? 'namespaces/{namespace}/' : ''}${plural}/{name}`]: {
      patch: {
        operationId: `patchCoreV1${namespaced ? 'Namespaced' : ''}${kind}`,
        parameters: ['dryRun', 'fieldManager', 'fieldValidation', 'force'].map((name) => ({
          name,
          in: 'query',
          schema: { type: name === 'force' ? 'boolean' : 'string', uniqueItems: true },
        })),
        responses: { '200': { description: 'OK' } },
        'x-kubernetes-action': 'patch',
        'x-kubernetes-group-version-kind': { group: '', version: 'v1', kind },
      },
    },
  });
  return {
    openapi: '3.0.0',
    info: { title: 'Kubernetes', version: SERVER_VERSION.gitVersion },
    paths: {
      ...patch('Namespace', 'namespaces', false),
      ...patch('Pod', 'pods', true),
      ...patch('PersistentVolumeClaim', 'persistentvolumeclaims', true),
    },
  };
}
