/*
 * Kernel tests of the inline DNS learner through BPF_PROG_TEST_RUN: the C
 * name hash against the shared vectors, forged answers, and a fuzz run of
 * random and mutated answers compared with the userspace decoder.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import dnsPacket from 'dns-packet';
import { requireKernelTestEnv } from '../helpers/topology.js';
import { LearnerHarness } from '../helpers/learner-harness.js';
import { PolicyKind } from '../../agent/datapath/codecs.js';
import { decodeDns } from '../../agent/dns/message.js';
import { buildFrame } from '../helpers/frames.js';
import { nameHash } from '../../agent/policy/name-hash.js';
import { formatIp } from '../../agent/net/addr.js';

interface Vector {
  description: string;
  name: string;
  hash: string;
  suffixHashes: string[];
}
const VECTORS = (
  JSON.parse(readFileSync(new URL('../../../test/fixtures/name-hash-vectors.json', import.meta.url), 'utf8')) as {
    vectors: Vector[];
  }
).vectors;

function withHarness(t: Parameters<typeof requireKernelTestEnv>[0], fn: (h: LearnerHarness) => void, opts = {}): void {
  if (!requireKernelTestEnv(t)) return;
  const h = LearnerHarness.open(opts);
  try {
    fn(h);
  } finally {
    h.close();
  }
}

test('the kernel hashes names exactly as the shared vectors say (exact and wildcard)', (t) => {
  withHarness(t, (h) => {
    let sport = 30000;
    for (const v of VECTORS) {
      // exact: the whole name's hash
      h.clearLearned();
      h.allowName(PolicyKind.exact, v.name, [], BigInt(`0x${v.hash}`));
      h.expectQuery(7, ++sport);
      h.run(h.frame({ name: v.name, id: 7, sport, ips: ['203.0.113.77'] }));
      assert.equal(h.learned().get('203.0.113.77'), BigInt(`0x${v.hash}`), `exact: ${v.description}`);
      const stored = h.dp.maps.names.get(BigInt(`0x${v.hash}`));
      assert.equal(stored, v.name.toLowerCase().replace(/\.$/, ''), `fqe_names holds the name: ${v.description}`);
      h.dp.maps.policy.delete({ identity: h.identity, kind: PolicyKind.exact, hash: BigInt(`0x${v.hash}`) });
      // wildcard: the suffix one label down, when there is one
      if (v.suffixHashes.length > 1) {
        h.clearLearned();
        h.allowName(PolicyKind.wildcard, v.name.split('.').slice(1).join('.'), [], BigInt(`0x${v.suffixHashes[1]}`));
        h.expectQuery(8, ++sport);
        h.run(h.frame({ name: v.name, id: 8, sport, ips: ['203.0.113.78'] }));
        assert.ok(h.learned().has('203.0.113.78'), `wildcard: ${v.description}`);
        h.dp.maps.policy.delete({
          identity: h.identity,
          kind: PolicyKind.wildcard,
          hash: BigInt(`0x${v.suffixHashes[1]}`),
        });
      }
    }
  });
});

test('the inline learner writes A and AAAA with expiry, ports and CNAME chains, and clears the query', (t) => {
  withHarness(t, (h) => {
    h.allowName(PolicyKind.exact, 'api.stripe.test', [{ port: 443, proto: 6 }]);
    h.allowName(PolicyKind.wildcard, 'kadath.test');
    h.expectQuery(1, 40001);
    const before = process.hrtime.bigint();
    h.run(h.frame({ name: 'API.Stripe.test', id: 1, sport: 40001, ips: ['203.0.113.10', '2001:db8:ff::10'], ttl: 60 }));
    const entries = h.dp.maps.allow.entries();
    const v4 = entries.find(([k]) => k.addr.equals(Buffer.from('00000000000000000000ffffcb00710a', 'hex')))?.[1];
    assert.ok(v4, 'A learned');
    assert.deepEqual(v4.ports, [{ port: 443, proto: 6 }]);
    assert.equal(v4.source, 2, 'source: kernel');
    assert.ok(
      v4.expiresNs > before + 59_000_000_000n && v4.expiresNs < before + 61_000_000_000n,
      'expires after the TTL',
    );
    assert.ok(h.learned().has('2001:db8:ff::10'), 'AAAA learned');
    assert.equal(h.pendingQueries(), 0, 'the query is cleared');
    h.expectQuery(2, 40002);
    h.run(
      h.frame({
        name: 'cdn.a.kadath.test',
        cname: 'edge.provider.test',
        id: 2,
        sport: 40002,
        ips: ['198.51.100.40'],
        ttl: 5,
      }),
    );
    assert.ok(h.learned().has('198.51.100.40'), 'the address at the end of a CNAME chain, for a wildcard name');
    assert.ok(h.counters().learned >= 3n);
  });
});

test('forged answers add nothing in the kernel', (t) => {
  withHarness(t, (h) => {
    h.allowName(PolicyKind.exact, 'api.stripe.test');
    h.expectQuery(1, 40001);
    const cases: Array<[string, Parameters<LearnerHarness['frame']>[0]]> = [
      [
        'untrusted server',
        { name: 'api.stripe.test', id: 1, sport: 40001, ips: ['198.51.100.1'], from: '203.0.113.99' },
      ],
      ['wrong id', { name: 'api.stripe.test', id: 2, sport: 40001, ips: ['198.51.100.2'] }],
      ['wrong port', { name: 'api.stripe.test', id: 1, sport: 40002, ips: ['198.51.100.3'] }],
      [
        'answer to another pod',
        { name: 'api.stripe.test', id: 1, sport: 40001, ips: ['198.51.100.4'], to: '198.18.1.99' },
      ],
    ];
    for (const [what, spec] of cases) {
      h.run(h.frame(spec));
      assert.deepEqual([...h.learned().keys()], [], what);
    }
    h.expectQuery(3, 40003);
    h.run(h.frame({ name: 'blocked.test', id: 3, sport: 40003, ips: ['198.51.100.5'] }));
    assert.deepEqual([...h.learned().keys()], [], 'name not allowed');
    assert.equal(h.counters().learned, 0n);
    h.run(h.frame({ name: 'api.stripe.test', id: 1, sport: 40001, ips: ['203.0.113.10'] }));
    assert.deepEqual([...h.learned().keys()], ['203.0.113.10'], 'the genuine answer still counts');
  });
});

/** `count` distinct documentation addresses (192.0.2/24, then 198.51.100/24, then 203.0.113/24). */
function manyAddresses(count: number): string[] {
  return Array.from(
    { length: count },
    (_, i) => `${['192.0.2', '198.51.100', '203.0.113'][Math.floor(i / 250)]}.${(i % 250) + 1}`,
  );
}

const LEARN_BOUND = 128; // FQE_LEARN_MAX_ANSWERS in bpf/lib/dns.h

for (const count of [40, 100, LEARN_BOUND]) {
  test(`an answer with ${count} addresses is learned in full, and not counted as left to the agent`, (t) => {
    withHarness(t, (h) => {
      h.allowName(PolicyKind.exact, 'pool.objects.test');
      const ips = manyAddresses(count);
      h.expectQuery(1, 40001);
      h.run(h.frame({ name: 'pool.objects.test', id: 1, sport: 40001, ips, compress: true }));
      assert.deepEqual([...h.learned().keys()].sort(), [...ips].sort());
      assert.equal(h.counters().learned, BigInt(count));
      assert.equal(h.counters().learnSkipped, 0n);
      assert.equal(h.pendingQueries(), 0, 'the query is cleared');
    });
  });
}

test(`an answer with 200 addresses: the first ${LEARN_BOUND} are learned, the answer is counted as left to the agent`, (t) => {
  withHarness(t, (h) => {
    h.allowName(PolicyKind.exact, 'pool.objects.test');
    const ips = manyAddresses(200);
    h.expectQuery(1, 40001);
    h.run(h.frame({ name: 'pool.objects.test', id: 1, sport: 40001, ips, compress: true }));
    assert.deepEqual([...h.learned().keys()].sort(), ips.slice(0, LEARN_BOUND).sort());
    assert.equal(h.counters().learned, BigInt(LEARN_BOUND));
    assert.equal(h.counters().learnSkipped, 1n, 'counted: the agent adds the rest');
    // the agent's decoder reads them all
    const dns = decodeDns(
      LearnerHarness.answerPayload({ name: 'pool.objects.test', id: 1, sport: 40001, ips, compress: true }),
    );
    assert.ok(dns.ok && dns.message.answers.length === 200);
  });
});

test('DNS over TCP: an answer in one segment is learned, for a query the pod sent over TCP', (t) => {
  withHarness(t, (h) => {
    h.allowName(PolicyKind.exact, 'api.stripe.test');
    h.expectQuery(1, 40001, h.resolver, 0n, 'tcp');
    const ips = manyAddresses(100);
    h.run(h.frame({ name: 'api.stripe.test', id: 1, sport: 40001, ips, transport: 'tcp', compress: true }));
    assert.equal(h.learned().size, 100, 'every address of a 100-address TCP answer');
    assert.equal(h.counters().learnSkipped, 0n);
    assert.equal(h.pendingQueries(), 0, 'the query is cleared');
    // a bare ACK from the resolver is no answer: nothing counted
    h.run(buildFrame({ src: h.resolver, dst: h.podV4, proto: 'tcp', sport: 53, dport: 40001, tcpFlags: 0x10 }));
    assert.equal(h.counters().learnSkipped, 0n);
  });
});

test('DNS over TCP: the answer must come over the transport the query was sent on', (t) => {
  withHarness(t, (h) => {
    h.allowName(PolicyKind.exact, 'api.stripe.test');
    h.expectQuery(1, 40001, h.resolver, 0n, 'udp');
    h.run(h.frame({ name: 'api.stripe.test', id: 1, sport: 40001, ips: ['203.0.113.10'], transport: 'tcp' }));
    assert.deepEqual([...h.learned().keys()], [], 'a TCP answer to a UDP query');
    h.expectQuery(2, 40002, h.resolver, 0n, 'tcp');
    h.run(h.frame({ name: 'api.stripe.test', id: 2, sport: 40002, ips: ['203.0.113.11'] }));
    assert.deepEqual([...h.learned().keys()], [], 'a UDP answer to a TCP query');
  });
});

test('DNS over TCP: a message split over segments is left to the agent (no reassembly in the kernel), and counted', (t) => {
  withHarness(t, (h) => {
    h.allowName(PolicyKind.exact, 'api.stripe.test');
    h.expectQuery(1, 40001, h.resolver, 0n, 'tcp');
    const message = LearnerHarness.answerPayload({
      name: 'api.stripe.test',
      id: 1,
      sport: 40001,
      ips: manyAddresses(40),
    });
    const stream = LearnerHarness.tcpPayload(message);
    const cut = 300;
    for (const part of [stream.subarray(0, cut), stream.subarray(cut)]) {
      h.run(
        buildFrame({
          src: h.resolver,
          dst: h.podV4,
          proto: 'tcp',
          sport: 53,
          dport: 40001,
          payload: part,
          tcpFlags: 0x18,
        }),
      );
    }
    assert.deepEqual([...h.learned().keys()], []);
    assert.equal(h.counters().learnSkipped, 1n, 'the first segment is counted as left to the agent');
    // two messages in one segment are not one whole message either
    h.expectQuery(2, 40002, h.resolver, 0n, 'tcp');
    const two = LearnerHarness.answerPayload({ name: 'api.stripe.test', id: 2, sport: 40002, ips: ['203.0.113.10'] });
    h.run(
      buildFrame({
        src: h.resolver,
        dst: h.podV4,
        proto: 'tcp',
        sport: 53,
        dport: 40002,
        payload: Buffer.concat([LearnerHarness.tcpPayload(two), LearnerHarness.tcpPayload(two)]),
        tcpFlags: 0x18,
      }),
    );
    assert.deepEqual([...h.learned().keys()], []);
    assert.equal(h.counters().learnSkipped, 2n);
  });
});

test('a compressed question name is refused by both learners', (t) => {
  withHarness(t, (h) => {
    h.allowName(PolicyKind.exact, 'api.stripe.test');
    const plain = LearnerHarness.answerPayload({ name: 'api.stripe.test', id: 1, sport: 40001, ips: ['203.0.113.10'] });
    const compressed = LearnerHarness.compressQuestion(plain);
    // dns-packet reads it as the same name: it is legal
    assert.equal(dnsPacket.decode(compressed).questions?.[0]?.name, 'api.stripe.test');
    const dns = decodeDns(compressed);
    assert.equal(dns.ok, false, 'the agent refuses it');
    if (!dns.ok) assert.match(dns.detail, /compression pointer in the question name/);
    for (const transport of ['udp', 'tcp'] as const) {
      h.expectQuery(1, 40001, h.resolver, 0n, transport);
      h.run(h.frame({ name: 'api.stripe.test', id: 1, sport: 40001, ips: [], transport }, compressed));
      assert.deepEqual([...h.learned().keys()], [], `the kernel refuses it (${transport})`);
    }
    assert.equal(h.counters().learnSkipped, 2n, 'counted as left to the agent');
  });
});

test('with the inline learner switched off nothing is learned in the kernel', (t) => {
  withHarness(
    t,
    (h) => {
      assert.equal(h.dp.inlineLearnerUnavailable, 'switched off');
      h.allowName(PolicyKind.exact, 'api.stripe.test');
      h.expectQuery(1, 40001);
      h.run(h.frame({ name: 'api.stripe.test', id: 1, sport: 40001, ips: ['203.0.113.10'] }));
      assert.deepEqual([...h.learned().keys()], []);
    },
    { withoutInlineLearner: true },
  );
});

function addressRecords(payload: Buffer): number {
  try {
    return dnsPacket.decode(payload).answers?.filter((a) => a.type === 'A' || a.type === 'AAAA').length ?? 0;
  } catch {
    return Infinity;
  }
}

/** A small seeded PRNG (mulberry32): the fuzz run is the same every time. */
function prng(seed: number): () => number {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let r = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    r = (r + Math.imul(r ^ (r >>> 7), 61 | r)) ^ r;
    return ((r ^ (r >>> 14)) >>> 0) / 4294967296;
  };
}

test('the kernel parser survives 100,000 random and mutated answers and agrees with the userspace decoder', (t) => {
  withHarness(t, (h) => {
    const rand = prng(0x5eed);
    const NAME = 'www.kadath.test';
    h.allowName(PolicyKind.exact, NAME);
    const seeds = [
      LearnerHarness.answerPayload({ name: NAME, id: 1, sport: 1, ips: ['203.0.113.10', '2001:db8:ff::10'] }),
      LearnerHarness.answerPayload({
        name: NAME,
        id: 1,
        sport: 1,
        cname: 'x.cdn.test',
        ips: ['198.51.100.7', '198.51.100.8', '198.51.100.9'],
      }),
      LearnerHarness.answerPayload({
        name: NAME,
        id: 1,
        sport: 1,
        ips: Array.from({ length: 40 }, (_, i) => `192.0.2.${i + 1}`),
      }),
      LearnerHarness.answerPayload({ name: NAME, id: 1, sport: 1, ips: manyAddresses(150), compress: true }),
      LearnerHarness.compressQuestion(
        LearnerHarness.answerPayload({ name: NAME, id: 1, sport: 1, ips: ['203.0.113.10'] }),
      ),
    ];
    const stats = { runs: 0, bothAccepted: 0, kernelOnly: 0, userspaceOnly: 0, neither: 0 };
    const N = Number(process.env.FQE_FUZZ_RUNS ?? 100_000);
    for (let i = 0; i < N; i++) {
      let payload: Buffer;
      if (i % 10 === 0) {
        payload = Buffer.from(Array.from({ length: Math.floor(rand() * 300) }, () => Math.floor(rand() * 256)));
      } else {
        payload = Buffer.from(seeds[i % seeds.length]!);
        const flips = 1 + Math.floor(rand() * 4);
        for (let f = 0; f < flips; f++) payload[Math.floor(rand() * payload.length)] ^= 1 << Math.floor(rand() * 8);
        if (rand() < 0.1) payload = payload.subarray(0, Math.floor(rand() * payload.length));
      }
      const id = payload.length >= 2 ? payload.readUInt16BE(0) : 0;
      // every third run over TCP (one segment, the length prefix right)
      const transport = i % 3 === 1 ? 'tcp' : 'udp';
      h.expectQuery(id, 40000, h.resolver, 0n, transport);
      const retval = h.run(h.frame({ name: NAME, id, sport: 40000, ips: [], transport }, payload));
      assert.equal(retval, -1, 'the learner never drops');
      stats.runs++;
      const kernel = [...h.learned().keys()].sort();
      const dns = decodeDns(payload);
      const user =
        dns.ok && dns.message.isResponse && dns.message.question?.name === NAME
          ? [...new Set(dns.message.answers.map((a) => a.ip))].sort()
          : null;
      if (kernel.length > 0 && user && user.length > 0) {
        stats.bothAccepted++;
        for (const ip of kernel)
          assert.ok(
            user.includes(ip),
            `run ${i}: kernel learned ${ip}, the decoder did not (payload ${payload.toString('hex')})`,
          );
        // The kernel takes the first LEARN_BOUND address records; the agent takes them all.
        if (addressRecords(payload) <= LEARN_BOUND)
          assert.deepEqual(kernel, user, `run ${i}: same addresses (payload ${payload.toString('hex')})`);
      } else if (kernel.length > 0) stats.kernelOnly++;
      else if (user && user.length > 0) stats.userspaceOnly++;
      else stats.neither++;
      if (kernel.length > 0) h.clearLearned();
      h.dp.maps.queries.deleteMany(h.dp.maps.queries.entries().map(([k]) => k));
    }
    t.diagnostic(`fuzz: ${JSON.stringify(stats)}`);
    assert.equal(stats.runs, N);
    assert.ok(stats.bothAccepted > N / 10, 'a good share of the mutated answers is still accepted by both');
  });
});

test("each answer learned from becomes one learned record for the agent: name, addresses, TTL, expiry, the rule's ports", (t) => {
  withHarness(t, (h) => {
    h.allowName(PolicyKind.exact, 'api.stripe.test', [{ port: 443, proto: 6 }]);
    h.records(); // an empty ring to start from
    h.expectQuery(1, 40001);
    const before = process.hrtime.bigint();
    h.run(h.frame({ name: 'API.Stripe.test', id: 1, sport: 40001, ips: ['203.0.113.10', '203.0.113.11'], ttl: 120 }));
    const recs = h.records();
    assert.equal(recs.length, 1, 'one record per answer');
    const r = recs[0]!;
    assert.equal(r.identity, h.identity);
    assert.equal(r.name, 'api.stripe.test', 'the question, lower case');
    assert.equal(r.nameHash, nameHash('api.stripe.test', h.hashKey));
    assert.equal(r.partial, false);
    assert.deepEqual(r.ports, [{ port: 443, proto: 6 }]);
    assert.deepEqual(
      r.addrs.map((a) => [a.ip, a.ttlS]),
      [
        ['203.0.113.10', 120],
        ['203.0.113.11', 120],
      ],
    );
    const entries = new Map(h.dp.maps.allow.entries().map(([k, v]) => [formatIp(k.addr), v.expiresNs]));
    for (const a of r.addrs) {
      assert.equal(a.expiresNs, entries.get(a.ip), 'the expiry the allow entry got');
      assert.ok(a.expiresNs >= before + 120_000_000_000n);
    }
    assert.deepEqual(h.tapMarks(), [], 'learned in full: nothing for the tap');
    // not learned (name not allowed, unsolicited): no record
    h.expectQuery(2, 40002);
    h.run(h.frame({ name: 'blocked.test', id: 2, sport: 40002, ips: ['198.51.100.5'] }));
    h.run(h.frame({ name: 'api.stripe.test', id: 3, sport: 40003, ips: ['198.51.100.6'] }));
    assert.equal(h.records().length, 0);
    assert.deepEqual(h.tapMarks(), [], 'refused answers do not reach the tap either');
  });
});

test("an answer the learner cannot learn in full is marked for the agent's tap (and its query moves there); TCP marks the connection", (t) => {
  withHarness(t, (h) => {
    h.allowName(PolicyKind.exact, 'pool.objects.test');
    h.expectQuery(1, 40001);
    h.run(h.frame({ name: 'pool.objects.test', id: 1, sport: 40001, ips: manyAddresses(200), compress: true }));
    const recs = h.records();
    assert.equal(recs.length, 1);
    assert.equal(recs[0]!.addrs.length, LEARN_BOUND, 'the first 128 are in the record');
    assert.equal(recs[0]!.partial, true, 'marked partial: the tap has the rest');
    assert.deepEqual(h.tapMarks(), ['udp|40001|1']);
    assert.equal(h.pendingQueries(), 0, 'the query moved to the tap mark');
    // a compressed question: not learned, left to the agent
    h.expectQuery(2, 40002);
    h.run(
      h.frame(
        { name: 'pool.objects.test', id: 2, sport: 40002, ips: ['203.0.113.10'] },
        LearnerHarness.compressQuestion(
          LearnerHarness.answerPayload({ name: 'pool.objects.test', id: 2, sport: 40002, ips: ['203.0.113.10'] }),
        ),
      ),
    );
    assert.deepEqual(h.tapMarks(), ['udp|40001|1', 'udp|40002|2']);
    // TCP split over segments: the message and its connection
    h.expectQuery(3, 40003, h.resolver, 0n, 'tcp');
    const stream = LearnerHarness.tcpPayload(
      LearnerHarness.answerPayload({ name: 'pool.objects.test', id: 3, sport: 40003, ips: manyAddresses(40) }),
    );
    h.run(
      buildFrame({
        src: h.resolver,
        dst: h.podV4,
        proto: 'tcp',
        sport: 53,
        dport: 40003,
        payload: stream.subarray(0, 300),
        tcpFlags: 0x18,
      }),
    );
    assert.deepEqual(h.tapMarks(), ['tcp|40003|0', 'tcp|40003|3', 'udp|40001|1', 'udp|40002|2']);
    assert.equal(h.records().length, 0, 'nothing learned, no record');
  });
});

test("one pod cannot fill the node's allow map or its name table: past its share (fqe_limits) an address is not written, counted, and left out of the record, and its name is not added to fqe_names", (t) => {
  withHarness(t, (h) => {
    h.allowName(PolicyKind.wildcard, 'zone.test');
    h.dp.maps.limits.set(0, { ipsPerPod: 5, tlsFlowsPerPod: 0 });
    h.records();
    const ips = Array.from({ length: 8 }, (_, i) => `198.51.100.${i + 1}`);
    h.expectQuery(1, 40001);
    h.run(h.frame({ name: 'a.zone.test', id: 1, sport: 40001, ips, compress: true }));
    assert.equal(h.learned().size, 5, "five entries written: the pod's share");
    const [rec] = h.records();
    assert.deepEqual(
      rec!.addrs.map((a) => a.ip),
      ips.slice(0, 5),
      'the record holds only what was written',
    );
    assert.equal(h.dp.maps.counters.get(h.identity)!.learnUnwritten, 3n, 'the rest counted as unwritten');
    assert.equal(h.dp.maps.podShares.get(h.identity)!.allow, 5n, "the pod's share in use");
    // The same addresses answered again refresh their entries: nothing new is added.
    h.expectQuery(2, 40002);
    h.run(h.frame({ name: 'b.zone.test', id: 2, sport: 40002, ips: ips.slice(0, 5), compress: true }));
    assert.deepEqual(
      h.records()[0]!.addrs.map((a) => a.ip),
      ips.slice(0, 5),
      'entries the pod holds are refreshed',
    );
    const stored = (name: string) => h.dp.maps.names.get(nameHash(name, h.hashKey));
    assert.equal(stored('a.zone.test'), 'a.zone.test', 'a name answered within the share is recorded');
    assert.equal(stored('b.zone.test'), undefined, 'a name answered past the share is not');
    // The agent's sweep writes the exact count back (here by hand): room again.
    h.dp.maps.podShares.set(h.identity, { allow: 4n, tlsFlows: 0n });
    h.expectQuery(3, 40003);
    h.run(
      h.frame({ name: 'c.zone.test', id: 3, sport: 40003, ips: ['198.51.100.77', '198.51.100.78'], compress: true }),
    );
    assert.deepEqual(
      h.records()[0]!.addrs.map((a) => a.ip),
      ['198.51.100.77'],
      'one more fits the share',
    );
    assert.equal(stored('c.zone.test'), 'c.zone.test', 'with room again, names are recorded');
  });
});
