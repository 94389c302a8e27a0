/*
 * The datapath: loads (or reuses) the pinned programs and maps under a pin
 * dir, attaches our programs to a pod's host-side interface (how: attach.ts,
 * tcx links or legacy tc), and gives typed access to every map. Owns no
 * policy: what to write is the caller's.
 */
import { mkdirSync, existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  native,
  type BpfError,
  type PacketSocket,
  type RingBufferReader,
  type CapturedPacket,
  type LoadedObject,
} from './native.js';
import { expectedShapes, prepareMigration, finishMigration, type MigrationStep } from './migrate.js';
import {
  attachPrograms,
  detachPrograms,
  attachedProgram,
  inspectAttachment,
  type AttachMode,
  type AttachResult,
  type AttachTarget,
  type Direction,
  type InterfaceAttachment,
  type ProgramFds,
} from './attach.js';
import { attachOps, type HookOps } from './head-guard.js';
import { eventCodec, learnedRecordCodec, type DropEvent, type LearnedRecord } from './maps/index.js';
import { MAP_NAMES, buildMaps, type DatapathMaps, type MapName } from './maps/registry.js';

export const DEFAULT_PIN_DIR = '/sys/fs/bpf/fqdn-egress';
export {
  TC_HANDLE,
  TC_PRIORITY,
  type AttachMode,
  type AttachResult,
  type Direction,
  type InterfaceAttachment,
} from './attach.js';

const PACKAGE_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const DEFAULT_BPF_DIR = existsSync(join(PACKAGE_ROOT, 'bpf'))
  ? join(PACKAGE_ROOT, 'bpf')
  : join(PACKAGE_ROOT, '..', 'bpf');

/**
 * Object files in load order, with the program each one attaches and the
 * programs it tail-calls (by slot of its pinned prog array). The learner has
 * a fallback without the inline DNS learner (conntrack only) for a kernel
 * whose verifier refuses it; the enforcer one on the precise clock for
 * kernels before 5.11.
 */
const OBJECTS = [
  {
    file: 'enforcer.bpf.o',
    program: 'fqe_enforcer',
    pin: 'prog_enforcer',
    olderKernel: 'enforcer_precise_clock.bpf.o',
    tails: { map: 'fqe_enforcer_tails', programs: ['fqe_enforcer_dns', 'fqe_enforcer_tls', 'fqe_enforcer_tls_name'] },
  },
  {
    file: 'learner.bpf.o',
    program: 'fqe_learner',
    pin: 'prog_learner',
    fallback: 'learner_ct_only.bpf.o',
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
function loadEnforcer(
  bpfDir: string,
  pinDir: string,
): { obj: LoadedObject; preciseClock: string | null; without: Record<string, string> } {
  const o = OBJECTS[0];
  const judgements: readonly string[] = o.tails.programs;
  let first: unknown = null;
  let preciseClock: string | null = null;
  for (const file of [o.file, o.olderKernel]) {
    const without: Record<string, string> = {};
    for (;;) {
      const programs = [o.program, ...judgements.filter((p) => !(p in without))];
      try {
        const obj = native.loadObject(
          join(bpfDir, file),
          pinDir,
          programs.length <= judgements.length ? { programs } : {},
        );
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

export type { DatapathMaps } from './maps/registry.js';

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
    const dp = new Datapath(
      pinDir,
      buildMaps(mapFds as Record<MapName, number>),
      { enforcer, learner, dnsFilter },
      objectIds,
      [],
      unavailable,
      migrated,
      opts.attachMode ?? 'auto',
      enforcerFallback,
      tlsUnavailable,
      dnsFilterUnavailable,
    );
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
    return attachPrograms(
      this.pinDir,
      ifindex,
      { ingress: progs.enforcer, egress: progs.learner },
      this.attachMode,
      opts,
    );
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
    for (const [direction, role, program] of [
      ['ingress', 'enforcer', 'fqe_enforcer'],
      ['egress', 'learner', 'fqe_learner'],
    ] as const) {
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
    return attachOps(
      this.pinDir,
      { ingress: [progs.enforcer, spares.ingress], egress: [progs.learner, spares.egress] },
      opts,
    );
  }

  /** How ours is attached on an interface, and what runs before it. */
  attachment(ifindex: number, opts: AttachOptions = {}): InterfaceAttachment {
    return inspectAttachment(this.pinDir, ifindex, opts);
  }

  /** The AF_PACKET tap with the DNS socket filter, in the node's namespace. */
  openDnsTap(
    onPackets: (packets: CapturedPacket[]) => void,
    opts: AttachOptions & { batch?: number } = {},
  ): PacketSocket {
    const progs = this.requirePrograms();
    return new native.PacketSocket({
      progFd: progs.dnsFilter,
      onPackets,
      ...(opts.netns ? { netns: opts.netns } : {}),
      ...(opts.batch ? { batch: opts.batch } : {}),
    });
  }

  /** Drop and audit events from the ring buffer. */
  openEvents(onEvents: (events: DropEvent[]) => void): RingBufferReader {
    return new native.RingBufferReader({
      mapFd: this.maps.eventsFd,
      onRecords: (records: Buffer[]) => onEvents(records.map((r) => eventCodec.decode(r))),
    });
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
