/*
 * The demo (the README's first command) runs, every outcome is the expected
 * one, it prints the table and egressctl's views, and leaves nothing behind.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { requireKernelTestEnv } from '../helpers/topology.js';

const DEMO = join(dirname(fileURLToPath(import.meta.url)), '..', 'demo.js');

test('the demo runs, every outcome is as expected, and it leaves nothing behind', async (t) => {
  if (!requireKernelTestEnv(t, ['dnsmasq', 'dig', 'curl', 'nsenter', 'openssl'])) return;
  const { code, stdout, stderr } = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, [DEMO], { timeout: 120_000 }, (err, out, errOut) =>
      resolve({ code: err ? 1 : 0, stdout: out, stderr: errOut }),
    );
  });
  assert.equal(code, 0, `demo failed:\n${stdout}\n${stderr}`);
  for (const text of [
    'POD',
    'RESULT',
    'shop/payments',
    'shop/frontend',
    'shop/audit',
    'shop/checkout',
    'SNI blocked.test',
    'shop/ledger',
    'decided by: policy shop/ledger-egress',
    '$ egressctl inspect',
    '$ egressctl policies',
    '$ egressctl drops',
    'demo: every outcome as expected',
  ]) {
    assert.ok(stdout.includes(text), `the demo prints ${text}`);
  }
  assert.ok(!stdout.includes(' NO '), 'no unexpected outcome');
  const namespaces = execFileSync('ip', ['netns', 'list']).toString();
  assert.ok(!namespaces.includes('fqedemo-'), `no demo namespace left: ${namespaces}`);
  assert.deepEqual(
    readdirSync('/sys/fs/bpf').filter((f) => f.startsWith('fqedemo-')),
    [],
    'no demo pin dir left',
  );
});
