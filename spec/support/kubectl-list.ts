/**
 * A cluster's Services and EndpointSlices as `kubectl get svc,endpointslices
 * -o yaml` prints them (managedFields, last-applied annotations, status): the
 * file-source benchmark and the file-source tests feed kup this shape.
 */
const managedFields = (manager: string): unknown[] => [
  {
    apiVersion: 'v1',
    fieldsType: 'FieldsV1',
    fieldsV1: {
      'f:metadata': {
        'f:annotations': { '.': {}, 'f:kubectl.kubernetes.io/last-applied-configuration': {} },
        'f:labels': { '.': {}, 'f:app': {} },
      },
      'f:spec': {
        'f:internalTrafficPolicy': {},
        'f:ports': {
          '.': {},
          'k:{"port":80,"protocol":"TCP"}': { '.': {}, 'f:name': {}, 'f:port': {}, 'f:protocol': {}, 'f:targetPort': {} },
        },
        'f:selector': {},
        'f:sessionAffinity': {},
        'f:type': {},
      },
    },
    manager,
    operation: 'Update',
    time: '2026-01-02T03:04:05Z',
  },
];

/** The objects of a cluster with `n` services, three endpoints each; `generation` changes one endpoint. */
export function clusterList(n: number, generation: number): unknown {
  const items: unknown[] = [];
  for (let i = 0; i < n; i++) {
    const name = `svc-${i}`;
    const spec = { ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 8080 }], selector: { app: name }, type: 'ClusterIP' };
    items.push({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: {
        annotations: {
          'kubectl.kubernetes.io/last-applied-configuration': `${JSON.stringify({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'bench' }, spec })}\n`,
        },
        creationTimestamp: '2026-01-02T03:04:05Z',
        labels: { app: name },
        managedFields: managedFields('kubectl-client-side-apply'),
        name,
        namespace: 'bench',
        resourceVersion: String(1000 + i),
        uid: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
      },
      spec: {
        ...spec,
        clusterIP: `10.${96 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`,
        clusterIPs: [`10.${96 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`],
        internalTrafficPolicy: 'Cluster',
        ipFamilies: ['IPv4'],
        ipFamilyPolicy: 'SingleStack',
        sessionAffinity: 'None',
      },
      status: { loadBalancer: {} },
    });
    const bump = i === 0 ? generation : 0;
    items.push({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      addressType: 'IPv4',
      endpoints: [0, 1, 2].map((e) => ({
        addresses: [`127.${1 + e}.${(i >> 8) & 255}.${(i + bump) & 255}`],
        conditions: { ready: true, serving: true, terminating: false },
        nodeName: `node-${e}`,
        targetRef: {
          kind: 'Pod',
          name: `${name}-7d9f8c6b5-${e}abcd`,
          namespace: 'bench',
          uid: `11111111-0000-4000-8000-${String(i * 3 + e).padStart(12, '0')}`,
        },
        zone: `zone-${e}`,
      })),
      metadata: {
        annotations: { 'endpoints.kubernetes.io/last-change-trigger-time': '2026-01-02T03:04:05Z' },
        creationTimestamp: '2026-01-02T03:04:05Z',
        generateName: `${name}-`,
        generation: 1,
        labels: { 'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io', 'kubernetes.io/service-name': name },
        managedFields: managedFields('kube-controller-manager'),
        name: `${name}-abcde`,
        namespace: 'bench',
        ownerReferences: [
          {
            apiVersion: 'v1',
            blockOwnerDeletion: true,
            controller: true,
            kind: 'Service',
            name,
            uid: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
          },
        ],
        resourceVersion: String(2000 + i),
        uid: `22222222-0000-4000-8000-${String(i).padStart(12, '0')}`,
      },
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    });
  }
  return { apiVersion: 'v1', kind: 'List', items, metadata: { resourceVersion: '' } };
}
