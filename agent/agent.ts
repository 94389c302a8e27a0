/*
 * The agent: wires a pod source, the endpoint manager, the DNS learner, the
 * FQDN cache and the reconciler to the datapath, and keeps them going.
 * Start-up order: load (or reuse) the pins, restore identities, names and
 * allow entries from the maps, apply the first pod snapshot, then learn.
 * Stop: stop learning and leave the pinned programs and maps enforcing.
 */
import { readFileSync, statfsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname } from 'node:path';
import type { Server } from 'node:http';
import { Datapath } from './datapath/datapath.js';
import { parseIp, formatIp } from './datapath/addr.js';
import { AllowSource, IPPROTO, PROTO_TLS, ResolverFlag, type AllowKey, type AllowValue, type LearnedRecord, PolicyKind, ZERO_CONFIG, type Config as KernelConfig, type PolicyKey, type PolicyValue, type PortRule as KernelPortRule } from './datapath/codecs.js';
import { native, type PacketSocket, type RingBufferReader } from './datapath/native.js';
import { FqdnCache } from './cache/fqdn-cache.js';
import { Reconciler } from './reconciler.js';
import { EndpointManager, type EnforcedPod } from './endpoints.js';
import { DnsLearner, type LearnedAnswer } from './learn/dns-learner.js';
import { KernelRecords } from './learn/kernel-records.js';
import { LostRecords, RECOVERY_CALLS_PER_TICK } from './learn/lost-records.js';
import { AllowWalk } from './datapath/allow-walk.js';
import { rulesForName, type PortRule } from './policy/annotation.js';
import { nameHash, wildcardHash, hashOrderBytes } from './policy/name-hash.js';
import { rebuiltBecause } from './datapath/migrate.js';
import { syncClusterDomains } from './datapath/cluster-domains.js';
import { clusterDomainEntries } from './policy/dns-query-filter.js';
import { refusedQueryOf, refusedServerNameOf } from './observability/refused-query.js';
import { FlowSweeper, DEFAULT_TCP_IDLE_NS, DEFAULT_OTHER_IDLE_NS } from './flow-sweeper.js';
import { NamePruner } from './name-pruner.js';
import { FileSource } from './sources/file-source.js';
import { KubernetesSource, type PodEventReason } from './sources/kubernetes-source.js';
import * as k8s from '@kubernetes/client-node';
import type { PodSpec } from './sources/pod.js';
import { interfaceByName, interfaceForIp } from './net/host-interface.js';
import { nameserversOf, openResolvers } from './net/resolver-bypass.js';
import { TcxHeadGuard, describeBackoff } from './datapath/head-guard.js';
import { ensureHeadGuardRecords, type HeadGuardRecords } from './datapath/head-guard-map.js';
import { tcxUnavailable } from './datapath/attach.js';
import { datapathFeatures, featureFlags, featureState, startupLines, type FeatureState } from './datapath/features.js';
import { podNotices, PodNoticeLedger } from './feature-notices.js';
import { AgentMetrics } from './observability/metrics.js';
import { startHttp } from './observability/http.js';
import { RateLimitedLog, type Logger } from './observability/log.js';
import type { Config } from './config.js';

const BPF_FS_MAGIC = 0xcafe4a11;
/** the DNS servers the node knows of (checked against --allow-cidrs) */
const RESOLV_CONF = '/etc/resolv.conf';
const TICK_MS = 500;
/** how often the learned-records ring is drained (the kernel wakes us only when much waits) */
const RECORDS_DRAIN_MS = 100;
/** how often idle flows are reclaimed and the per-pod flow counts corrected */
const FLOW_SWEEP_MS = 5000;
/** how often names nothing refers to any more leave fqe_names */
const NAME_PRUNE_MS = 30_000;
const DEFAULT_EVENTS_PER_SEC = 200;

/** The monotonic clock shared with the kernel (bpf_ktime_get_ns), in ms. */
export function monotonicMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

function realtimeNs(): bigint {
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));
}

function toKernelPorts(ports: PortRule[]): KernelPortRule[] {
  return ports.map((p) => ({ port: p.port, proto: p.proto === 'tcp' ? IPPROTO.tcp : p.proto === 'udp' ? IPPROTO.udp : p.proto === 'tls' ? PROTO_TLS : 0 }));
}

export class AgentStartError extends Error {
  override name = 'AgentStartError';
}

function checkPinDir(pinDir: string): void {
  let magic: number;
  try {
    magic = statfsSync(dirname(pinDir)).type;
  } catch (err) {
    throw new AgentStartError(`--bpf-pin-dir ${pinDir}: ${dirname(pinDir)} is not accessible: ${(err as Error).message}`);
  }
  if (magic !== BPF_FS_MAGIC) {
    throw new AgentStartError(`--bpf-pin-dir ${pinDir}: ${dirname(pinDir)} is not a BPF filesystem (mount it: mount -t bpf bpf ${dirname(pinDir)})`);
  }
}

export class Agent {
  readonly dp: Datapath;
  readonly cache: FqdnCache;
  readonly reconciler: Reconciler;
  readonly endpoints: EndpointManager;
  readonly learner: DnsLearner;
  readonly metrics: AgentMetrics;
  private readonly names = new Map<bigint, string>();
  /** the node's name-hash secret (fqe_hash_key): kept across restarts */
  private readonly hashKey: bigint;
  private readonly byIdentity = new Map<number, EnforcedPod>();
  /** what fqe_policy holds per identity: "kind:hash" -> key */
  private readonly policyShadow = new Map<number, Map<string, PolicyKey>>();
  private readonly kernelRecords: KernelRecords;
  /** records the ring could not take: which pods lost some, and their entries back */
  private readonly lostRecords: LostRecords;
  private lastFlowSweep = 0;
  private lastNamePrune = Date.now();
  private readonly namePruner = new NamePruner();
  private readonly flowSweeper: FlowSweeper;
  /** rejected DNS messages, names past the cap, failed map writes: what a pod causes must not flood the log */
  private readonly limitedLog: RateLimitedLog;
  private source: FileSource | KubernetesSource | undefined;
  /** trusted resolvers in force: --dns-servers, or what kube-dns discovery found */
  private resolvers: string[];
  private pathCheckNoted = false;
  private readonly announced = new Set<string>();
  /** "prefix resolver" pairs already warned about: an --allow-cidrs prefix that opens a DNS server */
  private readonly openResolversWarned = new Set<string>();
  private tap: PacketSocket | undefined;
  private events: RingBufferReader | undefined;
  private learned: RingBufferReader | undefined;
  private drainTimer: NodeJS.Timeout | undefined;
  private http: Server | undefined;
  private timer: NodeJS.Timeout | undefined;
  private snapshotApplied = false;
  private pendingLatencies: bigint[] = [];
  /** keeps our tcx links first in their chains (tcx only, --tcx-head-guard on) */
  private headGuard: TcxHeadGuard | undefined;
  private headGuardRecords: HeadGuardRecords | undefined;
  /** what this node's kernel and flags let the datapath run (datapath/features.ts) */
  readonly features: FeatureState[];
  private readonly notices = new PodNoticeLedger();

  private constructor(private readonly cfg: Config, private readonly log: Logger) {
    checkPinDir(cfg.bpfPinDir);
    this.resolvers = cfg.dnsServers.map((s) => formatIp(parseIp(s)));
    this.dp = Datapath.load(cfg.bpfPinDir, undefined, { withoutInlineLearner: !cfg.inlineLearner, attachMode: cfg.attachMode });
    this.features = datapathFeatures(this.dp, { mode: cfg.attachMode, tcxUnavailable: cfg.attachMode === 'legacy' ? null : tcxUnavailable() }, cfg.tcxHeadGuard);
    this.hashKey = this.nodeHashKey();
    this.limitedLog = new RateLimitedLog(log);
    this.flowSweeper = new FlowSweeper({
      flows: this.dp.maps.conntrack,
      counts: this.dp.maps.ctCounts,
      inCounts: this.dp.maps.ctInCounts,
      tlsState: [this.dp.maps.tlsFlows, this.dp.maps.tlsBytes],
      nowNs: () => process.hrtime.bigint(),
      tcpIdleNs: DEFAULT_TCP_IDLE_NS,
      otherIdleNs: DEFAULT_OTHER_IDLE_NS,
    });
    this.cache = new FqdnCache({ maxIpsPerName: cfg.maxIpsPerName, maxNamesPerPod: cfg.maxNamesPerPod, now: monotonicMs });
    this.reconciler = new Reconciler({
      cache: this.cache,
      allow: this.dp.maps.allow,
      identities: () => this.byIdentity.keys(),
      portsFor: (identity, name) => {
        const pod = this.byIdentity.get(identity);
        const r = pod ? rulesForName(pod.policy, name) : undefined;
        return r?.allowed ? toKernelPorts(r.ports) : null;
      },
      nameHash: (name) => this.recordedHash(name),
      nameOf: (hash) => this.names.get(hash),
      toKernelNs: (ms) => BigInt(Math.round(ms * 1e6)),
      kernelNowNs: () => process.hrtime.bigint(),
    });
    this.endpoints = new EndpointManager({
      dp: this.dp,
      lookup: { byName: interfaceByName, byIp: interfaceForIp },
      log,
      dnsFilter: cfg.dnsFilter,
      events: {
        onPolicy: (pod, previous) => {
          this.byIdentity.set(pod.identity, pod);
          this.syncPolicy(pod.identity, pod);
          if (!previous && !this.announced.has(pod.key)) {
            this.announced.add(pod.key);
            this.podEvent(pod, 'EnforcementStarted', `fqdn-egress ${pod.policy.mode === 'audit' ? 'audits' : 'enforces'} egress on ${pod.ifname}: ${pod.policy.rules.length} allowed name pattern(s)`, 'Normal');
          }
          if (previous) this.reconciler.markDirty(this.cache.forgetNames(pod.identity, (name) => rulesForName(pod.policy, name).allowed));
          this.reconciler.markAll();
          for (const n of this.notices.due(pod.key, podNotices(this.features, pod))) {
            this.log.warn({ pod: pod.key, reason: n.reason }, n.message);
            this.podEvent(pod, n.reason, n.message, 'Warning');
          }
        },
        onRemoved: (pod) => {
          this.byIdentity.delete(pod.identity);
          this.announced.delete(pod.key);
          this.notices.forget(pod.key);
          this.syncPolicy(pod.identity, undefined);
          this.cache.forgetIdentity(pod.identity);
          this.lostRecords.forget(pod.identity);
          this.reconciler.markAll();
          this.flush();
        },
        onPolicyErrors: (pod, errors) => {
          for (const e of errors) this.log.warn({ pod: `${pod.namespace}/${pod.name}`, entry: e.entry, annotation: e.annotation }, e.message);
          this.metrics.policyErrors.inc({ namespace: pod.namespace, pod: pod.name }, errors.length);
          this.podEvent(pod, 'InvalidAnnotation', `${errors.map((e) => e.message).join('; ')} (these entries allow nothing; the others apply)`, 'Warning');
        },
      },
    });
    this.learner = new DnsLearner({
      podByInterface: (ifindex) => this.endpoints.byInterface(ifindex),
      isTrustedResolver: (ip) => this.resolvers.includes(ip),
      kernelSawQuery: (identity, proto, port, id, resolver) => this.kernelSawQuery(identity, proto, port, id, resolver),
      learn: (a) => this.learn(a),
      verdict: (v, detail) => {
        this.metrics.dnsMessages.inc({ verdict: v });
        if (v.startsWith('rejected')) this.limitedLog.info(v, { verdict: v, ...detail }, 'DNS answer rejected');
        else if (v === 'accepted') this.log.debug({ ...detail }, 'DNS answer accepted');
      },
      minTtlMs: cfg.minTtlMs,
      maxTtlMs: cfg.maxTtlMs,
      connectGraceMs: cfg.connectGraceMs,
      nowMs: monotonicMs,
    });
    this.kernelRecords = new KernelRecords({
      cache: this.cache,
      pod: (identity) => this.byIdentity.get(identity),
      hashesTo: (name, hash) => this.hashesTo(name, hash),
      noteKernelEntry: (key, value, ip) => this.reconciler.noteKernelEntry(key, value, ip),
      rememberName: (hash, name) => this.rememberName(hash, name),
      keepMs: (ttlS) => Math.max(cfg.connectGraceMs, Math.min(cfg.maxTtlMs, Math.max(cfg.minTtlMs, ttlS * 1000))),
      nameRefused: (pod, name) => this.nameRefused(pod, name),
    });
    this.lostRecords = new LostRecords({
      lostCount: () => this.dp.maps.learnedLost.get(0) ?? 0n,
      learnedCounts: () => new Map(this.dp.maps.counters.entries().map(([identity, c]) => [identity, c.learned])),
      drain: () => this.learned?.consume(),
      enforced: (identity) => this.byIdentity.has(identity),
      walk: new AllowWalk({
        map: this.dp.maps.allow,
        knownIdentities: () => this.reconciler.knownIdentities(),
        knownKeys: (identity) => this.reconciler.knownKeys(identity),
        found: (key, value) => this.importKernelEntry(key, value),
      }),
      budget: RECOVERY_CALLS_PER_TICK,
    });
    this.metrics = new AgentMetrics({
      podCounters: () =>
        [...this.byIdentity.values()].flatMap((pod) => {
          const c = this.dp.maps.counters.get(pod.identity);
          const unrecorded = this.dp.maps.queryRate.get(pod.identity)?.unrecorded ?? 0n;
          return c ? [{ namespace: pod.namespace, pod: pod.name, passed: c.passed, dropped: c.dropped, audited: c.audited, reasons: c.reasons, learnedInKernel: c.learned, unwrittenInKernel: c.learnUnwritten, answersLeftToAgent: c.learnSkipped, queriesUnrecorded: unrecorded }] : [];
        }),
      maps: () => [
        { map: 'fqe_allow', entries: this.reconciler.entries, capacity: 1_048_576 },
        { map: 'fqe_endpoints', entries: this.byIdentity.size, capacity: 4096 },
        { map: 'fqe_names', entries: this.names.size, capacity: 65_536 },
      ],
      cacheEntries: () => this.cache.size,
      enforcedPods: () => this.byIdentity.size,
      socketDrops: () => this.tap?.stats().drops ?? 0,
      contestedInterfaces: () => this.headGuard?.contested() ?? 0,
      recoveryPending: () => this.lostRecords.pending,
    });
  }

  static async start(cfg: Config, log: Logger): Promise<Agent> {
    const agent = new Agent(cfg, log);
    try {
      await agent.run();
    } catch (err) {
      await agent.stop();
      throw err;
    }
    return agent;
  }

  private async run(): Promise<void> {
    const { dp, cfg } = this;
    dp.maps.config.set(0, this.configValue());
    dp.maps.limits.set(0, { ipsPerPod: cfg.maxIpsPerPod, tlsFlowsPerPod: 0 });
    for (const m of dp.migrated) {
      const detail = { map: m.map, entries: m.entries, from: m.from, to: m.to };
      if (m.action === 'kept') this.log.warn(detail, 'pinned map had another definition: upgraded, entries kept');
      else if (m.action === 'converted') this.log.warn(detail, 'pinned map had an older layout: upgraded, entries converted');
      else if (m.action === 'rebuilt') this.log.warn({ ...detail, how: rebuiltBecause(m.map) }, 'pinned map had an older layout: upgraded, entries rebuilt by the agent');
      else this.log.error(detail, 'pinned map had another layout: upgraded, its entries could not be carried over');
    }
    for (const line of startupLines(this.features)) this.log[line.level](line.fields, line.msg);
    this.metrics.setFeatures(this.features);
    this.syncResolvers();
    this.syncCidrs();
    syncClusterDomains(dp.maps.clusterDomains, clusterDomainEntries(cfg.clusterDomains, this.hashKey));
    this.headGuard = this.makeHeadGuard();
    // (before the map is read: what restore() reads covers every record lost until now)
    if (!dp.inlineLearnerUnavailable) this.lostRecords.begin();
    const restored = this.restore();
    this.log.info({ pinDir: cfg.bpfPinDir, ...restored }, 'datapath loaded; state restored from the maps');

    if (cfg.metricsAddress) this.http = await startHttp(cfg.metricsAddress, this.metrics.registry, () => this.notReady());
    this.events = dp.openEvents((evs) => {
      for (const e of evs) {
        const pod = this.byIdentity.get(e.identity);
        this.metrics.events.inc({ namespace: pod?.namespace ?? '', pod: pod?.name ?? '', kind: e.kind, reason: e.reason });
        // (the refused name costs a map read: only when the line is logged)
        if (!this.log.isLevelEnabled('debug')) continue;
        this.log.debug({ pod: pod?.key, kind: e.kind, reason: e.reason, dst: e.daddr, dport: e.dport, proto: e.proto, ...(e.reason === 'dns-name' ? { query: refusedQueryOf(dp.maps.dnsRefused, e) } : {}), ...(e.reason === 'tls-server-name' ? { serverName: refusedServerNameOf(dp.maps.dnsRefused, e).name } : {}) }, 'packet refused');
      }
    });
    this.learned = dp.openLearned((records, malformed) => this.onLearnedRecords(records, malformed));
    // what the ring holds was counted before begin(): drained before counting starts
    this.learned.consume();
    this.lostRecords.startCounting();
    this.drainTimer = setInterval(() => this.learned?.consume(), RECORDS_DRAIN_MS);
    this.tap = dp.openDnsTap((packets) => {
      this.learner.handle(packets);
      this.flush();
    });
    if (cfg.source === 'file') {
      const source = new FileSource({
        path: cfg.endpointsFile!,
        onPods: (pods) => void this.applyPods(pods),
        onError: (err) => {
          this.metrics.sourceErrors.inc({ source: 'file' });
          this.log.error({ err: err.message }, 'endpoints file rejected');
        },
      });
      this.source = source;
      source.start();
    } else {
      const kubeConfig = new k8s.KubeConfig();
      kubeConfig.loadFromDefault();
      const source = new KubernetesSource({
        kubeConfig,
        nodeName: cfg.nodeName!,
        log: this.log,
        onPods: (pods) => void this.applyPods(pods),
        onResolvers: (ips) => this.discoveredResolvers(ips),
        onError: (err) => {
          this.metrics.sourceErrors.inc({ source: 'kubernetes' });
          this.log.error({ err: err.message }, 'Kubernetes API: keeping the last known state');
        },
      });
      this.source = source;
      // Not awaited: while the API server is away the pins keep enforcing, and readiness waits.
      source.start().catch((err: Error) => this.log.warn({ err: err.message }, 'Kubernetes source stopped before its first list'));
    }
    this.timer = setInterval(() => this.tick(), TICK_MS);
  }

  /** The tcx head guard, where ours goes on as tcx links; it starts with the first pod snapshot. */
  private makeHeadGuard(): TcxHeadGuard | undefined {
    if (featureState(this.features, 'tcx-head-guard')?.state !== 'on') return undefined;
    this.headGuardRecords = ensureHeadGuardRecords(this.cfg.bpfPinDir);
    return new TcxHeadGuard({
      ops: this.dp.headGuardOps(),
      records: this.headGuardRecords,
      log: this.log,
      events: {
        onRetake: (iface, direction) => this.metrics.tcxHeadRetakes.inc({ interface: iface.ifname, direction }),
        onBackoff: (iface, report) => {
          this.metrics.tcxHeadBackoffs.inc({ interface: iface.ifname });
          this.podEvent(iface, 'TcxHeadContested', describeBackoff(iface, report), 'Warning');
        },
      },
    });
  }

  /** kube-dns discovery: used unless --dns-servers overrides it. */
  private discoveredResolvers(ips: string[]): void {
    if (this.cfg.dnsServers.length > 0) return;
    const next = ips.map((s) => formatIp(parseIp(s)));
    if (next.length === 0) {
      this.log.warn('kube-dns has no address: keeping the trusted resolvers in force');
      return;
    }
    this.log.info({ resolvers: next }, 'trusted resolvers from kube-system/kube-dns');
    this.resolvers = next;
    this.syncResolvers();
  }

  private podEvent(pod: { namespace: string; name: string }, reason: PodEventReason, message: string, type: 'Warning' | 'Normal'): void {
    if (this.source instanceof KubernetesSource) void this.source.podEvent(pod, reason, message, type);
  }

  private syncResolvers(): void {
    const want = new Set(this.resolvers);
    for (const [addr] of this.dp.maps.resolvers.entries()) if (!want.has(formatIp(addr))) this.dp.maps.resolvers.delete(addr);
    // The kube-dns Service address answers from wherever its pods run: no route leads back to it.
    const check = this.cfg.resolverPathCheck === 'on' || (this.cfg.resolverPathCheck === 'auto' && this.cfg.source === 'file');
    for (const ip of want) this.dp.maps.resolvers.set(parseIp(ip), ResolverFlag.trusted | (check ? 0 : ResolverFlag.noPathCheck));
    if (!check && !this.pathCheckNoted) {
      this.pathCheckNoted = true;
      this.log.warn({ resolvers: [...want] }, 'answers of the trusted resolvers are not checked against the route back to them (--resolver-path-check auto with the kubernetes source, or off): a pod that forges their address can teach its neighbours; keep anti-spoofing in the CNI, or set it on when the resolvers are not Service addresses');
    }
    this.warnOpenResolvers();
  }

  /**
   * DNS to an --allow-cidrs address passes unfiltered: warn (once each) when
   * a prefix covers a DNS server the node knows of that is not trusted.
   */
  private warnOpenResolvers(): void {
    if (this.cfg.allowCidrs.length === 0 || this.resolvers.length === 0) return; // (kube-dns discovery pending)
    let conf: string;
    try {
      conf = readFileSync(RESOLV_CONF, 'utf8');
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, `${RESOLV_CONF} unreadable: DNS servers under --allow-cidrs not checked`);
      return;
    }
    for (const o of openResolvers(this.cfg.allowCidrs, nameserversOf(conf), this.resolvers)) {
      const key = `${o.cidr} ${o.resolver}`;
      if (this.openResolversWarned.has(key)) continue;
      this.openResolversWarned.add(key);
      this.log.warn({ cidr: o.cidr, resolver: o.resolver, source: RESOLV_CONF },
        'an --allow-cidrs prefix covers a DNS server that is not a trusted resolver: enforced pods may send it any query (the DNS query filter judges only queries to the trusted resolvers), and its answers allow nothing');
    }
  }

  /** The node's name-hash secret: the pinned one, or a new random one (never 0). */
  private nodeHashKey(): bigint {
    const pinned = this.dp.maps.hashKey.get(0) ?? 0n;
    if (pinned !== 0n) return pinned;
    let key = 0n;
    while (key === 0n) key = randomBytes(8).readBigUInt64LE(0);
    this.dp.maps.hashKey.set(0, key);
    return key;
  }

  /** fqe_cidrs holds exactly --allow-cidrs. */
  private syncCidrs(): void {
    const want = new Map(this.cfg.allowCidrs.map((c) => [`${c.family}/${c.addr.toString('hex')}/${c.prefixLen}`, { family: c.family, addr: c.addr, prefixLen: c.prefixLen }]));
    for (const [key] of this.dp.maps.cidrs.entries()) {
      if (!want.has(`${key.family}/${key.addr.toString('hex')}/${key.prefixLen}`)) this.dp.maps.cidrs.delete(key);
    }
    for (const key of want.values()) this.dp.maps.cidrs.set(key, 1);
  }

  /** fqe_config as this agent wants it, with its heartbeat (egressctl status reads it). */
  private configValue(): KernelConfig {
    return {
      ...ZERO_CONFIG,
      eventsPerSec: DEFAULT_EVENTS_PER_SEC,
      minTtlS: Math.ceil(this.cfg.minTtlMs / 1000),
      maxTtlS: Math.max(1, Math.floor(this.cfg.maxTtlMs / 1000)),
      flags: featureFlags(this.features),
      agentHeartbeatNs: process.hrtime.bigint(),
      agentPid: process.pid,
      ctPerPod: this.cfg.flowsPerPod,
      queryWindowNs: BigInt(this.cfg.queryWindowMs) * 1_000_000n,
      connectGraceNs: BigInt(this.cfg.connectGraceMs) * 1_000_000n,
    };
  }

  /** Keep fqe_policy (what the inline learner may learn) in step with a pod's rules. */
  private syncPolicy(identity: number, pod: EnforcedPod | undefined): void {
    const want = new Map<string, [PolicyKey, PolicyValue]>();
    for (const rule of pod?.policy.rules ?? []) {
      const name = rule.pattern.kind === 'exact' ? rule.pattern.name : rule.pattern.suffix;
      const key =
        rule.pattern.kind === 'exact'
          ? { identity, kind: PolicyKind.exact, hash: nameHash(name, this.hashKey) }
          : { identity, kind: PolicyKind.wildcard, hash: wildcardHash(name, this.hashKey) };
      // The kernel compares these bytes with the question before a hash hit counts.
      want.set(`${key.kind}:${key.hash}`, [key, { ports: toKernelPorts(rule.ports), name: hashOrderBytes(name) }]);
      this.rememberName(key.hash, name);
    }
    const have = this.policyShadow.get(identity) ?? new Map<string, PolicyKey>();
    this.dp.maps.policy.deleteMany([...have].filter(([k]) => !want.has(k)).map(([, key]) => key));
    this.dp.maps.policy.setMany([...want.values()]);
    if (want.size === 0) this.policyShadow.delete(identity);
    else this.policyShadow.set(identity, new Map([...want].map(([k, [key]]) => [k, key])));
  }

  /**
   * The name behind a kernel entry's hash, only when it checks out as a
   * string: it hashes to that hash under this node's key (or, for entries
   * from before the key, the unkeyed hash) and the pod's policy allows it.
   */
  private checkedName(identity: number, hash: bigint): string | undefined {
    let name = this.names.get(hash);
    if (!name) {
      name = this.dp.maps.names.get(hash);
      if (name) this.names.set(hash, name);
    }
    const pod = this.byIdentity.get(identity);
    if (!name || !this.hashesTo(name, hash) || !pod || !rulesForName(pod.policy, name).allowed) {
      this.metrics.kernelEntriesRefused.inc();
      return undefined;
    }
    return name;
  }

  /** The inline learner's records: into the cache, no packet decoded, no map read. */
  private onLearnedRecords(records: LearnedRecord[], malformed: number): void {
    if (malformed) this.metrics.kernelRecords.inc({ outcome: 'malformed' }, malformed);
    for (const r of records) this.lostRecords.received(r.identity, r.addrs.length);
    const r = this.kernelRecords.apply(records);
    if (r.accepted) this.metrics.kernelRecords.inc({ outcome: 'accepted' }, r.accepted);
    if (r.overNameCap) this.metrics.kernelRecords.inc({ outcome: 'over-name-cap' }, r.overNameCap);
    if (r.refused) {
      this.metrics.kernelRecords.inc({ outcome: 'refused' }, r.refused);
      this.metrics.kernelEntriesRefused.inc(r.refused);
    }
    if (r.changes.length) {
      this.reconciler.markDirty(r.changes);
      this.flush();
    }
  }

  /**
   * The kernel's proof that the pod asked (consumed: one answer per query):
   * the learner's tap mark for an answer it left to us, or, with the inline
   * learner off, the enforcer's query record within the query window.
   */
  private kernelSawQuery(identity: number, proto: 'udp' | 'tcp', port: number, id: number, resolver: string): boolean {
    const protoNum = proto === 'tcp' ? IPPROTO.tcp : IPPROTO.udp;
    const now = process.hrtime.bigint();
    if (!this.dp.inlineLearnerUnavailable) {
      const key = { identity, podPort: port, dnsId: id, resolver: parseIp(resolver), proto: protoNum };
      const until = this.dp.maps.tapPass.get(key);
      if (until === undefined || until <= now) return false;
      this.dp.maps.tapPass.delete(key);
      return true;
    }
    const key = { identity, sport: port, dnsId: id, resolver: parseIp(resolver) };
    const q = this.dp.maps.queries.get(key);
    if (q === undefined || q.proto !== protoNum || now - q.sentNs > BigInt(this.cfg.queryWindowMs) * 1_000_000n) return false;
    this.dp.maps.queries.delete(key);
    return true;
  }

  /**
   * A kernel-learned entry the records did not bring (they were lost), found
   * by a walk of its pod's range of fqe_allow: into the cache, with its name.
   */
  private importKernelEntry(key: AllowKey, value: AllowValue): void {
    const pod = this.byIdentity.get(key.identity);
    if (!pod || value.source !== AllowSource.kernel || key.prefixLen !== 128) return;
    if (!this.reconciler.noteKernelEntry(key, value)) return; // known as it is
    const name = this.checkedName(key.identity, value.nameHash);
    if (!name) return;
    const ip = formatIp(key.addr);
    if (!this.cache.admits(key.identity, name)) {
      this.nameRefused(pod, name);
      this.reconciler.markDirty([{ identity: key.identity, ip }]);
      return;
    }
    this.reconciler.markDirty(this.cache.restore(key.identity, name, ip, Number(value.expiresNs) / 1e6, 'kernel'));
  }

  /** Identities, names and allow entries from the pinned maps. */
  private restore(): { identities: number; names: number; allowEntries: number; cacheEntries: number } {
    const identities = this.endpoints.restore();
    for (const [key] of this.dp.maps.policy.entries()) {
      const m = this.policyShadow.get(key.identity) ?? new Map<string, PolicyKey>();
      m.set(`${key.kind}:${key.hash}`, key);
      this.policyShadow.set(key.identity, m);
    }
    for (const [hash, name] of this.dp.maps.names.entries()) this.names.set(hash, name);
    const allow = this.dp.maps.allow.entries();
    this.reconciler.adopt(allow);
    for (const [key, value] of allow) {
      const name = this.names.get(value.nameHash);
      // Pods are not known yet: the reconciler drops names their policy does not allow.
      if (name && value.source === AllowSource.kernel && !this.hashesTo(name, value.nameHash)) continue;
      if (!name || value.expiresNs === 0n || value.source === AllowSource.static || key.prefixLen !== 128) continue;
      // past the cap (lowered since): left out of the cache, so the first full resync takes the entry out
      if (!this.cache.admits(key.identity, name)) continue;
      this.cache.restore(key.identity, name, formatIp(key.addr), Number(value.expiresNs) / 1e6, value.source === AllowSource.kernel ? 'kernel' : 'agent');
    }
    return { identities, names: this.names.size, allowEntries: allow.length, cacheEntries: this.cache.size };
  }

  /** Does this name hash to `hash` (keyed, or unkeyed for entries from before the key)? */
  private hashesTo(name: string, hash: bigint): boolean {
    try {
      return nameHash(name, this.hashKey) === hash || nameHash(name) === hash;
    } catch {
      return false; // not a name a policy could hold
    }
  }

  private async applyPods(pods: PodSpec[]): Promise<void> {
    await this.endpoints.apply(pods);
    for (const identity of this.cache.identities()) if (!this.byIdentity.has(identity)) this.cache.forgetIdentity(identity);
    for (const identity of [...this.policyShadow.keys()]) if (!this.byIdentity.has(identity)) this.syncPolicy(identity, undefined);
    this.reconciler.markAll();
    const first = !this.snapshotApplied;
    this.snapshotApplied = true;
    this.flush();
    if (first) {
      this.headGuard?.start(() => this.endpoints.enforced);
      this.log.info({ enforced: this.byIdentity.size, waiting: this.endpoints.pending.size }, 'first pod snapshot applied; ready');
    }
  }

  /** hash -> name in fqe_names, so egressctl and a restarted agent can show names. */
  private rememberName(hash: bigint, name: string): void {
    if (this.names.get(hash) === name) return;
    this.names.set(hash, name);
    try {
      this.dp.maps.names.set(hash, name);
    } catch (err) {
      this.log.warn({ name, err: (err as Error).message }, 'could not record the name in fqe_names');
    }
  }

  /**
   * The keyed hash of a name, with the name recorded for it in fqe_names.
   * Every hash the agent writes into fqe_allow goes through here, so the
   * name behind an entry is always on record: egressctl shows it, and a
   * restarted agent restores the entry. (Entries restored from before the
   * keyed hash carry the unkeyed one; they are rewritten under the keyed
   * hash, which fqe_names did not hold yet.)
   */
  private recordedHash(name: string): bigint {
    const hash = nameHash(name, this.hashKey);
    this.rememberName(hash, name);
    return hash;
  }

  private learn(a: LearnedAnswer): void {
    if (!this.cache.admits(a.pod.identity, a.name)) return this.nameRefused(a.pod, a.name);
    this.recordedHash(a.name);
    this.reconciler.markDirty(this.cache.learn(a.pod.identity, a.name, a.answers, 'agent'));
    this.pendingLatencies.push(a.capturedNs);
  }

  /** A new name past --max-names-per-pod: not cached, so not allowed; counted, logged (rate-limited). */
  private nameRefused(pod: EnforcedPod, name: string): void {
    this.metrics.namesOverCap.inc({ namespace: pod.namespace, pod: pod.name });
    this.limitedLog.warn('names-over-cap', { pod: pod.key, name, maxNamesPerPod: this.cfg.maxNamesPerPod }, 'pod has --max-names-per-pod names: a new name is refused until one expires');
  }

  /** Write what changed to the kernel; observe capture-to-map latency. */
  flush(): void {
    // Until the first pod snapshot is applied no pod counts as enforced, and a
    // full resync would take every restored entry away: wait for it.
    if (!this.snapshotApplied) return;
    const started = process.hrtime.bigint();
    try {
      const r = this.reconciler.flush();
      if (r.portOverflows) this.metrics.portOverflows.inc(r.portOverflows);
      this.metrics.allowWritesRetrying.set(r.retrying);
      if (r.failed) {
        this.metrics.allowWriteFailures.inc(r.failed);
        this.limitedLog.warn('allow-write-failed', { failed: r.failed, retrying: r.retrying, err: r.error }, 'writing the allow map failed: the entries are retried every second');
      }
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'writing the allow map failed; will retry');
      this.reconciler.markAll();
      return;
    }
    const done = realtimeNs();
    this.metrics.reconcileDuration.observe(Number(process.hrtime.bigint() - started) / 1e9);
    for (const captured of this.pendingLatencies) this.metrics.captureToMap.observe(Math.max(0, Number(done - captured)) / 1e9);
    this.pendingLatencies = [];
  }

  private tick(): void {
    this.dp.maps.config.set(0, this.configValue());
    if (!this.dp.inlineLearnerUnavailable) this.recoverLostRecords();
    if (Date.now() - this.lastNamePrune >= NAME_PRUNE_MS) {
      this.lastNamePrune = Date.now();
      this.pruneNames();
    }
    if (Date.now() - this.lastFlowSweep >= FLOW_SWEEP_MS) {
      this.lastFlowSweep = Date.now();
      const r = this.flowSweeper.sweep();
      this.metrics.flowsReclaimed.inc(r.reclaimed);
      this.writePodShares();
    }
    this.reconciler.markDirty(this.cache.expire());
    this.learner.sweep();
    this.flush();
    if (this.endpoints.pending.size > 0) void this.endpoints.retryWaiting().then(() => this.flush());
  }

  /**
   * What each pod holds of the node-wide tables, exactly, for the kernel's
   * shares (it counts up as it adds; entries expire and are deleted here):
   * allow entries as the reconciler knows them, flows under the TLS check.
   */
  private writePodShares(): void {
    const { maps } = this.dp;
    const allow = this.reconciler.entriesByIdentity();
    const tls = new Map<number, number>();
    for (const key of maps.tlsFlows.keys()) tls.set(key.identity, (tls.get(key.identity) ?? 0) + 1);
    const identities = new Set<number>([...allow.keys(), ...tls.keys(), ...maps.podShares.keys()]);
    for (const identity of identities) {
      maps.podShares.set(identity, { allow: BigInt(allow.get(identity) ?? 0), tlsFlows: BigInt(tls.get(identity) ?? 0) });
    }
  }

  /** Records the ring could not take: read back the entries of the pods that lost some, a bounded slice a tick. */
  private recoverLostRecords(): void {
    const r = this.lostRecords.tick();
    if (r.lost === 0n) return;
    this.metrics.kernelRecordsLost.inc(Number(r.lost));
    this.limitedLog.warn('records-lost', { lost: Number(r.lost), pods: r.affected.length, pending: r.pending }, 'the learned-records ring was full: reading back the allow entries of the pods that lost records');
  }

  /** Names no allow entry (as the reconciler knows them), rule or cached answer refers to leave fqe_names and the agent. */
  pruneNames(): number {
    const referenced = new Set<bigint>(this.reconciler.nameHashes());
    for (const keys of this.policyShadow.values()) for (const key of keys.values()) referenced.add(key.hash);
    for (const identity of this.cache.identities()) {
      for (const name of this.cache.namesOf(identity).keys()) referenced.add(nameHash(name, this.hashKey));
    }
    const stored = this.dp.maps.names.entries().map(([hash]) => hash);
    const gone = this.namePruner.pass(stored, referenced);
    if (gone.length) this.dp.maps.names.deleteMany(gone);
    const kept = new Set(stored);
    for (const hash of gone) kept.delete(hash);
    for (const hash of [...this.names.keys()]) if (!kept.has(hash)) this.names.delete(hash);
    this.metrics.namesPruned.inc(gone.length);
    return gone.length;
  }

  /** null when ready, else why not. */
  notReady(): string | null {
    if (!this.snapshotApplied) return 'waiting for the first pod snapshot';
    return null;
  }

  /** Stop learning; pinned programs and maps keep enforcing. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    if (this.drainTimer) clearInterval(this.drainTimer);
    this.headGuard?.stop();
    try {
      this.dp.maps.config.set(0, { ...this.configValue(), agentHeartbeatNs: 0n, agentPid: 0 });
    } catch {
      /* the maps may be gone: nothing to tell egressctl */
    }
    this.source?.stop();
    this.tap?.close();
    this.events?.close();
    this.learned?.close();
    await new Promise<void>((resolve) => (this.http ? this.http.close(() => resolve()) : resolve()));
    if (this.headGuardRecords) native.closeFd(this.headGuardRecords.fd);
    this.dp.close();
  }
}
