/*
 * What a map module declares about its map, once: the pin name (as in
 * bpf/lib/maps.h), the DatapathMaps property it becomes, the kernel's map
 * type, capacity (max_entries) and flags, and the key and value codecs. From
 * that come the map's shape (what migrate.ts and egressctl compare a pin
 * with: shapeChange) and its typed view over an fd (open).
 *
 * The declarations are checked against the compiled objects in
 * test/kernel/codecs.test.ts. Nothing here calls the native binding at
 * import time: open() does, when the datapath opens its maps.
 */
import { BpfMap, type Codec, type Decoder } from '../bpf-map.js';
import { MapType, type MapShape } from '../native.js';
import type { Struct } from '../layout.js';

/** A map's key or value codec with its size (a Struct, or a scalar codec). */
export interface SizedCodec<T> extends Codec<T> {
  readonly size: number;
  /** the C struct behind it (for the cross-check), when it is one */
  readonly struct?: Struct<unknown>;
}

export interface MapDefinition<P extends string, M> {
  /** the pin name, as in bpf/lib/maps.h */
  readonly name: string;
  /** its property in DatapathMaps */
  readonly property: P;
  /** the shape libbpf creates it with (valueSize as declared, not per CPU) */
  readonly shape: MapShape;
  /** its values are read as raw bytes of the size the pin has (the pin's value size is not checked) */
  readonly sizedByPin?: boolean;
  /** the structs it carries (keys, values, ring records), for the cross-check */
  readonly structs: ReadonlyArray<Struct<unknown>>;
  /** the typed view over an open fd (cpus: possible CPUs, for per-CPU values) */
  open(fd: number, cpus: number, pinnedValueSize: () => number): M;
}

const PER_CPU = new Set<number>([MapType.PERCPU_HASH, MapType.PERCPU_ARRAY, MapType.LRU_PERCPU_HASH]);

/** One CPU's slot of a per-CPU value: its size rounded up to 8 bytes. */
export function perCpuSlot(valueSize: number): number {
  return Math.ceil(valueSize / 8) * 8;
}

function structsOf(...codecs: Array<{ struct?: Struct<unknown> }>): Array<Struct<unknown>> {
  return codecs.flatMap((c) => (c.struct ? [c.struct] : []));
}

interface MapBase<P extends string, K> {
  /** the pin name */
  name: string;
  property: P;
  /** MapType */
  type: number;
  /** max_entries, as maps.h gives it */
  maxEntries: number;
  /** map_flags (BPF_F_NO_PREALLOC) */
  flags?: number;
  key: SizedCodec<K>;
}

/** What every map of one key and one value has in common: its name, shape and structs. */
function mapOf<P extends string, K>(def: MapBase<P, K> & { value: { size: number; struct?: Struct<unknown> } }) {
  return {
    name: def.name,
    property: def.property,
    shape: {
      type: def.type,
      keySize: def.key.size,
      valueSize: def.value.size,
      maxEntries: def.maxEntries,
      flags: def.flags ?? 0,
    },
    structs: structsOf(def.key, def.value),
  };
}

interface KeyValueMap<P extends string, K, V> extends MapBase<P, K> {
  value: SizedCodec<V> | Struct<V>;
  /** values the kernel owns: userspace reads them and never writes them */
  readOnly?: boolean;
}

/** A hash, LRU, array or LPM map of one key and one value. */
export function keyValueMap<const P extends string, K, V>(def: KeyValueMap<P, K, V>): MapDefinition<P, BpfMap<K, V>> {
  if (PER_CPU.has(def.type)) throw new Error(`${def.name}: a per-CPU map is a perCpuMap`);
  const value: Decoder<V> & Partial<Codec<V>> = def.readOnly ? { decode: (b) => def.value.decode(b) } : def.value;
  return {
    ...mapOf(def),
    open: (fd) => new BpfMap(def.name, fd, def.key.size, def.value.size, def.key, value),
  };
}

/** A map whose values are kept as raw bytes (kernel state read by its keys only), sized as the pin says. */
export function rawValueMap<const P extends string, K>(
  def: MapBase<P, K> & { value: Struct<unknown> },
): MapDefinition<P, BpfMap<K, Buffer>> {
  return {
    ...mapOf(def),
    sizedByPin: true,
    open: (fd, _cpus, pinnedValueSize) =>
      new BpfMap(def.name, fd, def.key.size, pinnedValueSize(), def.key, { decode: (b: Buffer) => b }),
  };
}

/** A per-CPU map: each CPU's slot decoded and folded into one value (read-only). */
export function perCpuMap<const P extends string, K, V>(
  def: MapBase<P, K> & {
    value: SizedCodec<unknown> | Struct<unknown>;
    /** the value over all CPUs, from `cpus` slots of perCpuSlot(value.size) bytes each */
    fold(b: Buffer, cpus: number): V;
  },
): MapDefinition<P, BpfMap<K, V>> {
  if (!PER_CPU.has(def.type)) throw new Error(`${def.name}: not a per-CPU map type`);
  return {
    ...mapOf(def),
    open: (fd, cpus) =>
      new BpfMap(def.name, fd, def.key.size, perCpuSlot(def.value.size) * cpus, def.key, {
        decode: (b: Buffer) => def.fold(b, cpus),
      }),
  };
}

/** A ring buffer: the datapath hands out its fd, a reader decodes its records. */
export function ringBuffer<const P extends string>(def: {
  name: string;
  property: P;
  bytes: number;
  record: Struct<unknown>;
}): MapDefinition<P, number> {
  return {
    name: def.name,
    property: def.property,
    shape: { type: MapType.RINGBUF, keySize: 0, valueSize: 0, maxEntries: def.bytes, flags: 0 },
    structs: [def.record],
    open: (fd) => fd,
  };
}

/**
 * How a pin's shape differs from the one wanted, in words ("value 48 -> 64
 * bytes"); empty when it is the same. `layoutOnly` compares what reading
 * entries depends on (type, key and value sizes), not capacity or flags.
 * The one comparison of migrate.ts (which pins to move aside) and egressctl
 * (which pins it can read).
 */
export function shapeChange(have: MapShape, want: MapShape, opts: { layoutOnly?: boolean } = {}): string[] {
  const changes: string[] = [];
  if (have.type !== want.type) changes.push(`type ${have.type} -> ${want.type}`);
  if (have.keySize !== want.keySize) changes.push(`key ${have.keySize} -> ${want.keySize} bytes`);
  if (have.valueSize !== want.valueSize) changes.push(`value ${have.valueSize} -> ${want.valueSize} bytes`);
  if (opts.layoutOnly) return changes;
  if (have.maxEntries !== want.maxEntries) changes.push(`capacity ${have.maxEntries} -> ${want.maxEntries}`);
  if (have.flags !== want.flags) changes.push(`flags ${have.flags} -> ${want.flags}`);
  return changes;
}
