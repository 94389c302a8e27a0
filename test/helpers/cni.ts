/*
 * CNI plugins run the way a container runtime runs a chained conflist
 * (CNI spec 1.0, "Execution"): each plugin a process in the node namespace
 * (nsenter, so the bpffs stays visible) with CNI_COMMAND, CNI_CONTAINERID,
 * CNI_NETNS, CNI_IFNAME, CNI_ARGS and CNI_PATH set, its network
 * configuration on stdin with the list's name and cniVersion and, from the
 * second plugin on, the previous plugin's result as prevResult. DEL runs the
 * list in reverse, each plugin given the cached result of ADD. Debian's
 * containernetworking-plugins (ptp with host-local IPAM, in /usr/lib/cni)
 * make the pod's interface; our plugin (build/fqdn-egress-cni) is last.
 * A pod's namespace is made by the topology (removed with it); host-local's
 * data dir is a temp dir of the caller's.
 */
import { spawn } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Topology } from './topology.js';

export const CNI_BIN_DIR = '/usr/lib/cni';
export const PLUGIN = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'build', 'fqdn-egress-cni');
/** host-local's subnet for CNI pods: inside 198.18.0.0/15, apart from topology.ts's 198.18.0.0/16 addresses */
export const CNI_SUBNET = '198.19.42.0/24';
export const CNI_GATEWAY = '198.19.42.1';
export const CNI_VERSION = '1.0.0';

export interface PluginRun {
  code: number | null;
  stdout: string;
  stderr: string;
  /** stdout parsed, when it is JSON */
  json?: Record<string, unknown>;
}

export interface CniEnv {
  command: 'ADD' | 'DEL' | 'CHECK' | 'VERSION';
  containerId?: string;
  netns?: string;
  ifname?: string;
  args?: string;
  /** extra variables (FQDN_EGRESS_BPF_PIN_DIR, or one left out on purpose: set it to undefined) */
  extra?: Record<string, string | undefined>;
}

/** Run one plugin binary in the node namespace, stdin as given; bounded by a timeout. */
export function runPlugin(topo: Topology, binary: string, env: CniEnv, stdin: string, timeoutMs = 20_000) {
  return new Promise<PluginRun>((resolve, reject) => {
    const vars: Record<string, string> = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' };
    const set = (k: string, v: string | undefined) => {
      if (v !== undefined) vars[k] = v;
    };
    set('CNI_COMMAND', env.command);
    set('CNI_CONTAINERID', env.containerId);
    set('CNI_NETNS', env.netns);
    set('CNI_IFNAME', env.ifname);
    set('CNI_ARGS', env.args);
    set('CNI_PATH', CNI_BIN_DIR);
    for (const [k, v] of Object.entries(env.extra ?? {})) {
      if (v === undefined) delete vars[k];
      else vars[k] = v;
    }
    const child = spawn('nsenter', [`--net=${topo.nodeNsPath}`, binary], { env: vars, stdio: 'pipe' });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    // a plugin that refuses its environment exits before reading stdin: the write then fails (EPIPE), which is fine
    child.stdin.on('error', () => {});
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      let json: Record<string, unknown> | undefined;
      try {
        json = JSON.parse(stdout) as Record<string, unknown>;
      } catch {
        /* not JSON (DEL prints nothing) */
      }
      resolve({ code, stdout, stderr, ...(json ? { json } : {}) });
    });
    child.stdin.end(stdin);
  });
}

export interface CniPod {
  /** the pod's namespace (Kubernetes) and name, as CNI_ARGS carries them */
  namespace: string;
  name: string;
  netns: string;
  containerId: string;
  /** ptp's result: our plugin's prevResult */
  prevResult: Record<string, unknown>;
  hostIf: string;
  ip: string;
}

export interface ChainOptions {
  /** the pod's address (host-local hands out exactly this one) */
  ip: string;
  dataDir: string;
  pinDir: string;
  /** leave our plugin out of the list (the baseline) */
  withoutPlugin?: boolean;
  /** a pod namespace the caller made (topo.addBarePodNs); default: a new one */
  netnsName?: string;
  /** the main plugin: ptp (default) or bridge (a node bridge, BRIDGE_SUBNET) */
  main?: 'ptp' | 'bridge';
}

/** bridge's subnet and gateway (on the bridge in the node namespace) */
export const BRIDGE_SUBNET = '198.19.43.0/24';
export const BRIDGE_GATEWAY = '198.19.43.1';

function cniArgs(namespace: string, name: string): string {
  return `IgnoreUnknown=1;K8S_POD_NAMESPACE=${namespace};K8S_POD_NAME=${name};K8S_POD_INFRA_CONTAINER_ID=c-${name}`;
}

function ptpConf(opts: ChainOptions): Record<string, unknown> {
  if (opts.main === 'bridge')
    return {
      type: 'bridge',
      bridge: 'fqecni0',
      isGateway: true,
      ipMasq: false,
      ipam: {
        type: 'host-local',
        dataDir: opts.dataDir,
        ranges: [[{ subnet: BRIDGE_SUBNET, rangeStart: opts.ip, rangeEnd: opts.ip, gateway: BRIDGE_GATEWAY }]],
        routes: [{ dst: '0.0.0.0/0' }],
      },
    };
  return {
    type: 'ptp',
    ipMasq: false,
    ipam: {
      type: 'host-local',
      dataDir: opts.dataDir,
      ranges: [[{ subnet: CNI_SUBNET, rangeStart: opts.ip, rangeEnd: opts.ip, gateway: CNI_GATEWAY }]],
      routes: [{ dst: '0.0.0.0/0' }],
    },
  };
}

/** Our plugin's configuration in the list, with the runtime's additions (name, cniVersion, prevResult). */
export function ourConf(pinDir: string, prevResult?: unknown, cniVersion = CNI_VERSION): string {
  return JSON.stringify({
    cniVersion,
    name: 'fqet-cni',
    type: 'fqdn-egress-cni',
    bpfPinDir: pinDir,
    ...(prevResult !== undefined ? { prevResult } : {}),
  });
}

/** ptp ADD in a new pod namespace: the pod's interface and address; our plugin not run yet. */
export async function ptpAdd(
  topo: Topology,
  namespace: string,
  name: string,
  opts: ChainOptions,
): Promise<Omit<CniPod, 'hostIf'> & { hostIf: string }> {
  const netns = Topology.nsPath(opts.netnsName ?? (await topo.addBarePodNs(name)));
  const containerId = `c-${name}`;
  const env: CniEnv = { command: 'ADD', containerId, netns, ifname: 'eth0', args: cniArgs(namespace, name) };
  const conf = JSON.stringify({ cniVersion: CNI_VERSION, name: 'fqet-cni', ...ptpConf(opts) });
  const r = await runPlugin(topo, join(CNI_BIN_DIR, opts.main ?? 'ptp'), env, conf);
  if (r.code !== 0 || !r.json) throw new Error(`ptp ADD failed (${r.code}): ${r.stdout} ${r.stderr}`);
  const ifaces = r.json.interfaces as Array<{ name: string; sandbox?: string }>;
  // bridge reports the bridge and the veth without a sandbox: the veth comes last
  const host = ifaces.filter((i) => !i.sandbox).at(-1);
  if (!host) throw new Error(`ptp reported no host interface: ${r.stdout}`);
  return { namespace, name, netns, containerId, prevResult: r.json, hostIf: host.name, ip: opts.ip };
}

export function podEnv(pod: CniPod, command: CniEnv['command']): CniEnv {
  return {
    command,
    containerId: pod.containerId,
    netns: pod.netns,
    ifname: 'eth0',
    args: cniArgs(pod.namespace, pod.name),
  };
}

/** The whole list's ADD: ptp, then ours with ptp's result as prevResult. Throws unless both succeed. */
export async function chainAdd(
  topo: Topology,
  namespace: string,
  name: string,
  opts: ChainOptions,
): Promise<{ pod: CniPod; ours: PluginRun | undefined }> {
  const pod = await ptpAdd(topo, namespace, name, opts);
  if (opts.withoutPlugin) return { pod, ours: undefined };
  const ours = await runPlugin(topo, PLUGIN, podEnv(pod, 'ADD'), ourConf(opts.pinDir, pod.prevResult));
  if (ours.code !== 0) throw new Error(`fqdn-egress-cni ADD failed (${ours.code}): ${ours.stdout} ${ours.stderr}`);
  return { pod, ours };
}

/** The list's DEL in reverse: ours, then ptp, each with ADD's cached result. */
export async function chainDel(topo: Topology, pod: CniPod, opts: ChainOptions): Promise<PluginRun | undefined> {
  let ours: PluginRun | undefined;
  if (!opts.withoutPlugin) {
    ours = await runPlugin(topo, PLUGIN, podEnv(pod, 'DEL'), ourConf(opts.pinDir, pod.prevResult));
    if (ours.code !== 0) throw new Error(`fqdn-egress-cni DEL failed (${ours.code}): ${ours.stdout} ${ours.stderr}`);
  }
  const conf = JSON.stringify({ cniVersion: CNI_VERSION, name: 'fqet-cni', ...ptpConf(opts) });
  const r = await runPlugin(topo, join(CNI_BIN_DIR, opts.main ?? 'ptp'), podEnv(pod, 'DEL'), conf);
  if (r.code !== 0) throw new Error(`ptp DEL failed (${r.code}): ${r.stdout} ${r.stderr}`);
  return ours;
}
