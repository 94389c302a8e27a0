/*
 * Byte layouts of every map key and value, mirrored from bpf/lib/fqe_types.h.
 * Pure: encodes and decodes Buffers, nothing else. test/kernel/codecs.test.ts checks
 * LAYOUTS against the sizes and offsets the native binding reports from the
 * C header, so a layout is written once in C and checked here.
 */
import { ADDR_LEN, formatIp } from './addr.js';

export const LAYOUTS = {
  config: {
    size: 64,
    fields: {
      ct_tcp_idle_ns: 0, ct_other_idle_ns: 8, events_per_sec: 16, min_ttl_s: 20, max_ttl_s: 24, flags: 28, agent_heartbeat_ns: 32, agent_pid: 40, ct_per_pod: 44,
      query_window_ns: 48, connect_grace_ns: 56,
    },
  },
  hash_key: { size: 8, fields: { key: 0 } },
  cidr_key: { size: 24, fields: { prefixlen: 0, family: 4, addr: 8 } },
  recent: { size: 64, fields: { seq: 0, ev: 8 } },
  endpoint: { size: 8, fields: { identity: 0, flags: 4 } },
  owner_key: { size: 20, fields: { identity: 0, addr: 4 } },
  port_rule: { size: 4, fields: { port: 0, proto: 2 } },
  allow_key: { size: 24, fields: { prefixlen: 0, identity: 4, addr: 8 } },
  allow_val: { size: 56, fields: { expires_ns: 0, name_hash: 8, nports: 16, source: 17, ports: 24 } },
  resolver_key: { size: 16, fields: { addr: 0 } },
  query_key: { size: 24, fields: { identity: 0, sport: 4, dns_id: 6, resolver: 8 } },
  query_val: { size: 16, fields: { sent_ns: 0, proto: 8 } },
  ct_key: { size: 44, fields: { identity: 0, pod_addr: 4, peer_addr: 20, pod_port: 36, peer_port: 38, proto: 40 } },
  ct_val: { size: 24, fields: { last_seen_ns: 0, created_ns: 8, flags: 16 } },
  counters: {
    size: 216,
    fields: {
      passed: 0, dropped: 8, audited: 16, dns_queries: 24, learn_unwritten: 32, events_suppressed: 40, learned: 48, learn_skipped: 56,
      learn_refused: 64, reasons: 72, rl_window_ns: 200, rl_count: 208,
    },
  },
  policy_key: { size: 16, fields: { identity: 0, kind: 4, hash: 8 } },
  policy_val: { size: 296, fields: { nports: 0, ports: 4, name_len: 36, name: 40 } },
  name: { size: 256, fields: { name: 0 } },
  pod_info: { size: 344, fields: { ifindex: 0, flags: 4, ifname: 8, pod_namespace: 24, pod_name: 88 } },
  event: {
    size: 56,
    fields: { ts_ns: 0, identity: 8, ifindex: 12, saddr: 16, daddr: 32, sport: 48, dport: 50, proto: 52, reason: 53, kind: 54, family: 55 },
  },
  learned_addr: { size: 32, fields: { addr: 0, expires_ns: 16, ttl_s: 24, flags: 28 } },
  learned_rec: {
    size: 4416,
    fields: { ts_ns: 0, name_hash: 8, identity: 16, naddrs: 20, name_len: 22, flags: 24, nports: 25, ports: 32, name: 64, addrs: 320 },
  },
  tap_key: { size: 28, fields: { identity: 0, pod_port: 4, dns_id: 6, resolver: 8, proto: 24 } },
  tap_val: { size: 8, fields: { until_ns: 0 } },
  query_rate: { size: 24, fields: { window_ns: 0, count: 8, unrecorded: 16 } },
  // DNS query filter
  refused_key: { size: 16, fields: { ts_ns: 0, identity: 8, sport: 12 } },
  refused_name: { size: 264, fields: { name_len: 0, qtype: 2, flags: 4, proto: 5, wire: 8 } },
  // TLS server name check
  limits: { size: 32, fields: { ips_per_pod: 0, tls_flows_per_pod: 4 } },
  pod_share: { size: 16, fields: { allow: 0, tls_flows: 8 } },
  tls_flow: { size: 416, fields: { next_seq: 0, parsed: 4, need: 8, acc: 12, hs_left: 16, ext_left: 20, rec_left: 24, rec_hdr: 26, state: 27, segments: 28, name_done: 29, name_len: 30, base_seq: 32, based: 36, hellos: 37, rec_type: 38, named: 39, first_name_at: 40, first_name_len: 44, seg_len: 64, seg_hash: 96, name: 160 } },
} as const;

export const MAX_PORT_RULES = 8;
/** bytes of a name in the kernel (fqe_name, fqe_policy_val.name) */
export const NAME_LEN = 256;
export const LPM_IDENTITY_BITS = 32;

export const EndpointFlag = { enforce: 0x1, audit: 0x2, dnsFilterOff: 0x4 } as const;
/** fqe_resolvers values: trusted; its answers checked against the route back to it unless noPathCheck */
export const ResolverFlag = { trusted: 0x1, noPathCheck: 0x2 } as const;
/** fqe_config.flags: the kernel reads inlineLearnerOff; the rest are feature states for egressctl (features.ts). */
export const ConfigFlag = {
  inlineLearnerOff: 0x1,
  preciseClock: 0x2,
  tlsCheckOff: 0x4,
  dnsQueryFilterOff: 0x8,
  attachLegacy: 0x10,
  headGuardOff: 0x20,
  statesWritten: 0x80,
} as const;
export const PolicyKind = { exact: 1, wildcard: 2 } as const;
export const AllowSource = { agent: 1, kernel: 2, static: 3 } as const;
export const CtFlag = { outbound: 0x1, inbound: 0x2, audited: 0x4, closing: 0x8, tlsPending: 0x10, tlsRefused: 0x20, tlsWatch: 0x40 } as const;
export const EventKind = { drop: 1, audit: 2 } as const;
export const IPPROTO = { icmp: 1, tcp: 6, udp: 17, icmpv6: 58 } as const;
/** fqe_port_rule.proto of a `tls` rule: TCP once the ClientHello named an allowed server (not an IP protocol). */
export const PROTO_TLS = 0xfe;

/** enum fqe_reason, by value. */
export const REASONS = ['none', 'not-allowed', 'expired', 'port', 'spoofed', 'untrusted-dns', 'malformed', 'protocol', 'audit-ended', 'flow-quota', 'dns-name', 'tls-server-name', 'spoofed-answer'] as const;
export type Reason = (typeof REASONS)[number];

const L = LAYOUTS;

function putAddr(buf: Buffer, at: number, addr: Buffer): void {
  if (addr.length !== ADDR_LEN) throw new Error(`address must be ${ADDR_LEN} bytes, got ${addr.length}`);
  addr.copy(buf, at);
}

function getAddr(buf: Buffer, at: number): Buffer {
  return Buffer.from(buf.subarray(at, at + ADDR_LEN));
}

export interface Config {
  ctTcpIdleNs: bigint;
  ctOtherIdleNs: bigint;
  eventsPerSec: number;
  minTtlS: number;
  maxTtlS: number;
  flags: number;
  /** CLOCK_MONOTONIC ns of the running agent's last tick; 0n = none */
  agentHeartbeatNs: bigint;
  agentPid: number;
  /** tracked flows one pod may hold; 0 = kernel default */
  ctPerPod: number;
  /** a query is good for one answer within this; 0n = kernel default */
  queryWindowNs: bigint;
  /** an accepted answer allows at least this long; 0n = kernel default */
  connectGraceNs: bigint;
}

/** Every tunable at "kernel default" (0), no agent running. */
export const ZERO_CONFIG: Config = {
  ctTcpIdleNs: 0n, ctOtherIdleNs: 0n, eventsPerSec: 0, minTtlS: 0, maxTtlS: 0, flags: 0, agentHeartbeatNs: 0n, agentPid: 0, ctPerPod: 0, queryWindowNs: 0n, connectGraceNs: 0n,
};

export const configCodec = {
  encode(c: Config): Buffer {
    const b = Buffer.alloc(L.config.size);
    b.writeBigUInt64LE(c.ctTcpIdleNs, L.config.fields.ct_tcp_idle_ns);
    b.writeBigUInt64LE(c.ctOtherIdleNs, L.config.fields.ct_other_idle_ns);
    b.writeUInt32LE(c.eventsPerSec, L.config.fields.events_per_sec);
    b.writeUInt32LE(c.minTtlS, L.config.fields.min_ttl_s);
    b.writeUInt32LE(c.maxTtlS, L.config.fields.max_ttl_s);
    b.writeUInt32LE(c.flags, L.config.fields.flags);
    b.writeBigUInt64LE(c.agentHeartbeatNs, L.config.fields.agent_heartbeat_ns);
    b.writeUInt32LE(c.agentPid, L.config.fields.agent_pid);
    b.writeUInt32LE(c.ctPerPod, L.config.fields.ct_per_pod);
    b.writeBigUInt64LE(c.queryWindowNs, L.config.fields.query_window_ns);
    b.writeBigUInt64LE(c.connectGraceNs, L.config.fields.connect_grace_ns);
    return b;
  },
  decode(b: Buffer): Config {
    return {
      ctTcpIdleNs: b.readBigUInt64LE(L.config.fields.ct_tcp_idle_ns),
      ctOtherIdleNs: b.readBigUInt64LE(L.config.fields.ct_other_idle_ns),
      eventsPerSec: b.readUInt32LE(L.config.fields.events_per_sec),
      minTtlS: b.readUInt32LE(L.config.fields.min_ttl_s),
      maxTtlS: b.readUInt32LE(L.config.fields.max_ttl_s),
      flags: b.readUInt32LE(L.config.fields.flags),
      agentHeartbeatNs: b.readBigUInt64LE(L.config.fields.agent_heartbeat_ns),
      agentPid: b.readUInt32LE(L.config.fields.agent_pid),
      ctPerPod: b.readUInt32LE(L.config.fields.ct_per_pod),
      queryWindowNs: b.readBigUInt64LE(L.config.fields.query_window_ns),
      connectGraceNs: b.readBigUInt64LE(L.config.fields.connect_grace_ns),
    };
  },
};

export const u32Codec = {
  encode(v: number): Buffer {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v, 0);
    return b;
  },
  decode(b: Buffer): number {
    return b.readUInt32LE(0);
  },
};

export interface Endpoint {
  identity: number;
  flags: number;
}

export const endpointCodec = {
  encode(e: Endpoint): Buffer {
    const b = Buffer.alloc(L.endpoint.size);
    b.writeUInt32LE(e.identity, L.endpoint.fields.identity);
    b.writeUInt32LE(e.flags, L.endpoint.fields.flags);
    return b;
  },
  decode(b: Buffer): Endpoint {
    return { identity: b.readUInt32LE(L.endpoint.fields.identity), flags: b.readUInt32LE(L.endpoint.fields.flags) };
  },
};

export interface OwnerKey {
  identity: number;
  addr: Buffer;
}

export const ownerKeyCodec = {
  encode(k: OwnerKey): Buffer {
    const b = Buffer.alloc(L.owner_key.size);
    b.writeUInt32LE(k.identity, L.owner_key.fields.identity);
    putAddr(b, L.owner_key.fields.addr, k.addr);
    return b;
  },
  decode(b: Buffer): OwnerKey {
    return { identity: b.readUInt32LE(L.owner_key.fields.identity), addr: getAddr(b, L.owner_key.fields.addr) };
  },
};

export interface AllowKey {
  identity: number;
  addr: Buffer;
  /** prefix length in the 128-bit mapped address space */
  prefixLen: number;
}

export const allowKeyCodec = {
  encode(k: AllowKey): Buffer {
    if (!Number.isInteger(k.prefixLen) || k.prefixLen < 0 || k.prefixLen > 128) {
      throw new Error(`allow key: prefix length ${k.prefixLen} is not in 0..128`);
    }
    const b = Buffer.alloc(L.allow_key.size);
    b.writeUInt32LE(LPM_IDENTITY_BITS + k.prefixLen, L.allow_key.fields.prefixlen);
    b.writeUInt32LE(k.identity, L.allow_key.fields.identity);
    putAddr(b, L.allow_key.fields.addr, k.addr);
    return b;
  },
  decode(b: Buffer): AllowKey {
    return {
      prefixLen: b.readUInt32LE(L.allow_key.fields.prefixlen) - LPM_IDENTITY_BITS,
      identity: b.readUInt32LE(L.allow_key.fields.identity),
      addr: getAddr(b, L.allow_key.fields.addr),
    };
  },
};

export interface PortRule {
  port: number;
  /** 0 = TCP and UDP */
  proto: number;
}

export interface AllowValue {
  /** CLOCK_MONOTONIC ns; 0n = never expires */
  expiresNs: bigint;
  nameHash: bigint;
  /** empty = any port, TCP and UDP */
  ports: PortRule[];
  source: number;
}

export const allowValueCodec = {
  encode(v: AllowValue): Buffer {
    if (v.ports.length > MAX_PORT_RULES) {
      throw new Error(`allow value: ${v.ports.length} port rules, at most ${MAX_PORT_RULES} fit`);
    }
    const f = L.allow_val.fields;
    const b = Buffer.alloc(L.allow_val.size);
    b.writeBigUInt64LE(v.expiresNs, f.expires_ns);
    b.writeBigUInt64LE(v.nameHash, f.name_hash);
    b.writeUInt8(v.ports.length, f.nports);
    b.writeUInt8(v.source, f.source);
    v.ports.forEach((r, i) => {
      const at = f.ports + i * L.port_rule.size;
      b.writeUInt16LE(r.port, at + L.port_rule.fields.port);
      b.writeUInt8(r.proto, at + L.port_rule.fields.proto);
    });
    return b;
  },
  decode(b: Buffer): AllowValue {
    const f = L.allow_val.fields;
    const n = Math.min(b.readUInt8(f.nports), MAX_PORT_RULES);
    const ports: PortRule[] = [];
    for (let i = 0; i < n; i++) {
      const at = f.ports + i * L.port_rule.size;
      ports.push({ port: b.readUInt16LE(at + L.port_rule.fields.port), proto: b.readUInt8(at + L.port_rule.fields.proto) });
    }
    return {
      expiresNs: b.readBigUInt64LE(f.expires_ns),
      nameHash: b.readBigUInt64LE(f.name_hash),
      ports,
      source: b.readUInt8(f.source),
    };
  },
};

/** fqe_cidrs: an allowCIDRs prefix, family kept apart (an IPv6 prefix never covers IPv4). */
export interface CidrKey {
  family: 4 | 6;
  addr: Buffer;
  /** prefix length in the 128-bit mapped address space (IPv4: 96 + len) */
  prefixLen: number;
}

const CIDR_FAMILY_BITS = 32;

export const cidrKeyCodec = {
  encode(k: CidrKey): Buffer {
    if (!Number.isInteger(k.prefixLen) || k.prefixLen < 0 || k.prefixLen > 128) throw new Error(`cidr key: prefix length ${k.prefixLen} is not in 0..128`);
    const f = L.cidr_key.fields;
    const b = Buffer.alloc(L.cidr_key.size);
    b.writeUInt32LE(CIDR_FAMILY_BITS + k.prefixLen, f.prefixlen);
    b.writeUInt8(k.family, f.family);
    putAddr(b, f.addr, k.addr);
    return b;
  },
  decode(b: Buffer): CidrKey {
    const f = L.cidr_key.fields;
    return { prefixLen: b.readUInt32LE(f.prefixlen) - CIDR_FAMILY_BITS, family: b.readUInt8(f.family) === 4 ? 4 : 6, addr: getAddr(b, f.addr) };
  },
};

export const resolverKeyCodec = {
  encode(addr: Buffer): Buffer {
    const b = Buffer.alloc(L.resolver_key.size);
    putAddr(b, L.resolver_key.fields.addr, addr);
    return b;
  },
  decode(b: Buffer): Buffer {
    return getAddr(b, L.resolver_key.fields.addr);
  },
};

export interface QueryKey {
  identity: number;
  sport: number;
  dnsId: number;
  resolver: Buffer;
}

export const queryKeyCodec = {
  encode(k: QueryKey): Buffer {
    const f = L.query_key.fields;
    const b = Buffer.alloc(L.query_key.size);
    b.writeUInt32LE(k.identity, f.identity);
    b.writeUInt16LE(k.sport, f.sport);
    b.writeUInt16LE(k.dnsId, f.dns_id);
    putAddr(b, f.resolver, k.resolver);
    return b;
  },
  decode(b: Buffer): QueryKey {
    const f = L.query_key.fields;
    return { identity: b.readUInt32LE(f.identity), sport: b.readUInt16LE(f.sport), dnsId: b.readUInt16LE(f.dns_id), resolver: getAddr(b, f.resolver) };
  },
};

export interface QueryValue {
  sentNs: bigint;
  proto: number;
}

export const queryValueCodec = {
  encode(v: QueryValue): Buffer {
    const b = Buffer.alloc(L.query_val.size);
    b.writeBigUInt64LE(v.sentNs, L.query_val.fields.sent_ns);
    b.writeUInt8(v.proto, L.query_val.fields.proto);
    return b;
  },
  decode(b: Buffer): QueryValue {
    return { sentNs: b.readBigUInt64LE(L.query_val.fields.sent_ns), proto: b.readUInt8(L.query_val.fields.proto) };
  },
};

export interface CtKey {
  identity: number;
  podAddr: Buffer;
  peerAddr: Buffer;
  podPort: number;
  peerPort: number;
  proto: number;
}

export const ctKeyCodec = {
  encode(k: CtKey): Buffer {
    const f = L.ct_key.fields;
    const b = Buffer.alloc(L.ct_key.size);
    b.writeUInt32LE(k.identity, f.identity);
    putAddr(b, f.pod_addr, k.podAddr);
    putAddr(b, f.peer_addr, k.peerAddr);
    b.writeUInt16LE(k.podPort, f.pod_port);
    b.writeUInt16LE(k.peerPort, f.peer_port);
    b.writeUInt8(k.proto, f.proto);
    return b;
  },
  decode(b: Buffer): CtKey {
    const f = L.ct_key.fields;
    return {
      identity: b.readUInt32LE(f.identity),
      podAddr: getAddr(b, f.pod_addr),
      peerAddr: getAddr(b, f.peer_addr),
      podPort: b.readUInt16LE(f.pod_port),
      peerPort: b.readUInt16LE(f.peer_port),
      proto: b.readUInt8(f.proto),
    };
  },
};

export interface CtValue {
  lastSeenNs: bigint;
  createdNs: bigint;
  flags: number;
}

export const ctValueCodec = {
  decode(b: Buffer): CtValue {
    const f = L.ct_val.fields;
    return { lastSeenNs: b.readBigUInt64LE(f.last_seen_ns), createdNs: b.readBigUInt64LE(f.created_ns), flags: b.readUInt32LE(f.flags) };
  },
};

export interface Counters {
  passed: bigint;
  dropped: bigint;
  audited: bigint;
  dnsQueries: bigint;
  /** addresses the inline learner could not write: past the pod's share of fqe_allow, or the map full */
  learnUnwritten: bigint;
  eventsSuppressed: bigint;
  /** allow entries written by the inline learner */
  learned: bigint;
  /** answers the inline learner left to the agent */
  learnSkipped: bigint;
  /** answers whose name hash hit a rule but whose real name did not match */
  learnRefused: bigint;
  reasons: Record<Reason, bigint>;
}

/** Sum a per-CPU counters value (each CPU's slot rounded up to 8 bytes). */
export const countersCodec = {
  slotSize: Math.ceil(L.counters.size / 8) * 8,
  decodePerCpu(b: Buffer, cpus: number): Counters {
    const f = L.counters.fields;
    const sum = (at: number) => {
      let total = 0n;
      for (let cpu = 0; cpu < cpus; cpu++) total += b.readBigUInt64LE(cpu * countersCodec.slotSize + at);
      return total;
    };
    const reasons = Object.fromEntries(REASONS.map((r, i) => [r, sum(f.reasons + i * 8)])) as Record<Reason, bigint>;
    return {
      passed: sum(f.passed),
      dropped: sum(f.dropped),
      audited: sum(f.audited),
      dnsQueries: sum(f.dns_queries),
      learnUnwritten: sum(f.learn_unwritten),
      eventsSuppressed: sum(f.events_suppressed),
      learned: sum(f.learned),
      learnSkipped: sum(f.learn_skipped),
      learnRefused: sum(f.learn_refused),
      reasons,
    };
  },
};

export interface PolicyKey {
  identity: number;
  kind: number;
  hash: bigint;
}

export const policyKeyCodec = {
  encode(k: PolicyKey): Buffer {
    const f = L.policy_key.fields;
    const b = Buffer.alloc(L.policy_key.size);
    b.writeUInt32LE(k.identity, f.identity);
    b.writeUInt32LE(k.kind, f.kind);
    b.writeBigUInt64LE(k.hash, f.hash);
    return b;
  },
  decode(b: Buffer): PolicyKey {
    const f = L.policy_key.fields;
    return { identity: b.readUInt32LE(f.identity), kind: b.readUInt32LE(f.kind), hash: b.readBigUInt64LE(f.hash) };
  },
};

/** A name rule in the kernel: the ports it grants ([] = any) and the name the kernel compares. */
export interface PolicyValue {
  ports: PortRule[];
  /** the rule's name (exact) or suffix (wildcard) as the hash feeds it: labels right to left, lower case */
  name: Buffer;
}

export const policyValueCodec = {
  encode(v: PolicyValue): Buffer {
    if (v.ports.length > MAX_PORT_RULES) throw new Error(`policy value: ${v.ports.length} port rules, at most ${MAX_PORT_RULES} fit`);
    if (v.name.length > NAME_LEN) throw new Error(`policy value: name of ${v.name.length} bytes, at most ${NAME_LEN} fit`);
    const f = L.policy_val.fields;
    const b = Buffer.alloc(L.policy_val.size);
    b.writeUInt8(v.ports.length, f.nports);
    v.ports.forEach((r, i) => {
      const at = f.ports + i * L.port_rule.size;
      b.writeUInt16LE(r.port, at + L.port_rule.fields.port);
      b.writeUInt8(r.proto, at + L.port_rule.fields.proto);
    });
    b.writeUInt16LE(v.name.length, f.name_len);
    v.name.copy(b, f.name);
    return b;
  },
  decode(b: Buffer): PolicyValue {
    const f = L.policy_val.fields;
    const n = Math.min(b.readUInt8(f.nports), MAX_PORT_RULES);
    const ports: PortRule[] = [];
    for (let i = 0; i < n; i++) {
      const at = f.ports + i * L.port_rule.size;
      ports.push({ port: b.readUInt16LE(at + L.port_rule.fields.port), proto: b.readUInt8(at + L.port_rule.fields.proto) });
    }
    const len = Math.min(b.readUInt16LE(f.name_len), NAME_LEN);
    return { ports, name: Buffer.from(b.subarray(f.name, f.name + len)) };
  },
};

export interface DropEvent {
  tsNs: bigint;
  identity: number;
  ifindex: number;
  saddr: string;
  daddr: string;
  sport: number;
  dport: number;
  proto: number;
  reason: Reason;
  kind: 'drop' | 'audit';
  family: 4 | 6;
}

/** One slot of the fqe_recent ring: seq 0 = never written. */
export const recentCodec = {
  decode(b: Buffer): { seq: bigint; event: DropEvent } {
    return { seq: b.readBigUInt64LE(L.recent.fields.seq), event: eventCodec.decode(b.subarray(L.recent.fields.ev)) };
  },
};

export const eventCodec = {
  decode(b: Buffer): DropEvent {
    if (b.length < L.event.size) throw new Error(`event record of ${b.length} bytes, expected ${L.event.size}`);
    const f = L.event.fields;
    const reason = REASONS[b.readUInt8(f.reason)] ?? 'malformed';
    return {
      tsNs: b.readBigUInt64LE(f.ts_ns),
      identity: b.readUInt32LE(f.identity),
      ifindex: b.readUInt32LE(f.ifindex),
      saddr: formatIp(getAddr(b, f.saddr)),
      daddr: formatIp(getAddr(b, f.daddr)),
      sport: b.readUInt16LE(f.sport),
      dport: b.readUInt16LE(f.dport),
      proto: b.readUInt8(f.proto),
      reason,
      kind: b.readUInt8(f.kind) === EventKind.audit ? 'audit' : 'drop',
      family: b.readUInt8(f.family) === 6 ? 6 : 4,
    };
  },
};

function putString(buf: Buffer, at: number, len: number, text: string, what: string): void {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length >= len) throw new Error(`${what} "${text}" is longer than ${len - 1} bytes`);
  bytes.copy(buf, at);
}

function getString(buf: Buffer, at: number, len: number): string {
  const raw = buf.subarray(at, at + len);
  const end = raw.indexOf(0);
  return raw.subarray(0, end < 0 ? len : end).toString('utf8');
}

export const u64Codec = {
  encode(v: bigint): Buffer {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(v, 0);
    return b;
  },
  decode(b: Buffer): bigint {
    return b.readBigUInt64LE(0);
  },
};

export const nameCodec = {
  encode(name: string): Buffer {
    const b = Buffer.alloc(L.name.size);
    putString(b, L.name.fields.name, L.name.size, name, 'name');
    return b;
  },
  decode(b: Buffer): string {
    return getString(b, L.name.fields.name, L.name.size);
  },
};

export interface PodInfo {
  ifindex: number;
  flags: number;
  ifname: string;
  namespace: string;
  name: string;
}

const IFNAME_LEN = 16;
const POD_NAMESPACE_LEN = 64;
const POD_NAME_LEN = 256;

export const podInfoCodec = {
  encode(p: PodInfo): Buffer {
    const f = L.pod_info.fields;
    const b = Buffer.alloc(L.pod_info.size);
    b.writeUInt32LE(p.ifindex, f.ifindex);
    b.writeUInt32LE(p.flags, f.flags);
    putString(b, f.ifname, IFNAME_LEN, p.ifname, 'interface name');
    putString(b, f.pod_namespace, POD_NAMESPACE_LEN, p.namespace, 'pod namespace');
    putString(b, f.pod_name, POD_NAME_LEN, p.name, 'pod name');
    return b;
  },
  decode(b: Buffer): PodInfo {
    const f = L.pod_info.fields;
    return {
      ifindex: b.readUInt32LE(f.ifindex),
      flags: b.readUInt32LE(f.flags),
      ifname: getString(b, f.ifname, IFNAME_LEN),
      namespace: getString(b, f.pod_namespace, POD_NAMESPACE_LEN),
      name: getString(b, f.pod_name, POD_NAME_LEN),
    };
  },
};

/*
 * The inline learner's reports: one learned record per answer it learned
 * from (fqe_learned ring), and the tap marks (fqe_tap_pass) of answers it
 * left to the agent.
 */
export const LEARNED_MAX_ADDRS = 128;
export const LearnedFlag = { partial: 0x1 } as const;
/** fqe_learned_addr.flags */
export const LearnedAddrFlag = { unwritten: 0x1 } as const;

export interface LearnedAddress {
  ip: string;
  /** the same, as the kernel holds it (16 bytes, IPv4 mapped) */
  addr: Buffer;
  /** the allow entry's expiry after the kernel's write (CLOCK_MONOTONIC ns) */
  expiresNs: bigint;
  ttlS: number;
}

/*
 * A record's addresses are those the kernel wrote: one it could not write
 * (past the pod's share of fqe_allow, or the map full; counted in
 * learn_unwritten) is left out, so the agent does not take it as allowed.
 */

export interface LearnedRecord {
  /** when the learner wrote it (CLOCK_MONOTONIC, ms) */
  tsMs: number;
  nameHash: bigint;
  identity: number;
  /** the question, lower case, dotted, as the kernel compared it with the rule */
  name: string;
  partial: boolean;
  ports: PortRule[];
  addrs: LearnedAddress[];
}

/** a record's "any port" (shared: records are read, never changed) */
const ANY_PORT: PortRule[] = Object.freeze([]) as unknown as PortRule[];

export const learnedRecordCodec = {
  /** Throws on a record shorter than its header says: the kernel and agent disagree on the layout. */
  decode(b: Buffer): LearnedRecord {
    const f = L.learned_rec.fields;
    const a = L.learned_addr;
    if (b.length < f.addrs) throw new Error(`learned record of ${b.length} bytes, shorter than its ${f.addrs}-byte header`);
    const naddrs = b.readUInt16LE(f.naddrs);
    if (naddrs > LEARNED_MAX_ADDRS || b.length < f.addrs + naddrs * a.size) {
      throw new Error(`learned record of ${b.length} bytes cannot hold the ${naddrs} addresses it claims`);
    }
    const nameLen = Math.min(b.readUInt16LE(f.name_len), NAME_LEN - 1);
    const nports = Math.min(b.readUInt8(f.nports), MAX_PORT_RULES);
    const ports: PortRule[] = nports === 0 ? ANY_PORT : [];
    for (let i = 0; i < nports; i++) {
      const at = f.ports + i * L.port_rule.size;
      ports.push({ port: b.readUInt16LE(at), proto: b.readUInt8(at + L.port_rule.fields.proto) });
    }
    const addrs: LearnedAddress[] = [];
    for (let i = 0; i < naddrs; i++) {
      const at = f.addrs + i * a.size;
      if (b.readUInt32LE(at + a.fields.flags) & LearnedAddrFlag.unwritten) continue;
      const addr = b.subarray(at + a.fields.addr, at + a.fields.addr + ADDR_LEN);
      addrs.push({
        ip: formatIp(addr),
        addr,
        expiresNs: b.readBigUInt64LE(at + a.fields.expires_ns),
        ttlS: b.readUInt32LE(at + a.fields.ttl_s),
      });
    }
    return {
      // ms as a double: exact to well under a microsecond for centuries of uptime
      tsMs: (b.readUInt32LE(f.ts_ns + 4) * 2 ** 32 + b.readUInt32LE(f.ts_ns)) / 1e6,
      nameHash: b.readBigUInt64LE(f.name_hash),
      identity: b.readUInt32LE(f.identity),
      name: b.toString('latin1', f.name, f.name + nameLen),
      partial: (b.readUInt8(f.flags) & LearnedFlag.partial) !== 0,
      ports,
      addrs,
    };
  },
};

export interface TapKey {
  identity: number;
  podPort: number;
  /** 0 for a TCP connection's mark */
  dnsId: number;
  resolver: Buffer;
  proto: number;
}

export const tapKeyCodec = {
  encode(k: TapKey): Buffer {
    const f = L.tap_key.fields;
    const b = Buffer.alloc(L.tap_key.size);
    b.writeUInt32LE(k.identity, f.identity);
    b.writeUInt16LE(k.podPort, f.pod_port);
    b.writeUInt16LE(k.dnsId, f.dns_id);
    putAddr(b, f.resolver, k.resolver);
    b.writeUInt8(k.proto, f.proto);
    return b;
  },
  decode(b: Buffer): TapKey {
    const f = L.tap_key.fields;
    return {
      identity: b.readUInt32LE(f.identity),
      podPort: b.readUInt16LE(f.pod_port),
      dnsId: b.readUInt16LE(f.dns_id),
      resolver: getAddr(b, f.resolver),
      proto: b.readUInt8(f.proto),
    };
  },
};

/** fqe_query_rate, summed over CPUs: the queries a pod sent past its recording rate. */
export const queryRateCodec = {
  decodePerCpu(b: Buffer, cpus: number): { unrecorded: bigint } {
    let unrecorded = 0n;
    for (let i = 0; i < cpus; i++) unrecorded += b.readBigUInt64LE(i * L.query_rate.size + L.query_rate.fields.unrecorded);
    return { unrecorded };
  },
};

/*
 * DNS query filter: the name a refused query asked for, keyed
 * like its event (fqe_dns_refused), so egressctl and the agent can show it.
 */
export interface RefusedKey {
  tsNs: bigint;
  identity: number;
  sport: number;
}

export const refusedKeyCodec = {
  encode(k: RefusedKey): Buffer {
    const f = L.refused_key.fields;
    const b = Buffer.alloc(L.refused_key.size);
    b.writeBigUInt64LE(k.tsNs, f.ts_ns);
    b.writeUInt32LE(k.identity, f.identity);
    b.writeUInt16LE(k.sport, f.sport);
    return b;
  },
  decode(b: Buffer): RefusedKey {
    const f = L.refused_key.fields;
    return { tsNs: b.readBigUInt64LE(f.ts_ns), identity: b.readUInt32LE(f.identity), sport: b.readUInt16LE(f.sport) };
  },
};

export interface RefusedName {
  /** the question name as sent (wire format, no root label); null when the query was not one plain question */
  wire: Buffer | null;
  qtype: number;
  proto: number;
}

const REFUSED_PARSED = 0x1;

export const refusedNameCodec = {
  encode(v: RefusedName): Buffer {
    const f = L.refused_name.fields;
    const b = Buffer.alloc(L.refused_name.size);
    if (v.wire && v.wire.length > NAME_LEN) throw new Error(`refused name: ${v.wire.length} bytes, at most ${NAME_LEN} fit`);
    b.writeUInt16LE(v.wire?.length ?? 0, f.name_len);
    b.writeUInt16LE(v.qtype, f.qtype);
    b.writeUInt8(v.wire ? REFUSED_PARSED : 0, f.flags);
    b.writeUInt8(v.proto, f.proto);
    v.wire?.copy(b, f.wire);
    return b;
  },
  decode(b: Buffer): RefusedName {
    const f = L.refused_name.fields;
    const parsed = (b.readUInt8(f.flags) & REFUSED_PARSED) !== 0;
    const len = Math.min(b.readUInt16LE(f.name_len), NAME_LEN);
    return { wire: parsed ? Buffer.from(b.subarray(f.wire, f.wire + len)) : null, qtype: b.readUInt16LE(f.qtype), proto: b.readUInt8(f.proto) };
  },
};

/*
 * TLS server name check: where the ClientHello parser of a flow
 * pending its check stands (fqe_tls_flows, keyed like fqe_conntrack). Read
 * only, for inspection and tests; the kernel owns it.
 */
export interface TlsFlow {
  /** the next byte's TCP sequence number */
  nextSeq: number;
  /** the stream's first data byte, as the server's SYN-ACK acked it (valid when based) */
  baseSeq: number;
  based: boolean;
  /** client bytes taken so far (kept in fqe_tls_bytes up to its size) */
  parsed: number;
  segments: number;
  /** ClientHellos whose server name was judged */
  hellos: number;
}

export const tlsFlowCodec = {
  decode(b: Buffer): TlsFlow {
    const f = L.tls_flow.fields;
    return {
      nextSeq: b.readUInt32LE(f.next_seq), baseSeq: b.readUInt32LE(f.base_seq), based: b.readUInt8(f.based) !== 0,
      parsed: b.readUInt32LE(f.parsed), segments: b.readUInt8(f.segments), hellos: b.readUInt8(f.hellos),
    };
  },
};

/* Per-pod shares of node-wide tables: the limits (fqe_limits) and what each pod holds (fqe_pod_shares). */
export interface Limits {
  /** allow entries the kernel learner may add for one pod (0: the kernel's default) */
  ipsPerPod: number;
  /** flows of one pod under the TLS check at once (0: the kernel's default) */
  tlsFlowsPerPod: number;
}

export const limitsCodec = {
  encode(v: Limits): Buffer {
    const b = Buffer.alloc(L.limits.size);
    b.writeUInt32LE(v.ipsPerPod, L.limits.fields.ips_per_pod);
    b.writeUInt32LE(v.tlsFlowsPerPod, L.limits.fields.tls_flows_per_pod);
    return b;
  },
  decode(b: Buffer): Limits {
    return { ipsPerPod: b.readUInt32LE(L.limits.fields.ips_per_pod), tlsFlowsPerPod: b.readUInt32LE(L.limits.fields.tls_flows_per_pod) };
  },
};

export interface PodShare {
  allow: bigint;
  tlsFlows: bigint;
}

export const podShareCodec = {
  encode(v: PodShare): Buffer {
    const b = Buffer.alloc(L.pod_share.size);
    b.writeBigUInt64LE(v.allow, L.pod_share.fields.allow);
    b.writeBigUInt64LE(v.tlsFlows, L.pod_share.fields.tls_flows);
    return b;
  },
  decode(b: Buffer): PodShare {
    return { allow: b.readBigUInt64LE(L.pod_share.fields.allow), tlsFlows: b.readBigUInt64LE(L.pod_share.fields.tls_flows) };
  },
};
