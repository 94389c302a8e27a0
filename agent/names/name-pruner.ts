/*
 * Which names can go from fqe_names (and the agent's copy)? A name stays
 * while an allow entry, a policy rule or the FQDN cache refers to its hash;
 * one that nothing referred to in two passes in a row goes (two strikes: the
 * inline learner may write a name a moment before the entry that refers to
 * it, and a pass reads the two maps at slightly different times). Pure: the
 * caller reads the maps and deletes.
 */
export class NamePruner {
  private unreferencedBefore = new Set<bigint>();

  /** Hashes to delete now: stored, and referenced neither now nor in the previous pass. */
  pass(stored: Iterable<bigint>, referenced: Set<bigint>): bigint[] {
    const unreferenced = new Set<bigint>();
    const gone: bigint[] = [];
    for (const hash of stored) {
      if (referenced.has(hash)) continue;
      if (this.unreferencedBefore.has(hash)) gone.push(hash);
      else unreferenced.add(hash);
    }
    this.unreferencedBefore = unreferenced;
    return gone;
  }
}
