/*
 * A short run of every benchmark (BENCH_SMOKE=1) so they do not rot. Only
 * checks that each prints its JSON line with a baseline: no timing is
 * asserted here (figures come from `npm run bench`).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { requireKernelTestEnv } from '../helpers/topology.js';

const BENCH_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bench');

for (const file of readdirSync(BENCH_DIR)
  .filter((f) => f.endsWith('.bench.js'))
  .sort()) {
  test(`benchmark ${file} runs and prints a JSON line with its baseline`, async (t) => {
    if (!requireKernelTestEnv(t, ['dnsmasq', 'curl', 'nsenter', 'cc'])) return;
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile(
        process.execPath,
        [join(BENCH_DIR, file)],
        { env: { ...process.env, BENCH_SMOKE: '1' }, timeout: 120_000 },
        (err, out, stderr) => (err ? reject(new Error(`${file}: ${err.message}\n${stderr}`)) : resolve(out)),
      );
    });
    const lines = stdout
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('{'));
    assert.ok(lines.length >= 1, `${file} printed a JSON line`);
    for (const line of lines) {
      const r = JSON.parse(line) as Record<string, unknown>;
      assert.equal(typeof r.bench, 'string');
      assert.ok(JSON.stringify(r).includes('baseline'), `${file} reports a baseline`);
    }
  });
}
