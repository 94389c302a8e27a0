/*
 * The TLS server name check in the kernel, through BPF_PROG_TEST_RUN on the
 * real enforcer with real ClientHellos (OpenSSL's, reshaped the way browsers
 * send theirs): which names pass, the reset and drop of a refused flow, a
 * hello over several segments and records, retransmissions, holes, the
 * bounds, audit mode, the fast path once allowed, and a fuzz run of mutated
 * hellos that must never open a flow for a name outside the rules.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { requireKernelTestEnv } from '../helpers/topology.js';
import { LearnerHarness } from '../helpers/learner-harness.js';
import { buildFrame } from '../helpers/frames.js';
import {
  realClientHellos,
  nameLast,
  parseClientHello,
  buildClientHello,
  serverNameExtension,
  parseServerName,
  EXT_SERVER_NAME,
} from '../helpers/client-hello.js';
import {
  TcpFlow,
  PASS,
  SHOT,
  REDIRECT,
  PSH_ACK,
  TCP,
  TLS_SERVER_V4 as SERVER_V4,
  TLS_SERVER_V6 as SERVER_V6,
  TLS_ALLOWED as ALLOWED,
  allowIp,
  tlsRules,
} from '../helpers/tcp-flow.js';
import { native } from '../../agent/datapath/native.js';
import { CtFlag, IPPROTO, PROTO_TLS } from '../../agent/datapath/codecs.js';
import { escapeWireName } from '../../agent/dns/presentation.js';
import { matchesPattern, parsePattern } from '../../agent/policy/pattern.js';

const PLAIN_V4 = '203.0.113.11'; // also allowed by a plain TCP rule on 443
const ACK = TCP.ACK;

const [HELLO_13, HELLO_12, HELLO_EVIL, HELLO_NONE, HELLO_WILD, HELLO_APEX] = realClientHellos([
  { serverName: 'api.stripe.test' },
  { serverName: 'api.stripe.test', version: '1.2' },
  { serverName: 'evil.test' },
  {},
  { serverName: 'www.kadath.test' },
  { serverName: 'kadath.test' },
]) as [Buffer, Buffer, Buffer, Buffer, Buffer, Buffer];

/** The same hello naming another server (bytes as given: case, dots). */
function withName(hello: Buffer, name: string): Buffer {
  const c = parseClientHello(hello);
  return buildClientHello({
    head: c.head,
    extensions: c.extensions.map((e) => (e.type === EXT_SERVER_NAME ? serverNameExtension(name) : e)),
  });
}
const HELLO_UPPER = withName(HELLO_13, 'API.Stripe.TEST');
/** A TLS record of the client's after its hello: ChangeCipherSpec, then (encrypted) application data. */
const CCS = Buffer.from([20, 3, 3, 0, 1, 1]);
const APP_DATA = Buffer.from([23, 3, 3, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);

let nextPort = 30000;

interface Flow {
  sport: number;
  /** the SYN (seq 1000), then the server's SYN-ACK (seq 6): the SYN's verdict */
  syn(): number;
  /** data at stream offset `at` (0 = the first byte after the SYN) */
  send(payload: Buffer, at: number, flags?: number): { retval: number; data: Buffer };
  /** the server's data to the pod, through the learner (tc egress) */
  serverData(payload: Buffer): number;
  flags(): number | undefined;
  parserState(): boolean;
}

function withTls(
  t: Parameters<typeof requireKernelTestEnv>[0],
  fn: (h: LearnerHarness, flow: (opts?: { v6?: boolean; dst?: string; dport?: number }) => Flow) => void,
): void {
  if (!requireKernelTestEnv(t, ['python3'])) return;
  const h = LearnerHarness.open();
  try {
    tlsRules(h);
    allowIp(h, PLAIN_V4, [
      { port: 443, proto: PROTO_TLS },
      { port: 443, proto: IPPROTO.tcp },
    ]);
    const flow = (opts: { v6?: boolean; dst?: string; dport?: number } = {}): Flow => {
      const f = new TcpFlow(h, {
        v6: opts.v6,
        dst: opts.dst ?? (opts.v6 ? SERVER_V6 : SERVER_V4),
        dport: opts.dport ?? 443,
        sport: nextPort++,
        isn: 1000,
        peerIsn: 6,
      });
      return {
        sport: f.sport,
        syn: () => f.handshake(),
        send: (payload, at, flags = PSH_ACK) => f.send(payload, at, { flags }),
        serverData: (payload) => f.peer(payload),
        flags: () => f.ctFlags(),
        parserState: () => f.parserState(),
      };
    };
    fn(h, flow);
  } finally {
    h.close();
  }
}

/** Send `hello` cut at the given stream offsets; the retvals, one per segment. */
function sendInPieces(f: Flow, hello: Buffer, cuts: number[]): number[] {
  const edges = [0, ...cuts, hello.length];
  const out: number[] = [];
  for (let i = 0; i + 1 < edges.length; i++) out.push(f.send(hello.subarray(edges[i], edges[i + 1]), edges[i]!).retval);
  return out;
}

test('an allowed server name passes; watched until the server answers, then the fast path (no parser state, no flag)', (t) => {
  withTls(t, (_h, flow) => {
    for (const hello of [HELLO_13, HELLO_12, HELLO_UPPER]) {
      const f = flow();
      assert.equal(f.syn(), PASS, 'the SYN of a tls-ruled flow passes');
      assert.equal(f.flags()! & CtFlag.tlsPending, CtFlag.tlsPending, 'tracked as pending its check');
      assert.ok(f.parserState(), 'the parser starts at the SYN');
      assert.equal(f.send(hello, 0).retval, PASS);
      assert.equal(
        f.flags()! & (CtFlag.tlsPending | CtFlag.tlsRefused | CtFlag.tlsWatch),
        CtFlag.tlsWatch,
        'allowed: watched, no longer pending',
      );
      assert.equal(f.send(Buffer.alloc(0), hello.length, ACK).retval, PASS, 'an ACK while watched');
      assert.equal(f.serverData(Buffer.from('server hello')), PASS);
      assert.equal(
        f.flags()! & (CtFlag.tlsPending | CtFlag.tlsRefused | CtFlag.tlsWatch),
        0,
        'the server answered: the check is over',
      );
      assert.equal(f.parserState(), false, 'the parser state is gone');
      assert.equal(f.send(Buffer.from('application data'), hello.length).retval, PASS);
    }
  });
});

test('while watched, a hello byte sent again must be the byte judged (the first copy may have died on the way)', (t) => {
  withTls(t, (_h, flow) => {
    const hello = nameLast(HELLO_13, 1700);
    const f = flow();
    f.syn();
    assert.deepEqual(sendInPieces(f, hello, [1000]), [PASS, PASS]);
    assert.equal(f.flags()! & CtFlag.tlsWatch, CtFlag.tlsWatch);
    const forged = Buffer.from(hello.subarray(0, 1000));
    forged[100] ^= 0x20;
    assert.equal(f.send(forged, 0).retval, SHOT, 'other bytes in the judged range: dropped');
    assert.equal(f.send(hello.subarray(0, 1000), 0).retval, PASS, 'the same bytes again: pass');
    assert.equal(f.send(hello.subarray(1000), 1000).retval, PASS, 'the segment with the name again: pass');
    assert.equal(f.send(CCS, hello.length).retval, PASS, 'a record after the hello (ChangeCipherSpec): pass');
    assert.equal(f.send(APP_DATA, hello.length + CCS.length).retval, PASS, 'early data: skipped, passes');
    f.serverData(Buffer.from('server hello'));
    assert.equal(f.flags()! & CtFlag.tlsWatch, 0);
  });
});

test('another name on the same IP, no server name, or not TLS at all: reset to the pod, then every packet dropped', (t) => {
  withTls(t, (h, flow) => {
    const before = h.dp.maps.counters.get(h.identity)?.reasons['tls-server-name'] ?? 0n;
    for (const [what, payload] of [
      ['evil.test', HELLO_EVIL],
      ['no SNI', HELLO_NONE],
      ['plain HTTP', Buffer.from('GET / HTTP/1.1\r\nHost: api.stripe.test\r\n\r\n')],
      ['the apex of a wildcard', HELLO_APEX],
      ['an allowed name with a trailing dot (RFC 6066 forbids it)', withName(HELLO_13, 'api.stripe.test.')],
    ] as const) {
      const f = flow();
      assert.equal(f.syn(), PASS);
      const r = f.send(payload, 0);
      assert.equal(r.retval, REDIRECT, `${what}: the segment becomes a RST back to the pod`);
      const tcp = r.data.subarray(14 + 20);
      assert.equal(tcp[13]! & 0x14, 0x14, `${what}: RST+ACK`);
      assert.equal(tcp.readUInt16BE(0), 443, 'from the server port');
      assert.equal(tcp.readUInt32BE(8), 1001 + payload.length, 'acknowledging what the pod sent');
      assert.equal(f.flags()! & CtFlag.tlsRefused, CtFlag.tlsRefused, `${what}: the flow is marked refused`);
      assert.equal(f.send(Buffer.from('more'), payload.length).retval, SHOT, `${what}: later packets drop`);
      assert.equal(f.send(Buffer.alloc(0), payload.length, ACK).retval, SHOT, `${what}: a bare ACK too`);
    }
    const after = h.dp.maps.counters.get(h.identity)!.reasons['tls-server-name'];
    assert.ok(after - before >= 4n, 'counted as tls-server-name');
    const events = h.dp.maps.recent
      .entries()
      .map(([, v]) => v.event)
      .filter((e) => e.reason === 'tls-server-name');
    const names = events
      .map((e) => h.dp.maps.dnsRefused.get({ tsNs: e.tsNs, identity: e.identity, sport: e.sport }))
      .filter((n) => n !== undefined);
    assert.ok(
      names.some((n) => n!.wire && escapeWireName(n!.wire) === 'evil.test'),
      'the refused name is remembered for egressctl drops',
    );
    assert.ok(
      names.some((n) => n!.wire === null),
      'a hello without a name is remembered as such',
    );
  });
});

test('a wildcard rule: a name under it passes, on IPv6 too', (t) => {
  withTls(t, (_h, flow) => {
    const f = flow();
    f.syn();
    assert.equal(f.send(HELLO_WILD, 0).retval, PASS);
    assert.equal(f.flags()! & CtFlag.tlsPending, 0);
    const v6 = flow({ v6: true });
    assert.equal(v6.syn(), PASS);
    assert.equal(v6.send(HELLO_13, 0).retval, PASS);
    assert.equal(v6.flags()! & CtFlag.tlsPending, 0, 'IPv6 flow checked');
    const v6evil = flow({ v6: true });
    v6evil.syn();
    assert.equal(v6evil.send(HELLO_EVIL, 0).retval, REDIRECT, 'IPv6: refused and reset');
  });
});

test('a hello of 2 and 3 segments and 3 records, the name in the last segment: each segment passes, then the flow is checked', (t) => {
  withTls(t, (_h, flow) => {
    const big = nameLast(HELLO_13, 1700); // a post-quantum browser's size, the name last
    assert.ok(big.length > 1900);
    const f2 = flow();
    f2.syn();
    assert.deepEqual(sendInPieces(f2, big, [1400]), [PASS, PASS]);
    assert.equal(f2.flags()! & (CtFlag.tlsPending | CtFlag.tlsWatch), CtFlag.tlsWatch);
    const f3 = flow();
    f3.syn();
    assert.deepEqual(
      sendInPieces(f3, nameLast(HELLO_13, 1700, 700), [3, 1000]),
      [PASS, PASS, PASS],
      'records of 700 bytes, a record header cut',
    );
    assert.equal(f3.flags()! & CtFlag.tlsPending, 0);
    const evil = flow();
    evil.syn();
    assert.deepEqual(
      sendInPieces(evil, nameLast(HELLO_EVIL, 1700), [1400]),
      [PASS, REDIRECT],
      'the segment with the refused name is reset',
    );
    const cutName = flow(); // the name itself split between segments
    cutName.syn();
    const hello = nameLast(HELLO_13, 100);
    assert.deepEqual(sendInPieces(cutName, hello, [hello.length - 5]), [PASS, PASS]);
    assert.equal(cutName.flags()! & CtFlag.tlsPending, 0);
  });
});

test('a retransmission of parsed bytes passes, also re-cut with new bytes after them; other bytes in the judged range, a hole or reordering are dropped until resent in order', (t) => {
  withTls(t, (_h, flow) => {
    const hello = nameLast(HELLO_13, 1700);
    const f = flow();
    f.syn();
    assert.equal(f.send(hello.subarray(0, 1000), 0).retval, PASS);
    assert.equal(f.send(hello.subarray(0, 1000), 0).retval, PASS, 'the same segment again');
    const forged = Buffer.from(hello.subarray(0, 1000));
    forged[600] ^= 0xff;
    assert.equal(f.send(forged, 0).retval, SHOT, 'the same range with other bytes');
    const forgedOverlap = Buffer.from(hello.subarray(500, 1200));
    forgedOverlap[100] ^= 0x20;
    assert.equal(f.send(forgedOverlap, 500).retval, SHOT, 'old bytes that differ, with new ones after them');
    assert.equal(
      f.send(hello.subarray(500, 1200), 500).retval,
      PASS,
      'old bytes as judged, then new ones: the new ones are parsed',
    );
    assert.equal(f.send(hello.subarray(1500), 1500).retval, SHOT, 'past a hole');
    assert.equal(f.flags()! & CtFlag.tlsPending, CtFlag.tlsPending, 'still pending: nothing refused the flow');
    assert.equal(
      f.send(hello.subarray(1000, 1500), 1000).retval,
      PASS,
      'the hole filled (re-cut: 200 bytes again, 300 new)',
    );
    assert.equal(f.send(hello.subarray(1500), 1500).retval, PASS, 'then the rest, with the name');
    assert.equal(f.flags()! & CtFlag.tlsPending, 0);
  });
});

test('a hello that shows no name within 16 segments is refused; a plain tcp rule on the port skips the check; QUIC and IP fragments to a tls-only destination are refused', (t) => {
  withTls(t, (h, flow) => {
    const hello = nameLast(HELLO_13, 1700);
    const f = flow();
    f.syn();
    const cuts = Array.from({ length: 16 }, (_, i) => (i + 1) * 90); // the name lies past 1,440
    const r = sendInPieces(f, hello, cuts);
    assert.deepEqual(r.slice(0, 15), Array(15).fill(PASS));
    assert.equal(r[15], REDIRECT, 'the 16th segment without a name');
    const plain = flow({ dst: PLAIN_V4 });
    plain.syn();
    assert.equal(plain.flags()! & CtFlag.tlsPending, 0, 'a tcp rule for the same port: no check');
    assert.equal(plain.send(HELLO_EVIL, 0).retval, PASS);
    const quic = native.progTestRun(
      h.dp.programs!.enforcer,
      buildFrame({ src: h.podV4, dst: SERVER_V4, proto: 'udp', sport: 40443, dport: 443, payload: Buffer.alloc(1200) }),
    );
    assert.equal(quic.retval | 0, SHOT, 'UDP 443 is not allowed by a tls rule');
    const otherPort = flow({ dport: 8443 });
    assert.equal(otherPort.syn(), SHOT, 'another port is not allowed');
    const frag = buildFrame({
      src: h.podV4,
      dst: SERVER_V4,
      proto: 'tcp',
      sport: 40444,
      dport: 443,
      payload: Buffer.alloc(100),
    });
    frag.writeUInt16BE(16, 14 + 6); // fragment offset 16 (x 8 bytes): a later fragment, judged by its address
    assert.equal(
      native.progTestRun(h.dp.programs!.enforcer, frag).retval | 0,
      SHOT,
      'a later IP fragment to a tls-ruled destination could hide hello bytes: refused',
    );
  });
});

test('a flow met mid-stream (no SYN seen) cannot be checked and is refused', (t) => {
  withTls(t, (_h, flow) => {
    const f = flow();
    assert.equal(f.send(HELLO_13, 0).retval, REDIRECT);
  });
});

test('audit mode: a refused name is reported and passes, and the flow passes on as an audited one', (t) => {
  withTls(t, (h, flow) => {
    h.dp.maps.endpoints.set(1, { identity: h.identity, flags: 0x2 });
    const f = flow();
    f.syn();
    assert.equal(f.send(HELLO_EVIL, 0).retval, PASS);
    assert.equal(f.flags()! & (CtFlag.tlsPending | CtFlag.tlsRefused | CtFlag.audited), CtFlag.audited);
    assert.equal(f.send(Buffer.from('data'), HELLO_EVIL.length).retval, PASS);
    assert.ok(h.dp.maps.counters.get(h.identity)!.audited >= 1n);
  });
});

/** Mutations of a hello: flipped, inserted, deleted bytes, and length fields set to odd values. */
function mutate(hello: Buffer, rnd: () => number): Buffer {
  let b = Buffer.from(hello);
  const n = 1 + Math.floor(rnd() * 4);
  for (let i = 0; i < n; i++) {
    const at = Math.floor(rnd() * b.length);
    const op = Math.floor(rnd() * 5);
    if (op === 0) b[at] = Math.floor(rnd() * 256);
    else if (op === 1) b = Buffer.concat([b.subarray(0, at), Buffer.from([Math.floor(rnd() * 256)]), b.subarray(at)]);
    else if (op === 2) b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1)]);
    else if (op === 3 && at + 1 < b.length)
      b.writeUInt16BE(
        [0, 1, 0xffff, b.readUInt16BE(at) + 1, b.readUInt16BE(at) - 1][Math.floor(rnd() * 5)]! & 0xffff,
        at,
      );
    else b[at] ^= 1 << Math.floor(rnd() * 8);
  }
  return b;
}

function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
}

test('fuzz: mutated hellos never open a flow for a name outside the rules, and never fault', (t) => {
  const iterations = Number(process.env.TLS_FUZZ_ITERATIONS ?? process.env.FQE_FUZZ_RUNS ?? 100_000);
  withTls(t, (h, flow) => {
    const patterns = ALLOWED.map((p) => parsePattern(p));
    const isAllowed = (name: string) => patterns.some((p) => matchesPattern(p, name));
    // seeds: the real hellos, the name last, split records, look-alike names
    const lookalike = (name: string) => withName(HELLO_13, name);
    const seeds = [
      HELLO_13,
      HELLO_12,
      HELLO_EVIL,
      HELLO_NONE,
      HELLO_WILD,
      nameLast(HELLO_13, 600, 300),
      nameLast(HELLO_EVIL, 600, 300),
      lookalike('api.stripe.test.evil.test'),
      lookalike('kadath.test'),
      lookalike('xkadath.test'),
      lookalike('a..kadath.test'),
      lookalike('api.stripe.test.'),
    ];
    const rnd = lcg(13);
    let allowed = 0;
    for (let i = 0; i < iterations; i++) {
      const hello = mutate(seeds[i % seeds.length]!, rnd);
      const f = flow();
      f.syn();
      const cut = Math.floor(rnd() * hello.length);
      const r = cut > 0 && rnd() < 0.5 ? sendInPieces(f, hello, [cut]) : [f.send(hello, 0).retval];
      for (const v of r) assert.ok([PASS, SHOT, REDIRECT].includes(v), `iteration ${i}: retval ${v}`);
      const flags = f.flags();
      if (flags !== undefined && (flags & (CtFlag.tlsPending | CtFlag.tlsRefused)) === 0) {
        allowed++;
        const name = parseServerName(hello);
        assert.ok(
          name !== null && isAllowed(name),
          `iteration ${i}: allowed a hello naming ${JSON.stringify(name)}: ${hello.toString('hex')}`,
        );
      }
      if (i % 1000 === 999) {
        h.dp.maps.conntrack.deleteMany(h.dp.maps.conntrack.entries().map(([k]) => k));
        h.dp.maps.ctCounts.delete(h.identity);
        if (nextPort > 60000) nextPort = 30000;
      }
    }
    t.diagnostic(`${iterations} mutated hellos, ${allowed} allowed (each naming an allowed server)`);
    assert.ok(allowed > 0, 'some mutations keep an allowed name');
  });
});

test('with no TLS check program loaded (its tail-call slot empty), a tls-ruled flow is reset at its first data: fail closed', (t) => {
  withTls(t, (h, flow) => {
    const tails = native.objGet(`${h.pinDir}/fqe_enforcer_tails`);
    try {
      assert.ok(native.mapDelete(tails, Buffer.from([1, 0, 0, 0])), "the check's slot (1) emptied");
      const f = flow();
      assert.equal(f.syn(), PASS, 'the SYN carries no name');
      assert.equal(f.send(HELLO_13, 0).retval, REDIRECT, 'an allowed name too: reset, never passed unchecked');
      assert.equal(f.send(Buffer.from('more'), HELLO_13.length).retval, REDIRECT, 'and every later data segment');
      const plain = flow({ dst: PLAIN_V4 });
      assert.equal(plain.syn(), PASS);
      assert.equal(plain.send(HELLO_EVIL, 0).retval, PASS, 'a destination a plain tcp rule allows is not affected');
    } finally {
      native.closeFd(tails);
    }
  });
});

test("a pod has a share of the flows under the TLS check: past it, its new tls-ruled connections are refused, not other pods' checks pushed out", (t) => {
  withTls(t, (h, flow) => {
    h.dp.maps.limits.set(0, { ipsPerPod: 0, tlsFlowsPerPod: 3 });
    const flows = Array.from({ length: 4 }, () => flow());
    assert.deepEqual(
      flows.map((f) => f.syn()),
      [PASS, PASS, PASS, SHOT],
      'three flows pending their check, the fourth refused',
    );
    assert.equal(h.dp.maps.counters.get(h.identity)!.reasons['flow-quota'], 1n, 'as flow-quota');
    assert.equal(h.dp.maps.podShares.get(h.identity)!.tlsFlows, 3n);
    assert.equal(flows[0]!.send(HELLO_13, 0).retval, PASS, 'the flows in the share are checked as usual');
    h.dp.maps.podShares.set(h.identity, { allow: 0n, tlsFlows: 2n }); // the agent's sweep: one check is over
    assert.equal(flow().syn(), PASS, 'room again');
  });
});
