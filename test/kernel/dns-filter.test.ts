/*
 * Kernel test of the DNS socket filter on a real AF_PACKET tap in the node
 * namespace: real dnsmasq, real dig in the pods, real non-DNS traffic. The
 * tap carries only what the inline learner left to the agent.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  type Topology,
  requireKernelTestEnv,
  OUTSIDE_HOSTS_V4,
  OUTSIDE_HOSTS_V6,
  OUTSIDE_LINK_V4,
  OUTSIDE_LINK_V6,
  SILENT_RESOLVER,
  NETTOOL,
  sleep,
} from '../helpers/topology.js';
import { formatIp } from '../../agent/net/addr.js';
import { ConfigFlag, ZERO_CONFIG } from '../../agent/datapath/codecs.js';
import { withBox } from '../helpers/datapath-fixture.js';
import type { CapturedPacket } from '../../agent/datapath/native.js';

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
    return {
      ifindex: p.ifindex,
      outgoing: p.pktType === PACKET_OUTGOING,
      family: 4,
      proto: 'other',
      sport: 0,
      dport: 0,
      payload: Buffer.alloc(0),
    };
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
  for (let at = 0; at + 4 <= stream.length;) {
    const len = stream.readUInt16BE(at);
    ids.push(stream.readUInt16BE(at + 2));
    at += 2 + len;
  }
  return ids;
}

/** svc.test resolved from the pod over UDP and TCP, IPv4 and IPv6: each must answer. */
async function digEveryWay(topo: Topology, netns: string): Promise<void> {
  for (const [server, type, proto] of [
    [OUTSIDE_LINK_V4.outside, 'A', 'udp'],
    [OUTSIDE_LINK_V4.outside, 'A', 'tcp'],
    [OUTSIDE_LINK_V6.outside, 'AAAA', 'udp'],
    [OUTSIDE_LINK_V6.outside, 'AAAA', 'tcp'],
  ] as const) {
    const { stdout } = await topo.exec(netns, [
      'dig',
      `@${server}`,
      '+short',
      '+time=2',
      '+tries=1',
      ...(proto === 'tcp' ? ['+tcp'] : []),
      'svc.test',
      type,
    ]);
    assert.notEqual(stdout.trim(), '', `dig ${proto} ${type} answered`);
  }
}

test('the tap gets only what the inline learner left to the agent: a TCP answer split over segments, once; no answer the kernel judged, nothing a pod sends', async (t) => {
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
      // Answers the learner judges (whole messages, UDP and TCP, v4 and v6): none reach the tap.
      await digEveryWay(topo, a.netns);
      // Not DNS, and a pod that is not enforced: never.
      assert.equal((await topo.probe('a', 'tcp', OUTSIDE_HOSTS_V4[0]!, 443)).ok, true);
      assert.equal((await topo.probe('a', 'udp', OUTSIDE_HOSTS_V4[0]!, 5000)).ok, true);
      await topo.exec(topo.pod('b').netns, [
        'dig',
        `@${OUTSIDE_LINK_V4.outside}`,
        '+short',
        '+time=2',
        '+tries=1',
        'svc.test',
        'A',
      ]);
      await sleep(200);
      assert.equal(
        seen.length,
        0,
        `nothing the kernel judged, nothing a pod sent (got ${seen.map((p) => `${p.proto} ${p.sport}->${p.dport}`).join(', ')})`,
      );

      // A TCP answer written in two segments: the kernel leaves it to the agent.
      const splitter = OUTSIDE_HOSTS_V4[2]!;
      box.trustResolver(splitter);
      await topo.spawnReady(
        topo.outNs,
        [process.execPath, NETTOOL, 'dns-tcp-serve', '--bind', splitter, '--answer', '198.51.100.7', '--split', '20'],
        /ready/,
      );
      const split = await topo.exec(a.netns, [
        'dig',
        `@${splitter}`,
        '+short',
        '+time=2',
        '+tries=1',
        '+tcp',
        'pool.test',
        'A',
      ]);
      assert.equal(split.stdout.trim(), '198.51.100.7', 'dig got the whole answer');
      await sleep(200);
      assert.equal(seen.length, 2, `the answer's two segments reached the tap (${seen.length})`);
      for (const p of seen) {
        assert.equal(p.ifindex, a.ifindex, "only the enforced pod's interface");
        assert.ok(
          p.outgoing && p.proto === 'tcp' && p.sport === 53,
          `only the answer on its way to the pod (got ${p.proto} ${p.sport}->${p.dport})`,
        );
        assert.ok(p.payload.length > 0, 'no bare TCP control segments');
      }
      assert.deepEqual(
        dnsIds(
          seen.map((p) => p.payload),
          'tcp',
        ).length,
        1,
        'exactly one message, once',
      );
      assert.equal(tap.stats().drops, 0, 'the socket dropped nothing');
    } finally {
      tap.close();
    }
  });
});

test('with the inline learner off, the tap gets every answer to a query the enforcer recorded, once, and still nothing a pod sends', async (t) => {
  if (!requireKernelTestEnv(t, ['dnsmasq', 'dig'])) return;
  await withBox(t, [{ name: 'a' }], async (box) => {
    const { topo } = box;
    await topo.startDnsmasq({ 'svc.test': [OUTSIDE_HOSTS_V4[0]!, OUTSIDE_HOSTS_V6[0]!] });
    box.enforce('a', 1451);
    box.trustResolver(OUTSIDE_LINK_V4.outside);
    box.trustResolver(OUTSIDE_LINK_V6.outside);
    box.dp.maps.config.set(0, { ...ZERO_CONFIG, flags: ConfigFlag.inlineLearnerOff });
    const a = topo.pod('a');
    const seen: Seen[] = [];
    const tap = box.dp.openDnsTap((packets) => seen.push(...packets.map(classify)), { netns: topo.nodeNsPath });
    try {
      await digEveryWay(topo, a.netns);
      // An answer nobody asked for (forged from the resolver's address): not delivered.
      box.trustResolver(SILENT_RESOLVER);
      await topo.forgeAnswerFrom(topo.outNs, {
        from: SILENT_RESOLVER,
        to: a.v4,
        port: 40999,
        id: 777,
        name: 'svc.test',
        answer: '198.51.100.9',
      });
      await sleep(200);
      for (const p of seen)
        assert.ok(
          p.outgoing && p.sport === 53 && p.payload.length > 0,
          `only answers (got ${p.proto} ${p.sport}->${p.dport})`,
        );
      for (const family of [4, 6] as const) {
        for (const proto of ['udp', 'tcp'] as const) {
          const ids = dnsIds(
            seen.filter((p) => p.family === family && p.proto === proto).map((p) => p.payload),
            proto,
          );
          assert.equal(ids.length, 1, `exactly one ${proto}/v${family} answer (got ${ids.length})`);
        }
      }
      assert.ok(
        !seen.some((p) => p.proto === 'udp' && p.payload.readUInt16BE(0) === 777),
        'the unsolicited answer stayed out',
      );
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
    const ok = await topo.exec(a.netns, [
      'dig',
      `@${OUTSIDE_LINK_V4.outside}`,
      '+short',
      '+time=2',
      '+tries=1',
      'svc.test',
      'A',
    ]);
    assert.equal(ok.stdout.trim(), OUTSIDE_HOSTS_V4[0], 'a trusted resolver answers');
    // A query nobody answers stays recorded (an answer's learner clears it).
    box.trustResolver(SILENT_RESOLVER);
    await topo.queryFrom(a.netns, SILENT_RESOLVER, 'svc.test', 4242, 40123);
    const queries = box.dp.maps.queries.entries().filter(([k]) => k.identity === 1501);
    assert.equal(queries.length, 1, 'one pending query recorded');
    const [key, value] = queries[0]!;
    assert.deepEqual(
      { sport: key.sport, dnsId: key.dnsId, resolver: formatIp(key.resolver), proto: value.proto },
      { sport: 40123, dnsId: 4242, resolver: SILENT_RESOLVER, proto: 17 },
    );
    assert.ok(value.sentNs > 0n);
    assert.equal(box.counters(1501).dnsQueries, 2n, 'both counted as DNS queries');
    await assert.rejects(
      topo.exec(a.netns, ['dig', `@${untrusted}`, '+short', '+time=1', '+tries=1', 'svc.test', 'A']),
      'untrusted resolver unreachable',
    );
    assert.ok(box.counters(1501).reasons['untrusted-dns'] > 0n, 'dropped as untrusted DNS');
  });
});
