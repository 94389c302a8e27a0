/*
 * The TypeScript codecs against the C header: sizes and offsets come from
 * the native binding (compiled against bpf/lib/fqe_types.h), so a layout
 * change in C that the codecs miss fails here. Plus round trips.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { native } from '../../agent/datapath/native.js';
import {
  LAYOUTS, REASONS, MAX_PORT_RULES, PROTO_TLS, CtFlag, ConfigFlag, ResolverFlag, EndpointFlag, refusedKeyCodec, refusedNameCodec, allowKeyCodec, allowValueCodec, ctKeyCodec, endpointCodec, eventCodec, configCodec, countersCodec, queryKeyCodec,
} from '../../agent/datapath/codecs.js';
import { parseIp, formatIp, parseCidr, formatCidr } from '../../agent/datapath/addr.js';

test('every codec layout matches the C header as the binding reports it', () => {
  const c = native.layouts();
  for (const [name, layout] of Object.entries(LAYOUTS)) {
    const cLayout = c[name];
    assert.ok(cLayout, `the binding reports struct fqe_${name}`);
    assert.equal(layout.size, cLayout.size, `sizeof(struct fqe_${name})`);
    for (const [field, offset] of Object.entries(layout.fields)) {
      assert.equal(offset, cLayout.fields[field], `offsetof(struct fqe_${name}, ${field})`);
    }
    for (const field of Object.keys(cLayout.fields)) {
      if (field.startsWith('pad')) continue;
      assert.ok(field in layout.fields, `codec for fqe_${name} covers field ${field}`);
    }
  }
  for (const name of Object.keys(c)) {
    if (name === 'constants') continue;
    assert.ok(name in LAYOUTS, `a codec layout exists for struct fqe_${name}`);
  }
});

test('reason names and limits match the C header', () => {
  const k = native.layouts().constants as unknown as { fields: Record<string, number> } | Record<string, number>;
  const consts = ('fields' in k ? k.fields : k) as Record<string, number>;
  assert.equal(consts.MAX_PORT_RULES, MAX_PORT_RULES);
  assert.equal(consts.REASON_MAX, REASONS.length);
  assert.equal(consts.REASON_SPOOFED, REASONS.indexOf('spoofed'));
  assert.equal(consts.REASON_UNTRUSTED_DNS, REASONS.indexOf('untrusted-dns'));
  assert.equal(consts.REASON_PROTOCOL, REASONS.indexOf('protocol'));
  assert.equal(consts.REASON_DNS_NAME, REASONS.indexOf('dns-name'));
  assert.equal(consts.REASON_TLS_NAME, REASONS.indexOf('tls-server-name'));
  assert.equal(consts.REASON_SPOOFED_ANSWER, REASONS.indexOf('spoofed-answer'));
  assert.equal(consts.RESOLVER_NO_PATH_CHECK, ResolverFlag.noPathCheck);
  assert.equal(consts.PROTO_TLS, PROTO_TLS);
  assert.equal(consts.CT_TLS_PENDING, CtFlag.tlsPending);
  assert.equal(consts.CT_TLS_REFUSED, CtFlag.tlsRefused);
  assert.equal(consts.CT_TLS_WATCH, CtFlag.tlsWatch);
  assert.ok(REASONS.length <= consts.REASON_SLOTS!, 'the counters keep their layout');
  assert.equal(consts.EP_DNS_FILTER_OFF, EndpointFlag.dnsFilterOff);
  const cfgFlags: Array<[string, number]> = [
    ['CFG_INLINE_LEARNER_OFF', ConfigFlag.inlineLearnerOff], ['CFG_PRECISE_CLOCK', ConfigFlag.preciseClock], ['CFG_TLS_CHECK_OFF', ConfigFlag.tlsCheckOff],
    ['CFG_DNS_QUERY_FILTER_OFF', ConfigFlag.dnsQueryFilterOff], ['CFG_ATTACH_LEGACY', ConfigFlag.attachLegacy], ['CFG_HEAD_GUARD_OFF', ConfigFlag.headGuardOff],
    ['CFG_STATES_WRITTEN', ConfigFlag.statesWritten],
  ];
  for (const [name, bit] of cfgFlags) assert.equal(consts[name], bit, `FQE_${name}`);
});

test('refused-name records round-trip, and an unparsed query has no name', () => {
  const k = { tsNs: 123456789n, identity: 9, sport: 40001 };
  assert.deepEqual(refusedKeyCodec.decode(refusedKeyCodec.encode(k)), k);
  const v = { wire: Buffer.from('\x04evil\x07example', 'latin1'), qtype: 16, proto: 17 };
  assert.deepEqual(refusedNameCodec.decode(refusedNameCodec.encode(v)), v);
  assert.equal(refusedNameCodec.decode(refusedNameCodec.encode({ wire: null, qtype: 0, proto: 6 })).wire, null);
});

test('allow keys put the identity in front of the prefix', () => {
  const cidr = parseCidr('198.51.100.0/24');
  const b = allowKeyCodec.encode({ identity: 7, addr: cidr.addr, prefixLen: cidr.prefixLen });
  assert.equal(b.length, LAYOUTS.allow_key.size);
  assert.equal(b.readUInt32LE(0), 32 + 96 + 24);
  assert.equal(b.readUInt32LE(4), 7);
  assert.equal(formatIp(b.subarray(8, 24)), '198.51.100.0');
  assert.deepEqual(allowKeyCodec.decode(b), { identity: 7, addr: cidr.addr, prefixLen: 120 });
  assert.throws(() => allowKeyCodec.encode({ identity: 1, addr: cidr.addr, prefixLen: 129 }), /prefix length 129/);
});

test('allow values round-trip with ports, expiry and name hash', () => {
  const v = { expiresNs: 123456789012345n, nameHash: 0xfeedfacecafebeefn, ports: [{ port: 443, proto: 6 }, { port: 53, proto: 0 }], source: 1 };
  assert.deepEqual(allowValueCodec.decode(allowValueCodec.encode(v)), v);
  const tooMany = Array.from({ length: MAX_PORT_RULES + 1 }, (_, i) => ({ port: i + 1, proto: 0 }));
  assert.throws(() => allowValueCodec.encode({ ...v, ports: tooMany }), /at most 8 fit/);
});

test('other keys and values round-trip', () => {
  const addr = parseIp('2001:db8:1::2');
  const peer = parseIp('203.0.113.10');
  assert.deepEqual(endpointCodec.decode(endpointCodec.encode({ identity: 9, flags: 2 })), { identity: 9, flags: 2 });
  const ct = { identity: 3, podAddr: addr, peerAddr: peer, podPort: 40000, peerPort: 443, proto: 6 };
  assert.deepEqual(ctKeyCodec.decode(ctKeyCodec.encode(ct)), ct);
  const q = { identity: 4, sport: 33333, dnsId: 0xbeef, resolver: peer };
  assert.deepEqual(queryKeyCodec.decode(queryKeyCodec.encode(q)), q);
  const cfg = { ctTcpIdleNs: 5n, ctOtherIdleNs: 6n, eventsPerSec: 7, minTtlS: 8, maxTtlS: 9, flags: 10, agentHeartbeatNs: 11n, agentPid: 12, ctPerPod: 15, queryWindowNs: 13n, connectGraceNs: 14n };
  assert.deepEqual(configCodec.decode(configCodec.encode(cfg)), cfg);
});

test('per-CPU counters are summed over every CPU slot', () => {
  const cpus = 3;
  const b = Buffer.alloc(countersCodec.slotSize * cpus);
  for (let cpu = 0; cpu < cpus; cpu++) {
    b.writeBigUInt64LE(BigInt(cpu + 1), cpu * countersCodec.slotSize + LAYOUTS.counters.fields.dropped);
    b.writeBigUInt64LE(10n, cpu * countersCodec.slotSize + LAYOUTS.counters.fields.reasons + 4 * 8);
  }
  const c = countersCodec.decodePerCpu(b, cpus);
  assert.equal(c.dropped, 6n);
  assert.equal(c.reasons.spoofed, 30n);
  assert.equal(c.passed, 0n);
});

test('events decode with addresses and names', () => {
  const f = LAYOUTS.event.fields;
  const b = Buffer.alloc(LAYOUTS.event.size);
  b.writeBigUInt64LE(42n, f.ts_ns);
  b.writeUInt32LE(5, f.identity);
  b.writeUInt32LE(12, f.ifindex);
  parseIp('198.18.1.11').copy(b, f.saddr);
  parseIp('2001:db8:ff::10').copy(b, f.daddr);
  b.writeUInt16LE(40000, f.sport);
  b.writeUInt16LE(443, f.dport);
  b[f.proto] = 6;
  b[f.reason] = 3;
  b[f.kind] = 2;
  b[f.family] = 6;
  assert.deepEqual(eventCodec.decode(b), {
    tsNs: 42n, identity: 5, ifindex: 12, saddr: '198.18.1.11', daddr: '2001:db8:ff::10', sport: 40000, dport: 443, proto: 6, reason: 'port', kind: 'audit', family: 6,
  });
  assert.throws(() => eventCodec.decode(Buffer.alloc(10)), /10 bytes, expected 56/);
});

test('addresses parse and format in the mapped form', () => {
  const cases: Array<[string, string]> = [
    ['203.0.113.7', '203.0.113.7'],
    ['2001:db8::1', '2001:db8::1'],
    ['2001:DB8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['::', '::'],
    ['::1', '::1'],
    ['fe80::1', 'fe80::1'],
    ['::ffff:192.0.2.1', '192.0.2.1'],
    ['2001:db8:1:2:3:4:5:6', '2001:db8:1:2:3:4:5:6'],
  ];
  for (const [input, formatted] of cases) assert.equal(formatIp(parseIp(input)), formatted, input);
  for (const bad of ['', '1.2.3', '256.1.1.1', 'example.com', '2001:db8::1::2', '1.2.3.4/32']) {
    assert.throws(() => parseIp(bad), /invalid IP address/, bad);
  }
  assert.equal(formatCidr(parseCidr('198.51.100.77/24').addr, 120), '198.51.100.0/24');
  assert.equal(formatCidr(parseCidr('2001:db8:ff::1/64').addr, 64), '2001:db8:ff::/64');
  assert.throws(() => parseCidr('10.0.0.0/33'), /prefix length must be 0..32/);
  assert.throws(() => parseCidr('nope/8'), /not an IP address/);
});
