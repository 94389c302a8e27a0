/*
 * The first-connection race, measured in the node-in-a-box: a real C client
 * (test/fixtures/race-client.c, compiled here) resolves fresh names and
 * connects at once; the enforcer's own drop counter says how many first
 * SYNs were dropped. Shared by the race test and the race benchmark.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { OUTSIDE_HOSTS_V4, SILENT_RESOLVER, OUTSIDE_LINK_V4 } from './topology.js';
import type { AgentBox } from './agent-fixture.js';

const SOURCE = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'test', 'fixtures', 'race-client.c');
export const RACE_SUFFIX = 'race.test';

/** Compile the client into a temp dir; returns its path and a cleanup. */
export function compileRaceClient(): { path: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'fqe-race-'));
  const path = join(dir, 'race-client');
  execFileSync('cc', ['-O2', '-Wall', '-o', path, SOURCE]);
  return { path, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Distinct outside addresses for `count` names (at most ~500). */
export function raceAddresses(count: number): string[] {
  const used = new Set([...OUTSIDE_HOSTS_V4, SILENT_RESOLVER]);
  const out: string[] = [];
  for (const net of ['203.0.113', '198.51.100']) {
    for (let i = 1; i <= 254 && out.length < count; i++) if (!used.has(`${net}.${i}`)) out.push(`${net}.${i}`);
  }
  if (out.length < count) throw new Error(`only ${out.length} race addresses, ${count} wanted`);
  return out;
}

/** A hosts file for dnsmasq: n<i>.<prefix>.race.test -> a distinct address. */
export function raceHostsFile(dir: string, prefix: string, count: number): string {
  const path = join(dir, `${prefix}.hosts`);
  writeFileSync(
    path,
    raceAddresses(count)
      .map((ip, i) => `${ip} n${i}.${prefix}.${RACE_SUFFIX}`)
      .join('\n') + '\n',
  );
  return path;
}

/** Pool addresses for big answers: 198.18.16.0 onwards (pods and the node sit below), up to 198.19.255.255; never routed anywhere. */
export const POOL_SIZE = 2 * 65_536 - 16 * 256;
export function poolAddress(k: number): string {
  if (k < 0 || k >= POOL_SIZE) throw new Error(`pool address ${k} out of range`);
  const v = ((198 << 24) >>> 0) + (18 << 16) + (16 << 8) + k;
  return `${v >>> 24}.${(v >>> 16) & 0xff}.${(v >>> 8) & 0xff}.${v & 0xff}`;
}

/**
 * A hosts file for dnsmasq: n<i>.<prefix>.race.test -> `perName` addresses of
 * its own, taken from the pool from `firstAddress` on (count * perName of them).
 */
export function racePoolHostsFile(
  dir: string,
  prefix: string,
  count: number,
  perName: number,
  firstAddress: number,
): string {
  const path = join(dir, `${prefix}.hosts`);
  const lines: string[] = [];
  for (let i = 0; i < count; i++) {
    for (let j = 0; j < perName; j++)
      lines.push(`${poolAddress(firstAddress + i * perName + j)} n${i}.${prefix}.${RACE_SUFFIX}`);
  }
  writeFileSync(path, lines.join('\n') + '\n');
  return path;
}

export interface RaceResult {
  names: number;
  answered: number;
  connects: number;
  /** answers that came truncated over UDP and were asked again over TCP */
  tcpRetries: number;
  /** A records in the last answer */
  addresses: number;
  firstSynDrops: number;
  /** answers the inline learner left to the agent during the run (kernel counter) */
  leftToAgent: number;
}

/** How the client asks: see test/fixtures/race-client.c. */
export type RaceMode = 'udp' | 'edns' | 'tcp';

/** Run the client in a pod and read the enforcer's drop counter around it. */
export async function runRace(
  box: AgentBox,
  pod: string,
  client: string,
  prefix: string,
  count: number,
  identity: number,
  gapUs = 0,
  mode: RaceMode = 'udp',
): Promise<RaceResult> {
  const counters = () =>
    box.maps((dp) => {
      const c = dp.maps.counters.get(identity);
      return { drops: c?.reasons['not-allowed'] ?? 0n, skipped: c?.learnSkipped ?? 0n };
    });
  const before = counters();
  const { stdout } = await box.topo.exec(
    box.topo.pod(pod).netns,
    [client, OUTSIDE_LINK_V4.outside, `n%d.${prefix}.${RACE_SUFFIX}`, String(count), String(gapUs), mode],
    120_000,
  );
  const r = JSON.parse(stdout.trim()) as {
    names: number;
    answered: number;
    connects: number;
    tcpRetries: number;
    addresses: number;
  };
  const after = counters();
  return {
    ...r,
    firstSynDrops: Number(after.drops - before.drops),
    leftToAgent: Number(after.skipped - before.skipped),
  };
}
