/*
 * A real TLS server for the server name check's tests and the demo: a
 * self-signed certificate in a temporary directory, openssl s_server on
 * outside addresses (it serves any name), and openssl s_client from a pod.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Topology } from './topology.js';

export const TLS_PORT = 4443;

/** A self-signed certificate (any name: the clients do not verify) in a directory removed after fn. */
export async function withCert(fn: (cert: string, key: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'fqe-tls-'));
  try {
    const cert = join(dir, 'cert.pem');
    const key = join(dir, 'key.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=tls.test', '-keyout', key, '-out', cert], { stdio: 'ignore' });
    await fn(cert, key);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** openssl s_server on each of these outside addresses, TLS_PORT: any name is served. */
export async function startTlsServer(topo: Topology, cert: string, key: string, addrs: string[]): Promise<void> {
  for (const ip of addrs) {
    const accept = ip.includes(':') ? `[${ip}]:${TLS_PORT}` : `${ip}:${TLS_PORT}`;
    topo.spawn(topo.outNs, ['openssl', 's_server', '-accept', accept, '-cert', cert, '-key', key, '-www', '-quiet']);
  }
  const deadline = Date.now() + 10_000;
  for (const ip of addrs) {
    const target = ip.includes(':') ? `[${ip}]:${TLS_PORT}` : `${ip}:${TLS_PORT}`;
    for (;;) {
      const r = await topo.exec(topo.outNs, ['sh', '-c', `echo | timeout 3 openssl s_client -connect ${target} -servername probe.test >/dev/null 2>&1 && echo up || echo down`]);
      if (r.stdout.includes('up')) break;
      if (Date.now() > deadline) throw new Error(`openssl s_server on ${target} did not come up`);
      await new Promise((res) => setTimeout(res, 100));
    }
  }
}

export interface Handshake {
  ok: boolean;
  ms: number;
  text: string;
}

/** openssl s_client from a pod: did the handshake complete? */
export async function sClient(topo: Topology, pod: string, ip: string, serverName: string | null, extra: string[] = []): Promise<Handshake> {
  const target = ip.includes(':') ? `[${ip}]:${TLS_PORT}` : `${ip}:${TLS_PORT}`;
  const args = ['openssl', 's_client', '-connect', target, ...(serverName === null ? ['-noservername'] : ['-servername', serverName]), ...extra];
  const t0 = performance.now();
  const r = await topo.exec(topo.pod(pod).netns, ['sh', '-c', 'echo | timeout 5 "$@" 2>&1; echo "exit=$?"', 'sh', ...args]);
  const ms = performance.now() - t0;
  const ok = /exit=0/.test(r.stdout) && /Cipher is (?!\(NONE\))/.test(r.stdout);
  return { ok, ms, text: r.stdout };
}

