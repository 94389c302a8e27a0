/*
 * The agent: wires a pod source, the endpoint manager, the DNS learner, the
 * FQDN cache and the reconciler to the datapath, and keeps them going.
 * Start-up order: load (or reuse) the pins, restore identities, names and
 * allow entries from the maps, apply the first pod snapshot, then learn.
 * Stop: stop learning and leave the pinned programs and maps enforcing.
 */
import { statfsSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Server } from 'node:http';
import { Datapath } from './datapath/datapath.js';
import { allowMap, endpointsMap, namesMap, type LearnedRecord } from './datapath/maps/index.js';
import { native, type PacketSocket, type RingBufferReader } from './datapath/native.js';
import { FqdnCache } from './cache/fqdn-cache.js';
import { Reconciler } from './sync/reconciler.js';
import { EndpointManager, type EnforcedPod, type ScheduledPod } from './pods/endpoints.js';
import { DnsLearner, type LearnedAnswer } from './learn/dns-learner.js';
import { KernelRecords } from './learn/kernel-records.js';
import { LostRecords, RECOVERY_CALLS_PER_TICK } from './learn/lost-records.js';
import { AllowWalk } from './datapath/allow-walk.js';
import { rulesForName } from './policy/annotation.js';
import { rebuiltBecause } from './datapath/migrate.js';
import { refusedQueryOf, refusedServerNameOf } from './observability/refused-query.js';
import { FlowSweeper, DEFAULT_TCP_IDLE_NS, DEFAULT_OTHER_IDLE_NS } from './sync/flow-sweeper.js';
import { NameRegistry } from './names/name-registry.js';
import { PolicyMapSync, toKernelPorts } from './sync/policy-map.js';
import { RevokedFlows } from './sync/revoked-flows.js';
import { cidrContains, parseIp } from './net/addr.js';
import { StaticMaps } from './sync/static-maps.js';
import { writePodShares } from './sync/pod-shares.js';
import { QueryLedger } from './learn/query-ledger.js';
import { KernelEntries } from './learn/kernel-entries.js';
import { FileSource } from './sources/file-source.js';
import { KubernetesSource, type PodEventReason } from './sources/kubernetes-source.js';
import * as k8s from '@kubernetes/client-node';
import type { PodSpec, PolicyObjects } from './sources/pod.js';
import { parsePolicy, type EgressPolicy, type PolicyScope } from './policy/resources.js';
import { interfaceByName, interfaceForIp } from './net/host-interface.js';
import { TcxHeadGuard, describeBackoff } from './datapath/head-guard.js';
import { ensureHeadGuardRecords, type HeadGuardRecords } from './datapath/head-guard-map.js';
import { tcxUnavailable } from './datapath/attach.js';
import { FEATURES, datapathFeatures, featureState, startupLines, type FeatureState } from './datapath/features.js';
import { podNotices, PodNoticeLedger } from './pods/feature-notices.js';
import { AgentMetrics } from './observability/metrics.js';
import { startHttp } from './observability/http.js';
import { RateLimitedLog, type Logger } from './observability/log.js';
import type { Config } from './config.js';

const BPF_FS_MAGIC = 0xcafe4a11;
const TICK_MS = 500;
/** how often the learned-records ring is drained (the kernel wakes us only when much waits) */
const RECORDS_DRAIN_MS = 100;
/** how often idle flows are reclaimed and the per-pod flow counts corrected */
const FLOW_SWEEP_MS = 5000;
/** how often names nothing refers to any more leave fqe_names */
const NAME_PRUNE_MS = 30_000;

/** The monotonic clock shared with the kernel (bpf_ktime_get_ns), in ms. */
export function monotonicMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

function realtimeNs(): bigint {
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));
}

export class AgentStartError extends Error {
  override name = 'AgentStartError';
}

function checkPinDir(pinDir: string): void {
  let magic: number;
  try {
    magic = statfsSync(dirname(pinDir)).type;
  } catch (err) {
    throw new AgentStartError(
      `--bpf-pin-dir ${pinDir}: ${dirname(pinDir)} is not accessible: ${(err as Error).message}`,
    );
  }
  if (magic !== BPF_FS_MAGIC) {
    throw new AgentStartError(
      `--bpf-pin-dir ${pinDir}: ${dirname(pinDir)} is not a BPF filesystem (mount it: mount -t bpf bpf ${dirname(pinDir)})`,
    );
  }
}

export class Agent {
  readonly dp: Datapath;
  readonly cache: FqdnCache;
  readonly reconciler: Reconciler;
  readonly endpoints: EndpointManager;
  readonly learner: DnsLearner;
  readonly metrics: AgentMetrics;
  /** the keyed name hash and the names behind the hashes (fqe_hash_key, fqe_names) */
  private readonly names: NameRegistry;
  private readonly byIdentity = new Map<number, EnforcedPod>();
  /** fqe_policy in step with the pods' rules */
  private readonly policyMap: PolicyMapSync;
  private readonly revokedFlows: RevokedFlows;
  /** resolvers, allowCIDRs, cluster domains, limits, config and heartbeat */
  private readonly staticMaps: StaticMaps;
  private readonly queryLedger: QueryLedger;
  private readonly kernelEntries: KernelEntries;
  private readonly kernelRecords: KernelRecords;
  /** records the ring could not take: which pods lost some, and their entries back */
  private readonly lostRecords: LostRecords;
  private lastFlowSweep = 0;
  private lastNamePrune = Date.now();
  private readonly flowSweeper: FlowSweeper;
  /** rejected DNS messages, names past the cap, failed map writes: what a pod causes must not flood the log */
  private readonly limitedLog: RateLimitedLog;
  private source: FileSource | KubernetesSource | undefined;
  private readonly announced = new Set<string>();
  private tap: PacketSocket | undefined;
  private events: RingBufferReader | undefined;
  private learned: RingBufferReader | undefined;
  private drainTimer: NodeJS.Timeout | undefined;
  private http: Server | undefined;
  private timer: NodeJS.Timeout | undefined;
  private snapshotApplied = false;
  /** the source's last pods with IPs, and (Kubernetes) every pod scheduled here: the CNI plugin's decisions */
  private lastPods: PodSpec[] | undefined;
  private scheduledPods: ScheduledPod[] | undefined;
  /** the policy resources in force (for metrics) */
  private policyList: EgressPolicy[] = [];
  /** errors of each policy resource already logged: origin -> text */
  private readonly reportedPolicyErrors = new Map<string, string>();
  private pendingLatencies: bigint[] = [];
  /** keeps our tcx links first in their chains (tcx only, --tcx-head-guard on) */
  private headGuard: TcxHeadGuard | undefined;
  private headGuardRecords: HeadGuardRecords | undefined;
  /** what this node's kernel and flags let the datapath run (datapath/features.ts) */
  readonly features: FeatureState[];
  private readonly notices = new PodNoticeLedger();

  private constructor(
    private readonly cfg: Config,
    private readonly log: Logger,
  ) {
    checkPinDir(cfg.bpfPinDir);
    this.dp = Datapath.load(cfg.bpfPinDir, undefined, {
      withoutInlineLearner: !cfg.inlineLearner,
      attachMode: cfg.attachMode,
    });
    this.features = datapathFeatures(
      this.dp,
      { mode: cfg.attachMode, tcxUnavailable: cfg.attachMode === 'legacy' ? null : tcxUnavailable() },
      cfg.tcxHeadGuard,
    );
    this.limitedLog = new RateLimitedLog(log);
    this.names = new NameRegistry(this.dp.maps, this.limitedLog);
    this.policyMap = new PolicyMapSync(this.dp.maps.policy, this.dp.maps.ruleOrigins, this.names);
    this.staticMaps = new StaticMaps(this.dp.maps, cfg, this.features, log);
    this.queryLedger = new QueryLedger(this.dp.maps, {
      inlineLearner: !this.dp.inlineLearnerUnavailable,
      queryWindowMs: cfg.queryWindowMs,
    });
    this.flowSweeper = new FlowSweeper({
      flows: this.dp.maps.conntrack,
      counts: this.dp.maps.ctCounts,
      inCounts: this.dp.maps.ctInCounts,
      tlsState: [this.dp.maps.tlsFlows, this.dp.maps.tlsBytes],
      nowNs: () => process.hrtime.bigint(),
      tcpIdleNs: DEFAULT_TCP_IDLE_NS,
      otherIdleNs: DEFAULT_OTHER_IDLE_NS,
    });
    this.cache = new FqdnCache({
      maxIpsPerName: cfg.maxIpsPerName,
      maxNamesPerPod: cfg.maxNamesPerPod,
      now: monotonicMs,
    });
    this.revokedFlows = new RevokedFlows({
      conntrack: this.dp.maps.conntrack,
      stillAllowed: (identity, ip) =>
        this.cache.view(identity, ip) !== undefined || cfg.allowCidrs.some((c) => cidrContains(c, parseIp(ip))),
    });
    this.reconciler = new Reconciler({
      cache: this.cache,
      allow: this.dp.maps.allow,
      identities: () => this.byIdentity.keys(),
      portsFor: (identity, name) => {
        const pod = this.byIdentity.get(identity);
        const r = pod ? rulesForName(pod.policy, name) : undefined;
        return r?.allowed ? toKernelPorts(r.ports) : null;
      },
      nameHash: (name) => this.names.recordedHash(name),
      nameOf: (hash) => this.names.known(hash),
      toKernelNs: (ms) => BigInt(Math.round(ms * 1e6)),
      kernelNowNs: () => process.hrtime.bigint(),
    });
    this.endpoints = new EndpointManager({
      dp: this.dp,
      lookup: { byName: interfaceByName, byIp: interfaceForIp },
      log,
      dnsFilter: cfg.dnsFilter,
      events: {
        onPolicy: (pod) => {
          this.byIdentity.set(pod.identity, pod);
          this.policyMap.sync(pod.identity, pod.policy);
          // a pod prepared for the CNI plugin (no interface yet) is announced once it is on its interface
          if (pod.ifindex > 0 && !this.announced.has(pod.key)) {
            this.announced.add(pod.key);
            this.podEvent(
              pod,
              'EnforcementStarted',
              `fqdn-egress ${pod.policy.mode === 'audit' ? 'audits' : 'enforces'} egress on ${pod.ifname}: ${pod.policy.rules.length} allowed name pattern(s)`,
              'Normal',
            );
          }
          // Names the rules no longer allow: out of the cache, their flows cut. Also for a pod restored
          // after a restart (no previous rules here, but the cache holds what the maps held).
          const revoked = this.cache.forgetNames(pod.identity, (name) => rulesForName(pod.policy, name).allowed);
          this.reconciler.markDirty(revoked);
          this.revokedFlows.note(revoked);
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
          this.policyMap.sync(pod.identity, undefined);
          this.cache.forgetIdentity(pod.identity);
          this.lostRecords.forget(pod.identity);
          this.reconciler.markAll();
          this.flush();
        },
        onPendingEnded: (_pod, seconds, decision) => this.metrics.podPending.observe({ decision }, seconds),
        onAnnotationIgnored: (pod, origins) => {
          const message = `the pod's fqdn-egress.io annotations are ignored: ${origins.join(', ')} select${origins.length === 1 ? 's' : ''} it and decide${origins.length === 1 ? 's' : ''} what it may reach`;
          this.log.warn({ pod: `${pod.namespace}/${pod.name}`, decidedBy: origins }, message);
          this.podEvent(pod, 'AnnotationIgnored', message, 'Warning');
        },
        onPolicyErrors: (pod, errors) => {
          for (const e of errors)
            this.log.warn({ pod: `${pod.namespace}/${pod.name}`, entry: e.entry, annotation: e.annotation }, e.message);
          this.metrics.policyErrors.inc({ namespace: pod.namespace, pod: pod.name }, errors.length);
          this.podEvent(
            pod,
            'InvalidAnnotation',
            `${errors.map((e) => e.message).join('; ')} (these entries allow nothing; the others apply)`,
            'Warning',
          );
        },
      },
    });
    this.learner = new DnsLearner({
      podByInterface: (ifindex) => this.endpoints.byInterface(ifindex),
      isTrustedResolver: (ip) => this.staticMaps.isTrustedResolver(ip),
      kernelSawQuery: (identity, proto, port, id, resolver) =>
        this.queryLedger.sawQuery(identity, proto, port, id, resolver),
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
      hashesTo: (name, hash) => this.names.hashesTo(name, hash),
      noteKernelEntry: (key, value, ip) => this.reconciler.noteKernelEntry(key, value, ip),
      rememberName: (hash, name) => this.names.remember(hash, name),
      keepMs: (ttlS) => Math.max(cfg.connectGraceMs, Math.min(cfg.maxTtlMs, Math.max(cfg.minTtlMs, ttlS * 1000))),
      nameRefused: (pod, name) => this.nameRefused(pod, name),
    });
    this.kernelEntries = new KernelEntries({
      names: this.names,
      cache: this.cache,
      reconciler: this.reconciler,
      pod: (identity) => this.byIdentity.get(identity),
      refused: () => this.metrics.kernelEntriesRefused.inc(),
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
        found: (key, value) => this.kernelEntries.import(key, value),
      }),
      budget: RECOVERY_CALLS_PER_TICK,
    });
    this.metrics = new AgentMetrics({
      podCounters: () =>
        [...this.byIdentity.values()].flatMap((pod) => {
          const c = this.dp.maps.counters.get(pod.identity);
          const unrecorded = this.dp.maps.queryRate.get(pod.identity)?.unrecorded ?? 0n;
          return c
            ? [
                {
                  namespace: pod.namespace,
                  pod: pod.name,
                  passed: c.passed,
                  dropped: c.dropped,
                  audited: c.audited,
                  reasons: c.reasons,
                  learnedInKernel: c.learned,
                  unwrittenInKernel: c.learnUnwritten,
                  answersLeftToAgent: c.learnSkipped,
                  queriesUnrecorded: unrecorded,
                },
              ]
            : [];
        }),
      maps: () => [
        { map: allowMap.name, entries: this.reconciler.entries, capacity: allowMap.shape.maxEntries },
        { map: endpointsMap.name, entries: this.byIdentity.size, capacity: endpointsMap.shape.maxEntries },
        { map: namesMap.name, entries: this.names.size, capacity: namesMap.shape.maxEntries },
      ],
      cacheEntries: () => this.cache.size,
      enforcedPods: () => this.byIdentity.size,
      socketDrops: () => this.tap?.stats().drops ?? 0,
      contestedInterfaces: () => this.headGuard?.contested() ?? 0,
      recoveryPending: () => this.lostRecords.pending,
      policies: () => this.policyStats(),
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
    this.staticMaps.writeAll(this.names.hashKey);
    for (const m of dp.migrated) {
      const detail = { map: m.map, entries: m.entries, from: m.from, to: m.to };
      if (m.action === 'kept') this.log.warn(detail, 'pinned map had another definition: upgraded, entries kept');
      else if (m.action === 'converted')
        this.log.warn(detail, 'pinned map had an older layout: upgraded, entries converted');
      else if (m.action === 'rebuilt')
        this.log.warn(
          { ...detail, how: rebuiltBecause(m.map) },
          'pinned map had an older layout: upgraded, entries rebuilt by the agent',
        );
      else this.log.error(detail, 'pinned map had another layout: upgraded, its entries could not be carried over');
    }
    for (const line of startupLines(this.features)) this.log[line.level](line.fields, line.msg);
    this.metrics.setFeatures(this.features.map((f) => ({ ...f, states: FEATURES[f.feature] })));
    this.headGuard = this.makeHeadGuard();
    // (before the map is read: what restore() reads covers every record lost until now)
    if (!dp.inlineLearnerUnavailable) this.lostRecords.begin();
    const restored = this.restore();
    this.log.info({ pinDir: cfg.bpfPinDir, ...restored }, 'datapath loaded; state restored from the maps');

    if (cfg.metricsAddress)
      this.http = await startHttp(cfg.metricsAddress, this.metrics.registry, () => this.notReady());
    this.events = dp.openEvents((evs) => {
      for (const e of evs) {
        const pod = this.byIdentity.get(e.identity);
        this.metrics.events.inc({
          namespace: pod?.namespace ?? '',
          pod: pod?.name ?? '',
          kind: e.kind,
          reason: e.reason,
        });
        // (the refused name costs a map read: only when the line is logged)
        if (!this.log.isLevelEnabled('debug')) continue;
        this.log.debug(
          {
            pod: pod?.key,
            kind: e.kind,
            reason: e.reason,
            dst: e.daddr,
            dport: e.dport,
            proto: e.proto,
            ...(e.reason === 'dns-name' ? { query: refusedQueryOf(dp.maps.dnsRefused, e) } : {}),
            ...(e.reason === 'tls-server-name' ? { serverName: refusedServerNameOf(dp.maps.dnsRefused, e).name } : {}),
          },
          'packet refused',
        );
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
        onPolicies: (objects) => void this.applyPolicies(objects),
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
        policies: cfg.policies === 'on',
        onPods: (pods) => void this.applyPods(pods),
        onScheduled: (pods) => {
          this.scheduledPods = pods;
          if (this.lastPods) void this.applyPods(this.lastPods);
        },
        onPolicies: (objects) => void this.applyPolicies(objects),
        onResolvers: (ips) => this.staticMaps.discovered(ips),
        onError: (err) => {
          this.metrics.sourceErrors.inc({ source: 'kubernetes' });
          this.log.error({ err: err.message }, 'Kubernetes API: keeping the last known state');
        },
      });
      this.source = source;
      // Not awaited: while the API server is away the pins keep enforcing, and readiness waits.
      source
        .start()
        .catch((err: Error) => this.log.warn({ err: err.message }, 'Kubernetes source stopped before its first list'));
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

  private podEvent(
    pod: { namespace: string; name: string },
    reason: PodEventReason,
    message: string,
    type: 'Warning' | 'Normal',
  ): void {
    if (this.source instanceof KubernetesSource) void this.source.podEvent(pod, reason, message, type);
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

  /** Identities, rules, names and allow entries from the pinned maps. */
  private restore(): { identities: number; names: number; allowEntries: number; cacheEntries: number } {
    const identities = this.endpoints.restore();
    this.policyMap.restore();
    const names = this.names.restore();
    const allow = this.dp.maps.allow.entries();
    this.kernelEntries.restore(allow);
    return { identities, names, allowEntries: allow.length, cacheEntries: this.cache.size };
  }

  private async applyPods(pods: PodSpec[]): Promise<void> {
    this.lastPods = pods;
    await this.endpoints.apply(pods, this.scheduledPods);
    this.afterApply(true);
  }

  /** The policy resources changed: parsed (what cannot be read is logged once), then every pod is decided again. */
  private async applyPolicies(objects: PolicyObjects): Promise<void> {
    const policies: EgressPolicy[] = [];
    const read = (list: unknown[], scope: PolicyScope): void => {
      for (const o of list) {
        const p = parsePolicy(o, scope);
        if (p) policies.push(p);
        else this.log.warn({ scope }, 'a policy resource without a name is ignored');
      }
    };
    read(objects.namespaced, 'policy');
    read(objects.cluster, 'clusterpolicy');
    const seen = new Set<string>();
    for (const p of policies) {
      seen.add(p.origin);
      const text = p.errors.join('\n');
      if (text === (this.reportedPolicyErrors.get(p.origin) ?? '')) continue;
      if (text) for (const e of p.errors) this.log.warn({ policy: p.origin }, `${p.origin}: ${e}`);
      this.reportedPolicyErrors.set(p.origin, text);
    }
    for (const origin of [...this.reportedPolicyErrors.keys()])
      if (!seen.has(origin)) this.reportedPolicyErrors.delete(origin);
    this.policyList = policies;
    await this.endpoints.setPolicies({ policies, namespaces: objects.namespaces });
    this.afterApply(false);
  }

  /** Each policy resource in force, with this node's enforced pods it selects. */
  private policyStats(): Array<{ kind: string; policy: string; pods: number; errors: number }> {
    const pods = new Map<string, number>();
    for (const pod of this.byIdentity.values()) for (const o of pod.policy.origins) pods.set(o, (pods.get(o) ?? 0) + 1);
    return this.policyList.map((p) => ({
      kind: p.scope === 'policy' ? 'FQDNEgressPolicy' : 'ClusterFQDNEgressPolicy',
      policy: p.scope === 'policy' ? `${p.namespace}/${p.name}` : p.name,
      pods: pods.get(p.origin) ?? 0,
      errors: p.errors.length,
    }));
  }

  /** After pods were applied: what no enforced pod holds any more leaves the cache and the rules; then write. */
  private afterApply(pods: boolean): void {
    // policies before the first pod snapshot changed nothing yet (the endpoint manager waits for pods)
    if (!pods && !this.snapshotApplied) return;
    for (const identity of this.cache.identities())
      if (!this.byIdentity.has(identity)) this.cache.forgetIdentity(identity);
    for (const identity of this.policyMap.identities())
      if (!this.byIdentity.has(identity)) this.policyMap.sync(identity, undefined);
    this.reconciler.markAll();
    const first = !this.snapshotApplied;
    this.snapshotApplied = true;
    this.flush();
    // (after the flush: the revoked names' entries are gone, so their flows' next packets are refused)
    const cut = this.revokedFlows.cut();
    if (cut) {
      this.metrics.revokedFlowsCut.inc(cut);
      this.log.info({ flows: cut }, 'tracked flows to revoked names cut');
    }
    if (first) {
      this.headGuard?.start(() => this.endpoints.enforced);
      this.log.info(
        { enforced: this.byIdentity.size, waiting: this.endpoints.pending.size },
        'first pod snapshot applied; ready',
      );
    }
  }

  private learn(a: LearnedAnswer): void {
    if (!this.cache.admits(a.pod.identity, a.name)) return this.nameRefused(a.pod, a.name);
    this.names.recordedHash(a.name);
    this.reconciler.markDirty(this.cache.learn(a.pod.identity, a.name, a.answers, 'agent'));
    this.pendingLatencies.push(a.capturedNs);
  }

  /** A new name past --max-names-per-pod: not cached, so not allowed; counted, logged (rate-limited). */
  private nameRefused(pod: EnforcedPod, name: string): void {
    this.metrics.namesOverCap.inc({ namespace: pod.namespace, pod: pod.name });
    this.limitedLog.warn(
      'names-over-cap',
      { pod: pod.key, name, maxNamesPerPod: this.cfg.maxNamesPerPod },
      'pod has --max-names-per-pod names: a new name is refused until one expires',
    );
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
        this.limitedLog.warn(
          'allow-write-failed',
          { failed: r.failed, retrying: r.retrying, err: r.error },
          'writing the allow map failed: the entries are retried every second',
        );
      }
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'writing the allow map failed; will retry');
      this.reconciler.markAll();
      return;
    }
    const done = realtimeNs();
    this.metrics.reconcileDuration.observe(Number(process.hrtime.bigint() - started) / 1e9);
    for (const captured of this.pendingLatencies)
      this.metrics.captureToMap.observe(Math.max(0, Number(done - captured)) / 1e9);
    this.pendingLatencies = [];
  }

  private tick(): void {
    this.staticMaps.heartbeat();
    if (!this.dp.inlineLearnerUnavailable) this.recoverLostRecords();
    if (Date.now() - this.lastNamePrune >= NAME_PRUNE_MS) {
      this.lastNamePrune = Date.now();
      this.pruneNames();
    }
    if (Date.now() - this.lastFlowSweep >= FLOW_SWEEP_MS) {
      this.lastFlowSweep = Date.now();
      const r = this.flowSweeper.sweep();
      this.metrics.flowsReclaimed.inc(r.reclaimed);
      writePodShares(this.dp.maps, this.reconciler.entriesByIdentity());
    }
    this.reconciler.markDirty(this.cache.expire());
    this.learner.sweep();
    this.flush();
    if (this.endpoints.needsRetry()) void this.endpoints.retryWaiting().then(() => this.flush());
  }

  /** Records the ring could not take: read back the entries of the pods that lost some, a bounded slice a tick. */
  private recoverLostRecords(): void {
    const r = this.lostRecords.tick();
    if (r.lost === 0n) return;
    this.metrics.kernelRecordsLost.inc(Number(r.lost));
    this.limitedLog.warn(
      'records-lost',
      { lost: Number(r.lost), pods: r.affected.length, pending: r.pending },
      'the learned-records ring was full: reading back the allow entries of the pods that lost records',
    );
  }

  /** Names no allow entry (as the reconciler knows them), rule or cached answer refers to leave fqe_names and the agent. */
  pruneNames(): number {
    const referenced = new Set<bigint>(this.reconciler.nameHashes());
    for (const hash of this.policyMap.hashes()) referenced.add(hash);
    for (const identity of this.cache.identities()) {
      for (const name of this.cache.namesOf(identity).keys()) referenced.add(this.names.hash(name));
    }
    const gone = this.names.prune(referenced);
    this.metrics.namesPruned.inc(gone);
    return gone;
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
      this.staticMaps.stopped();
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
