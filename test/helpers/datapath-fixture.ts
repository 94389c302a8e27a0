/*
 * A node-in-a-box with the real datapath loaded into the topology's own pin
 * dir: helpers to enforce a pod and to write allow entries the way the agent
 * will. Shared by the kernel tests; always torn down with the topology.
 */
import type { TestContext } from 'node:test';
import { Datapath, type LoadOptions } from '../../agent/datapath/datapath.js';
import { parseIp, parseCidr } from '../../agent/net/addr.js';
import { AllowSource, EndpointFlag, type Counters, type PortRule } from '../../agent/datapath/codecs.js';
import { withTopology, type PodSpec, type Topology } from './topology.js';

export interface Box {
  topo: Topology;
  dp: Datapath;
  /**
   * Attach the programs and mark the pod enforced (or audited) under an identity.
   * The box writes no name rules, so the DNS query filter is off unless asked for.
   */
  enforce(pod: string, identity: number, mode?: 'enforce' | 'audit', opts?: { dnsFilter?: 'on' | 'off' }): void;
  allow(identity: number, cidr: string, opts?: { ports?: PortRule[]; expiresNs?: bigint }): void;
  trustResolver(ip: string): void;
  counters(identity: number): Counters;
}

export function monotonicNs(): bigint {
  return process.hrtime.bigint(); // CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns
}

export function makeBox(topo: Topology, dp: Datapath): Box {
  return {
    topo,
    dp,
    enforce(podName, identity, mode = 'enforce', opts = {}) {
      const pod = topo.pod(podName);
      dp.attach(pod.ifindex, { netns: topo.nodeNsPath });
      for (const ip of [pod.v4, pod.v6]) dp.maps.owners.set({ identity, addr: parseIp(ip) }, 1);
      const dnsFilter = opts.dnsFilter === 'on' ? 0 : EndpointFlag.dnsFilterOff;
      dp.maps.endpoints.set(pod.ifindex, {
        identity,
        flags: (mode === 'audit' ? EndpointFlag.audit : EndpointFlag.enforce) | dnsFilter,
      });
    },
    allow(identity, cidr, opts = {}) {
      const c = parseCidr(cidr);
      dp.maps.allow.set(
        { identity, addr: c.addr, prefixLen: c.prefixLen },
        { expiresNs: opts.expiresNs ?? 0n, nameHash: 0n, ports: opts.ports ?? [], source: AllowSource.static },
      );
    },
    trustResolver(ip) {
      dp.maps.resolvers.set(parseIp(ip), 1);
    },
    counters(identity) {
      const c = dp.maps.counters.get(identity);
      if (!c) throw new Error(`no counters for identity ${identity} yet`);
      return c;
    },
  };
}

/** Topology + datapath loaded into its pin dir, outside servers running. */
export async function withBox(
  t: TestContext,
  pods: PodSpec[],
  fn: (box: Box) => Promise<void>,
  load: LoadOptions = {},
): Promise<void> {
  await withTopology(t, pods, async (topo) => {
    const dp = Datapath.load(topo.pinDir, undefined, load);
    try {
      await topo.startOutsideServers();
      await fn(makeBox(topo, dp));
    } finally {
      dp.close();
    }
  });
}
