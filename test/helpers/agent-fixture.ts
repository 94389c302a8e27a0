/*
 * A node-in-a-box with the real agent running in the node namespace
 * (nsenter, so it sees the bpffs), a real dnsmasq outside, real servers and
 * real clients in the pods. The endpoints file lives in a temp dir; the
 * agent's pins in the topology's pin dir. Torn down with the topology.
 */
import { mkdtempSync, writeFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import type { TestContext } from 'node:test';
import {
  withTopology,
  OUTSIDE_LINK_V4,
  OUTSIDE_LINK_V6,
  SILENT_RESOLVER,
  NETTOOL,
  sleep,
  type Topology,
  type PodSpec,
} from './topology.js';
import { Datapath } from '../../agent/datapath/datapath.js';

export const AGENT_MAIN = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'agent', 'main.js');
export const TRUSTED = [OUTSIDE_LINK_V4.outside, OUTSIDE_LINK_V6.outside, SILENT_RESOLVER];
const METRICS = '127.0.0.1:9464';

/** The names dnsmasq serves in every agent test. */
export const ZONE: Record<string, string[]> = {
  'api.stripe.test': ['203.0.113.10', '2001:db8:ff::10'],
  'www.kadath.test': ['203.0.113.11'],
  'deep.a.kadath.test': ['203.0.113.12'],
  'kadath.test': ['198.51.100.11'],
  'blocked.test': ['198.51.100.10'],
  'v6only.test': ['2001:db8:ff::11'],
  'edge.cdn-provider.test': ['203.0.113.12'],
};
export const CNAMES = ['cdn.test,edge.cdn-provider.test', 'pay.kadath.test,edge.cdn-provider.test'];

export interface FilePod {
  name: string;
  namespace?: string;
  allow?: string;
  mode?: string;
  /** fqdn-egress.io/dns-filter (the DNS query filter; the agent's default is on) */
  dnsFilter?: string;
  /** write the interface into the file (default) or let the agent find it from the route */
  withInterface?: boolean;
  /** claim another pod's addresses (IP reuse tests) */
  ipsOf?: string;
  /** the pod's labels (policy resources select by them) */
  labels?: Record<string, string>;
}

/** What the endpoints file may hold beside pods: policy resources and namespace labels. */
export interface FilePolicies {
  policies?: unknown[];
  namespaces?: Record<string, Record<string, string>>;
}

export interface AgentBox {
  topo: Topology;
  agent: ChildProcess | undefined;
  logs: string[];
  /** the endpoints file the agent reads (its directory holds nothing else) */
  endpointsFile: string;
  writePods(pods: FilePod[], extra?: FilePolicies): void;
  writeRaw(text: string): void;
  /**
   * start the agent; by default wait until /readyz answers. `main`: another
   * build's dist/agent/main.js (an earlier release, in upgrade tests).
   * `launch`: the command that runs the agent with the given flags (the
   * image test runs the image's entrypoint); default: this build's agent
   */
  startAgent(
    extra?: string[],
    opts?: { waitReady?: boolean; main?: string; readyTimeoutMs?: number; launch?: (flags: string[]) => string[] },
  ): Promise<void>;
  stopAgent(signal?: NodeJS.Signals): Promise<number | null>;
  dig(pod: string, name: string, type?: string, opts?: { tcp?: boolean; server?: string }): Promise<string[]>;
  connect(pod: string, host: string, port?: number, timeoutMs?: number): Promise<boolean>;
  metric(name: string, labels?: Record<string, string>): Promise<number>;
  metricsText(): Promise<string>;
  maps<T>(fn: (dp: Datapath) => T): T;
  waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs?: number): Promise<void>;
}

export async function withAgentBox(
  t: TestContext | undefined,
  pods: PodSpec[],
  opts: { agentArgs?: string[]; dnsmasqArgs?: string[]; prefix?: string },
  fn: (box: AgentBox) => Promise<void | 'keep'>,
): Promise<void> {
  await withTopology(
    t,
    pods,
    async (topo) => {
      const dir = mkdtempSync(join(tmpdir(), 'fqe-agent-'));
      const file = join(dir, 'endpoints.yaml');
      writeFileSync(file, 'pods: []\n');
      await topo.startOutsideServers();
      await topo.startDnsmasq(ZONE, [...CNAMES.map((c) => `--cname=${c}`), ...(opts.dnsmasqArgs ?? [])]);
      const box: AgentBox = {
        topo,
        agent: undefined,
        logs: [],
        endpointsFile: file,
        writePods(list, extra = {}) {
          const lines = ['pods:'];
          for (const p of list) {
            const pod = topo.pod(p.name);
            const ipsOf = topo.pod(p.ipsOf ?? p.name);
            lines.push(
              `  - namespace: ${p.namespace ?? 'shop'}`,
              `    name: ${p.name}`,
              `    ips: [${ipsOf.v4}, "${ipsOf.v6}"]`,
            );
            if (p.withInterface !== false) lines.push(`    interface: ${pod.hostIf}`);
            if (p.labels) lines.push(`    labels: ${JSON.stringify(p.labels)}`);
            lines.push('    annotations:');
            if (p.allow !== undefined) lines.push(`      fqdn-egress.io/allow: ${JSON.stringify(p.allow)}`);
            if (p.mode !== undefined) lines.push(`      fqdn-egress.io/mode: ${p.mode}`);
            if (p.dnsFilter !== undefined)
              lines.push(`      fqdn-egress.io/dns-filter: ${JSON.stringify(p.dnsFilter)}`);
            if (p.allow === undefined && p.mode === undefined && p.dnsFilter === undefined)
              lines[lines.length - 1] = '    annotations: {}';
          }
          if (list.length === 0) lines[0] = 'pods: []';
          // (JSON is YAML: policies and namespaces go in as one line each)
          if (extra.policies) lines.push(`policies: ${JSON.stringify(extra.policies)}`);
          if (extra.namespaces) lines.push(`namespaces: ${JSON.stringify(extra.namespaces)}`);
          box.writeRaw(`${lines.join('\n')}\n`);
        },
        writeRaw(text) {
          writeFileSync(`${file}.tmp`, text);
          renameSync(`${file}.tmp`, file);
        },
        async startAgent(extra = [], startOpts = {}) {
          const flags = [
            '--source',
            'file',
            '--endpoints-file',
            file,
            '--dns-servers',
            TRUSTED.join(','),
            '--bpf-pin-dir',
            topo.pinDir,
            '--metrics-address',
            METRICS,
            '--log-level',
            'debug',
            ...(opts.agentArgs ?? []),
            ...extra,
          ];
          const args = startOpts.launch
            ? startOpts.launch(flags)
            : [process.execPath, startOpts.main ?? AGENT_MAIN, ...flags];
          const child = topo.spawn(topo.nodeNs, args, 'nsenter');
          box.agent = child;
          let buf = '';
          child.stdout!.on('data', (d: Buffer) => {
            buf += d.toString();
            const lines = buf.split('\n');
            buf = lines.pop()!;
            box.logs.push(...lines);
          });
          child.stderr!.on('data', (d: Buffer) => box.logs.push(d.toString()));
          if (startOpts.waitReady === false) return;
          await box.waitFor(
            'agent ready',
            async () => {
              if (child.exitCode !== null)
                throw Object.assign(new Error(`agent exited with ${child.exitCode}:\n${box.logs.join('\n')}`), {
                  fatal: true,
                });
              try {
                const r = await topo.exec(topo.nodeNs, ['curl', '-sf', `http://${METRICS}/readyz`], 3000);
                return r.stdout.startsWith('ready');
              } catch {
                return false;
              }
            },
            startOpts.readyTimeoutMs ?? 45_000,
          ); // generous: a loaded 2-vCPU machine verifies the programs slowly
        },
        async stopAgent(signal = 'SIGTERM') {
          const child = box.agent;
          if (!child || child.exitCode !== null) return child?.exitCode ?? null;
          const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
          child.kill(signal);
          const code = await exited;
          box.agent = undefined;
          return code;
        },
        async dig(pod, name, type = 'A', o = {}) {
          const args = [
            'dig',
            `@${o.server ?? OUTSIDE_LINK_V4.outside}`,
            '+short',
            '+time=2',
            '+tries=1',
            ...(o.tcp ? ['+tcp'] : []),
            name,
            type,
          ];
          const r = await topo.exec(topo.pod(pod).netns, args).catch((e: Error) => ({ stdout: `;; ${e.message}` }));
          return r.stdout
            .split('\n')
            .map((l) => l.trim())
            .filter((l) => l !== '' && !l.startsWith(';'));
        },
        async connect(pod, host, port = 443, timeoutMs = 1500) {
          return (await topo.probe(pod, 'tcp', host, port, timeoutMs)).ok;
        },
        async metricsText() {
          return (await topo.exec(topo.nodeNs, ['curl', '-sf', `http://${METRICS}/metrics`])).stdout;
        },
        async metric(name, labels = {}) {
          const text = await box.metricsText();
          const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
          let total = 0;
          for (const line of text.split('\n')) {
            if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
            if (want.every((w) => line.includes(w))) total += Number(line.split(' ').pop());
          }
          return total;
        },
        maps(fn) {
          const dp = Datapath.openPinned(topo.pinDir);
          try {
            return fn(dp);
          } finally {
            dp.close();
          }
        },
        async waitFor(what, cond, timeoutMs = 5000) {
          const deadline = Date.now() + timeoutMs;
          let lastError: Error | undefined;
          for (;;) {
            // A condition that throws (the agent's HTTP server not listening yet, on a
            // loaded machine) counts as "not yet"; its error is reported on timeout.
            // A `fatal` error (the agent exited) ends the wait at once.
            try {
              if (await cond()) return;
              lastError = undefined;
            } catch (err) {
              if ((err as { fatal?: boolean }).fatal) throw err;
              lastError = err as Error;
            }
            if (Date.now() > deadline) {
              throw new Error(
                `timed out waiting for ${what}${lastError ? ` (last error: ${lastError.message})` : ''}\nagent log tail:\n${box.logs.slice(-30).join('\n')}`,
              );
            }
            await sleep(50);
          }
        },
      };
      let keep = false;
      try {
        keep = (await fn(box)) === 'keep';
      } finally {
        if (!keep) {
          await box.stopAgent('SIGKILL');
          rmSync(dir, { recursive: true, force: true });
        }
      }
      return keep ? 'keep' : undefined;
    },
    opts.prefix ? { prefix: opts.prefix } : {},
  );
}

export { NETTOOL };
