/*
 * The userspace DNS path without a kernel: frames → segments (frame.ts),
 * TCP streams → messages (tcp-stream.ts), messages → names, addresses and
 * TTLs (message.ts). Frames are built by hand here; every parser is also
 * fed truncations and a seeded fuzz corpus and must never throw.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dnsPacket from 'dns-packet';
import type { Packet } from 'dns-packet';
import { parseFrame, TCP_FIN, TCP_RST, TCP_SYN } from '../../agent/dns/frame.js';
import type { Segment, FrameResult } from '../../agent/dns/frame.js';
import { decodeDns } from '../../agent/dns/message.js';
import type { DnsMessage } from '../../agent/dns/message.js';
import { TcpDnsReassembler } from '../../agent/dns/tcp-stream.js';
import { parseIp } from '../../agent/net/addr.js';
import type { CapturedPacket } from '../../agent/dns/frame.js';

// ---------------------------------------------------------------- builders

const POD4 = '198.18.1.2';
const DNS4 = '198.18.0.10';
const POD6 = '2001:db8:1::2';
const DNS6 = '2001:db8:1::a';

function ipv4Header(
  src: string,
  dst: string,
  proto: number,
  l4Len: number,
  opts: { options?: number; frag?: number; version?: number } = {},
): Buffer {
  const optionBytes = opts.options ?? 0;
  const h = Buffer.alloc(20 + optionBytes);
  h[0] = ((opts.version ?? 4) << 4) | ((20 + optionBytes) / 4);
  h.writeUInt16BE(h.length + l4Len, 2);
  h.writeUInt16BE(opts.frag ?? 0x4000 /* DF */, 6);
  h[8] = 64;
  h[9] = proto;
  parseIp(src).copy(h, 12, 12, 16);
  parseIp(dst).copy(h, 16, 12, 16);
  return h;
}

/** ext: [nextHeaderType, totalBytes] in order; the last points at proto. */
function ipv6Header(src: string, dst: string, proto: number, l4Len: number, ext: Array<[number, number]> = []): Buffer {
  const extBufs: Buffer[] = [];
  for (let i = 0; i < ext.length; i++) {
    const [, len] = ext[i]!;
    const b = Buffer.alloc(len);
    b[0] = i + 1 < ext.length ? ext[i + 1]![0] : proto;
    b[1] = len / 8 - 1;
    extBufs.push(b);
  }
  const extLen = extBufs.reduce((n, b) => n + b.length, 0);
  const h = Buffer.alloc(40);
  h[0] = 0x60;
  h.writeUInt16BE(extLen + l4Len, 4);
  h[6] = ext.length > 0 ? ext[0]![0] : proto;
  h[7] = 64;
  parseIp(src).copy(h, 8);
  parseIp(dst).copy(h, 24);
  return Buffer.concat([h, ...extBufs]);
}

function udp(sport: number, dport: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt16BE(sport, 0);
  h.writeUInt16BE(dport, 2);
  h.writeUInt16BE(8 + payload.length, 4);
  return Buffer.concat([h, payload]);
}

function tcp(sport: number, dport: number, seq: number, flags: number, payload: Buffer, optionBytes = 0): Buffer {
  const h = Buffer.alloc(20 + optionBytes);
  h.writeUInt16BE(sport, 0);
  h.writeUInt16BE(dport, 2);
  h.writeUInt32BE(seq >>> 0, 4);
  h[12] = ((20 + optionBytes) / 4) << 4;
  h[13] = flags;
  return Buffer.concat([h, payload]);
}

function ether(ethertype: number, body: Buffer, padTo = 0): Buffer {
  const h = Buffer.alloc(14);
  h.writeUInt16BE(ethertype, 12);
  const frame = Buffer.concat([h, body]);
  return frame.length >= padTo ? frame : Buffer.concat([frame, Buffer.alloc(padTo - frame.length, 0xee)]);
}

function udp4(src: string, dst: string, sport: number, dport: number, payload: Buffer, padTo = 0): Buffer {
  const l4 = udp(sport, dport, payload);
  return ether(0x0800, Buffer.concat([ipv4Header(src, dst, 17, l4.length), l4]), padTo);
}

function udp6(
  src: string,
  dst: string,
  sport: number,
  dport: number,
  payload: Buffer,
  ext: Array<[number, number]> = [],
): Buffer {
  const l4 = udp(sport, dport, payload);
  return ether(0x86dd, Buffer.concat([ipv6Header(src, dst, 17, l4.length, ext), l4]));
}

function tcp4(
  src: string,
  dst: string,
  sport: number,
  dport: number,
  seq: number,
  flags: number,
  payload: Buffer,
): Buffer {
  const l4 = tcp(sport, dport, seq, flags, payload, 12);
  return ether(0x0800, Buffer.concat([ipv4Header(src, dst, 6, l4.length), l4]));
}

function captured(data: Buffer, pktType = 4): CapturedPacket {
  return { data, ifindex: 7, pktType, tsNs: 123n };
}

function answer(name: string, answers: NonNullable<Packet['answers']>, extra: Partial<Packet> = {}): Buffer {
  return dnsPacket.encode({
    type: 'response',
    id: 0x1234,
    flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE,
    questions: [{ type: 'A', name, class: 'IN' }],
    answers,
    ...extra,
  });
}

function query(name: string, type: 'A' | 'AAAA' = 'A'): Buffer {
  return dnsPacket.encode({
    type: 'query',
    id: 0x4321,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type, name }],
  });
}

function segmentOf(r: FrameResult): Segment {
  assert.ok(r.ok, `frame parses: ${r.ok ? '' : `${r.reason} ${r.detail}`}`);
  return r.segment;
}

function messageOf(payload: Buffer): DnsMessage {
  const r = decodeDns(payload);
  assert.ok(r.ok, `message decodes: ${r.ok ? '' : `${r.reason} ${r.detail}`}`);
  return r.message;
}

const SIMPLE = answer('api.example.com', [{ type: 'A', name: 'api.example.com', ttl: 300, data: '203.0.113.7' }]);

// ---------------------------------------------------------------- frames

test('frame: IPv4/UDP answer, Ethernet padding ignored', () => {
  const payload = query('a.io');
  const seg = segmentOf(parseFrame(captured(udp4(DNS4, POD4, 53, 40000, payload, 128))));
  assert.deepEqual(
    { ...seg, payload: seg.payload.toString('hex') },
    {
      ifindex: 7,
      pktType: 4,
      tsNs: 123n,
      family: 4,
      src: DNS4,
      dst: POD4,
      proto: 'udp',
      sport: 53,
      dport: 40000,
      payload: payload.toString('hex'),
    },
  );
});

test('frame: IPv6/UDP, addresses in RFC 5952 form, extension headers followed', () => {
  const payload = query('a.io');
  for (const ext of [
    [],
    [[0, 8]],
    [
      [0, 16],
      [60, 8],
    ],
    [
      [0, 8],
      [43, 24],
      [60, 8],
      [60, 8],
    ],
  ] as Array<Array<[number, number]>>) {
    const seg = segmentOf(
      parseFrame(captured(udp6('2001:0db8:0001:0000:0000:0000:0000:000a', POD6, 53, 41000, payload, ext))),
    );
    assert.equal(seg.family, 6);
    assert.equal(seg.src, DNS6);
    assert.equal(seg.dst, POD6);
    assert.equal(seg.sport, 53);
    assert.ok(seg.payload.equals(payload), `payload after ${ext.length} extension headers`);
  }
});

test('frame: IPv4/TCP with IP and TCP options', () => {
  const payload = Buffer.from([0, 2, 0xab, 0xcd]);
  const l4 = tcp(53, 40001, 0xfffffff0, 0x18, payload, 12);
  const frame = ether(0x0800, Buffer.concat([ipv4Header(DNS4, POD4, 6, l4.length, { options: 8 }), l4]), 120);
  const seg = segmentOf(parseFrame(captured(frame)));
  assert.equal(seg.proto, 'tcp');
  assert.deepEqual(seg.tcp, { seq: 0xfffffff0, flags: 0x18 });
  assert.ok(seg.payload.equals(payload));
});

test('frame: rejections carry a reason', () => {
  const payload = query('a.io');
  const l4 = udp(53, 40000, payload);
  const v4 = (opts: Parameters<typeof ipv4Header>[4], proto = 17) =>
    ether(0x0800, Buffer.concat([ipv4Header(DNS4, POD4, proto, l4.length, opts), l4]));
  const withUdpLen = (len: number) => {
    const f = udp4(DNS4, POD4, 53, 40000, payload);
    f.writeUInt16BE(len, 14 + 20 + 4);
    return f;
  };
  const badIhl = v4({});
  badIhl[14] = 0x44;
  const cases: Array<[string, Buffer, string]> = [
    ['ARP', ether(0x0806, Buffer.alloc(28)), 'not-ip'],
    ['VLAN tag', ether(0x8100, Buffer.alloc(60)), 'not-ip'],
    ['ICMP', v4({}, 1), 'not-udp-tcp'],
    ['IPv4 more fragments', v4({ frag: 0x2000 }), 'fragment'],
    ['IPv4 fragment offset', v4({ frag: 0x0010 }), 'fragment'],
    ['IPv4 header length 16', badIhl, 'bad-header'],
    ['IP version 6 under IPv4 ethertype', v4({ version: 6 }), 'bad-header'],
    ['UDP length past the IP packet', withUdpLen(payload.length + 9), 'bad-header'],
    ['UDP length below 8', withUdpLen(7), 'bad-header'],
    ['IPv6 fragment header', udp6(DNS6, POD6, 53, 1, payload, [[44, 8]]), 'fragment'],
    [
      'IPv6 fragment after hop-by-hop',
      udp6(DNS6, POD6, 53, 1, payload, [
        [0, 8],
        [44, 8],
      ]),
      'fragment',
    ],
    [
      'five IPv6 extension headers',
      udp6(DNS6, POD6, 53, 1, payload, [
        [0, 8],
        [60, 8],
        [43, 8],
        [60, 8],
        [60, 8],
      ]),
      'bad-header',
    ],
    [
      'IPv6 no next header',
      udp6(DNS6, POD6, 53, 1, payload, [
        [60, 8],
        [59, 8],
      ]),
      'not-udp-tcp',
    ],
    ['runt', Buffer.alloc(10), 'truncated'],
  ];
  for (const [what, frame, reason] of cases) {
    const r = parseFrame(captured(frame));
    assert.equal(r.ok, false, what);
    if (!r.ok) {
      assert.equal(r.reason, reason, `${what}: ${r.detail}`);
      assert.ok(r.detail.length > 0, `${what} has a detail`);
    }
  }
});

test('frame: cut at every byte offset is "truncated", never a throw', () => {
  const frames = [
    udp4(DNS4, POD4, 53, 40000, SIMPLE),
    udp6(DNS6, POD6, 53, 40000, SIMPLE, [
      [0, 8],
      [60, 16],
    ]),
    tcp4(DNS4, POD4, 53, 40000, 1, 0x18, SIMPLE),
  ];
  for (const frame of frames) {
    assert.ok(parseFrame(captured(frame)).ok);
    for (let len = 0; len < frame.length; len++) {
      const r = parseFrame(captured(frame.subarray(0, len)));
      assert.equal(r.ok, false, `cut at ${len}`);
      if (!r.ok) assert.equal(r.reason, 'truncated', `cut at ${len}: ${r.detail}`);
    }
  }
});

// ---------------------------------------------------------------- messages

test('message: frame to answer, one A record', () => {
  const seg = segmentOf(parseFrame(captured(udp4(DNS4, POD4, 53, 40000, SIMPLE))));
  assert.deepEqual(messageOf(seg.payload), {
    id: 0x1234,
    isResponse: true,
    rcode: 'NOERROR',
    truncated: false,
    question: { name: 'api.example.com', type: 'A' },
    answers: [{ ip: '203.0.113.7', family: 4, ttl: 300 }],
    cnames: [],
    minTtl: 300,
  });
});

test('message: table of answers', () => {
  const cases: Array<{ what: string; packet: Buffer; expect: Partial<DnsMessage> }> = [
    {
      what: 'query: no answers, name lower-cased',
      packet: query('API.Example.COM', 'AAAA'),
      expect: {
        isResponse: false,
        question: { name: 'api.example.com', type: 'AAAA' },
        answers: [],
        cnames: [],
        minTtl: null,
      },
    },
    {
      what: 'root query: trailing dot stripped',
      packet: query('.'),
      expect: { question: { name: '', type: 'A' }, answers: [] },
    },
    {
      what: 'several A, one AAAA in canonical form',
      packet: answer('Multi.Example.com', [
        { type: 'A', name: 'multi.example.com', ttl: 30, data: '192.0.2.1' },
        { type: 'A', name: 'multi.example.com', ttl: 40, data: '192.0.2.2' },
        { type: 'AAAA', name: 'multi.example.com', ttl: 50, data: '2001:0db8:00ff:0000:0000:0000:0000:0001' },
      ]),
      expect: {
        question: { name: 'multi.example.com', type: 'A' },
        answers: [
          { ip: '192.0.2.1', family: 4, ttl: 30 },
          { ip: '192.0.2.2', family: 4, ttl: 40 },
          { ip: '2001:db8:ff::1', family: 6, ttl: 50 },
        ],
        minTtl: 30,
      },
    },
    {
      what: 'CNAME chain: TTL is the minimum along the chain, targets lower-cased',
      packet: answer('www.shop.io', [
        { type: 'CNAME', name: 'www.shop.io', ttl: 300, data: 'Shop.CDN.net' },
        { type: 'CNAME', name: 'shop.cdn.net', ttl: 60, data: 'edge-7.cdn.net' },
        { type: 'A', name: 'edge-7.cdn.net', ttl: 600, data: '198.51.100.9' },
        { type: 'A', name: 'edge-7.cdn.net', ttl: 20, data: '198.51.100.10' },
      ]),
      expect: {
        answers: [
          { ip: '198.51.100.9', family: 4, ttl: 60 },
          { ip: '198.51.100.10', family: 4, ttl: 20 },
        ],
        cnames: ['shop.cdn.net', 'edge-7.cdn.net'],
        minTtl: 20,
      },
    },
    {
      what: 'A records with any owner name count (NPEP-133), other types do not',
      packet: answer('a.io', [
        { type: 'A', name: 'unrelated.org', ttl: 10, data: '192.0.2.5' },
        { type: 'TXT', name: 'a.io', ttl: 1, data: 'v=spf1' },
        { type: 'MX', name: 'a.io', ttl: 1, data: { preference: 1, exchange: 'mx.a.io' } },
      ]),
      expect: { answers: [{ ip: '192.0.2.5', family: 4, ttl: 10 }], minTtl: 10 },
    },
    {
      what: 'authority and additional sections never count',
      packet: answer('a.io', [], {
        authorities: [{ type: 'NS', name: 'a.io', ttl: 5, data: 'ns.a.io' }],
        additionals: [
          { type: 'A', name: 'ns.a.io', ttl: 5, data: '192.0.2.53' },
          { type: 'OPT', name: '.', udpPayloadSize: 1232, flags: 0, options: [] } as never,
        ],
      }),
      expect: { answers: [], cnames: [], minTtl: null },
    },
    {
      what: 'non-IN class ignored, repeated address keeps the smallest TTL',
      packet: answer('a.io', [
        { type: 'A', name: 'a.io', ttl: 90, data: '192.0.2.8', class: 'CH' },
        { type: 'A', name: 'a.io', ttl: 90, data: '192.0.2.9' },
        { type: 'A', name: 'a.io', ttl: 70, data: '192.0.2.9' },
      ]),
      expect: { answers: [{ ip: '192.0.2.9', family: 4, ttl: 70 }], minTtl: 70 },
    },
    {
      what: 'NXDOMAIN and TC are reported',
      packet: answer('gone.io', [], { flags: 3 | dnsPacket.TRUNCATED_RESPONSE }),
      expect: { rcode: 'NXDOMAIN', truncated: true, answers: [] },
    },
    {
      what: 'TTL above 2^31-1 passed through unclamped',
      packet: answer('a.io', [{ type: 'A', name: 'a.io', ttl: 0xffffffff, data: '192.0.2.1' }]),
      expect: { answers: [{ ip: '192.0.2.1', family: 4, ttl: 0xffffffff }], minTtl: 0xffffffff },
    },
  ];
  for (const { what, packet, expect } of cases) {
    const message = messageOf(packet);
    for (const [field, value] of Object.entries(expect)) {
      assert.deepEqual(message[field as keyof DnsMessage], value, `${what}: ${field}`);
    }
  }
});

test('message: rejections', () => {
  const twoQuestions = dnsPacket.encode({
    type: 'query',
    id: 1,
    questions: [
      { type: 'A', name: 'a.io' },
      { type: 'A', name: 'b.io' },
    ],
  });
  const noQuestion = dnsPacket.encode({
    type: 'response',
    id: 1,
    answers: [{ type: 'A', name: 'a.io', ttl: 1, data: '192.0.2.1' }],
  });
  // A record whose RDLENGTH says 5: dns-packet alone would read 4 bytes and slip.
  const longA = Buffer.concat([SIMPLE, Buffer.from([0])]);
  longA.writeUInt16BE(5, SIMPLE.length - 6);
  const shortA = SIMPLE.subarray(0, SIMPLE.length - 1);
  // One label "api.example" + "com": must not read as api.example.com.
  const dotted = Buffer.from(query('apixexample.com'));
  dotted[13 + 3] = 0x2e;
  const update = Buffer.from(SIMPLE);
  update[2] = (update[2]! & 0x87) | (5 << 3);
  const forwardPointer = Buffer.from(query('a.io'));
  forwardPointer.writeUInt16BE(0xc000 | 12, 12);
  // "a.io" whose root label is a pointer to offset 4 (QDCOUNT's high byte, 0):
  // legal, dns-packet reads "a.io"; refused, as the kernel learner refuses it.
  const plain = query('a.io');
  const compressedQuestion = Buffer.concat([
    plain.subarray(0, 12 + 5),
    Buffer.from([0xc0, 0x04]),
    plain.subarray(12 + 6),
  ]);
  const cases: Array<[string, Buffer, string]> = [
    ['empty', Buffer.alloc(0), 'malformed'],
    ['short header', Buffer.alloc(11), 'malformed'],
    ['two questions', twoQuestions, 'multiple-questions'],
    ['no question', noQuestion, 'no-question'],
    ['A with RDLENGTH 5', longA, 'malformed'],
    ['A cut short', shortA, 'malformed'],
    ['label with a dot', dotted, 'malformed'],
    ['opcode UPDATE', update, 'malformed'],
    ['pointer loop', forwardPointer, 'malformed'],
    ['compression pointer in the question name', compressedQuestion, 'malformed'],
  ];
  for (const [what, packet, reason] of cases) {
    const r = decodeDns(packet);
    assert.equal(r.ok, false, what);
    if (!r.ok) {
      assert.equal(r.reason, reason, `${what}: ${r.detail}`);
      assert.ok(r.detail.length > 0);
    }
  }
});

test('message: cut at every byte offset is rejected, never a throw', () => {
  const packet = answer(
    'www.shop.io',
    [
      { type: 'CNAME', name: 'www.shop.io', ttl: 300, data: 'shop.cdn.net' },
      { type: 'A', name: 'shop.cdn.net', ttl: 600, data: '198.51.100.9' },
      { type: 'AAAA', name: 'shop.cdn.net', ttl: 600, data: '2001:db8:ff::9' },
    ],
    { additionals: [{ type: 'TXT', name: 'x.io', ttl: 1, data: 'hello' }] },
  );
  assert.ok(decodeDns(packet).ok);
  for (let len = 0; len < packet.length; len++) {
    const r = decodeDns(packet.subarray(0, len));
    assert.equal(r.ok, false, `cut at ${len}`);
  }
});

// ---------------------------------------------------------------- TCP

function tcpReassembler(opts: { maxFlows?: number; maxBytesPerFlow?: number; idleMs?: number } = {}) {
  let clock = 1_000;
  const r = new TcpDnsReassembler({
    maxFlows: opts.maxFlows ?? 16,
    maxBytesPerFlow: opts.maxBytesPerFlow ?? 70_000,
    idleMs: opts.idleMs ?? 30_000,
    now: () => clock,
  });
  return {
    r,
    advance: (ms: number) => {
      clock += ms;
    },
  };
}

function tcpSeg(seq: number, payload: Buffer, flags = 0x18, sport = 53, dport = 40000): Segment {
  return segmentOf(parseFrame(captured(tcp4(DNS4, POD4, sport, dport, seq, flags, payload))));
}

function framed(...messages: Buffer[]): Buffer {
  return Buffer.concat(
    messages.flatMap((m) => {
      const len = Buffer.alloc(2);
      len.writeUInt16BE(m.length);
      return [len, m];
    }),
  );
}

/** Segments of `stream` cut at `cuts`, starting at sequence number `isn`. */
function cut(stream: Buffer, cuts: number[], isn: number): Segment[] {
  const bounds = [0, ...cuts, stream.length];
  return bounds.slice(1).map((end, i) => tcpSeg((isn + bounds[i]!) >>> 0, stream.subarray(bounds[i]!, end)));
}

function pushAll(r: TcpDnsReassembler, segs: Segment[]): Buffer[] {
  return segs.flatMap((s) => r.push(s).messages);
}

const M1 = answer('one.io', [{ type: 'A', name: 'one.io', ttl: 5, data: '192.0.2.1' }]);
const M2 = answer('two.io', [{ type: 'A', name: 'two.io', ttl: 5, data: '192.0.2.2' }]);

test('tcp: a message split over 3 segments (sequence numbers wrapping)', () => {
  const { r } = tcpReassembler();
  const segs = cut(framed(M1), [1, 20], 0xfffffff8);
  assert.deepEqual(r.push(segs[0]!).messages, []);
  assert.deepEqual(r.push(segs[1]!).messages, []);
  const out = r.push(segs[2]!).messages;
  assert.equal(out.length, 1);
  assert.ok(out[0]!.equals(M1));
  assert.equal(messageOf(out[0]!).question?.name, 'one.io');
});

test('tcp: two messages in one segment, then one spanning the next two', () => {
  const { r } = tcpReassembler();
  const stream = framed(M1, M2, M1);
  const split = 4 + M1.length + M2.length + 5;
  const out = pushAll(r, cut(stream, [split], 1000));
  assert.deepEqual(
    out.map((m) => m.toString('hex')),
    [M1, M2, M1].map((m) => m.toString('hex')),
  );
});

test('tcp: out-of-order segments are put back in order', () => {
  const { r } = tcpReassembler();
  const segs = cut(framed(M1, M2), [3, 30, 50], 5000);
  const out = pushAll(r, [segs[0]!, segs[2]!, segs[3]!, segs[1]!]);
  assert.deepEqual(
    out.map((m) => m.toString('hex')),
    [M1, M2].map((m) => m.toString('hex')),
  );
});

test('tcp: duplicate and overlapping segments yield each message once', () => {
  const { r } = tcpReassembler();
  const stream = framed(M1, M2);
  const segs = cut(stream, [10, 40], 7);
  const overlap = tcpSeg(7 + 5, stream.subarray(5, 45));
  const out = pushAll(r, [segs[0]!, segs[0]!, segs[2]!, segs[2]!, segs[1]!, segs[1]!, overlap, segs[2]!]);
  assert.deepEqual(
    out.map((m) => m.toString('hex')),
    [M1, M2].map((m) => m.toString('hex')),
  );
});

test('tcp: FIN frees the flow; its retransmission yields nothing', () => {
  const { r } = tcpReassembler();
  const last = tcpSeg(100, framed(M1), 0x18 | TCP_FIN);
  assert.equal(r.push(last).messages.length, 1);
  assert.equal(r.size, 0);
  assert.deepEqual(r.push(last).messages, []);
  assert.equal(r.size, 0);
});

test('tcp: SYN restarts a flow, RST forgets it', () => {
  const { r } = tcpReassembler();
  const stream = framed(M1);
  r.push(tcpSeg(100, stream.subarray(0, 10)));
  // New connection on the same 4-tuple (TFO SYN carrying data).
  assert.equal(r.push(tcpSeg(9000, stream, TCP_SYN)).messages.length, 1);
  r.push(tcpSeg(9001 + stream.length, stream.subarray(0, 10)));
  assert.equal(r.size, 1);
  r.push(tcpSeg(0, Buffer.from([1]), TCP_RST));
  assert.equal(r.size, 0);
});

test('tcp: a flow over maxBytesPerFlow is dropped with a reason', () => {
  const { r } = tcpReassembler({ maxBytesPerFlow: 100 });
  const big = framed(Buffer.alloc(150, 1));
  const res = r.push(tcpSeg(1, big.subarray(0, 60)));
  assert.match(res.dropped ?? '', /over maxBytesPerFlow 100/);
  assert.equal(r.size, 0);
  // Out-of-order bytes count too: a gap that never fills.
  const res2 = [tcpSeg(1, Buffer.from([0, 90])), tcpSeg(10, Buffer.alloc(60)), tcpSeg(80, Buffer.alloc(60))].map((s) =>
    r.push(s),
  );
  assert.match(res2[2]!.dropped ?? '', /holds 122 bytes, over maxBytesPerFlow 100/);
  assert.equal(r.size, 0);
});

test('tcp: more than maxFlows evicts the least recently used', () => {
  const { r } = tcpReassembler({ maxFlows: 2 });
  const stream = framed(M1);
  const head = stream.subarray(0, 10);
  r.push(tcpSeg(1, head, 0x18, 53, 1001));
  r.push(tcpSeg(1, head, 0x18, 53, 1002));
  r.push(tcpSeg(11, stream.subarray(10, 12), 0x18, 53, 1001)); // 1001 is now the most recent
  const res = r.push(tcpSeg(1, head, 0x18, 53, 1003));
  assert.match(res.dropped ?? '', /\|1002: evicted, over maxFlows 2/);
  assert.equal(r.size, 2);
  assert.equal(r.push(tcpSeg(13, stream.subarray(12), 0x18, 53, 1001)).messages.length, 1, 'flow 1001 survived');
  assert.deepEqual(r.push(tcpSeg(11, stream.subarray(10), 0x18, 53, 1002)).messages, [], 'flow 1002 lost its head');
});

test('tcp: a 64 KiB message in 1-byte segments comes out whole, and its buffer is let go', () => {
  const { r } = tcpReassembler();
  const msg = Buffer.alloc(65_000, 0x5a);
  const stream = framed(msg);
  let out: Buffer[] = [];
  let peak = 0;
  for (let i = 0; i < stream.length; i++) {
    out = out.concat(r.push(tcpSeg(1 + i, stream.subarray(i, i + 1))).messages);
    peak = Math.max(peak, r.bytesHeld);
  }
  assert.equal(out.length, 1);
  assert.ok(out[0]!.equals(msg));
  assert.ok(peak <= 2 * stream.length, `the buffer grows by doubling (peak ${peak} bytes)`);
  assert.equal(r.bytesHeld, 0, 'nothing held once the message is cut');
});

test('tcp: all flows together stay under maxTotalBytes; the least recently used go first', () => {
  let clock = 0;
  const r = new TcpDnsReassembler({
    maxFlows: 100,
    maxBytesPerFlow: 70_000,
    maxTotalBytes: 3000,
    idleMs: 30_000,
    now: () => clock++,
  });
  const head = framed(Buffer.alloc(1000)).subarray(0, 900);
  const notes: string[] = [];
  for (let port = 1000; port < 1010; port++) {
    const res = r.push(tcpSeg(1, head, 0x18, 53, port));
    if (res.dropped) notes.push(res.dropped);
  }
  assert.ok(r.bytesHeld <= 3000, `held ${r.bytesHeld}`);
  assert.ok(r.size <= 3);
  assert.match(notes[0] ?? '', /\|1000: evicted, all flows together over maxTotalBytes 3000/);
});

test('tcp: sweep drops idle flows by the injected clock', () => {
  const { r, advance } = tcpReassembler({ idleMs: 5_000 });
  const stream = framed(M1);
  r.push(tcpSeg(1, stream.subarray(0, 10), 0x18, 53, 1001));
  advance(3_000);
  r.push(tcpSeg(1, stream.subarray(0, 10), 0x18, 53, 1002));
  advance(2_000);
  assert.equal(r.sweep(), 1);
  assert.equal(r.size, 1);
  assert.equal(r.push(tcpSeg(11, stream.subarray(10), 0x18, 53, 1002)).messages.length, 1);
  advance(5_000);
  assert.equal(r.sweep(), 1);
  assert.equal(r.size, 0);
});

// ---------------------------------------------------------------- fuzz

/** mulberry32: small, seeded, good enough to spread mutations. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function mutate(rand: () => number, base: Buffer): Buffer {
  const int = (n: number) => Math.floor(rand() * n);
  const kind = int(6);
  if (kind === 0) return Buffer.from(Array.from({ length: int(600) }, () => int(256)));
  const out = Buffer.from(base);
  if (kind === 1 || kind === 5)
    for (let i = int(8) + 1; i > 0 && out.length > 0; i--) out[int(out.length)]! ^= 1 << int(8);
  if (kind === 2 || kind === 5) return out.subarray(0, int(out.length + 1));
  if (kind === 3 && out.length >= 2) out.writeUInt16BE(int(65536), int(out.length - 1)); // random length/count field
  if (kind === 4) return Buffer.concat([out, Buffer.from(Array.from({ length: int(40) }, () => int(256)))]);
  return out;
}

test('fuzz: random and mutated input never throws (deterministic seed)', () => {
  const rand = prng(0x5eed);
  const messages = [
    SIMPLE,
    M1,
    query('q.example'),
    answer(
      'www.shop.io',
      [
        { type: 'CNAME', name: 'www.shop.io', ttl: 300, data: 'shop.cdn.net' },
        { type: 'A', name: 'shop.cdn.net', ttl: 600, data: '198.51.100.9' },
        { type: 'AAAA', name: 'shop.cdn.net', ttl: 600, data: '2001:db8:ff::9' },
      ],
      { additionals: [{ type: 'TXT', name: 'x.io', ttl: 1, data: 'hello' }] },
    ),
  ];
  const frames = messages.flatMap((m) => [
    udp4(DNS4, POD4, 53, 40000, m, 100),
    udp6(DNS6, POD6, 53, 40000, m, [
      [0, 8],
      [60, 8],
    ]),
    tcp4(DNS4, POD4, 53, 40000, 1, 0x18, framed(m)),
  ]);
  const { r } = tcpReassembler({ maxFlows: 8, maxBytesPerFlow: 2_000 });
  let decoded = 0;
  const ITERATIONS = 12_000;
  for (let i = 0; i < ITERATIONS; i++) {
    const dns = mutate(rand, messages[i % messages.length]!);
    const d = decodeDns(dns);
    if (d.ok) decoded++;
    else assert.ok(['malformed', 'no-question', 'multiple-questions'].includes(d.reason));

    const frame = mutate(rand, frames[i % frames.length]!);
    const f = parseFrame(captured(frame));
    if (!f.ok) {
      assert.ok(['truncated', 'not-ip', 'not-udp-tcp', 'fragment', 'bad-header'].includes(f.reason));
      continue;
    }
    for (const m of f.segment.proto === 'tcp' ? r.push(f.segment).messages : [f.segment.payload]) decodeDns(m);
  }
  assert.ok(decoded > 0 && decoded < ITERATIONS, `some but not all mutants decode (${decoded})`);
  assert.ok(r.size <= 8);
});
