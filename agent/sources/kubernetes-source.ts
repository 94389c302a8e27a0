/*
 * The Kubernetes source: this node's pods (list/watch on pods with
 * spec.nodeName=<node>) as complete PodSpec snapshots, the trusted resolvers
 * (the kube-system/kube-dns Service's cluster IPs and its ready EndpointSlice
 * addresses), and Events posted on pods. Owns talking to the API server and
 * keeping the last known state while it is unreachable; knows nothing of the
 * datapath or of policy.
 *
 * Why not client-node's informer (ListWatch): in 1.4.0 it never asks for
 * bookmarks or a server-side timeout, stops for good on any error other than
 * 410 (start() must be called again), resolves start() even when the list
 * failed, and can leave a watch open when stop() races a reconnect. The small
 * reflector below uses the same client (typed list calls, k8s.Watch for the
 * stream) and adds: allowWatchBookmarks, timeoutSeconds, relist on 410 Gone
 * (as an ERROR event or as an HTTP status), reconnect with capped exponential
 * backoff and jitter, and a watchdog for silent (half-open) connections.
 */
import { isIP } from 'node:net';
import * as k8s from '@kubernetes/client-node';
import { podKey, type PodSpec } from './pod.js';

/** What the source logs through (pino's Logger fits). */
export interface SourceLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}

export type PodEventReason = 'InvalidAnnotation' | 'EnforcementStarted' | 'TcxHeadContested' | 'TlsCheckUnavailable' | 'DnsQueryFilterUnavailable';

export interface KubernetesSourceOptions {
  kubeConfig: k8s.KubeConfig;
  nodeName: string;
  /** a complete snapshot of this node's enforceable pods, after each change */
  onPods(pods: PodSpec[]): void;
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
export const DNS_SERVICE = 'kube-dns';
const EVENT_COMPONENT = 'fqdn-egress-agent';
/** the same Event (pod uid, reason, type, message) is not posted again within this time */
const EVENT_DEDUP_MS = 10 * 60_000;
const MAX_EVENT_MESSAGE = 1024;

/** Capped exponential backoff with jitter: each delay is in [d/2, d), d = min(max, initial·2^n). */
export class Backoff {
  private attempt = 0;
  constructor(
    private readonly initialMs = 500,
    private readonly maxMs = 30_000,
    private readonly random: () => number = Math.random,
  ) {}

  next(): number {
    const d = Math.min(this.maxMs, this.initialMs * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    return Math.round(d / 2 + (this.random() * d) / 2);
  }

  reset(): void {
    this.attempt = 0;
  }
}

type KubeObject = { metadata?: k8s.V1ObjectMeta };
interface ObjectList<T> {
  metadata?: k8s.V1ListMeta;
  items: T[];
}

interface ReflectorOptions<T> {
  /** for messages: "pods on node n1" */
  what: string;
  watchPath: string;
  fieldSelector?: string;
  labelSelector?: string;
  /** resourceVersion "0" (any, cheap: the watch cache) or undefined (consistent, after a 410) */
  list(resourceVersion: string | undefined): Promise<ObjectList<T>>;
  watch: k8s.Watch;
  backoff: Backoff;
  watchTimeoutSeconds: number;
  listTimeoutMs: number;
  onChange(): void;
  onSynced(): void;
  onError(err: Error): void;
  log: SourceLog;
}

function objectKey(o: KubeObject): string {
  return `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;
}

/** A short description of what client-node threw (ApiException's message carries all headers). */
function describe(err: unknown): string {
  const e = err as { code?: unknown; statusCode?: unknown; body?: unknown; message?: string };
  const code = typeof e.statusCode === 'number' ? e.statusCode : typeof e.code === 'number' ? e.code : undefined;
  if (code !== undefined) {
    let detail = '';
    if (typeof e.body === 'string') {
      try {
        detail = (JSON.parse(e.body) as { message?: string }).message ?? e.body;
      } catch {
        detail = e.body;
      }
    } else if (e.body && typeof e.body === 'object') {
      detail = (e.body as { message?: string }).message ?? '';
    } else if (e.message && !e.message.startsWith('HTTP-Code')) {
      detail = e.message;
    }
    return `HTTP ${code}${detail ? `: ${detail.slice(0, 300)}` : ''}`;
  }
  // node-fetch's FetchError repeats the whole URL: keep the reason
  const m = /^request to \S+ failed, reason: (.*)$/s.exec(e.message ?? '');
  return m ? m[1]! : (e.message ?? String(err));
}

function isGone(err: unknown): boolean {
  const e = err as { code?: unknown; statusCode?: unknown } | null;
  return e?.statusCode === 410 || e?.code === 410;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Keeps `store` equal to what the API server holds for one list/watch:
 * list, then watch from the list's resourceVersion; resume from the last seen
 * resourceVersion (bookmarks included) after a disconnect; relist on 410.
 * The store is never cleared on errors: the last state stands.
 */
class Reflector<T extends KubeObject> {
  readonly store = new Map<string, T>();
  resourceVersion = '';
  synced = false;
  /** bumped on every transition; callbacks of an older attempt are ignored */
  private attempt = 0;
  private stopped = false;
  /** after a 410 the next list must be consistent (not from a possibly stale cache) */
  private consistentList = false;
  private eventsSinceList = 0;
  private controller: AbortController | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private watchdog: NodeJS.Timeout | undefined;

  constructor(private readonly o: ReflectorOptions<T>) {}

  start(): void {
    this.stopped = false;
    this.run();
  }

  stop(): void {
    this.stopped = true;
    this.invalidate();
  }

  private run(): void {
    if (this.stopped) return;
    const attempt = ++this.attempt;
    if (this.resourceVersion) this.watch(attempt);
    else void this.relist(attempt);
  }

  /** Forget the current attempt: abort its stream, stop its timers. */
  private invalidate(): void {
    this.attempt++;
    this.controller?.abort();
    this.controller = undefined;
    clearTimeout(this.retryTimer);
    clearTimeout(this.watchdog);
  }

  private later(delayMs: number): void {
    this.invalidate();
    if (this.stopped) return;
    this.retryTimer = setTimeout(() => this.run(), delayMs);
  }

  private fail(phase: string, err: unknown): void {
    const delay = this.o.backoff.next();
    this.later(delay);
    if (!this.stopped) {
      this.o.onError(new Error(`kubernetes ${this.o.what}: ${phase} failed: ${describe(err)} (keeping the last state; retrying in ${delay} ms)`));
    }
  }

  private async relist(attempt: number): Promise<void> {
    let list: ObjectList<T>;
    try {
      list = await withTimeout(this.o.list(this.consistentList ? undefined : '0'), this.o.listTimeoutMs, 'list');
    } catch (err) {
      if (attempt === this.attempt) this.fail('list', err);
      return;
    }
    if (attempt !== this.attempt || this.stopped) return;
    const rv = list.metadata?.resourceVersion;
    if (!rv) {
      this.fail('list', new Error('the list carried no resourceVersion'));
      return;
    }
    this.store.clear();
    for (const item of list.items ?? []) this.store.set(objectKey(item), item);
    this.resourceVersion = rv;
    this.consistentList = false;
    this.eventsSinceList = 0;
    this.o.backoff.reset();
    this.o.log.debug({ what: this.o.what, resourceVersion: rv, items: this.store.size }, 'kubernetes: listed');
    if (!this.synced) {
      this.synced = true;
      this.o.onSynced();
    } else {
      this.o.onChange();
    }
    this.watch(attempt);
  }

  private watch(attempt: number): void {
    const startedAt = Date.now();
    let events = 0;
    const timeoutSeconds = Math.round(this.o.watchTimeoutSeconds * (1 + Math.random()));
    const params: Record<string, string | number | boolean> = {
      resourceVersion: this.resourceVersion,
      allowWatchBookmarks: true,
      timeoutSeconds,
    };
    if (this.o.fieldSelector) params.fieldSelector = this.o.fieldSelector;
    if (this.o.labelSelector) params.labelSelector = this.o.labelSelector;
    this.armWatchdog(attempt, timeoutSeconds);
    this.o.watch
      .watch(
        this.o.watchPath,
        params,
        (type: string, obj: unknown) => {
          if (attempt !== this.attempt) return;
          events++;
          this.handleEvent(attempt, type, obj, timeoutSeconds);
        },
        (err: unknown) => {
          if (attempt !== this.attempt) return;
          this.watchEnded(err, Date.now() - startedAt, events);
        },
      )
      .then(
        (controller) => {
          if (attempt === this.attempt) this.controller = controller;
          else controller.abort();
        },
        (err: unknown) => {
          if (attempt === this.attempt) this.fail('watch', err);
        },
      );
  }

  /** No event, not even a bookmark, and the server did not end the watch in time: the connection is dead. */
  private armWatchdog(attempt: number, timeoutSeconds: number): void {
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(() => {
      if (attempt !== this.attempt) return;
      this.o.log.warn({ what: this.o.what }, 'kubernetes: watch silent past its timeout; reconnecting');
      this.invalidate();
      this.run();
    }, (timeoutSeconds + 30) * 1000);
  }

  private handleEvent(attempt: number, type: string, obj: unknown, timeoutSeconds: number): void {
    const o = obj as T;
    switch (type) {
      case 'ADDED':
      case 'MODIFIED':
        this.store.set(objectKey(o), o);
        break;
      case 'DELETED':
        this.store.delete(objectKey(o));
        break;
      case 'BOOKMARK':
        break;
      case 'ERROR': {
        const status = obj as k8s.V1Status;
        if (status?.code === 410) this.gone(status.message ?? 'Gone');
        else this.fail('watch', new Error(`ERROR event ${status?.code ?? '?'} ${status?.reason ?? ''}: ${status?.message ?? ''}`));
        return;
      }
      default:
        this.o.log.debug({ what: this.o.what, type }, 'kubernetes: unknown watch event type ignored');
        return;
    }
    const rv = o?.metadata?.resourceVersion;
    if (rv) this.resourceVersion = rv;
    this.eventsSinceList++;
    this.o.backoff.reset();
    this.armWatchdog(attempt, timeoutSeconds);
    if (type !== 'BOOKMARK') this.o.onChange();
  }

  /** 410 Gone: our resourceVersion is older than the server's history; list afresh. */
  private gone(message: string): void {
    this.o.log.info({ what: this.o.what, resourceVersion: this.resourceVersion, message }, 'kubernetes: watch expired (410 Gone); relisting');
    this.resourceVersion = '';
    this.consistentList = true;
    // a 410 right after a list (nothing seen since) means the server keeps saying so: back off
    if (this.eventsSinceList === 0) this.later(this.o.backoff.next());
    else {
      this.invalidate();
      this.run();
    }
  }

  private watchEnded(err: unknown, durationMs: number, events: number): void {
    if (err && isGone(err)) return this.gone(describe(err));
    if (err) return this.fail('watch', err);
    // a clean end: the server's timeout, or it went away politely; resume from resourceVersion
    if (events === 0 && durationMs < 1000) {
      this.o.log.debug({ what: this.o.what }, 'kubernetes: watch ended at once; backing off');
      this.later(this.o.backoff.next());
      return;
    }
    this.invalidate();
    this.run();
  }
}

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
  return { namespace: meta.namespace, name: meta.name, ips, annotations: { ...(meta.annotations ?? {}) } };
}

/** The resolver addresses: the Service's cluster IPs and its slices' ready endpoints. */
export function resolverIps(services: Iterable<k8s.V1Service>, slices: Iterable<k8s.V1EndpointSlice>): string[] {
  const ips = new Set<string>();
  for (const svc of services) {
    if (svc.metadata?.name !== DNS_SERVICE) continue;
    const cluster = svc.spec?.clusterIPs?.length ? svc.spec.clusterIPs : svc.spec?.clusterIP ? [svc.spec.clusterIP] : [];
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

const noLog: SourceLog = { info() {}, warn() {}, error() {}, debug() {} };

export class KubernetesSource {
  private readonly log: SourceLog;
  private readonly core: k8s.CoreV1Api;
  private readonly pods: Reflector<k8s.V1Pod>;
  private readonly services: Reflector<k8s.V1Service>;
  private readonly slices: Reflector<k8s.V1EndpointSlice>;
  private last: PodSpec[] | undefined;
  private lastPodsText = '';
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
      list: (resourceVersion) => this.core.listNamespacedService({ namespace: DNS_NAMESPACE, fieldSelector: dnsSelector, resourceVersion }),
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
        discovery.listNamespacedEndpointSlice({ namespace: DNS_NAMESPACE, labelSelector: sliceSelector, resourceVersion }),
      backoff: backoff(),
      onChange: () => this.scheduleEmit(),
    });
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
    return ready;
  }

  stop(): void {
    this.stopped = true;
    this.pods.stop();
    this.services.stop();
    this.slices.stop();
    clearTimeout(this.debounce);
    this.startWaiter?.reject(new Error('kubernetes source stopped before the first list'));
    this.startWaiter = undefined;
  }

  /** The last snapshot emitted; undefined until the first list. */
  get snapshot(): PodSpec[] | undefined {
    return this.last;
  }

  /** Post a core/v1 Event on a pod. Failures are logged, never thrown. */
  async podEvent(pod: { namespace: string; name: string }, reason: PodEventReason, message: string, type: 'Warning' | 'Normal'): Promise<void> {
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
      involvedObject: { apiVersion: 'v1', kind: 'Pod', namespace: pod.namespace, name: pod.name, ...(uid ? { uid } : {}) },
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
      if (resolvers.length === 0) this.log.warn({ service: `${DNS_NAMESPACE}/${DNS_SERVICE}` }, 'kubernetes: no resolver address found');
      this.lastResolvers = resolversText;
      this.opts.onResolvers(resolvers);
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
