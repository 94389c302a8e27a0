/*
 * One TCP flow of the test-run harness's pod (LearnerHarness), played
 * segment by segment through BPF_PROG_TEST_RUN with real sequence numbers:
 * the pod's segments through the enforcer (tc ingress), the peer's through
 * the learner (tc egress), the peer's SYN-ACK first, as on the wire. Stream
 * offsets count from the first byte after a SYN, for either side. Pure
 * apart from the programs and maps it drives.
 */
import { native } from '../../agent/datapath/native.js';
import { AllowSource, IPPROTO, PolicyKind, PROTO_TLS, type PortRule } from '../../agent/datapath/codecs.js';
import { parseIp } from '../../agent/net/addr.js';
import { buildFrame } from './frames.js';
import type { LearnerHarness } from './learner-harness.js';

/** Verdicts as test-run reports them: TC_ACT_UNSPEC, TC_ACT_SHOT, TC_ACT_REDIRECT (a refusal answered back to the pod). */
export const PASS = -1;
export const SHOT = 2;
export const REDIRECT = 7;
export const TCP = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10, URG: 0x20 } as const;
export const PSH_ACK = TCP.PSH | TCP.ACK;

export interface TcpFlowOpts {
  v6?: boolean;
  /** the peer: a server, or a resolver (port 53) */
  dst: string;
  dport: number;
  sport: number;
  /** the pod's initial sequence number (its SYN's) */
  isn?: number;
  /** the peer's (its SYN-ACK's) */
  peerIsn?: number;
}

export interface Sent {
  retval: number;
  /** the packet as the program left it (a RST or an answer when it redirected) */
  data: Buffer;
}

export class TcpFlow {
  readonly src: string;
  readonly dst: string;
  readonly sport: number;
  readonly dport: number;
  readonly isn: number;
  readonly peerIsn: number;
  /** the peer's stream offset of its next byte (what the pod acknowledges) */
  peerAt = 0;
  /** the pod's stream offset past the furthest byte it sent */
  podAt = 0;

  constructor(
    readonly h: LearnerHarness,
    opts: TcpFlowOpts,
  ) {
    this.src = opts.v6 ? h.podV6 : h.podV4;
    this.dst = opts.dst;
    this.sport = opts.sport;
    this.dport = opts.dport;
    this.isn = (opts.isn ?? 1000) >>> 0;
    this.peerIsn = (opts.peerIsn ?? 500_000) >>> 0;
  }

  /** The flow's conntrack key (from the pod's side). */
  get key(): { identity: number; podAddr: Buffer; peerAddr: Buffer; podPort: number; peerPort: number; proto: number } {
    return {
      identity: this.h.identity,
      podAddr: parseIp(this.src),
      peerAddr: parseIp(this.dst),
      podPort: this.sport,
      peerPort: this.dport,
      proto: IPPROTO.tcp,
    };
  }

  private enforcer(frame: Buffer): Sent {
    const r = native.progTestRun(this.h.dp.programs!.enforcer, frame);
    return { retval: r.retval | 0, data: r.data };
  }

  /** A segment of the pod at sequence number seq (absolute), through the enforcer. */
  raw(seq: number, flags: number, payload: Buffer = Buffer.alloc(0), urg = 0): Sent {
    const ack = flags & TCP.ACK ? (this.peerIsn + 1 + this.peerAt) >>> 0 : 0;
    return this.enforcer(
      buildFrame({
        src: this.src,
        dst: this.dst,
        proto: 'tcp',
        sport: this.sport,
        dport: this.dport,
        seq: seq >>> 0,
        ack,
        tcpFlags: flags,
        payload,
        urg,
      }),
    );
  }

  /** The pod's SYN, through the enforcer. */
  syn(seq = this.isn): number {
    return this.raw(seq, TCP.SYN).retval;
  }

  /** The peer's SYN-ACK (seq peerIsn, ack isn + 1), through the learner. */
  synAck(): number {
    return this.learner(this.peerIsn, (this.isn + 1) >>> 0, TCP.SYN | TCP.ACK);
  }

  /** The pod's SYN, then the peer's SYN-ACK: the SYN's verdict. */
  handshake(): number {
    const r = this.syn();
    this.synAck();
    return r;
  }

  /** The pod's data at stream offset `at` (negative: before the first byte). */
  send(payload: Buffer, at: number, opts: { flags?: number; urg?: number } = {}): Sent {
    this.podAt = Math.max(this.podAt, at + payload.length);
    return this.raw(this.isn + 1 + at, opts.flags ?? PSH_ACK, payload, opts.urg ?? 0);
  }

  /**
   * The peer's segment through the learner: its payload at its next byte,
   * acknowledging the pod's stream up to offset `ackAt` (default: all it sent).
   */
  peer(payload: Buffer, ackAt = this.podAt, flags = payload.length > 0 ? PSH_ACK : TCP.ACK): number {
    const r = this.learner((this.peerIsn + 1 + this.peerAt) >>> 0, (this.isn + 1 + ackAt) >>> 0, flags, payload);
    this.peerAt += payload.length;
    return r;
  }

  private learner(seq: number, ack: number, flags: number, payload: Buffer = Buffer.alloc(0)): number {
    const frame = buildFrame({
      src: this.dst,
      dst: this.src,
      proto: 'tcp',
      sport: this.dport,
      dport: this.sport,
      seq,
      ack,
      tcpFlags: flags,
      payload,
    });
    return native.progTestRun(this.h.dp.programs!.learner, frame).retval | 0;
  }

  /** The flow's conntrack flags (undefined: not tracked). */
  ctFlags(): number | undefined {
    return this.h.dp.maps.conntrack.get(this.key)?.flags;
  }

  /** Whether the TLS check keeps parser state for the flow. */
  parserState(): boolean {
    return this.h.dp.maps.tlsFlows.get(this.key) !== undefined;
  }
}

export const TLS_SERVER_V4 = '203.0.113.10';
export const TLS_SERVER_V6 = '2001:db8:ff::10';
export const TLS_443: PortRule[] = [{ port: 443, proto: PROTO_TLS }];
/** The names the TLS rules (and the DNS query filter) allow: api.stripe.test and *.kadath.test. */
export const TLS_ALLOWED = ['api.stripe.test', '*.kadath.test'];

/** An allow entry for the harness's pod, as the kernel learner writes it. */
export function allowIp(h: LearnerHarness, ip: string, ports: PortRule[]): void {
  h.dp.maps.allow.set(
    { identity: h.identity, addr: parseIp(ip), prefixLen: 128 },
    { expiresNs: 0n, nameHash: 1n, ports, source: AllowSource.kernel },
  );
}

/**
 * The rules of the packet-level TLS tests: TLS_ALLOWED on 443/tls (under a
 * keyed name hash), the server's addresses learned for them.
 */
export function tlsRules(h: LearnerHarness): void {
  h.dp.maps.hashKey.set(0, 0x7e57c0de12345678n);
  h.allowName(PolicyKind.exact, 'api.stripe.test', TLS_443);
  h.allowName(PolicyKind.wildcard, 'kadath.test', TLS_443);
  allowIp(h, TLS_SERVER_V4, TLS_443);
  allowIp(h, TLS_SERVER_V6, TLS_443);
}
