/*
 * One pinned map looked at without opening the datapath: its shape, or how
 * full it is. Each call opens the pin and closes it again. Errors are the
 * kernel's (a BpfError with ENOENT, EACCES, ...): the caller words them.
 * egressctl reads the pins through these, never through the addon.
 */
import { native, type MapShape } from './native.js';
import { pinnedShape } from './migrate.js';

function withPin<T>(path: string, fn: (fd: number) => T): T {
  const fd = native.objGet(path);
  try {
    return fn(fd);
  } finally {
    native.closeFd(fd);
  }
}

/** The shape (type, sizes, capacity, flags) of the map pinned at `path`. */
export function pinnedMapShape(path: string): MapShape {
  return withPin(path, pinnedShape);
}

/** How many entries the map pinned at `path` holds, of how many. */
export function pinnedMapFill(path: string): { entries: number; capacity: number } {
  return withPin(path, (fd) => {
    const info = native.mapInfo(fd);
    return { entries: native.mapDump(fd, info.keySize, info.valueSize).count, capacity: info.maxEntries };
  });
}
