/*
 * The learner program under BPF_PROG_TEST_RUN: loads the real datapath into
 * a pin dir of its own, enforces one identity on the interface test runs use
 * (lo, ifindex 1: the program is never attached, so lo is untouched) and
 * builds DNS answers to feed it. For kernel tests and benchmarks; always
 * close() it (removes the pin dir).
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import dnsPacket from 'dns-packet';
import { Datapath } from '../../agent/datapath/datapath.js';
import { native } from '../../agent/datapath/native.js';
import { parseIp, formatIp } from '../../agent/net/addr.js';
import {
  EndpointFlag,
  PolicyKind,
  type PortRule,
  type LearnedRecord,
  ZERO_CONFIG,
  ResolverFlag,
} from '../../agent/datapath/codecs.js';
import { nameHash, wildcardHash, hashOrderBytes } from '../../agent/policy/name-hash.js';
import { buildFrame } from './frames.js';
import { ensureBpffs, PIN_ROOT } from './topology.js';

const TEST_RUN_IFINDEX = 1;
let counter = 0;

export interface AnswerSpec {
  name: string;
  id: number;
  sport: number;
  ips: string[];
  from?: string;
  to?: string;
  ttl?: number;
  cname?: string;
  /** owner names as pointers to the question (as resolvers write them; dns-packet does not compress) */
  compress?: boolean;
  /** the answer's transport: 'udp' (default) or 'tcp' (one segment, with the length prefix) */
  transport?: 'udp' | 'tcp';
}

export class LearnerHarness {
  readonly identity = 1;
  readonly podV4 = '198.18.1.2';
  readonly podV6 = '2001:db8:1::2';
  readonly resolver = '192.0.2.2';
  private constructor(
    readonly dp: Datapath,
    readonly pinDir: string,
  ) {}

  static open(opts: { withoutInlineLearner?: boolean } = {}): LearnerHarness {
    ensureBpffs();
    const pinDir = join(PIN_ROOT, `fqet-${process.pid.toString(36)}-l${counter++}`);
    let dp: Datapath;
    try {
      dp = Datapath.load(pinDir, undefined, opts);
    } catch (err) {
      rmSync(pinDir, { recursive: true, force: true });
      throw err;
    }
    const h = new LearnerHarness(dp, pinDir);
    dp.maps.endpoints.set(TEST_RUN_IFINDEX, { identity: h.identity, flags: EndpointFlag.enforce });
    for (const ip of [h.podV4, h.podV6]) dp.maps.owners.set({ identity: h.identity, addr: parseIp(ip) }, 1);
    // test runs have no arrival interface to check a reverse path against
    dp.maps.resolvers.set(parseIp(h.resolver), ResolverFlag.trusted | ResolverFlag.noPathCheck);
    dp.maps.config.set(0, { ...ZERO_CONFIG, eventsPerSec: 0, minTtlS: 0, maxTtlS: 86_400 });
    return h;
  }

  /** The node's hash key as the kernel sees it (0n unless a test set one). */
  get hashKey(): bigint {
    return this.dp.maps.hashKey.get(0) ?? 0n;
  }

  /** A rule for `name` (exact) or `*.name` (wildcard); the hash defaults to the keyed one, the real name goes with it. */
  allowName(kind: number, name: string, ports: PortRule[] = [], hash?: bigint): bigint {
    const h = hash ?? (kind === PolicyKind.exact ? nameHash(name, this.hashKey) : wildcardHash(name, this.hashKey));
    this.dp.maps.policy.set({ identity: this.identity, kind, hash: h }, { ports, name: hashOrderBytes(name) });
    return h;
  }

  /** A query the pod sent `agoNs` ago (the kernel's clock is CLOCK_MONOTONIC, as hrtime's). */
  expectQuery(id: number, sport: number, resolver = this.resolver, agoNs = 0n, transport: 'udp' | 'tcp' = 'udp'): void {
    const sentNs = process.hrtime.bigint() - agoNs;
    this.dp.maps.queries.set(
      { identity: this.identity, sport, dnsId: id, resolver: parseIp(resolver) },
      { sentNs, proto: transport === 'tcp' ? 6 : 17 },
    );
  }

  /** An answer whose records' owner names point at the question (0xc00c): 16 bytes per A record. */
  private static compressedAnswer(a: AnswerSpec): Buffer {
    const question = dnsPacket.encode({
      type: 'query',
      id: a.id,
      flags: dnsPacket.RECURSION_AVAILABLE,
      questions: [{ type: 'A', name: a.name, class: 'IN' }],
    });
    question.writeUInt16BE(0x8000 | dnsPacket.RECURSION_AVAILABLE, 2); // a response
    question.writeUInt16BE(a.ips.length, 6);
    const records = a.ips.map((ip) => {
      const addr = parseIp(ip);
      const v4 = !ip.includes(':');
      const rdata = v4 ? addr.subarray(12) : addr;
      const r = Buffer.alloc(12 + rdata.length);
      r.writeUInt16BE(0xc00c, 0);
      r.writeUInt16BE(v4 ? 1 : 28, 2);
      r.writeUInt16BE(1, 4);
      r.writeUInt32BE(a.ttl ?? 300, 6);
      r.writeUInt16BE(rdata.length, 10);
      rdata.copy(r, 12);
      return r;
    });
    return Buffer.concat([question, ...records]);
  }

  /** DNS over TCP: the two-byte length prefix, then the message. */
  static tcpPayload(message: Buffer, length = message.length): Buffer {
    const prefix = Buffer.alloc(2);
    prefix.writeUInt16BE(length);
    return Buffer.concat([prefix, message]);
  }

  /**
   * The same message with its question name compressed: the root label
   * replaced by a pointer to offset 4 (QDCOUNT's high byte, 0: the root).
   * Legal, if unusual; both learners refuse it. The answers' owner names
   * point at the question (offset 12), which does not move.
   */
  static compressQuestion(message: Buffer): Buffer {
    let at = 12;
    while (message[at] !== 0) at += 1 + message[at]!;
    return Buffer.concat([message.subarray(0, at), Buffer.from([0xc0, 0x04]), message.subarray(at + 1)]);
  }

  pendingQueries(): number {
    return this.dp.maps.queries.entries().length;
  }

  /** Answers the learner left to the agent's tap: "proto|pod port|dns id" (dns id 0: a TCP connection). */
  tapMarks(): string[] {
    return this.dp.maps.tapPass
      .entries()
      .map(([k]) => `${k.proto === 6 ? 'tcp' : 'udp'}|${k.podPort}|${k.dnsId}`)
      .sort();
  }

  /** Drain the learned-records ring (what the agent would read). */
  records(): LearnedRecord[] {
    const out: LearnedRecord[] = [];
    const reader = this.dp.openLearned((records) => out.push(...records));
    try {
      reader.consume();
    } finally {
      reader.close();
    }
    return out;
  }

  /** A query as a pod sends it. */
  static queryPayload(name: string, id: number): Buffer {
    return dnsPacket.encode({
      type: 'query',
      id,
      flags: dnsPacket.RECURSION_DESIRED,
      questions: [{ type: 'A', name, class: 'IN' }],
    });
  }

  static answerPayload(a: AnswerSpec): Buffer {
    if (a.compress && !a.cname) return LearnerHarness.compressedAnswer(a);
    const answers: dnsPacket.Answer[] = [];
    let owner = a.name;
    if (a.cname) {
      answers.push({ type: 'CNAME', name: a.name, class: 'IN', ttl: a.ttl ?? 300, data: a.cname });
      owner = a.cname;
    }
    for (const ip of a.ips)
      answers.push({ type: ip.includes(':') ? 'AAAA' : 'A', name: owner, class: 'IN', ttl: a.ttl ?? 300, data: ip });
    return dnsPacket.encode({
      type: 'response',
      id: a.id,
      flags: dnsPacket.RECURSION_AVAILABLE,
      questions: [{ type: 'A', name: a.name, class: 'IN' }],
      answers,
    });
  }

  frame(a: AnswerSpec, payload = LearnerHarness.answerPayload(a)): Buffer {
    const to = a.to ?? this.podV4;
    const from = a.from ?? (to.includes(':') ? '2001:db8:ff::2' : this.resolver);
    if (a.transport === 'tcp') {
      return buildFrame({
        src: from,
        dst: to,
        proto: 'tcp',
        sport: 53,
        dport: a.sport,
        payload: LearnerHarness.tcpPayload(payload),
        tcpFlags: 0x18,
      });
    }
    return buildFrame({ src: from, dst: to, proto: 'udp', sport: 53, dport: a.sport, payload });
  }

  run(frame: Buffer): number {
    return native.progTestRun(this.dp.programs!.learner, frame).retval | 0;
  }

  /** Allow entries of the identity: ip -> name hash. */
  learned(): Map<string, bigint> {
    return new Map(
      this.dp.maps.allow
        .entries()
        .filter(([k]) => k.identity === this.identity)
        .map(([k, v]) => [formatIp(k.addr), v.nameHash]),
    );
  }

  /** Delete the pod's allow entries, and give its share back (as the agent's sweep would). */
  clearLearned(): void {
    this.dp.maps.allow.deleteMany(
      this.dp.maps.allow
        .entries()
        .filter(([k]) => k.identity === this.identity)
        .map(([k]) => k),
    );
    this.dp.maps.podShares.delete(this.identity);
  }

  counters(): { learned: bigint; learnSkipped: bigint; learnRefused: bigint } {
    const c = this.dp.maps.counters.get(this.identity);
    return { learned: c?.learned ?? 0n, learnSkipped: c?.learnSkipped ?? 0n, learnRefused: c?.learnRefused ?? 0n };
  }

  close(): void {
    this.dp.close();
    rmSync(this.pinDir, { recursive: true, force: true });
  }
}
