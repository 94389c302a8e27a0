/*
 * dnsperf in a pod of a node-in-a-box, for the DNS benchmarks: one run at a
 * fixed rate for a fixed time, with one latency per answered query (-v)
 * and the rcodes seen. Bounded by its own -l and a timeout.
 */
import type { AgentBox } from './agent-fixture.js';
import { OUTSIDE_LINK_V4 } from './topology.js';

export interface DnsperfRun {
  latenciesUs: number[];
  sent: number;
  lost: number;
  rcodes: Record<string, number>;
}

export function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

/** One dnsperf run in the pod; parses "> RCODE NAME TYPE SECONDS" lines and the summary. */
export async function dnsperf(
  box: AgentBox,
  pod: string,
  queryFile: string,
  seconds: number,
  qps: number,
): Promise<DnsperfRun> {
  const { stdout } = await box.topo.exec(
    box.topo.pod(pod).netns,
    [
      'dnsperf',
      '-s',
      OUTSIDE_LINK_V4.outside,
      '-d',
      queryFile,
      '-l',
      String(seconds),
      '-Q',
      String(qps),
      '-c',
      '1',
      '-q',
      '20',
      '-t',
      '2',
      '-v',
    ],
    (seconds + 30) * 1000,
  );
  const latenciesUs: number[] = [];
  const rcodes: Record<string, number> = {};
  for (const line of stdout.split('\n')) {
    const m = /^> (\S+) \S+ \S+ (\d+\.\d+)$/.exec(line);
    if (!m) continue;
    rcodes[m[1]!] = (rcodes[m[1]!] ?? 0) + 1;
    latenciesUs.push(Number(m[2]) * 1e6);
  }
  const sent = Number(/Queries sent:\s+(\d+)/.exec(stdout)?.[1] ?? NaN);
  const lost = Number(/Queries lost:\s+(\d+)/.exec(stdout)?.[1] ?? NaN);
  if (!(sent > 0) || latenciesUs.length === 0) throw new Error(`dnsperf gave no result:\n${stdout.slice(-2000)}`);
  return { latenciesUs, sent, lost, rcodes };
}
