/*
 * The maps the agent writes from its flags and the cluster, not from pods:
 * - fqe_resolvers: the trusted resolvers (--dns-servers, or kube-dns
 *   discovery), each with its reverse-path flag (--resolver-path-check);
 * - fqe_cidrs: exactly --allow-cidrs (and a warning, once each, when a prefix
 *   opens a DNS server of the node that is not trusted);
 * - fqe_cluster_domains: --cluster-domain, keyed hash and real bytes;
 * - fqe_limits: the per-pod shares;
 * - fqe_config: the tunables and the agent's heartbeat (egressctl status
 *   reads it; a stopped agent writes heartbeat 0).
 */
import { readFileSync } from 'node:fs';
import { parseIp, formatIp } from '../net/addr.js';
import { ConfigFlag, ResolverFlag, ZERO_CONFIG, type Config as KernelConfig } from '../datapath/codecs.js';
import type { DatapathMaps } from '../datapath/datapath.js';
import { syncClusterDomains } from '../datapath/cluster-domains.js';
import { featureFlags, type FeatureState } from '../datapath/features.js';
import { clusterDomainEntries } from '../policy/dns-query-filter.js';
import { nameserversOf, openResolvers } from '../net/resolver-bypass.js';
import type { Logger } from '../observability/log.js';
import type { Config } from '../config.js';

/** the DNS servers the node knows of (checked against --allow-cidrs) */
const RESOLV_CONF = '/etc/resolv.conf';
const DEFAULT_EVENTS_PER_SEC = 200;

type Maps = Pick<DatapathMaps, 'resolvers' | 'cidrs' | 'clusterDomains' | 'limits' | 'config'>;

export class StaticMaps {
  /** trusted resolvers in force: --dns-servers, or what kube-dns discovery found */
  private resolvers: string[];
  private pathCheckNoted = false;
  /** "prefix resolver" pairs already warned about */
  private readonly openResolversWarned = new Set<string>();

  constructor(
    private readonly maps: Maps,
    private readonly cfg: Config,
    private readonly features: FeatureState[],
    private readonly log: Logger,
  ) {
    this.resolvers = cfg.dnsServers.map((s) => formatIp(parseIp(s)));
  }

  /** Every static map as the flags say (start-up). */
  writeAll(hashKey: bigint): void {
    this.heartbeat();
    this.maps.limits.set(0, { ipsPerPod: this.cfg.maxIpsPerPod, tlsFlowsPerPod: 0 });
    this.syncResolvers();
    this.syncCidrs();
    syncClusterDomains(this.maps.clusterDomains, clusterDomainEntries(this.cfg.clusterDomains, hashKey));
  }

  /** Is this address a trusted resolver now? */
  isTrustedResolver(ip: string): boolean {
    return this.resolvers.includes(ip);
  }

  /** kube-dns discovery: used unless --dns-servers overrides it. */
  discovered(ips: string[]): void {
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

  /** fqe_config as this agent wants it, with a fresh heartbeat. */
  heartbeat(): void {
    this.maps.config.set(0, this.configValue());
  }

  /** Heartbeat 0: egressctl shows the agent as down. */
  stopped(): void {
    this.maps.config.set(0, { ...this.configValue(), agentHeartbeatNs: 0n, agentPid: 0 });
  }

  private syncResolvers(): void {
    const want = new Set(this.resolvers);
    for (const [addr] of this.maps.resolvers.entries()) if (!want.has(formatIp(addr))) this.maps.resolvers.delete(addr);
    // The kube-dns Service address answers from wherever its pods run: no route leads back to it.
    const check =
      this.cfg.resolverPathCheck === 'on' || (this.cfg.resolverPathCheck === 'auto' && this.cfg.source === 'file');
    for (const ip of want)
      this.maps.resolvers.set(parseIp(ip), ResolverFlag.trusted | (check ? 0 : ResolverFlag.noPathCheck));
    if (!check && !this.pathCheckNoted) {
      this.pathCheckNoted = true;
      this.log.warn(
        { resolvers: [...want] },
        'answers of the trusted resolvers are not checked against the route back to them (--resolver-path-check auto with the kubernetes source, or off): a pod that forges their address can teach its neighbours; keep anti-spoofing in the CNI, or set it on when the resolvers are not Service addresses',
      );
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
      this.log.debug(
        { err: (err as Error).message },
        `${RESOLV_CONF} unreadable: DNS servers under --allow-cidrs not checked`,
      );
      return;
    }
    for (const o of openResolvers(this.cfg.allowCidrs, nameserversOf(conf), this.resolvers)) {
      const key = `${o.cidr} ${o.resolver}`;
      if (this.openResolversWarned.has(key)) continue;
      this.openResolversWarned.add(key);
      this.log.warn(
        { cidr: o.cidr, resolver: o.resolver, source: RESOLV_CONF },
        'an --allow-cidrs prefix covers a DNS server that is not a trusted resolver: enforced pods may send it any query (the DNS query filter judges only queries to the trusted resolvers), and its answers allow nothing',
      );
    }
  }

  /** fqe_cidrs holds exactly --allow-cidrs. */
  private syncCidrs(): void {
    const want = new Map(
      this.cfg.allowCidrs.map((c) => [
        `${c.family}/${c.addr.toString('hex')}/${c.prefixLen}`,
        { family: c.family, addr: c.addr, prefixLen: c.prefixLen },
      ]),
    );
    for (const [key] of this.maps.cidrs.entries()) {
      if (!want.has(`${key.family}/${key.addr.toString('hex')}/${key.prefixLen}`)) this.maps.cidrs.delete(key);
    }
    for (const key of want.values()) this.maps.cidrs.set(key, 1);
  }

  /** fqe_config as this agent wants it, with its heartbeat. */
  private configValue(): KernelConfig {
    return {
      ...ZERO_CONFIG,
      eventsPerSec: DEFAULT_EVENTS_PER_SEC,
      minTtlS: Math.ceil(this.cfg.minTtlMs / 1000),
      maxTtlS: Math.max(1, Math.floor(this.cfg.maxTtlMs / 1000)),
      flags: featureFlags(this.features) | (this.cfg.unknownPods === 'open' ? ConfigFlag.unknownPodsOpen : 0),
      agentHeartbeatNs: process.hrtime.bigint(),
      agentPid: process.pid,
      ctPerPod: this.cfg.flowsPerPod,
      queryWindowNs: BigInt(this.cfg.queryWindowMs) * 1_000_000n,
      connectGraceNs: BigInt(this.cfg.connectGraceMs) * 1_000_000n,
    };
  }
}
