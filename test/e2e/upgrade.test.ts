/*
 * The upgrade from the previous release, as a DaemonSet rollout does it: the
 * previous main's agent (built from its commit, see helpers/previous-release)
 * runs in the node-in-a-box and learns; it gets SIGTERM and this checkout's
 * agent starts on the same pins. ABI 1 -> 2 lies between them (fqe_config and
 * fqe_counters converted, fqe_policy rebuilt, fqe_cidrs and fqe_hash_key
 * new, keyed name hash) and legacy tc -> tcx links. Nothing live may be lost:
 * held connections, allowed IPs, allowCIDRs, counters; enforcement never
 * lapses. Root only; with CI=true it fails instead of skipping.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import { requireKernelTestEnv, NETTOOL, OUTSIDE_LINK_V4, sleep } from '../helpers/topology.js';
import { withAgentBox, type AgentBox } from '../helpers/agent-fixture.js';
import { previousRelease, ReleaseUnavailable, type Release } from '../helpers/previous-release.js';
import { native } from '../../agent/datapath/native.js';
import { TC_HANDLE, TC_PRIORITY } from '../../agent/datapath/datapath.js';
import {
  AllowSource,
  allowKeyCodec,
  allowValueCodec,
  endpointCodec,
  u32Codec,
  type AllowKey,
  type AllowValue,
} from '../../agent/datapath/codecs.js';
import { formatIp, formatCidr } from '../../agent/net/addr.js';

/** The previous release on main: map ABI 1, legacy tc. */
const PREVIOUS_RELEASE = 'c90c890';
const TOOLS = ['dnsmasq', 'dig', 'curl', 'nsenter', 'git', 'tar', 'make', 'clang'];
const DNS_CONNECT_LOAD = join(dirname(fileURLToPath(import.meta.url)), '..', 'helpers', 'dns-connect-load.js');
const ALLOW = 'api.stripe.test, *.kadath.test';
const CIDRS = ['198.51.100.11/32', '2001:db8:ff::12/128'];
const CIDR_HOSTS = ['198.51.100.11', '2001:db8:ff::12'];
/** blocked.test: never allowed */
const REFUSED = '198.51.100.10';
/** deep.a.kadath.test: resolved for the first time after the upgrade */
const FRESH = { name: 'deep.a.kadath.test', ip: '203.0.113.12' };
/** Answered while no agent runs (the rollout's gap): the previous release's kernel learner alone learns it. */
const GAP = { name: 'gap.kadath.test', ip: '2001:db8:ff::11' };
/** The longest a held connection may last (nettool's cap); the test ends them after the rollout. */
const HOLD_SECONDS = 60;
/** Loading and verifying the programs takes seconds on a busy 2-vCPU runner. */
const READY_TIMEOUT_MS = 45_000;

/** The previous release, built (cached by commit); skips or fails when it cannot be had. */
async function release(t: import('node:test').TestContext): Promise<Release | undefined> {
  try {
    const r = await previousRelease(PREVIOUS_RELEASE);
    t.diagnostic(`previous release ${r.commit} ${r.built ? 'built' : 'reused'} at ${r.dir}`);
    return r;
  } catch (err) {
    if (!(err instanceof ReleaseUnavailable) || process.env.CI === 'true') throw err;
    t.skip(err.message);
    return undefined;
  }
}

/** fqe_allow read through its pin (its layout is the same in both releases). */
function allowEntries(pinDir: string): Array<[AllowKey, AllowValue]> {
  const fd = native.objGet(join(pinDir, 'fqe_allow'));
  try {
    const { keys, values, count } = native.mapDump(fd, allowKeyCodec.size, allowValueCodec.size);
    const out: Array<[AllowKey, AllowValue]> = [];
    for (let i = 0; i < count; i++) {
      out.push([
        allowKeyCodec.decode(keys.subarray(i * allowKeyCodec.size, (i + 1) * allowKeyCodec.size)),
        allowValueCodec.decode(values.subarray(i * allowValueCodec.size, (i + 1) * allowValueCodec.size)),
      ]);
    }
    return out;
  } finally {
    native.closeFd(fd);
  }
}

/** The identity that owns an interface (fqe_endpoints, same layout in both releases). */
function identityOf(pinDir: string, ifindex: number): number {
  const fd = native.objGet(join(pinDir, 'fqe_endpoints'));
  try {
    const raw = native.mapLookup(fd, u32Codec.encode(ifindex), endpointCodec.size);
    assert.ok(raw, `no endpoint for ifindex ${ifindex}`);
    return endpointCodec.decode(raw).identity;
  } finally {
    native.closeFd(fd);
  }
}

/** Packets passed for an identity, summed over CPUs, in whichever counters layout is pinned (passed is the first u64 in both). */
function passedCount(pinDir: string, identity: number): bigint {
  const fd = native.objGet(join(pinDir, 'fqe_counters'));
  try {
    const slot = Math.ceil(native.mapInfo(fd).valueSize / 8) * 8;
    const cpus = native.numPossibleCpus();
    const raw = native.mapLookup(fd, u32Codec.encode(identity), slot * cpus);
    let sum = 0n;
    for (let cpu = 0; raw && cpu < cpus; cpu++) sum += raw.readBigUInt64LE(cpu * slot);
    return sum;
  } finally {
    native.closeFd(fd);
  }
}

/** Host entries (what DNS answers allowed) as "identity address", sorted. */
function hostEntries(entries: Array<[AllowKey, AllowValue]>): string[] {
  return entries
    .filter(([k, v]) => k.prefixLen === 128 && v.source !== AllowSource.static)
    .map(([k]) => `${k.identity} ${formatIp(k.addr)}`)
    .sort();
}

interface HoldResult {
  ok: boolean;
  error?: string;
  echoes: number;
  ms: number;
}

/** A held connection (nettool hold), once connected; stop() ends it and gives its result. */
async function hold(
  t: import('node:test').TestContext,
  box: AgentBox,
  proto: 'tcp' | 'udp',
  host: string,
  port: number,
): Promise<{ started: number; stop(): Promise<HoldResult> }> {
  const started = Date.now();
  const child: ChildProcess = await box.topo.spawnReady(
    box.topo.pod('payments').netns,
    [process.execPath, NETTOOL, 'hold', proto, host, String(port), '--seconds', String(HOLD_SECONDS)],
    /connected|ok|error/,
  );
  t.diagnostic(`hold ${proto} ${host}: connected after ${Date.now() - started} ms`);
  const result = new Promise<HoldResult>((resolve) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.once('exit', () => {
      const last = out.trim().split('\n').pop() ?? '';
      resolve(
        last.startsWith('{')
          ? (JSON.parse(last) as HoldResult)
          : { ok: false, error: `no result: ${out}`, echoes: 0, ms: 0 },
      );
    });
  });
  return {
    started,
    stop() {
      child.kill('SIGTERM'); // nettool ends the hold at its next echo check
      return result;
    },
  };
}

interface ProbeResult {
  ok: boolean;
  /** when it ended */
  at: number;
  /** the probe itself failed to run */
  error?: string;
}

/** Probes in a loop until stopped (or until a probe cannot run). */
function probeLoop(
  box: AgentBox,
  host: string,
  port: number,
  timeoutMs: number,
): { results: ProbeResult[]; stop(): Promise<ProbeResult[]> } {
  let running = true;
  const results: ProbeResult[] = [];
  const loop = (async () => {
    while (running) {
      try {
        results.push({ ok: await box.connect('payments', host, port, timeoutMs), at: Date.now() });
      } catch (err) {
        results.push({ ok: false, at: Date.now(), error: (err as Error).message });
        running = false;
      }
    }
  })();
  return {
    results,
    async stop() {
      running = false;
      await loop;
      return results;
    },
  };
}

/** The agent's JSON log lines from index `from` on. */
function logLines(box: AgentBox, from: number): Array<{ msg?: string; map?: string; level?: number }> {
  return box.logs.slice(from).flatMap((l) => {
    try {
      return [JSON.parse(l) as { msg?: string; map?: string; level?: number }];
    } catch {
      return [];
    }
  });
}

test('a rollout from the previous release (ABI 1, legacy tc) keeps every connection, allowed IP, allowCIDR and counter, and never stops enforcing', async (t) => {
  if (!requireKernelTestEnv(t, TOOLS)) return;
  const previous = await release(t);
  if (!previous) return;
  const work = mkdtempSync(join(tmpdir(), 'fqe-upgrade-'));
  t.after(() => rmSync(work, { recursive: true, force: true }));
  const agentArgs = ['--allow-cidrs', CIDRS.join(',')];

  // Real TTLs (dnsmasq's default for its own records is 0): entries outlive the test's pauses.
  await withAgentBox(
    t,
    [{ name: 'payments' }],
    { dnsmasqArgs: ['--local-ttl=600', `--host-record=${GAP.name},${GAP.ip}`] },
    async (box) => {
      const t0 = Date.now();
      const mark = (what: string) => t.diagnostic(`${Date.now() - t0} ms: ${what}`);
      const pod = box.topo.pod('payments');
      const netns = box.topo.nodeNsPath;
      const pinDir = box.topo.pinDir;
      box.writePods([{ name: 'payments', allow: ALLOW }]);

      // --- the previous release runs and learns --------------------------------
      await box.startAgent(agentArgs, { main: previous.agentMain, readyTimeoutMs: READY_TIMEOUT_MS });
      assert.equal(
        native.tcQuery({
          ifindex: pod.ifindex,
          direction: 'ingress',
          handle: TC_HANDLE,
          priority: TC_PRIORITY,
          netns,
        }) !== null,
        true,
        'the previous release attaches through legacy tc',
      );
      assert.equal(
        await box.connect('payments', REFUSED, 443, 500),
        false,
        'before: a destination not allowed is refused',
      );
      assert.equal(
        await box.connect('payments', FRESH.ip, 443, 500),
        false,
        'before: a name not yet resolved is refused',
      );
      assert.deepEqual(await box.dig('payments', 'api.stripe.test'), ['203.0.113.10']);
      assert.deepEqual(await box.dig('payments', 'www.kadath.test'), ['203.0.113.11']);
      // Over TCP only the agent learns (the inline learner reads UDP answers).
      assert.deepEqual(await box.dig('payments', 'api.stripe.test', 'AAAA', { tcp: true }), ['2001:db8:ff::10']);
      const allowedIps = ['203.0.113.10', '203.0.113.11', '2001:db8:ff::10'];
      for (const ip of allowedIps) assert.equal(await box.connect('payments', ip), true, `before: ${ip} allowed`);
      for (const ip of CIDR_HOSTS)
        assert.equal(await box.connect('payments', ip), true, `before: ${ip} inside --allow-cidrs`);
      mark('previous release learned');
      const identity = identityOf(pinDir, pod.ifindex);
      await box.waitFor('the three answers in fqe_allow', () => hostEntries(allowEntries(pinDir)).length === 3);
      const oldEntries = allowEntries(pinDir);
      const oldHosts = hostEntries(oldEntries);
      assert.deepEqual(oldHosts, allowedIps.map((ip) => `${identity} ${ip}`).sort());
      const sources = new Set(oldEntries.filter(([k]) => k.prefixLen === 128).map(([, v]) => v.source));
      assert.ok(sources.has(AllowSource.agent), 'the previous agent wrote entries (DNS over TCP)');
      t.diagnostic(
        `before: ${oldEntries.map(([k, v]) => `${formatCidr(k.addr, k.prefixLen)} source ${v.source}`).join(', ')}`,
      );

      // --- connections held across the rollout, probes around it --------------
      const held = await Promise.all([
        hold(t, box, 'tcp', '203.0.113.10', 443),
        hold(t, box, 'udp', '203.0.113.11', 5000),
        hold(t, box, 'tcp', '2001:db8:ff::10', 443),
      ]);
      mark('connections held');
      await sleep(500);
      const passedBefore = passedCount(pinDir, identity);
      assert.ok(passedBefore > 0n, 'the previous release counted passed packets');
      const loops = {
        refused: probeLoop(box, REFUSED, 443, 300),
        allowed: probeLoop(box, '203.0.113.11', 443, 1500),
        cidr: probeLoop(box, CIDR_HOSTS[0]!, 443, 1500),
      };
      let probes: Record<string, ProbeResult[]> = {};
      let before: string[] = [...oldHosts];
      let readyAt = 0;
      let rolloutStarted = 0;
      let newLogsFrom = 0;
      try {
        await box.waitFor(
          'a probe of each kind before the rollout',
          () => Object.values(loops).every((l) => l.results.length > 0),
          20_000,
        );

        // --- the rollout: SIGTERM to the old agent, the new one on the same pins --
        rolloutStarted = Date.now();
        assert.equal(await box.stopAgent('SIGTERM'), 0, 'the previous agent exits 0 on SIGTERM');
        mark('previous agent stopped');
        // No agent runs: the previous release's programs alone enforce and learn.
        assert.deepEqual(await box.dig('payments', GAP.name, 'AAAA'), [GAP.ip]);
        assert.equal(
          await box.connect('payments', GAP.ip),
          true,
          'learned inline by the previous release while no agent runs',
        );
        const gapEntries = allowEntries(pinDir);
        assert.equal(
          gapEntries.find(([k]) => formatIp(k.addr) === GAP.ip)?.[1].source,
          AllowSource.kernel,
          'a kernel-learned entry (unkeyed name hash)',
        );
        before = hostEntries(gapEntries);
        assert.deepEqual(before, [...oldHosts, `${identity} ${GAP.ip}`].sort());
        newLogsFrom = box.logs.length;
        mark('starting the new agent');
        await box.startAgent(agentArgs, { readyTimeoutMs: READY_TIMEOUT_MS });
        readyAt = Date.now();
        t.diagnostic(`new agent ready ${readyAt - rolloutStarted} ms after the SIGTERM`);

        // Right after ready: every allowed IP is still there, same identity and address.
        const after = hostEntries(allowEntries(pinDir));
        for (const e of before)
          assert.ok(
            after.includes(e),
            `${e}: still allowed right after the new agent is ready (have ${after.join(', ')})`,
          );
        assert.equal(identityOf(pinDir, pod.ifindex), identity, 'the pod keeps its identity');
        await sleep(1500);
      } finally {
        probes = Object.fromEntries(
          await Promise.all(Object.entries(loops).map(async ([k, l]) => [k, await l.stop()] as const)),
        );
      }
      for (const [what, results] of Object.entries(probes)) {
        assert.deepEqual(
          results.filter((r) => r.error !== undefined),
          [],
          `${what}: every probe ran`,
        );
        assert.ok(
          results.some((r) => r.at < rolloutStarted),
          `${what}: probed before the rollout`,
        );
        assert.ok(
          results.some((r) => r.at > rolloutStarted && r.at < readyAt),
          `${what}: probed during the rollout`,
        );
        assert.ok(
          results.some((r) => r.at > readyAt),
          `${what}: probed after the new agent was ready`,
        );
      }
      t.diagnostic(
        `probes around the rollout: ${Object.entries(probes)
          .map(([k, r]) => `${k} ${r.length}`)
          .join(', ')}`,
      );
      assert.deepEqual(
        probes.refused!.filter((r) => r.ok),
        [],
        'a destination not allowed was refused before, during and after the rollout',
      );
      assert.deepEqual(
        probes.allowed!.filter((r) => !r.ok),
        [],
        'an allowed name connected before, during and after the rollout',
      );
      assert.deepEqual(
        probes.cidr!.filter((r) => !r.ok),
        [],
        'an --allow-cidrs destination connected before, during and after the rollout',
      );
      for (const ip of [...allowedIps, GAP.ip])
        assert.equal(await box.connect('payments', ip), true, `after: ${ip} connects without a new DNS lookup`);
      for (const ip of CIDR_HOSTS)
        assert.equal(await box.connect('payments', ip), true, `after: ${ip} still inside --allow-cidrs`);
      assert.equal(await box.connect('payments', REFUSED, 443, 500), false, 'after: still refused');

      const results = await Promise.all(held.map((h) => h.stop()));
      results.forEach((r, i) => {
        assert.equal(r.ok, true, `held connection ${i} never lost an echo across the rollout (${JSON.stringify(r)})`);
        assert.ok(held[i]!.started + r.ms > readyAt, `held connection ${i} lasted until after the new agent was ready`);
      });

      // The maps: converted counters, allowCIDRs in their own map, no static entries left.
      assert.ok(passedCount(pinDir, identity) >= passedBefore, 'the passed counter did not go down');
      box.maps((dp) => {
        assert.deepEqual(
          dp.maps.cidrs
            .entries()
            .map(([k]) => formatCidr(k.addr, k.prefixLen))
            .sort(),
          [...CIDR_HOSTS].sort(),
          'fqe_cidrs holds --allow-cidrs (both are host prefixes)',
        );
        assert.deepEqual(
          dp.maps.allow.entries().filter(([, v]) => v.source === AllowSource.static),
          [],
          "the previous release's per-pod CIDR entries are gone from fqe_allow",
        );
        assert.ok((dp.maps.hashKey.get(0) ?? 0n) !== 0n, 'the node has a name-hash key');
      });
      // Once the new agent has rewritten the entries (keyed hashes), each one's
      // name is on record: egressctl shows it, and the next restart restores it.
      await box.waitFor(
        'every allowed IP named in fqe_names',
        () =>
          box.maps((dp) => {
            const hosts = dp.maps.allow.entries().filter(([k]) => k.prefixLen === 128);
            return hosts.length >= before.length && hosts.every(([, v]) => dp.maps.names.get(v.nameHash) !== undefined);
          }),
        8000,
      );

      // The migration, in the new agent's log.
      const lines = logLines(box, newLogsFrom);
      const step = (msg: RegExp) =>
        lines
          .filter((l) => l.msg !== undefined && msg.test(l.msg))
          .map((l) => l.map)
          .sort();
      assert.deepEqual(step(/entries converted/), ['fqe_config', 'fqe_counters'], 'converted');
      assert.deepEqual(step(/entries rebuilt/), ['fqe_policy'], 'rebuilt');
      assert.deepEqual(step(/could not be carried over/), [], 'nothing dropped');
      assert.deepEqual(
        lines.filter((l) => (l.level ?? 0) >= 50).map((l) => l.msg),
        [],
        'no error logged',
      );

      // Attached in the new mode; nothing of the previous release is left on the interface.
      box.maps((dp) => {
        const a = dp.attachment(pod.ifindex, { netns });
        if (a.ingress.tcxChain !== null) {
          assert.equal(a.mode, 'tcx', 'tcx links where the kernel has tcx');
          for (const hook of [a.ingress, a.egress]) {
            assert.deepEqual(hook.tcxChain, [hook.progId], `${hook.direction}: ours alone in the tcx chain`);
            assert.equal(
              native.tcQuery({
                ifindex: pod.ifindex,
                direction: hook.direction,
                handle: TC_HANDLE,
                priority: TC_PRIORITY,
                netns,
              }),
              null,
              `${hook.direction}: no legacy filter of ours left`,
            );
          }
        } else {
          assert.equal(a.mode, 'legacy', 'legacy tc where the kernel has no tcx');
        }
        assert.deepEqual(a.warnings, []);
      });

      // A name resolved for the first time now is learned inline: its first connection passes.
      assert.equal(
        await box.connect('payments', FRESH.ip, 443, 500),
        false,
        `${FRESH.ip} is not allowed before its answer`,
      );
      const learnedBefore = box.maps((dp) => dp.maps.counters.get(identity)?.learned ?? 0n);
      const names = join(work, 'names.txt');
      writeFileSync(names, `${FRESH.name}\n`);
      const { stdout } = await box.topo.exec(
        pod.netns,
        [
          process.execPath,
          DNS_CONNECT_LOAD,
          '--resolver',
          OUTSIDE_LINK_V4.outside,
          '--names',
          names,
          '--port',
          '443',
          '--clients',
          '1',
          '--seconds',
          '1',
          '--pause-ms',
          '200',
        ],
        30_000,
      );
      const load = JSON.parse(stdout.trim().split('\n').pop()!) as {
        dnsOk: number;
        connectOk: number;
        connectFailed: number;
        failures: unknown[];
      };
      assert.ok(load.dnsOk >= 1 && load.connectOk >= 1, `resolved and connected (${stdout.trim()})`);
      assert.equal(
        load.connectFailed,
        0,
        `the first connection right after the answer passed (${JSON.stringify(load.failures)})`,
      );
      assert.ok(
        box.maps((dp) => dp.maps.counters.get(identity)?.learned ?? 0n) > learnedBefore,
        'the new inline learner wrote it (rebuilt fqe_policy, keyed hash)',
      );

      // Reverse safety: the new agent again on the upgraded pins finds nothing to migrate.
      assert.equal(await box.stopAgent('SIGTERM'), 0);
      const againFrom = box.logs.length;
      await box.startAgent(agentArgs, { readyTimeoutMs: READY_TIMEOUT_MS });
      const again = logLines(box, againFrom);
      assert.deepEqual(
        again.filter((l) => /^pinned map had/.test(l.msg ?? '')).map((l) => l.map),
        [],
        'a second start finds nothing to migrate',
      );
      assert.ok(again.some((l) => l.msg === 'datapath loaded; state restored from the maps'));
      await sleep(1000); // a tick of the agent (expiry, kernel import, flush)
      assert.deepEqual(
        hostEntries(allowEntries(pinDir)),
        [...before, `${identity} ${FRESH.ip}`].sort(),
        'every allowed IP kept across the second restart',
      );
      for (const ip of [...allowedIps, GAP.ip, FRESH.ip])
        assert.equal(await box.connect('payments', ip), true, `after a second restart: ${ip} connects`);
      assert.equal(await box.connect('payments', REFUSED, 443, 500), false, 'after a second restart: still refused');
    },
  );
});

/**
 * The previous main: map ABI 2, tcx where the kernel has it; learned records;
 * its programs looped with bpf_loop (5.17+), had no tail calls, and the TLS
 * check kept hashes of the segments it took, not their bytes.
 */
const PREVIOUS_MAIN = 'd56e3f9';

test('a rollout from the previous main (ABI 2, no tail calls) keeps held connections and every allowed IP; the new maps come up beside the old pins and nothing is migrated', async (t) => {
  if (!requireKernelTestEnv(t, TOOLS)) return;
  let previous: Release;
  try {
    previous = await previousRelease(PREVIOUS_MAIN);
  } catch (err) {
    if (!(err instanceof ReleaseUnavailable) || process.env.CI === 'true') throw err;
    t.skip(err.message);
    return;
  }
  await withAgentBox(t, [{ name: 'payments' }], { dnsmasqArgs: ['--local-ttl=600'] }, async (box) => {
    const pod = box.topo.pod('payments');
    const pinDir = box.topo.pinDir;
    box.writePods([{ name: 'payments', allow: ALLOW }]);
    await box.startAgent([], { main: previous.agentMain, readyTimeoutMs: READY_TIMEOUT_MS });
    assert.deepEqual(await box.dig('payments', 'api.stripe.test'), ['203.0.113.10']);
    assert.deepEqual(await box.dig('payments', 'www.kadath.test'), ['203.0.113.11']);
    for (const ip of ['203.0.113.10', '203.0.113.11'])
      assert.equal(await box.connect('payments', ip), true, `before: ${ip}`);
    const identity = identityOf(pinDir, pod.ifindex);
    const before = hostEntries(allowEntries(pinDir));
    assert.deepEqual(before, [`${identity} 203.0.113.10`, `${identity} 203.0.113.11`]);
    assert.equal(existsSync(join(pinDir, 'fqe_enforcer_tails')), false, 'the previous main has no tail calls');
    const held = await Promise.all([
      hold(t, box, 'tcp', '203.0.113.10', 443),
      hold(t, box, 'udp', '203.0.113.11', 5000),
    ]);
    await sleep(500);

    assert.equal(await box.stopAgent('SIGTERM'), 0, 'the previous agent exits 0 on SIGTERM');
    const from = box.logs.length;
    await box.startAgent([], { readyTimeoutMs: READY_TIMEOUT_MS });
    const readyAt = Date.now();
    const lines = logLines(box, from);
    assert.deepEqual(
      lines.filter((l) => /^pinned map had/.test(l.msg ?? '')).map((l) => l.map),
      [],
      'no layout changed: nothing to migrate',
    );
    assert.deepEqual(
      lines.filter((l) => (l.level ?? 0) >= 50).map((l) => l.msg),
      [],
      'no error logged',
    );
    for (const map of ['fqe_enforcer_tails', 'fqe_learner_tails', 'fqe_tls_bytes'])
      assert.ok(existsSync(join(pinDir, map)), `${map} pinned beside the old maps`);
    assert.equal(identityOf(pinDir, pod.ifindex), identity, 'the pod keeps its identity');
    const after = hostEntries(allowEntries(pinDir));
    for (const e of before) assert.ok(after.includes(e), `${e} still allowed (have ${after.join(', ')})`);
    for (const ip of ['203.0.113.10', '203.0.113.11'])
      assert.equal(await box.connect('payments', ip), true, `after: ${ip} without a new lookup`);
    assert.equal(await box.connect('payments', REFUSED, 443, 500), false, 'after: still refused');

    // A new name: learned inline, and reported to the new agent as a record.
    assert.deepEqual(await box.dig('payments', FRESH.name), [FRESH.ip]);
    assert.equal(await box.connect('payments', FRESH.ip), true);
    await box.waitFor(
      'the record of the new answer',
      async () => (await box.metric('fqdn_egress_kernel_records_total', { outcome: 'accepted' })) >= 1,
    );

    const results = await Promise.all(held.map((h) => h.stop()));
    results.forEach((r, i) => {
      assert.equal(r.ok, true, `held connection ${i} never lost an echo across the rollout (${JSON.stringify(r)})`);
      assert.ok(held[i]!.started + r.ms > readyAt, `held connection ${i} lasted until after the new agent was ready`);
    });
  });
});
