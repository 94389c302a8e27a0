/*
 * The kernel's proof that a pod asked, for an answer the agent learns from
 * (consumed: one answer per query):
 * - with the inline learner: the learner's tap mark (fqe_tap_pass) for an
 *   answer it left to the agent, until its expiry;
 * - with the inline learner off: the enforcer's query record (fqe_queries)
 *   within --query-window, of the same protocol.
 */
import { parseIp } from '../net/addr.js';
import { IPPROTO } from '../datapath/codecs.js';
import type { DatapathMaps } from '../datapath/datapath.js';

export class QueryLedger {
  constructor(
    private readonly maps: Pick<DatapathMaps, 'tapPass' | 'queries'>,
    private readonly opts: { inlineLearner: boolean; queryWindowMs: number },
  ) {}

  /** Did the kernel see this query (and is it still good)? Yes consumes it. */
  sawQuery(identity: number, proto: 'udp' | 'tcp', port: number, id: number, resolver: string): boolean {
    const protoNum = proto === 'tcp' ? IPPROTO.tcp : IPPROTO.udp;
    const now = process.hrtime.bigint();
    if (this.opts.inlineLearner) {
      const key = { identity, podPort: port, dnsId: id, resolver: parseIp(resolver), proto: protoNum };
      const until = this.maps.tapPass.get(key);
      if (until === undefined || until <= now) return false;
      this.maps.tapPass.delete(key);
      return true;
    }
    const key = { identity, sport: port, dnsId: id, resolver: parseIp(resolver) };
    const q = this.maps.queries.get(key);
    if (q === undefined || q.proto !== protoNum || now - q.sentNs > BigInt(this.opts.queryWindowMs) * 1_000_000n)
      return false;
    this.maps.queries.delete(key);
    return true;
  }
}
