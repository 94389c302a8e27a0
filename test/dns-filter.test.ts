/*
 * Kernel test of the DNS socket filter on a real AF_PACKET tap in the node
 * namespace: real dnsmasq, real dig in the pods, real non-DNS traffic.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { requireKernelTestEnv, OUTSIDE_HOSTS_V4, OUTSIDE_HOSTS_V6, OUTSIDE_LINK_V4, OUTSIDE_LINK_V6, SILENT_RESOLVER, NETTOOL, sleep } from './helpers/topology.js';
import { formatIp } from '../agent/datapath/addr.js';
import { withBox } from './helpers/datapath-fixture.js';
import type { CapturedPacket } from '../agent/datapath/native.js';

const PACKET_OUTGOING = 4;

interface Seen {
  ifindex: number;
  outgoing: boolean;
  family: 4 | 6;
  proto: 'udp' | 'tcp' | 'other';
  sport: number;
  dport: number;
  payload: Buffer;
}

/** Just enough parsing to classify what the tap delivered. */
function classify(p: CapturedPacket): Seen {
  const d = p.data;
  const etype = d.readUInt16BE(12);
  let off = 14;
  let family: 4 | 6;
  let proto: number;
  let end: number;
  if (etype === 0x0800) {
    family = 4;
    proto = d[off + 9]!;
    end = off + d.readUInt16BE(off + 2);
    off += (d[off]! & 0x0f) * 4;
  } else if (etype === 0x86dd) {
    family = 6;
    proto = d[off + 6]!;
    end = off + 40 + d.readUInt16BE(off + 4);
    off += 40;
  } else {
    return { ifindex: p.ifindex, outgoing: p.pktType === PACKET_OUTGOING, family: 4, proto: 'other', sport: 0, dport: 0, payload: Buffer.alloc(0) };
  }
  const sport = d.readUInt16BE(off);
  const dport = d.readUInt16BE(off + 2);
  const hdr = proto === 6 ? (d[off + 12]! >> 4) * 4 : 8;
  return {
    ifindex: p.ifindex,
    outgoing: p.pktType === PACKET_OUTGOING,
    family,
    proto: proto === 6 ? 'tcp' : proto === 17 ? 'udp' : 'other',
    sport,
    dport,
    payload: d.subarray(off + hdr, end),
  };
}

/** DNS ids of the messages in a run of payloads (TCP: length-prefixed stream). */
function dnsIds(payloads: Buffer[], proto: 'udp' | 'tcp'): number[] {
  if (proto === 'udp') return payloads.map((p) => p.readUInt16BE(0));
  const stream = Buffer.concat(payloads);
  const ids: number[] = [];
  for (let at = 0; at + 4 <= stream.length; ) {
    const len = stream.readUInt16BE(at);
    ids.push(stream.readUInt16BE(at + 2));
    at += 2 + len;
  }
  return ids;
}

test('the socket filter delivers each DNS answer to an enforced pod exactly once, and no other traffic', async (t) => {
  if (!requireKernelTestEnv(t, ['dnsmasq', 'dig'])) return;
  await withBox(t, [{ name: 'a' }, { name: 'b' }], async (box) => {
    const { topo } = box;
    await topo.startDnsmasq({ 'svc.test': [OUTSIDE_HOSTS_V4[0]!, OUTSIDE_HOSTS_V6[0]!] });
    box.enforce('a', 1401);
    box.trustResolver(OUTSIDE_LINK_V4.outside);
    box.trustResolver(OUTSIDE_LINK_V6.outside);
    box.allow(1401, OUTSIDE_HOSTS_V4[0]!);
    const a = topo.pod('a');

    const seen: Seen[] = [];
    const tap = box.dp.openDnsTap((packets) => seen.push(...packets.map(classify)), { netns: topo.nodeNsPath });
    try {
      const lookups = [
        { server: OUTSIDE_LINK_V4.outside, family: 4, proto: 'udp', type: 'A', expect: OUTSIDE_HOSTS_V4[0]! },
        { server: OUTSIDE_LINK_V4.outside, family: 4, proto: 'tcp', type: 'A', expect: OUTSIDE_HOSTS_V4[0]! },
        { server: OUTSIDE_LINK_V6.outside, family: 6, proto: 'udp', type: 'AAAA', expect: OUTSIDE_HOSTS_V6[0]! },
        { server: OUTSIDE_LINK_V6.outside, family: 6, proto: 'tcp', type: 'AAAA', expect: OUTSIDE_HOSTS_V6[0]! },
      ] as const;
      for (const l of lookups) {
        const args = ['dig', `@${l.server}`, '+short', '+time=2', '+tries=1', ...(l.proto === 'tcp' ? ['+tcp'] : []), 'svc.test', l.type];
        const { stdout } = await topo.exec(a.netns, args);
        assert.equal(stdout.trim(), l.expect, `dig ${l.proto} ${l.type}`);
      }
      // Not DNS: must not reach userspace. A pod that is not enforced: neither.
      assert.equal((await topo.probe('a', 'tcp', OUTSIDE_HOSTS_V4[0]!, 443)).ok, true);
      assert.equal((await topo.probe('a', 'udp', OUTSIDE_HOSTS_V4[0]!, 5000)).ok, true);
      await topo.exec(topo.pod('b').netns, ['dig', `@${OUTSIDE_LINK_V4.outside}`, '+short', '+time=2', '+tries=1', 'svc.test', 'A']);
      await sleep(200);

      assert.ok(seen.length > 0, 'the tap delivered packets');
      for (const s of seen) {
        assert.equal(s.ifindex, a.ifindex, 'only the enforced pod\'s interface');
        assert.ok(s.proto !== 'other' && (s.sport === 53 || s.dport === 53), `only DNS (got ${s.proto} ${s.sport}->${s.dport})`);
        assert.ok(s.payload.length > 0, 'no bare TCP control segments');
      }
      for (const l of lookups) {
        const answers = seen.filter((s) => s.family === l.family && s.proto === l.proto && s.sport === 53);
        const queries = seen.filter((s) => s.family === l.family && s.proto === l.proto && s.dport === 53);
        assert.ok(answers.every((s) => s.outgoing), 'answers are the copy sent to the pod');
        assert.ok(queries.every((s) => !s.outgoing), 'queries are the copy received from the pod');
        const answerIds = dnsIds(answers.map((s) => s.payload), l.proto);
        const queryIds = dnsIds(queries.map((s) => s.payload), l.proto);
        assert.equal(answerIds.length, 1, `exactly one ${l.proto}/v${l.family} answer (got ${answerIds.length})`);
        assert.equal(queryIds.length, 1, `exactly one ${l.proto}/v${l.family} query (got ${queryIds.length})`);
        assert.equal(answerIds[0], queryIds[0], 'the answer belongs to the query');
      }
      assert.equal(tap.stats().drops, 0, 'the socket dropped nothing');
    } finally {
      tap.close();
    }
  });
});

test('DNS to a trusted resolver passes and its query is recorded; DNS to another server is dropped', async (t) => {
  if (!requireKernelTestEnv(t, ['dnsmasq', 'dig'])) return;
  await withBox(t, [{ name: 'a' }], async (box) => {
    const { topo } = box;
    const untrusted = OUTSIDE_HOSTS_V4[2]!;
    await topo.startDnsmasq({ 'svc.test': [OUTSIDE_HOSTS_V4[0]!] }, [`--listen-address=${untrusted}`]);
    box.enforce('a', 1501);
    box.trustResolver(OUTSIDE_LINK_V4.outside);
    const a = topo.pod('a');
    const ok = await topo.exec(a.netns, ['dig', `@${OUTSIDE_LINK_V4.outside}`, '+short', '+time=2', '+tries=1', 'svc.test', 'A']);
    assert.equal(ok.stdout.trim(), OUTSIDE_HOSTS_V4[0], 'a trusted resolver answers');
    // A query nobody answers stays recorded (an answer's learner clears it).
    box.trustResolver(SILENT_RESOLVER);
    await topo.exec(a.netns, [process.execPath, NETTOOL, 'query', SILENT_RESOLVER, 'svc.test', '--id', '4242', '--sport', '40123']);
    const queries = box.dp.maps.queries.entries().filter(([k]) => k.identity === 1501);
    assert.equal(queries.length, 1, 'one pending query recorded');
    const [key, value] = queries[0]!;
    assert.deepEqual({ sport: key.sport, dnsId: key.dnsId, resolver: formatIp(key.resolver), proto: value.proto }, { sport: 40123, dnsId: 4242, resolver: SILENT_RESOLVER, proto: 17 });
    assert.ok(value.sentNs > 0n);
    assert.equal(box.counters(1501).dnsQueries, 2n, 'both counted as DNS queries');
    await assert.rejects(topo.exec(a.netns, ['dig', `@${untrusted}`, '+short', '+time=1', '+tries=1', 'svc.test', 'A']), 'untrusted resolver unreachable');
    assert.ok(box.counters(1501).reasons['untrusted-dns'] > 0n, 'dropped as untrusted DNS');
  });
});
