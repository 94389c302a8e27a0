/*
 * What egressctl shows, read from the pinned maps alone (the agent may be
 * down): pods with their policy, allowed IPs with names and time left,
 * flows that outlive their TTL, recent drop and audit events, and health.
 * Builds plain objects; rendering is render.ts's job.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Datapath } from '../datapath/datapath.js';
import type { BpfError, MapShape } from '../datapath/native.js';
import { pinnedMapFill, pinnedMapShape } from '../datapath/pins.js';
import { formatCidr, formatIp, parseIp } from '../net/addr.js';
import { refusedQueryOf, refusedServerNameOf } from '../observability/refused-query.js';
import { readHeadGuardRecords, type HeadGuardRecord } from '../datapath/head-guard-map.js';
import { featureEffect, featuresFromFlags, type FeatureState } from '../datapath/features.js';
import {
  AllowSource,
  ConfigFlag,
  CtFlag,
  EndpointFlag,
  OriginFlag,
  PolicyKind,
  PROTO_TLS,
  shapeChange,
  type DropEvent,
  type PortRule,
} from '../datapath/maps/index.js';
import { MAP_DEFINITIONS } from '../datapath/maps/registry.js';

export class CliError extends Error {
  override name = 'CliError';
}

const PROTO_NAMES: Record<number, string> = { 1: 'icmp', 6: 'tcp', 17: 'udp', 58: 'icmpv6', [PROTO_TLS]: 'tls' };

export function protoName(p: number): string {
  return PROTO_NAMES[p] ?? String(p);
}

export function portsText(ports: PortRule[]): string[] {
  if (ports.length === 0) return ['any'];
  return ports.map((p) => (p.proto === 0 ? String(p.port) : `${p.port}/${protoName(p.proto)}`));
}

/** Open the pins with clear errors: missing, not permitted, another version. */
export function openState(pinDir: string): Datapath {
  if (!existsSync(pinDir)) {
    throw new CliError(`no fqdn-egress state at ${pinDir}: is the agent installed on this node? (or pass --pin-dir)`);
  }
  // every pin read as this egressctl was built to read it: the map modules' shapes, compared as migrate.ts compares them
  for (const { name: map, shape, sizedByPin } of MAP_DEFINITIONS) {
    const pin = join(pinDir, map);
    let have: MapShape;
    try {
      have = pinnedMapShape(pin);
    } catch (err) {
      const e = err as BpfError;
      if (e.code === 'EACCES' || e.code === 'EPERM')
        throw new CliError(`permission denied reading ${pin}: run egressctl as root (or with CAP_BPF)`);
      if (e.code === 'ENOENT')
        throw new CliError(
          `${pin} is missing: the maps at ${pinDir} were made by another version of fqdn-egress, or the agent never started`,
        );
      throw new CliError(`cannot open ${pin}: ${e.message}`);
    }
    const changes = shapeChange(have, sizedByPin ? { ...shape, valueSize: have.valueSize } : shape, {
      layoutOnly: true,
    });
    if (changes.length > 0) {
      const detail =
        have.valueSize !== shape.valueSize
          ? `${map} values are ${have.valueSize} bytes, this egressctl reads ${shape.valueSize}`
          : `${map} differs (pinned -> this egressctl: ${changes.join(', ')})`;
      throw new CliError(`the maps at ${pinDir} were made by another version of fqdn-egress: ${detail}`);
    }
  }
  return Datapath.openPinned(pinDir);
}

export interface AllowedIp {
  ip: string;
  name: string | null;
  learnedBy: 'agent' | 'kernel' | 'static';
  /** seconds left; null = does not expire */
  expiresInSeconds: number | null;
  ports: string[];
}

export interface TrackedFlow {
  proto: string;
  podPort: number;
  peer: string;
  peerPort: number;
  idleSeconds: number;
}

export interface PodReport {
  namespace: string;
  name: string;
  identity: number;
  interface: string;
  ifindex: number;
  mode: 'enforce' | 'audit';
  /** the DNS query filter: queries for other names are answered NXDOMAIN (on) or pass (off) */
  dnsFilter: 'on' | 'off';
  /** what decides the pod's rules: ["annotation"], or the policy resources that select it ("policy NS/NAME", "clusterpolicy NAME") */
  decidedBy: string[];
  /** the pod carries fqdn-egress.io annotations that are ignored because policies select it */
  annotationIgnored: boolean;
  /** each allowed name pattern, its ports and where it came from */
  allow: Array<{ pattern: string; ports: string[]; from: string[] }>;
  ips: AllowedIp[];
  trackedAfterTtl: TrackedFlow[];
  /** answersLeftToAgent: DNS answers the inline learner did not learn (in full): the agent did, a little later */
  counters: { passed: string; dropped: string; audited: string; learnedInKernel: string; answersLeftToAgent: string };
}

export interface AgentHealth {
  running: boolean;
  pid: number | null;
  /** seconds since the agent's last heartbeat; null when it never wrote one */
  heartbeatAgeSeconds: number | null;
  inlineLearner: 'on' | 'off';
}

const HEARTBEAT_STALE_NS = 3_000_000_000n;

export function agentHealth(dp: Datapath, nowNs = process.hrtime.bigint()): AgentHealth {
  const cfg = dp.maps.config.get(0);
  const hb = cfg?.agentHeartbeatNs ?? 0n;
  const age = hb > 0n ? nowNs - hb : null;
  return {
    running: age !== null && age < HEARTBEAT_STALE_NS,
    pid: cfg?.agentPid ? cfg.agentPid : null,
    heartbeatAgeSeconds: age === null ? null : Number(age) / 1e9,
    inlineLearner: cfg && cfg.flags & ConfigFlag.inlineLearnerOff ? 'off' : 'on',
  };
}

function sameIdentityMatch(podKey: string, want: string | undefined): boolean {
  return want === undefined || podKey === want;
}

/** The origins as fqe_pod_origins / fqe_rule_origins hold them ("a, b"); none when not recorded. */
function splitOrigins(text: string | undefined): string[] {
  return text ? text.split(', ') : [];
}

export function inspect(dp: Datapath, podFilter?: string, nowNs = process.hrtime.bigint()): PodReport[] {
  const names = new Map(dp.maps.names.entries());
  const endpoints = new Map(dp.maps.endpoints.entries().map(([ifindex, ep]) => [ep.identity, { ifindex, ep }]));
  const allow = dp.maps.allow.entries();
  const policy = dp.maps.policy.entries();
  const ruleOrigins = new Map(dp.maps.ruleOrigins.entries().map(([k, v]) => [`${k.identity}:${k.kind}:${k.hash}`, v]));
  const conntrack = dp.maps.conntrack.entries();
  // --allow-cidrs: agent-wide, shown under every pod as `static`
  const cidrs: AllowedIp[] = dp.maps.cidrs.entries().map(([k]) => ({
    ip: formatCidr(k.addr, k.prefixLen),
    name: null,
    learnedBy: 'static',
    expiresInSeconds: null,
    ports: portsText([]),
  }));
  const reports: PodReport[] = [];
  for (const [identity, info] of dp.maps.pods
    .entries()
    .sort((a, b) => `${a[1].namespace}/${a[1].name}`.localeCompare(`${b[1].namespace}/${b[1].name}`))) {
    const key = `${info.namespace}/${info.name}`;
    if (!sameIdentityMatch(key, podFilter)) continue;
    const ep = endpoints.get(identity);
    const live = new Set<string>();
    const ips: AllowedIp[] = [];
    for (const [k, v] of allow) {
      if (k.identity !== identity) continue;
      if (v.expiresNs !== 0n && v.expiresNs <= nowNs) continue;
      const ip = k.prefixLen === 128 ? formatIp(k.addr) : formatCidr(k.addr, k.prefixLen);
      live.add(ip);
      ips.push({
        ip,
        name: v.source === AllowSource.static ? null : (names.get(v.nameHash) ?? null),
        learnedBy: v.source === AllowSource.kernel ? 'kernel' : v.source === AllowSource.static ? 'static' : 'agent',
        expiresInSeconds: v.expiresNs === 0n ? null : Math.round(Number(v.expiresNs - nowNs) / 1e8) / 10,
        ports: portsText(v.ports),
      });
    }
    ips.push(...cidrs);
    ips.sort((a, b) => (a.name ?? '~').localeCompare(b.name ?? '~') || a.ip.localeCompare(b.ip));
    const rules = policy
      .filter(([k]) => k.identity === identity)
      .map(([k, { ports }]) => {
        const n = names.get(k.hash) ?? `#${k.hash.toString(16)}`;
        const from = splitOrigins(ruleOrigins.get(`${k.identity}:${k.kind}:${k.hash}`)?.text);
        return { pattern: k.kind === PolicyKind.wildcard ? `*.${n}` : n, ports: portsText(ports), from };
      })
      .sort((a, b) => a.pattern.localeCompare(b.pattern));
    const tracked: TrackedFlow[] = conntrack
      .filter(
        ([k, v]) =>
          k.identity === identity &&
          v.flags & CtFlag.outbound &&
          !(v.flags & CtFlag.audited) &&
          !live.has(formatIp(k.peerAddr)),
      )
      .map(([k, v]) => ({
        proto: protoName(k.proto),
        podPort: k.podPort,
        peer: formatIp(k.peerAddr),
        peerPort: k.peerPort,
        idleSeconds: Math.round(Number(nowNs - v.lastSeenNs) / 1e8) / 10,
      }));
    const c = dp.maps.counters.get(identity);
    const origins = dp.maps.podOrigins.get(identity);
    reports.push({
      namespace: info.namespace,
      name: info.name,
      identity,
      interface: info.ifname,
      ifindex: info.ifindex,
      mode: (ep?.ep.flags ?? info.flags) & EndpointFlag.audit ? 'audit' : 'enforce',
      dnsFilter: (ep?.ep.flags ?? info.flags) & EndpointFlag.dnsFilterOff ? 'off' : 'on',
      decidedBy: splitOrigins(origins?.text),
      annotationIgnored: ((origins?.flags ?? 0) & OriginFlag.annotationIgnored) !== 0,
      allow: rules,
      ips,
      trackedAfterTtl: tracked,
      counters: {
        passed: String(c?.passed ?? 0n),
        dropped: String(c?.dropped ?? 0n),
        audited: String(c?.audited ?? 0n),
        learnedInKernel: String(c?.learned ?? 0n),
        answersLeftToAgent: String(c?.learnSkipped ?? 0n),
      },
    });
  }
  return reports;
}

export interface DropRecord {
  seq: number;
  time: string;
  pod: string | null;
  kind: 'drop' | 'audit';
  reason: string;
  proto: string;
  source: string;
  destination: string;
  port: number;
  /** the name this destination was last answered for (to this pod), if any; for dns-name, the name the refused query asked for (escaped) */
  name: string | null;
  /** dns-name only: the refused query's type (A, TXT, ...), or null when it was not one plain question */
  queryType?: string | null;
}

/** Events in fqe_recent after `afterSeq`, oldest first. */
export function recentDrops(
  dp: Datapath,
  opts: { afterSeq?: number; pod?: string } = {},
  nowNs = process.hrtime.bigint(),
): DropRecord[] {
  const pods = new Map(dp.maps.pods.entries());
  const names = new Map(dp.maps.names.entries());
  const wallNowMs = Date.now();
  const out: DropRecord[] = [];
  const slots = dp.maps.recent
    .entries()
    .filter(([, r]) => r.seq > BigInt(opts.afterSeq ?? 0))
    .sort((a, b) => (a[1].seq < b[1].seq ? -1 : 1));
  for (const [, { seq, event }] of slots) {
    const info = pods.get(event.identity);
    const pod = info ? `${info.namespace}/${info.name}` : null;
    if (opts.pod !== undefined && pod !== opts.pod) continue;
    out.push({
      seq: Number(seq),
      time: new Date(wallNowMs - Number(nowNs - event.tsNs) / 1e6).toISOString(),
      pod,
      kind: event.kind,
      reason: event.reason,
      proto: protoName(event.proto),
      source: event.saddr,
      destination: event.daddr,
      port: event.dport,
      name: nameFor(dp, names, event),
      ...(event.reason === 'dns-name' ? refusedQueryOf(dp.maps.dnsRefused, event) : {}),
      ...(event.reason === 'tls-server-name' ? refusedServerNameOf(dp.maps.dnsRefused, event) : {}),
    });
  }
  return out;
}

function nameFor(dp: Datapath, names: Map<bigint, string>, e: DropEvent): string | null {
  const v = dp.maps.allow.get({ identity: e.identity, addr: parseIp(e.daddr), prefixLen: 128 });
  return v && v.source !== AllowSource.static ? (names.get(v.nameHash) ?? null) : null;
}

/** A datapath feature's state as the last agent wrote it (datapath/features.ts), with what a state that is not the best means. */
export type FeatureReport = FeatureState & { effect?: string };

export interface StatusReport {
  pinDir: string;
  agent: AgentHealth;
  /** null when the agent that wrote the pins predates the feature states (only agent.inlineLearner is known) */
  features: FeatureReport[] | null;
  interfaces: Array<{
    pod: string;
    interface: string;
    ifindex: number;
    /** how ours is attached: tcx links, legacy tc filters, mixed (a switch cut short), none */
    attachMode: 'tcx' | 'legacy' | 'mixed' | 'none' | 'unknown';
    /** prog ids of ours, null when not attached */
    enforcer: number | null;
    learner: number | null;
    /** programs that run before ours and can skip them (see docs/architecture.md, "Attaching") */
    warnings: string[];
    /** what the agent's tcx head guard did here (fqe_head_guard), null when it never had to */
    headGuard: HeadGuard | null;
  }>;
  maps: Array<{ map: string; entries: number; capacity: number; fill: number }>;
  totals: { passed: string; dropped: string; audited: string; learnedInKernel: string; answersLeftToAgent: string };
}

export interface HeadGuard {
  /** times the guard put a new link of ours back at the head */
  retakes: number;
  lastRetakeSecondsAgo: number | null;
  /** the guard leaves this interface alone for now: another program kept going first */
  backingOff: boolean;
  backoffSecondsLeft: number | null;
  backoffs: number;
  /** the program last found ahead of ours */
  aheadProgId: number | null;
}

function headGuardReport(r: HeadGuardRecord | undefined, nowNs: bigint): HeadGuard | null {
  if (!r || (r.retakes === 0 && r.backoffs === 0)) return null;
  const backingOff = r.backoffUntilNs > nowNs;
  return {
    retakes: r.retakes,
    lastRetakeSecondsAgo: r.lastRetakeNs === 0n ? null : Math.round(Number(nowNs - r.lastRetakeNs) / 1e8) / 10,
    backingOff,
    backoffSecondsLeft: backingOff ? Math.ceil(Number(r.backoffUntilNs - nowNs) / 1e9) : null,
    backoffs: r.backoffs,
    aheadProgId: r.aheadProgId || null,
  };
}

export function status(dp: Datapath, nowNs = process.hrtime.bigint()): StatusReport {
  const pods = dp.maps.pods.entries();
  const guarded = readHeadGuardRecords(dp.pinDir);
  const interfaces = pods.map(([, info]) => {
    const base = {
      pod: `${info.namespace}/${info.name}`,
      interface: info.ifname,
      ifindex: info.ifindex,
      headGuard: headGuardReport(guarded.get(info.ifindex), nowNs),
    };
    try {
      const a = dp.attachment(info.ifindex);
      return {
        ...base,
        attachMode: a.mode,
        enforcer: a.ingress.progId,
        learner: a.egress.progId,
        warnings: a.warnings,
      };
    } catch (err) {
      // The interface is gone (pod deleted while the agent was down), say.
      return {
        ...base,
        attachMode: 'unknown' as const,
        enforcer: null,
        learner: null,
        warnings: [`cannot read the attachment: ${(err as Error).message}`],
      };
    }
  });
  const maps = (
    [
      'fqe_allow',
      'fqe_cidrs',
      'fqe_endpoints',
      'fqe_owners',
      'fqe_policy',
      'fqe_conntrack',
      'fqe_queries',
      'fqe_names',
    ] as const
  ).map((map) => {
    const { entries, capacity } = pinnedMapFill(join(dp.pinDir, map));
    return { map, entries, capacity, fill: Math.round((entries / capacity) * 10000) / 10000 };
  });
  let passed = 0n,
    dropped = 0n,
    audited = 0n,
    learned = 0n,
    skipped = 0n;
  for (const [, c] of dp.maps.counters.entries()) {
    passed += c.passed;
    dropped += c.dropped;
    audited += c.audited;
    learned += c.learned;
    skipped += c.learnSkipped;
  }
  const agent = agentHealth(dp, nowNs);
  const features = featuresFromFlags(dp.maps.config.get(0)?.flags ?? 0, agent.running);
  return {
    pinDir: dp.pinDir,
    agent,
    features: features?.map((f) => ({ ...f, ...(f.best ? {} : { effect: featureEffect(f) }) })) ?? null,
    interfaces,
    maps,
    totals: {
      passed: String(passed),
      dropped: String(dropped),
      audited: String(audited),
      learnedInKernel: String(learned),
      answersLeftToAgent: String(skipped),
    },
  };
}
