/*
 * The datapath: loads (or reuses) the pinned programs and maps under a pin
 * dir, attaches our programs to a pod's host-side interface (how: attach.ts,
 * tcx links or legacy tc), and gives typed access to every map. Owns no
 * policy: what to write is the caller's.
 */
import { mkdirSync, existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { native, type BpfError, type PacketSocket, type RingBufferReader, type CapturedPacket, type LoadedObject } from './native.js';
import { BpfMap } from './bpf-map.js';
import { expectedShapes, prepareMigration, finishMigration, type MigrationStep } from './migrate.js';
import {
  attachPrograms, detachPrograms, attachedProgram, inspectAttachment,
  type AttachMode, type AttachResult, type AttachTarget, type Direction, type InterfaceAttachment, type ProgramFds,
} from './attach.js';
import { attachOps, type HookOps } from './head-guard.js';
import {
  LAYOUTS, configCodec, u32Codec, endpointCodec, ownerKeyCodec, allowKeyCodec, allowValueCodec, resolverKeyCodec,
  queryKeyCodec, queryValueCodec, ctKeyCodec, ctValueCodec, countersCodec, eventCodec, u64Codec, nameCodec, podInfoCodec, policyKeyCodec, policyValueCodec, recentCodec,
  cidrKeyCodec, learnedRecordCodec, tapKeyCodec, queryRateCodec, refusedKeyCodec, refusedNameCodec, tlsFlowCodec, limitsCodec, podShareCodec,
  type Limits, type PodShare,
  type RefusedKey, type RefusedName, type TlsFlow,
  type Config, type Endpoint, type OwnerKey, type AllowKey, type AllowValue, type QueryKey, type QueryValue,
  type CtKey, type CtValue, type Counters, type DropEvent, type PodInfo, type PolicyKey, type PolicyValue, type CidrKey,
  type LearnedRecord, type TapKey,
} from './codecs.js';

export const DEFAULT_PIN_DIR = '/sys/fs/bpf/fqdn-egress';
export { TC_HANDLE, TC_PRIORITY, type AttachMode, type AttachResult, type Direction, type InterfaceAttachment } from './attach.js';

const PACKAGE_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const DEFAULT_BPF_DIR = existsSync(join(PACKAGE_ROOT, 'bpf')) ? join(PACKAGE_ROOT, 'bpf') : join(PACKAGE_ROOT, '..', 'bpf');

/**
 * Object files in load order, with the program each one attaches and the
 * programs it tail-calls (by slot of its pinned prog array). The learner has
 * a fallback without the inline DNS learner (conntrack only) for a kernel
 * whose verifier refuses it; the enforcer one on the precise clock for
 * kernels before 5.11.
 */
const OBJECTS = [
  {
    file: 'enforcer.bpf.o', program: 'fqe_enforcer', pin: 'prog_enforcer', olderKernel: 'enforcer_precise_clock.bpf.o',
    tails: { map: 'fqe_enforcer_tails', programs: ['fqe_enforcer_dns', 'fqe_enforcer_tls', 'fqe_enforcer_tls_name'] },
  },
  {
    file: 'learner.bpf.o', program: 'fqe_learner', pin: 'prog_learner', fallback: 'learner_ct_only.bpf.o',
    tails: { map: 'fqe_learner_tails', programs: ['fqe_learner_dns', 'fqe_learner_answers', 'fqe_learner_write'] },
  },
  { file: 'dns_filter.bpf.o', program: 'fqe_dns_filter', pin: 'prog_dns_filter' },
] as const;

/**
 * Put an object's tail-called programs into its pinned prog array, the last
 * slot first: a chain that enters at slot 0 meanwhile meets only programs of
 * one release from its entry on (see bpf/enforcer.bpf.c, bpf/learner.bpf.c).
 * An object without the array (the conntrack-only learner) has none.
 */
function fillTails(obj: LoadedObject, tails: { map: string; programs: readonly string[] }): void {
  const array = obj.maps[tails.map];
  if (!array) return;
  for (let slot = tails.programs.length - 1; slot >= 0; slot--) {
    const key = Buffer.alloc(4);
    key.writeUInt32LE(slot);
    const prog = obj.programs[tails.programs[slot]!];
    if (!prog) {
      native.mapDelete(array.fd, key); // not loaded (loadEnforcer): the slot stays empty, its judgement refuses
      continue;
    }
    const value = Buffer.alloc(4);
    value.writeUInt32LE(prog.fd);
    native.mapUpdate(array.fd, key, value);
  }
}

/** The verifier's last lines of a failed load, for a reason shown to users. */
function loadError(err: unknown): string {
  const e = err as BpfError;
  return `${e.message}${e.details ? `: ${e.details.trim().split('\n').slice(-3).join(' | ')}` : ''}`;
}

/** Which program of the object the kernel refused (libbpf names it), or null. */
function refusedProgram(err: unknown): string | null {
  const m = /prog '(\w+)': (?:BPF program load failed|failed to load)/.exec((err as BpfError).details ?? '');
  return m ? m[1]! : null;
}

/**
 * The enforcer as this kernel takes it: on the coarse clock where it has one
 * (5.11+), else on the precise clock; and when the verifier refuses one of
 * its tail-called judgements (the TLS check, the DNS query filter), the rest
 * without it. The judgement's slot then stays empty, and the main program
 * refuses whatever it would have judged: fail closed, never passed
 * unchecked. `without` says which were left out, and why.
 */
function loadEnforcer(bpfDir: string, pinDir: string): { obj: LoadedObject; preciseClock: string | null; without: Record<string, string> } {
  const o = OBJECTS[0];
  const judgements: readonly string[] = o.tails.programs;
  let first: unknown = null;
  let preciseClock: string | null = null;
  for (const file of [o.file, o.olderKernel]) {
    const without: Record<string, string> = {};
    for (;;) {
      const programs = [o.program, ...judgements.filter((p) => !(p in without))];
      try {
        const obj = native.loadObject(join(bpfDir, file), pinDir, programs.length <= judgements.length ? { programs } : {});
        return { obj, preciseClock, without };
      } catch (err) {
        first ??= err;
        const refused = refusedProgram(err);
        if (refused === null || !judgements.includes(refused) || refused in without) break;
        without[refused] = loadError(err);
      }
    }
    // Before 5.11 (no coarse clock): the same enforcer on the precise clock.
    preciseClock ??= (first as BpfError).message;
  }
  throw first;
}

export interface LoadOptions {
  /** load the conntrack-only learner even where the inline learner would load */
  withoutInlineLearner?: boolean;
  /** auto (default): tcx links where the kernel has tcx, else legacy tc; tcx or legacy: only that */
  attachMode?: AttachMode;
}

const MAP_NAMES = [
  'fqe_config', 'fqe_endpoints', 'fqe_owners', 'fqe_allow', 'fqe_resolvers', 'fqe_queries', 'fqe_conntrack', 'fqe_counters', 'fqe_events',
  'fqe_names', 'fqe_pods', 'fqe_policy', 'fqe_recent', 'fqe_recent_seq', 'fqe_cidrs', 'fqe_hash_key', 'fqe_ct_counts', 'fqe_ct_in_counts',
  'fqe_learned', 'fqe_learned_lost', 'fqe_tap_pass', 'fqe_query_rate',
  // DNS query filter
  'fqe_cluster_domains', 'fqe_dns_refused',
  // TLS server name check
  'fqe_tls_flows', 'fqe_tls_bytes', 'fqe_dns_tcp',
  // per-pod shares of node-wide tables
  'fqe_limits', 'fqe_pod_shares',
] as const;
type MapName = (typeof MAP_NAMES)[number];

export interface DatapathMaps {
  config: BpfMap<number, Config>;
  endpoints: BpfMap<number, Endpoint>;
  owners: BpfMap<OwnerKey, number>;
  allow: BpfMap<AllowKey, AllowValue>;
  resolvers: BpfMap<Buffer, number>;
  queries: BpfMap<QueryKey, QueryValue>;
  conntrack: BpfMap<CtKey, CtValue>;
  counters: BpfMap<number, Counters>;
  names: BpfMap<bigint, string>;
  pods: BpfMap<number, PodInfo>;
  policy: BpfMap<PolicyKey, PolicyValue>;
  /** agent-wide allowCIDRs */
  cidrs: BpfMap<CidrKey, number>;
  /** the node's name-hash secret (slot 0) */
  hashKey: BpfMap<number, bigint>;
  /** tracked flows per identity */
  ctCounts: BpfMap<number, bigint>;
  /** tracked flows opened towards each identity (a share of their own) */
  ctInCounts: BpfMap<number, bigint>;
  recent: BpfMap<number, { seq: bigint; event: DropEvent }>;
  recentSeq: BpfMap<number, bigint>;
  /** answers the inline learner left to the tap: until when (ns) */
  tapPass: BpfMap<TapKey, bigint>;
  /** queries each pod sent past its recording rate (summed over CPUs) */
  queryRate: BpfMap<number, { unrecorded: bigint }>;
  /** learned records that found the ring full, summed over CPUs (slot 0) */
  learnedLost: BpfMap<number, bigint>;
  /** the cluster's own domains: keyed name hash -> the domain's real name (DNS query filter) */
  clusterDomains: BpfMap<bigint, PolicyValue>;
  /** the names refused DNS queries asked for, keyed like their events */
  dnsRefused: BpfMap<RefusedKey, RefusedName>;
  /** where the ClientHello parser of each flow pending its TLS check stands (the kernel's) */
  tlsFlows: BpfMap<CtKey, TlsFlow>;
  /** the stream bytes the TLS check took of each flow under it (read keys only: values are 8 KiB) */
  tlsBytes: BpfMap<CtKey, Buffer>;
  /** where each pod's DNS-over-TCP stream to a resolver stands (the kernel's; keys only) */
  dnsTcp: BpfMap<CtKey, Buffer>;
  /** what each pod may hold of the node-wide tables (slot 0) */
  limits: BpfMap<number, Limits>;
  /** what each pod holds of them (the kernel counts up; the agent writes exact counts) */
  podShares: BpfMap<number, PodShare>;
  /** fd of the events ring buffer */
  eventsFd: number;
  /** fd of the learned-records ring buffer */
  learnedFd: number;
}

function buildMaps(fds: Record<MapName, number>): DatapathMaps {
  const cpus = native.numPossibleCpus();
  const perCpu = { decode: (b: Buffer) => countersCodec.decodePerCpu(b, cpus) };
  return {
    config: new BpfMap('fqe_config', fds.fqe_config, 4, LAYOUTS.config.size, u32Codec, configCodec),
    endpoints: new BpfMap('fqe_endpoints', fds.fqe_endpoints, 4, LAYOUTS.endpoint.size, u32Codec, endpointCodec),
    owners: new BpfMap('fqe_owners', fds.fqe_owners, LAYOUTS.owner_key.size, 4, ownerKeyCodec, u32Codec),
    allow: new BpfMap('fqe_allow', fds.fqe_allow, LAYOUTS.allow_key.size, LAYOUTS.allow_val.size, allowKeyCodec, allowValueCodec),
    resolvers: new BpfMap('fqe_resolvers', fds.fqe_resolvers, LAYOUTS.resolver_key.size, 4, { encode: resolverKeyCodec.encode, decode: resolverKeyCodec.decode }, u32Codec),
    queries: new BpfMap('fqe_queries', fds.fqe_queries, LAYOUTS.query_key.size, LAYOUTS.query_val.size, queryKeyCodec, queryValueCodec),
    conntrack: new BpfMap('fqe_conntrack', fds.fqe_conntrack, LAYOUTS.ct_key.size, LAYOUTS.ct_val.size, ctKeyCodec, ctValueCodec),
    counters: new BpfMap('fqe_counters', fds.fqe_counters, 4, countersCodec.slotSize * cpus, u32Codec, perCpu),
    names: new BpfMap('fqe_names', fds.fqe_names, 8, LAYOUTS.name.size, u64Codec, nameCodec),
    pods: new BpfMap('fqe_pods', fds.fqe_pods, 4, LAYOUTS.pod_info.size, u32Codec, podInfoCodec),
    policy: new BpfMap('fqe_policy', fds.fqe_policy, LAYOUTS.policy_key.size, LAYOUTS.policy_val.size, policyKeyCodec, policyValueCodec),
    recent: new BpfMap('fqe_recent', fds.fqe_recent, 4, LAYOUTS.recent.size, u32Codec, recentCodec),
    recentSeq: new BpfMap('fqe_recent_seq', fds.fqe_recent_seq, 4, 8, u32Codec, u64Codec),
    cidrs: new BpfMap('fqe_cidrs', fds.fqe_cidrs, LAYOUTS.cidr_key.size, 4, cidrKeyCodec, u32Codec),
    hashKey: new BpfMap('fqe_hash_key', fds.fqe_hash_key, 4, LAYOUTS.hash_key.size, u32Codec, u64Codec),
    ctCounts: new BpfMap('fqe_ct_counts', fds.fqe_ct_counts, 4, 8, u32Codec, u64Codec),
    ctInCounts: new BpfMap('fqe_ct_in_counts', fds.fqe_ct_in_counts, 4, 8, u32Codec, u64Codec),
    tapPass: new BpfMap('fqe_tap_pass', fds.fqe_tap_pass, LAYOUTS.tap_key.size, LAYOUTS.tap_val.size, tapKeyCodec, u64Codec),
    queryRate: new BpfMap('fqe_query_rate', fds.fqe_query_rate, 4, LAYOUTS.query_rate.size * cpus, u32Codec, { decode: (b: Buffer) => queryRateCodec.decodePerCpu(b, cpus) }),
    learnedLost: new BpfMap('fqe_learned_lost', fds.fqe_learned_lost, 4, 8 * cpus, u32Codec, { decode: (b: Buffer) => sumPerCpuU64(b, cpus) }),
    clusterDomains: new BpfMap('fqe_cluster_domains', fds.fqe_cluster_domains, 8, LAYOUTS.policy_val.size, u64Codec, policyValueCodec),
    dnsRefused: new BpfMap('fqe_dns_refused', fds.fqe_dns_refused, LAYOUTS.refused_key.size, LAYOUTS.refused_name.size, refusedKeyCodec, refusedNameCodec),
    tlsFlows: new BpfMap('fqe_tls_flows', fds.fqe_tls_flows, LAYOUTS.ct_key.size, LAYOUTS.tls_flow.size, ctKeyCodec, tlsFlowCodec),
    dnsTcp: new BpfMap('fqe_dns_tcp', fds.fqe_dns_tcp, LAYOUTS.ct_key.size, 8, ctKeyCodec, { decode: (b: Buffer) => b }),
    limits: new BpfMap('fqe_limits', fds.fqe_limits, 4, LAYOUTS.limits.size, u32Codec, limitsCodec),
    podShares: new BpfMap('fqe_pod_shares', fds.fqe_pod_shares, 4, LAYOUTS.pod_share.size, u32Codec, podShareCodec),
    tlsBytes: new BpfMap('fqe_tls_bytes', fds.fqe_tls_bytes, LAYOUTS.ct_key.size, native.mapInfo(fds.fqe_tls_bytes).valueSize, ctKeyCodec, { decode: (b: Buffer) => b }),
    eventsFd: fds.fqe_events,
    learnedFd: fds.fqe_learned,
  };
}

function sumPerCpuU64(b: Buffer, cpus: number): bigint {
  let sum = 0n;
  for (let i = 0; i < cpus; i++) sum += b.readBigUInt64LE(i * 8);
  return sum;
}

export type AttachOptions = AttachTarget;

export class Datapath {
  /** the object file each program was loaded from (the variant this kernel took), for spareHookPrograms */
  private loadedFrom: { enforcer?: string; learner?: string } = {};
  /** second instances of the enforcer and learner (a program can be in a tcx chain only once) */
  private spares: ProgramFds | null = null;

  private constructor(
    readonly pinDir: string,
    readonly maps: DatapathMaps,
    readonly programs: { enforcer: number; learner: number; dnsFilter: number } | null,
    private readonly objectIds: number[],
    private readonly ownedFds: number[],
    /** why the inline learner is not loaded, or null when it is */
    readonly inlineLearnerUnavailable: string | null = null,
    /** pins whose definition changed since the last load, and what became of them */
    readonly migrated: MigrationStep[] = [],
    /** how attach() puts our programs on an interface */
    readonly attachMode: AttachMode = 'auto',
    /** why the enforcer runs on the precise clock (an older kernel), or null */
    readonly enforcerOnPreciseClock: string | null = null,
    /**
     * why the loaded enforcer has no TLS server name check, or null when it
     * has one. Without it the enforcer refuses every flow only a tls rule
     * allows (fail closed).
     */
    readonly tlsCheckUnavailable: string | null = null,
    /**
     * why the loaded enforcer does not judge DNS queries by name, or null
     * when it does. Without it the enforcer refuses every query of a pod
     * whose filter is on (fail closed).
     */
    readonly dnsQueryFilterUnavailable: string | null = null,
  ) {}

  /**
   * Load the programs, reusing the maps pinned under pinDir (creating them
   * when missing), and pin the programs there too.
   */
  static load(pinDir: string = DEFAULT_PIN_DIR, bpfDir: string = DEFAULT_BPF_DIR, opts: LoadOptions = {}): Datapath {
    mkdirSync(pinDir, { recursive: true });
    const saved = prepareMigration(pinDir, expectedShapes(OBJECTS.map((o) => join(bpfDir, o.file))));
    const objectIds: number[] = [];
    const progFds: number[] = [];
    const mapFds: Partial<Record<MapName, number>> = {};
    let firstObjectMapFds: Record<string, number> = {};
    let unavailable: string | null = null;
    let enforcerFallback: string | null = null;
    let tlsUnavailable: string | null = null;
    let dnsFilterUnavailable: string | null = null;
    try {
      for (const o of OBJECTS) {
        let obj;
        if ('fallback' in o && opts.withoutInlineLearner) {
          unavailable = 'switched off';
          obj = native.loadObject(join(bpfDir, o.fallback), pinDir);
        } else if ('fallback' in o) {
          try {
            obj = native.loadObject(join(bpfDir, o.file), pinDir);
          } catch (err) {
            const e = err as BpfError;
            unavailable = `${e.message}${e.details ? `: ${e.details.trim().split('\n').slice(-3).join(' | ')}` : ''}`;
            obj = native.loadObject(join(bpfDir, o.fallback), pinDir);
          }
        } else if ('olderKernel' in o) {
          const e = loadEnforcer(bpfDir, pinDir);
          obj = e.obj;
          enforcerFallback = e.preciseClock;
          tlsUnavailable = e.without.fqe_enforcer_tls ?? null;
          dnsFilterUnavailable = e.without.fqe_enforcer_dns ?? null;
        } else {
          obj = native.loadObject(join(bpfDir, o.file), pinDir);
        }
        objectIds.push(obj.id);
        if ('tails' in o) fillTails(obj, o.tails);
        const prog = obj.programs[o.program];
        if (!prog) throw new Error(`${o.file}: no program ${o.program}`);
        progFds.push(prog.fd);
        const pin = join(pinDir, o.pin);
        native.unpin(pin);
        native.pinProgram(prog.fd, pin);
        if (Object.keys(mapFds).length === 0) {
          firstObjectMapFds = Object.fromEntries(Object.entries(obj.maps).map(([name, m]) => [name, m.fd]));
          for (const name of MAP_NAMES) {
            const m = obj.maps[name];
            if (!m) throw new Error(`${o.file}: no map ${name}`);
            mapFds[name] = m.fd;
          }
        }
      }
    } catch (err) {
      for (const id of objectIds) native.closeObject(id);
      throw err;
    }
    const [enforcer, learner, dnsFilter] = progFds as [number, number, number];
    const migrated = finishMigration(saved, firstObjectMapFds);
    const dp = new Datapath(pinDir, buildMaps(mapFds as Record<MapName, number>), { enforcer, learner, dnsFilter }, objectIds, [], unavailable, migrated, opts.attachMode ?? 'auto', enforcerFallback, tlsUnavailable, dnsFilterUnavailable);
    // The variants chosen above (keep in step with them), for spareHookPrograms.
    const [enforcerObject, learnerObject] = OBJECTS;
    dp.loadedFrom = {
      enforcer: join(bpfDir, enforcerFallback === null ? enforcerObject.file : enforcerObject.olderKernel),
      learner: join(bpfDir, unavailable === null ? learnerObject.file : learnerObject.fallback),
    };
    return dp;
  }

  /** Open the pinned maps only (the CLI, or a process that only writes maps). */
  static openPinned(pinDir: string = DEFAULT_PIN_DIR): Datapath {
    const fds: Partial<Record<MapName, number>> = {};
    const owned: number[] = [];
    try {
      for (const name of MAP_NAMES) {
        const fd = native.objGet(join(pinDir, name));
        owned.push(fd);
        fds[name] = fd;
      }
    } catch (err) {
      for (const fd of owned) native.closeFd(fd);
      throw err;
    }
    return new Datapath(pinDir, buildMaps(fds as Record<MapName, number>), null, [], owned);
  }

  private requirePrograms(): { enforcer: number; learner: number; dnsFilter: number } {
    if (!this.programs) throw new Error(`datapath at ${this.pinDir} was opened without programs (openPinned)`);
    return this.programs;
  }

  /**
   * Attach the enforcer (ingress) and learner (egress) to a host-side
   * interface: tcx links at the head of the chain where the kernel has tcx,
   * else legacy tc (attach.ts). Idempotent; a restarted agent updates its
   * pinned links in place.
   */
  attach(ifindex: number, opts: AttachOptions = {}): AttachResult {
    const progs = this.requirePrograms();
    return attachPrograms(this.pinDir, ifindex, { ingress: progs.enforcer, egress: progs.learner }, this.attachMode, opts);
  }

  /** Remove our links and filters; other programs and the clsact qdisc stay. */
  detach(ifindex: number, opts: AttachOptions = {}): boolean {
    return detachPrograms(this.pinDir, ifindex, opts);
  }

  /** The prog id of ours on this interface and direction (tcx or legacy), or null. */
  attached(ifindex: number, direction: Direction, opts: AttachOptions = {}): number | null {
    return attachedProgram(this.pinDir, ifindex, direction, opts);
  }

  /**
   * Load a second instance of the enforcer and the learner (the same
   * object files, so the same variants, on the same pinned maps). The head
   * guard needs them: a program can be in a tcx chain only once, so a new
   * link at the head must run another instance than the link it replaces.
   * About 0.6 s of verification on a 2-vCPU machine; once per agent.
   */
  spareHookPrograms(): ProgramFds {
    if (this.spares) return this.spares;
    this.requirePrograms();
    const fds = {} as ProgramFds;
    for (const [direction, role, program] of [['ingress', 'enforcer', 'fqe_enforcer'], ['egress', 'learner', 'fqe_learner']] as const) {
      const file = this.loadedFrom[role];
      if (!file) throw new Error(`datapath at ${this.pinDir}: no object file recorded for the ${role}`);
      // the attached program only: it tail-calls the first instance's programs through the pinned arrays
      const obj = native.loadObject(file, this.pinDir, { programs: [program] });
      this.objectIds.push(obj.id);
      const prog = obj.programs[program];
      if (!prog) throw new Error(`${file}: no program ${program}`);
      fds[direction] = prog.fd;
    }
    this.spares = fds;
    return fds;
  }

  /** Our tcx hooks as the head guard (head-guard.ts) reads and retakes them; loads the spare instances. */
  headGuardOps(opts: AttachOptions = {}): HookOps {
    const progs = this.requirePrograms();
    const spares = this.spareHookPrograms();
    return attachOps(this.pinDir, { ingress: [progs.enforcer, spares.ingress], egress: [progs.learner, spares.egress] }, opts);
  }

  /** How ours is attached on an interface, and what runs before it. */
  attachment(ifindex: number, opts: AttachOptions = {}): InterfaceAttachment {
    return inspectAttachment(this.pinDir, ifindex, opts);
  }

  /** The AF_PACKET tap with the DNS socket filter, in the node's namespace. */
  openDnsTap(onPackets: (packets: CapturedPacket[]) => void, opts: AttachOptions & { batch?: number } = {}): PacketSocket {
    const progs = this.requirePrograms();
    return new native.PacketSocket({ progFd: progs.dnsFilter, onPackets, ...(opts.netns ? { netns: opts.netns } : {}), ...(opts.batch ? { batch: opts.batch } : {}) });
  }

  /** Drop and audit events from the ring buffer. */
  openEvents(onEvents: (events: DropEvent[]) => void): RingBufferReader {
    return new native.RingBufferReader({ mapFd: this.maps.eventsFd, onRecords: (records: Buffer[]) => onEvents(records.map((r) => eventCodec.decode(r))) });
  }

  /**
   * The inline learner's learned records. The kernel wakes the reader only
   * when much is waiting: call consume() on a timer to drain the rest.
   */
  openLearned(onRecords: (records: LearnedRecord[], malformed: number) => void): RingBufferReader {
    return new native.RingBufferReader({
      mapFd: this.maps.learnedFd,
      onRecords: (raw: Buffer[]) => {
        const records: LearnedRecord[] = [];
        let malformed = 0;
        for (const r of raw) {
          try {
            records.push(learnedRecordCodec.decode(r));
          } catch {
            malformed++;
          }
        }
        onRecords(records, malformed);
      },
    });
  }

  /** Close our fds and objects; pins (and so enforcement) stay. */
  close(): void {
    for (const id of this.objectIds.splice(0)) native.closeObject(id);
    for (const fd of this.ownedFds.splice(0)) native.closeFd(fd);
  }
}
