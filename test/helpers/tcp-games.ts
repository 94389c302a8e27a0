/*
 * The attacker's TCP games on one real connection from a pod
 * (test/helpers/tcp_games.py, run in the pod's namespace): crafted segments
 * on a raw socket, aimed with the sequence numbers sniffed from the pod's
 * interface, mixed with send() and recv() on the real socket. The payloads
 * are built here; the script only plays them.
 */
import { fileURLToPath } from 'node:url';
import type { Topology } from './topology.js';

export const TCP_GAMES = fileURLToPath(new URL('../../../test/helpers/tcp_games.py', import.meta.url));

export type Step =
  /** a crafted segment: seq relative to the pod's snd_nxt at that moment; flags as letters (S, A, P, R, F, U) */
  | { op: 'raw'; flags: string; seq: number; payload?: Buffer; urg?: number }
  /** send() on the real socket; oob: MSG_OOB (its last byte urgent) */
  | { op: 'send'; data: Buffer; oob?: boolean }
  | { op: 'recv'; seconds: number }
  | { op: 'pause'; ms: number };

export interface SessionResult {
  isn: number;
  serverIsn: number;
  received: Buffer;
  /** the server's data as it reached the pod's interface, read by sniffing (also what the pod's stack dropped) */
  sniffed: Buffer;
  /** the socket's error (strerror), e.g. "Connection reset by peer" */
  error: string | null;
  eof: boolean;
}

/** Open a connection from the pod to dst:port and play the steps on it. */
export async function tcpSession(
  topo: Topology,
  pod: string,
  dst: string,
  port: number,
  steps: Step[],
): Promise<SessionResult> {
  const wire = steps.map((s) => {
    if (s.op === 'raw') return { ...s, payload: (s.payload ?? Buffer.alloc(0)).toString('hex') };
    if (s.op === 'send') return { ...s, data: s.data.toString('hex') };
    return s;
  });
  const r = await topo.exec(
    topo.pod(pod).netns,
    ['python3', TCP_GAMES, 'session', '--dst', dst, '--port', String(port), '--steps', JSON.stringify(wire)],
    30_000,
  );
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as Omit<SessionResult, 'received' | 'sniffed'> & {
    received: string;
    sniffed: string;
  };
  return { ...out, received: Buffer.from(out.received, 'hex'), sniffed: Buffer.from(out.sniffed, 'hex') };
}
