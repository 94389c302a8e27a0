// SPDX-License-Identifier: Apache-2.0
//
// The typed face of the native binding (native/*.cc, built to
// build/Release/fqe_native.node). This is the only module that loads the
// addon: everything else imports these functions. It owns no policy and
// validates nothing beyond what the addon checks (argument types, buffer
// sizes against the map): defaults, retries and meaning live in the map
// wrappers. Every errno failure of the addon is a BpfError.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

/** An errno failure of a system or libbpf call made by the addon. */
export class BpfError extends Error {
  /** errno name, e.g. 'ENOENT' */
  readonly code: string;
  /** errno number, e.g. 2 */
  readonly errno: number;
  /** what was being done, e.g. "bpf_map_update_elem(fqe_allow)" */
  readonly op: string;
  /** libbpf / verifier output of a failed load (last ~8 KiB) */
  readonly details: string | undefined;

  constructor(message: string, code: string, errno: number, op: string, details?: string) {
    super(message);
    this.name = 'BpfError';
    this.code = code;
    this.errno = errno;
    this.op = op;
    this.details = details;
  }
}

export interface ProgramDesc {
  fd: number;
  /** enum bpf_prog_type */
  type: number;
  name: string;
}

export interface MapDesc {
  fd: number;
  /** enum bpf_map_type */
  type: number;
  keySize: number;
  /** per-element size as declared (not multiplied for per-CPU maps) */
  valueSize: number;
  maxEntries: number;
}

export interface MapShape {
  type: number;
  keySize: number;
  /** as declared (not multiplied for per-CPU maps) */
  valueSize: number;
  maxEntries: number;
  flags: number;
}

export interface LoadedObject {
  /** registry id for closeObject; keeps the fds below valid */
  id: number;
  programs: Record<string, ProgramDesc>;
  /** internal maps (.rodata, .bss, ...) are left out */
  maps: Record<string, MapDesc>;
  /** with verifierStats: the verifier's statistics lines, per program */
  verifierLog?: string;
}

export interface LoadObjectOptions {
  /** values of `const volatile` globals, set before load (exact sizes) */
  rodata?: Record<string, Buffer>;
  /**
   * ask the verifier for its statistics (log level 4): the result's
   * verifierLog holds "processed N insns ..." per program, and a failure's
   * details the error lines without the instruction trace
   */
  verifierStats?: boolean;
  /** load only these programs of the object (the rest are not verified) */
  programs?: string[];
}

export interface ProgInfo {
  id: number;
  type: number;
  name: string;
  /** 16 hex digits */
  tag: string;
}

export interface MapInfo {
  id: number;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  name: string;
}

export interface MapDump {
  /** count keys, back to back */
  keys: Buffer;
  /** count values, back to back */
  values: Buffer;
  count: number;
}

export type TcDirection = 'ingress' | 'egress';

export interface TcTarget {
  ifindex: number;
  direction: TcDirection;
  handle: number;
  priority: number;
  /** e.g. /var/run/netns/NAME: the call runs inside that network namespace */
  netns?: string;
}

export interface TcAttachOptions extends TcTarget {
  progFd: number;
}

export interface TcxTarget {
  ifindex: number;
  direction: TcDirection;
  /** e.g. /var/run/netns/NAME: the call runs inside that network namespace */
  netns?: string;
}

export interface TcxAttachOptions extends TcxTarget {
  progFd: number;
  /** BPF_F_BEFORE / BPF_F_AFTER / BPF_F_ID / BPF_F_LINK / BPF_F_REPLACE; 0: append */
  flags?: number;
  /** the program or link (BPF_F_LINK) to attach before or after, by fd ... */
  relativeFd?: number;
  /** ... or by id (with BPF_F_ID) */
  relativeId?: number;
  /** fail with ESTALE unless the chain is still at this revision */
  expectedRevision?: number;
}

/** One tcx chain, in the order its programs run. */
export interface TcxChain {
  progIds: number[];
  /** the link of each program; 0 where it was attached without a link */
  linkIds: number[];
  /** bumped by the kernel on every change of the chain */
  revision: number;
}

export interface LinkInfo {
  id: number;
  /** enum bpf_link_type (11: tcx) */
  type: number;
  progId: number;
  /** tcx links only; ifindex 0 once the device is gone */
  tcx?: { ifindex: number; direction: TcDirection | 'unknown' };
}

export interface TestRunOptions {
  repeat?: number;
  ctx?: Buffer;
  /** room for the output packet; default data.length + 512 */
  dataOutSize?: number;
}

export interface TestRunResult {
  retval: number;
  /** kernel's average ns per run */
  durationNs: number;
  data: Buffer;
}

export interface StructLayout {
  size: number;
  /** field name → offset in bytes */
  fields: Record<string, number>;
}

/**
 * sizeof/offsetof of bpf/lib/fqe_types.h by struct name without `fqe_`
 * (allow_key, allow_val, ct_key, event, ...), plus `constants`: the header's
 * #defines and enum fqe_reason values without the `FQE_` prefix.
 */
export type Layouts = Record<string, StructLayout> & { readonly constants: Record<string, number> };

export interface CapturedPacket {
  data: Buffer;
  ifindex: number;
  /** sll_pkttype: PACKET_HOST 0, PACKET_OUTGOING 4, ... */
  pktType: number;
  /** CLOCK_REALTIME ns (SO_TIMESTAMPNS) */
  tsNs: bigint;
  /** length on the wire side of the filter; data is cut at 64 KiB */
  origLen: number;
}

export interface PacketSocketOptions {
  /** BPF_PROG_TYPE_SOCKET_FILTER program */
  progFd: number;
  netns?: string;
  /** messages per recvmmsg, default 64 */
  batch?: number;
  /** SO_RCVBUF(FORCE), default 4 MiB */
  bufferBytes?: number;
  onPackets: (packets: CapturedPacket[]) => void;
  /** receive errors; without it they are uncaught exceptions */
  onError?: (err: BpfError) => void;
}

export interface PacketSocketStats {
  /** packets that passed the filter, including dropped ones (kernel semantics) */
  packets: number;
  drops: number;
}

export interface PacketSocket {
  stats(): PacketSocketStats;
  /** idempotent */
  close(): void;
  ref(): this;
  unref(): this;
}

export interface RingBufferReaderOptions {
  /** BPF_MAP_TYPE_RINGBUF map */
  mapFd: number;
  onRecords: (records: Buffer[]) => void;
}

export interface RingBufferReader {
  /** drains synchronously through onRecords; returns the record count */
  consume(): number;
  /** idempotent */
  close(): void;
  ref(): this;
  unref(): this;
}

/** Every function and class of the addon. */
export interface NativeBinding {
  loadObject(path: string, pinDir: string, opts?: LoadObjectOptions): LoadedObject;
  closeObject(id: number): void;
  /** the maps an object file defines (not loaded; internal maps left out) */
  describeObject(path: string): Record<string, MapShape>;
  pinProgram(fd: number, path: string): void;
  unpin(path: string): boolean;
  objGet(path: string): number;
  closeFd(fd: number): void;
  progInfo(fd: number): ProgInfo;
  mapInfo(fd: number): MapInfo;
  mapUpdate(fd: number, key: Buffer, value: Buffer, flags?: number): void;
  mapLookup(fd: number, key: Buffer, valueSize: number): Buffer | null;
  mapDelete(fd: number, key: Buffer): boolean;
  mapGetNextKey(fd: number, key: Buffer | null, keySize: number): Buffer | null;
  mapDump(fd: number, keySize: number, valueSize: number): MapDump;
  mapUpdateBatch(fd: number, keys: Buffer, values: Buffer, count: number, flags?: number): number;
  mapDeleteBatch(fd: number, keys: Buffer, count: number): number;
  createMap(type: number, keySize: number, valueSize: number, maxEntries: number, name: string, flags?: number): number;
  numPossibleCpus(): number;
  ifNameToIndex(name: string, netns?: string): number;
  tcAttach(opts: TcAttachOptions): number;
  tcDetach(target: TcTarget): boolean;
  tcQuery(target: TcTarget): number | null;
  tcxAttach(opts: TcxAttachOptions): number;
  tcxQuery(target: TcxTarget): TcxChain;
  linkUpdate(linkFd: number, newProgFd: number, oldProgFd?: number): void;
  linkDetach(linkFd: number): void;
  linkInfo(fd: number): LinkInfo;
  pinObject(fd: number, path: string): void;
  progTestRun(progFd: number, data: Buffer, opts?: TestRunOptions): TestRunResult;
  layouts(): Layouts;
  PacketSocket: new (opts: PacketSocketOptions) => PacketSocket;
  RingBufferReader: new (opts: RingBufferReaderOptions) => RingBufferReader;
}

// dist/agent/datapath/native.js → package root is three levels up.
const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const ADDON_PATH = path.join(packageRoot, 'build', 'Release', 'fqe_native.node');
type Addon = NativeBinding & { setErrorClass(ctor: typeof BpfError): void };
let loaded: Addon | undefined;

/**
 * The addon, loaded on first use: modules that only name its types or
 * constants (and the unit tests) run where it was never built.
 */
function addon(): Addon {
  if (loaded) return loaded;
  try {
    loaded = createRequire(import.meta.url)(ADDON_PATH) as Addon;
  } catch (err) {
    throw new Error(
      `the native addon ${ADDON_PATH} could not be loaded (npm run build makes it): ${(err as Error).message}`,
    );
  }
  loaded.setErrorClass(BpfError);
  return loaded;
}

/** Every member of NativeBinding, for the object below. */
const MEMBERS = [
  'loadObject',
  'closeObject',
  'describeObject',
  'pinProgram',
  'unpin',
  'objGet',
  'closeFd',
  'progInfo',
  'mapInfo',
  'mapUpdate',
  'mapLookup',
  'mapDelete',
  'mapGetNextKey',
  'mapDump',
  'mapUpdateBatch',
  'mapDeleteBatch',
  'createMap',
  'numPossibleCpus',
  'ifNameToIndex',
  'tcAttach',
  'tcDetach',
  'tcQuery',
  'tcxAttach',
  'tcxQuery',
  'linkUpdate',
  'linkDetach',
  'linkInfo',
  'pinObject',
  'progTestRun',
  'layouts',
  'PacketSocket',
  'RingBufferReader',
] as const satisfies ReadonlyArray<keyof NativeBinding>;
type Unlisted = Exclude<keyof NativeBinding, (typeof MEMBERS)[number]>;
/** (fails to compile while a member of NativeBinding is missing from MEMBERS) */
const everyMemberListed: [Unlisted] extends [never] ? true : Unlisted = true;
void everyMemberListed;

type Member = (...args: unknown[]) => unknown;

/**
 * The whole binding as one object (`native.mapLookup(...)`). Each member
 * starts as a stub: the first call of any loads the addon and puts its real
 * functions in place of every stub, so later calls cost nothing extra. A
 * member set from outside (a test's spy) is left alone.
 */
export const native = {} as NativeBinding;
const members = native as unknown as Record<string, Member>;
const stubs = new Map<string, Member>();
function bindAddon(): void {
  const a = addon() as unknown as Record<string, Member>;
  for (const name of MEMBERS) if (members[name] === stubs.get(name)) members[name] = a[name]!;
}
for (const name of MEMBERS) {
  const stub = function (this: unknown, ...args: unknown[]): unknown {
    bindAddon();
    // the addon's own member (not members[name]: a spy may hold this stub as its original)
    const real = (addon() as unknown as Record<string, Member>)[name] as Member & (new (...a: unknown[]) => unknown);
    return new.target ? new real(...args) : real.apply(this, args);
  } as Member;
  stubs.set(name, stub);
  members[name] = stub;
}

/** One member of the binding as a function of its own (through `native`, so a spy applies). */
function lazy<K extends keyof NativeBinding>(name: K): NativeBinding[K] {
  return ((...args: unknown[]) => (members[name] as Member)(...args)) as NativeBinding[K];
}

/** One class of the binding (through `native`). */
function lazyClass<K extends 'PacketSocket' | 'RingBufferReader'>(name: K): NativeBinding[K] {
  return function (...args: unknown[]) {
    return new (members[name] as unknown as new (...a: unknown[]) => object)(...args);
  } as unknown as NativeBinding[K];
}

/** Opens an ELF object, reusing/creating pins under pinDir, and loads it. */
export const loadObject: (path: string, pinDir: string, opts?: LoadObjectOptions) => LoadedObject = lazy('loadObject');
/** Closes the object's fds; pins stay. */
export const closeObject: (id: number) => void = lazy('closeObject');
export const pinProgram: (fd: number, path: string) => void = lazy('pinProgram');
/** pins any bpf fd (a link, say) */
export const pinObject: (fd: number, path: string) => void = lazy('pinObject');
/** false when nothing was pinned there */
export const unpin: (path: string) => boolean = lazy('unpin');
export const objGet: (path: string) => number = lazy('objGet');
export const closeFd: (fd: number) => void = lazy('closeFd');
export const progInfo: (fd: number) => ProgInfo = lazy('progInfo');
export const mapInfo: (fd: number) => MapInfo = lazy('mapInfo');

// Map access. Sizes must match the map (per-CPU values: roundup(size, 8) *
// numPossibleCpus()); a mismatch is a RangeError.
export const mapUpdate: (fd: number, key: Buffer, value: Buffer, flags?: number) => void = lazy('mapUpdate');
/** null when the key is absent */
export const mapLookup: (fd: number, key: Buffer, valueSize: number) => Buffer | null = lazy('mapLookup');
/** false when the key was absent */
export const mapDelete: (fd: number, key: Buffer) => boolean = lazy('mapDelete');
/** first key for null; null after the last key */
export const mapGetNextKey: (fd: number, key: Buffer | null, keySize: number) => Buffer | null = lazy('mapGetNextKey');
export const mapDump: (fd: number, keySize: number, valueSize: number) => MapDump = lazy('mapDump');
/** returns the number of elements written */
export const mapUpdateBatch: (fd: number, keys: Buffer, values: Buffer, count: number, flags?: number) => number =
  lazy('mapUpdateBatch');
/** returns the number deleted; absent keys are skipped, not counted */
export const mapDeleteBatch: (fd: number, keys: Buffer, count: number) => number = lazy('mapDeleteBatch');
export const createMap: (
  type: number,
  keySize: number,
  valueSize: number,
  maxEntries: number,
  name: string,
  flags?: number,
) => number = lazy('createMap');
export const numPossibleCpus: () => number = lazy('numPossibleCpus');
export const ifNameToIndex: (name: string, netns?: string) => number = lazy('ifNameToIndex');

/** Creates clsact if missing, attaches (or replaces) our filter; returns the prog id. */
export const tcAttach: (opts: TcAttachOptions) => number = lazy('tcAttach');
/** false when the filter (or the clsact qdisc) is absent */
export const tcDetach: (target: TcTarget) => boolean = lazy('tcDetach');
/** attached prog id, or null when absent */
export const tcQuery: (target: TcTarget) => number | null = lazy('tcQuery');
/**
 * tcx (6.6+): creates a link on the device's chain; returns its fd, which the
 * caller pins and/or closes (closing the last reference detaches it).
 */
export const tcxAttach: (opts: TcxAttachOptions) => number = lazy('tcxAttach');
/** the tcx chain in run order (empty when nothing is attached) */
export const tcxQuery: (target: TcxTarget) => TcxChain = lazy('tcxQuery');
/** swap a link's program in place (with oldProgFd: only if it still runs that one) */
export const linkUpdate: (linkFd: number, newProgFd: number, oldProgFd?: number) => void = lazy('linkUpdate');
/** detach a link from its hook now; the link object lives on until its last fd/pin goes */
export const linkDetach: (linkFd: number) => void = lazy('linkDetach');
export const linkInfo: (fd: number) => LinkInfo = lazy('linkInfo');
export const progTestRun: (progFd: number, data: Buffer, opts?: TestRunOptions) => TestRunResult = lazy('progTestRun');
export const layouts: () => Layouts = lazy('layouts');

export const PacketSocket: new (opts: PacketSocketOptions) => PacketSocket = lazyClass('PacketSocket');
export const RingBufferReader: new (opts: RingBufferReaderOptions) => RingBufferReader = lazyClass('RingBufferReader');

/** enum bpf_map_type values used by the agent and its tests. */
export const MapType = {
  HASH: 1,
  ARRAY: 2,
  PERCPU_HASH: 5,
  PERCPU_ARRAY: 6,
  LRU_HASH: 9,
  LRU_PERCPU_HASH: 10,
  LPM_TRIE: 11,
  RINGBUF: 27,
} as const;

/** Update flags and map flags of the bpf(2) UAPI. */
export const BPF_ANY = 0;
export const BPF_NOEXIST = 1;
export const BPF_EXIST = 2;
export const BPF_F_NO_PREALLOC = 1;

/** Attach flags of the mprog API (tcx), uapi 6.6. */
export const BPF_F_REPLACE = 1 << 2;
export const BPF_F_BEFORE = 1 << 3;
export const BPF_F_AFTER = 1 << 4;
export const BPF_F_ID = 1 << 5;
export const BPF_F_LINK = 1 << 13;
/** enum bpf_link_type: a tcx link */
export const BPF_LINK_TYPE_TCX = 11;
