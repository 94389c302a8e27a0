/*
 * The userspace learner: turns what the DNS tap delivers into "pod P may
 * reach these IPs for name N until T". An answer counts only when it comes
 * from a trusted resolver, to the pod's own address, for a query that pod
 * really sent (same transport, port, id and name) within the query window
 * (the kernel learner's window too; a query is good for one answer), for a
 * name the pod is allowed; everything else is rejected with a reason. An
 * accepted address stays allowed for at least the connect grace. It decodes and judges
 * but writes nothing itself: `learn` does (cache, maps). Clock injected.
 */
import type { CapturedPacket } from '../datapath/native.js';
import { parseFrame, type Segment } from '../dns/frame.js';
import { decodeDns, type DnsMessage } from '../dns/message.js';
import { TcpDnsReassembler } from '../dns/tcp-stream.js';
import { rulesForName } from '../policy/annotation.js';
import type { EnforcedPod } from '../endpoints.js';

const PACKET_OUTGOING = 4;
const DNS_PORT = 53;
const MAX_PENDING = 65_536;
const DUPLICATE_WINDOW_MS = 2_000;

export type Verdict =
  | 'query'
  | 'accepted'
  | 'ignored-not-enforced'
  | 'rejected-frame'
  | 'rejected-malformed'
  | 'rejected-untrusted-resolver'
  | 'rejected-wrong-destination'
  | 'rejected-unsolicited'
  | 'rejected-name-mismatch'
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
  /** did the kernel record this query (identity, pod port, id, resolver)? For answers to queries sent before a restart. */
  kernelSawQuery(identity: number, port: number, id: number, resolver: string): boolean;
  learn(answer: LearnedAnswer): void;
  verdict(v: Verdict, detail: { pod?: string; name?: string; reason?: string }): void;
  minTtlMs: number;
  maxTtlMs: number;
  /** a query is good for one answer within this */
  queryWindowMs: number;
  /** the least an accepted address stays allowed, whatever its TTL */
  connectGraceMs: number;
  nowMs(): number;
}

interface Pending {
  name: string;
  atMs: number;
}

export class DnsLearner {
  private readonly pending = new Map<string, Pending>();
  private readonly recent = new Map<string, number>();
  private readonly tcp: TcpDnsReassembler;

  constructor(private readonly deps: LearnerDeps) {
    // 70,000 bytes: one largest legal message (65,537 with its length) and change; 16 MiB for all flows together.
    this.tcp = new TcpDnsReassembler({ maxFlows: 4096, maxBytesPerFlow: 70_000, maxTotalBytes: 16 << 20, idleMs: 30_000, now: deps.nowMs });
  }

  get pendingQueries(): number {
    return this.pending.size;
  }

  handle(packets: CapturedPacket[]): void {
    for (const p of packets) this.handleOne(p);
  }

  private handleOne(p: CapturedPacket): void {
    const pod = this.deps.podByInterface(p.ifindex);
    if (!pod) return this.deps.verdict('ignored-not-enforced', {});
    const frame = parseFrame(p);
    if (!frame.ok) return this.deps.verdict('rejected-frame', { pod: pod.key, reason: `${frame.reason}: ${frame.detail}` });
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
      if (seg.pktType !== PACKET_OUTGOING && seg.dport === DNS_PORT && !dns.message.isResponse) this.onQuery(pod, seg, dns.message);
      else if (seg.pktType === PACKET_OUTGOING && seg.sport === DNS_PORT && dns.message.isResponse) this.onAnswer(pod, seg, dns.message);
      else this.deps.verdict('rejected-malformed', { pod: pod.key, reason: 'neither a query from the pod nor an answer to it' });
    }
  }

  private queryKey(pod: EnforcedPod, proto: string, podPort: number, id: number, resolver: string): string {
    return `${pod.identity}|${proto}|${podPort}|${id}|${resolver}`;
  }

  private onQuery(pod: EnforcedPod, seg: Segment, msg: DnsMessage): void {
    if (!msg.question) return;
    const key = this.queryKey(pod, seg.proto, seg.sport, msg.id, seg.dst);
    this.pending.delete(key);
    this.pending.set(key, { name: msg.question.name, atMs: this.deps.nowMs() });
    if (this.pending.size > MAX_PENDING) this.pending.delete(this.pending.keys().next().value!);
    this.deps.verdict('query', { pod: pod.key, name: msg.question.name });
  }

  private onAnswer(pod: EnforcedPod, seg: Segment, msg: DnsMessage): void {
    const name = msg.question?.name;
    const detail = { pod: pod.key, ...(name !== undefined ? { name } : {}) };
    if (name === undefined) return this.deps.verdict('rejected-malformed', { ...detail, reason: 'answer without a question' });
    if (!this.deps.isTrustedResolver(seg.src)) return this.deps.verdict('rejected-untrusted-resolver', { ...detail, reason: `from ${seg.src}` });
    if (!pod.ips.includes(seg.dst)) return this.deps.verdict('rejected-wrong-destination', { ...detail, reason: `to ${seg.dst}` });

    const key = this.queryKey(pod, seg.proto, seg.dport, msg.id, seg.src);
    let q = this.pending.get(key);
    if (q && this.deps.nowMs() - q.atMs > this.deps.queryWindowMs) {
      this.pending.delete(key);
      q = undefined; // too old: only the kernel's record (same window) may still vouch for it
    }
    if (q && q.name !== name) return this.deps.verdict('rejected-name-mismatch', { ...detail, reason: `query was for ${q.name}` });
    if (!q && !this.deps.kernelSawQuery(pod.identity, seg.dport, msg.id, seg.src)) {
      return this.deps.verdict('rejected-unsolicited', { ...detail, reason: `no query with id ${msg.id} from port ${seg.dport}` });
    }
    if (!rulesForName(pod.policy, name).allowed) return this.deps.verdict('rejected-name-not-allowed', detail);

    const now = this.deps.nowMs();
    const dupKey = `${key}|${name}|${msg.question!.type}|${msg.answers.map((a) => a.ip).join(',')}`;
    const seen = this.recent.get(dupKey);
    if (seen !== undefined && now - seen < DUPLICATE_WINDOW_MS) return this.deps.verdict('duplicate', detail);
    this.recent.set(dupKey, now);
    this.pending.delete(key); // one answer per query

    const { minTtlMs, maxTtlMs, connectGraceMs } = this.deps;
    const answers = msg.answers.map((a) => ({ ip: a.ip, ttlMs: Math.max(connectGraceMs, Math.min(maxTtlMs, Math.max(minTtlMs, a.ttl * 1000))) }));
    this.deps.learn({ pod, name, answers, capturedNs: seg.tsNs });
    this.deps.verdict('accepted', detail);
  }

  /** Forget old queries, idle TCP flows and the duplicate window. */
  sweep(): void {
    const now = this.deps.nowMs();
    for (const [k, q] of this.pending) {
      if (now - q.atMs <= this.deps.queryWindowMs) break; // insertion order = age order
      this.pending.delete(k);
    }
    for (const [k, at] of this.recent) if (now - at >= DUPLICATE_WINDOW_MS) this.recent.delete(k);
    this.tcp.sweep();
  }
}
