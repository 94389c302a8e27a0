/*
 * Upgrades of pinned maps. libbpf refuses to reuse a pin whose definition
 * changed (type, key or value size, capacity, flags), so before loading, any
 * such pin is taken out of the way: its entries are kept when their layout is
 * unchanged (a new capacity, new flags), converted when a converter below
 * knows the old layout, left to the agent when it rebuilds the map from its
 * sources anyway, and written into the new map after the load; otherwise
 * they are dropped, and said so. Programs still attached keep using the old
 * map until the new programs replace them.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { native, MapType, type MapShape } from './native.js';
import { shapeChange } from './maps/define.js';

export interface MigrationStep {
  map: string;
  /**
   * kept: entries copied as they were; converted: copied in the new layout;
   * rebuilt: the agent writes them again from its sources; dropped: lost
   */
  action: 'kept' | 'converted' | 'rebuilt' | 'dropped';
  entries: number;
  from: MapShape;
  to: MapShape;
}

/** One entry's bytes in the old layout -> the new one (per-CPU values: one CPU's slot). */
interface Converter {
  from: { keySize: number; valueSize: number };
  key?(old: Buffer): Buffer;
  value?(old: Buffer): Buffer;
}

/** Copy `old` into a zeroed buffer of `size` bytes, moving [from, from+len) to `to`. */
function moved(old: Buffer, size: number, moves: Array<[from: number, len: number, to: number]>): Buffer {
  const out = Buffer.alloc(size);
  for (const [from, len, to] of moves) old.copy(out, to, from, from + len);
  return out;
}

/*
 * Layouts of earlier releases that this one converts, by map. ABI 1 -> 2:
 * fqe_config grew the query window and connect grace (zero = kernel
 * default); fqe_counters grew learn_refused and room for 16 reasons.
 */
const CONVERTERS: Record<string, Converter> = {
  fqe_config: { from: { keySize: 4, valueSize: 48 }, value: (v) => moved(v, 64, [[0, 48, 0]]) },
  fqe_counters: {
    from: { keySize: 4, valueSize: 144 },
    value: (v) =>
      moved(v, 216, [
        [0, 64, 0],
        [64, 64, 72],
        [128, 16, 200],
      ]),
  },
};

/** Maps the agent writes again from its own sources right after start-up: nothing to carry. */
const REBUILT: Record<string, string> = {
  fqe_policy: "rewritten from the pods' annotations (the rules now carry their names)",
};

interface Saved {
  step: MigrationStep;
  keys: Buffer;
  values: Buffer;
  count: number;
}

const PER_CPU = new Set<number>([MapType.PERCPU_HASH, MapType.PERCPU_ARRAY, MapType.LRU_PERCPU_HASH]);

/** A pinned map's shape, as the kernel reports it. */
export function pinnedShape(fd: number): MapShape {
  const info = native.mapInfo(fd);
  return {
    type: info.type,
    keySize: info.keySize,
    valueSize: info.valueSize,
    maxEntries: info.maxEntries,
    flags: info.flags,
  };
}

function dumpValueSize(shape: MapShape): number {
  return PER_CPU.has(shape.type) ? Math.ceil(shape.valueSize / 8) * 8 * native.numPossibleCpus() : shape.valueSize;
}

/** The maps the object files define, by name. */
export function expectedShapes(objectPaths: string[]): Map<string, MapShape> {
  const shapes = new Map<string, MapShape>();
  for (const path of objectPaths)
    for (const [name, shape] of Object.entries(native.describeObject(path))) shapes.set(name, shape);
  return shapes;
}

/** Take incompatible pins out of the way; returns what finish() must do after the load. */
export function prepareMigration(pinDir: string, expected: Map<string, MapShape>): Saved[] {
  const saved: Saved[] = [];
  for (const [name, want] of expected) {
    const pin = join(pinDir, name);
    if (!existsSync(pin)) continue;
    const fd = native.objGet(pin);
    try {
      const have = pinnedShape(fd);
      if (shapeChange(have, want).length === 0) continue;
      const sameType = have.type === want.type && have.type !== MapType.RINGBUF;
      const layoutKept = sameType && have.keySize === want.keySize && have.valueSize === want.valueSize;
      const conv = CONVERTERS[name];
      const convertible =
        sameType && conv !== undefined && conv.from.keySize === have.keySize && conv.from.valueSize === have.valueSize;
      const action: MigrationStep['action'] = layoutKept
        ? 'kept'
        : convertible
          ? 'converted'
          : name in REBUILT
            ? 'rebuilt'
            : 'dropped';
      let dump: { keys: Buffer; values: Buffer; count: number } = {
        keys: Buffer.alloc(0),
        values: Buffer.alloc(0),
        count: 0,
      };
      if (action === 'kept' || action === 'converted') dump = native.mapDump(fd, have.keySize, dumpValueSize(have));
      if (action === 'converted') dump = convertDump(dump, conv!, have, want);
      saved.push({ step: { map: name, action, entries: dump.count, from: have, to: want }, ...dump });
      native.unpin(pin);
    } finally {
      native.closeFd(fd);
    }
  }
  return saved;
}

function convertDump(
  dump: { keys: Buffer; values: Buffer; count: number },
  conv: Converter,
  from: MapShape,
  to: MapShape,
): { keys: Buffer; values: Buffer; count: number } {
  const cpus = PER_CPU.has(from.type) ? native.numPossibleCpus() : 1;
  const oldSlot = PER_CPU.has(from.type) ? Math.ceil(from.valueSize / 8) * 8 : from.valueSize;
  const newSlot = PER_CPU.has(to.type) ? Math.ceil(to.valueSize / 8) * 8 : to.valueSize;
  const keys: Buffer[] = [];
  const values: Buffer[] = [];
  for (let i = 0; i < dump.count; i++) {
    const key = dump.keys.subarray(i * from.keySize, (i + 1) * from.keySize);
    keys.push(conv.key ? conv.key(key) : Buffer.from(key));
    const value = dump.values.subarray(i * oldSlot * cpus, (i + 1) * oldSlot * cpus);
    for (let cpu = 0; cpu < cpus; cpu++) {
      const slot = value.subarray(cpu * oldSlot, cpu * oldSlot + from.valueSize);
      const out = Buffer.alloc(newSlot);
      (conv.value ? conv.value(slot) : slot).copy(out, 0, 0, to.valueSize);
      values.push(out);
    }
  }
  return { keys: Buffer.concat(keys), values: Buffer.concat(values), count: dump.count };
}

/** Why a map is rebuilt rather than carried over (for the log). */
export function rebuiltBecause(map: string): string | undefined {
  return REBUILT[map];
}

/** Write the kept and converted entries into the new maps (by name -> fd). */
export function finishMigration(saved: Saved[], mapFds: Record<string, number>): MigrationStep[] {
  for (const s of saved) {
    const fd = mapFds[s.step.map];
    if ((s.step.action !== 'kept' && s.step.action !== 'converted') || s.count === 0 || fd === undefined) continue;
    const room = Math.min(s.count, s.step.to.maxEntries);
    const keySize = s.step.to.keySize;
    const valueSize = dumpValueSize(s.step.to);
    native.mapUpdateBatch(fd, s.keys.subarray(0, room * keySize), s.values.subarray(0, room * valueSize), room, 0);
    s.step.entries = room;
  }
  return saved.map((s) => s.step);
}
