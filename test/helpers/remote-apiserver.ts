/*
 * The fake API server in a child process inside a topology's node namespace
 * (where the agent runs), driven from the test process over IPC.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FakePodInit, FakePolicy } from './fake-apiserver.js';
import type { Topology } from './topology.js';

const CHILD = join(dirname(fileURLToPath(import.meta.url)), 'apiserver-child.js');

export class RemoteApiServer {
  private next = 1;
  /** the kubeconfig dir forAgent made (removed by stop(), with KUBECONFIG) */
  private kubeconfigDir: string | undefined;
  private readonly pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();

  private constructor(
    private readonly child: ChildProcess,
    readonly url: string,
  ) {}

  static async start(topo: Topology): Promise<RemoteApiServer> {
    const child = spawn('nsenter', [`--net=${topo.nodeNsPath}`, process.execPath, CHILD], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const ready = new Promise<void>((resolve, reject) => {
      child.once('message', () => resolve());
      child.once('exit', (code) => reject(new Error(`fake apiserver exited with ${code}`)));
    });
    await ready;
    const remote = new RemoteApiServer(child, '');
    child.on('message', (m: { id: number; result?: unknown; error?: string }) => {
      const p = remote.pending.get(m.id);
      if (!p) return;
      remote.pending.delete(m.id);
      if (m.error) p.reject(new Error(m.error));
      else p.resolve(m.result);
    });
    const url = (await remote.call('url')) as string;
    return Object.assign(remote, { url });
  }

  call(op: string, ...args: unknown[]): Promise<unknown> {
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.child.send({ id, op, args });
    });
  }

  addPod(p: FakePodInit): Promise<unknown> {
    return this.call('addPod', p);
  }

  setAnnotations(ns: string, name: string, annotations: Record<string, string>): Promise<unknown> {
    return this.call('setAnnotations', ns, name, annotations);
  }

  setLabels(ns: string, name: string, labels: Record<string, string>): Promise<unknown> {
    return this.call('setLabels', ns, name, labels);
  }

  deletePod(ns: string, name: string): Promise<unknown> {
    return this.call('deletePod', ns, name);
  }

  setNamespace(name: string, labels: Record<string, string> = {}): Promise<unknown> {
    return this.call('setNamespace', name, labels);
  }

  putPolicy(policy: FakePolicy): Promise<unknown> {
    return this.call('putPolicy', policy);
  }

  deletePolicy(kind: FakePolicy['kind'], name: string, namespace?: string): Promise<unknown> {
    return this.call('deletePolicy', kind, name, namespace);
  }

  setCrdsInstalled(installed: boolean): Promise<unknown> {
    return this.call('setCrdsInstalled', installed);
  }

  setService(spec: { clusterIP?: string; clusterIPs?: string[] }): Promise<unknown> {
    return this.call('setService', spec);
  }

  setDown(down: boolean): Promise<unknown> {
    return this.call('setDown', down);
  }

  async events(): Promise<Array<Record<string, any>>> {
    return (await this.call('events')) as Array<Record<string, any>>;
  }

  /** A kubeconfig file for the agent (in the same namespace). */
  writeKubeconfig(path: string): void {
    writeFileSync(
      path,
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [{ name: 'fake', cluster: { server: this.url, 'insecure-skip-tls-verify': true } }],
        users: [{ name: 'u', user: {} }],
        contexts: [{ name: 'c', context: { cluster: 'fake', user: 'u' } }],
        'current-context': 'c',
      }),
    );
  }

  /**
   * Started for the box's agent: kube-dns at `resolver`, a kubeconfig the
   * agent reads (KUBECONFIG, set until stop()), and the agent's flags for
   * the Kubernetes source as node `node`.
   */
  static async forAgent(
    topo: Topology,
    resolver: string,
    node: string,
  ): Promise<{ api: RemoteApiServer; agentArgs: string[] }> {
    const api = await RemoteApiServer.start(topo);
    try {
      await api.setService({ clusterIP: resolver });
      api.kubeconfigDir = mkdtempSync(join(tmpdir(), 'fqe-kube-'));
      api.writeKubeconfig(join(api.kubeconfigDir, 'kubeconfig'));
      process.env.KUBECONFIG = join(api.kubeconfigDir, 'kubeconfig');
    } catch (err) {
      api.stop();
      throw err;
    }
    return { api, agentArgs: ['--source', 'kubernetes', '--node-name', node, '--dns-servers', ''] };
  }

  stop(): void {
    if (this.kubeconfigDir) {
      delete process.env.KUBECONFIG;
      rmSync(this.kubeconfigDir, { recursive: true, force: true });
      this.kubeconfigDir = undefined;
    }
    if (this.child.connected) this.child.disconnect();
    this.child.kill('SIGKILL');
  }
}
