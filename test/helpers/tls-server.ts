/*
 * A real TLS server for the server name check's tests and the demo: a
 * self-signed certificate in a temporary directory, an HTTPS server on
 * outside addresses (it serves any name and records each server name its
 * TLS stack reads), and openssl s_client from a pod.
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
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=tls.test',
        '-keyout',
        key,
        '-out',
        cert,
      ],
      { stdio: 'ignore' },
    );
    await fn(cert, key);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * An HTTPS server (Python's ssl, one thread per connection, so a connection
 * the kernel refused, whose server half waits for a hello that never comes,
 * blocks no other) answering 200 to any name. It prints "sni NAME" (or
 * "sni -" for a hello without one) for every ClientHello OpenSSL parsed.
 */
const SERVER_SCRIPT = `
import http.server, socket, ssl, sys
ip, port, cert, key, groups = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
class Handler(http.server.BaseHTTPRequestHandler):
    timeout = 10
    def do_GET(self):
        body = b'ok\\n'
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6 if ':' in ip else socket.AF_INET
    daemon_threads = True
srv = Server((ip, port), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
if groups == 'P-256':
    ctx.set_ecdh_curve('prime256v1')  # OpenSSL 3: the only group, so a client offering X25519 first gets a HelloRetryRequest
ctx.sni_callback = lambda conn, name, c: print('sni', name or '-', flush=True)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
print('ready', flush=True)
srv.serve_forever()
`;

export interface TlsServers {
  /** the server names the servers' TLS stacks read so far, in order ("-": a hello without one) */
  serverNames(): string[];
}

/**
 * The HTTPS server on each of these outside addresses, TLS_PORT: any name is
 * served. groups 'P-256': its only key exchange group (clients that offer
 * X25519 first get a HelloRetryRequest).
 */
export async function startTlsServer(
  topo: Topology,
  cert: string,
  key: string,
  addrs: string[],
  opts: { groups?: 'P-256' } = {},
): Promise<TlsServers> {
  const names: string[] = [];
  for (const ip of addrs) {
    const child = await topo.spawnReady(
      topo.outNs,
      ['python3', '-c', SERVER_SCRIPT, ip, String(TLS_PORT), cert, key, opts.groups ?? 'default'],
      /ready/,
    );
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const lines = buf.split('\n');
      buf = lines.pop()!;
      for (const l of lines) if (l.startsWith('sni ')) names.push(l.slice(4));
    });
  }
  return { serverNames: () => [...names] };
}

/**
 * Python, for the clients tests script over a MemoryBIO: finish(conn, inc,
 * out, s) drives the handshake of `conn` over socket `s` to its end (or
 * raises: the server closed, the connection was reset).
 */
export const PY_FINISH_HANDSHAKE = `
def finish(conn, inc, out, s):
    while True:
        try:
            conn.do_handshake()
            break
        except ssl.SSLWantReadError:
            pending = out.read()
            if pending:
                s.sendall(pending)
            data = s.recv(65536)
            if not data:
                raise ConnectionError('closed by the server')
            inc.write(data)
    pending = out.read()
    if pending:
        s.sendall(pending)
`;

export interface Handshake {
  ok: boolean;
  ms: number;
  text: string;
}

/** openssl s_client from a pod: did the handshake complete? */
export async function sClient(
  topo: Topology,
  pod: string,
  ip: string,
  serverName: string | null,
  extra: string[] = [],
): Promise<Handshake> {
  const target = ip.includes(':') ? `[${ip}]:${TLS_PORT}` : `${ip}:${TLS_PORT}`;
  const args = [
    'openssl',
    's_client',
    '-connect',
    target,
    ...(serverName === null ? ['-noservername'] : ['-servername', serverName]),
    ...extra,
  ];
  const t0 = performance.now();
  const r = await topo.exec(topo.pod(pod).netns, [
    'sh',
    '-c',
    'echo | timeout 5 "$@" 2>&1; echo "exit=$?"',
    'sh',
    ...args,
  ]);
  const ms = performance.now() - t0;
  // the handshake completed (the server may then close without close_notify: s_client's exit code says nothing)
  const ok = /New, TLSv1\.[23], Cipher is (?!\(NONE\))/.test(r.stdout);
  return { ok, ms, text: r.stdout };
}
