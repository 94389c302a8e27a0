/*
 * Flows stay up: conntrack under concurrent updates from both directions,
 * each pod's shares of the flow table (its own opens, and those towards
 * it), and BIG TCP lengths. Real
 * programs, the real agent, iperf3 and nettool in the node-in-a-box; BIG TCP
 * through BPF_PROG_TEST_RUN (veth here does not build >64 KiB packets).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { requireKernelTestEnv, sleep, NETTOOL } from '../helpers/topology.js';
import { withAgentBox, ZONE, type AgentBox } from '../helpers/agent-fixture.js';
import { LearnerHarness } from '../helpers/learner-harness.js';
import { buildFrame } from '../helpers/frames.js';
import { egressctl } from '../helpers/egressctl.js';
import { native } from '../../agent/datapath/native.js';
import { parseCidr } from '../../agent/net/addr.js';
import { AllowSource, CtFlag } from '../../agent/datapath/codecs.js';

const TOOLS = ['dnsmasq', 'dig', 'curl', 'nsenter', 'iperf3'];
const TC_ACT_UNSPEC = 0xffffffff; // -1 as the u32 test-run retval

function identityOf(box: AgentBox, pod: string): number {
  const found = box.maps((dp) => dp.maps.pods.entries().find(([, info]) => info.name === pod));
  assert.ok(found, `pod ${pod} has an identity`);
  return found[0];
}

test('BIG TCP: an IPv4 total length of 0 and an IPv6 payload length of 0 take the length from the packet', (t) => {
  if (!requireKernelTestEnv(t)) return;
  const h = LearnerHarness.open();
  try {
    for (const dst of ['203.0.113.10', '2001:db8:ff::10']) {
      const c = parseCidr(dst);
      h.dp.maps.allow.set(
        { identity: h.identity, addr: c.addr, prefixLen: c.prefixLen },
        { expiresNs: 0n, nameHash: 0n, ports: [], source: AllowSource.static },
      );
    }
    const enforcer = h.dp.programs!.enforcer;
    const payload = Buffer.alloc(1400, 7);
    const v4 = buildFrame({
      src: h.podV4,
      dst: '203.0.113.10',
      proto: 'tcp',
      sport: 40000,
      dport: 443,
      tcpFlags: 0x10,
      payload,
    });
    const v6 = buildFrame({
      src: h.podV6,
      dst: '2001:db8:ff::10',
      proto: 'tcp',
      sport: 40000,
      dport: 443,
      tcpFlags: 0x10,
      payload,
    });
    assert.equal(native.progTestRun(enforcer, v4).retval, TC_ACT_UNSPEC, 'a normal IPv4 segment passes');
    v4.writeUInt16BE(0, 14 + 2); // tot_len 0, as BIG TCP hands it to tc
    v6.writeUInt16BE(0, 14 + 4); // payload_len 0 (the jumbo option is gone by tc)
    assert.equal(
      native.progTestRun(enforcer, v4).retval,
      TC_ACT_UNSPEC,
      'IPv4 BIG TCP passes to an allowed destination',
    );
    assert.equal(
      native.progTestRun(enforcer, v6).retval,
      TC_ACT_UNSPEC,
      'IPv6 BIG TCP passes to an allowed destination',
    );
    const other = buildFrame({
      src: h.podV4,
      dst: '198.51.100.10',
      proto: 'tcp',
      sport: 40001,
      dport: 443,
      tcpFlags: 0x02,
      payload,
    });
    other.writeUInt16BE(0, 14 + 2);
    assert.equal(
      native.progTestRun(enforcer, other).retval,
      2 /* TC_ACT_SHOT */,
      'and is still judged: a disallowed one is dropped',
    );
    assert.equal(h.dp.maps.counters.get(h.identity)?.reasons.malformed ?? 0n, 0n, 'nothing counted as malformed');
  } finally {
    h.close();
  }
});

test('a closed TCP flow cannot be reopened past the policy: a new SYN on its 5-tuple is judged afresh', (t) => {
  if (!requireKernelTestEnv(t)) return;
  const h = LearnerHarness.open();
  try {
    const c = parseCidr('203.0.113.10');
    const key = { identity: h.identity, addr: c.addr, prefixLen: c.prefixLen };
    h.dp.maps.allow.set(key, { expiresNs: 0n, nameHash: 0n, ports: [], source: AllowSource.static });
    const enforcer = h.dp.programs!.enforcer;
    const seg = (tcpFlags: number) =>
      buildFrame({ src: h.podV4, dst: '203.0.113.10', proto: 'tcp', sport: 41000, dport: 443, tcpFlags });
    assert.equal(native.progTestRun(enforcer, seg(0x02)).retval, TC_ACT_UNSPEC, 'SYN to an allowed address');
    assert.equal(native.progTestRun(enforcer, seg(0x11)).retval, TC_ACT_UNSPEC, 'FIN of that connection');
    h.dp.maps.allow.delete(key); // the name is no longer allowed (policy narrowed, or TTL ran out)
    assert.equal(
      native.progTestRun(enforcer, seg(0x10)).retval,
      TC_ACT_UNSPEC,
      "the closing connection's last ACK still passes",
    );
    assert.equal(
      native.progTestRun(enforcer, seg(0x02)).retval,
      2 /* TC_ACT_SHOT */,
      'a new SYN on the same 5-tuple is refused',
    );
    assert.equal(h.dp.maps.counters.get(h.identity)?.reasons['not-allowed'], 1n, 'as not-allowed');
  } finally {
    h.close();
  }
});

test('flows opened towards a pod count against a share of their own: past it, only new inbound flows are refused', (t) => {
  if (!requireKernelTestEnv(t)) return;
  const h = LearnerHarness.open();
  try {
    h.dp.maps.config.set(0, { ...h.dp.maps.config.get(0)!, ctPerPod: 10 });
    const c = parseCidr('203.0.113.10');
    h.dp.maps.allow.set(
      { identity: h.identity, addr: c.addr, prefixLen: c.prefixLen },
      { expiresNs: 0n, nameHash: 0n, ports: [], source: AllowSource.static },
    );
    const inbound = (sport: number) =>
      native.progTestRun(
        h.dp.programs!.learner,
        buildFrame({ src: '198.51.100.77', dst: h.podV4, proto: 'udp', sport, dport: 7000 }),
      ).retval;
    const results = Array.from({ length: 30 }, (_, i) => inbound(20000 + i));
    assert.deepEqual(results.slice(0, 10), Array(10).fill(TC_ACT_UNSPEC), 'inbound flows within the share pass');
    assert.deepEqual(results.slice(10), Array(20).fill(2 /* TC_ACT_SHOT */), 'past the inbound share: refused');
    assert.equal(h.dp.maps.ctInCounts.get(h.identity), 10n, 'counted in the inbound share');
    const out = (sport: number) =>
      native.progTestRun(
        h.dp.programs!.enforcer,
        buildFrame({ src: h.podV4, dst: '203.0.113.10', proto: 'udp', sport, dport: 5000 }),
      ).retval;
    assert.deepEqual(
      Array.from({ length: 10 }, (_, i) => out(30000 + i)),
      Array(10).fill(TC_ACT_UNSPEC),
      "the pod's own new flows still go: its outbound share is untouched",
    );
    assert.equal(out(31000), 2, 'and have a share of their own');
  } finally {
    h.close();
  }
});

/** iperf3 JSON result: the exit code and the error text, if any. */
async function iperf(box: AgentBox, ns: string, args: string[]): Promise<{ ok: boolean; error: string }> {
  try {
    const r = await box.topo.exec(ns, ['iperf3', '-J', ...args], 60_000);
    const j = JSON.parse(r.stdout) as { error?: string };
    return { ok: j.error === undefined, error: j.error ?? '' };
  } catch (err) {
    return { ok: false, error: (err as Error).message.slice(0, 400) };
  }
}

test('sustained traffic both ways on several flows, past the TTL and towards the pod: no drop, no reset, no flow forgotten', async (t) => {
  if (!requireKernelTestEnv(t, TOOLS)) return;
  // TTL 0 answers, --min-ttl 1s and a 100 ms grace: the pod's own flows outlive their entry within a second.
  await withAgentBox(
    t,
    [{ name: 'a' }],
    { agentArgs: ['--min-ttl', '1s', '--connect-grace', '100ms'] },
    async (box) => {
      box.writePods([{ name: 'a', allow: 'api.stripe.test' }]);
      await box.startAgent();
      const pod = box.topo.pod('a');
      const id = identityOf(box, 'a');
      const servers = [
        box.topo.spawnReady(pod.netns, ['iperf3', '-s', '-1', '--forceflush', '-p', '5201'], /listening/i),
        box.topo.spawnReady(
          box.topo.outNs,
          ['iperf3', '-s', '-1', '--forceflush', '-p', '5202', '-B', '203.0.113.10'],
          /listening/i,
        ),
      ];
      await Promise.all(servers);
      assert.deepEqual(await box.dig('a', 'api.stripe.test'), [ZONE['api.stripe.test']![0]]);
      const droppedBefore = box.maps((dp) => dp.maps.counters.get(id)?.dropped ?? 0n);
      const common = ['--bidir', '-P', '4', '-t', '6', '-b', '100M'];
      const [towardsPod, fromPod] = await Promise.all([
        iperf(box, box.topo.outNs, ['-c', pod.v4, '-p', '5201', ...common]),
        iperf(box, pod.netns, ['-c', '203.0.113.10', '-p', '5202', ...common]),
      ]);
      assert.equal(towardsPod.ok, true, `iperf3 towards the pod: ${towardsPod.error}`);
      assert.equal(fromPod.ok, true, `iperf3 from the pod, past its TTL: ${fromPod.error}`);
      const c = box.maps((dp) => dp.maps.counters.get(id)!);
      assert.equal(
        c.dropped - droppedBefore,
        0n,
        `no enforcer drop (${JSON.stringify(c.reasons, (_k, v) => (typeof v === 'bigint' ? String(v) : v))})`,
      );
      // Packets of tracked flows are not counted one by one (the fast path); their flows are in the table.
      const tracked = box.maps((dp) => dp.maps.conntrack.entries().filter(([k]) => k.identity === id).length);
      assert.ok(tracked >= 8, `the iperf3 flows are tracked (${tracked})`);
      const expired = box.maps((dp) =>
        dp.maps.allow.entries().every(([, v]) => v.expiresNs !== 0n && v.expiresNs < process.hrtime.bigint()),
      );
      assert.ok(expired, "the answer's entry ran out while the pod's flows went on");
    },
  );
});

test('one pod past its share of the flow table is refused new flows; another pod keeps its flows both ways', async (t) => {
  if (!requireKernelTestEnv(t, TOOLS)) return;
  await withAgentBox(t, [{ name: 'a' }, { name: 'b' }], { agentArgs: ['--flows-per-pod', '100'] }, async (box) => {
    box.writePods([
      { name: 'a', allow: 'api.stripe.test' },
      { name: 'b', allow: 'www.kadath.test' },
    ]);
    await box.startAgent();
    const idA = identityOf(box, 'a');
    const b = box.topo.pod('b');
    await box.topo.spawnReady(b.netns, [process.execPath, NETTOOL, 'serve', '--tcp', '9000'], /ready/);
    assert.deepEqual(await box.dig('a', 'api.stripe.test'), [ZONE['api.stripe.test']![0]]);
    assert.deepEqual(await box.dig('b', 'www.kadath.test'), [ZONE['www.kadath.test']![0]]);
    const hold = (ns: string, host: string, port: number) =>
      box.topo
        .exec(ns, [process.execPath, NETTOOL, 'hold', 'tcp', host, String(port), '--seconds', '6'], 30_000)
        .then((r) => JSON.parse(r.stdout.trim().split('\n').pop()!) as { ok: boolean; error?: string });
    const inbound = hold(box.topo.outNs, b.v4, 9000);
    const outbound = hold(b.netns, '203.0.113.11', 443);
    await sleep(500);
    // A opens 300 UDP flows to an allowed address: 100 fit its share.
    await box.topo.exec(
      box.topo.pod('a').netns,
      [process.execPath, NETTOOL, 'flows', 'udp', '203.0.113.10', '5000', '--count', '300'],
      60_000,
    );
    const [inb, outb] = await Promise.all([inbound, outbound]);
    assert.equal(inb.ok, true, `B's connection opened towards it kept every echo (${inb.error})`);
    assert.equal(outb.ok, true, `B's own connection kept every echo (${outb.error})`);
    const c = box.maps((dp) => dp.maps.counters.get(idA)!);
    assert.ok(c.reasons['flow-quota'] >= 150n, `A's excess is refused and counted (${c.reasons['flow-quota']})`);
    // (the echo server answers from another address of its host, so its replies open flows towards A: its inbound share)
    const held = box.maps(
      (dp) =>
        dp.maps.conntrack.entries().filter(([k, v]) => k.identity === idA && (v.flags & CtFlag.inbound) === 0).length,
    );
    assert.ok(held <= 101, `A holds at most its share of the flows it opens (${held})`);
    assert.ok(
      (await box.metric('fqdn_egress_pod_packets_total', { pod: 'a', reason: 'flow-quota' })) >= 150,
      'in the metrics',
    );
    const r = await egressctl(['drops', '--output', 'json', '--pin-dir', box.topo.pinDir], box.topo.nodeNsPath);
    assert.ok(
      (JSON.parse(r.stdout) as { drops: Array<{ pod: string; reason: string }> }).drops.some(
        (d) => d.pod === 'shop/a' && d.reason === 'flow-quota',
      ),
      'in egressctl drops',
    );
    // Closed and idle flows come back to the pod's share: the sweep writes exact counts.
    await box.waitFor(
      'the count of A written by the sweep',
      () =>
        box.maps(
          (dp) =>
            (dp.maps.ctCounts.get(idA) ?? 0n) ===
            BigInt(
              dp.maps.conntrack.entries().filter(([k, v]) => k.identity === idA && (v.flags & CtFlag.inbound) === 0)
                .length,
            ),
        ),
      8000,
    );
    assert.ok(
      box.maps((dp) =>
        dp.maps.conntrack.entries().some(([k, v]) => k.identity !== idA && (v.flags & CtFlag.inbound) !== 0),
      ),
      "B's inbound flow is tracked",
    );
  });
});

test('peers flooding a pod with new flows use up only its inbound share: its own new connections still go', async (t) => {
  if (!requireKernelTestEnv(t, TOOLS)) return;
  await withAgentBox(t, [{ name: 'a' }], { agentArgs: ['--flows-per-pod', '100'] }, async (box) => {
    box.writePods([{ name: 'a', allow: 'api.stripe.test' }]);
    await box.startAgent();
    const idA = identityOf(box, 'a');
    const a = box.topo.pod('a');
    assert.deepEqual(await box.dig('a', 'api.stripe.test'), [ZONE['api.stripe.test']![0]]);
    // 300 UDP flows from outside towards the pod, each from a port of its own
    await box.topo.exec(
      box.topo.outNs,
      [process.execPath, NETTOOL, 'flows', 'udp', a.v4, '5999', '--count', '300'],
      60_000,
    );
    const inbound = box.maps(
      (dp) =>
        dp.maps.conntrack.entries().filter(([k, v]) => k.identity === idA && (v.flags & CtFlag.inbound) !== 0).length,
    );
    assert.ok(inbound <= 101, `the pod holds at most its inbound share (${inbound})`);
    assert.ok(
      box.maps((dp) => dp.maps.counters.get(idA)!.reasons['flow-quota']) >= 150n,
      'the excess inbound flows are refused and counted',
    );
    assert.equal(
      await box.connect('a', ZONE['api.stripe.test']![0]!),
      true,
      "the pod's own new connection is not refused: its outbound share is untouched",
    );
  });
});
