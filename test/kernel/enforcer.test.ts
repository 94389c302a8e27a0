/*
 * Kernel tests of the enforcer and the conntrack program: real programs
 * attached to real veths in a node-in-a-box, real TCP/UDP clients and
 * servers. Root only; they fail (never skip) when CI=true and cannot run.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import {
  requireKernelTestEnv,
  OUTSIDE_HOSTS_V4,
  OUTSIDE_HOSTS_V6,
  OUTSIDE_LINK_V4,
  NETTOOL,
  sleep,
} from '../helpers/topology.js';
import { withBox, monotonicNs } from '../helpers/datapath-fixture.js';
import { Datapath } from '../../agent/datapath/datapath.js';
import { IPPROTO, CtFlag, type DropEvent, ZERO_CONFIG } from '../../agent/datapath/codecs.js';
import { parseCidr } from '../../agent/net/addr.js';

const [HOST_A, HOST_B] = OUTSIDE_HOSTS_V4 as [string, string];
const OTHER_NET_HOST = OUTSIDE_HOSTS_V4[3]!;
const [HOST6_A, HOST6_B] = OUTSIDE_HOSTS_V6 as [string, string];
const DROP_TIMEOUT_MS = 700;

test('an enforced pod reaches an IP after its entry is written and not before', async (t) => {
  if (!requireKernelTestEnv(t)) return;
  await withBox(t, [{ name: 'a' }], async (box) => {
    assert.equal((await box.topo.probe('a', 'tcp', HOST_A, 443)).ok, true, 'reachable before enforcement');
    box.enforce('a', 101);
    assert.equal((await box.topo.probe('a', 'tcp', HOST_A, 443, DROP_TIMEOUT_MS)).ok, false);
    assert.ok(box.counters(101).reasons['not-allowed'] > 0n, 'the enforcer counted the drop');
    box.allow(101, HOST_A);
    assert.equal((await box.topo.probe('a', 'tcp', HOST_A, 443)).ok, true);
    assert.equal((await box.topo.probe('a', 'udp', HOST_A, 5000)).ok, true);
  });
});

test('two pods with different identities are separated', async (t) => {
  if (!requireKernelTestEnv(t)) return;
  await withBox(t, [{ name: 'a' }, { name: 'b' }], async (box) => {
    box.enforce('a', 201);
    box.enforce('b', 202);
    box.allow(201, HOST_A);
    box.allow(202, HOST_B);
    assert.equal((await box.topo.probe('a', 'tcp', HOST_A, 443)).ok, true);
    assert.equal((await box.topo.probe('b', 'tcp', HOST_A, 443, DROP_TIMEOUT_MS)).ok, false);
    assert.equal((await box.topo.probe('b', 'tcp', HOST_B, 443)).ok, true);
    assert.equal((await box.topo.probe('a', 'tcp', HOST_B, 443, DROP_TIMEOUT_MS)).ok, false);
  });
});

test('IPv4 and IPv6 destinations are both enforced', async (t) => {
  if (!requireKernelTestEnv(t)) return;
  await withBox(t, [{ name: 'a' }], async (box) => {
    box.enforce('a', 301);
    box.allow(301, HOST_A);
    box.allow(301, HOST6_A);
    assert.equal((await box.topo.probe('a', 'tcp', HOST_A, 443)).ok, true);
    assert.equal((await box.topo.probe('a', 'tcp', HOST6_A, 443)).ok, true);
    assert.equal((await box.topo.probe('a', 'udp', HOST6_A, 5000)).ok, true);
    assert.equal((await box.topo.probe('a', 'tcp', HOST6_B, 443, DROP_TIMEOUT_MS)).ok, false);
    assert.equal((await box.topo.probe('a', 'tcp', HOST_B, 443, DROP_TIMEOUT_MS)).ok, false);
  });
});

test('a prefix entry allows every address inside it and none outside', async (t) => {
  if (!requireKernelTestEnv(t)) return;
  await withBox(t, [{ name: 'a' }], async (box) => {
    box.enforce('a', 401);
    box.allow(401, '203.0.113.0/24');
    box.allow(401, '2001:db8:ff::10/127');
    assert.equal((await box.topo.probe('a', 'tcp', HOST_A, 443)).ok, true);
    assert.equal((await box.topo.probe('a', 'tcp', HOST_B, 80)).ok, true);
    assert.equal((await box.topo.probe('a', 'tcp', HOST6_B, 80)).ok, true);
    assert.equal((await box.topo.probe('a', 'tcp', OTHER_NET_HOST, 443, DROP_TIMEOUT_MS)).ok, false);
    assert.equal((await box.topo.probe('a', 'tcp', OUTSIDE_HOSTS_V6[2]!, 443, DROP_TIMEOUT_MS)).ok, false);
  });
});

test('a port-restricted entry passes its port and protocol and drops others', async (t) => {
  if (!requireKernelTestEnv(t)) return;
  await withBox(t, [{ name: 'a' }], async (box) => {
    box.enforce('a', 501);
    box.allow(501, HOST_A, {
      ports: [
        { port: 443, proto: IPPROTO.tcp },
        { port: 5000, proto: 0 },
      ],
    });
    assert.equal((await box.topo.probe('a', 'tcp', HOST_A, 443)).ok, true);
    assert.equal((await box.topo.probe('a', 'udp', HOST_A, 5000)).ok, true, 'proto 0 means TCP and UDP');
    const before = box.counters(501).reasons.port;
    assert.equal((await box.topo.probe('a', 'tcp', HOST_A, 80, DROP_TIMEOUT_MS)).ok, false);
    assert.ok(box.counters(501).reasons.port > before, 'dropped for its port');
  });
});

test('an expired entry is refused and a refreshed one passes', async (t) => {
  if (!requireKernelTestEnv(t)) return;
  await withBox(t, [{ name: 'a' }], async (box) => {
    box.enforce('a', 601);
    box.allow(601, HOST_A, { expiresNs: monotonicNs() - 1n });
    assert.equal((await box.topo.probe('a', 'tcp', HOST_A, 443, DROP_TIMEOUT_MS)).ok, false);
    assert.ok(box.counters(601).reasons.expired > 0n, 'dropped as expired');
    box.allow(601, HOST_A, { expiresNs: monotonicNs() + 60_000_000_000n });
    assert.equal((await box.topo.probe('a', 'tcp', HOST_A, 443)).ok, true);
  });
});

test('replies to an inbound connection pass; the pod still cannot open its own', async (t) => {
  if (!requireKernelTestEnv(t)) return;
  await withBox(t, [{ name: 'a' }], async (box) => {
    const pod = box.topo.pod('a');
    await box.topo.spawnReady(
      pod.netns,
      [process.execPath, NETTOOL, 'serve', '--tcp', '8080', '--udp', '5001'],
      /ready/,
    );
    box.enforce('a', 701);
    assert.equal((await box.topo.probeFrom(box.topo.outNs, 'tcp', pod.v4, 8080)).ok, true);
    assert.equal((await box.topo.probeFrom(box.topo.outNs, 'tcp', pod.v6, 8080)).ok, true);
    assert.equal((await box.topo.probeFrom(box.topo.outNs, 'udp', pod.v4, 5001)).ok, true);
    // The replies passed as tracked flows (the fast path: not counted one by one); the flows are in the table.
    const tracked = box.dp.maps.conntrack
      .entries()
      .filter(([k, v]) => k.identity === 701 && (v.flags & CtFlag.inbound) !== 0);
    assert.ok(tracked.length >= 3, `the inbound flows are tracked (${tracked.length})`);
    assert.equal((await box.topo.probe('a', 'tcp', OUTSIDE_LINK_V4.outside, 443, DROP_TIMEOUT_MS)).ok, false);
    assert.ok(box.counters(701).dropped > 0n, 'its own connection was dropped');
  });
});

test('a spoofed source address from an enforced pod is dropped', async (t) => {
  if (!requireKernelTestEnv(t)) return;
  await withBox(t, [{ name: 'a' }], async (box) => {
    const pod = box.topo.pod('a');
    const spoofed = '198.18.9.9';
    await box.topo.ip(pod.netns, 'addr', 'add', `${spoofed}/32`, 'dev', 'eth0');
    await box.topo.ip(box.topo.nodeNs, 'route', 'add', `${spoofed}/32`, 'dev', pod.hostIf);
    box.enforce('a', 801);
    box.allow(801, HOST_A);
    assert.equal((await box.topo.probe('a', 'tcp', HOST_A, 443, 1500, pod.v4)).ok, true);
    assert.equal((await box.topo.probe('a', 'tcp', HOST_A, 443, DROP_TIMEOUT_MS, spoofed)).ok, false);
    assert.ok(box.counters(801).reasons.spoofed > 0n, 'dropped as spoofed');
  });
});

test('a pod without enforcement is untouched', async (t) => {
  if (!requireKernelTestEnv(t)) return;
  await withBox(t, [{ name: 'enforced' }, { name: 'attached' }, { name: 'plain' }], async (box) => {
    box.enforce('enforced', 901);
    // Programs attached but no endpoint entry (pod not enforced): pass.
    box.dp.attach(box.topo.pod('attached').ifindex, { netns: box.topo.nodeNsPath });
    for (const pod of ['attached', 'plain']) {
      assert.equal((await box.topo.probe(pod, 'tcp', HOST_A, 443)).ok, true, pod);
      assert.equal((await box.topo.probe(pod, 'tcp', HOST6_B, 80)).ok, true, pod);
      assert.equal((await box.topo.probe(pod, 'udp', OTHER_NET_HOST, 5000)).ok, true, pod);
    }
    assert.equal((await box.topo.probe('enforced', 'tcp', HOST_A, 443, DROP_TIMEOUT_MS)).ok, false);
  });
});

test('ARP and IPv6 neighbour discovery work for an enforced pod', async (t) => {
  if (!requireKernelTestEnv(t)) return;
  await withBox(t, [{ name: 'a' }], async (box) => {
    const pod = box.topo.pod('a');
    box.enforce('a', 1001);
    box.allow(1001, HOST_A);
    box.allow(1001, HOST6_A);
    await box.topo.ip(pod.netns, 'neigh', 'flush', 'all');
    await box.topo.ip(pod.netns, '-6', 'neigh', 'flush', 'all');
    // A first SYN may wait for (or be lost to) neighbour discovery: allow a retransmit.
    assert.equal((await box.topo.probe('a', 'tcp', HOST_A, 443, 4000)).ok, true);
    assert.equal((await box.topo.probe('a', 'tcp', HOST6_A, 443, 4000)).ok, true);
    const neigh =
      (await box.topo.ip(pod.netns, 'neigh', 'show')).stdout +
      (await box.topo.ip(pod.netns, '-6', 'neigh', 'show')).stdout;
    assert.match(neigh, /198\.18\.0\.1 .*lladdr/, 'ARP resolved the gateway');
    assert.match(neigh, /fe80::1 .*lladdr/, 'neighbour discovery resolved the gateway');
    assert.equal(box.counters(1001).dropped, 0n, 'no link-control packet was dropped');
  });
});

test('pinned programs keep enforcing after the loading process exits; a new process updates the maps', async (t) => {
  if (!requireKernelTestEnv(t)) return;
  await withBox(t, [{ name: 'a' }], async (box) => {
    box.dp.close(); // this process lets go of its own objects
    const pod = box.topo.pod('a');
    const loader = join(dirname(fileURLToPath(import.meta.url)), '..', 'helpers', 'load-and-exit.js');
    const code = await new Promise<number | null>((resolve) => {
      const child = spawn(
        process.execPath,
        [loader, box.topo.pinDir, box.topo.nodeNsPath, String(pod.ifindex), '1101', pod.v4, pod.v6],
        { stdio: 'inherit' },
      );
      child.once('exit', resolve);
    });
    assert.equal(code, 0, 'loader exited cleanly');
    assert.equal(
      (await box.topo.probe('a', 'tcp', HOST_A, 443, DROP_TIMEOUT_MS)).ok,
      false,
      'still enforced with no process holding the programs',
    );
    const later = Datapath.openPinned(box.topo.pinDir);
    try {
      const c = parseCidr(HOST_A);
      later.maps.allow.set(
        { identity: 1101, addr: c.addr, prefixLen: c.prefixLen },
        { expiresNs: 0n, nameHash: 0n, ports: [], source: 3 },
      );
      assert.equal(
        (await box.topo.probe('a', 'tcp', HOST_A, 443)).ok,
        true,
        'an entry written by another process is honoured',
      );
      assert.ok((later.maps.counters.get(1101)?.dropped ?? 0n) > 0n);
    } finally {
      later.close();
    }
  });
});

test('drop and audit events arrive with the right fields', async (t) => {
  if (!requireKernelTestEnv(t)) return;
  await withBox(t, [{ name: 'a' }, { name: 'b' }], async (box) => {
    const events: DropEvent[] = [];
    const reader = box.dp.openEvents((evs) => events.push(...evs));
    try {
      box.enforce('a', 1201);
      box.enforce('b', 1202, 'audit');
      const a = box.topo.pod('a');
      const b = box.topo.pod('b');
      assert.equal((await box.topo.probe('a', 'tcp', HOST_B, 8443, DROP_TIMEOUT_MS)).ok, false);
      assert.equal((await box.topo.probe('b', 'tcp', HOST6_B, 8443)).ok, true, 'audit mode passes');
      for (
        let i = 0;
        i < 50 && !(events.some((e) => e.identity === 1201) && events.some((e) => e.identity === 1202));
        i++
      )
        await sleep(20);
      const drop = events.find((e) => e.identity === 1201);
      assert.ok(drop, 'a drop event arrived');
      assert.deepEqual(
        {
          kind: drop.kind,
          reason: drop.reason,
          saddr: drop.saddr,
          daddr: drop.daddr,
          dport: drop.dport,
          proto: drop.proto,
          family: drop.family,
          ifindex: drop.ifindex,
        },
        {
          kind: 'drop',
          reason: 'not-allowed',
          saddr: a.v4,
          daddr: HOST_B,
          dport: 8443,
          proto: IPPROTO.tcp,
          family: 4,
          ifindex: a.ifindex,
        },
      );
      assert.ok(drop.sport > 0 && drop.tsNs > 0n);
      const audit = events.find((e) => e.identity === 1202);
      assert.ok(audit, 'an audit event arrived');
      assert.deepEqual(
        {
          kind: audit.kind,
          reason: audit.reason,
          saddr: audit.saddr,
          daddr: audit.daddr,
          dport: audit.dport,
          family: audit.family,
          ifindex: audit.ifindex,
        },
        {
          kind: 'audit',
          reason: 'not-allowed',
          saddr: b.v6,
          daddr: HOST6_B,
          dport: 8443,
          family: 6,
          ifindex: b.ifindex,
        },
      );
      assert.ok(box.counters(1202).audited > 0n);
      assert.equal(box.counters(1202).dropped, 0n);
    } finally {
      reader.close();
    }
  });
});

test('events are rate-limited per identity so a flood cannot starve the agent', async (t) => {
  if (!requireKernelTestEnv(t)) return;
  await withBox(t, [{ name: 'a' }], async (box) => {
    let received = 0;
    const reader = box.dp.openEvents((evs) => (received += evs.length));
    try {
      box.dp.maps.config.set(0, { ...ZERO_CONFIG, eventsPerSec: 5, minTtlS: 0, maxTtlS: 0 });
      box.enforce('a', 1301);
      // 40 refused UDP datagrams, sent well inside one second.
      await box.topo.exec(box.topo.pod('a').netns, [
        process.execPath,
        NETTOOL,
        'send',
        'udp',
        HOST_A,
        '5000',
        '--count',
        '40',
      ]);
      await sleep(200);
      reader.consume();
      const c = box.counters(1301);
      assert.ok(c.dropped >= 40n, `dropped ${c.dropped}`);
      assert.ok(c.eventsSuppressed > 0n, 'some events were suppressed');
      assert.ok(received < 40, `received ${received} events for ${c.dropped} drops`);
      assert.ok(received >= 5, `received ${received}`);
    } finally {
      reader.close();
    }
  });
});
