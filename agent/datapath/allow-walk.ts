/*
 * Walks of fqe_allow, one identity's range at a time, in bounded steps.
 * fqe_allow is an LPM trie: the kernel has no batch lookup for it, and
 * bpf_map_get_next_key goes in postorder (more specific keys first), and
 * from a key the map does not hold it starts again at the first key. Its key
 * is the identity (32 bits, in the order of its little-endian bytes) then
 * the address, so one identity's entries form one subtree: a contiguous
 * range. A walk of identity X starts from a seek point, the last key the
 * caller knows the map holds before X's range (the reconciler's shadow), so
 * it costs X's entries (two calls each: next key, value) plus the unknown
 * entries between the seek point and X (one call each), not the map. It
 * stops after `budget` calls and resumes from its last key; when that key
 * left the map meanwhile it seeks again. Knows the key order and nothing of
 * what entries mean: what to do with an entry is the caller's.
 */
import type { AllowKey, AllowValue } from './codecs.js';

/** The map calls a walk makes (a BpfMap of fqe_allow, or a fake). */
export interface AllowCursor {
  /** bpf_map_get_next_key: the key after `key` (the first for null), undefined after the last */
  nextKey(key: AllowKey | null): AllowKey | undefined;
  get(key: AllowKey): AllowValue | undefined;
}

export interface AllowWalkDeps {
  map: AllowCursor;
  /** identities with keys the map holds, as far as the caller knows */
  knownIdentities(): Iterable<number>;
  /** those keys */
  knownKeys(identity: number): Iterable<AllowKey>;
  /** an entry of an identity being walked */
  found(key: AllowKey, value: AllowValue): void;
}

export interface WalkStep {
  /** map calls made */
  calls: number;
  /** entries of walked identities found */
  entries: number;
  /** identities whose range was walked to its end */
  finished: number;
}

/** Identities in the trie's order: their little-endian bytes compared in order. */
export function identityCompare(a: number, b: number): number {
  for (let shift = 0; shift < 32; shift += 8) {
    const d = ((a >>> shift) & 0xff) - ((b >>> shift) & 0xff);
    if (d !== 0) return d;
  }
  return 0;
}

/** Two keys in the order bpf_map_get_next_key returns them (postorder: a prefix comes after what it covers). */
export function trieCompare(a: AllowKey, b: AllowKey): number {
  const id = identityCompare(a.identity, b.identity); // (the identity is always matched in full)
  if (id !== 0) return id;
  // the first address bit, within both prefixes, where they differ: 0 comes first
  const n = Math.min(a.prefixLen, b.prefixLen);
  const whole = n >> 3;
  for (let i = 0; i < whole; i++) {
    const d = a.addr[i]! - b.addr[i]!;
    if (d !== 0) return d;
  }
  const rest = n & 7;
  if (rest) {
    const d = (a.addr[whole]! >> (8 - rest)) - (b.addr[whole]! >> (8 - rest));
    if (d !== 0) return d;
  }
  return b.prefixLen - a.prefixLen; // one covers the other: the more specific comes first
}

/** The first key any entry of `identity` could have. */
function rangeStart(identity: number): AllowKey {
  return { identity, addr: Buffer.alloc(16), prefixLen: 128 };
}

/** seek points that turned out not to be in the map before a walk starts from the first key */
const MAX_STALE_SEEKS = 3;

export class AllowWalk {
  private readonly waiting = new Set<number>();
  private current: { identity: number; cursor: AllowKey | null; fromMap: boolean; staleSeeks: number } | undefined;

  constructor(private readonly deps: AllowWalkDeps) {}

  /** Walk these identities' ranges (again, when one is being walked now). */
  add(identities: Iterable<number>): void {
    for (const identity of identities) this.waiting.add(identity);
  }

  /** Forget an identity (its pod went away). */
  drop(identity: number): void {
    this.waiting.delete(identity);
    if (this.current?.identity === identity) this.current = undefined;
  }

  /** identities waiting or being walked */
  get pending(): number {
    return this.waiting.size + (this.current ? 1 : 0);
  }

  /** The greatest key the caller knows the map holds that comes before `bound`, or null. */
  private seek(bound: AllowKey): AllowKey | null {
    let best: AllowKey | null = null;
    const better = (k: AllowKey) => trieCompare(k, bound) < 0 && (!best || trieCompare(k, best) > 0);
    for (const k of this.deps.knownKeys(bound.identity)) if (better(k)) best = k;
    if (best) return best;
    let before: number | undefined;
    for (const id of this.deps.knownIdentities()) {
      if (identityCompare(id, bound.identity) < 0 && (before === undefined || identityCompare(id, before) > 0))
        before = id;
    }
    if (before === undefined) return null;
    for (const k of this.deps.knownKeys(before)) if (better(k)) best = k;
    return best;
  }

  /** Walk on for at most `budget` map calls. */
  step(budget: number): WalkStep {
    const r: WalkStep = { calls: 0, entries: 0, finished: 0 };
    while (r.calls < budget) {
      if (!this.current) {
        const identity = this.waiting.values().next();
        if (identity.done) break;
        this.waiting.delete(identity.value);
        this.current = {
          identity: identity.value,
          cursor: this.seek(rangeStart(identity.value)),
          fromMap: false,
          staleSeeks: 0,
        };
      }
      const c = this.current;
      const key = this.deps.map.nextKey(c.cursor);
      r.calls++;
      if (key && c.cursor && trieCompare(key, c.cursor) <= 0) {
        // The cursor is not in the map (deleted since, or a stale seek point):
        // the kernel started again from the first key. Seek before it.
        if (!c.fromMap) c.staleSeeks++;
        c.cursor = c.staleSeeks > MAX_STALE_SEEKS ? null : this.seek(c.cursor);
        c.fromMap = false;
        continue;
      }
      const order = key ? identityCompare(key.identity, c.identity) : 1;
      if (order > 0) {
        // past the range (or the end of the map)
        this.current = undefined;
        r.finished++;
        continue;
      }
      c.cursor = key!;
      c.fromMap = true;
      if (order < 0) continue; // not there yet: no value read
      const value = this.deps.map.get(key!);
      r.calls++;
      if (value) {
        this.deps.found(key!, value);
        r.entries++;
      }
    }
    return r;
  }
}
