/*
 * The node-in-a-box for kernel and end-to-end tests: a node
 * namespace (where the agent runs), pod namespaces joined to it by veth pairs
 * with /32 and /128 routes, and an "outside" namespace with real servers and
 * a real DNS server. Names are unique per topology (tests run in parallel)
 * and everything it makes is removed by destroy(), also when a test fails
 * or the process exits early.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync, existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { TestContext } from 'node:test';

export const NETTOOL = join(dirname(fileURLToPath(import.meta.url)), 'nettool.js');
export const NODE_GATEWAY_V4 = '198.18.0.1';
export const NODE_GATEWAY_V6 = 'fe80::1';
export const OUTSIDE_LINK_V4 = { node: '192.0.2.1', outside: '192.0.2.2' };
export const OUTSIDE_LINK_V6 = { node: '2001:db8:ff::1', outside: '2001:db8:ff::2' };
/** Addresses of outside hosts (all in the outside namespace). */
export const OUTSIDE_HOSTS_V4 = ['203.0.113.10', '203.0.113.11', '203.0.113.12', '198.51.100.10', '198.51.100.11'];
export const OUTSIDE_HOSTS_V6 = ['2001:db8:ff::10', '2001:db8:ff::11', '2001:db8:ff::12'];
/** An outside address no server listens on: tests forge DNS answers from it. */
export const SILENT_RESOLVER = '203.0.113.53';
export const SERVER_TCP_PORTS = [80, 443, 8443];
export const SERVER_UDP_PORTS = [5000];
const TEST_PREFIX = 'fqet';
export const PIN_ROOT = '/sys/fs/bpf';

export interface PodSpec {
  name: string;
}

export interface Pod {
  name: string;
  netns: string;
  /** host-side interface in the node namespace */
  hostIf: string;
  ifindex: number;
  v4: string;
  v6: string;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

export function run(cmd: string, args: string[], timeoutMs = 20_000): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err) {
        reject(new Error(`${cmd} ${args.join(' ')} failed: ${err.message.trim()}\n${stderr}`));
        return;
      }
      resolve({ stdout, stderr });
    });
  });
}

/** Fail (CI=true) or skip the test when it cannot run here. */
export function requireKernelTestEnv(t: TestContext, tools: string[] = []): boolean {
  const missing: string[] = [];
  if (process.getuid?.() !== 0) missing.push('root');
  for (const tool of ['ip', ...tools]) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      missing.push(tool);
    }
  }
  if (missing.length === 0) return true;
  const why = `needs ${missing.join(', ')}`;
  if (process.env.CI === 'true') throw new Error(`kernel test cannot run: ${why} (CI=true: failing, not skipping)`);
  t.skip(why);
  return false;
}

export function ensureBpffs(): void {
  try {
    execFileSync('mountpoint', ['-q', PIN_ROOT]);
  } catch {
    execFileSync('mount', ['-t', 'bpf', 'bpf', PIN_ROOT]);
  }
}

const live = new Set<Topology>();
process.on('exit', () => {
  for (const topo of live) topo.destroySync();
});
// The test runner ends a file that overran --test-timeout with SIGTERM, which
// skips 'exit' handlers: the agents and servers it started would live on.
for (const [signal, code] of [
  ['SIGTERM', 143],
  ['SIGINT', 130],
] as const) {
  process.once(signal, () => {
    for (const topo of live) topo.destroySync();
    process.exit(code);
  });
}

let counter = 0;

export class Topology {
  readonly id: string;
  readonly nodeNs: string;
  readonly outNs: string;
  readonly pinDir: string;
  readonly pods = new Map<string, Pod>();
  private readonly children = new Set<ChildProcess>();
  private readonly namespaces: string[] = [];

  private constructor(prefix: string) {
    this.id = `${prefix}-${process.pid.toString(36)}-${(counter++).toString(36)}${randomBytes(2).toString('hex')}`;
    this.nodeNs = `${this.id}-node`;
    this.outNs = `${this.id}-out`;
    this.pinDir = join(PIN_ROOT, `${this.id}`);
  }

  static nsPath(ns: string): string {
    return `/var/run/netns/${ns}`;
  }

  get nodeNsPath(): string {
    return Topology.nsPath(this.nodeNs);
  }

  static async create(pods: PodSpec[], opts: { prefix?: string } = {}): Promise<Topology> {
    ensureBpffs();
    const topo = new Topology(opts.prefix ?? TEST_PREFIX);
    live.add(topo);
    try {
      await topo.build(pods);
    } catch (err) {
      await topo.destroy();
      throw err;
    }
    return topo;
  }

  private async addNs(name: string): Promise<void> {
    await run('ip', ['netns', 'add', name]);
    this.namespaces.push(name);
    await this.ip(name, 'link', 'set', 'lo', 'up');
  }

  /** An empty pod namespace (lo up) for a CNI plugin to wire (test/helpers/cni.ts); removed with the rest. */
  async addBarePodNs(name: string): Promise<string> {
    const netns = `${this.id}-${name}`;
    await this.addNs(netns);
    return netns;
  }

  ip(ns: string, ...args: string[]): Promise<RunResult> {
    return run('ip', ['-n', ns, ...args]);
  }

  /** Run a command inside a namespace (ip netns exec: no bpffs inside). */
  exec(ns: string, argv: string[], timeoutMs = 20_000): Promise<RunResult> {
    return run('ip', ['netns', 'exec', ns, ...argv], timeoutMs);
  }

  private async sysctl(ns: string, key: string, value: string): Promise<void> {
    await this.exec(ns, ['sysctl', '-qw', `${key}=${value}`]);
  }

  private async build(pods: PodSpec[]): Promise<void> {
    mkdirSync(this.pinDir, { recursive: true });
    await this.addNs(this.nodeNs);
    await this.addNs(this.outNs);
    await this.sysctl(this.nodeNs, 'net.ipv4.ip_forward', '1');
    await this.sysctl(this.nodeNs, 'net.ipv6.conf.all.forwarding', '1');
    await this.ip(this.nodeNs, 'addr', 'add', `${NODE_GATEWAY_V4}/32`, 'dev', 'lo');

    // node <-> outside
    await this.ip(this.nodeNs, 'link', 'add', 'out0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', this.outNs);
    await this.ip(this.nodeNs, 'addr', 'add', `${OUTSIDE_LINK_V4.node}/24`, 'dev', 'out0');
    await this.ip(this.nodeNs, '-6', 'addr', 'add', `${OUTSIDE_LINK_V6.node}/64`, 'dev', 'out0', 'nodad');
    await this.ip(this.nodeNs, 'link', 'set', 'out0', 'up');
    await this.ip(this.outNs, 'addr', 'add', `${OUTSIDE_LINK_V4.outside}/24`, 'dev', 'eth0');
    await this.ip(this.outNs, '-6', 'addr', 'add', `${OUTSIDE_LINK_V6.outside}/64`, 'dev', 'eth0', 'nodad');
    for (const a of [...OUTSIDE_HOSTS_V4, SILENT_RESOLVER])
      await this.ip(this.outNs, 'addr', 'add', `${a}/32`, 'dev', 'eth0');
    for (const a of OUTSIDE_HOSTS_V6)
      await this.ip(this.outNs, '-6', 'addr', 'add', `${a}/128`, 'dev', 'eth0', 'nodad');
    await this.ip(this.outNs, 'link', 'set', 'eth0', 'up');
    for (const net of ['203.0.113.0/24', '198.51.100.0/24']) {
      await this.ip(this.nodeNs, 'route', 'add', net, 'via', OUTSIDE_LINK_V4.outside);
    }
    await this.ip(this.outNs, 'route', 'add', '198.18.0.0/15', 'via', OUTSIDE_LINK_V4.node);
    await this.ip(this.outNs, '-6', 'route', 'add', '2001:db8:1::/64', 'via', OUTSIDE_LINK_V6.node);

    let i = 0;
    for (const spec of pods) await this.addPod(spec, ++i);
    await this.warmUpNeighbours();
  }

  /**
   * Resolve every neighbour once before a test runs (a pitfall: the
   * first IPv6 packet can be lost to neighbour discovery). Bounded: one ping
   * per pod and outside host, nothing is attached yet.
   */
  private async warmUpNeighbours(): Promise<void> {
    const pings: Promise<unknown>[] = [];
    for (const pod of this.pods.values()) {
      for (const host of [...OUTSIDE_HOSTS_V4, ...OUTSIDE_HOSTS_V6]) {
        pings.push(this.exec(pod.netns, ['ping', '-q', '-c', '1', '-W', '2', host]).catch(() => undefined));
      }
    }
    await Promise.all(pings);
  }

  private async addPod(spec: PodSpec, index: number): Promise<void> {
    const netns = `${this.id}-${spec.name}`;
    const hostIf = `vp${index}`;
    const v4 = `198.18.1.${10 + index}`;
    const v6 = `2001:db8:1::${(0x10 + index).toString(16)}`;
    await this.addNs(netns);
    await this.ip(this.nodeNs, 'link', 'add', hostIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns);
    await this.ip(this.nodeNs, '-6', 'addr', 'add', `${NODE_GATEWAY_V6}/64`, 'dev', hostIf, 'nodad');
    await this.ip(this.nodeNs, 'link', 'set', hostIf, 'up');
    await this.ip(this.nodeNs, 'route', 'add', `${v4}/32`, 'dev', hostIf);
    await this.ip(this.nodeNs, '-6', 'route', 'add', `${v6}/128`, 'dev', hostIf);
    await this.ip(netns, 'addr', 'add', `${v4}/32`, 'dev', 'eth0');
    await this.ip(netns, '-6', 'addr', 'add', `${v6}/128`, 'dev', 'eth0', 'nodad');
    await this.ip(netns, 'link', 'set', 'eth0', 'up');
    await this.ip(netns, 'route', 'add', NODE_GATEWAY_V4, 'dev', 'eth0', 'scope', 'link');
    await this.ip(netns, 'route', 'add', 'default', 'via', NODE_GATEWAY_V4, 'dev', 'eth0');
    await this.ip(netns, '-6', 'route', 'add', 'default', 'via', NODE_GATEWAY_V6, 'dev', 'eth0');
    const link = JSON.parse((await this.ip(this.nodeNs, '-j', 'link', 'show', 'dev', hostIf)).stdout) as Array<{
      ifindex: number;
    }>;
    this.pods.set(spec.name, { name: spec.name, netns, hostIf, ifindex: link[0]!.ifindex, v4, v6 });
  }

  pod(name: string): Pod {
    const pod = this.pods.get(name);
    if (!pod) throw new Error(`topology ${this.id}: no pod "${name}"`);
    return pod;
  }

  /** Start a long-running process in a namespace; killed by destroy(). */
  spawn(ns: string, argv: string[], how: 'netns-exec' | 'nsenter' = 'netns-exec'): ChildProcess {
    const args = how === 'nsenter' ? [`--net=${Topology.nsPath(ns)}`, ...argv] : ['netns', 'exec', ns, ...argv];
    const child = spawn(how === 'nsenter' ? 'nsenter' : 'ip', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    // Always drain its output: a full pipe would block the process (dnsmasq logging, say).
    child.stdout!.on('data', () => undefined);
    child.stderr!.on('data', () => undefined);
    return child;
  }

  /** Start a process and wait until it prints a line matching `ready`. */
  async spawnReady(ns: string, argv: string[], ready: RegExp, timeoutMs = 10_000): Promise<ChildProcess> {
    const child = this.spawn(ns, argv);
    let out = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${argv.join(' ')} not ready after ${timeoutMs} ms: ${out}`)),
        timeoutMs,
      );
      const onData = (d: Buffer) => {
        out += d.toString();
        if (ready.test(out)) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', onData);
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`${argv.join(' ')} exited with ${code} before ready: ${out}`));
      });
    });
    return child;
  }

  /** Real TCP and UDP echo servers on every outside host address. */
  async startOutsideServers(): Promise<void> {
    await this.spawnReady(
      this.outNs,
      [process.execPath, NETTOOL, 'serve', '--tcp', SERVER_TCP_PORTS.join(','), '--udp', SERVER_UDP_PORTS.join(',')],
      /ready/,
    );
  }

  /** A real dnsmasq in the outside namespace; records map a name to its addresses. */
  async startDnsmasq(records: Record<string, string[]>, extra: string[] = []): Promise<void> {
    const args = [
      'dnsmasq',
      '--keep-in-foreground',
      '--conf-file=/dev/null',
      '--no-resolv',
      '--no-hosts',
      '--bind-interfaces',
      `--listen-address=${OUTSIDE_LINK_V4.outside}`,
      `--listen-address=${OUTSIDE_LINK_V6.outside}`,
      '--pid-file=',
      '--user=root',
      ...extra,
    ];
    // dnsmasq refuses a repeated flag: logs go to stderr unless the caller names a file (a query log)
    if (!extra.some((a) => a.startsWith('--log-facility='))) args.push('--log-facility=-');
    for (const [name, addrs] of Object.entries(records)) {
      for (const a of addrs) args.push(`--host-record=${name},${a}`);
    }
    this.spawn(this.outNs, args);
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        await this.exec(this.outNs, [
          'dig',
          `@${OUTSIDE_LINK_V4.outside}`,
          '+time=1',
          '+tries=1',
          '+short',
          'ready.probe.invalid',
        ]);
        return;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  /** A real client in a pod: {ok} tells whether the server answered. */
  async probe(
    pod: string,
    proto: 'tcp' | 'udp',
    host: string,
    port: number,
    timeoutMs = 1500,
    bind?: string,
  ): Promise<{ ok: boolean; error?: string }> {
    return this.probeFrom(this.pod(pod).netns, proto, host, port, timeoutMs, bind);
  }

  /** A real client in any namespace of this topology. */
  async probeFrom(
    ns: string,
    proto: 'tcp' | 'udp',
    host: string,
    port: number,
    timeoutMs = 1500,
    bind?: string,
  ): Promise<{ ok: boolean; error?: string }> {
    const argv = [process.execPath, NETTOOL, 'probe', proto, host, String(port), '--timeout-ms', String(timeoutMs)];
    if (bind) argv.push('--bind', bind);
    const { stdout } = await this.exec(ns, argv, timeoutMs + 10_000);
    return JSON.parse(stdout.trim().split('\n').pop()!) as { ok: boolean; error?: string };
  }

  /** One DNS query (A) from namespace `ns` to `server`, with the id and source port given; no answer awaited. */
  queryFrom(ns: string, server: string, name: string, id: number, sport: number): Promise<RunResult> {
    return this.exec(ns, [
      process.execPath,
      NETTOOL,
      'query',
      server,
      name,
      '--id',
      String(id),
      '--sport',
      String(sport),
    ]);
  }

  /** A forged DNS answer sent from namespace `ns`: from `from`:53 to `to`:`port`, one A/AAAA record. */
  forgeAnswerFrom(
    ns: string,
    a: { from: string; to: string; port: number; id: number; name: string; answer: string },
  ): Promise<RunResult> {
    return this.exec(ns, [
      process.execPath,
      NETTOOL,
      'forge',
      '--bind',
      a.from,
      '--to',
      a.to,
      '--port',
      String(a.port),
      '--id',
      String(a.id),
      '--name',
      a.name,
      '--answer',
      a.answer,
    ]);
  }

  /**
   * Leave everything running after this process exits (the demo's --keep):
   * the caller prints how to remove it.
   */
  release(): void {
    for (const child of this.children) {
      child.stdout?.destroy();
      child.stderr?.destroy();
      child.unref();
    }
    this.children.clear();
    this.namespaces.length = 0;
    live.delete(this);
  }

  async destroy(): Promise<void> {
    this.destroySync();
  }

  destroySync(): void {
    for (const child of this.children) {
      try {
        child.kill('SIGKILL');
      } catch {
        /* already gone */
      }
    }
    this.children.clear();
    for (const ns of this.namespaces.splice(0).reverse()) {
      try {
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
      } catch {
        /* already gone */
      }
    }
    if (live.has(this) && existsSync(this.pinDir)) rmSync(this.pinDir, { recursive: true, force: true });
    live.delete(this);
  }
}

/** Build a topology for one test and always tear it down. */
/**
 * Build a topology for one test (or the demo) and always tear it down,
 * unless fn returns 'keep' (the demo's --keep): then it is released.
 */
export async function withTopology(
  t: TestContext | undefined,
  pods: PodSpec[],
  fn: (topo: Topology) => Promise<void | 'keep'>,
  opts: { prefix?: string } = {},
): Promise<void> {
  const topo = await Topology.create(pods, opts);
  t?.after(() => topo.destroy());
  let keep = false;
  try {
    keep = (await fn(topo)) === 'keep';
  } finally {
    if (keep) topo.release();
    else await topo.destroy();
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
