/*
 * fqe_allow as the kernel walks it, in memory: bpf_map_get_next_key in
 * postorder (trieCompare), and from a key the map does not hold, the first
 * key again. Counts its calls. For unit tests and benchmarks of walks
 * (agent/datapath/allow-walk.ts); test/kernel/allow-map.test.ts checks the
 * order against the real trie.
 */
import { trieCompare, type AllowCursor } from '../../agent/datapath/allow-walk.js';
import { formatCidr } from '../../agent/net/addr.js';
import type { AllowKey, AllowValue } from '../../agent/datapath/codecs.js';

function str(k: AllowKey): string {
  return `${k.identity}/${formatCidr(k.addr, k.prefixLen)}`;
}

export class FakeTrie implements AllowCursor {
  private readonly entries = new Map<string, { key: AllowKey; value: AllowValue }>();
  private sorted: AllowKey[] | undefined;
  calls = 0;

  set(key: AllowKey, value: AllowValue): void {
    if (!this.entries.has(str(key))) this.sorted = undefined;
    this.entries.set(str(key), { key, value });
  }

  delete(key: AllowKey): void {
    if (this.entries.delete(str(key))) this.sorted = undefined;
  }

  get(key: AllowKey): AllowValue | undefined {
    this.calls++;
    return this.entries.get(str(key))?.value;
  }

  nextKey(key: AllowKey | null): AllowKey | undefined {
    this.calls++;
    this.sorted ??= [...this.entries.values()].map((e) => e.key).sort(trieCompare);
    if (key === null || !this.entries.has(str(key))) return this.sorted[0];
    let lo = 0;
    let hi = this.sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (trieCompare(this.sorted[mid]!, key) <= 0) lo = mid + 1;
      else hi = mid;
    }
    return this.sorted[lo];
  }
}
