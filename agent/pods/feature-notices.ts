/*
 * Which pods a datapath feature missing on this node hurts, in words for a
 * Kubernetes Event on the pod: without the TLS server name check a pod's
 * tls destinations are refused, without the DNS query filter every query of
 * a pod whose filter is on is refused (the kernel fails closed). Each
 * notice is given once per pod (PodNoticeLedger), not on every sync. Pure.
 */
import { featureState, type FeatureState } from '../datapath/features.js';
import { patternToString } from '../policy/pattern.js';
import type { PodPolicy } from '../policy/annotation.js';

export type PodNoticeReason = 'TlsCheckUnavailable' | 'DnsQueryFilterUnavailable';

export interface PodNotice {
  reason: PodNoticeReason;
  message: string;
}

/** What a missing feature does to this pod, in words for an Event on it (empty: nothing). */
export function podNotices(features: FeatureState[], pod: { policy: PodPolicy; dnsFilter: 'on' | 'off' }): PodNotice[] {
  const notices: PodNotice[] = [];
  const audit = pod.policy.mode === 'audit' ? ' (audit mode: reported, not refused)' : '';
  const why = (f: FeatureState) => (f.reason ? ` (${f.reason})` : '');
  const tls = featureState(features, 'tls-check');
  const tlsRules = pod.policy.rules.flatMap((r) =>
    r.ports.filter((p) => p.proto === 'tls').map((p) => `${patternToString(r.pattern)}:${p.port}/tls`),
  );
  if (tls?.state === 'off' && tlsRules.length > 0) {
    notices.push({
      reason: 'TlsCheckUnavailable',
      message: `the kernel of this node runs the enforcer without the TLS server name check${why(tls)}: this pod's tls destinations (${tlsRules.join(', ')}) are refused on this node${audit}`,
    });
  }
  const dns = featureState(features, 'dns-query-filter');
  if (dns?.state === 'off' && pod.dnsFilter === 'on') {
    notices.push({
      reason: 'DnsQueryFilterUnavailable',
      message: `the kernel of this node runs the enforcer without the DNS query filter${why(dns)}: every DNS query of this pod is refused on this node${audit}; fqdn-egress.io/dns-filter: "off" lets its queries through unfiltered`,
    });
  }
  return notices;
}

/** Which notices each pod has had: each is given once per pod, not on every sync. */
export class PodNoticeLedger {
  private readonly given = new Map<string, Set<PodNoticeReason>>();

  /** The notices not given to this pod yet (and now counted as given). */
  due(podKey: string, notices: PodNotice[]): PodNotice[] {
    const given = this.given.get(podKey) ?? new Set<PodNoticeReason>();
    const fresh = notices.filter((n) => !given.has(n.reason));
    for (const n of fresh) given.add(n.reason);
    if (given.size > 0) this.given.set(podKey, given);
    return fresh;
  }

  /** The pod is gone: a pod of that name later is told again. */
  forget(podKey: string): void {
    this.given.delete(podKey);
  }
}
