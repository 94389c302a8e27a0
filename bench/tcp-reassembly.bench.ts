/*
 * DNS over TCP reassembly cost per byte, the way a hostile pod would feed it:
 * a 64 KiB message in 1-byte segments, in 100-byte segments, against the
 * same message in one segment (the baseline, same run). Linear reassembly
 * keeps the ratio small and flat; a copy of the whole buffer per segment
 * (the old Buffer.concat) made the 1-byte case cost gigabytes of copying.
 * Prints one JSON line. BENCH_SMOKE=1: fewer rounds.
 */
import { TcpDnsReassembler } from '../agent/dns/tcp-stream.js';
import type { Segment } from '../agent/dns/frame.js';

const SMOKE = process.env.BENCH_SMOKE === '1';
const ROUNDS = SMOKE ? 2 : 10;
const MESSAGE = 65_000;

function segments(stream: Buffer, size: number): Segment[] {
  const out: Segment[] = [];
  for (let at = 0; at < stream.length; at += size) {
    out.push({
      ifindex: 1,
      pktType: 4,
      tsNs: 0n,
      family: 4,
      proto: 'tcp',
      src: '192.0.2.2',
      dst: '198.18.1.2',
      sport: 53,
      dport: 40000,
      payload: stream.subarray(at, at + size),
      tcp: { seq: 1 + at, flags: 0x18 },
    } as Segment);
  }
  return out;
}

function nsPerByte(segs: Segment[], bytes: number): number {
  let best = Infinity;
  for (let r = 0; r < ROUNDS; r++) {
    const re = new TcpDnsReassembler({ maxFlows: 16, maxBytesPerFlow: 70_000, idleMs: 30_000, now: () => 0 });
    const t0 = process.hrtime.bigint();
    let got = 0;
    for (const s of segs) got += re.push(s).messages.length;
    const ns = Number(process.hrtime.bigint() - t0);
    if (got !== 1) throw new Error(`reassembly lost the message (${got})`);
    best = Math.min(best, ns / bytes);
  }
  return Number(best.toFixed(2));
}

const stream = Buffer.concat([Buffer.from([MESSAGE >> 8, MESSAGE & 0xff]), Buffer.alloc(MESSAGE, 0x5a)]);
const baseline = nsPerByte(segments(stream, stream.length), stream.length);
const results: Record<string, { nsPerByte: number; ratio: number }> = {};
for (const size of [100, 1]) {
  const ns = nsPerByte(segments(stream, size), stream.length);
  results[`${size}-byte segments`] = { nsPerByte: ns, ratio: Number((ns / baseline).toFixed(1)) };
}
process.stdout.write(
  `${JSON.stringify({ bench: 'tcp-reassembly', messageBytes: MESSAGE, baseline: { 'one segment': { nsPerByte: baseline } }, results })}\n`,
);
