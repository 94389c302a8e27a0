/*
 * The CNI plugin's installer (agent/cli/install-cni.ts): chained last,
 * idempotent, a single-plugin configuration turned into a list, in a temp
 * dir standing for the host's CNI directories. Pure: any user.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chainConfig, main, PLUGIN_TYPE } from '../../agent/cli/install-cni.js';

test('our plugin goes last, once; a changed pin dir is updated; bad configurations are refused', () => {
  const list = JSON.stringify({ cniVersion: '1.0.0', name: 'k8s', plugins: [{ type: 'ptp' }, { type: 'portmap' }] });
  const a = chainConfig(list, 'x', '/sys/fs/bpf/fqdn-egress');
  assert.equal(a.changed, true);
  assert.deepEqual(
    (a.conflist.plugins as Array<{ type: string }>).map((p) => p.type),
    ['ptp', 'portmap', PLUGIN_TYPE],
  );
  const again = chainConfig(JSON.stringify(a.conflist), 'x', '/sys/fs/bpf/fqdn-egress');
  assert.equal(again.changed, false, 'idempotent');
  const moved = chainConfig(
    JSON.stringify({ ...a.conflist, plugins: [...(a.conflist.plugins as object[]).reverse()] }),
    'x',
    '/sys/fs/bpf/fqdn-egress',
  );
  assert.equal(moved.changed, true, 'not last: moved to the end');
  const other = chainConfig(JSON.stringify(a.conflist), 'x', '/other');
  assert.equal(other.changed, true);
  assert.equal((other.conflist.plugins as Array<{ bpfPinDir?: string }>).at(-1)!.bpfPinDir, '/other');
  assert.throws(() => chainConfig('{', 'bad.conflist', '/p'), /bad.conflist: not JSON/);
  assert.throws(() => chainConfig('{"name":"x"}', 'bad.conf', '/p'), /neither a plugin list/);
  const single = chainConfig(
    JSON.stringify({ cniVersion: '0.4.0', name: 'n', type: 'bridge', bridge: 'cni0' }),
    's',
    '/p',
  );
  assert.deepEqual(single.conflist, {
    cniVersion: '0.4.0',
    name: 'n',
    plugins: [
      { type: 'bridge', bridge: 'cni0' },
      { type: PLUGIN_TYPE, bpfPinDir: '/p' },
    ],
  });
});

test('main: installs the binary and chains into the first configuration, idempotently', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fqe-install-cni-'));
  try {
    const bin = join(dir, 'bin');
    const conf = join(dir, 'net.d');
    mkdirSync(bin);
    mkdirSync(conf);
    const source = join(dir, 'plugin');
    writeFileSync(source, 'binary');
    writeFileSync(join(conf, '10-net.conf'), JSON.stringify({ cniVersion: '1.0.0', name: 'n', type: 'ptp' }));
    writeFileSync(join(conf, '20-other.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: 'o', plugins: [] }));
    const args = ['--source', source, '--bin-dir', bin, '--conf-dir', conf, '--bpf-pin-dir', '/p'];
    main(args);
    assert.equal(readFileSync(join(bin, PLUGIN_TYPE), 'utf8'), 'binary');
    assert.equal(statSync(join(bin, PLUGIN_TYPE)).mode & 0o777, 0o755);
    assert.deepEqual(readdirSync(conf).sort(), [
      '10-net.conf.fqdn-egress.orig',
      '10-net.conflist',
      '20-other.conflist',
    ]);
    const written = readFileSync(join(conf, '10-net.conflist'), 'utf8');
    main(args);
    assert.equal(readFileSync(join(conf, '10-net.conflist'), 'utf8'), written, 'a second run changes nothing');
    assert.deepEqual(JSON.parse(readFileSync(join(conf, '20-other.conflist'), 'utf8')).plugins, [], 'only the first');
    rmSync(join(conf, '10-net.conflist'));
    rmSync(join(conf, '10-net.conf.fqdn-egress.orig'));
    rmSync(join(conf, '20-other.conflist'));
    assert.throws(() => main(args), /no network configuration/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
