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
  writeFileSync(path, raceAddresses(count).map((ip, i) => `${ip} n${i}.${prefix}.${RACE_SUFFIX}`).join('\n') + '\n');
  return path;
}

export interface RaceResult {
  names: number;
  answered: number;
  connects: number;
  firstSynDrops: number;
}

/** Run the client in a pod and read the enforcer's drop counter around it. */
export async function runRace(box: AgentBox, pod: string, client: string, prefix: string, count: number, identity: number, gapUs = 0): Promise<RaceResult> {
  const drops = () => box.maps((dp) => dp.maps.counters.get(identity)?.reasons['not-allowed'] ?? 0n);
  const before = drops();
  const { stdout } = await box.topo.exec(box.topo.pod(pod).netns, [client, OUTSIDE_LINK_V4.outside, `n%d.${prefix}.${RACE_SUFFIX}`, String(count), String(gapUs)], 120_000);
  const r = JSON.parse(stdout.trim()) as { names: number; answered: number; connects: number };
  return { ...r, firstSynDrops: Number(drops() - before) };
}
