/*
 * An in-process Kubernetes API server for tests: node:http on 127.0.0.1 with a
 * random port, speaking the real list/watch protocol for pods, services,
 * namespaces, discovery.k8s.io/v1 EndpointSlices and the fqdn-egress.io/v1alpha1
 * policy resources (404 while their CRDs are "not installed"), and
 * accepting Events. One monotonically
 * increasing resourceVersion for everything (as etcd), a bounded history so a
 * watch from a too-old resourceVersion gets 410 Gone (an ERROR event carrying a
 * Status, as the real server sends it), bookmarks for watches that ask for
 * them, field/label selectors with ADDED/DELETED when an object starts or stops
 * matching. Owns nothing outside the test; no mocking of the client.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { randomUUID } from 'node:crypto';
import * as k8s from '@kubernetes/client-node';

type Obj = {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    resourceVersion?: string;
    uid?: string;
    labels?: Record<string, string>;
    [k: string]: unknown;
  };
  [k: string]: unknown;
};
type Resource =
  'pods' | 'services' | 'endpointslices' | 'namespaces' | 'fqdnegresspolicies' | 'clusterfqdnegresspolicies';
type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

const KINDS: Record<Resource, { kind: string; apiVersion: string }> = {
  pods: { kind: 'Pod', apiVersion: 'v1' },
  services: { kind: 'Service', apiVersion: 'v1' },
  endpointslices: { kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1' },
  namespaces: { kind: 'Namespace', apiVersion: 'v1' },
  fqdnegresspolicies: { kind: 'FQDNEgressPolicy', apiVersion: 'fqdn-egress.io/v1alpha1' },
  clusterfqdnegresspolicies: { kind: 'ClusterFQDNEgressPolicy', apiVersion: 'fqdn-egress.io/v1alpha1' },
};

/** A policy resource as a test writes it: kind, metadata (name, namespace) and spec. */
export interface FakePolicy {
  kind: 'FQDNEgressPolicy' | 'ClusterFQDNEgressPolicy';
  metadata: { name: string; namespace?: string };
  spec: Record<string, unknown>;
}

interface Change {
  rv: number;
  resource: Resource;
  type: EventType;
  /** the object before the change (undefined for ADDED) and after it (the last state for DELETED) */
  before: Obj | undefined;
  after: Obj;
}

interface Filter {
  resource: Resource;
  namespace: string | undefined;
  fields: [string, string][];
  labels: [string, string][];
}

interface Watcher {
  filter: Filter;
  res: ServerResponse;
  bookmarks: boolean;
  timer: NodeJS.Timeout | undefined;
}

export interface RequestRecord {
  method: string;
  path: string;
  query: Record<string, string>;
  watch: boolean;
}

export interface FakePodInit {
  namespace?: string;
  name: string;
  labels?: Record<string, string>;
  nodeName?: string;
  ips?: string[];
  annotations?: Record<string, string>;
  hostNetwork?: boolean;
  phase?: string;
}

/** A pod as the API server would hold it. */
export function fakePod(p: FakePodInit): Obj {
  const ips = p.ips ?? [];
  return {
    metadata: {
      namespace: p.namespace ?? 'default',
      name: p.name,
      annotations: { ...(p.annotations ?? {}) },
      labels: { ...(p.labels ?? {}) },
    },
    spec: {
      ...(p.nodeName !== undefined ? { nodeName: p.nodeName } : {}),
      hostNetwork: p.hostNetwork ?? false,
      containers: [{ name: 'c', image: 'busybox' }],
    },
    status: {
      phase: p.phase ?? (ips.length ? 'Running' : 'Pending'),
      ...(ips.length ? { podIP: ips[0], podIPs: ips.map((ip) => ({ ip })) } : {}),
    },
  };
}

function clone<T>(v: T): T {
  return structuredClone(v);
}

function key(o: Obj): string {
  return `${o.metadata.namespace ?? ''}/${o.metadata.name}`;
}

function parseSelector(s: string | undefined, what: string): [string, string][] {
  if (!s) return [];
  return s.split(',').map((term) => {
    const m = /^([^=!]+)==?(.*)$/.exec(term.trim());
    if (!m) throw new Error(`unsupported ${what} selector "${term}"`);
    return [m[1]!, m[2]!];
  });
}

function fieldOf(o: Obj, path: string): string | undefined {
  let cur: unknown = o;
  for (const part of path.split('.')) {
    if (typeof cur !== 'object' || cur === null) return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur === undefined || cur === null ? '' : String(cur);
}

function matches(f: Filter, resource: Resource, o: Obj | undefined): boolean {
  if (!o || resource !== f.resource) return false;
  if (f.namespace !== undefined && o.metadata.namespace !== f.namespace) return false;
  for (const [path, want] of f.fields) if (fieldOf(o, path) !== want) return false;
  for (const [label, want] of f.labels) if (o.metadata.labels?.[label] !== want) return false;
  return true;
}

const SUPPORTED_FIELDS = new Set(['spec.nodeName', 'metadata.name', 'metadata.namespace', 'status.phase']);

export class FakeApiServer {
  /** every request, in order */
  readonly requests: RequestRecord[] = [];
  /** Events posted (core/v1 and events.k8s.io/v1), as received */
  readonly events: Record<string, unknown>[] = [];
  private readonly objects = new Map<Resource, Map<string, Obj>>([
    ['pods', new Map()],
    ['services', new Map()],
    ['endpointslices', new Map()],
    ['namespaces', new Map()],
    ['fqdnegresspolicies', new Map()],
    ['clusterfqdnegresspolicies', new Map()],
  ]);
  /** false: the policy CRDs are "not installed" (their paths answer 404, as a real server does) */
  private crdsInstalled = true;
  private rv = 100;
  private history: Change[] = [];
  /** a watch from a resourceVersion below this gets 410 Gone */
  private compactedRv = 0;
  private readonly watchers = new Set<Watcher>();
  private readonly sockets = new Set<Socket>();
  private down = false;

  private constructor(
    private readonly server: Server,
    readonly port: number,
    private readonly maxHistory: number,
  ) {}

  static async start(opts: { maxHistory?: number } = {}): Promise<FakeApiServer> {
    let self: FakeApiServer | undefined;
    const server = createServer((req, res) => self!.handle(req, res));
    server.on('connection', (socket) => {
      if (self?.down) {
        socket.destroy();
        return;
      }
      self?.sockets.add(socket);
      socket.on('close', () => self?.sockets.delete(socket));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const address = server.address();
    if (!address || typeof address === 'string') throw new Error('fake apiserver: no port');
    self = new FakeApiServer(server, address.port, opts.maxHistory ?? 1000);
    return self;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** A KubeConfig pointing at this server. */
  kubeConfig(): k8s.KubeConfig {
    const kc = new k8s.KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'fake', server: this.url, skipTLSVerify: true }],
      users: [{ name: 'u' }],
      contexts: [{ name: 'c', cluster: 'fake', user: 'u' }],
      currentContext: 'c',
    });
    return kc;
  }

  get resourceVersion(): string {
    return String(this.rv);
  }

  /** open watch streams */
  get watchCount(): number {
    return this.watchers.size;
  }

  // ---- test controls -------------------------------------------------------

  addPod(pod: Obj | FakePodInit): Obj {
    return this.put('pods', 'metadata' in pod ? pod : fakePod(pod));
  }

  /** Change a pod in place (mutate gets a copy); MODIFIED. */
  updatePod(namespace: string, name: string, mutate: (pod: Obj) => void): Obj {
    const current = this.objects.get('pods')!.get(`${namespace}/${name}`);
    if (!current) throw new Error(`fake apiserver: no pod ${namespace}/${name}`);
    const next = clone(current);
    mutate(next);
    return this.put('pods', next);
  }

  deletePod(namespace: string, name: string): void {
    this.remove('pods', namespace, name);
  }

  getPod(namespace: string, name: string): Obj | undefined {
    const p = this.objects.get('pods')!.get(`${namespace}/${name}`);
    return p && clone(p);
  }

  /** Create or replace kube-system/kube-dns (or the named service); undefined deletes it. */
  setService(
    spec: { clusterIP?: string; clusterIPs?: string[] } | undefined,
    name = 'kube-dns',
    namespace = 'kube-system',
  ): void {
    if (spec === undefined) return this.remove('services', namespace, name);
    const ips = spec.clusterIPs ?? (spec.clusterIP ? [spec.clusterIP] : []);
    this.put('services', {
      metadata: { namespace, name, labels: { 'k8s-app': name } },
      spec: {
        type: 'ClusterIP',
        clusterIP: ips[0] ?? 'None',
        clusterIPs: ips,
        ports: [{ name: 'dns', port: 53, protocol: 'UDP' }],
      },
    });
  }

  /** Create or replace an EndpointSlice of a service (default kube-dns); undefined endpoints deletes it. */
  setEndpointSlice(
    name: string,
    endpoints: { addresses: string[]; ready?: boolean }[] | undefined,
    opts: { service?: string; namespace?: string; addressType?: string } = {},
  ): void {
    const namespace = opts.namespace ?? 'kube-system';
    if (endpoints === undefined) return this.remove('endpointslices', namespace, name);
    this.put('endpointslices', {
      metadata: { namespace, name, labels: { 'kubernetes.io/service-name': opts.service ?? 'kube-dns' } },
      addressType: opts.addressType ?? 'IPv4',
      endpoints: endpoints.map((e) => ({
        addresses: e.addresses,
        conditions: e.ready === undefined ? {} : { ready: e.ready },
      })),
      ports: [{ name: 'dns', port: 53, protocol: 'UDP' }],
    });
  }

  /** Create or replace a namespace with these labels (kubernetes.io/metadata.name is set, as the server does). */
  setNamespace(name: string, labels: Record<string, string> = {}): Obj {
    return this.put('namespaces', { metadata: { name, labels: { ...labels, 'kubernetes.io/metadata.name': name } } });
  }

  deleteNamespace(name: string): void {
    this.remove('namespaces', '', name);
  }

  /** Create or replace a FQDNEgressPolicy or ClusterFQDNEgressPolicy. */
  putPolicy(policy: FakePolicy): Obj {
    const resource = policy.kind === 'FQDNEgressPolicy' ? 'fqdnegresspolicies' : 'clusterfqdnegresspolicies';
    const metadata =
      resource === 'fqdnegresspolicies'
        ? { name: policy.metadata.name, namespace: policy.metadata.namespace ?? 'default' }
        : { name: policy.metadata.name };
    return this.put(resource, { metadata, spec: policy.spec });
  }

  deletePolicy(kind: FakePolicy['kind'], name: string, namespace?: string): void {
    if (kind === 'FQDNEgressPolicy') this.remove('fqdnegresspolicies', namespace ?? 'default', name);
    else this.remove('clusterfqdnegresspolicies', '', name);
  }

  /** Install (true) or remove (false) the policy CRDs: removing deletes every policy, as the real server does. */
  setCrdsInstalled(installed: boolean): void {
    if (!installed)
      for (const resource of ['fqdnegresspolicies', 'clusterfqdnegresspolicies'] as const)
        for (const o of [...this.objects.get(resource)!.values()])
          this.remove(resource, o.metadata.namespace ?? '', o.metadata.name);
    this.crdsInstalled = installed;
    if (!installed) this.closeWatches();
  }

  /** Send a BOOKMARK at the current resourceVersion to every watch that allowed bookmarks. */
  sendBookmark(): void {
    for (const w of this.watchers) {
      if (!w.bookmarks) continue;
      const { kind, apiVersion } = KINDS[w.filter.resource];
      this.write(w, { type: 'BOOKMARK', object: { kind, apiVersion, metadata: { resourceVersion: String(this.rv) } } });
    }
  }

  /** Forget all history and end open watches: the next watch from any old resourceVersion gets 410 Gone. */
  expireHistory(): void {
    this.rv++;
    this.history = [];
    this.compactedRv = this.rv;
    this.closeWatches();
  }

  /** End every open watch stream cleanly, as the server does at timeoutSeconds. */
  closeWatches(): void {
    for (const w of [...this.watchers]) this.endWatch(w);
  }

  /** true: drop every connection and refuse new ones (an outage); false: serve again. */
  setDown(down: boolean): void {
    this.down = down;
    if (!down) return;
    for (const w of this.watchers) clearTimeout(w.timer);
    this.watchers.clear();
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
  }

  async close(): Promise<void> {
    this.setDown(true);
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  // ---- the store -----------------------------------------------------------

  private put(resource: Resource, input: Obj): Obj {
    const store = this.objects.get(resource)!;
    const before = store.get(key(input));
    const obj = clone(input);
    this.rv++;
    obj.apiVersion = KINDS[resource].apiVersion;
    obj.kind = KINDS[resource].kind;
    obj.metadata.resourceVersion = String(this.rv);
    obj.metadata.uid = before?.metadata.uid ?? obj.metadata.uid ?? randomUUID();
    obj.metadata.creationTimestamp = before?.metadata.creationTimestamp ?? new Date().toISOString();
    store.set(key(obj), obj);
    this.record({ rv: this.rv, resource, type: before ? 'MODIFIED' : 'ADDED', before, after: obj });
    return clone(obj);
  }

  private remove(resource: Resource, namespace: string, name: string): void {
    const store = this.objects.get(resource)!;
    const before = store.get(`${namespace}/${name}`);
    if (!before) throw new Error(`fake apiserver: no ${resource} ${namespace}/${name}`);
    store.delete(`${namespace}/${name}`);
    this.rv++;
    const after = clone(before);
    after.metadata.resourceVersion = String(this.rv);
    this.record({ rv: this.rv, resource, type: 'DELETED', before, after });
  }

  private record(change: Change): void {
    this.history.push(change);
    while (this.history.length > this.maxHistory) this.compactedRv = this.history.shift()!.rv;
    for (const w of this.watchers) this.deliver(w, change);
  }

  /** What a watcher sees of a change, given its selectors (field selectors turn updates into adds/deletes). */
  private deliver(w: Watcher, c: Change): void {
    const was = matches(w.filter, c.resource, c.before);
    const is = c.type !== 'DELETED' && matches(w.filter, c.resource, c.after);
    let type: string | undefined;
    if (c.type === 'DELETED') type = was ? 'DELETED' : undefined;
    else if (was && is) type = 'MODIFIED';
    else if (is) type = 'ADDED';
    else if (was) type = 'DELETED';
    if (type) this.write(w, { type, object: c.after });
  }

  // ---- HTTP ----------------------------------------------------------------

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', this.url);
    const query = Object.fromEntries(url.searchParams);
    const watch = query.watch === '1' || query.watch === 'true';
    this.requests.push({ method: req.method ?? 'GET', path: url.pathname, query, watch });
    if (this.down) {
      req.socket.destroy();
      return;
    }
    const route = this.route(url.pathname);
    if (!route)
      return this.status(res, 404, 'NotFound', `the server could not find the requested resource (${url.pathname})`);
    if (route.resource === 'events') {
      if (req.method !== 'POST') return this.status(res, 405, 'MethodNotAllowed', 'only POST is served for events');
      return this.postEvent(req, res, route.namespace ?? '', route.group);
    }
    if (req.method !== 'GET') return this.status(res, 405, 'MethodNotAllowed', `${req.method} is not served`);
    let filter: Filter;
    try {
      const fields = parseSelector(query.fieldSelector, 'field');
      for (const [f] of fields) if (!SUPPORTED_FIELDS.has(f)) throw new Error(`field label not supported: ${f}`);
      filter = {
        resource: route.resource,
        namespace: route.namespace,
        fields,
        labels: parseSelector(query.labelSelector, 'label'),
      };
    } catch (err) {
      return this.status(res, 400, 'BadRequest', (err as Error).message);
    }
    if (watch) this.serveWatch(req, res, filter, query);
    else this.serveList(res, filter);
  }

  private route(
    path: string,
  ): { resource: Resource | 'events'; namespace: string | undefined; group: string } | undefined {
    const m =
      /^\/(?:api\/v1|apis\/(discovery\.k8s\.io|events\.k8s\.io)\/v1|apis\/(fqdn-egress\.io)\/v1alpha1)(?:\/namespaces\/([^/]+))?\/([a-z]+)$/.exec(
        path,
      );
    if (!m) return undefined;
    const group = m[1] ?? m[2] ?? '';
    const namespace = m[3];
    const resource = m[4]!;
    const ok =
      (group === '' && (resource === 'pods' || resource === 'services' || resource === 'events')) ||
      (group === '' && resource === 'namespaces' && namespace === undefined) ||
      (group === 'discovery.k8s.io' && resource === 'endpointslices') ||
      (group === 'events.k8s.io' && resource === 'events') ||
      (group === 'fqdn-egress.io' && this.crdsInstalled && resource === 'fqdnegresspolicies') ||
      (group === 'fqdn-egress.io' && this.crdsInstalled && resource === 'clusterfqdnegresspolicies' && !namespace);
    if (!ok) return undefined;
    return { resource: resource as Resource | 'events', namespace, group };
  }

  private status(res: ServerResponse, code: number, reason: string, message: string): void {
    res.writeHead(code, { 'Content-Type': 'application/json' });
    res.end(
      JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code }),
    );
  }

  private serveList(res: ServerResponse, filter: Filter): void {
    const items = [...this.objects.get(filter.resource)!.values()].filter((o) => matches(filter, filter.resource, o));
    const { kind, apiVersion } = KINDS[filter.resource];
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ kind: `${kind}List`, apiVersion, metadata: { resourceVersion: String(this.rv) }, items }));
  }

  private serveWatch(req: IncomingMessage, res: ServerResponse, filter: Filter, query: Record<string, string>): void {
    res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' });
    res.flushHeaders();
    const w: Watcher = {
      filter,
      res,
      bookmarks: query.allowWatchBookmarks === 'true' || query.allowWatchBookmarks === '1',
      timer: undefined,
    };
    const from = query.resourceVersion;
    if (from && from !== '0' && !/^\d+$/.test(from)) {
      this.write(w, {
        type: 'ERROR',
        object: {
          kind: 'Status',
          apiVersion: 'v1',
          metadata: {},
          status: 'Failure',
          message: `invalid resourceVersion "${from}"`,
          reason: 'BadRequest',
          code: 400,
        },
      });
      res.end();
      return;
    }
    if (from && from !== '0' && Number(from) < this.compactedRv) {
      this.write(w, {
        type: 'ERROR',
        object: {
          kind: 'Status',
          apiVersion: 'v1',
          metadata: {},
          status: 'Failure',
          message: `too old resource version: ${from} (${this.compactedRv})`,
          reason: 'Expired',
          code: 410,
        },
      });
      res.end();
      return;
    }
    if (!from || from === '0') {
      // "start at most recent": the current state as ADDED, then changes
      for (const o of this.objects.get(filter.resource)!.values())
        if (matches(filter, filter.resource, o)) this.write(w, { type: 'ADDED', object: o });
    } else {
      for (const c of this.history) if (c.rv > Number(from)) this.deliver(w, c);
    }
    this.watchers.add(w);
    const timeout = Number(query.timeoutSeconds);
    if (timeout > 0) w.timer = setTimeout(() => this.endWatch(w), timeout * 1000);
    req.on('close', () => {
      clearTimeout(w.timer);
      this.watchers.delete(w);
    });
  }

  private endWatch(w: Watcher): void {
    clearTimeout(w.timer);
    this.watchers.delete(w);
    w.res.end();
  }

  private write(w: Watcher, event: { type: string; object: unknown }): void {
    if (!w.res.writableEnded) w.res.write(`${JSON.stringify(event)}\n`);
  }

  private postEvent(req: IncomingMessage, res: ServerResponse, namespace: string, group: string): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      let body: Record<string, unknown>;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
      } catch {
        return this.status(res, 400, 'BadRequest', 'body is not JSON');
      }
      const meta = (body.metadata ?? {}) as Record<string, unknown>;
      if (meta.namespace !== undefined && meta.namespace !== namespace) {
        return this.status(
          res,
          400,
          'BadRequest',
          'the namespace of the object does not match the namespace on the request',
        );
      }
      const name =
        (meta.name as string | undefined) ??
        `${(meta.generateName as string | undefined) ?? 'event.'}${randomUUID().slice(0, 5)}`;
      this.rv++;
      const stored = {
        ...body,
        apiVersion: group === 'events.k8s.io' ? 'events.k8s.io/v1' : 'v1',
        kind: 'Event',
        metadata: {
          ...meta,
          name,
          namespace,
          uid: randomUUID(),
          resourceVersion: String(this.rv),
          creationTimestamp: new Date().toISOString(),
        },
      };
      this.events.push(stored);
      res.writeHead(201, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(stored));
    });
  }
}
