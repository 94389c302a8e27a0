/*
 * The node's names: the keyed name hash and which name each hash stands for.
 *
 * - The key (fqe_hash_key) is the node's secret: made once by the first
 *   agent, kept in its pin across restarts, never 0.
 * - fqe_names maps hash -> name for display (egressctl) and for a restarted
 *   agent; the registry keeps a copy in memory and writes each name once.
 * - A name is trusted only when it hashes to the hash it stands for (keyed,
 *   or unkeyed for entries from before the key): the kernel's map is input.
 * - Names nothing refers to any more go, two strikes apart (name-pruner.ts).
 *
 * It owns no policy: whether a pod may have a name is the caller's question.
 */
import { randomBytes } from 'node:crypto';
import type { BpfMap } from '../datapath/bpf-map.js';
import { nameHash } from '../policy/name-hash.js';
import { NamePruner } from './name-pruner.js';
import type { RateLimitedLog } from '../observability/log.js';

export class NameRegistry {
  /** the node's name-hash secret */
  readonly hashKey: bigint;
  private readonly names = new Map<bigint, string>();
  private readonly pruner = new NamePruner();

  constructor(
    private readonly maps: { names: BpfMap<bigint, string>; hashKey: BpfMap<number, bigint> },
    /** a full fqe_names is a pod's doing as often as not: its lines are rate-limited */
    private readonly log: RateLimitedLog,
  ) {
    this.hashKey = nodeHashKey(maps.hashKey);
  }

  /** names held in memory (a copy of fqe_names) */
  get size(): number {
    return this.names.size;
  }

  /** The keyed hash of a name (no record made). */
  hash(name: string): bigint {
    return nameHash(name, this.hashKey);
  }

  /** The name recorded for a hash: the agent's copy, else the pin's. Not checked. */
  lookup(hash: bigint): string | undefined {
    let name = this.names.get(hash);
    if (!name) {
      name = this.maps.names.get(hash);
      if (name) this.names.set(hash, name);
    }
    return name;
  }

  /** The name in memory for a hash (no map read). */
  known(hash: bigint): string | undefined {
    return this.names.get(hash);
  }

  /** Does this name hash to `hash` (keyed, or unkeyed for entries from before the key)? */
  hashesTo(name: string, hash: bigint): boolean {
    try {
      return nameHash(name, this.hashKey) === hash || nameHash(name) === hash;
    } catch {
      return false; // not a name a policy could hold
    }
  }

  /** hash -> name in fqe_names, so egressctl and a restarted agent can show names. */
  remember(hash: bigint, name: string): void {
    if (this.names.get(hash) === name) return;
    this.names.set(hash, name);
    try {
      this.maps.names.set(hash, name);
    } catch (err) {
      this.log.warn(
        'names-unrecorded',
        { name, err: (err as Error).message },
        'could not record the name in fqe_names (egressctl shows its hash)',
      );
    }
  }

  /**
   * The keyed hash of a name, with the name recorded for it in fqe_names.
   * Every hash the agent writes into fqe_allow goes through here, so the
   * name behind an entry is always on record: egressctl shows it, and a
   * restarted agent restores the entry. (Entries restored from before the
   * keyed hash carry the unkeyed one; they are rewritten under the keyed
   * hash, which fqe_names did not hold yet.)
   */
  recordedHash(name: string): bigint {
    const hash = this.hash(name);
    this.remember(hash, name);
    return hash;
  }

  /** Every name in fqe_names into memory (start-up). */
  restore(): number {
    for (const [hash, name] of this.maps.names.entries()) this.names.set(hash, name);
    return this.names.size;
  }

  /** Names none of `referenced` refers to (two passes in a row) leave fqe_names and memory; how many went. */
  prune(referenced: Set<bigint>): number {
    const stored = this.maps.names.entries().map(([hash]) => hash);
    const gone = this.pruner.pass(stored, referenced);
    if (gone.length) this.maps.names.deleteMany(gone);
    const kept = new Set(stored);
    for (const hash of gone) kept.delete(hash);
    for (const hash of [...this.names.keys()]) if (!kept.has(hash)) this.names.delete(hash);
    return gone.length;
  }
}

/** The node's name-hash secret: the pinned one, or a new random one (never 0). */
function nodeHashKey(map: BpfMap<number, bigint>): bigint {
  const pinned = map.get(0) ?? 0n;
  if (pinned !== 0n) return pinned;
  let key = 0n;
  while (key === 0n) key = randomBytes(8).readBigUInt64LE(0);
  map.set(0, key);
  return key;
}
