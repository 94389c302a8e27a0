/*
 * The TLS server name check end to end: the real agent, a real HTTPS server
 * (Python's ssl) outside that answers every name on every address, and
 * real clients in the pods (openssl s_client, curl, and Python's ssl writing
 * its ClientHello in several TCP segments). One IP serves several names: an
 * allowed name completes its handshake, another name on the same IP, or no
 * name, is reset at once. IPv4 and IPv6, TLS 1.2 and 1.3, a wildcard rule,
 * audit mode, the agent down, egressctl drops and the metrics.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { requireKernelTestEnv } from '../helpers/topology.js';
import { withAgentBox, type AgentBox } from '../helpers/agent-fixture.js';
import { egressctl } from '../helpers/egressctl.js';
import { withCert, startTlsServer, sClient, TLS_PORT, PY_FINISH_HANDSHAKE } from '../helpers/tls-server.js';
import { CtFlag } from '../../agent/datapath/codecs.js';

const TOOLS = ['dnsmasq', 'dig', 'python3', 'openssl', 'curl', 'nsenter'];
const ALLOW = `api.stripe.test:${TLS_PORT}/tls, *.kadath.test:${TLS_PORT}/tls`;

async function curl(box: AgentBox, pod: string, name: string, ip: string): Promise<{ code: number; ms: number }> {
  const t0 = performance.now();
  const r = await box.topo.exec(box.topo.pod(pod).netns, [
    'sh',
    '-c',
    'curl -sk -o /dev/null --max-time 5 --resolve "$1" "$2"; echo "exit=$?"',
    'sh',
    `${name}:${TLS_PORT}:${ip}`,
    `https://${name}:${TLS_PORT}/`,
  ]);
  return { code: Number(/exit=(\d+)/.exec(r.stdout)?.[1] ?? -1), ms: performance.now() - t0 };
}

/**
 * Python's ssl over a MemoryBIO, its ClientHello written in pieces (TCP_NODELAY
 * and a pause between writes, so each is its own segment) cut at the given
 * offsets from the end of the server name (so the name comes in the last
 * one), then the handshake finished over the socket.
 */
async function segmentedHandshake(
  box: AgentBox,
  pod: string,
  ip: string,
  serverName: string,
  cutsBeforeNameEnd: number[],
  version = '1.3',
): Promise<{ ok: boolean; pieces: number; error?: string }> {
  const script = `
import socket, ssl, sys, json, time
${PY_FINISH_HANDSHAKE}
ip, port, name, cuts, version = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4]), sys.argv[5]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
if version == '1.2':
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
conn = ctx.wrap_bio(inc, out, server_hostname=name)
try:
    conn.do_handshake()
except ssl.SSLWantReadError:
    pass
hello = out.read()
end = hello.find(name.encode()) + len(name)
edges = [0] + sorted(end - c for c in cuts) + [len(hello)]
s = socket.create_connection((ip, port), timeout=3)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
try:
    for a, b in zip(edges, edges[1:]):
        s.sendall(hello[a:b])
        time.sleep(0.05)
    finish(conn, inc, out, s)
    print(json.dumps({"ok": True, "pieces": len(edges) - 1}))
except Exception as e:
    print(json.dumps({"ok": False, "pieces": len(edges) - 1, "error": repr(e)}))
`;
  const r = await box.topo.exec(
    box.topo.pod(pod).netns,
    ['python3', '-c', script, ip, String(TLS_PORT), serverName, JSON.stringify(cutsBeforeNameEnd), version],
    20_000,
  );
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as { ok: boolean; pieces: number; error?: string };
}

test('openssl s_client, curl and a segmented Python hello: allowed names complete, another name or no name on the same IP is reset at once (IPv4, IPv6, TLS 1.2 and 1.3, wildcard, audit, agent down)', async (t) => {
  if (!requireKernelTestEnv(t, TOOLS)) return;
  await withCert(async (cert, key) => {
    await withAgentBox(t, [{ name: 'payments' }, { name: 'auditor' }], {}, async (box) => {
      await startTlsServer(box.topo, cert, key, ['203.0.113.10', '203.0.113.11', '2001:db8:ff::10']);
      box.writePods([
        { name: 'payments', allow: ALLOW },
        { name: 'auditor', allow: ALLOW, mode: 'audit' },
      ]);
      await box.startAgent();
      for (const pod of ['payments', 'auditor']) {
        assert.deepEqual(await box.dig(pod, 'api.stripe.test'), ['203.0.113.10']);
        assert.deepEqual(await box.dig(pod, 'api.stripe.test', 'AAAA'), ['2001:db8:ff::10']);
        assert.deepEqual(await box.dig(pod, 'www.kadath.test'), ['203.0.113.11']);
      }

      for (const [ip, family] of [
        ['203.0.113.10', 'IPv4'],
        ['2001:db8:ff::10', 'IPv6'],
      ] as const) {
        const ok = await sClient(box.topo, 'payments', ip, 'api.stripe.test');
        assert.ok(ok.ok, `${family}: the allowed name completes its handshake: ${ok.text}`);
        const tls12 = await sClient(box.topo, 'payments', ip, 'api.stripe.test', ['-tls1_2']);
        assert.ok(tls12.ok, `${family}: TLS 1.2 too: ${tls12.text}`);
        const other = await sClient(box.topo, 'payments', ip, 'blocked.test');
        assert.equal(other.ok, false, `${family}: another name on the same IP is refused`);
        assert.ok(other.ms < 3000, `${family}: and fails fast (${Math.round(other.ms)} ms): ${other.text}`);
        const none = await sClient(box.topo, 'payments', ip, null);
        assert.equal(none.ok, false, `${family}: no server name is refused`);
      }
      assert.ok(
        (await sClient(box.topo, 'payments', '203.0.113.11', 'www.kadath.test')).ok,
        'a name under the wildcard',
      );
      assert.equal(
        (await sClient(box.topo, 'payments', '203.0.113.11', 'kadath.test')).ok,
        false,
        'the wildcard does not cover its apex',
      );

      assert.equal(
        (await curl(box, 'payments', 'api.stripe.test', '203.0.113.10')).code,
        0,
        'curl with the allowed name',
      );
      const refused = await curl(box, 'payments', 'evil.test', '203.0.113.10');
      assert.notEqual(refused.code, 0, 'curl with another name on the same IP fails');
      assert.ok(refused.ms < 3000, `and fails fast (${Math.round(refused.ms)} ms)`);

      const two = await segmentedHandshake(box, 'payments', '203.0.113.10', 'api.stripe.test', [3]);
      assert.deepEqual(
        [two.ok, two.pieces],
        [true, 2],
        `a hello in 2 segments, the name's end in the last: ${two.error}`,
      );
      const three = await segmentedHandshake(box, 'payments', '2001:db8:ff::10', 'api.stripe.test', [3, 60], '1.2');
      assert.deepEqual([three.ok, three.pieces], [true, 3], `a TLS 1.2 hello in 3 segments over IPv6: ${three.error}`);
      const threeEvil = await segmentedHandshake(box, 'payments', '203.0.113.10', 'blocked.test', [3, 60]);
      assert.equal(threeEvil.ok, false, 'a refused name in the last of 3 segments');

      const audited = await sClient(box.topo, 'auditor', '203.0.113.10', 'blocked.test');
      assert.ok(audited.ok, `audit mode passes a refused name: ${audited.text}`);

      const flows = box.maps((dp) => dp.maps.conntrack.entries());
      assert.ok(
        flows.some(([k, v]) => k.peerPort === TLS_PORT && (v.flags & CtFlag.tlsRefused) !== 0),
        'refused flows are marked in the flow table',
      );

      await box.waitFor(
        'tls-server-name drops counted',
        async () => (await box.metric('fqdn_egress_events_total', { reason: 'tls-server-name', kind: 'drop' })) >= 1,
      );
      assert.ok((await box.metric('fqdn_egress_events_total', { reason: 'tls-server-name', kind: 'audit' })) >= 1);
      const drops = await egressctl(['drops', '--output', 'json', '--limit', '2000', '--pin-dir', box.topo.pinDir]);
      assert.equal(drops.code, 0, drops.stderr);
      const list = (JSON.parse(drops.stdout) as { drops: Array<Record<string, any>> }).drops.filter(
        (d) => d.reason === 'tls-server-name',
      );
      assert.ok(
        list.some(
          (d) => d.pod === 'shop/payments' && d.kind === 'drop' && d.name === 'blocked.test' && d.port === TLS_PORT,
        ),
        `the refused server name is shown: ${JSON.stringify(list)}`,
      );
      assert.ok(
        list.some((d) => d.name === 'evil.test'),
        "curl's refused name too",
      );
      assert.ok(
        list.some((d) => d.name === '(no server name)'),
        'and a hello without one',
      );
      assert.ok(list.some((d) => d.pod === 'shop/auditor' && d.kind === 'audit' && d.name === 'blocked.test'));

      await box.stopAgent('SIGKILL');
      assert.ok(
        (await sClient(box.topo, 'payments', '203.0.113.10', 'api.stripe.test')).ok,
        'the agent down: the allowed name still completes',
      );
      assert.equal(
        (await sClient(box.topo, 'payments', '203.0.113.10', 'blocked.test')).ok,
        false,
        'the agent down: another name is still refused',
      );
    });
  });
});
