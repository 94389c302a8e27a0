/*
 * The kernel matrix's CNI plugin probe: build/fqdn-egress-cni's ADD, CHECK
 * and DEL run as a runtime runs them (CNI_* in the environment, the network
 * configuration with prevResult on stdin), against the datapath the runner
 * loaded and pinned, so the plugin's own kernel code (raw bpf(2) tcx links
 * and their pins, rtnetlink legacy tc, its map writes) meets each kernel.
 *
 * The "node" is a network namespace made for the probe (never the runner's:
 * on the host that is the machine's own); the pod's host-side interface is
 * that namespace's loopback (the VMs have no veth module), named in
 * prevResult as a ptp plugin names its veth. The plugin runs in the
 * namespace through nsenter, which keeps our mounts: `ip netns exec`
 * remounts /sys, and the bpffs under it, pins included, would be gone.
 *
 * Two rounds: the agent's decision (enforce, identity PROBE_IDENTITY) with no
 * attach state in fqe_config, where the plugin tries tcx and falls back to
 * legacy tc when the kernel refuses; then no decision (a pending claim,
 * --unknown-pods closed) with the agent's state "legacy", where the plugin
 * goes to legacy tc at once. After ADD: stdout is prevResult, the endpoint,
 * owner and pod entries are there, and our two pinned programs are attached
 * on the right hooks; after DEL, all of it is gone. The mode it finds it
 * reports, not judges: report.ts says which one each kernel must give. What
 * it wrote it removes, the agent's config included, also on failure.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import type { Datapath } from '../../agent/datapath/datapath.js';
import { linkPin, type Direction } from '../../agent/datapath/attach.js';
import { native } from '../../agent/datapath/native.js';
import { ConfigFlag, EndpointFlag, PENDING_FLAG, PENDING_IDENTITY_BASE } from '../../agent/datapath/maps/index.js';
import { parseIp } from '../../agent/net/addr.js';
import type { CniRecord, CniRound, Probe } from './records.js';

/** The identity the probe's "agent" allocated for the pod (below the pending range). */
export const PROBE_IDENTITY = 4242;
const POD = { namespace: 'fqe-matrix', name: 'probe' };
/** the pod's address (198.51.100.0/24, TEST-NET-2): only in the maps, never on an interface */
const POD_IP = '198.51.100.7';
const HOST_IF = 'lo';
const PLUGIN_TIMEOUT_MS = 20_000;
const PROGRAMS: Record<Direction, string> = { ingress: 'prog_enforcer', egress: 'prog_learner' };

export interface CniProbeOptions {
  dp: Datapath;
  /** the plugin binary */
  plugin: string;
  /** the network namespace to make, use and remove (ip netns) */
  netnsName: string;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** What a ptp plugin would have returned for the pod: its host-side interface, its sandbox one, its address. */
function prevResultFor(netns: string): Record<string, unknown> {
  return {
    cniVersion: '1.0.0',
    interfaces: [
      { name: HOST_IF, mac: '00:00:00:00:00:00' },
      { name: 'eth0', mac: '02:00:00:00:00:07', sandbox: netns },
    ],
    ips: [{ address: `${POD_IP}/24`, gateway: '198.51.100.1', interface: 1 }],
    routes: [{ dst: '0.0.0.0/0' }],
    dns: {},
  };
}

interface PluginRun {
  probe: Probe;
  stdout: string;
}

/** One call of the plugin in the node namespace, as a runtime makes it; exit 0 or the error with its output. */
function runPlugin(
  opts: CniProbeOptions,
  netns: string,
  command: 'ADD' | 'CHECK' | 'DEL',
  prevResult: unknown,
): PluginRun {
  const env = {
    PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    CNI_COMMAND: command,
    CNI_CONTAINERID: `c-${POD.name}`,
    CNI_NETNS: netns,
    CNI_IFNAME: 'eth0',
    CNI_PATH: '/opt/cni/bin',
    CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${POD.namespace};K8S_POD_NAME=${POD.name}`,
    FQDN_EGRESS_BPF_PIN_DIR: opts.dp.pinDir,
  };
  const conf = JSON.stringify({ cniVersion: '1.0.0', name: 'fqe-matrix', type: 'fqdn-egress-cni', prevResult });
  const r = spawnSync('nsenter', [`--net=${netns}`, opts.plugin], {
    env,
    input: conf,
    encoding: 'utf8',
    timeout: PLUGIN_TIMEOUT_MS,
  });
  if (r.error) return { probe: { ok: false, error: `${command}: ${r.error.message}` }, stdout: '' };
  if (r.status === 0) return { probe: { ok: true }, stdout: r.stdout };
  const said = [r.stdout.trim(), r.stderr.trim()].filter(Boolean).join(' / ') || 'no output';
  return { probe: { ok: false, error: `${command}: exit ${r.status ?? r.signal}: ${said}` }, stdout: r.stdout };
}

function pinnedProgramId(pinDir: string, pin: string): number {
  const fd = native.objGet(join(pinDir, pin));
  try {
    return native.progInfo(fd).id;
  } finally {
    native.closeFd(fd);
  }
}

/** Takes back what a round (the probe's "agent" or the plugin) left: attachments, entries, config. */
function cleanRound(dp: Datapath, ifindex: number, netns: string, flags: number): void {
  dp.detach(ifindex, { netns });
  dp.maps.endpoints.delete(ifindex);
  dp.maps.podDecisions.delete(POD);
  for (const [identity, info] of dp.maps.pods.entries())
    if (info.namespace === POD.namespace && info.name === POD.name) dp.maps.pods.delete(identity);
  for (const [key] of dp.maps.owners.entries()) if (key.addr.equals(parseIp(POD_IP))) dp.maps.owners.delete(key);
  dp.maps.config.set(0, { ...dp.maps.config.get(0)!, flags });
}

function round(
  opts: CniProbeOptions,
  netns: string,
  ifindex: number,
  agentAttach: CniRound['agentAttach'],
  decision: CniRound['decision'],
): CniRound {
  const { dp } = opts;
  const r: CniRound = {
    agentAttach,
    decision,
    mode: null,
    add: { ok: false, error: 'not run' },
    check: { ok: false, error: 'not run' },
    del: { ok: false, error: 'not run' },
    problems: [],
  };
  const expect = (holds: boolean, what: string) => {
    if (!holds) r.problems.push(what);
  };
  const config = dp.maps.config.get(0)!;
  const states = ConfigFlag.statesWritten | ConfigFlag.attachLegacy;
  // closed (no unknownPodsOpen); the attach state as the round says
  const flags = (config.flags & ~(states | ConfigFlag.unknownPodsOpen)) | (agentAttach === 'legacy' ? states : 0);
  dp.maps.config.set(0, { ...config, flags });
  try {
    if (decision === 'enforce') {
      // as the agent prepares a pod (pods/decisions.ts): its fqe_pods entry, then the decision
      dp.maps.pods.set(PROBE_IDENTITY, {
        ifindex: 0,
        flags: EndpointFlag.enforce,
        ifname: '',
        namespace: POD.namespace,
        name: POD.name,
      });
      dp.maps.podDecisions.set(POD, { identity: PROBE_IDENTITY, flags: EndpointFlag.enforce, sinceNs: 0n });
    }
    const prevResult = prevResultFor(netns);
    const add = runPlugin(opts, netns, 'ADD', prevResult);
    r.add = add.probe;
    if (!add.probe.ok) return r;

    let printed: unknown = null;
    try {
      printed = JSON.parse(add.stdout);
    } catch {
      // not JSON: the check below says so
    }
    expect(isDeepStrictEqual(printed, prevResult), `ADD printed ${add.stdout.trim() || 'nothing'}, not prevResult`);
    const d = dp.maps.podDecisions.get(POD);
    const identity = decision === 'enforce' ? PROBE_IDENTITY : (d?.identity ?? 0);
    if (decision === 'pending') {
      expect(
        identity >= PENDING_IDENTITY_BASE && d?.flags === PENDING_FLAG,
        `fqe_pod_decisions: ${d ? `identity ${d.identity} flags ${d.flags}` : 'none'}, not a pending claim`,
      );
    }
    const epFlags = decision === 'enforce' ? EndpointFlag.enforce : EndpointFlag.enforce | EndpointFlag.dnsFilterOff;
    const ep = dp.maps.endpoints.get(ifindex);
    expect(
      ep?.identity === identity && ep.flags === epFlags,
      `fqe_endpoints[${ifindex}]: ${ep ? `identity ${ep.identity} flags ${ep.flags}` : 'none'}, expected identity ${identity} flags ${epFlags}`,
    );
    const info = dp.maps.pods.get(identity);
    expect(
      info?.ifindex === ifindex && info.ifname === HOST_IF,
      `fqe_pods[${identity}]: ${info ? `ifindex ${info.ifindex} ${info.ifname}` : 'none'}, expected ifindex ${ifindex} ${HOST_IF}`,
    );
    expect(dp.maps.owners.get({ identity, addr: parseIp(POD_IP) }) !== undefined, `fqe_owners: no ${POD_IP}`);
    const att = dp.attachment(ifindex, { netns });
    r.mode = att.mode;
    for (const direction of ['ingress', 'egress'] as const) {
      const want = pinnedProgramId(dp.pinDir, PROGRAMS[direction]);
      const hook = att[direction];
      expect(
        hook.progId === want,
        `${direction}: prog ${hook.progId ?? 'none'} attached, not ${PROGRAMS[direction]} (${want})`,
      );
      if (hook.mode === 'legacy')
        expect(!existsSync(linkPin(dp.pinDir, ifindex, direction)), `${direction}: legacy, and a link pin too`);
    }

    r.check = runPlugin(opts, netns, 'CHECK', prevResult).probe;
    r.del = runPlugin(opts, netns, 'DEL', prevResult).probe;
    if (!r.del.ok) return r;

    expect(dp.maps.endpoints.get(ifindex) === undefined, `after DEL: fqe_endpoints[${ifindex}] is still there`);
    expect(
      dp.maps.owners.get({ identity, addr: parseIp(POD_IP) }) === undefined,
      `after DEL: fqe_owners still has ${POD_IP}`,
    );
    const left = dp.attachment(ifindex, { netns });
    expect(left.mode === 'none', `after DEL: ours still attached (${left.mode})`);
    for (const direction of ['ingress', 'egress'] as const)
      expect(
        !existsSync(linkPin(dp.pinDir, ifindex, direction)),
        `after DEL: the ${direction} link pin is still there`,
      );
    if (decision === 'pending') {
      expect(dp.maps.podDecisions.get(POD) === undefined, 'after DEL: the pending decision is still there');
      expect(dp.maps.pods.get(identity) === undefined, `after DEL: fqe_pods[${identity}] is still there`);
    } else {
      expect(
        dp.maps.podDecisions.get(POD) !== undefined,
        "after DEL: the agent's decision is gone (it is the agent's)",
      );
    }
    return r;
  } catch (err) {
    r.problems.push(errorText(err));
    return r;
  } finally {
    cleanRound(dp, ifindex, netns, config.flags);
  }
}

/** Both rounds in a namespace of the probe's own, removed after. */
export function probeCni(opts: CniProbeOptions): CniRecord {
  const netns = `/var/run/netns/${opts.netnsName}`;
  const rec: CniRecord = { type: 'cni', rounds: [] };
  if (!existsSync(opts.plugin)) return { ...rec, error: `no plugin at ${opts.plugin} (scripts/build.sh builds it)` };
  try {
    execFileSync('ip', ['netns', 'add', opts.netnsName], { stdio: 'pipe' });
  } catch (err) {
    return { ...rec, error: `no network namespace to probe in: ${errorText(err)}` };
  }
  try {
    const ifindex = native.ifNameToIndex(HOST_IF, netns);
    rec.rounds.push(round(opts, netns, ifindex, 'unset', 'enforce'));
    rec.rounds.push(round(opts, netns, ifindex, 'legacy', 'pending'));
  } catch (err) {
    rec.error = errorText(err);
  } finally {
    try {
      execFileSync('ip', ['netns', 'del', opts.netnsName], { stdio: 'pipe' });
    } catch {
      // the runner's prefix: scripts/sweep.sh removes it
    }
  }
  return rec;
}
