/*
 * Enforcer cost per packet, measured in the kernel with BPF_PROG_TEST_RUN,
 * against a pass-through tc program in the same run. Scenarios: allowed IPv4,
 * allowed IPv6 (after their first run, established flows: the fast path),
 * tracked connection (no allow entry), dropped, not enforced; and a new
 * allowed flow (single runs over distinct ports, against single runs of the
 * pass-through program);
 * with 10, 100,000 and 1,000,000 entries in the allow trie.
 * Prints one JSON line per trie size. BENCH_SMOKE=1: small sizes, few runs.
 * Uses a pin dir of its own under /sys/fs/bpf, removed at the end; attaches
 * nothing and sends no traffic.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { Datapath, DEFAULT_BPF_DIR } from '../agent/datapath/datapath.js';
import { native } from '../agent/datapath/native.js';
import { parseIp } from '../agent/net/addr.js';
import { AllowSource, EndpointFlag, IPPROTO, ZERO_CONFIG } from '../agent/datapath/codecs.js';
import { buildFrame } from '../test/helpers/frames.js';

const SMOKE = process.env.BENCH_SMOKE === '1';
const SIZES = SMOKE ? [10, 1000] : [10, 100_000, 1_000_000];
const REPEAT = SMOKE ? 10_000 : 1_000_000;
const ROUNDS = SMOKE ? 1 : 5;
const NEW_FLOWS = SMOKE ? 200 : 5000;
const IDENTITY = 1;
const LOOPBACK_IFINDEX = 1; // BPF_PROG_TEST_RUN runs tc programs on lo

const POD_V4 = '198.18.1.2';
const POD_V6 = '2001:db8:1::2';
const ALLOWED_V4 = '203.0.113.10';
const ALLOWED_V6 = '2001:db8:ff::10';
const TRACKED_V4 = '198.51.100.10';
const DENIED_V4 = '192.0.2.99';

/** tc verdicts as the enforcer returns them. */
function verdictName(retval: number): string {
  const v = retval | 0;
  return v === -1 ? 'pass' : v === 2 ? 'drop' : `tc-action-${v}`;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function measure(progFd: number, frame: Buffer): number {
  const runs: number[] = [];
  for (let r = 0; r < ROUNDS; r++) runs.push(native.progTestRun(progFd, frame, { repeat: REPEAT }).durationNs);
  return median(runs);
}

/** Fill the trie with `count` /32 entries for the identity (batched in the binding). */
function fillAllow(dp: Datapath, count: number): void {
  const value = { expiresNs: 0n, nameHash: 0n, ports: [], source: AllowSource.static };
  const chunk: Array<[{ identity: number; addr: Buffer; prefixLen: number }, typeof value]> = [];
  for (let i = 0; i < count; i++) {
    const addr = parseIp(`198.19.${(i >> 8) & 0xff}.${i & 0xff}`);
    if (i >= 65536) addr.writeUInt32BE(0xc6130000 + i, 12); // 198.19.0.0/16 and beyond: unique
    chunk.push([{ identity: IDENTITY + 1 + (i >> 16), addr, prefixLen: 128 }, value]);
    if (chunk.length === 4096) dp.maps.allow.setMany(chunk.splice(0));
  }
  dp.maps.allow.setMany(chunk);
}

function main(): void {
  const pinDir = join('/sys/fs/bpf', `fqe-bench-${process.pid}`);
  let dp: Datapath | undefined;
  let pass: ReturnType<typeof native.loadObject> | undefined;
  try {
    dp = Datapath.load(pinDir);
    pass = native.loadObject(join(DEFAULT_BPF_DIR, 'passthrough.bpf.o'), pinDir);
    const passFd = pass.programs.fqe_passthrough!.fd;
    const enforcer = dp.programs!.enforcer;
    dp.maps.endpoints.set(LOOPBACK_IFINDEX, { identity: IDENTITY, flags: EndpointFlag.enforce });
    for (const ip of [POD_V4, POD_V6]) dp.maps.owners.set({ identity: IDENTITY, addr: parseIp(ip) }, 1);
    const allowed = {
      expiresNs: 0n,
      nameHash: 0n,
      ports: [{ port: 443, proto: IPPROTO.tcp }],
      source: AllowSource.static,
    };
    dp.maps.allow.set({ identity: IDENTITY, addr: parseIp(ALLOWED_V4), prefixLen: 128 }, allowed);
    dp.maps.allow.set({ identity: IDENTITY, addr: parseIp(ALLOWED_V6), prefixLen: 128 }, allowed);
    dp.maps.config.set(0, { ...ZERO_CONFIG, eventsPerSec: 1, minTtlS: 0, maxTtlS: 0 });

    const frames = {
      'allowed-v4': buildFrame({
        src: POD_V4,
        dst: ALLOWED_V4,
        proto: 'tcp',
        sport: 40000,
        dport: 443,
        tcpFlags: 0x10,
      }),
      'allowed-v6': buildFrame({
        src: POD_V6,
        dst: ALLOWED_V6,
        proto: 'tcp',
        sport: 40000,
        dport: 443,
        tcpFlags: 0x10,
      }),
      tracked: buildFrame({ src: POD_V4, dst: TRACKED_V4, proto: 'tcp', sport: 40001, dport: 8080, tcpFlags: 0x10 }),
      dropped: buildFrame({ src: POD_V4, dst: DENIED_V4, proto: 'tcp', sport: 40002, dport: 443 }),
    };
    // A flow opened towards the pod: its replies pass through conntrack only.
    native.progTestRun(
      dp.programs!.learner,
      buildFrame({ src: TRACKED_V4, dst: POD_V4, proto: 'tcp', sport: 8080, dport: 40001, tcpFlags: 0x02 }),
    );

    let filled = 0;
    for (const size of SIZES) {
      fillAllow(dp, size - filled);
      filled = size;
      const baseline = measure(passFd, frames['allowed-v4']);
      const results: Record<string, { ns: number; ratio: number; verdict: string }> = {};
      for (const [name, frame] of Object.entries(frames)) {
        const ns = measure(enforcer, frame);
        results[name] = {
          ns,
          ratio: Number((ns / baseline).toFixed(2)),
          verdict: verdictName(native.progTestRun(enforcer, frame).retval),
        };
      }
      // A new allowed flow each time: single runs over distinct source ports (the
      // first packet is judged in full and opens the flow), against single runs
      // of the pass-through program (the same method's overhead).
      const fresh = Array.from({ length: NEW_FLOWS }, (_, i) =>
        buildFrame({
          src: POD_V4,
          dst: ALLOWED_V4,
          proto: 'tcp',
          sport: 10000 + ((size * 7 + i) % 50000),
          dport: 443,
          tcpFlags: 0x02,
        }),
      );
      dp.maps.conntrack.deleteMany(
        dp.maps.conntrack
          .entries()
          .filter(([k]) => k.peerPort === 443 && k.podPort !== 40000)
          .map(([k]) => k),
      );
      dp.maps.ctCounts.delete(IDENTITY);
      const single = (fd: number, frames: Buffer[]) =>
        median(frames.map((f) => native.progTestRun(fd, f, { repeat: 1 }).durationNs));
      const singleBase = single(passFd, fresh);
      const newFlowNs = single(enforcer, fresh);
      results['new-flow-v4'] = {
        ns: newFlowNs,
        ratio: Number((newFlowNs / singleBase).toFixed(2)),
        verdict: verdictName(native.progTestRun(enforcer, fresh[0]!).retval),
      };
      results['new-flow-v4-baseline-single-runs'] = { ns: singleBase, ratio: 1, verdict: 'pass' };
      dp.maps.endpoints.delete(LOOPBACK_IFINDEX);
      const ns = measure(enforcer, frames['allowed-v4']);
      results['not-enforced'] = {
        ns,
        ratio: Number((ns / baseline).toFixed(2)),
        verdict: verdictName(native.progTestRun(enforcer, frames['allowed-v4']).retval),
      };
      dp.maps.endpoints.set(LOOPBACK_IFINDEX, { identity: IDENTITY, flags: EndpointFlag.enforce });
      process.stdout.write(
        `${JSON.stringify({ bench: 'enforcer', allowEntries: size, repeat: REPEAT, rounds: ROUNDS, baseline: { program: 'passthrough', ns: baseline }, results })}\n`,
      );
    }
  } finally {
    if (pass) native.closeObject(pass.id);
    dp?.close();
    rmSync(pinDir, { recursive: true, force: true });
  }
}

main();
