/*
 * The Kubernetes source: this node's pods (list/watch on pods with
 * spec.nodeName=<node>) as complete PodSpec snapshots, the policy resources
 * (FQDNEgressPolicy, ClusterFQDNEgressPolicy: every agent watches every
 * policy) with the namespaces' labels, the trusted resolvers
 * (the kube-system/kube-dns Service's cluster IPs and its ready EndpointSlice
 * addresses), and Events posted on pods. Owns talking to the API server and
 * keeping the last known state while it is unreachable (through the
 * reflector, reflector.ts); knows nothing of the datapath or of policy.
 */
import { isIP } from 'node:net';
import * as k8s from '@kubernetes/client-node';
import { podKey, type PodSpec, type PolicyObjects } from './pod.js';
import { Backoff, Reflector, describe, type KubeObject, type ObjectList, type SourceLog } from './reflector.js';

export { Backoff, type SourceLog };

export type PodEventReason =
  | 'InvalidAnnotation'
  | 'AnnotationIgnored'
  | 'EnforcementStarted'
  | 'TcxHeadContested'
  | 'TlsCheckUnavailable'
  | 'DnsQueryFilterUnavailable';

export interface KubernetesSourceOptions {
  kubeConfig: k8s.KubeConfig;
  nodeName: string;
  /** a complete snapshot of this node's enforceable pods, after each change */
  onPods(pods: PodSpec[]): void;
  /** every pod scheduled to this node, IP or not yet (the CNI plugin's decisions), before onPods, after each change */
  onScheduled?(pods: ScheduledPodSpec[]): void;
  /** follow the policy resources and namespace labels (default false: onPolicies is never called) */
  policies?: boolean;
  /** the policy resources and namespace labels, after each change (before onPods when both changed) */
  onPolicies?(objects: PolicyObjects): void;
  /** while the policy CRDs are not installed, look again this often (default 30 s) */
  policyRecheckMs?: number;
  /** the trusted resolvers discovered from kube-dns, sorted, after each change */
  onResolvers(ips: string[]): void;
  /** the API server failed us; the last snapshot still stands */
  onError(err: Error): void;
  log?: SourceLog;
  /** reconnect backoff (default 500 ms doubling up to 30 s, with jitter) */
  backoff?: { initialMs?: number; maxMs?: number };
  /** server-side watch timeout; each watch takes a random value in [this, 2×this) (default 300) */
  watchTimeoutSeconds?: number;
  /** give up on a list that has not answered after this long (default 60 s) */
  listTimeoutMs?: number;
  /** coalesce changes for this long before emitting a snapshot (default 20) */
  debounceMs?: number;
}

export const DNS_NAMESPACE = 'kube-system';
export const POLICY_GROUP = 'fqdn-egress.io';
export const POLICY_VERSION = 'v1alpha1';
export const NAMESPACED_POLICIES = 'fqdnegresspolicies';
export const CLUSTER_POLICIES = 'clusterfqdnegresspolicies';
export const DNS_SERVICE = 'kube-dns';
const EVENT_COMPONENT = 'fqdn-egress-agent';
/** the same Event (pod uid, reason, type, message) is not posted again within this time */
const EVENT_DEDUP_MS = 10 * 60_000;
const MAX_EVENT_MESSAGE = 1024;

/** The pod's addresses, if it is one we can enforce: not host-network, not finished, with IPs. */
export function podSpecOf(pod: k8s.V1Pod, nodeName: string): PodSpec | undefined {
  const meta = pod.metadata;
  if (!meta?.name || !meta.namespace) return undefined;
  if (pod.spec?.hostNetwork) return undefined;
  if (pod.spec?.nodeName !== nodeName) return undefined;
  const phase = pod.status?.phase;
  if (phase === 'Succeeded' || phase === 'Failed') return undefined;
  const listed = pod.status?.podIPs?.map((p) => p.ip) ?? [];
  const raw = listed.length > 0 ? listed : pod.status?.podIP ? [pod.status.podIP] : [];
  const ips = [...new Set(raw.filter((ip): ip is string => typeof ip === 'string' && isIP(ip) !== 0))];
  if (ips.length === 0) return undefined;
  return {
    namespace: meta.namespace,
    name: meta.name,
    ips,
    annotations: { ...(meta.annotations ?? {}) },
    labels: { ...(meta.labels ?? {}) },
  };
}

/** What the agent decides a new pod's start from: a pod scheduled here, before kubelet reports its IP. */
export type ScheduledPodSpec = Pick<PodSpec, 'namespace' | 'name' | 'annotations' | 'labels'>;

/** A pod scheduled to this node that may need a decision: not host-network, not finished; IP or not. */
export function scheduledPodOf(pod: k8s.V1Pod, nodeName: string): ScheduledPodSpec | undefined {
  const meta = pod.metadata;
  if (!meta?.name || !meta.namespace || pod.spec?.hostNetwork || pod.spec?.nodeName !== nodeName) return undefined;
  const phase = pod.status?.phase;
  if (phase === 'Succeeded' || phase === 'Failed') return undefined;
  return {
    namespace: meta.namespace,
    name: meta.name,
    annotations: { ...(meta.annotations ?? {}) },
    labels: { ...(meta.labels ?? {}) },
  };
}

/** The resolver addresses: the Service's cluster IPs and its slices' ready endpoints. */
export function resolverIps(services: Iterable<k8s.V1Service>, slices: Iterable<k8s.V1EndpointSlice>): string[] {
  const ips = new Set<string>();
  for (const svc of services) {
    if (svc.metadata?.name !== DNS_SERVICE) continue;
    const cluster = svc.spec?.clusterIPs?.length
      ? svc.spec.clusterIPs
      : svc.spec?.clusterIP
        ? [svc.spec.clusterIP]
        : [];
    for (const ip of cluster) if (isIP(ip) !== 0) ips.add(ip);
  }
  for (const slice of slices) {
    for (const ep of slice.endpoints ?? []) {
      // an unknown readiness counts as ready (the EndpointConditions contract)
      if (ep.conditions?.ready === false) continue;
      for (const ip of ep.addresses ?? []) if (isIP(ip) !== 0) ips.add(ip);
    }
  }
  return [...ips].sort();
}

/** What of a policy object can change a decision. */
function policyEssence(o: unknown): unknown {
  const { metadata, spec } = o as KubeObject & { spec?: unknown };
  return [metadata?.namespace, metadata?.name, spec];
}

const noLog: SourceLog = { info() {}, warn() {}, error() {}, debug() {} };

export class KubernetesSource {
  private readonly log: SourceLog;
  private readonly core: k8s.CoreV1Api;
  private readonly pods: Reflector<k8s.V1Pod>;
  private readonly services: Reflector<k8s.V1Service>;
  private readonly slices: Reflector<k8s.V1EndpointSlice>;
  /** namespaces, FQDNEgressPolicies, ClusterFQDNEgressPolicies (when opts.policies) */
  private readonly policySources: Array<Reflector<KubeObject>> = [];
  private readonly namespaces: Reflector<KubeObject> | undefined;
  private readonly namespacedPolicies: Reflector<KubeObject> | undefined;
  private readonly clusterPolicies: Reflector<KubeObject> | undefined;
  private lastPoliciesText: string | undefined;
  private last: PodSpec[] | undefined;
  private lastPodsText = '';
  private lastScheduledText = '';
  private lastResolvers: string | undefined;
  private synced = false;
  private stopped = false;
  private debounce: NodeJS.Timeout | undefined;
  private startWaiter: { resolve(): void; reject(err: Error): void } | undefined;
  /** Events posted lately (uid/name, reason, type, message) → when */
  private readonly posted = new Map<string, number>();
  private eventSeq = 0;

  constructor(private readonly opts: KubernetesSourceOptions) {
    this.log = opts.log ?? noLog;
    const kc = opts.kubeConfig;
    this.core = kc.makeApiClient(k8s.CoreV1Api);
    const discovery = kc.makeApiClient(k8s.DiscoveryV1Api);
    const watch = new k8s.Watch(kc);
    const common = {
      watch,
      watchTimeoutSeconds: opts.watchTimeoutSeconds ?? 300,
      listTimeoutMs: opts.listTimeoutMs ?? 60_000,
      onSynced: () => this.maybeSynced(),
      onError: (err: Error) => {
        if (!this.stopped) this.opts.onError(err);
      },
      log: this.log,
    };
    const backoff = () => new Backoff(opts.backoff?.initialMs ?? 500, opts.backoff?.maxMs ?? 30_000);
    const nodeSelector = `spec.nodeName=${opts.nodeName}`;
    this.pods = new Reflector<k8s.V1Pod>({
      ...common,
      what: `pods on node ${opts.nodeName}`,
      watchPath: '/api/v1/pods',
      fieldSelector: nodeSelector,
      list: (resourceVersion) => this.core.listPodForAllNamespaces({ fieldSelector: nodeSelector, resourceVersion }),
      backoff: backoff(),
      onChange: () => this.scheduleEmit(),
    });
    const dnsSelector = `metadata.name=${DNS_SERVICE}`;
    this.services = new Reflector<k8s.V1Service>({
      ...common,
      what: `service ${DNS_NAMESPACE}/${DNS_SERVICE}`,
      watchPath: `/api/v1/namespaces/${DNS_NAMESPACE}/services`,
      fieldSelector: dnsSelector,
      list: (resourceVersion) =>
        this.core.listNamespacedService({ namespace: DNS_NAMESPACE, fieldSelector: dnsSelector, resourceVersion }),
      backoff: backoff(),
      onChange: () => this.scheduleEmit(),
    });
    const sliceSelector = `kubernetes.io/service-name=${DNS_SERVICE}`;
    this.slices = new Reflector<k8s.V1EndpointSlice>({
      ...common,
      what: `endpointslices of ${DNS_NAMESPACE}/${DNS_SERVICE}`,
      watchPath: `/apis/discovery.k8s.io/v1/namespaces/${DNS_NAMESPACE}/endpointslices`,
      labelSelector: sliceSelector,
      list: (resourceVersion) =>
        discovery.listNamespacedEndpointSlice({
          namespace: DNS_NAMESPACE,
          labelSelector: sliceSelector,
          resourceVersion,
        }),
      backoff: backoff(),
      onChange: () => this.scheduleEmit(),
    });
    if (opts.policies) {
      const custom = kc.makeApiClient(k8s.CustomObjectsApi);
      const base = `/apis/${POLICY_GROUP}/${POLICY_VERSION}`;
      this.namespaces = new Reflector<KubeObject>({
        ...common,
        what: 'namespaces',
        watchPath: '/api/v1/namespaces',
        list: (resourceVersion) => this.core.listNamespace({ resourceVersion }),
        backoff: backoff(),
        onChange: () => this.scheduleEmit(),
      });
      /** One policy resource: absent (its CRD not installed) counts as none, looked for again. */
      const policies = (
        plural: string,
        list: (q: { group: string; version: string; plural: string; resourceVersion?: string }) => Promise<unknown>,
      ) =>
        new Reflector<KubeObject>({
          ...common,
          what: plural,
          watchPath: `${base}/${plural}`,
          list: (resourceVersion) =>
            list({ group: POLICY_GROUP, version: POLICY_VERSION, plural, resourceVersion }) as Promise<
              ObjectList<KubeObject>
            >,
          mayBeAbsent: true,
          absentRecheckMs: opts.policyRecheckMs,
          backoff: backoff(),
          onChange: () => this.scheduleEmit(),
        });
      this.namespacedPolicies = policies(NAMESPACED_POLICIES, (q) => custom.listCustomObjectForAllNamespaces(q));
      this.clusterPolicies = policies(CLUSTER_POLICIES, (q) => custom.listClusterCustomObject(q));
      this.policySources.push(this.namespaces, this.namespacedPolicies, this.clusterPolicies);
    }
  }

  /**
   * Start listing and watching. Resolves once pods, the DNS Service and its
   * slices were listed, after onResolvers and onPods were called with the first
   * state (so the caller needs no separate read of `snapshot`). While the API
   * server cannot be reached it keeps retrying (onError each time); rejects only
   * if stop() comes first.
   */
  start(): Promise<void> {
    if (this.synced) return Promise.resolve();
    this.stopped = false;
    const ready = new Promise<void>((resolve, reject) => {
      this.startWaiter = { resolve, reject };
    });
    this.pods.start();
    this.services.start();
    this.slices.start();
    for (const r of this.policySources) r.start();
    return ready;
  }

  stop(): void {
    this.stopped = true;
    this.pods.stop();
    this.services.stop();
    this.slices.stop();
    for (const r of this.policySources) r.stop();
    clearTimeout(this.debounce);
    this.startWaiter?.reject(new Error('kubernetes source stopped before the first list'));
    this.startWaiter = undefined;
  }

  /** The last snapshot emitted; undefined until the first list. */
  get snapshot(): PodSpec[] | undefined {
    return this.last;
  }

  /** Post a core/v1 Event on a pod. Failures are logged, never thrown. */
  async podEvent(
    pod: { namespace: string; name: string },
    reason: PodEventReason,
    message: string,
    type: 'Warning' | 'Normal',
  ): Promise<void> {
    const uid = this.pods.store.get(podKey(pod))?.metadata?.uid;
    const text = message.length > MAX_EVENT_MESSAGE ? `${message.slice(0, MAX_EVENT_MESSAGE - 3)}...` : message;
    const now = Date.now();
    const dedupKey = `${uid ?? podKey(pod)}\0${reason}\0${type}\0${text}`;
    const before = this.posted.get(dedupKey);
    if (before !== undefined && now - before < EVENT_DEDUP_MS) {
      this.log.debug({ pod: podKey(pod), reason }, 'kubernetes: same event posted lately; not posting again');
      return;
    }
    for (const [k, at] of this.posted) if (now - at >= EVENT_DEDUP_MS) this.posted.delete(k);
    const at = new Date(now);
    // named like client-go's recorder: <object>.<unique hex>
    const suffix = (BigInt(now) * 1_000_000n + BigInt(this.eventSeq++ % 1_000_000)).toString(16);
    const body: k8s.CoreV1Event = {
      metadata: { name: `${pod.name.slice(0, 253 - suffix.length - 1)}.${suffix}`, namespace: pod.namespace },
      involvedObject: {
        apiVersion: 'v1',
        kind: 'Pod',
        namespace: pod.namespace,
        name: pod.name,
        ...(uid ? { uid } : {}),
      },
      reason,
      message: text,
      type,
      source: { component: EVENT_COMPONENT, host: this.opts.nodeName },
      reportingComponent: EVENT_COMPONENT,
      reportingInstance: this.opts.nodeName,
      firstTimestamp: at,
      lastTimestamp: at,
      count: 1,
    };
    try {
      await this.core.createNamespacedEvent({ namespace: pod.namespace, body });
      this.posted.set(dedupKey, now);
    } catch (err) {
      this.log.warn({ pod: podKey(pod), reason, err: describe(err) }, 'kubernetes: could not post an event on the pod');
    }
  }

  private maybeSynced(): void {
    if (this.synced || !this.pods.synced || !this.services.synced || !this.slices.synced) return;
    // a pod must meet the policies that select it from the first snapshot on
    if (this.policySources.some((r) => !r.synced)) return;
    this.synced = true;
    this.log.info(
      { node: this.opts.nodeName, pods: this.pods.store.size, resourceVersion: this.pods.resourceVersion },
      'kubernetes: first list complete',
    );
    this.emit();
    this.startWaiter?.resolve();
    this.startWaiter = undefined;
  }

  private scheduleEmit(): void {
    if (!this.synced || this.debounce) return;
    this.debounce = setTimeout(() => {
      this.debounce = undefined;
      if (!this.stopped) this.emit();
    }, this.opts.debounceMs ?? 20);
  }

  /** Call onResolvers and onPods for what changed (resolvers first: pods need them). */
  private emit(): void {
    const resolvers = resolverIps(this.services.store.values(), this.slices.store.values());
    const resolversText = resolvers.join(',');
    if (resolversText !== this.lastResolvers) {
      if (resolvers.length === 0)
        this.log.warn({ service: `${DNS_NAMESPACE}/${DNS_SERVICE}` }, 'kubernetes: no resolver address found');
      this.lastResolvers = resolversText;
      this.opts.onResolvers(resolvers);
    }
    if (this.opts.onScheduled) {
      const scheduled: ScheduledPodSpec[] = [];
      for (const pod of this.pods.store.values()) {
        const spec = scheduledPodOf(pod, this.opts.nodeName);
        if (spec) scheduled.push(spec);
      }
      scheduled.sort((a, b) => (podKey(a) < podKey(b) ? -1 : podKey(a) > podKey(b) ? 1 : 0));
      const text = JSON.stringify(scheduled);
      if (text !== this.lastScheduledText) {
        this.lastScheduledText = text;
        this.opts.onScheduled(scheduled);
      }
    }
    if (this.opts.onPolicies && this.namespaces && this.namespacedPolicies && this.clusterPolicies) {
      const namespaces: Record<string, Record<string, string>> = {};
      for (const ns of this.namespaces.store.values())
        if (ns.metadata?.name) namespaces[ns.metadata.name] = { ...(ns.metadata.labels ?? {}) };
      const objects: PolicyObjects = {
        namespaced: [...this.namespacedPolicies.store.values()],
        cluster: [...this.clusterPolicies.store.values()],
        namespaces,
      };
      // what decides: names, selectors, specs (not resourceVersions or managedFields)
      const text = JSON.stringify([
        objects.namespaced.map(policyEssence),
        objects.cluster.map(policyEssence),
        namespaces,
      ]);
      if (text !== this.lastPoliciesText) {
        this.lastPoliciesText = text;
        this.opts.onPolicies(objects);
      }
    }
    const pods: PodSpec[] = [];
    for (const pod of this.pods.store.values()) {
      const spec = podSpecOf(pod, this.opts.nodeName);
      if (spec) pods.push(spec);
    }
    pods.sort((a, b) => (podKey(a) < podKey(b) ? -1 : podKey(a) > podKey(b) ? 1 : 0));
    const podsText = JSON.stringify(pods);
    if (this.last !== undefined && podsText === this.lastPodsText) return;
    this.last = pods;
    this.lastPodsText = podsText;
    this.opts.onPods(pods);
  }
}
