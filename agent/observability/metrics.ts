/*
 * The agent's Prometheus metrics (prom-client). Owns names, labels and help
 * texts; values are pushed by the agent or collected from the maps at
 * scrape time through the injected `collectors`.
 */
import { Registry, Counter, Gauge, Histogram, collectDefaultMetrics } from 'prom-client';

export interface PodCounters {
  namespace: string;
  pod: string;
  passed: bigint;
  dropped: bigint;
  audited: bigint;
  reasons: Record<string, bigint>;
  /** allow entries the inline learner wrote */
  learnedInKernel: bigint;
  /** addresses the kernel learner could not write: past the pod's share of the allow map, or the map full */
  unwrittenInKernel: bigint;
  /** DNS answers the inline learner did not learn, or learned only in part: the agent's */
  answersLeftToAgent: bigint;
  /** DNS queries passed without a record, past the per-pod recording rate */
  queriesUnrecorded: bigint;
}

export interface Collectors {
  podCounters(): PodCounters[];
  maps(): Array<{ map: string; entries: number; capacity: number }>;
  cacheEntries(): number;
  enforcedPods(): number;
  socketDrops(): number;
  /** interfaces where another tcx program runs before ours after the head guard's last pass */
  contestedInterfaces(): number;
  /** pods whose allow entries are still being read back after lost learned records */
  recoveryPending(): number;
  /** the policy resources in force: kind, name ("NS/NAME" or "NAME"), this node's pods they select, invalid entries */
  policies(): Array<{ kind: string; policy: string; pods: number; errors: number }>;
}

export class AgentMetrics {
  readonly registry = new Registry();
  readonly dnsMessages: Counter<'verdict'>;
  readonly policyErrors: Counter<'namespace' | 'pod'>;
  readonly events: Counter<'namespace' | 'pod' | 'kind' | 'reason'>;
  readonly sourceErrors: Counter<'source'>;
  readonly captureToMap: Histogram;
  readonly reconcileDuration: Histogram;
  readonly podPending: Histogram;
  readonly portOverflows: Counter;
  readonly allowWriteFailures: Counter;
  readonly allowWritesRetrying: Gauge;
  readonly kernelEntriesRefused: Counter;
  readonly flowsReclaimed: Counter;
  readonly namesPruned: Counter;
  readonly revokedFlowsCut: Counter;
  readonly kernelRecords: Counter<'outcome'>;
  readonly kernelRecordsLost: Counter;
  readonly namesOverCap: Counter<'namespace' | 'pod'>;
  readonly tcxHeadRetakes: Counter<'interface' | 'direction'>;
  readonly tcxHeadBackoffs: Counter<'interface'>;
  private readonly datapathFeature: Gauge<'feature' | 'state'>;

  constructor(collectors: Collectors) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'fqdn_egress_process_' });
    this.dnsMessages = new Counter({
      name: 'fqdn_egress_dns_messages_total',
      help: 'DNS answers the tap delivered (only what the kernel could not learn from), by verdict (accepted, rejected-<reason>, duplicate)',
      labelNames: ['verdict'],
      registers,
    });
    this.policyErrors = new Counter({
      name: 'fqdn_egress_policy_errors_total',
      help: 'Invalid annotation entries, by pod',
      labelNames: ['namespace', 'pod'],
      registers,
    });
    this.events = new Counter({
      name: 'fqdn_egress_events_total',
      help: 'Drop and audit events read from the ring buffer (rate-limited in the kernel; see fqdn_egress_pod_packets_total for exact counts)',
      labelNames: ['namespace', 'pod', 'kind', 'reason'],
      registers,
    });
    this.revokedFlowsCut = new Counter({
      name: 'fqdn_egress_revoked_flows_cut_total',
      help: 'Tracked flows cut because a rule change revoked the name their address was answered for (annotation edit, policy change)',
      registers,
    });
    this.sourceErrors = new Counter({
      name: 'fqdn_egress_source_errors_total',
      help: 'Pod source errors (the last good state is kept)',
      labelNames: ['source'],
      registers,
    });
    this.captureToMap = new Histogram({
      name: 'fqdn_egress_capture_to_map_seconds',
      help: 'From the tap capturing a DNS answer to its IPs written in the allow map',
      buckets: [
        0.000025, 0.00005, 0.000075, 0.0001, 0.00015, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.002, 0.005, 0.01, 0.05,
        0.1, 0.5,
      ],
      registers,
    });
    this.reconcileDuration = new Histogram({
      name: 'fqdn_egress_reconcile_duration_seconds',
      help: 'Time to apply cache and policy changes to the allow map',
      buckets: [0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1],
      registers,
    });
    this.podPending = new Histogram({
      name: 'fqdn_egress_pod_pending_seconds',
      help: 'How long new pods waited as pending (the CNI plugin found no decision: the agent was down or behind) until the agent decided, by decision (enforce, audit, not-enforced)',
      labelNames: ['decision'],
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600],
      registers,
    });
    this.kernelEntriesRefused = new Counter({
      name: 'fqdn_egress_kernel_entries_refused_total',
      help: 'Kernel-learned allow entries not imported: their name is unknown, does not hash to the entry, or the pod may not reach it',
      registers,
    });
    this.flowsReclaimed = new Counter({
      name: 'fqdn_egress_flows_reclaimed_total',
      help: 'Tracked flows removed by the sweep after going idle (or closed)',
      registers,
    });
    this.namesPruned = new Counter({
      name: 'fqdn_egress_names_pruned_total',
      help: 'Names removed from fqe_names once no allow entry, rule or cached answer referred to them',
      registers,
    });
    this.kernelRecords = new Counter({
      name: 'fqdn_egress_kernel_records_total',
      help: 'Learned records from the inline learner, by outcome (accepted; refused: no such pod now, or a name that does not check out; over-name-cap: a new name past --max-names-per-pod; malformed)',
      labelNames: ['outcome'],
      registers,
    });
    this.kernelRecordsLost = new Counter({
      name: 'fqdn_egress_kernel_records_lost_total',
      help: 'Learned records the kernel could not queue (ring full); the agent then reads back the allow entries of the pods that lost records',
      registers,
    });
    new Gauge({
      name: 'fqdn_egress_kernel_records_recovery_pending',
      help: 'Pods whose allow entries the agent is still reading back after lost learned records (2,048 map calls per 500 ms tick)',
      registers,
      collect() {
        this.set(collectors.recoveryPending());
      },
    });
    this.namesOverCap = new Counter({
      name: 'fqdn_egress_names_over_cap_total',
      help: "Answers (tapped or learned records) for a new name of a pod that already had --max-names-per-pod names: not cached, so not allowed (the kernel's entries for it are taken out)",
      labelNames: ['namespace', 'pod'],
      registers,
    });
    this.datapathFeature = new Gauge({
      name: 'fqdn_egress_datapath_feature',
      help: 'The datapath\'s feature states on this node: 1 for the state each feature is in, 0 for its other states (features and states: docs/architecture.md, "Datapath features")',
      labelNames: ['feature', 'state'],
      registers,
    });
    this.tcxHeadRetakes = new Counter({
      name: 'fqdn_egress_tcx_head_retakes_total',
      help: "Times the head guard put our tcx link back at the head of a pod interface's chain after another program went before it (direction: ingress = enforcer, egress = DNS learner)",
      labelNames: ['interface', 'direction'],
      registers,
    });
    this.tcxHeadBackoffs = new Counter({
      name: 'fqdn_egress_tcx_head_backoffs_total',
      help: "Times the head guard stopped taking an interface's chain back for a while: another program kept going before ours",
      labelNames: ['interface'],
      registers,
    });
    new Gauge({
      name: 'fqdn_egress_tcx_interfaces_contested',
      help: 'Enforced interfaces where another tcx program runs before ours (the head guard backing off, or the kernel refusing our new link); a pass from it skips our programs',
      registers,
      collect() {
        this.set(collectors.contestedInterfaces());
      },
    });
    this.allowWriteFailures = new Counter({
      name: 'fqdn_egress_allow_write_failures_total',
      help: 'Writes and deletes of fqe_allow entries that failed (ENOSPC: the map is full); each is retried every second until it goes through',
      registers,
    });
    this.allowWritesRetrying = new Gauge({
      name: 'fqdn_egress_allow_writes_retrying',
      help: 'fqe_allow entries whose last write or delete failed and that wait for a retry (the allow map lacks them, or still holds them)',
      registers,
    });
    this.portOverflows = new Counter({
      name: 'fqdn_egress_port_rule_overflows_total',
      help: 'Allow entries whose merged port rules did not fit (extra rules dropped: fail closed)',
      registers,
    });
    new Gauge({
      name: 'fqdn_egress_pod_packets_total',
      help: 'Packets of enforced pods by verdict and reason, from the kernel counters',
      labelNames: ['namespace', 'pod', 'verdict', 'reason'],
      registers,
      collect() {
        this.reset();
        for (const c of collectors.podCounters()) {
          this.set({ namespace: c.namespace, pod: c.pod, verdict: 'passed', reason: '' }, Number(c.passed));
          this.set({ namespace: c.namespace, pod: c.pod, verdict: 'audited', reason: '' }, Number(c.audited));
          for (const [reason, n] of Object.entries(c.reasons)) {
            if (reason !== 'none' && n > 0n)
              this.set({ namespace: c.namespace, pod: c.pod, verdict: 'refused', reason }, Number(n));
          }
        }
      },
    });
    new Gauge({
      name: 'fqdn_egress_pod_kernel_learner_total',
      help: 'The inline learner per pod, from the kernel counters: entries learned, DNS answers left to the agent (a TCP message split over segments, more addresses than the kernel bound, an encoding it refuses; a first connection to an address only the agent learns may lose its first SYN), and queries passed unrecorded past the per-pod rate (their answers teach nothing)',
      labelNames: ['namespace', 'pod', 'outcome'],
      registers,
      collect() {
        this.reset();
        for (const c of collectors.podCounters()) {
          this.set({ namespace: c.namespace, pod: c.pod, outcome: 'entries-learned' }, Number(c.learnedInKernel));
          this.set({ namespace: c.namespace, pod: c.pod, outcome: 'entries-unwritten' }, Number(c.unwrittenInKernel));
          this.set(
            { namespace: c.namespace, pod: c.pod, outcome: 'answers-left-to-agent' },
            Number(c.answersLeftToAgent),
          );
          this.set({ namespace: c.namespace, pod: c.pod, outcome: 'queries-unrecorded' }, Number(c.queriesUnrecorded));
        }
      },
    });
    new Gauge({
      name: 'fqdn_egress_map_entries',
      help: 'Entries in each kernel map',
      labelNames: ['map'],
      registers,
      collect() {
        for (const m of collectors.maps()) this.set({ map: m.map }, m.entries);
      },
    });
    new Gauge({
      name: 'fqdn_egress_map_fill_ratio',
      help: 'Entries in each kernel map over its capacity',
      labelNames: ['map'],
      registers,
      collect() {
        for (const m of collectors.maps()) this.set({ map: m.map }, m.entries / m.capacity);
      },
    });
    new Gauge({
      name: 'fqdn_egress_cache_entries',
      help: '(pod, name, IP) entries in the FQDN cache',
      registers,
      collect() {
        this.set(collectors.cacheEntries());
      },
    });
    new Gauge({
      name: 'fqdn_egress_enforced_pods',
      help: 'Pods enforced on this node',
      registers,
      collect() {
        this.set(collectors.enforcedPods());
      },
    });
    new Gauge({
      name: 'fqdn_egress_policies',
      help: 'Policy resources in force, by kind (FQDNEgressPolicy, ClusterFQDNEgressPolicy)',
      labelNames: ['kind'],
      registers,
      collect() {
        this.reset();
        const counts = new Map<string, number>([
          ['FQDNEgressPolicy', 0],
          ['ClusterFQDNEgressPolicy', 0],
        ]);
        for (const p of collectors.policies()) counts.set(p.kind, (counts.get(p.kind) ?? 0) + 1);
        for (const [kind, n] of counts) this.set({ kind }, n);
      },
    });
    new Gauge({
      name: 'fqdn_egress_policy_selected_pods',
      help: 'Pods on this node a policy resource selects (enforced by it), by kind and policy',
      labelNames: ['kind', 'policy'],
      registers,
      collect() {
        this.reset();
        for (const p of collectors.policies()) this.set({ kind: p.kind, policy: p.policy }, p.pods);
      },
    });
    new Gauge({
      name: 'fqdn_egress_policy_invalid_entries',
      help: 'Parts of a policy resource the agent could not read (they allow nothing; see the agent log), by kind and policy',
      labelNames: ['kind', 'policy'],
      registers,
      collect() {
        this.reset();
        for (const p of collectors.policies()) this.set({ kind: p.kind, policy: p.policy }, p.errors);
      },
    });
    new Gauge({
      name: 'fqdn_egress_socket_drops_total',
      help: 'Packets the DNS tap socket dropped (receive buffer full)',
      registers,
      collect() {
        this.set(collectors.socketDrops());
      },
    });
  }

  /** Every state of every feature: 1 for the current one, 0 for the others (a stable set of series). */
  setFeatures(features: Array<{ feature: string; state: string; states: readonly string[] }>): void {
    for (const f of features) {
      for (const s of f.states) this.datapathFeature.set({ feature: f.feature, state: s }, s === f.state ? 1 : 0);
    }
  }
}
