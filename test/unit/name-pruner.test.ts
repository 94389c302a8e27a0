/*
 * fqe_names stays bounded: a name nothing refers to goes after two passes in
 * a row; one referred to again in between stays.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NamePruner } from '../../agent/names/name-pruner.js';

test('a name unreferenced in two passes in a row goes; a referenced or re-referenced one stays', () => {
  const p = new NamePruner();
  assert.deepEqual(p.pass([1n, 2n, 3n], new Set([1n])), [], 'first strike only');
  assert.deepEqual(
    p.pass([1n, 2n, 3n, 4n], new Set([1n, 3n])),
    [2n],
    '2 unreferenced twice; 3 referenced again; 4 new',
  );
  assert.deepEqual(p.pass([1n, 3n, 4n], new Set([1n])), [4n], '4 now twice; 3 gets its first strike');
  assert.deepEqual(p.pass([1n, 3n], new Set([1n, 3n])), []);
});
