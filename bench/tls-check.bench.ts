/*
 * What the TLS server name check costs, each figure against a baseline from
 * the same run:
 * - per packet, in the kernel (BPF_PROG_TEST_RUN): the ClientHello segment
 *   of a tls-ruled flow (the check runs) against the first data segment of a
 *   tcp-ruled flow, both one run per fresh flow; and a packet of an
 *   established flow, tls-ruled (checked) against tcp-ruled, against a
 *   pass-through program (goal: the check adds nothing once a flow is past it);
 * - through a pod's veth (node-in-a-box, a TLS server outside): TLS
 *   handshake latency (Python's ssl, one connection at a time) and TLS bulk
 *   throughput (goal: ratio >= 0.97), a tls-ruled port against a tcp-ruled
 *   one on the same server IP (a Python ssl server that discards).
 * Prints one JSON line. BENCH_SMOKE=1: few runs. Pin dirs, namespaces and
 * processes are its own and removed at the end, also on failure.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { Datapath, DEFAULT_BPF_DIR } from '../agent/datapath/datapath.js';
import { native } from '../agent/datapath/native.js';
import { parseIp } from '../agent/net/addr.js';
import {
  AllowSource,
  EndpointFlag,
  IPPROTO,
  PolicyKind,
  PROTO_TLS,
  ZERO_CONFIG,
  type PortRule,
} from '../agent/datapath/codecs.js';
import { nameHash, hashOrderBytes } from '../agent/policy/name-hash.js';
import { buildFrame } from '../test/helpers/frames.js';
import { realClientHellos } from '../test/helpers/client-hello.js';
import { withTopology, OUTSIDE_HOSTS_V4, type Topology } from '../test/helpers/topology.js';
import { makeBox } from '../test/helpers/datapath-fixture.js';
import { withCert } from '../test/helpers/tls-server.js';

const SMOKE = process.env.BENCH_SMOKE === '1';
const FLOWS = SMOKE ? 200 : 5000; // fresh flows for the one-run-per-flow figures
const REPEAT = SMOKE ? 10_000 : 1_000_000;
const ROUNDS = SMOKE ? 1 : 5;
const HANDSHAKES = SMOKE ? 20 : 300;
const SECONDS = SMOKE ? 1 : 4;
const IDENTITY = 1;
const LOOPBACK_IFINDEX = 1;
const POD_V4 = '198.18.1.2';
const SERVER = OUTSIDE_HOSTS_V4[0]!; // 203.0.113.10
const NAME = 'api.stripe.test';
const TLS_PORT = 4443;
const TCP_PORT = 4444;
const PORTS: PortRule[] = [
  { port: TLS_PORT, proto: PROTO_TLS },
  { port: TCP_PORT, proto: IPPROTO.tcp },
];

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

const round1 = (x: number) => Number(x.toFixed(1));
const round3 = (x: number) => Number(x.toFixed(3));

/** A rule for NAME on both ports (the name check looks it up) and an allow entry for the server. */
function allowServer(dp: Datapath, identity: number): void {
  const key = dp.maps.hashKey.get(0) ?? 0n;
  dp.maps.policy.set(
    { identity, kind: PolicyKind.exact, hash: nameHash(NAME, key) },
    { ports: PORTS, name: hashOrderBytes(NAME) },
  );
  dp.maps.allow.set(
    { identity, addr: parseIp(SERVER), prefixLen: 128 },
    { expiresNs: 0n, nameHash: 1n, ports: PORTS, source: AllowSource.kernel },
  );
}

function kernelCosts(): Record<string, unknown> {
  const pinDir = join('/sys/fs/bpf', `fqe-bench-tls-${process.pid}`);
  let dp: Datapath | undefined;
  let pass: ReturnType<typeof native.loadObject> | undefined;
  try {
    dp = Datapath.load(pinDir);
    pass = native.loadObject(join(DEFAULT_BPF_DIR, 'passthrough.bpf.o'), pinDir);
    const passFd = pass.programs.fqe_passthrough!.fd;
    const enforcer = dp.programs!.enforcer;
    const learner = dp.programs!.learner;
    dp.maps.endpoints.set(LOOPBACK_IFINDEX, { identity: IDENTITY, flags: EndpointFlag.enforce });
    dp.maps.owners.set({ identity: IDENTITY, addr: parseIp(POD_V4) }, 1);
    dp.maps.config.set(0, { ...ZERO_CONFIG, eventsPerSec: 1, ctPerPod: 4 * FLOWS + 16 });
    allowServer(dp, IDENTITY);
    const [hello] = realClientHellos([{ serverName: NAME }]) as [Buffer];
    const frame = (sport: number, dport: number, flags: number, payload?: Buffer) =>
      buildFrame({
        src: POD_V4,
        dst: SERVER,
        proto: 'tcp',
        sport,
        dport,
        seq: flags === 0x02 ? 1000 : 1001,
        ack: 1,
        tcpFlags: flags,
        ...(payload ? { payload } : {}),
      });
    const once = (f: Buffer) => native.progTestRun(enforcer, f);

    // One run per fresh flow: the ClientHello segment that carries the check, against a tcp-ruled flow's first data.
    const helloNs: number[] = [];
    const plainFirstNs: number[] = [];
    const passOnceNs: number[] = [];
    let verdictsOk = 0;
    for (let i = 0; i < FLOWS; i++) {
      const sport = 20000 + i;
      once(frame(sport, TLS_PORT, 0x02));
      // The server's SYN-ACK, seen by the learner, fixes where the client's stream begins.
      native.progTestRun(
        learner,
        buildFrame({
          src: SERVER,
          dst: POD_V4,
          proto: 'tcp',
          sport: TLS_PORT,
          dport: sport,
          seq: 0,
          ack: 1001,
          tcpFlags: 0x12,
        }),
      );
      const r = once(frame(sport, TLS_PORT, 0x18, hello));
      if ((r.retval | 0) === -1) verdictsOk++;
      helloNs.push(r.durationNs);
      once(frame(sport, TCP_PORT, 0x02));
      plainFirstNs.push(once(frame(sport, TCP_PORT, 0x18, hello)).durationNs);
      passOnceNs.push(native.progTestRun(passFd, frame(sport, TCP_PORT, 0x18, hello)).durationNs);
    }
    if (verdictsOk !== FLOWS) throw new Error(`the allowed hello passed ${verdictsOk} of ${FLOWS} times`);

    // Established flows: many runs of one ACK, the tls-ruled flow past its check (the server's
    // first data, seen by the learner, ends the watch that follows the verdict).
    native.progTestRun(
      learner,
      buildFrame({
        src: SERVER,
        dst: POD_V4,
        proto: 'tcp',
        sport: TLS_PORT,
        dport: 20000,
        seq: 1,
        ack: 1001 + hello.length,
        tcpFlags: 0x18,
        payload: Buffer.from('server hello'),
      }),
    );
    const measure = (fd: number, f: Buffer) =>
      median(Array.from({ length: ROUNDS }, () => native.progTestRun(fd, f, { repeat: REPEAT }).durationNs));
    const tlsAck = frame(20000, TLS_PORT, 0x10);
    const tcpAck = frame(20000, TCP_PORT, 0x10);
    const baseline = measure(passFd, tcpAck);
    const established = { tlsRuled: measure(enforcer, tlsAck), tcpRuled: measure(enforcer, tcpAck) };
    return {
      clientHelloSegment: {
        helloBytes: hello.length,
        flows: FLOWS,
        tlsRuledMedianNs: median(helloNs),
        tcpRuledFirstDataMedianNs: median(plainFirstNs),
        addedNs: median(helloNs) - median(plainFirstNs),
        baseline: { program: 'passthrough, one run', medianNs: median(passOnceNs) },
      },
      establishedPacket: {
        repeat: REPEAT,
        rounds: ROUNDS,
        tlsRuledNs: established.tlsRuled,
        tcpRuledNs: established.tcpRuled,
        overPassthroughNs: round1(established.tlsRuled - baseline),
        baseline: { program: 'passthrough', ns: baseline },
        goal: 'tls-ruled = tcp-ruled; <= 50 ns over the pass-through program',
      },
    };
  } finally {
    if (pass) native.closeObject(pass.id);
    dp?.close();
    rmSync(pinDir, { recursive: true, force: true });
  }
}

/** A TLS server that reads and discards, one thread per connection. */
const SERVER_SCRIPT = `
import socket, ssl, sys, threading
ip, port, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv = socket.create_server((ip, port), backlog=128)
print('ready', flush=True)
def serve(c):
    try:
        with ctx.wrap_socket(c, server_side=True) as t:
            buf = bytearray(1 << 20)
            while t.recv_into(buf):
                pass
    except Exception:
        pass
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
`;

const CLIENT = `
import socket, ssl, sys, time, json
ip, port, name, mode, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
if mode == 'handshakes':
    out = []
    for i in range(int(n)):
        t = time.perf_counter()
        with socket.create_connection((ip, port), timeout=3) as raw:
            with ctx.wrap_socket(raw, server_hostname=name) as s:
                out.append((time.perf_counter() - t) * 1e6)
    print(json.dumps(out))
else:
    buf = b'\\0' * (1 << 20)
    with socket.create_connection((ip, port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as s:
            sent, t = 0, time.perf_counter()
            while time.perf_counter() - t < n:
                s.sendall(buf)
                sent += len(buf)
            print(json.dumps(sent * 8 / (time.perf_counter() - t) / 1e9))
`;

async function client(
  topo: Topology,
  netns: string,
  port: number,
  mode: 'handshakes' | 'throughput',
  n: number,
): Promise<unknown> {
  const { stdout } = await topo.exec(
    netns,
    ['python3', '-c', CLIENT, SERVER, String(port), NAME, mode, String(n)],
    120_000,
  );
  return JSON.parse(stdout.trim().split('\n').pop()!);
}

async function throughVeth(): Promise<Record<string, unknown>> {
  let out: Record<string, unknown> = {};
  await withCert(async (cert, key) => {
    await withTopology(
      undefined,
      [{ name: 'client' }],
      async (topo) => {
        const dp = Datapath.load(topo.pinDir);
        try {
          const box = makeBox(topo, dp);
          for (const port of [TLS_PORT, TCP_PORT]) {
            await topo.spawnReady(
              topo.outNs,
              ['python3', '-c', SERVER_SCRIPT, SERVER, String(port), cert, key],
              /ready/,
            );
          }
          box.enforce('client', IDENTITY);
          allowServer(dp, IDENTITY);
          const netns = topo.pod('client').netns;
          await client(topo, netns, TLS_PORT, 'handshakes', 2); // warm up (neighbours, caches)
          await client(topo, netns, TCP_PORT, 'handshakes', 2);
          const hs = { tls: [] as number[], tcp: [] as number[] };
          const gbps = { tls: [] as number[], tcp: [] as number[] };
          for (let round = 0; round < ROUNDS; round++) {
            const order = round % 2 === 0 ? (['tls', 'tcp'] as const) : (['tcp', 'tls'] as const);
            for (const which of order) {
              const port = which === 'tls' ? TLS_PORT : TCP_PORT;
              hs[which].push(...((await client(topo, netns, port, 'handshakes', HANDSHAKES)) as number[]));
              gbps[which].push((await client(topo, netns, port, 'throughput', SECONDS)) as number);
            }
          }
          const refused = dp.maps.counters.get(IDENTITY)?.reasons['tls-server-name'] ?? 0n;
          if (refused > 0n) throw new Error(`${refused} flows refused by the name check: the bench is broken`);
          const ratio = median(gbps.tls) / median(gbps.tcp);
          out = {
            handshake: {
              tool: 'Python ssl (OpenSSL), TLS 1.3, one connection at a time, connect to handshake done',
              count: hs.tls.length,
              tlsRuledMedianUs: round1(median(hs.tls)),
              baseline: { what: 'tcp-ruled port, same server IP', medianUs: round1(median(hs.tcp)) },
              addedUs: round1(median(hs.tls) - median(hs.tcp)),
            },
            throughput: {
              tool: 'Python ssl sendall of 1 MiB buffers, 1 stream, to a Python ssl server that discards',
              seconds: SECONDS,
              rounds: ROUNDS,
              tlsRuledGbps: gbps.tls.map(round3),
              baseline: { what: 'tcp-ruled port, same server IP', gbps: gbps.tcp.map(round3) },
              ratio: round3(ratio),
              goal: 'ratio >= 0.97',
              met: ratio >= 0.97,
            },
          };
        } finally {
          dp.close();
        }
      },
      { prefix: 'fqbt' },
    );
  });
  return out;
}

async function main(): Promise<void> {
  const kernel = kernelCosts();
  const veth = await throughVeth();
  process.stdout.write(`${JSON.stringify({ bench: 'tls-check', ...kernel, ...veth })}\n`);
}

main().catch((err: Error) => {
  process.stderr.write(`tls-check bench failed: ${err.stack}\n`);
  process.exit(1);
});
