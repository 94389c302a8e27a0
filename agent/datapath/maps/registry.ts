/*
 * The datapath's maps, derived from the map modules (index.ts): their pin
 * names (MAP_NAMES), the typed views the Datapath hands out (DatapathMaps,
 * buildMaps) and their shapes (MAP_DEFINITIONS, for egressctl's check and
 * the cross-check test). Nothing here is written per map.
 */
import * as modules from './index.js';
import { native } from '../native.js';
import type { MapDefinition } from './define.js';

type Exported = (typeof modules)[keyof typeof modules];
/** every map definition a module exports */
type Definition = Extract<Exported, MapDefinition<string, unknown>>;

export type MapName = string;

function isDefinition(v: unknown): v is Definition {
  return typeof v === 'object' && v !== null && 'property' in v && 'shape' in v && 'open' in v;
}

/** Every map, in pin-name order. */
export const MAP_DEFINITIONS: readonly Definition[] = Object.values(modules)
  .filter(isDefinition)
  .sort((a, b) => a.name.localeCompare(b.name));

export const MAP_NAMES: readonly string[] = MAP_DEFINITIONS.map((d) => d.name);

/** Typed access to every map, by the property its module names (`allow`, `conntrack`, `eventsFd`, ...). */
export type DatapathMaps = { [D in Definition as D['property']]: ReturnType<D['open']> };

/** The typed views over the maps' fds (by pin name). */
export function buildMaps(fds: Record<string, number>): DatapathMaps {
  const cpus = native.numPossibleCpus();
  const maps: Record<string, unknown> = {};
  for (const d of MAP_DEFINITIONS) {
    const fd = fds[d.name];
    if (fd === undefined) throw new Error(`no fd for map ${d.name}`);
    maps[d.property] = d.open(fd, cpus, () => native.mapInfo(fd).valueSize);
  }
  return maps as DatapathMaps;
}
