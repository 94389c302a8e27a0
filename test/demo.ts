/*
 * The demo (README's first command): a node-in-a-box with the real datapath.
 * Until the agent learns from DNS, the allowed IP is written directly, the
 * way the agent will write what a DNS answer teaches it.
 *   shop/payments  enforced, allowed 203.0.113.10:443 (tcp)
 *   shop/frontend  not annotated: untouched
 * Real clients in each pod; prints what was tried, allowed or dropped and
 * why; exits 0 only if every outcome is the expected one. --keep leaves the
 * box running and prints how to play with it and how to clean up.
 */
import { Datapath } from '../agent/datapath/datapath.js';
import { IPPROTO } from '../agent/datapath/codecs.js';
import { Topology } from './helpers/topology.js';
import { makeBox } from './helpers/datapath-fixture.js';

interface Trial {
  pod: string;
  proto: 'tcp' | 'udp';
  host: string;
  port: number;
  expect: 'allowed' | 'dropped';
  why: string;
}

const TRIALS: Trial[] = [
  { pod: 'payments', proto: 'tcp', host: '203.0.113.10', port: 443, expect: 'allowed', why: 'allow entry 203.0.113.10 tcp/443' },
  { pod: 'payments', proto: 'tcp', host: '203.0.113.10', port: 80, expect: 'dropped', why: 'port 80 not in the entry' },
  { pod: 'payments', proto: 'tcp', host: '198.51.100.10', port: 443, expect: 'dropped', why: 'no allow entry for this IP' },
  { pod: 'payments', proto: 'udp', host: '2001:db8:ff::10', port: 5000, expect: 'dropped', why: 'no allow entry (IPv6)' },
  { pod: 'frontend', proto: 'tcp', host: '198.51.100.10', port: 443, expect: 'allowed', why: 'pod not annotated: not enforced' },
];

async function main(): Promise<number> {
  const keep = process.argv.includes('--keep');
  const topo = await Topology.create([{ name: 'payments' }, { name: 'frontend' }], { prefix: 'fqedemo' });
  let dp: Datapath | undefined;
  try {
    dp = Datapath.load(topo.pinDir);
    await topo.startOutsideServers();
    const box = makeBox(topo, dp);
    box.enforce('payments', 1);
    box.allow(1, '203.0.113.10', { ports: [{ port: 443, proto: IPPROTO.tcp }] });

    const rows: string[][] = [['POD', 'TRIED', 'RESULT', 'EXPECTED', 'WHY']];
    let failures = 0;
    for (const t of TRIALS) {
      const r = await topo.probe(t.pod, t.proto, t.host, t.port, 800);
      const got = r.ok ? 'allowed' : 'dropped';
      if (got !== t.expect) failures++;
      rows.push([`shop/${t.pod}`, `${t.proto} ${t.host.includes(':') ? `[${t.host}]` : t.host}:${t.port}`, got, got === t.expect ? 'yes' : 'NO', t.why]);
    }
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    for (const r of rows) console.log(r.map((c, i) => c.padEnd(widths[i]!)).join('  '));
    const c = box.counters(1);
    console.log(`\nenforcer counters for shop/payments: passed=${c.passed} dropped=${c.dropped} (not-allowed=${c.reasons['not-allowed']}, port=${c.reasons.port})`);
    console.log(failures === 0 ? '\ndemo: every outcome as expected' : `\ndemo: ${failures} unexpected outcome(s)`);
    if (keep) {
      console.log(`\nkept running. Enter a pod:  ip netns exec ${topo.pod('payments').netns} bash`);
      console.log(`maps:  bpftool map dump pinned ${topo.pinDir}/fqe_allow`);
      console.log('clean up:  npm run demo -- --clean');
      dp.close();
      topo.release();
    }
    return failures === 0 ? 0 : 1;
  } finally {
    if (!keep) {
      dp?.close();
      await topo.destroy();
    }
  }
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    console.error(`demo failed: ${err.stack ?? err.message}`);
    process.exit(1);
  },
);
