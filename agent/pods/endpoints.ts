/*
 * The endpoint manager: turns a source's snapshot of pods into enforced
 * endpoints in the kernel. What a pod may reach comes from the policy
 * resources that select it, or else its annotation (policy/resources.ts
 * decides; setPolicies gives the current resources and namespace labels).
 * For each enforced pod it finds the host-side
 * interface, keeps a stable identity (restored from the pinned maps after a
 * restart), writes address ownership and the endpoint entry, and attaches
 * our programs (how: datapath/attach.ts; the choice is logged once per
 * interface, and again when it changes). A pod that goes away (or loses its
 * annotation) is purged completely, before any new pod is set up, so a
 * reused IP inherits nothing: purging scans every map for the identity (not
 * what we remember writing), and an identity is never handed out while any
 * map still holds it.
 * It owns no DNS or allow-map logic: callbacks tell the agent what changed.
 *
 * Pod start (the CNI plugin, docs/cni.md): every pod the source knows on
 * this node, with or without an IP yet, gets a decision (decisions.ts). A
 * pod to enforce is prepared before that decision is published: its
 * identity allocated and its policy written (fqe_pods with ifindex 0), so
 * the plugin only adds its interface. Once the plugin (or the source) names
 * the interface, the pod is set up as any other, under the same identity.
 * A pending claim of the plugin (a pod it found no decision for) is adopted
 * (its identity kept) or purged, and answered with the real decision. The
 * agent allocates identities below PENDING_IDENTITY_BASE only; the plugin's
 * are above.
 */
import { parseIp, formatIp } from '../net/addr.js';
import { EndpointFlag, MAX_PORT_RULES, PENDING_FLAG, PENDING_IDENTITY_BASE, type PodInfo } from '../datapath/codecs.js';
import { OriginFlag, originsText } from '../datapath/maps/index.js';
import type { Datapath } from '../datapath/datapath.js';
import { describeAttach, type AttachResult } from '../datapath/attach.js';
import type { PodPolicy, PolicyError } from '../policy/annotation.js';
import { namespaceLabelsOf, policiesSelecting, resolvePodPolicy, type EgressPolicy } from '../policy/resources.js';
import { dnsFilterFor, type DnsFilterMode } from '../policy/dns-query-filter.js';
import { podKey, type PodSpec } from '../sources/pod.js';
import type { HostInterface, Lookup } from '../net/host-interface.js';
import type { Logger } from '../observability/log.js';
import { PodDecisions, verdictFlags, type PodVerdict } from './decisions.js';

export interface EnforcedPod {
  key: string;
  namespace: string;
  name: string;
  identity: number;
  ifindex: number;
  ifname: string;
  ips: string[];
  policy: PodPolicy;
  /** the DNS query filter for this pod (annotation, or the agent's default) */
  dnsFilter: 'on' | 'off';
}

export interface EndpointEvents {
  /** a pod's policy (or the pod) is new or changed */
  onPolicy(pod: EnforcedPod, previous: PodPolicy | undefined): void;
  /** a pod was purged from the kernel */
  onRemoved(pod: EnforcedPod): void;
  /** invalid annotation entries of a pod (reported once per distinct text) */
  onPolicyErrors(pod: { namespace: string; name: string }, errors: PolicyError[]): void;
  /** a pod the CNI plugin held as pending got its decision after `seconds` */
  onPendingEnded?(pod: { namespace: string; name: string }, seconds: number, decision: string): void;
  /** policies select a pod that carries fqdn-egress.io annotations: they are ignored (once per distinct set) */
  onAnnotationIgnored(pod: { namespace: string; name: string }, origins: string[]): void;
}

/** The policy resources in force and the namespaces' labels (for cluster policies' namespaceSelector). */
export interface PolicyState {
  policies: EgressPolicy[];
  /** namespace name -> labels */
  namespaces: Record<string, Record<string, string>>;
}

/** A pod scheduled to this node, as far as the source knows it (maybe without an IP yet). */
export type ScheduledPod = Pick<PodSpec, 'namespace' | 'name' | 'annotations' | 'labels'>;

export interface EndpointManagerOptions {
  dp: Pick<Datapath, 'attach' | 'detach' | 'maps'>;
  lookup: { byName(name: string): Promise<Lookup>; byIp(ip: string): Promise<Lookup> };
  events: EndpointEvents;
  log: Logger;
  /** the DNS query filter for pods without a fqdn-egress.io/dns-filter annotation (default on) */
  dnsFilter?: DnsFilterMode;
  /** CLOCK_MONOTONIC ns (default process.hrtime) */
  nowNs?: () => bigint;
}

function claimSet(claims: Map<string, unknown>): string {
  return [...claims.keys()].sort().join('\n');
}

function sameList(a: string[], b: string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

export class EndpointManager {
  private readonly pods = new Map<string, EnforcedPod>();
  private readonly byIfindex = new Map<number, EnforcedPod>();
  /** pods the source wants but whose interface is not there yet: key -> why */
  private readonly waiting = new Map<string, string>();
  /** identities found in the maps at start-up, by pod key */
  private readonly restored = new Map<string, { identity: number; ifindex: number }>();
  /** identities some map holds at start-up that no pod owns (purged on the first snapshot) */
  private readonly orphans = new Set<number>();
  private readonly reportedErrors = new Map<string, string>();
  /** invalid dns-filter annotations already logged, by pod key */
  private readonly reportedDnsFilter = new Map<string, string>();
  /** what was last logged about each interface's attachment */
  private readonly reportedAttach = new Map<number, string>();
  /** pods told that their annotation is ignored: key -> the origins that decide instead */
  private readonly reportedIgnored = new Map<string, string>();
  /** warnings of a pod's merged policies already logged, by pod key */
  private readonly reportedWarnings = new Map<string, string>();
  private nextIdentity = 1;
  private lastSnapshot: PodSpec[] = [];
  private lastScheduled: ScheduledPod[] | undefined;
  /** no snapshot yet: a policy change must not apply the empty one (it would purge restored pods) */
  private haveSnapshot = false;
  private policyState: PolicyState = { policies: [], namespaces: {} };
  private applying: Promise<void> = Promise.resolve();
  readonly decisions: PodDecisions;
  /** the pending claims the last apply left (pods the source does not know yet) */
  private claimsSeen = '';

  constructor(private readonly opts: EndpointManagerOptions) {
    this.decisions = new PodDecisions({
      map: opts.dp.maps.podDecisions,
      nowNs: opts.nowNs ?? (() => process.hrtime.bigint()),
      onPendingEnded: (pod, seconds, decision) => {
        this.opts.log.info({ pod: podKey(pod), waitedSeconds: seconds, decision }, 'pending pod decided');
        this.opts.events.onPendingEnded?.(pod, seconds, decision);
      },
    });
  }

  /** Read identities back from the pinned maps (after a restart). */
  restore(): number {
    const owned = new Set<number>();
    const decided = new Set(this.decisions.identities());
    for (const [identity, info] of this.opts.dp.maps.pods.entries()) {
      // the plugin's pending claims are adopted through their decision, not restored (one without: an orphan)
      if (info.flags & PENDING_FLAG) {
        if (decided.has(identity)) owned.add(identity);
        continue;
      }
      owned.add(identity);
      this.restored.set(podKey(info), { identity, ifindex: info.ifindex });
    }
    for (const identity of this.identitiesInMaps()) {
      if (identity < PENDING_IDENTITY_BASE) this.nextIdentity = Math.max(this.nextIdentity, identity + 1);
      if (!owned.has(identity)) this.orphans.add(identity);
    }
    return this.restored.size;
  }

  /** The decision from the pod's policy (policyFor): enforced and mode from it, the DNS filter as upsert sets it. */
  private verdictOf(spec: PodSpec, policy: PodPolicy): PodVerdict {
    return { enforced: policy.enforced, mode: policy.mode, dnsFilter: this.dnsFilterOf(podKey(spec), spec, policy) };
  }

  /** Every identity any map holds an entry for. */
  private identitiesInMaps(): Set<number> {
    const { maps } = this.opts.dp;
    const ids = new Set<number>();
    for (const [identity] of maps.pods.entries()) ids.add(identity);
    for (const [, ep] of maps.endpoints.entries()) ids.add(ep.identity);
    for (const [identity] of maps.counters.entries()) ids.add(identity);
    for (const [identity] of maps.ctCounts.entries()) ids.add(identity);
    for (const [identity] of maps.ctInCounts.entries()) ids.add(identity);
    for (const [identity] of maps.queryRate.entries()) ids.add(identity);
    for (const map of [
      maps.owners,
      maps.allow,
      maps.policy,
      maps.queries,
      maps.conntrack,
      maps.tapPass,
      maps.tlsFlows,
    ] as const) {
      for (const [key] of (map as { entries(): Array<[{ identity: number }, unknown]> }).entries())
        ids.add(key.identity);
    }
    for (const key of maps.tlsBytes.keys()) ids.add(key.identity);
    for (const key of maps.dnsTcp.keys()) ids.add(key.identity);
    for (const [identity] of maps.podShares.entries()) ids.add(identity);
    for (const identity of this.decisions.identities()) ids.add(identity);
    for (const [identity] of maps.podOrigins.entries()) ids.add(identity);
    for (const [key] of maps.ruleOrigins.entries()) ids.add(key.identity);
    return ids;
  }

  /** Pods on their interface (not those prepared for the plugin, whose interface is not known yet). */
  get enforced(): EnforcedPod[] {
    return [...this.pods.values()].filter((p) => p.ifindex > 0);
  }

  /** Is there anything a retry may settle: an interface missing, or something the plugin wrote since? */
  needsRetry(): boolean {
    if (this.waiting.size > 0) return true;
    for (const pod of this.pods.values())
      if (pod.ifindex === 0 && (this.opts.dp.maps.pods.get(pod.identity)?.ifindex ?? 0) !== 0) return true;
    // claims left after the last apply are pods the source does not know yet: retried when the set changes
    return claimSet(this.decisions.pendingClaims()) !== this.claimsSeen;
  }

  get pending(): Map<string, string> {
    return this.waiting;
  }

  byInterface(ifindex: number): EnforcedPod | undefined {
    return this.byIfindex.get(ifindex);
  }

  /** The policy resources changed: the last snapshot is applied again under them. */
  setPolicies(state: PolicyState): Promise<void> {
    this.policyState = state;
    return this.haveSnapshot ? this.apply(this.lastSnapshot) : this.applying;
  }

  /** What the pod may reach: the policies that select it, or else its annotation. */
  private policyFor(spec: PodSpec): PodPolicy {
    const { policies, namespaces } = this.policyState;
    const selected = policiesSelecting(spec, namespaceLabelsOf(spec.namespace, namespaces[spec.namespace]), policies);
    const policy = resolvePodPolicy(spec.annotations, selected, { portRulesPerName: MAX_PORT_RULES });
    const key = podKey(spec);
    const warnings = policy.warnings.join('\n');
    if (warnings && this.reportedWarnings.get(key) !== warnings)
      for (const w of policy.warnings) this.opts.log.warn({ pod: key }, w);
    if (warnings) this.reportedWarnings.set(key, warnings);
    else this.reportedWarnings.delete(key);
    const ignored = policy.annotationIgnored ? policy.origins.join(', ') : '';
    if (ignored && this.reportedIgnored.get(key) !== ignored)
      this.opts.events.onAnnotationIgnored(spec, policy.origins);
    if (ignored) this.reportedIgnored.set(key, ignored);
    else this.reportedIgnored.delete(key);
    return policy;
  }

  /**
   * Apply a complete snapshot; calls are serialized. `scheduled`: every pod
   * on this node the source knows, IP or not (the Kubernetes source); when
   * not given, the pods of the last list given, or else of the snapshot.
   */
  apply(snapshot: PodSpec[], scheduled?: ScheduledPod[]): Promise<void> {
    this.lastSnapshot = snapshot;
    this.haveSnapshot = true;
    if (scheduled) this.lastScheduled = scheduled;
    const known = this.lastScheduled;
    this.applying = this.applying
      .then(() => this.applyNow(snapshot, known))
      .catch((err: Error) => {
        this.opts.log.error({ err }, 'applying the pod snapshot failed');
      });
    return this.applying;
  }

  /** Retry pods whose interface was missing (an interface created later). */
  retryWaiting(): Promise<void> {
    if (!this.needsRetry()) return this.applying;
    return this.apply(this.lastSnapshot);
  }

  private async applyNow(snapshot: PodSpec[], scheduled: ScheduledPod[] | undefined): Promise<void> {
    const known = new Map<string, PodSpec>();
    for (const spec of scheduled ?? []) known.set(podKey(spec), { ...spec, ips: [] });
    for (const spec of snapshot) known.set(podKey(spec), spec);
    const wanted = new Map<string, { spec: PodSpec; policy: PodPolicy; verdict: PodVerdict }>();
    const notEnforced: PodSpec[] = [];
    for (const [key, spec] of known) {
      const policy = this.policyFor(spec);
      this.reportErrors(spec, policy);
      const verdict = this.verdictOf(spec, policy);
      if (verdict.enforced) wanted.set(key, { spec, policy, verdict });
      else notEnforced.push(spec);
    }
    const claims = this.decisions.pendingClaims();
    // Purge first: a pod that is gone takes its entries with it before anything new lands.
    for (const pod of [...this.pods.values()]) if (!wanted.has(pod.key)) this.purge(pod);
    for (const [key, r] of [...this.restored]) {
      if (!wanted.has(key)) {
        this.purgeIdentity(r.identity, r.ifindex);
        this.restored.delete(key);
      }
    }
    const decided = new Set(this.decisions.identities());
    for (const identity of [...this.orphans]) {
      this.orphans.delete(identity);
      // a pending claim the plugin was making while we started: its decision is there now
      if (decided.has(identity)) continue;
      this.purgeIdentity(identity, undefined);
      this.opts.log.info({ identity }, 'entries of an identity no pod owns removed');
    }
    for (const key of [...this.waiting.keys()]) if (!wanted.has(key)) this.waiting.delete(key);
    await this.settleClaims(claims, known, notEnforced);
    for (const pod of this.decisions.staleDecisions(new Set(known.keys()))) this.decisions.remove(pod);
    const present = new Set(known.keys());
    for (const reported of [this.reportedIgnored, this.reportedWarnings])
      for (const key of [...reported.keys()]) if (!present.has(key)) reported.delete(key);

    for (const [key, { spec, policy, verdict }] of wanted) {
      const claim = claims.get(key);
      if (claim) {
        const old = this.pods.get(key);
        // the plugin's claim is the pod's sandbox now: it replaces an identity we prepared
        if (old && old.identity !== claim.decision.identity) this.purge(old);
        this.restored.delete(key);
        this.restored.set(key, {
          identity: claim.decision.identity,
          ifindex: this.opts.dp.maps.pods.get(claim.decision.identity)?.ifindex ?? 0,
        });
      }
      const identity = this.identityOf(key);
      let lookup: Lookup =
        spec.interface !== undefined
          ? await this.opts.lookup.byName(spec.interface)
          : spec.ips.length > 0
            ? await this.lookupByIps(spec.ips)
            : { missing: 'pod has no IP yet' };
      if ('missing' in lookup) {
        // the plugin may have named it (fqe_pods, written on ADD)
        const named = await this.interfaceThePluginNamed(identity);
        if (named) lookup = { found: named };
      }
      if ('missing' in lookup) {
        this.prepare(key, spec, policy, verdict, identity);
        if (spec.ips.length > 0 || spec.interface !== undefined) {
          if (this.waiting.get(key) !== lookup.missing)
            this.opts.log.warn({ pod: key, reason: lookup.missing }, 'pod interface not found; will retry');
          this.waiting.set(key, lookup.missing);
        }
      } else {
        this.waiting.delete(key);
        const ips = spec.ips.length > 0 ? spec.ips : this.ownedAddresses(identity);
        this.upsert({ ...spec, ips }, policy, lookup.found, verdict);
      }
      // after the identity's policy is in the maps: the plugin may use it from here on
      if (!this.decisions.publish(spec, identity, verdictFlags(verdict)))
        this.opts.log.info({ pod: key }, 'the CNI plugin claimed the pod a moment ago: adopting it next round');
    }
    for (const spec of notEnforced) this.decisions.publish(spec, 0, 0);
    this.claimsSeen = claimSet(this.decisions.pendingClaims());
  }

  /** The identity a wanted pod has or gets: kept, restored (or adopted from the plugin), or new. */
  private identityOf(key: string): number {
    const identity = this.pods.get(key)?.identity ?? this.restored.get(key)?.identity;
    if (identity !== undefined) return identity;
    if (this.nextIdentity >= PENDING_IDENTITY_BASE) throw new Error('identities below 0x80000000 are used up');
    const fresh = this.nextIdentity++;
    this.restored.set(key, { identity: fresh, ifindex: 0 });
    return fresh;
  }

  /** The interface the plugin wrote into fqe_pods for this identity, if it is still there. */
  private async interfaceThePluginNamed(identity: number): Promise<HostInterface | undefined> {
    const info = this.opts.dp.maps.pods.get(identity);
    if (!info || info.ifindex === 0 || info.ifname === '') return undefined;
    const l = await this.opts.lookup.byName(info.ifname);
    return 'found' in l && l.found.ifindex === info.ifindex ? l.found : undefined;
  }

  /**
   * A pod to enforce whose interface is not known yet: its identity and
   * policy in the maps (fqe_pods with ifindex 0), so the plugin finds them
   * on ADD. Nothing is attached and no endpoint written.
   */
  private prepare(key: string, spec: PodSpec, policy: PodPolicy, verdict: PodVerdict, identity: number): void {
    const old = this.pods.get(key);
    if (old && old.ifindex > 0) {
      // set up already (its IP gone from the source for a moment): keep it as it is
      if (old.policy !== policy) {
        const previous = old.policy;
        old.policy = policy;
        this.opts.events.onPolicy(old, previous);
      }
      return;
    }
    const flags = verdictFlags(verdict);
    const info = this.opts.dp.maps.pods.get(identity);
    if (!info || info.ifindex === 0)
      this.opts.dp.maps.pods.set(identity, {
        ifindex: 0,
        flags,
        ifname: '',
        namespace: spec.namespace,
        name: spec.name,
      });
    this.opts.dp.maps.podOrigins.set(identity, {
      flags: policy.annotationIgnored ? OriginFlag.annotationIgnored : 0,
      text: originsText(policy.origins),
    });
    this.restored.delete(key);
    const pod: EnforcedPod = {
      key,
      namespace: spec.namespace,
      name: spec.name,
      identity,
      ifindex: 0,
      ifname: '',
      ips: [],
      policy,
      dnsFilter: verdict.dnsFilter,
    };
    this.pods.set(key, pod);
    if (!old || old.policy !== policy) this.opts.events.onPolicy(pod, old?.policy);
    if (!old) this.opts.log.info({ pod: key, identity, mode: verdict.mode }, 'pod prepared for its start');
  }

  /**
   * The plugin's pending claims: a pod we decided not to enforce loses what
   * the plugin wrote; a pod we do not know (yet) keeps it while its
   * interface is there (the watch may be behind), and loses it when its
   * interface is gone. Claims of wanted pods are adopted by the caller.
   */
  private async settleClaims(
    claims: Map<string, { pod: { namespace: string; name: string }; decision: { identity: number } }>,
    known: Map<string, PodSpec>,
    notEnforced: PodSpec[],
  ): Promise<void> {
    const declined = new Set(notEnforced.map((s) => podKey(s)));
    for (const [key, { pod, decision }] of claims) {
      if (known.has(key) && !declined.has(key)) continue;
      if (!known.has(key) && (await this.interfaceThePluginNamed(decision.identity))) continue;
      const ifindex = this.opts.dp.maps.pods.get(decision.identity)?.ifindex;
      if (known.has(key)) this.decisions.publish(pod, 0, 0); // the answer first: it ends (and reports) the wait
      this.purgeIdentity(decision.identity, ifindex || undefined);
      if (!known.has(key)) this.decisions.remove(pod);
      this.opts.log.info(
        { pod: key, identity: decision.identity },
        known.has(key) ? 'pending pod is not enforced: what the CNI plugin wrote is removed' : 'pending pod gone',
      );
    }
  }

  private async lookupByIps(ips: string[]): Promise<Lookup> {
    let last: Lookup = { missing: 'pod has no IP' };
    for (const ip of ips) {
      last = await this.opts.lookup.byIp(ip);
      if ('found' in last) return last;
    }
    return last;
  }

  private reportErrors(spec: PodSpec, policy: PodPolicy): void {
    const key = podKey(spec);
    const text = policy.enforced ? policy.errors.map((e) => e.message).join('\n') : '';
    if (text === (this.reportedErrors.get(key) ?? '')) return;
    if (text === '') this.reportedErrors.delete(key);
    else {
      this.reportedErrors.set(key, text);
      this.opts.events.onPolicyErrors(spec, policy.errors);
    }
  }

  private upsert(spec: PodSpec, policy: PodPolicy, iface: HostInterface, verdict: PodVerdict): void {
    const key = podKey(spec);
    const { dp } = this.opts;
    const old = this.pods.get(key);
    const restored = this.restored.get(key);
    const identity = this.identityOf(key);
    this.restored.delete(key);
    const ips = [...new Set(spec.ips.map((ip) => formatIp(parseIp(ip))))].sort();
    const flags = verdictFlags(verdict);

    // An interface change (pod re-created with a new veth): leave the old one.
    const oldIfindex = old?.ifindex || restored?.ifindex;
    if (oldIfindex && oldIfindex !== iface.ifindex) {
      dp.maps.endpoints.delete(oldIfindex);
      this.detachQuietly(oldIfindex, key);
      if (old) this.byIfindex.delete(old.ifindex);
    }
    // A different pod on the same interface: purge it first.
    const other = this.byIfindex.get(iface.ifindex);
    if (other && other.key !== key) this.purge(other);

    const oldIps = old && old.ifindex > 0 ? old.ips : restored ? this.ownedAddresses(identity) : [];
    for (const ip of oldIps) if (!ips.includes(ip)) dp.maps.owners.delete({ identity, addr: parseIp(ip) });
    for (const ip of ips) dp.maps.owners.set({ identity, addr: parseIp(ip) }, 1);
    const info: PodInfo = {
      ifindex: iface.ifindex,
      flags,
      ifname: iface.ifname,
      namespace: spec.namespace,
      name: spec.name,
    };
    dp.maps.pods.set(identity, info);
    dp.maps.podOrigins.set(identity, {
      flags: policy.annotationIgnored ? OriginFlag.annotationIgnored : 0,
      text: originsText(policy.origins),
    });
    this.reportAttach(key, iface, dp.attach(iface.ifindex));

    const pod: EnforcedPod = {
      key,
      namespace: spec.namespace,
      name: spec.name,
      identity,
      ifindex: iface.ifindex,
      ifname: iface.ifname,
      ips,
      policy,
      dnsFilter: flags & EndpointFlag.dnsFilterOff ? 'off' : 'on',
    };
    this.pods.set(key, pod);
    this.byIfindex.set(iface.ifindex, pod);
    // The pod's names (fqe_policy) before its endpoint entry: a new pod's
    // first query must meet its policy, not an empty one (NXDOMAIN).
    if (!old || old.policy !== policy) this.opts.events.onPolicy(pod, old?.policy);
    // Last: the endpoint entry is what switches enforcement on.
    dp.maps.endpoints.set(iface.ifindex, { identity, flags });
    if (!old || old.ifindex === 0)
      this.opts.log.info(
        {
          pod: key,
          identity,
          interface: iface.ifname,
          mode: policy.mode,
          rules: policy.rules.length,
          decidedBy: policy.origins.join(', '),
          dnsFilter: flags & EndpointFlag.dnsFilterOff ? 'off' : 'on',
        },
        'enforcing pod',
      );
    else if (!sameList(old.ips, ips) || old.ifindex !== iface.ifindex)
      this.opts.log.info({ pod: key, identity, interface: iface.ifname, ips }, 'pod changed');
  }

  /** The DNS query filter: the policies', else the pod's annotation (problems logged once), else the agent's default. */
  private dnsFilterOf(key: string, spec: PodSpec, policy: PodPolicy): DnsFilterMode {
    if (policy.dnsFilter !== undefined) {
      this.reportedDnsFilter.delete(key);
      return policy.dnsFilter;
    }
    const { mode, problem } = dnsFilterFor(spec.annotations ?? {}, this.opts.dnsFilter ?? 'on');
    if (problem && this.reportedDnsFilter.get(key) !== problem) this.opts.log.warn({ pod: key }, problem);
    if (problem) this.reportedDnsFilter.set(key, problem);
    else this.reportedDnsFilter.delete(key);
    return mode;
  }

  private reportAttach(key: string, iface: HostInterface, result: AttachResult): void {
    const { level, msg, fields } = describeAttach(result);
    const summary = `${result.mode}|${result.fallbackReason ?? ''}|${result.warnings.join('|')}`;
    if (this.reportedAttach.get(iface.ifindex) === summary) return;
    this.reportedAttach.set(iface.ifindex, summary);
    this.opts.log[level]({ pod: key, interface: iface.ifname, ...fields }, msg);
  }

  private ownedAddresses(identity: number): string[] {
    return this.opts.dp.maps.owners
      .entries()
      .filter(([k]) => k.identity === identity)
      .map(([k]) => formatIp(k.addr));
  }

  private detachQuietly(ifindex: number, key: string): void {
    this.reportedAttach.delete(ifindex);
    try {
      this.opts.dp.detach(ifindex);
    } catch (err) {
      // The interface is usually gone with its pod; nothing left to detach.
      this.opts.log.debug({ pod: key, ifindex, err }, 'detach failed');
    }
  }

  /** Remove everything a pod had in the kernel. */
  private purge(pod: EnforcedPod): void {
    this.pods.delete(pod.key);
    if (this.byIfindex.get(pod.ifindex) === pod) this.byIfindex.delete(pod.ifindex);
    this.purgeIdentity(pod.identity, pod.ifindex);
    this.opts.log.info({ pod: pod.key, identity: pod.identity }, 'pod no longer enforced; entries removed');
    this.opts.events.onRemoved(pod);
  }

  /** Every entry keyed by this identity, in every map (scanned, not remembered). */
  private purgeIdentity(identity: number, ifindex: number | undefined): void {
    const { maps } = this.opts.dp;
    for (const [i, ep] of maps.endpoints.entries()) {
      if (ep.identity !== identity) continue;
      maps.endpoints.delete(i);
      if (i !== ifindex && !this.byIfindex.has(i)) this.detachQuietly(i, `identity ${identity}`);
    }
    if (ifindex) this.detachQuietly(ifindex, `identity ${identity}`);
    maps.owners.deleteMany(
      maps.owners
        .entries()
        .filter(([k]) => k.identity === identity)
        .map(([k]) => k),
    );
    maps.allow.deleteMany(
      maps.allow
        .entries()
        .filter(([k]) => k.identity === identity)
        .map(([k]) => k),
    );
    maps.conntrack.deleteMany(
      maps.conntrack
        .entries()
        .filter(([k]) => k.identity === identity)
        .map(([k]) => k),
    );
    maps.queries.deleteMany(
      maps.queries
        .entries()
        .filter(([k]) => k.identity === identity)
        .map(([k]) => k),
    );
    maps.tapPass.deleteMany(
      maps.tapPass
        .entries()
        .filter(([k]) => k.identity === identity)
        .map(([k]) => k),
    );
    maps.tlsFlows.deleteMany(
      maps.tlsFlows
        .entries()
        .filter(([k]) => k.identity === identity)
        .map(([k]) => k),
    );
    maps.tlsBytes.deleteMany(maps.tlsBytes.keys().filter((k) => k.identity === identity));
    maps.dnsTcp.deleteMany(maps.dnsTcp.keys().filter((k) => k.identity === identity));
    maps.podShares.delete(identity);
    maps.podOrigins.delete(identity);
    maps.ruleOrigins.deleteMany(
      maps.ruleOrigins
        .entries()
        .filter(([k]) => k.identity === identity)
        .map(([k]) => k),
    );
    maps.policy.deleteMany(
      maps.policy
        .entries()
        .filter(([k]) => k.identity === identity)
        .map(([k]) => k),
    );
    maps.counters.delete(identity);
    maps.ctCounts.delete(identity);
    maps.ctInCounts.delete(identity);
    maps.queryRate.delete(identity);
    maps.pods.delete(identity);
    for (const pod of this.decisions.byIdentity(identity)) this.decisions.remove(pod);
  }
}
