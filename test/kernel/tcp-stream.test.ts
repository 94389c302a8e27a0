/*
 * What a receiver reads, against what the kernel judged: the TLS check and
 * the DNS query filter over TCP, through BPF_PROG_TEST_RUN on the real
 * programs, with real sequence numbers. Each flow opens as on the wire: the
 * pod's SYN through the enforcer, the peer's SYN-ACK through the learner
 * (the base of the pod's stream). A pod with CAP_NET_RAW may send anything:
 * segments that overlap bytes the peer has, holes, a forged SYN or RST,
 * urgent data, a second ClientHello after a HelloRetryRequest. The fuzz run
 * at the end plays those games at random against a model of a Linux
 * receiver and asserts that no name outside the rules is ever read. The
 * same attacks end to end are in test/e2e/escape-tcp.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dnsPacket from 'dns-packet';
import { requireKernelTestEnv } from '../helpers/topology.js';
import { LearnerHarness } from '../helpers/learner-harness.js';
import {
  TcpFlow,
  TCP,
  PSH_ACK,
  PASS,
  SHOT,
  REDIRECT,
  TLS_SERVER_V4,
  TLS_SERVER_V6,
  TLS_ALLOWED,
  tlsRules,
} from '../helpers/tcp-flow.js';
import {
  realClientHellos,
  parseClientHello,
  buildClientHello,
  serverNameExtension,
  parseServerName,
  urgentByteHello,
  serverHello,
  applicationData,
  CHANGE_CIPHER_SPEC,
  EXT_SERVER_NAME,
} from '../helpers/client-hello.js';
import { CtFlag, ResolverFlag } from '../../agent/datapath/codecs.js';
import { parseIp } from '../../agent/net/addr.js';
import { matchesPattern, parsePattern } from '../../agent/policy/pattern.js';

const RESOLVER_V6 = '2001:db8:ff::53';
const EMPTY = Buffer.alloc(0);

let nextPort = 20000;

interface Streams {
  h: LearnerHarness;
  /** a flow to the TLS server on 443 (a tls rule: the check applies) */
  tls(opts?: { v6?: boolean; isn?: number; peerIsn?: number }): TcpFlow;
  /** a DNS-over-TCP flow to the trusted resolver */
  dns(opts?: { v6?: boolean; isn?: number; peerIsn?: number }): TcpFlow;
}

function withStreams(t: Parameters<typeof requireKernelTestEnv>[0], fn: (s: Streams) => void): void {
  if (!requireKernelTestEnv(t, ['python3'])) return;
  const h = LearnerHarness.open();
  try {
    tlsRules(h); // the DNS query filter allows the same names
    h.dp.maps.resolvers.set(parseIp(RESOLVER_V6), ResolverFlag.trusted | ResolverFlag.noPathCheck);
    const port = () => (nextPort = nextPort >= 60000 ? 20000 : nextPort + 1);
    fn({
      h,
      tls: (o = {}) => new TcpFlow(h, { ...o, dst: o.v6 ? TLS_SERVER_V6 : TLS_SERVER_V4, dport: 443, sport: port() }),
      dns: (o = {}) => new TcpFlow(h, { ...o, dst: o.v6 ? RESOLVER_V6 : h.resolver, dport: 53, sport: port() }),
    });
  } finally {
    h.close();
  }
}

/** The same hello naming another server (every other byte the same). */
function withName(hello: Buffer, name: string): Buffer {
  const c = parseClientHello(hello);
  return buildClientHello({
    head: c.head,
    extensions: c.extensions.map((e) => (e.type === EXT_SERVER_NAME ? serverNameExtension(name) : e)),
  });
}

const [HELLO, HELLO_EVIL] = realClientHellos([{ serverName: 'api.stripe.test' }, { serverName: 'evil.test' }]) as [
  Buffer,
  Buffer,
];
const HRR = serverHello({ retry: true });

function query(name: string, id = 0x4242, type: dnsPacket.RecordType = 'A'): Buffer {
  return dnsPacket.encode({
    type: 'query',
    id,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type, name, class: 'IN' }],
  });
}

/** The resolver's answer to a query of the flow, over TCP. */
function answer(f: TcpFlow, name: string, id: number): Buffer {
  return LearnerHarness.tcpPayload(LearnerHarness.answerPayload({ name, id, sport: f.sport, ips: ['203.0.113.10'] }));
}

const refused = (flags: number | undefined) => flags !== undefined && (flags & CtFlag.tlsRefused) !== 0;

test("DNS over TCP: only the segment at the resolver's next expected byte is judged; one that overlaps bytes it has (an allowed query hiding a second one) or lies past a hole is refused", (t) => {
  withStreams(t, (s) => {
    const allowed = query('api.stripe.test', 1);
    const smuggled = LearnerHarness.tcpPayload(
      Buffer.concat([allowed, LearnerHarness.tcpPayload(query('leak.attacker.example', 2, 'TXT'))]),
    );
    const d = 2 + allowed.length; // the bytes the resolver drops as old: the second query is what it reads
    for (const v6 of [false, true]) {
      const f = s.dns({ v6 });
      f.handshake();
      assert.notEqual(
        f.send(smuggled, -d).retval,
        PASS,
        `its first ${d} bytes before the resolver's first expected byte: refused (${v6 ? 'IPv6' : 'IPv4'})`,
      );
      const g = s.dns({ v6 });
      g.handshake();
      const first = LearnerHarness.tcpPayload(allowed);
      assert.equal(g.send(first, 0).retval, PASS, 'a first query, in order');
      g.peer(answer(g, 'api.stripe.test', 1), first.length);
      assert.notEqual(g.send(smuggled, first.length - d).retval, PASS, 'overlapping the first query: refused');
      const k = s.dns({ v6 });
      k.handshake();
      assert.notEqual(k.send(first, 7).retval, PASS, 'past a hole: refused');
    }
    // the legitimate use: queries one after the other on one connection, the resolver answering each
    const c = s.dns();
    assert.equal(c.handshake(), PASS, 'the handshake passes');
    let at = 0;
    for (const [id, name] of [
      [3, 'api.stripe.test'],
      [4, 'www.kadath.test'],
      [5, 'api.stripe.test'],
    ] as const) {
      const q = LearnerHarness.tcpPayload(query(name, id));
      assert.equal(c.send(q, at).retval, PASS, `query ${id} (${name}) in order`);
      at += q.length;
      c.peer(answer(c, name, id), at);
      assert.equal(c.send(EMPTY, at, { flags: TCP.ACK }).retval, PASS, 'the pod acknowledges the answer');
    }
  });
});

test('DNS over TCP: a segment with URG, or with a non-zero urgent pointer, is refused (a receiver takes the urgent byte out of the stream)', (t) => {
  withStreams(t, (s) => {
    const q = LearnerHarness.tcpPayload(query('api.stripe.test'));
    for (const [what, flags, urg] of [
      ['URG and a pointer', PSH_ACK | TCP.URG, q.length],
      ['URG, pointer 0', PSH_ACK | TCP.URG, 0],
      ['a pointer without URG', PSH_ACK, 5],
    ] as const) {
      const f = s.dns();
      f.handshake();
      assert.equal(f.send(q, 0, { flags, urg }).retval, REDIRECT, `${what}: a RST to the pod`);
    }
    const ok = s.dns();
    ok.handshake();
    assert.equal(ok.send(q, 0).retval, PASS, 'the same query without urgent data passes');
  });
});

test("TLS check: the parser's base is the server's SYN-ACK; a forged SYN with an earlier sequence number moves nothing", (t) => {
  withStreams(t, (s) => {
    const d = HELLO.length;
    for (const v6 of [false, true]) {
      const f = s.tls({ v6 });
      f.handshake();
      f.syn(f.isn - d); // the server answers it with a challenge ACK
      f.peer(EMPTY, 0);
      assert.notEqual(
        f.send(HELLO, -d).retval,
        PASS,
        "an allowed hello before the server's first expected byte (it would drop it as old): never passed",
      );
      const r = f.send(HELLO_EVIL, 0);
      assert.equal(r.retval, REDIRECT, 'the hello the server reads names evil.test: refused, a RST to the pod');
      assert.ok(refused(f.ctFlags()), 'and the flow refused');
    }
    // the legitimate use: the SYN sent again (its SYN-ACK lost), then the hello
    const ok = s.tls();
    ok.syn();
    ok.handshake();
    assert.equal(ok.send(HELLO, 0).retval, PASS, 'the allowed hello passes');
    assert.equal(ok.ctFlags()! & (CtFlag.tlsPending | CtFlag.tlsRefused), 0, 'allowed');
  });
});

test('TLS check: a second SYN-ACK (a neighbour forging the server) does not move the base either', (t) => {
  withStreams(t, (s) => {
    const d = HELLO.length;
    const f = s.tls();
    f.handshake();
    f.syn(f.isn - d);
    // a SYN-ACK that acknowledges the forged SYN, from the server's address
    const forged = new TcpFlow(s.h, { dst: f.dst, dport: f.dport, sport: f.sport, isn: f.isn - d, peerIsn: f.peerIsn });
    forged.synAck();
    assert.notEqual(f.send(HELLO, -d).retval, PASS, 'the allowed hello before the first expected byte: never passed');
    assert.equal(f.send(HELLO_EVIL, 0).retval, REDIRECT, 'the hello the server reads: refused');
  });
});

test('TLS check: a pod RST or FIN while the check is pending refuses the flow; a SYN after it does not start the check again', (t) => {
  withStreams(t, (s) => {
    const d = HELLO.length;
    for (const [what, flags, at] of [
      ["a RST outside the server's window", TCP.RST, 0x40000000],
      ['a RST in sequence', TCP.RST | TCP.ACK, 0],
      ['a FIN', TCP.FIN | TCP.ACK, 0],
    ] as const) {
      const f = s.tls();
      f.handshake();
      f.send(EMPTY, at, { flags });
      assert.ok(refused(f.ctFlags()), `${what}: the flow is refused`);
      // what the attacker does next: a SYN before the stream (the server sends a challenge ACK), then the games of the forged SYN
      f.syn(f.isn - d);
      f.peer(EMPTY, 0);
      f.send(HELLO, -d);
      assert.notEqual(f.send(HELLO_EVIL, 0).retval, PASS, `${what}: the hello naming evil.test never passes`);
    }
    const ok = s.tls();
    ok.handshake();
    assert.equal(ok.send(HELLO, 0).retval, PASS, 'without them, the allowed hello passes');
  });
});

test('TLS check: URG, or a non-zero urgent pointer, on a flow whose check is pending or watched is refused', (t) => {
  withStreams(t, (s) => {
    for (const [what, flags, urg] of [
      ['URG and a pointer', PSH_ACK | TCP.URG, 10],
      ['URG, pointer 0', PSH_ACK | TCP.URG, 0],
      ['a pointer without URG', PSH_ACK, 10],
    ] as const) {
      const f = s.tls();
      f.handshake();
      assert.equal(f.send(HELLO, 0, { flags, urg }).retval, REDIRECT, `pending, ${what}: a RST to the pod`);
      assert.ok(refused(f.ctFlags()), `pending, ${what}: the flow refused`);
    }
    // the urgent byte that makes the parser and the server read two different hellos
    const u = urgentByteHello(HELLO_EVIL, 'evil.test', 'api.stripe.test');
    assert.equal(parseServerName(u.sent), 'api.stripe.test', 'reading every byte, a parser finds api.stripe.test');
    assert.equal(parseServerName(u.read), 'evil.test', 'without the urgent byte it reads evil.test');
    const f = s.tls();
    f.handshake();
    assert.equal(
      f.send(u.sent.subarray(0, u.urgentAt + 1), 0, { flags: PSH_ACK | TCP.URG, urg: u.urgentAt + 1 }).retval,
      REDIRECT,
      'the urgent byte in the hello: refused',
    );
    // watched: the name was allowed, the server has not answered yet
    const w = s.tls();
    w.handshake();
    assert.equal(w.send(HELLO, 0).retval, PASS);
    assert.equal(w.ctFlags()! & CtFlag.tlsWatch, CtFlag.tlsWatch, 'watched');
    assert.equal(
      w.send(Buffer.from('x'), HELLO.length, { flags: PSH_ACK | TCP.URG, urg: 1 }).retval,
      REDIRECT,
      'watched, an urgent byte: refused',
    );
    const ok = s.tls();
    ok.handshake();
    assert.equal(ok.send(HELLO, 0).retval, PASS, 'the hello without urgent data passes');
  });
});

/** CH1 for api.stripe.test, then the server's HelloRetryRequest acknowledging it. */
function afterRetryRequest(s: Streams): TcpFlow {
  const f = s.tls();
  f.handshake();
  assert.equal(f.send(HELLO, 0).retval, PASS, 'the first ClientHello names an allowed server');
  f.peer(HRR, HELLO.length);
  return f;
}

test('TLS check: after a HelloRetryRequest the second ClientHello must name the same server, or the flow is refused', (t) => {
  withStreams(t, (s) => {
    for (const [what, ch2] of [
      ['another server', HELLO_EVIL],
      ['another allowed server', withName(HELLO, 'www.kadath.test')],
    ] as const) {
      const f = afterRetryRequest(s);
      assert.equal(f.send(ch2, HELLO.length).retval, REDIRECT, `a second ClientHello naming ${what}: a RST to the pod`);
      assert.ok(refused(f.ctFlags()), `${what}: the flow refused`);
    }
    // the legitimate TLS 1.3 handshake with a retry: the same name again, then encrypted records both ways
    const f = afterRetryRequest(s);
    const ch2 = withName(HELLO, 'API.stripe.test');
    let at = HELLO.length;
    assert.equal(f.send(ch2, at).retval, PASS, 'the second ClientHello naming the same server passes');
    at += ch2.length;
    f.peer(Buffer.concat([serverHello(), CHANGE_CIPHER_SPEC, applicationData(900)]), at); // ServerHello, then the encrypted flight
    for (const record of [CHANGE_CIPHER_SPEC, applicationData(53), applicationData(300)]) {
      assert.equal(f.send(record, at).retval, PASS, "the client's ChangeCipherSpec, Finished and first data pass");
      at += record.length;
    }
    f.peer(applicationData(200), at);
    assert.equal(
      f.ctFlags()! & (CtFlag.tlsPending | CtFlag.tlsWatch | CtFlag.tlsRefused),
      0,
      'encrypted both ways and everything acknowledged: the check is over',
    );
    assert.equal(f.parserState(), false, 'its state is gone');
    assert.equal(f.send(applicationData(100), at).retval, PASS);
  });
});

test('TLS check: a second ClientHello after the middlebox-compatibility ChangeCipherSpec (what OpenSSL sends after a HelloRetryRequest) is still checked', (t) => {
  withStreams(t, (s) => {
    const f = afterRetryRequest(s);
    assert.equal(f.send(CHANGE_CIPHER_SPEC, HELLO.length).retval, PASS, 'the ChangeCipherSpec passes');
    assert.equal(
      f.send(HELLO_EVIL, HELLO.length + CHANGE_CIPHER_SPEC.length).retval,
      REDIRECT,
      'then a ClientHello naming another server: refused',
    );
    const ok = afterRetryRequest(s);
    assert.equal(ok.send(CHANGE_CIPHER_SPEC, HELLO.length).retval, PASS);
    assert.equal(ok.send(HELLO, HELLO.length + CHANGE_CIPHER_SPEC.length).retval, PASS, 'the same server again passes');
  });
});

/*
 * The fuzz run's model of a Linux receiver (net/ipv4/tcp_input.c), kept
 * conservative: it may read more than Linux would, never less.
 *  - A SYN on the established connection draws a challenge ACK; its data is
 *    dropped. Data without ACK is dropped. A RST's data is never read (its
 *    reset is ignored here: the receiver reads on).
 *  - Bytes before the next expected one are old: the copy already read
 *    wins. Bytes at or past it are taken; a byte queued out of order is
 *    kept from the first copy (policy "first") or replaced by a later one
 *    (policy "last": Linux replaces queued segments a new one covers).
 *  - URG with a pointer marks the byte before the pointer as urgent when it
 *    is at or past the next expected byte (Linux ignores pointers into what
 *    it has); a reader without SO_OOBINLINE never sees it. Linux keeps one
 *    mark at a time: the model tries each mark alone, and all at once.
 */
class Receiver {
  next = 0;
  private readonly read: number[] = [];
  private readonly queued = new Map<number, number>();
  readonly urgent = new Set<number>();

  constructor(private readonly lastWins: boolean) {}

  take(at: number, flags: number, payload: Buffer, urg: number): void {
    if (flags & (TCP.SYN | TCP.RST) || !(flags & TCP.ACK)) return;
    if (flags & TCP.URG && urg > 0 && at + urg - 1 >= this.next) this.urgent.add(at + urg - 1);
    for (let i = Math.max(0, this.next - at); i < payload.length; i++) {
      const pos = at + i;
      if (at <= this.next)
        this.queued.set(pos, payload[i]!); // in order: this copy is read
      else if (this.lastWins || !this.queued.has(pos)) this.queued.set(pos, payload[i]!);
    }
    while (this.queued.has(this.next)) {
      this.read.push(this.queued.get(this.next)!);
      this.queued.delete(this.next++);
    }
  }

  /** What a reader may get: the stream, without each urgent byte, and without all of them. */
  streams(): Buffer[] {
    const all = Buffer.from(this.read);
    const marks = [...this.urgent].filter((p) => p < all.length).sort((a, b) => b - a);
    const without = (ps: number[]) => ps.reduce((b, p) => Buffer.concat([b.subarray(0, p), b.subarray(p + 1)]), all);
    return [all, ...marks.map((p) => without([p])), ...(marks.length > 1 ? [without(marks)] : [])];
  }
}

const ALLOWED_PATTERNS = TLS_ALLOWED.map((p) => parsePattern(p));
const nameAllowed = (name: string) => ALLOWED_PATTERNS.some((p) => matchesPattern(p, name));

/** The first question's name of a DNS message, as a resolver reads it (pointers followed), or null. */
function questionName(msg: Buffer): string | null {
  if (msg.length < 12 || msg.readUInt16BE(4) === 0) return null;
  const labels: string[] = [];
  let at = 12;
  for (let hops = 0; hops < 64; hops++) {
    const len = msg[at];
    if (len === undefined) return null;
    if (len === 0)
      return labels
        .map((l) => (l.includes('.') ? l.replace(/\./g, '\\.') : l))
        .join('.')
        .toLowerCase();
    if ((len & 0xc0) === 0xc0) {
      if (at + 1 >= msg.length) return null;
      at = msg.readUInt16BE(at) & 0x3fff;
      continue;
    }
    if (len > 63 || at + 1 + len > msg.length) return null;
    labels.push(msg.subarray(at + 1, at + 1 + len).toString('latin1'));
    at += 1 + len;
  }
  return null;
}

/** What a receiver of this stream reads that the rules do not allow, or null. */
function violation(kind: 'tls' | 'dns', stream: Buffer): string | null {
  if (kind === 'tls') {
    const name = parseServerName(stream);
    return name !== null && !nameAllowed(name) ? `a ClientHello naming ${JSON.stringify(name)}` : null;
  }
  for (let at = 0; at + 2 <= stream.length; at += 2 + stream.readUInt16BE(at)) {
    const end = at + 2 + stream.readUInt16BE(at);
    if (end > stream.length) break;
    const name = questionName(stream.subarray(at + 2, end));
    if (name !== null && !nameAllowed(name)) return `a query for ${JSON.stringify(name)}`;
  }
  return null;
}

/** Does this stream hold a whole ClientHello (a server would answer it)? */
function wholeHello(stream: Buffer): boolean {
  const hs: Buffer[] = [];
  for (let at = 0; at + 5 <= stream.length && stream[at] === 22; at += 5 + stream.readUInt16BE(at + 3))
    hs.push(stream.subarray(at + 5, at + 5 + stream.readUInt16BE(at + 3)));
  const b = Buffer.concat(hs);
  return b.length >= 4 && b[0] === 1 && b.length >= 4 + b.readUIntBE(1, 3);
}

function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
}

/** What the attacker sends, both ways: the stream a server should read, and one of the same length with a name outside the rules. */
const TLS_GOOD = Buffer.concat([HELLO, CHANGE_CIPHER_SPEC, applicationData(60)]);
const TLS_BAD = Buffer.concat([withName(HELLO, 'xyz.stripe.test'), CHANGE_CIPHER_SPEC, applicationData(60)]);
const DNS_Q1 = LearnerHarness.tcpPayload(query('api.stripe.test', 7));
const DNS_GOOD = Buffer.concat([DNS_Q1, LearnerHarness.tcpPayload(query('a.kadath.test', 8, 'AAAA'))]);
const DNS_BAD = Buffer.concat([
  LearnerHarness.tcpPayload(query('xyz.stripe.test', 7)),
  LearnerHarness.tcpPayload(query('a.kadath.tesx', 8, 'AAAA')),
]);
const URGENT = urgentByteHello(withName(HELLO, 'xyz.stripe.test'), 'xyz.stripe.test', 'api.stripe.test');

/** One fuzz game on one flow: the attacker's moves, each segment's verdict, and the model receivers fed what passed. */
class Game {
  private cursor = 0; // how far the good stream went out in order
  private readonly receivers = [new Receiver(false), new Receiver(true)];
  readonly log: string[] = [];
  private readonly good: Buffer;
  private readonly bad: Buffer;

  constructor(
    private readonly f: TcpFlow,
    readonly kind: 'tls' | 'dns',
    private readonly rnd: () => number,
  ) {
    this.good = kind === 'tls' ? TLS_GOOD : DNS_GOOD;
    this.bad = kind === 'tls' ? TLS_BAD : DNS_BAD;
  }

  private int(n: number): number {
    return Math.floor(this.rnd() * n);
  }

  /** A segment of the pod; its flags mutated now and then. */
  private send(what: string, at: number, payload: Buffer, flags = PSH_ACK, urg = 0, mutate = true): void {
    if (mutate && this.rnd() < 0.2) {
      flags = TCP.ACK | [0, TCP.PSH][this.int(2)]! | [0, 0, TCP.SYN, TCP.RST, TCP.FIN, TCP.URG, TCP.URG][this.int(7)]!;
      urg = this.rnd() < 0.5 ? this.int(payload.length + 4) : 0;
    }
    const r = this.f.send(payload, at, { flags, urg });
    assert.ok([PASS, SHOT, REDIRECT].includes(r.retval), `a verdict (${r.retval})`);
    this.log.push(
      `${what}: at ${at}, ${payload.length} bytes, flags 0x${flags.toString(16)}, urg ${urg} -> ${r.retval === PASS ? 'pass' : r.retval === SHOT ? 'drop' : 'reset'}`,
    );
    if (r.retval === PASS) for (const rcv of this.receivers) rcv.take(at, flags, payload, urg);
  }

  /** A piece of `src` at stream offset `at` (src offsets are stream offsets). */
  private piece(what: string, src: Buffer, at: number): void {
    const room = src.length - at;
    if (room <= 0) return;
    const len = 1 + this.int(Math.min(700, room));
    this.send(what, at, src.subarray(at, at + len));
  }

  /** The next piece of the good stream in order (for DNS mostly whole messages). */
  private next(): void {
    if (this.cursor >= this.good.length) return;
    let len = 1 + this.int(Math.min(700, this.good.length - this.cursor));
    if (this.kind === 'dns' && this.cursor + 2 <= this.good.length && this.rnd() < 0.7)
      len = 2 + this.good.readUInt16BE(this.cursor);
    this.send('in order', this.cursor, this.good.subarray(this.cursor, this.cursor + len));
    this.cursor += len;
  }

  private move(): void {
    const f = this.f;
    switch (this.int(12)) {
      case 0:
      case 1:
      case 2:
        return this.next();
      case 3:
        return this.piece('again', this.good, this.int(Math.max(1, this.cursor)));
      case 4:
        return this.piece('other bytes', this.bad, this.int(this.bad.length));
      case 5:
        return this.piece('past a hole', this.rnd() < 0.5 ? this.good : this.bad, this.cursor + 1 + this.int(40));
      case 6: {
        // allowed bytes before the stream, the other stream after them
        if (this.kind === 'dns') {
          // one message for a filter that reads from its first byte
          return this.send(
            'before the stream',
            -DNS_Q1.length,
            LearnerHarness.tcpPayload(Buffer.concat([DNS_Q1.subarray(2), this.bad])),
          );
        }
        return this.send(
          'before the stream',
          -HELLO.length,
          Buffer.concat([HELLO, this.bad.subarray(0, 1 + this.int(this.bad.length))]),
        );
      }
      case 7: {
        // a forged SYN earlier in the sequence space
        const d = this.rnd() < 0.5 ? HELLO.length : 1 + this.int(300);
        f.syn(f.isn - d);
        this.log.push(`SYN at isn - ${d}`);
        return;
      }
      case 8: {
        const [what, flags, at] = [
          ['RST out of window', TCP.RST, 0x40000000],
          ['RST', TCP.RST | TCP.ACK, this.cursor],
          ['FIN', TCP.FIN | TCP.ACK, this.cursor],
        ][this.int(3)] as [string, number, number];
        return this.send(what, at, EMPTY, flags, 0, false);
      }
      case 9: // the urgent-byte hello, or an urgent byte anywhere
        if (this.kind === 'tls' && this.cursor === 0) {
          this.send(
            'urgent hello',
            0,
            URGENT.sent.subarray(0, URGENT.urgentAt + 1),
            PSH_ACK | TCP.URG,
            URGENT.urgentAt + 1,
            false,
          );
          return this.send(
            'urgent hello, the rest',
            URGENT.urgentAt + 1,
            URGENT.sent.subarray(URGENT.urgentAt + 1),
            PSH_ACK,
            0,
            false,
          );
        }
        return this.send(
          'urgent',
          this.cursor,
          this.good.subarray(this.cursor, this.cursor + 1 + this.int(20)),
          PSH_ACK | TCP.URG,
          1 + this.int(30),
          false,
        );
      default: {
        // the server acknowledges what it read, and answers a whole hello
        const rcv = this.receivers[0]!;
        const data =
          this.kind === 'tls' && wholeHello(rcv.streams()[0]!) && f.peerAt === 0
            ? Buffer.concat([serverHello(), CHANGE_CIPHER_SPEC, applicationData(100)])
            : EMPTY;
        f.peer(data, rcv.next);
        this.log.push(`server: ack ${rcv.next}, ${data.length} bytes`);
      }
    }
  }

  play(): void {
    this.f.handshake();
    const moves = 1 + this.int(10);
    for (let i = 0; i < moves; i++) this.move();
    if (this.rnd() < 0.5) while (this.cursor < this.good.length) this.next();
  }

  /** What some reader of what passed reads outside the rules, or null. */
  violation(): string | null {
    for (const rcv of this.receivers) {
      for (const stream of rcv.streams()) {
        const v = violation(this.kind, stream);
        if (v) return v;
      }
    }
    return null;
  }
}

test('fuzz: cut, overlapped, re-sequenced and flagged segments of a hello or a DNS query never let a receiver read a name outside the rules', (t) => {
  const runs = Number(process.env.FQE_FUZZ_RUNS ?? 2000);
  withStreams(t, (s) => {
    const rnd = lcg(0x7cb5);
    for (const [what, stream] of [
      ['the good hello', TLS_GOOD],
      ['the good queries', DNS_GOOD],
    ] as const)
      assert.equal(violation(what.includes('hello') ? 'tls' : 'dns', stream), null, `${what}: no violation by itself`);
    assert.notEqual(violation('tls', TLS_BAD), null, 'the other hello is one');
    assert.notEqual(violation('dns', DNS_BAD), null, 'the other queries are');
    let passedWhole = 0;
    for (let i = 0; i < runs; i++) {
      const kind = i % 2 === 0 ? 'tls' : 'dns';
      const opts = { v6: rnd() < 0.25, isn: Math.floor(rnd() * 2 ** 32), peerIsn: Math.floor(rnd() * 2 ** 32) };
      const game = new Game(kind === 'tls' ? s.tls(opts) : s.dns(opts), kind, rnd);
      game.play();
      const bad = game.violation();
      assert.equal(
        bad,
        null,
        `game ${i} (${kind}, isn ${opts.isn}): a receiver reads ${bad}\n  ${game.log.join('\n  ')}`,
      );
      if (
        game.log.some((l) => l.startsWith('in order')) &&
        game.log.every((l) => !l.startsWith('in order') || l.endsWith('pass'))
      )
        passedWhole++;
      if (i % 200 === 199) {
        s.h.dp.maps.conntrack.deleteMany(s.h.dp.maps.conntrack.entries().map(([k]) => k));
        s.h.dp.maps.ctCounts.delete(s.h.identity);
      }
    }
    t.diagnostic(`${runs} games, ${passedWhole} whose in-order segments all passed`);
    assert.ok(passedWhole > runs / 20, 'the legitimate stream passes often enough for the run to mean something');
  });
});
