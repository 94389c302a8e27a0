/*
 * Cost per packet of the tc egress program (the pod's ingress) with the
 * inline DNS learner, against the conntrack-only build and a pass-through
 * program, in the same run, with BPF_PROG_TEST_RUN:
 *   non-DNS    a TCP segment to the pod (conntrack path)
 *   dns-learn  a DNS answer that is learned (2 A records; the query is
 *              re-armed before every run, so each run is measured alone)
 *   dns-learn-tcp      the same answer over TCP (one segment)
 *   dns-learn-100      a UDP answer of 100 A records (all learned)
 *   dns-other  a DNS answer with no matching query (rejected early)
 * Prints one JSON line. BENCH_SMOKE=1: few runs. Attaches nothing.
 */
import { join } from 'node:path';
import { native } from '../agent/datapath/native.js';
import { DEFAULT_BPF_DIR } from '../agent/datapath/datapath.js';
import { PolicyKind } from '../agent/datapath/codecs.js';
import { LearnerHarness } from '../test/helpers/learner-harness.js';
import { buildFrame } from '../test/helpers/frames.js';

const SMOKE = process.env.BENCH_SMOKE === '1';
const REPEAT = SMOKE ? 10_000 : 1_000_000;
const SINGLE_RUNS = SMOKE ? 500 : 20_000;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function main(): void {
  const full = LearnerHarness.open();
  const ctOnly = LearnerHarness.open({ withoutInlineLearner: true });
  const pass = native.loadObject(join(DEFAULT_BPF_DIR, 'passthrough.bpf.o'), full.pinDir);
  try {
    const passFd = pass.programs.fqe_passthrough!.fd;
    const name = 'api.stripe.test';
    for (const h of [full, ctOnly]) h.allowName(PolicyKind.exact, name);
    const nonDns = buildFrame({
      src: '203.0.113.10',
      dst: full.podV4,
      proto: 'tcp',
      sport: 443,
      dport: 40000,
      tcpFlags: 0x10,
    });
    const answer = full.frame({ name, id: 7, sport: 40001, ips: ['203.0.113.10', '203.0.113.11'] });
    const other = full.frame({ name, id: 8, sport: 40002, ips: ['203.0.113.10'] });

    const repeated = (fd: number, frame: Buffer) =>
      median([0, 1, 2].map(() => native.progTestRun(fd, frame, { repeat: REPEAT }).durationNs));
    const answerTcp = full.frame({
      name,
      id: 7,
      sport: 40001,
      ips: ['203.0.113.10', '203.0.113.11'],
      transport: 'tcp',
    });
    const ips100 = Array.from({ length: 100 }, (_, i) => `198.51.100.${i + 1}`);
    const answer100 = full.frame({ name, id: 7, sport: 40001, ips: ips100, compress: true });
    const single = (h: LearnerHarness | null, fd: number, frame: Buffer, transport: 'udp' | 'tcp' = 'udp') => {
      const xs: number[] = [];
      for (let i = 0; i < SINGLE_RUNS; i++) {
        h?.expectQuery(7, 40001, h.resolver, 0n, transport);
        xs.push(native.progTestRun(fd, frame, { repeat: 1 }).durationNs);
      }
      return median(xs);
    };
    const results = {
      'non-dns': {
        passthrough: repeated(passFd, nonDns),
        ctOnly: repeated(ctOnly.dp.programs!.learner, nonDns),
        learner: repeated(full.dp.programs!.learner, nonDns),
      },
      'dns-other': {
        passthrough: repeated(passFd, other),
        ctOnly: repeated(ctOnly.dp.programs!.learner, other),
        learner: repeated(full.dp.programs!.learner, other),
      },
      'dns-learn': {
        passthrough: single(null, passFd, answer),
        ctOnly: single(ctOnly, ctOnly.dp.programs!.learner, answer),
        learner: single(full, full.dp.programs!.learner, answer),
      },
      'dns-learn-tcp': {
        passthrough: single(null, passFd, answerTcp),
        ctOnly: single(ctOnly, ctOnly.dp.programs!.learner, answerTcp, 'tcp'),
        learner: single(full, full.dp.programs!.learner, answerTcp, 'tcp'),
      },
    };
    if (full.learned().size !== 2)
      throw new Error(`the learner did not learn the answer (${full.learned().size} entries)`);
    const results100 = {
      passthrough: single(null, passFd, answer100),
      ctOnly: single(ctOnly, ctOnly.dp.programs!.learner, answer100),
      learner: single(full, full.dp.programs!.learner, answer100),
    };
    if (full.learned().size !== 102)
      throw new Error(`the learner did not learn the 100-address answer (${full.learned().size} entries)`);
    Object.assign(results, { 'dns-learn-100': results100 });
    process.stdout.write(
      `${JSON.stringify({ bench: 'learner', unit: 'ns per packet (BPF_PROG_TEST_RUN)', repeat: REPEAT, singleRuns: SINGLE_RUNS, baseline: 'passthrough and conntrack-only program', results })}\n`,
    );
  } finally {
    native.closeObject(pass.id);
    full.close();
    ctOnly.close();
  }
}

main();
