/*
 * The userspace learner: turns what the DNS tap delivers into "pod P may
 * reach these IPs for name N until T". The tap carries only answers the
 * kernel could not learn from (a TCP message over several segments, a
 * compressed question, more addresses than a record holds) or, with the
 * inline learner off, every answer: nothing a pod sends reaches this parser.
 * An answer counts only when it comes from a trusted resolver, to the pod's
 * own address, for a query the kernel recorded that pod sending (transport,
 * port, id, resolver) within the query window (a query is good for one
 * answer: kernelSawQuery consumes it), for a name the pod is allowed;
 * everything else is rejected with a reason. An accepted address stays
 * allowed for at least the connect grace. It decodes and judges but writes
 * nothing itself: `learn` does (cache, maps). Clock injected.
 */
import { parseFrame, type CapturedPacket, type Segment } from '../dns/frame.js';
import { decodeDns, type DnsMessage } from '../dns/message.js';
import { TcpDnsReassembler } from '../dns/tcp-stream.js';
import { rulesForName } from '../policy/annotation.js';
import type { EnforcedPod } from '../pods/endpoints.js';

const PACKET_OUTGOING = 4;
const DNS_PORT = 53;
const DUPLICATE_WINDOW_MS = 2_000;

export type Verdict =
  | 'accepted'
  | 'ignored-not-enforced'
  | 'rejected-frame'
  | 'rejected-malformed'
  | 'rejected-untrusted-resolver'
  | 'rejected-wrong-destination'
  | 'rejected-unsolicited'
  | 'rejected-name-not-allowed'
  | 'duplicate';

export interface LearnedAnswer {
  pod: EnforcedPod;
  name: string;
  answers: Array<{ ip: string; ttlMs: number }>;
  /** when the tap saw the answer (CLOCK_REALTIME ns) */
  capturedNs: bigint;
}

export interface LearnerDeps {
  podByInterface(ifindex: number): EnforcedPod | undefined;
  isTrustedResolver(ip: string): boolean;
  /**
   * Did the kernel record this query (identity, transport, pod port, id,
   * resolver) within the query window? Consumes it: one answer per query.
   */
  kernelSawQuery(identity: number, proto: 'udp' | 'tcp', port: number, id: number, resolver: string): boolean;
  learn(answer: LearnedAnswer): void;
  verdict(v: Verdict, detail: { pod?: string; name?: string; reason?: string }): void;
  minTtlMs: number;
  maxTtlMs: number;
  /** the least an accepted address stays allowed, whatever its TTL */
  connectGraceMs: number;
  nowMs(): number;
}

export class DnsLearner {
  private readonly recent = new Map<string, number>();
  private readonly tcp: TcpDnsReassembler;

  constructor(private readonly deps: LearnerDeps) {
    // 70,000 bytes: one largest legal message (65,537 with its length) and change; 16 MiB for all flows together.
    this.tcp = new TcpDnsReassembler({
      maxFlows: 4096,
      maxBytesPerFlow: 70_000,
      maxTotalBytes: 16 << 20,
      idleMs: 30_000,
      now: deps.nowMs,
    });
  }

  handle(packets: CapturedPacket[]): void {
    for (const p of packets) this.handleOne(p);
  }

  private handleOne(p: CapturedPacket): void {
    const pod = this.deps.podByInterface(p.ifindex);
    if (!pod) return this.deps.verdict('ignored-not-enforced', {});
    const frame = parseFrame(p);
    if (!frame.ok)
      return this.deps.verdict('rejected-frame', { pod: pod.key, reason: `${frame.reason}: ${frame.detail}` });
    const seg = frame.segment;
    let messages: Buffer[];
    if (seg.proto === 'tcp') {
      const r = this.tcp.push(seg);
      if (r.dropped) this.deps.verdict('rejected-frame', { pod: pod.key, reason: `tcp: ${r.dropped}` });
      messages = r.messages;
    } else {
      messages = [seg.payload];
    }
    for (const payload of messages) {
      const dns = decodeDns(payload);
      if (!dns.ok) {
        this.deps.verdict('rejected-malformed', { pod: pod.key, reason: `${dns.reason}: ${dns.detail}` });
        continue;
      }
      if (seg.pktType === PACKET_OUTGOING && seg.sport === DNS_PORT && dns.message.isResponse)
        this.onAnswer(pod, seg, dns.message);
      else this.deps.verdict('rejected-malformed', { pod: pod.key, reason: 'not an answer on its way to the pod' });
    }
  }

  private onAnswer(pod: EnforcedPod, seg: Segment, msg: DnsMessage): void {
    const name = msg.question?.name;
    const detail = { pod: pod.key, ...(name !== undefined ? { name } : {}) };
    if (name === undefined)
      return this.deps.verdict('rejected-malformed', { ...detail, reason: 'answer without a question' });
    if (!this.deps.isTrustedResolver(seg.src))
      return this.deps.verdict('rejected-untrusted-resolver', { ...detail, reason: `from ${seg.src}` });
    if (!pod.ips.includes(seg.dst))
      return this.deps.verdict('rejected-wrong-destination', { ...detail, reason: `to ${seg.dst}` });

    if (!rulesForName(pod.policy, name).allowed) return this.deps.verdict('rejected-name-not-allowed', detail);
    const now = this.deps.nowMs();
    const dupKey = `${pod.identity}|${seg.proto}|${seg.dport}|${msg.id}|${seg.src}|${name}|${msg.question!.type}|${msg.answers.map((a) => a.ip).join(',')}`;
    const seen = this.recent.get(dupKey);
    if (seen !== undefined && now - seen < DUPLICATE_WINDOW_MS) return this.deps.verdict('duplicate', detail);
    if (!this.deps.kernelSawQuery(pod.identity, seg.proto, seg.dport, msg.id, seg.src)) {
      return this.deps.verdict('rejected-unsolicited', {
        ...detail,
        reason: `no query with id ${msg.id} from port ${seg.dport} within the query window`,
      });
    }
    this.recent.set(dupKey, now);

    const { minTtlMs, maxTtlMs, connectGraceMs } = this.deps;
    const answers = msg.answers.map((a) => ({
      ip: a.ip,
      ttlMs: Math.max(connectGraceMs, Math.min(maxTtlMs, Math.max(minTtlMs, a.ttl * 1000))),
    }));
    this.deps.learn({ pod, name, answers, capturedNs: seg.tsNs });
    this.deps.verdict('accepted', detail);
  }

  /** Forget idle TCP flows and the duplicate window. */
  sweep(): void {
    const now = this.deps.nowMs();
    for (const [k, at] of this.recent) if (now - at >= DUPLICATE_WINDOW_MS) this.recent.delete(k);
    this.tcp.sweep();
  }
}
