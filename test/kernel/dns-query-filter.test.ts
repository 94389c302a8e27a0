/*
 * The DNS query filter in the kernel, through BPF_PROG_TEST_RUN on the real
 * enforcer: which queries pass, the NXDOMAIN it writes in place of a refused
 * one (checksums included), what it counts and remembers, and a fuzz run of
 * mutated queries that must never pass a name outside the rules.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dnsPacket from 'dns-packet';
import { requireKernelTestEnv } from '../helpers/topology.js';
import { LearnerHarness } from '../helpers/learner-harness.js';
import { buildFrame } from '../helpers/frames.js';
import { native } from '../../agent/datapath/native.js';
import { EndpointFlag, PolicyKind, ResolverFlag } from '../../agent/datapath/codecs.js';
import { parseIp } from '../../agent/net/addr.js';
import { clusterDomainEntries } from '../../agent/policy/dns-query-filter.js';
import { escapeWireName } from '../../agent/dns/presentation.js';
import { internetChecksum, l4ChecksumOk } from '../helpers/checksum.js';
import { TcpFlow } from '../helpers/tcp-flow.js';

const PASS = -1; // TC_ACT_UNSPEC as test-run reports it
const SHOT = 2;
const REDIRECT = 7;
const RESOLVER_V6 = '2001:db8:ff::53';
let nextTcpPort = 42000;

interface Filter {
  h: LearnerHarness;
  query(
    name: string,
    opts?: { type?: dnsPacket.RecordType; id?: number; v6?: boolean; tcp?: boolean; edns?: boolean; sport?: number },
  ): { retval: number; data: Buffer };
  raw(payload: Buffer, opts?: { v6?: boolean; tcp?: boolean; sport?: number }): { retval: number; data: Buffer };
}

function withFilter(t: Parameters<typeof requireKernelTestEnv>[0], fn: (f: Filter) => void): void {
  if (!requireKernelTestEnv(t)) return;
  const h = LearnerHarness.open();
  try {
    h.dp.maps.resolvers.set(parseIp(RESOLVER_V6), ResolverFlag.trusted | ResolverFlag.noPathCheck);
    h.dp.maps.hashKey.set(0, 0x5eed5eed12345678n);
    h.allowName(PolicyKind.exact, 'api.stripe.test');
    h.allowName(PolicyKind.wildcard, 'kadath.test');
    for (const e of clusterDomainEntries(['cluster.local', 'corp.internal'], h.hashKey))
      h.dp.maps.clusterDomains.set(e.hash, { ports: [], name: e.name });
    // DNS over TCP: each query on a stream of its own (a port not used before), begun as a real one is:
    // the pod's SYN, the resolver's SYN-ACK through the learner (the filter judges from its ack on).
    const raw: Filter['raw'] = (payload, opts = {}) => {
      const src = opts.v6 ? h.podV6 : h.podV4;
      const dst = opts.v6 ? RESOLVER_V6 : h.resolver;
      if (opts.tcp) {
        // a connection of its own: the SYN, the resolver's SYN-ACK, then the segment
        const flow = new TcpFlow(h, { v6: opts.v6, dst, dport: 53, sport: opts.sport ?? nextTcpPort++ });
        flow.handshake();
        return flow.send(payload, 0);
      }
      const r = native.progTestRun(
        h.dp.programs!.enforcer,
        buildFrame({ src, dst, proto: 'udp', sport: opts.sport ?? 41000, dport: 53, payload }),
      );
      return { retval: r.retval | 0, data: r.data };
    };
    const query: Filter['query'] = (name, opts = {}) => {
      const message = dnsPacket.encode({
        type: 'query',
        id: opts.id ?? 4242,
        flags: dnsPacket.RECURSION_DESIRED,
        questions: [{ type: opts.type ?? 'A', name, class: 'IN' }],
        ...(opts.edns
          ? {
              additionals: [
                {
                  type: 'OPT',
                  name: '.',
                  udpPayloadSize: 1232,
                  flags: 0,
                  options: [{ code: 12, length: 64 }],
                } as dnsPacket.Answer,
              ],
            }
          : {}),
      });
      return raw(opts.tcp ? LearnerHarness.tcpPayload(message) : message, opts);
    };
    fn({ h, query, raw });
  } finally {
    h.close();
  }
}

/** The DNS message of a reply frame (UDP, no options or extension headers). */
function replyMessage(frame: Buffer): Buffer {
  const v6 = frame.readUInt16BE(12) === 0x86dd;
  return frame.subarray(14 + (v6 ? 40 : 20) + 8);
}

test('allowed names, wildcards and names under a cluster domain pass, in any case', (t) => {
  withFilter(t, (f) => {
    for (const name of [
      'api.stripe.test',
      'API.Stripe.TEST',
      'a.kadath.test',
      'x.y.Kadath.test',
      'api.stripe.test.shop.svc.cluster.local',
      'kubernetes.default.svc.cluster.local',
      'cluster.local',
      'db.CORP.internal',
    ]) {
      assert.equal(f.query(name).retval, PASS, `${name} passes`);
      assert.equal(f.query(name, { v6: true, type: 'AAAA' }).retval, PASS, `${name} passes over IPv6`);
      assert.equal(f.query(name, { tcp: true }).retval, PASS, `${name} passes over TCP`);
    }
    assert.ok(f.h.pendingQueries() > 0, 'passed queries are recorded for the learner');
  });
});

test('other names are answered NXDOMAIN in place: same id and question, checksums right, back to the pod (IPv4)', (t) => {
  withFilter(t, (f) => {
    for (const name of [
      'evil.attacker.example',
      'kadath.test',
      'stripe.test',
      'xapi.stripe.test',
      'api.stripe.test.attacker.example',
      'evilcluster.local',
      'cluster.local.attacker.example',
      'kadath.test.',
    ]) {
      const r = f.query(name, { id: 0xbeef, edns: true, type: 'TXT' });
      assert.equal(r.retval, REDIRECT, `${name}: answered, not passed`);
      const frame = r.data;
      assert.equal(frame.subarray(0, 6).toString('hex'), '000000000000', 'MACs swapped (the test frame has zero MACs)');
      const ip = frame.subarray(14, 34);
      assert.equal(ip.subarray(12, 16).join('.'), f.h.resolver, 'from the resolver');
      assert.equal(ip.subarray(16, 20).join('.'), f.h.podV4, 'to the pod');
      assert.equal(ip.readUInt16BE(2), frame.length - 14, 'IPv4 total length');
      assert.equal(internetChecksum(ip), 0, 'IPv4 header checksum');
      assert.equal(frame.readUInt16BE(34), 53, 'from port 53');
      assert.equal(frame.readUInt16BE(36), 41000, 'to the query port');
      assert.ok(l4ChecksumOk(frame), 'UDP checksum');
      const m = dnsPacket.decode(replyMessage(frame));
      assert.equal(replyMessage(frame).readUInt16BE(2) & 0xf, 3, 'RCODE 3: NXDOMAIN');
      assert.equal(m.id, 0xbeef);
      assert.equal(m.type, 'response');
      assert.ok(m.flag_ra && m.flag_rd, 'RA set, RD echoed');
      assert.equal(m.questions?.length, 1);
      assert.equal(m.questions![0]!.name.toLowerCase(), name.replace(/\.$/, '').toLowerCase());
      assert.equal(m.questions![0]!.type, 'TXT');
      assert.equal(
        (m.answers?.length ?? 0) + (m.authorities?.length ?? 0) + (m.additionals?.length ?? 0),
        0,
        'no records, EDNS trimmed',
      );
    }
  });
});

test('the NXDOMAIN over IPv6 carries a correct UDP checksum', (t) => {
  withFilter(t, (f) => {
    for (const type of ['A', 'AAAA', 'TXT', 'ANY'] as Array<dnsPacket.RecordType>) {
      const r = f.query('data-0123456789abcdef.attacker.example', { v6: true, type, edns: true });
      assert.equal(r.retval, REDIRECT, type);
      assert.equal(r.data.readUInt16BE(14 + 4), r.data.length - 14 - 40, 'payload length');
      assert.ok(l4ChecksumOk(r.data), `UDP checksum (${type})`);
      const m = dnsPacket.decode(replyMessage(r.data));
      assert.equal(replyMessage(r.data).readUInt16BE(2) & 0xf, 3, 'RCODE 3: NXDOMAIN');
      assert.equal(m.questions![0]!.type, type);
    }
  });
});

test('a refused query over TCP ends its connection: a RST from the resolver, in sequence, checksums right', (t) => {
  withFilter(t, (f) => {
    for (const v6 of [false, true]) {
      const message = dnsPacket.encode({
        type: 'query',
        id: 5,
        flags: dnsPacket.RECURSION_DESIRED,
        questions: [{ type: 'TXT', name: 'leak.attacker.example', class: 'IN' }],
      });
      const payload = LearnerHarness.tcpPayload(message);
      // the pod's query at sequence number 0x11223344, acknowledging 0xaabbccdd of the resolver
      const flow = new TcpFlow(f.h, {
        v6,
        dst: v6 ? RESOLVER_V6 : f.h.resolver,
        dport: 53,
        sport: 41234,
        isn: 0x11223343,
        peerIsn: 0xaabbccdc,
      });
      flow.handshake();
      const l4 = 14 + (v6 ? 40 : 20);
      const r = flow.send(payload, 0);
      assert.equal(r.retval, REDIRECT, 'answered, not passed');
      const out = r.data;
      assert.equal(out.length, l4 + 20, 'a bare TCP header: the query is gone');
      assert.equal(out.readUInt16BE(l4), 53, 'from port 53');
      assert.equal(out.readUInt16BE(l4 + 2), 41234, 'to the query port');
      assert.equal(out.readUInt32BE(l4 + 4), 0xaabbccdd, 'seq: what the pod expects next');
      assert.equal(out.readUInt32BE(l4 + 8), (0x11223344 + payload.length) >>> 0, 'ack: past the query');
      assert.equal(out[l4 + 13], 0x14, 'RST and ACK');
      assert.ok(l4ChecksumOk(out), `TCP checksum (${v6 ? 'IPv6' : 'IPv4'})`);
      if (!v6) assert.equal(internetChecksum(out.subarray(14, 34)), 0, 'IPv4 header checksum');
    }
  });
});

test('anything but one plain question is refused: fail closed', (t) => {
  withFilter(t, (f) => {
    const ok = dnsPacket.encode({
      type: 'query',
      id: 1,
      flags: dnsPacket.RECURSION_DESIRED,
      questions: [{ type: 'A', name: 'api.stripe.test', class: 'IN' }],
    });
    assert.equal(f.raw(ok).retval, PASS, 'the plain query passes');
    const cases: Array<[string, Buffer]> = [];
    const two = dnsPacket.encode({
      type: 'query',
      id: 1,
      questions: [
        { type: 'A', name: 'api.stripe.test', class: 'IN' },
        { type: 'TXT', name: 'leak.attacker.example', class: 'IN' },
      ],
    });
    cases.push(['two questions', two]);
    cases.push(['a compressed question name', LearnerHarness.compressQuestion(ok)]);
    const response = Buffer.from(ok);
    response.writeUInt16BE(0x8100, 2);
    cases.push(['QR set', response]);
    const update = Buffer.from(ok);
    update.writeUInt16BE(5 << 11, 2);
    cases.push(['opcode UPDATE', update]);
    const withAnswer = Buffer.from(ok);
    withAnswer.writeUInt16BE(1, 6);
    cases.push(['an answer record', withAnswer]);
    const twoAdditional = Buffer.from(ok);
    twoAdditional.writeUInt16BE(2, 10);
    cases.push(['two additional records', twoAdditional]);
    cases.push(['no QTYPE/QCLASS', ok.subarray(0, ok.length - 4)]);
    cases.push(['a header only', ok.subarray(0, 12)]);
    cases.push(['too short for a header', ok.subarray(0, 8)]);
    const longLabel = Buffer.from(ok);
    longLabel[12] = 0x40; // a label length of 64: a reserved label type
    cases.push(['a 64-byte label', longLabel]);
    const tooLong = Buffer.concat([
      ok.subarray(0, 12),
      ...Array.from({ length: 5 }, () => Buffer.concat([Buffer.from([60]), Buffer.alloc(60, 0x61)])),
      Buffer.from([4]),
      Buffer.from('test'),
      Buffer.from([0, 0, 1, 0, 1]),
    ]);
    cases.push(['a name over 255 bytes', tooLong]);
    for (const [what, payload] of cases) {
      const r = f.raw(payload);
      assert.notEqual(r.retval, PASS, `${what}: refused`);
    }
    // TCP: exactly one whole message per segment
    assert.equal(f.raw(LearnerHarness.tcpPayload(ok), { tcp: true }).retval, PASS, 'one whole message over TCP passes');
    assert.equal(
      f.raw(Buffer.alloc(0), { tcp: true }).retval,
      PASS,
      'a segment without payload (handshake, ACK) passes',
    );
    assert.equal(
      f.raw(Buffer.concat([LearnerHarness.tcpPayload(ok), LearnerHarness.tcpPayload(two)]), { tcp: true }).retval,
      REDIRECT,
      'two messages in one segment: reset',
    );
    assert.equal(
      f.raw(LearnerHarness.tcpPayload(ok).subarray(0, 20), { tcp: true }).retval,
      REDIRECT,
      'the first part of a split message: reset',
    );
    assert.equal(
      f.raw(LearnerHarness.tcpPayload(ok, ok.length + 40), { tcp: true }).retval,
      REDIRECT,
      'a length prefix that promises more: reset',
    );
  });
});

test('a hash hit on a cluster domain with other real bytes is refused', (t) => {
  withFilter(t, (f) => {
    const [entry] = clusterDomainEntries(['attacker.example'], f.h.hashKey);
    // the kernel finds "attacker.example" by its hash but holds another name: a collision
    f.h.dp.maps.clusterDomains.set(entry!.hash, {
      ports: [],
      name: clusterDomainEntries(['cluster.lan'], 0n)[0]!.name,
    });
    assert.equal(f.query('x.attacker.example').retval, REDIRECT);
  });
});

test('refusals are counted as dns-name and remembered with the name, escaped for display', (t) => {
  withFilter(t, (f) => {
    const before = f.h.dp.maps.counters.get(f.h.identity)?.reasons['dns-name'] ?? 0n;
    f.query('Evil.Attacker.example', { sport: 41999, type: 'TXT' });
    const c = f.h.dp.maps.counters.get(f.h.identity)!;
    assert.equal(c.reasons['dns-name'] - before, 1n);
    const remembered = f.h.dp.maps.dnsRefused.entries().find(([k]) => k.sport === 41999);
    assert.ok(remembered, 'the refused name is kept');
    assert.equal(remembered[0].identity, f.h.identity);
    assert.equal(escapeWireName(remembered[1].wire!), 'Evil.Attacker.example');
    assert.equal(remembered[1].qtype, 16);
    const recent = f.h.dp.maps.recent
      .entries()
      .map(([, v]) => v)
      .filter((v) => v.seq > 0n && v.event.reason === 'dns-name');
    assert.ok(
      recent.some((v) => v.event.tsNs === remembered[0].tsNs && v.event.sport === 41999),
      'keyed like its event',
    );
    // a label with a dot and a control byte inside
    const odd = dnsPacket.encode({
      type: 'query',
      id: 9,
      questions: [{ type: 'A', name: 'x.attacker.example', class: 'IN' }],
    });
    odd[13] = 0x2e; // the label "x" becomes ".": one label with a dot inside
    f.raw(odd, { sport: 41998 });
    const escaped = f.h.dp.maps.dnsRefused.entries().find(([k]) => k.sport === 41998);
    assert.equal(escapeWireName(escaped![1].wire!), '\\..attacker.example');
  });
});

test('audit mode passes a refused query and reports it; the per-pod opt-out passes it silently', (t) => {
  withFilter(t, (f) => {
    f.h.dp.maps.endpoints.set(1, { identity: f.h.identity, flags: EndpointFlag.audit });
    const before = f.h.dp.maps.counters.get(f.h.identity)?.audited ?? 0n;
    assert.equal(f.query('evil.attacker.example', { sport: 42001 }).retval, PASS, 'audit passes');
    assert.equal(f.h.dp.maps.counters.get(f.h.identity)!.audited - before, 1n, 'and reports it');
    const ev = f.h.dp.maps.recent
      .entries()
      .map(([, v]) => v.event)
      .find((e) => e.sport === 42001);
    assert.equal(ev?.kind, 'audit');
    assert.equal(ev?.reason, 'dns-name');
    f.h.dp.maps.endpoints.set(1, { identity: f.h.identity, flags: EndpointFlag.enforce | EndpointFlag.dnsFilterOff });
    const dropped = f.h.dp.maps.counters.get(f.h.identity)!.reasons['dns-name'];
    assert.equal(f.query('evil.attacker.example').retval, PASS, 'opted out: passes');
    assert.equal(f.h.dp.maps.counters.get(f.h.identity)!.reasons['dns-name'], dropped, 'not counted');
  });
});

/** The rule the kernel must follow, written again in userspace for the fuzzer. */
function mayPass(payload: Buffer): boolean {
  if (payload.length < 12) return false;
  const flags = payload.readUInt16BE(2);
  if (
    flags & 0xf800 ||
    payload.readUInt16BE(4) !== 1 ||
    payload.readUInt16BE(6) ||
    payload.readUInt16BE(8) ||
    payload.readUInt16BE(10) > 1
  )
    return false;
  const labels: string[] = [];
  let at = 12;
  let wire = 0;
  for (;;) {
    if (at >= payload.length) return false;
    const len = payload[at]!;
    if (len === 0) break;
    if (len > 63 || at + 1 + len > payload.length) return false;
    wire += 1 + len;
    if (wire > 256) return false;
    labels.push(
      payload
        .subarray(at + 1, at + 1 + len)
        .toString('latin1')
        .toLowerCase(),
    );
    at += 1 + len;
  }
  if (at + 1 + 4 > payload.length) return false;
  if (labels.some((l) => l.includes('.'))) return labels.join('\u0000') === 'never'; // a dot inside a label never matches a rule
  const name = labels.join('.');
  return (
    name === 'api.stripe.test' ||
    name.endsWith('.kadath.test') ||
    name === 'cluster.local' ||
    name.endsWith('.cluster.local') ||
    name === 'corp.internal' ||
    name.endsWith('.corp.internal')
  );
}

test('fuzz: random and mutated queries never fault and never pass a name outside the rules', (t) => {
  withFilter(t, (f) => {
    let seed = 0x1234567;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return seed % n;
    };
    const names = [
      'api.stripe.test',
      'a.kadath.test',
      'svc.cluster.local',
      'leak.attacker.example',
      'kadath.test',
      'API.STRIPE.TEST',
    ];
    let passed = 0;
    let refused = 0;
    const runs = Number(process.env.FQE_FUZZ_RUNS ?? 3000);
    for (let i = 0; i < runs; i++) {
      const base = dnsPacket.encode({
        type: 'query',
        id: rand(65536),
        flags: dnsPacket.RECURSION_DESIRED,
        questions: [{ type: 'A', name: names[rand(names.length)]!, class: 'IN' }],
      });
      let payload: Buffer;
      const mode = rand(5);
      if (mode === 4) {
        payload = Buffer.from(base); // the same query with its case shuffled: the rules' verdict
        for (let j = 13; j < payload.length - 5; j++)
          if (rand(2) && payload[j]! >= 0x61 && payload[j]! <= 0x7a) payload[j] = payload[j]! ^ 0x20;
      } else if (mode === 0) {
        payload = Buffer.from(Array.from({ length: rand(80) }, () => rand(256)));
      } else {
        payload = Buffer.from(base);
        const flips = 1 + rand(4);
        for (let j = 0; j < flips; j++)
          payload[rand(payload.length)] = mode === 1 ? rand(256) : payload[rand(payload.length)]! ^ (1 << rand(8));
        if (mode === 3) payload = payload.subarray(0, rand(payload.length + 1));
      }
      const r = f.raw(payload, { v6: rand(2) === 1 });
      assert.ok([PASS, REDIRECT, SHOT].includes(r.retval), `a verdict (${r.retval})`);
      if (r.retval === PASS) {
        passed++;
        assert.ok(mayPass(payload), `passed a query outside the rules: ${payload.toString('hex')}`);
      } else {
        refused++;
      }
    }
    assert.ok(
      passed > runs / 30 && refused > runs / 30,
      `both verdicts exercised (${passed} passed, ${refused} refused)`,
    );
  });
});

test('with no query filter program loaded (its tail-call slot empty), every filtered query is refused: fail closed', (t) => {
  withFilter(t, (f) => {
    const tails = native.objGet(`${f.h.pinDir}/fqe_enforcer_tails`);
    try {
      assert.ok(native.mapDelete(tails, Buffer.from([0, 0, 0, 0])), "the filter's slot (0) emptied");
      assert.equal(
        f.query('api.stripe.test').retval,
        SHOT,
        'even an allowed name: dropped (nothing parsed it to answer), never passed unchecked',
      );
      assert.equal(f.query('api.stripe.test', { tcp: true }).retval, REDIRECT, 'over TCP: a RST');
      f.h.dp.maps.endpoints.set(1, { identity: f.h.identity, flags: EndpointFlag.enforce | EndpointFlag.dnsFilterOff });
      assert.equal(f.query('leak.attacker.example').retval, PASS, 'a pod that opted out of the filter is not affected');
    } finally {
      native.closeFd(tails);
    }
  });
});
