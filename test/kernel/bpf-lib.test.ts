/*
 * The pure headers of bpf/lib/ on given bytes, in the spirit of Cilium's
 * bpf/tests: one small program per header (bpf/tests/*_test.bpf.c) run
 * through BPF_PROG_TEST_RUN. The input rides in the test packet after its
 * Ethernet header; the results are read from the program's one-slot map
 * (fqe_test_out). Each expectation comes from an implementation outside
 * the kernel: agent/policy/name-hash.ts and the shared vectors, the
 * reference ClientHello parser of test/helpers/client-hello.ts, the
 * checksums of test/helpers/checksum.ts.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { native } from '../../agent/datapath/native.js';
import { tlsFlowCodec } from '../../agent/datapath/codecs.js';
import { suffixHashes, hashOrderBytes } from '../../agent/policy/name-hash.js';
import { ensureBpffs, requireKernelTestEnv, PIN_ROOT } from '../helpers/topology.js';
import { buildFrame } from '../helpers/frames.js';
import { internetChecksum, l4ChecksumOk } from '../helpers/checksum.js';
import {
  realClientHellos,
  nameLast,
  parseServerName,
  tlsRecord,
  CHANGE_CIPHER_SPEC,
  applicationData,
  CONTENT_HANDSHAKE,
} from '../helpers/client-hello.js';

const TESTS_DIR = fileURLToPath(new URL('../../../bpf/tests/', import.meta.url));
const ETH = 14;

interface Vector {
  name: string;
  hash: string;
  suffixHashes: string[];
  labels: number;
}
const VECTORS = (
  JSON.parse(readFileSync(new URL('../../../test/fixtures/name-hash-vectors.json', import.meta.url), 'utf8')) as {
    vectors: Vector[];
  }
).vectors;

/** One test program, loaded into a pin dir of its own (no pins: removed on close). */
class TestProgram {
  private constructor(
    private readonly id: number,
    private readonly prog: number,
    private readonly out: { fd: number; valueSize: number },
    private readonly pinDir: string,
  ) {}

  static open(name: string): TestProgram {
    ensureBpffs();
    const pinDir = mkdtempSync(join(PIN_ROOT, 'fqet-lib-'));
    try {
      const obj = native.loadObject(join(TESTS_DIR, `${name}.bpf.o`), pinDir);
      const out = obj.maps.fqe_test_out!;
      return new TestProgram(obj.id, obj.programs[name]!.fd, { fd: out.fd, valueSize: out.valueSize }, pinDir);
    } catch (err) {
      rmSync(pinDir, { recursive: true, force: true });
      throw err;
    }
  }

  /** Run on the input (after a zero Ethernet header, or a whole frame); the results slot. */
  run(input: Buffer, opts: { frame?: boolean } = {}): Buffer {
    const data = opts.frame ? input : Buffer.concat([Buffer.alloc(ETH), input]);
    const r = native.progTestRun(this.prog, data);
    assert.equal(r.retval, 0, 'the test program ran to its end (TC_ACT_OK)');
    return native.mapLookup(this.out.fd, Buffer.alloc(4), this.out.valueSize)!;
  }

  close(): void {
    native.closeObject(this.id);
    rmSync(this.pinDir, { recursive: true, force: true });
  }
}

function withProgram(t: TestContext, name: string, fn: (p: TestProgram) => void): void {
  if (!requireKernelTestEnv(t)) return;
  const p = TestProgram.open(name);
  try {
    fn(p);
  } finally {
    p.close();
  }
}

// ---- bpf/lib/name.h (bpf/tests/name_test.bpf.c) ----

const NAME_IN = { mode: 0, len: 4, ruleLen: 6, key: 8, name: 16, rule: 272, size: 528 };
const NAME_SUFFIXES = 64; // the suffix steps the program reports (TEST_SUFFIXES)
const NAME_OUT = { result: 0, total: 4, nlabels: 8, whole: 16, suffix: 24, lower: 1048, ldh: 1304 };

interface NameResult {
  result: number;
  total: number;
  nlabels: number;
  whole: bigint;
  suffixes: { len: number; is: boolean; hash: bigint }[];
}

function runName(p: TestProgram, name: string, key: bigint, rule?: Buffer): NameResult {
  const bytes = hashOrderBytes(name);
  const input = Buffer.alloc(NAME_IN.size);
  input.writeUInt16LE(bytes.length, NAME_IN.len);
  input.writeBigUInt64LE(key, NAME_IN.key);
  bytes.copy(input, NAME_IN.name);
  if (rule) {
    input.writeUInt16LE(rule.length, NAME_IN.ruleLen);
    rule.copy(input, NAME_IN.rule);
  }
  const out = p.run(input);
  const nlabels = out.readUInt32LE(NAME_OUT.nlabels);
  const suffixes = [];
  for (let i = 0; i < Math.min(nlabels, NAME_SUFFIXES); i++) {
    const at = NAME_OUT.suffix + 16 * i;
    suffixes.push({ len: out.readUInt32LE(at), is: out.readUInt32LE(at + 4) !== 0, hash: out.readBigUInt64LE(at + 8) });
  }
  return {
    result: out.readInt32LE(NAME_OUT.result),
    total: out.readUInt32LE(NAME_OUT.total),
    nlabels,
    whole: out.readBigUInt64LE(NAME_OUT.whole),
    suffixes,
  };
}

test("name.h: the keyed hash of a name and of each suffix is the shared vectors' (name-hash-vectors.json)", (t) => {
  withProgram(t, 'name_test', (p) => {
    for (const v of VECTORS) {
      const r = runName(p, v.name, 0n);
      assert.equal(r.result, 0, v.name);
      assert.equal(r.nlabels, v.labels, v.name);
      assert.equal(r.whole.toString(16).padStart(16, '0'), v.hash, `${v.name}: whole name`);
      // step i of the walk is the suffix of the i+1 rightmost labels: vector suffixHashes[labels - 1 - i]
      for (let i = 0; i < r.suffixes.length; i++)
        assert.equal(
          r.suffixes[i]!.hash.toString(16).padStart(16, '0'),
          v.suffixHashes[v.labels - 1 - i],
          `${v.name}: suffix step ${i}`,
        );
    }
  });
});

test('name.h: a node key changes every hash as agent/policy/name-hash.ts does, upper case hashes as lower', (t) => {
  withProgram(t, 'name_test', (p) => {
    for (const key of [1n, 0xdeadbeefcafef00dn, 0xffffffffffffffffn]) {
      for (const name of [
        'example.com',
        'API.Stripe.TEST',
        'a.b.c.d.e.f.g',
        `${'x'.repeat(63)}.${'y'.repeat(63)}.${'z'.repeat(63)}.${'w'.repeat(61)}`,
      ]) {
        const want = suffixHashes(name, key);
        const r = runName(p, name, key);
        assert.equal(r.whole, want[0], `${name} key ${key}`);
        assert.equal(r.total, hashOrderBytes(name).length);
        for (let i = 0; i < r.suffixes.length; i++) {
          assert.equal(r.suffixes[i]!.hash, want[r.nlabels - 1 - i], `${name} key ${key}: suffix step ${i}`);
          const suffix = name
            .split('.')
            .slice(r.nlabels - 1 - i)
            .join('.');
          assert.equal(r.suffixes[i]!.len, hashOrderBytes(suffix).length, `${name}: suffix step ${i} length`);
        }
      }
    }
  });
});

test("name.h: the real bytes decide: a rule's name equals exactly one suffix step, case-insensitive; same length, other bytes never", (t) => {
  withProgram(t, 'name_test', (p) => {
    const name = 'Api.Stripe.Com';
    const cases: [rule: string, step: number | null][] = [
      ['com', 0],
      ['stripe.com', 1],
      ['api.stripe.com', 2],
      ['API.STRIPE.COM', 2],
      ['apx.stripe.com', null],
      ['tripe.com', null],
      ['e.com', null],
      ['stripe.co', null],
      ['xapi.stripe.com', null],
    ];
    for (const [rule, step] of cases) {
      const r = runName(p, name, 7n, hashOrderBytes(rule));
      const hits = r.suffixes.flatMap((s, i) => (s.is ? [i] : []));
      assert.deepEqual(hits, step === null ? [] : [step], `rule ${rule}`);
    }
    // a rule with no name never matches
    assert.deepEqual(
      runName(p, name, 0n, Buffer.alloc(0)).suffixes.filter((s) => s.is),
      [],
    );
  });
});

test('name.h: lower-casing touches A-Z only; host name bytes are letters, digits and the hyphen', (t) => {
  withProgram(t, 'name_test', (p) => {
    const input = Buffer.alloc(NAME_IN.size);
    input[NAME_IN.mode] = 1;
    const out = p.run(input);
    for (let c = 0; c < 256; c++) {
      const ch = String.fromCharCode(c);
      assert.equal(out[NAME_OUT.lower + c], /[A-Z]/.test(ch) ? c + 32 : c, `lower(${c})`);
      assert.equal(out[NAME_OUT.ldh + c], /[a-zA-Z0-9-]/.test(ch) ? 1 : 0, `ldh(${c})`);
    }
  });
});

// ---- bpf/lib/tls_parse.h (bpf/tests/tls_parse_test.bpf.c) ----

const TLS_SEGMENTS = 16;
const TLS_MORE = 0;
const TLS_BAD = -1;
const TLS_OUT = { result: 0, walked: 64, names: 68, name: 72, flow: 104 };
const FLOW = tlsFlowCodec.offsets;

interface TlsResult {
  results: number[];
  names: { at: number; len: number }[];
  state: number;
  hellos: number;
}

/** The stream cut at the given lengths (the rest as the last segment). */
function runTls(p: TestProgram, stream: Buffer, cuts: number[] = []): TlsResult {
  const lens: number[] = [];
  let at = 0;
  for (const c of cuts) {
    lens.push(Math.min(c, stream.length - at));
    at += lens[lens.length - 1]!;
  }
  if (at < stream.length) lens.push(stream.length - at);
  assert.ok(lens.length <= TLS_SEGMENTS);
  const head = Buffer.alloc(4 + 4 * TLS_SEGMENTS);
  head.writeUInt32LE(lens.length, 0);
  lens.forEach((l, i) => head.writeUInt32LE(l, 4 + 4 * i));
  const out = p.run(Buffer.concat([head, stream]));
  const walked = out.readUInt32LE(TLS_OUT.walked);
  const names = [];
  for (let i = 0; i < out.readUInt32LE(TLS_OUT.names); i++)
    names.push({ at: out.readUInt32LE(TLS_OUT.name + 8 * i), len: out.readUInt32LE(TLS_OUT.name + 8 * i + 4) });
  return {
    results: Array.from({ length: walked }, (_, i) => out.readInt32LE(TLS_OUT.result + 4 * i)),
    names,
    state: out[TLS_OUT.flow + FLOW.state!]!,
    hellos: out[TLS_OUT.flow + FLOW.hellos!]!,
  };
}

function nameAt(stream: Buffer, n: { at: number; len: number }): string {
  return stream.subarray(n.at, n.at + n.len).toString('latin1');
}

const [HELLO_13, HELLO_12, HELLO_NONE] = realClientHellos([
  { serverName: 'api.stripe.test', version: '1.3' },
  { serverName: 'Example.ORG', version: '1.2' },
  {},
]);

test('tls_parse.h: a whole ClientHello in one segment shows its server name where the reference parser finds it', (t) => {
  withProgram(t, 'tls_parse_test', (p) => {
    for (const hello of [HELLO_13!, HELLO_12!]) {
      const r = runTls(p, hello);
      assert.deepEqual(r.results, [TLS_MORE]);
      assert.equal(r.names.length, 1);
      assert.equal(nameAt(hello, r.names[0]!).toLowerCase(), parseServerName(hello));
      assert.equal(r.state, 0, 'after the hello: the next handshake type (FQE_TLS_HS_TYPE)');
    }
  });
});

test('tls_parse.h: the same name however the stream is cut (record headers and fields split over segments)', (t) => {
  withProgram(t, 'tls_parse_test', (p) => {
    const hello = HELLO_13!;
    const whole = runTls(p, hello).names;
    const cutsList = [
      [1, 1, 1, 1, 1], // the record header a byte at a time
      [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16],
      [5, 40, 1, 1, 2, 3],
      [whole[0]!.at + 3], // inside the name
      [whole[0]!.at - 2, 1, 1], // inside its length
    ];
    for (const cuts of cutsList) {
      const r = runTls(p, hello, cuts);
      assert.ok(
        r.results.every((x) => x === TLS_MORE),
        `cuts ${cuts}: ${r.results}`,
      );
      assert.deepEqual(r.names, whole, `cuts ${cuts}`);
    }
  });
});

test('tls_parse.h: the name last, the hello over several records: found at its stream offset', (t) => {
  withProgram(t, 'tls_parse_test', (p) => {
    const stream = nameLast(HELLO_13!, 1000, 300);
    const r = runTls(p, stream, [600, 600]);
    assert.ok(
      r.results.every((x) => x === TLS_MORE),
      `${r.results}`,
    );
    assert.equal(r.names.length, 1);
    assert.equal(r.names[0]!.at, stream.indexOf('api.stripe.test'));
    assert.equal(r.names[0]!.len, 'api.stripe.test'.length);
  });
});

test('tls_parse.h: refused: no server name, not a handshake first, a ChangeCipherSpec before any hello, a zero-length record', (t) => {
  withProgram(t, 'tls_parse_test', (p) => {
    assert.deepEqual(runTls(p, HELLO_NONE!).results, [TLS_BAD], 'no server name');
    assert.deepEqual(runTls(p, applicationData(16)).results, [TLS_BAD], 'application data');
    assert.deepEqual(runTls(p, Buffer.concat([CHANGE_CIPHER_SPEC, HELLO_13!])).results, [TLS_BAD], 'CCS first');
    assert.deepEqual(runTls(p, tlsRecord(CONTENT_HANDSHAKE, Buffer.alloc(0))).results, [TLS_BAD], 'empty record');
    assert.deepEqual(runTls(p, Buffer.from('GET / HTTP/1.1\r\n\r\n')).results, [TLS_BAD], 'not TLS');
  });
});

test('tls_parse.h: after a judged hello, a ChangeCipherSpec and a second hello (HelloRetryRequest) name a second time', (t) => {
  withProgram(t, 'tls_parse_test', (p) => {
    const stream = Buffer.concat([HELLO_13!, CHANGE_CIPHER_SPEC, HELLO_13!]);
    const r = runTls(p, stream, [HELLO_13!.length, CHANGE_CIPHER_SPEC.length]);
    assert.deepEqual(r.results, [TLS_MORE, TLS_MORE, TLS_MORE]);
    assert.equal(r.names.length, 2);
    assert.equal(r.hellos, 2);
    assert.equal(r.names[1]!.at, r.names[0]!.at + HELLO_13!.length + CHANGE_CIPHER_SPEC.length);
  });
});

// ---- bpf/lib/csum.h (bpf/tests/csum_test.bpf.c) ----

const CSUM_OUT = { result: 0, ip: 4, l4: 6, fold: 8 };

test("csum.h: the IPv4 header and UDP/TCP checksums (IPv4 and IPv6) make each frame's sums hold (test/helpers/checksum.ts)", (t) => {
  withProgram(t, 'csum_test', (p) => {
    const frames = [
      buildFrame({
        src: '198.18.1.2',
        dst: '192.0.2.2',
        proto: 'udp',
        sport: 40000,
        dport: 53,
        payload: Buffer.from('a query, of odd length'),
      }),
      buildFrame({
        src: '198.18.1.2',
        dst: '203.0.113.10',
        proto: 'tcp',
        sport: 40001,
        dport: 443,
        seq: 123456789,
        ack: 987654321,
        tcpFlags: 0x18,
        payload: Buffer.alloc(280, 0xab),
      }),
      buildFrame({
        src: '2001:db8:1::2',
        dst: '2001:db8:ff::10',
        proto: 'udp',
        sport: 5353,
        dport: 53,
        payload: Buffer.alloc(7, 0xff),
      }),
      buildFrame({
        src: '2001:db8:1::2',
        dst: '2001:db8:ff::10',
        proto: 'tcp',
        sport: 40002,
        dport: 443,
        tcpFlags: 0x14,
      }),
    ];
    for (const [i, frame] of frames.entries()) {
      const v6 = frame.readUInt16BE(12) === 0x86dd;
      const l4 = ETH + (v6 ? 40 : 20);
      const checkAt = l4 + (frame[v6 ? 20 : 23] === 17 ? 6 : 16);
      const out = p.run(Buffer.from(frame), { frame: true });
      assert.equal(out.readInt32LE(CSUM_OUT.result), 0, `frame ${i}`);
      const withOurs = Buffer.from(frame);
      out.copy(withOurs, checkAt, CSUM_OUT.l4, CSUM_OUT.l4 + 2);
      assert.ok(l4ChecksumOk(withOurs) && withOurs.readUInt16BE(checkAt) !== 0, `frame ${i}: the L4 checksum holds`);
      // a frame with a checksum of its own (buildFrame writes none) must get it back
      if (frame.readUInt16BE(checkAt) !== 0)
        assert.deepEqual(withOurs, frame, `frame ${i}: the frame's own L4 checksum`);
      if (!v6) {
        // buildFrame leaves the IPv4 header checksum out: ours must make the header sum to zero
        const ip = Buffer.from(frame.subarray(ETH, ETH + 20));
        out.copy(ip, 10, CSUM_OUT.ip, CSUM_OUT.ip + 2);
        assert.equal(internetChecksum(ip), 0, `frame ${i}: IPv4 header checksum`);
        assert.notEqual(ip.readUInt16BE(10), 0);
      }
    }
  });
});

test('csum.h: folding a 32-bit sum to 16 bits (and inverting it)', (t) => {
  withProgram(t, 'csum_test', (p) => {
    const sums = [0n, 0xffffn, 0x1fffen, 0xffffffffn, 0x12345678n, 0x0001ffffn, -1n, 0x7fff8000n];
    const input = Buffer.alloc(8 * sums.length);
    sums.forEach((s, i) => input.writeBigInt64LE(s, 8 * i));
    const out = p.run(input);
    assert.equal(out.readInt32LE(CSUM_OUT.result), -1, 'not a frame: only the folds');
    sums.forEach((s, i) => {
      let v = Number(BigInt.asUintN(32, s));
      v = (v & 0xffff) + (v >>> 16);
      v = (v & 0xffff) + (v >>> 16);
      assert.equal(out.readUInt16LE(CSUM_OUT.fold + 2 * i), ~v & 0xffff, `fold(${s})`);
    });
  });
});
