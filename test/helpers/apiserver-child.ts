/*
 * Runs the fake Kubernetes API server inside a network namespace (started
 * through nsenter by remote-apiserver.ts) so that an agent in that namespace
 * reaches it on 127.0.0.1. Driven over the IPC channel: {id, op, args} ->
 * {id, result} or {id, error}. Exits when the channel closes.
 */
import { FakeApiServer, type FakePodInit, type FakePolicy } from './fake-apiserver.js';

interface Request {
  id: number;
  op: string;
  args: unknown[];
}

async function main(): Promise<void> {
  const server = await FakeApiServer.start();
  const ops: Record<string, (...args: any[]) => unknown> = {
    url: () => server.url,
    addPod: (p: FakePodInit) => server.addPod(p),
    setAnnotations: (ns: string, name: string, annotations: Record<string, string>) =>
      server.updatePod(ns, name, (pod) => {
        (pod.metadata as Record<string, unknown>).annotations = annotations;
      }),
    setLabels: (ns: string, name: string, labels: Record<string, string>) =>
      server.updatePod(ns, name, (pod) => {
        pod.metadata.labels = labels;
      }),
    deletePod: (ns: string, name: string) => server.deletePod(ns, name),
    setNamespace: (name: string, labels: Record<string, string>) => server.setNamespace(name, labels),
    putPolicy: (p: FakePolicy) => server.putPolicy(p),
    deletePolicy: (kind: FakePolicy['kind'], name: string, namespace?: string) =>
      server.deletePolicy(kind, name, namespace),
    setCrdsInstalled: (installed: boolean) => server.setCrdsInstalled(installed),
    setService: (spec: { clusterIP?: string; clusterIPs?: string[] }) => server.setService(spec),
    setDown: (down: boolean) => server.setDown(down),
    events: () => server.events,
  };
  process.on('message', (msg: Request) => {
    Promise.resolve()
      .then(() => {
        const fn = ops[msg.op];
        if (!fn) throw new Error(`unknown op ${msg.op}`);
        return fn(...msg.args);
      })
      .then(
        (result) => process.send!({ id: msg.id, result: JSON.parse(JSON.stringify(result ?? null)) }),
        (err: Error) => process.send!({ id: msg.id, error: err.message }),
      );
  });
  process.on('disconnect', () => {
    void server.close().finally(() => process.exit(0));
  });
  process.send!({ id: 0, result: 'ready' });
}

void main();
