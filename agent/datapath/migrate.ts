/*
 * Upgrades of pinned maps. libbpf refuses to reuse a pin whose definition
 * changed (type, key or value size, capacity, flags), so before loading, any
 * such pin is taken out of the way: its entries are kept when their layout is
 * unchanged (a new capacity, new flags) and written into the new map after
 * the load; otherwise they are dropped, and said so. Programs still attached
 * keep using the old map until the new programs replace them.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { native, MapType, type MapShape } from './native.js';

export interface MigrationStep {
  map: string;
  /** kept: entries copied into the new map; dropped: layout changed, entries lost */
  action: 'kept' | 'dropped';
  entries: number;
  from: MapShape;
  to: MapShape;
}

interface Saved {
  step: MigrationStep;
  keys: Buffer;
  values: Buffer;
  count: number;
}

const PER_CPU = new Set<number>([MapType.PERCPU_HASH, MapType.PERCPU_ARRAY, MapType.LRU_PERCPU_HASH]);

function sameShape(a: MapShape, b: MapShape): boolean {
  return a.type === b.type && a.keySize === b.keySize && a.valueSize === b.valueSize && a.maxEntries === b.maxEntries && a.flags === b.flags;
}

function dumpValueSize(shape: MapShape): number {
  return PER_CPU.has(shape.type) ? Math.ceil(shape.valueSize / 8) * 8 * native.numPossibleCpus() : shape.valueSize;
}

/** The maps the object files define, by name. */
export function expectedShapes(objectPaths: string[]): Map<string, MapShape> {
  const shapes = new Map<string, MapShape>();
  for (const path of objectPaths) for (const [name, shape] of Object.entries(native.describeObject(path))) shapes.set(name, shape);
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
      const info = native.mapInfo(fd);
      const have: MapShape = { type: info.type, keySize: info.keySize, valueSize: info.valueSize, maxEntries: info.maxEntries, flags: info.flags };
      if (sameShape(have, want)) continue;
      const layoutKept = have.type === want.type && have.keySize === want.keySize && have.valueSize === want.valueSize && have.type !== MapType.RINGBUF;
      const dump = layoutKept ? native.mapDump(fd, have.keySize, dumpValueSize(have)) : { keys: Buffer.alloc(0), values: Buffer.alloc(0), count: 0 };
      saved.push({ step: { map: name, action: layoutKept ? 'kept' : 'dropped', entries: dump.count, from: have, to: want }, ...dump });
      native.unpin(pin);
    } finally {
      native.closeFd(fd);
    }
  }
  return saved;
}

/** Write the kept entries into the new maps (by name -> fd). */
export function finishMigration(saved: Saved[], mapFds: Record<string, number>): MigrationStep[] {
  for (const s of saved) {
    const fd = mapFds[s.step.map];
    if (s.step.action !== 'kept' || s.count === 0 || fd === undefined) continue;
    const room = Math.min(s.count, s.step.to.maxEntries);
    const keySize = s.step.to.keySize;
    const valueSize = dumpValueSize(s.step.to);
    native.mapUpdateBatch(fd, s.keys.subarray(0, room * keySize), s.values.subarray(0, room * valueSize), room, 0);
    s.step.entries = room;
  }
  return saved.map((s) => s.step);
}
