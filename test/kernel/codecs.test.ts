/*
 * The map modules (agent/datapath/maps/) against the C side, in the spirit
 * of Tetragon's alignchecker: every struct a module declares against the
 * sizes and offsets the native binding reports from bpf/lib/fqe_types.h,
 * and every map's type, key and value sizes, capacity and flags against
 * the object files' definitions and against the maps the kernel made. A
 * layout or capacity changed in C that a module misses fails here. Plus
 * round trips of the derived codecs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { native, MapType } from '../../agent/datapath/native.js';
import {
  REASONS,
  MAX_PORT_RULES,
  PROTO_TLS,
  CtFlag,
  ConfigFlag,
  ResolverFlag,
  EndpointFlag,
  refusedKeyCodec,
  refusedNameCodec,
  allowKeyCodec,
  allowValueCodec,
  ctKeyCodec,
  endpointCodec,
  eventCodec,
  configCodec,
  countersCodec,
  countersLayout,
  queryKeyCodec,
  policyValueCodec,
  podInfoCodec,
  cidrKeyCodec,
  tlsFlowCodec,
  PENDING_FLAG,
  PENDING_IDENTITY_BASE,
} from '../../agent/datapath/maps/index.js';
import { MAP_DEFINITIONS } from '../../agent/datapath/maps/registry.js';
import type { Struct } from '../../agent/datapath/layout.js';
import { Datapath, DEFAULT_BPF_DIR } from '../../agent/datapath/datapath.js';
import { parseIp, formatIp, parseCidr, formatCidr } from '../../agent/net/addr.js';

const rootOnly = { skip: process.getuid?.() !== 0 && process.env.CI !== 'true' ? 'needs root' : false };
const OBJECTS = ['enforcer.bpf.o', 'learner.bpf.o', 'dns_filter.bpf.o'];

/** Every struct the map modules declare, nested ones too, by C name. */
function declaredStructs(): Map<string, Struct<unknown>> {
  const out = new Map<string, Struct<unknown>>();
  const visit = (s: Struct<unknown>): void => {
    if (out.has(s.cName)) {
      assert.equal(out.get(s.cName), s, `struct fqe_${s.cName} is declared once`);
      return;
    }
    out.set(s.cName, s);
    for (const m of s.members) if (m.struct) visit(m.struct);
  };
  for (const d of MAP_DEFINITIONS) for (const s of d.structs) visit(s);
  return out;
}

test('every struct of every map module matches the C header: size, and every member at its offset', () => {
  const c = native.layouts();
  const declared = declaredStructs();
  for (const [name, s] of declared) {
    const cLayout = c[name];
    assert.ok(cLayout, `the binding reports struct fqe_${name} (native/layouts.cc)`);
    assert.equal(s.size, cLayout.size, `sizeof(struct fqe_${name})`);
    const members = new Map(s.members.map((m) => [m.cName, m]));
    for (const [field, offset] of Object.entries(cLayout.fields)) {
      const m = members.get(field);
      assert.ok(m, `the module's fqe_${name} declares member ${field}`);
      assert.equal(m.offset, offset, `offsetof(struct fqe_${name}, ${field})`);
    }
    // members the binding does not list: they must sit between the ones it does, and end the struct exactly
    const byOffset = [...s.members].sort((a, b) => a.offset - b.offset);
    byOffset.forEach((m, i) =>
      assert.equal(m.offset + m.size, byOffset[i + 1]?.offset ?? s.size, `fqe_${name}.${m.cName} leaves no hole`),
    );
  }
  for (const name of Object.keys(c)) {
    if (name === 'constants') continue;
    assert.ok(declared.has(name), `a map module declares struct fqe_${name}`);
  }
});

test('every map module matches its definition in the object files: type, key and value sizes, capacity, flags', () => {
  const compiled = new Map<string, ReturnType<typeof native.describeObject>[string]>();
  for (const file of OBJECTS)
    for (const [name, shape] of Object.entries(native.describeObject(join(DEFAULT_BPF_DIR, file))))
      compiled.set(name, shape);
  for (const d of MAP_DEFINITIONS) {
    const shape = compiled.get(d.name);
    assert.ok(shape, `${d.name} is defined in bpf/lib/maps.h`);
    assert.deepEqual(d.shape, shape, `${d.name}: the module's shape is the object's`);
  }
  assert.equal(
    new Set(MAP_DEFINITIONS.map((d) => d.property)).size,
    MAP_DEFINITIONS.length,
    'one DatapathMaps property per map',
  );
});

test(
  'every map the datapath pins has a module, and the kernel made it with the shape the module declares',
  rootOnly,
  () => {
    const pinDir = mkdtempSync('/sys/fs/bpf/fqet-codecs-');
    const dp = Datapath.load(pinDir);
    try {
      for (const d of MAP_DEFINITIONS) {
        const view = dp.maps[d.property as keyof typeof dp.maps] as unknown as number | { fd: number };
        const info = native.mapInfo(typeof view === 'number' ? view : view.fd);
        assert.deepEqual(
          {
            type: info.type,
            keySize: info.keySize,
            valueSize: info.valueSize,
            maxEntries: info.maxEntries,
            flags: info.flags,
          },
          d.shape,
          `${d.name}: mapInfo`,
        );
        if (d.shape.type === MapType.RINGBUF) assert.equal(info.maxEntries, d.shape.maxEntries, `${d.name}: ring size`);
      }
      // every pinned map but the tail-call arrays (programs, not data) and the programs themselves
      const modules = new Set(MAP_DEFINITIONS.map((d) => d.name));
      for (const pin of readdirSync(pinDir)) {
        if (pin.startsWith('prog_') || pin.endsWith('_tails')) continue;
        assert.ok(modules.has(pin), `pinned map ${pin} has a module under agent/datapath/maps/`);
      }
    } finally {
      dp.close();
      rmSync(pinDir, { recursive: true, force: true });
    }
  },
);

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
  assert.equal(consts.EP_PENDING, PENDING_FLAG);
  assert.equal(consts.PENDING_IDENTITY_BASE, PENDING_IDENTITY_BASE);
  const cfgFlags: Array<[string, number]> = [
    ['CFG_INLINE_LEARNER_OFF', ConfigFlag.inlineLearnerOff],
    ['CFG_PRECISE_CLOCK', ConfigFlag.preciseClock],
    ['CFG_TLS_CHECK_OFF', ConfigFlag.tlsCheckOff],
    ['CFG_DNS_QUERY_FILTER_OFF', ConfigFlag.dnsQueryFilterOff],
    ['CFG_ATTACH_LEGACY', ConfigFlag.attachLegacy],
    ['CFG_HEAD_GUARD_OFF', ConfigFlag.headGuardOff],
    ['CFG_STATES_WRITTEN', ConfigFlag.statesWritten],
    ['CFG_UNKNOWN_PODS_OPEN', ConfigFlag.unknownPodsOpen],
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
  assert.equal(b.length, allowKeyCodec.size);
  assert.equal(b.readUInt32LE(0), 32 + 96 + 24);
  assert.equal(b.readUInt32LE(4), 7);
  assert.equal(formatIp(b.subarray(8, 24)), '198.51.100.0');
  assert.deepEqual(allowKeyCodec.decode(b), { identity: 7, addr: cidr.addr, prefixLen: 120 });
  assert.throws(() => allowKeyCodec.encode({ identity: 1, addr: cidr.addr, prefixLen: 129 }), /prefix length 129/);
});

test('allow values round-trip with ports, expiry and name hash', () => {
  const v = {
    expiresNs: 123456789012345n,
    nameHash: 0xfeedfacecafebeefn,
    ports: [
      { port: 443, proto: 6 },
      { port: 53, proto: 0 },
    ],
    source: 1,
  };
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
  const cfg = {
    ctTcpIdleNs: 5n,
    ctOtherIdleNs: 6n,
    eventsPerSec: 7,
    minTtlS: 8,
    maxTtlS: 9,
    flags: 10,
    agentHeartbeatNs: 11n,
    agentPid: 12,
    ctPerPod: 15,
    queryWindowNs: 13n,
    connectGraceNs: 14n,
  };
  assert.deepEqual(configCodec.decode(configCodec.encode(cfg)), cfg);
});

test('per-CPU counters are summed over every CPU slot', () => {
  const cpus = 3;
  const b = Buffer.alloc(countersCodec.slotSize * cpus);
  for (let cpu = 0; cpu < cpus; cpu++) {
    b.writeBigUInt64LE(BigInt(cpu + 1), cpu * countersCodec.slotSize + countersLayout.offsets.dropped!);
    b.writeBigUInt64LE(10n, cpu * countersCodec.slotSize + countersLayout.offsets.reasons! + 4 * 8);
  }
  const c = countersCodec.decodePerCpu(b, cpus);
  assert.equal(c.dropped, 6n);
  assert.equal(c.reasons.spoofed, 30n);
  assert.equal(c.passed, 0n);
});

test('events decode with addresses and names', () => {
  const f = eventCodec.offsets as Record<string, number>;
  const b = Buffer.alloc(eventCodec.size);
  b.writeBigUInt64LE(42n, f.tsNs!);
  b.writeUInt32LE(5, f.identity!);
  b.writeUInt32LE(12, f.ifindex!);
  parseIp('198.18.1.11').copy(b, f.saddr!);
  parseIp('2001:db8:ff::10').copy(b, f.daddr!);
  b.writeUInt16LE(40000, f.sport!);
  b.writeUInt16LE(443, f.dport!);
  b[f.proto!] = 6;
  b[f.reason!] = 3;
  b[f.kind!] = 2;
  b[f.family!] = 6;
  assert.deepEqual(eventCodec.decode(b), {
    tsNs: 42n,
    identity: 5,
    ifindex: 12,
    saddr: '198.18.1.11',
    daddr: '2001:db8:ff::10',
    sport: 40000,
    dport: 443,
    proto: 6,
    reason: 'port',
    kind: 'audit',
    family: 6,
  });
  assert.throws(() => eventCodec.decode(Buffer.alloc(10)), /10 bytes, expected 56/);
  const event = eventCodec.decode(b);
  assert.deepEqual(eventCodec.decode(eventCodec.encode(event)), event);
});

test('derived codecs keep their checks: counted lists, names, strings, prefixes', () => {
  const name = Buffer.from('moc\x07elpmaxe', 'latin1');
  const rule = { ports: [{ port: 443, proto: PROTO_TLS }], name };
  assert.deepEqual(policyValueCodec.decode(policyValueCodec.encode(rule)), rule);
  assert.throws(
    () => policyValueCodec.encode({ ports: [], name: Buffer.alloc(257) }),
    /name of 257 bytes, at most 256 fit/,
  );
  const pod = { ifindex: 7, flags: EndpointFlag.audit, ifname: 'veth1', namespace: 'shop', name: 'payments-0' };
  assert.deepEqual(podInfoCodec.decode(podInfoCodec.encode(pod)), pod);
  assert.throws(
    () => podInfoCodec.encode({ ...pod, ifname: 'x'.repeat(16) }),
    /interface name "x+" is longer than 15 bytes/,
  );
  const cidr = { family: 4 as const, addr: parseCidr('10.0.0.0/8').addr, prefixLen: 104 };
  assert.equal(cidrKeyCodec.encode(cidr).readUInt32LE(0), 32 + 104);
  assert.deepEqual(cidrKeyCodec.decode(cidrKeyCodec.encode(cidr)), cidr);
  assert.throws(
    () => allowKeyCodec.encode({ identity: 1, addr: Buffer.alloc(4), prefixLen: 128 }),
    /address must be 16 bytes, got 4/,
  );
  // a kernel-owned value decodes only the fields userspace reads
  assert.deepEqual(Object.keys(tlsFlowCodec.decode(Buffer.alloc(tlsFlowCodec.size))).sort(), [
    'baseSeq',
    'based',
    'hellos',
    'nextSeq',
    'parsed',
    'segments',
  ]);
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
