/*
 * The tcx head guard: keeps our links first in the tcx chains of enforced
 * interfaces. A tcx program that passes (TCX_PASS) ends its chain, so a CNI
 * that puts its program in front of ours (BPF_F_BEFORE, as Cilium does on
 * every restart) would switch enforcement off for that pod.
 *
 * Every `periodMs` (250 ms) the guard asks the kernel for each enforced
 * interface's two chains (one BPF_PROG_QUERY per hook) and compares the
 * first link with ours (the pinned link's id, re-read only when it differs).
 * When another program runs first, it takes the head back (attach.ts's
 * retakeHead: a new link at the head, pinned in place of the old one, then
 * the old one detached; never a moment without ours). The new link runs the
 * other of two instances of our program (a program is in a chain at most
 * once). Each retake is logged (warn) and reported through `events.onRetake`.
 *
 * Bounded: when one interface would need more than `maxRetakes` retakes
 * within `windowMs` (another program keeps taking the head, or the kernel
 * keeps refusing ours), the guard leaves that interface alone for
 * `backoffMs`, logs it as an error and reports `events.onBackoff` once per
 * back-off (the agent posts a Kubernetes Event). After the back-off it
 * guards the interface again with a fresh window.
 *
 * What it did is kept per interface in fqe_head_guard (head-guard-map.ts),
 * so egressctl shows it and a restarted agent keeps counting and keeps
 * backing off. Interfaces that are not ours any more are forgotten.
 *
 * Owns no pods and no attach policy: the agent says which interfaces are
 * enforced; an interface where ours is not a tcx link (legacy tc, not yet
 * attached, gone) is left to the endpoint manager.
 */
import type { Logger } from '../observability/log.js';
import type { TcxChain } from './native.js';
import { ownLinkId, queryChain, retakeHead, type AttachTarget, type Direction } from './attach.js';
import type { HeadGuardRecord } from './head-guard-map.js';

const DIRECTIONS: readonly Direction[] = ['ingress', 'egress'];

export const HEAD_GUARD_DEFAULTS = {
  /** how often the chains are read */
  periodMs: 250,
  /** retakes (hooks) of one interface allowed within the window ... */
  maxRetakes: 6,
  windowMs: 60_000,
  /** ... before the guard leaves it alone this long */
  backoffMs: 5 * 60_000,
} as const;

export interface GuardedInterface {
  ifindex: number;
  ifname: string;
  namespace: string;
  name: string;
}

/** What the guard does to the kernel: attach.ts's functions (attachOps), or a test's fake. */
export interface HookOps {
  chain(ifindex: number, direction: Direction): TcxChain;
  ownLinkId(ifindex: number, direction: Direction): number | null;
  /** put a new link of ours at the head in place of the pinned one; returns its id */
  retake(ifindex: number, direction: Direction): number;
}

/** `instances`: per hook, fds of two instances of our program (Datapath.headGuardOps loads the second). */
export function attachOps(pinDir: string, instances: Record<Direction, number[]>, target: AttachTarget = {}): HookOps {
  return {
    chain: (ifindex, direction) => queryChain(ifindex, direction, target),
    ownLinkId: (ifindex, direction) => ownLinkId(pinDir, ifindex, direction),
    retake: (ifindex, direction) => retakeHead(pinDir, ifindex, direction, instances[direction], target).linkId,
  };
}

/** Where the per-interface record is kept (fqe_head_guard, or a Map in tests). */
export interface RecordStore {
  get(ifindex: number): HeadGuardRecord | undefined;
  set(ifindex: number, record: HeadGuardRecord): void;
  delete(ifindex: number): boolean;
  entries(): Iterable<[number, HeadGuardRecord]>;
}

export interface BackoffReport {
  /** programs found ahead of ours */
  ahead: number[];
  /** retakes within the window, the one refused included */
  attempts: number;
  windowMs: number;
  backoffMs: number;
}

export interface HeadGuardEvents {
  onRetake(iface: GuardedInterface, direction: Direction, ahead: number[]): void;
  onBackoff(iface: GuardedInterface, report: BackoffReport): void;
}

export interface HeadGuardOptions {
  ops: HookOps;
  log: Logger;
  records?: RecordStore;
  events?: Partial<HeadGuardEvents>;
  /** CLOCK_MONOTONIC ns (what egressctl compares the records with) */
  nowNs?: () => bigint;
  periodMs?: number;
  maxRetakes?: number;
  windowMs?: number;
  backoffMs?: number;
}

interface IfaceState {
  iface: GuardedInterface;
  /** our link per hook as last read from its pin (null: none pinned) */
  linkIds: Partial<Record<Direction, number | null>>;
  /** when each retake (or refused retake) within the window happened */
  recent: bigint[];
  record: HeadGuardRecord;
  /** something still ran before ours after the last pass */
  aheadNow: boolean;
  /** the last unexpected error (logged once until it changes) */
  failure?: string | undefined;
}

type Look = { kind: 'head' } | { kind: 'absent' } | { kind: 'behind'; ahead: number[] };

const EMPTY_RECORD: HeadGuardRecord = { retakes: 0, lastRetakeNs: 0n, backoffUntilNs: 0n, aheadProgId: 0, backoffs: 0 };

function podOf(iface: GuardedInterface): string {
  return `${iface.namespace}/${iface.name}`;
}

export class TcxHeadGuard {
  private readonly states = new Map<number, IfaceState>();
  private readonly nowNs: () => bigint;
  private readonly periodMs: number;
  private readonly maxRetakes: number;
  private readonly windowNs: bigint;
  private readonly backoffNs: bigint;
  private timer: NodeJS.Timeout | undefined;
  private pruned = false;

  constructor(private readonly opts: HeadGuardOptions) {
    this.nowNs = opts.nowNs ?? (() => process.hrtime.bigint());
    this.periodMs = opts.periodMs ?? HEAD_GUARD_DEFAULTS.periodMs;
    this.maxRetakes = opts.maxRetakes ?? HEAD_GUARD_DEFAULTS.maxRetakes;
    this.windowNs = BigInt(opts.windowMs ?? HEAD_GUARD_DEFAULTS.windowMs) * 1_000_000n;
    this.backoffNs = BigInt(opts.backoffMs ?? HEAD_GUARD_DEFAULTS.backoffMs) * 1_000_000n;
  }

  /** Check every `periodMs` the interfaces `interfaces()` returns (the enforced ones, once known). */
  start(interfaces: () => GuardedInterface[]): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.check(interfaces()), this.periodMs);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Interfaces where another program still runs before ours after the last pass (backing off, or the kernel refused ours). */
  contested(): number {
    let n = 0;
    for (const s of this.states.values()) if (s.aheadNow) n++;
    return n;
  }

  /** One pass over these interfaces; returns how many hooks were taken back. */
  check(interfaces: GuardedInterface[]): number {
    const now = this.nowNs();
    const seen = new Set<number>();
    let retaken = 0;
    for (const iface of interfaces) {
      seen.add(iface.ifindex);
      const state = this.stateOf(iface, now);
      try {
        retaken += this.guard(state, now);
        state.failure = undefined;
      } catch (err) {
        // Not the kernel refusing a retake (counted above): say it once per kind, try again next pass.
        const message = (err as Error).message;
        if (state.failure !== message)
          this.opts.log.error(
            { pod: podOf(iface), interface: iface.ifname, err: message },
            'tcx head guard: could not check the chains',
          );
        state.failure = message;
      }
    }
    for (const ifindex of [...this.states.keys()]) {
      if (!seen.has(ifindex)) this.forget(ifindex);
    }
    if (!this.pruned) {
      // Records of interfaces an earlier agent guarded that are not enforced any more.
      this.pruned = true;
      try {
        for (const [ifindex] of [...(this.opts.records?.entries() ?? [])])
          if (!seen.has(ifindex)) this.opts.records?.delete(ifindex);
      } catch (err) {
        this.opts.log.warn({ err: (err as Error).message }, 'tcx head guard: could not prune fqe_head_guard');
      }
    }
    return retaken;
  }

  private stateOf(iface: GuardedInterface, now: bigint): IfaceState {
    const known = this.states.get(iface.ifindex);
    if (known && podOf(known.iface) === podOf(iface)) {
      known.iface = iface;
      return known;
    }
    // New to this agent: a record from an earlier agent counts on (a back-off holds), unless another pod had the interface.
    const saved = known ? undefined : this.opts.records?.get(iface.ifindex);
    const record = saved
      ? { ...saved, backoffUntilNs: saved.backoffUntilNs > now ? saved.backoffUntilNs : 0n }
      : { ...EMPTY_RECORD };
    const state: IfaceState = { iface, linkIds: {}, recent: [], record, aheadNow: false };
    this.states.set(iface.ifindex, state);
    if (known) this.persist(state);
    return state;
  }

  private forget(ifindex: number): void {
    this.states.delete(ifindex);
    try {
      this.opts.records?.delete(ifindex);
    } catch {
      /* the record goes with the next prune */
    }
  }

  /** Our place in one hook's chain. */
  private look(state: IfaceState, direction: Direction): Look {
    const { ops } = this.opts;
    const { ifindex } = state.iface;
    let chain: TcxChain;
    try {
      chain = ops.chain(ifindex, direction);
    } catch (err) {
      // The device went away (the endpoint manager purges it), or no tcx here.
      this.opts.log.debug(
        { pod: podOf(state.iface), interface: state.iface.ifname, direction, err: (err as Error).message },
        'tcx head guard: chain not readable',
      );
      return { kind: 'absent' };
    }
    if (chain.linkIds.length === 0) return { kind: 'absent' };
    let own = state.linkIds[direction];
    if (own === undefined || chain.linkIds[0] !== own) {
      own = ops.ownLinkId(ifindex, direction); // our link may be a new one (re-attached)
      state.linkIds[direction] = own;
    }
    const at = own === null ? -1 : chain.linkIds.indexOf(own);
    if (at === 0) return { kind: 'head' };
    if (at < 0) return { kind: 'absent' };
    return { kind: 'behind', ahead: chain.progIds.slice(0, at) };
  }

  private guard(state: IfaceState, now: bigint): number {
    const behind: Direction[] = [];
    const ahead: number[] = [];
    for (const direction of DIRECTIONS) {
      const look = this.look(state, direction);
      if (look.kind !== 'behind') continue;
      behind.push(direction);
      for (const id of look.ahead) if (!ahead.includes(id)) ahead.push(id);
    }
    state.aheadNow = behind.length > 0;
    if (behind.length === 0) return 0;
    const { record, iface } = state;
    const fields = { pod: podOf(iface), interface: iface.ifname };
    if (record.backoffUntilNs > now) return 0;
    if (record.backoffUntilNs !== 0n) {
      record.backoffUntilNs = 0n;
      state.recent = [];
      this.opts.log.warn(
        { ...fields, ahead },
        'tcx head guard: back-off over; taking the head of the chain back again',
      );
    }
    state.recent = state.recent.filter((t) => now - t < this.windowNs);
    if (state.recent.length + behind.length > this.maxRetakes) {
      this.backOff(state, now, ahead, state.recent.length + behind.length);
      return 0;
    }
    let retaken = 0;
    for (const direction of behind) {
      state.recent.push(now);
      try {
        state.linkIds[direction] = this.opts.ops.retake(iface.ifindex, direction);
      } catch (err) {
        // Counted in the window all the same: a kernel that keeps refusing ends in a back-off, not a loop.
        this.opts.log.error(
          { ...fields, direction, ahead, err: (err as Error).message },
          'tcx head guard: could not take the head of the chain back',
        );
        continue;
      }
      retaken++;
      record.retakes++;
      record.lastRetakeNs = now;
      this.opts.log.warn(
        { ...fields, direction, ahead, retakes: record.retakes },
        'another tcx program went before ours: took the head of the chain back',
      );
      this.opts.events?.onRetake?.(iface, direction, ahead);
    }
    state.aheadNow = retaken < behind.length;
    record.aheadProgId = ahead[0]!;
    this.persist(state);
    return retaken;
  }

  private backOff(state: IfaceState, now: bigint, ahead: number[], attempts: number): void {
    const { record, iface } = state;
    record.backoffUntilNs = now + this.backoffNs;
    record.backoffs++;
    record.aheadProgId = ahead[0]!;
    this.persist(state);
    const report: BackoffReport = {
      ahead,
      attempts,
      windowMs: Number(this.windowNs / 1_000_000n),
      backoffMs: Number(this.backoffNs / 1_000_000n),
    };
    this.opts.log.error(
      { pod: podOf(iface), interface: iface.ifname, ...report },
      'ANOTHER TCX PROGRAM KEEPS TAKING THE HEAD OF THE CHAIN: not taking it back for a while. Meanwhile a pass from that program skips our enforcer on this interface.',
    );
    this.opts.events?.onBackoff?.(iface, report);
  }

  private persist(state: IfaceState): void {
    try {
      this.opts.records?.set(state.iface.ifindex, state.record);
    } catch (err) {
      this.opts.log.warn(
        { interface: state.iface.ifname, err: (err as Error).message },
        'tcx head guard: could not record the retake in fqe_head_guard',
      );
    }
  }
}

/** A back-off in words, for the pod's Kubernetes Event. */
export function describeBackoff(iface: GuardedInterface, r: BackoffReport): string {
  const progs = r.ahead.map((id) => `prog ${id}`).join(', ');
  return (
    `another tcx program (${progs}) keeps going before fqdn-egress's programs on ${iface.ifname} ` +
    `(${r.attempts} retakes needed within ${r.windowMs / 1000}s): fqdn-egress stops taking the head back for ${r.backoffMs / 1000}s. ` +
    "Meanwhile a pass from that program skips this pod's egress enforcement. Find what attaches it (bpftool net show) and attach it after ours."
  );
}
