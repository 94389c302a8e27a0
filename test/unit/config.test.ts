/* Unit tests of the agent's flags and the endpoints file parser. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig, parseDuration, usage, FLAGS, ConfigError, type Config } from '../../agent/config.js';
import { parseEndpointsDocument, parseEndpointsFile, FileSource } from '../../agent/sources/file-source.js';
import type { PodSpec } from '../../agent/sources/pod.js';

const BASE = ['--source', 'file', '--endpoints-file', '/tmp/x.yaml', '--dns-servers', '192.0.2.2'];

test('durations take a unit or plain seconds', () => {
  const cases: Array<[string, number]> = [
    ['500ms', 500],
    ['30s', 30_000],
    ['5m', 300_000],
    ['1h', 3_600_000],
    ['2d', 172_800_000],
    ['30', 30_000],
    ['1.5', 1500],
    ['0', 0],
  ];
  for (const [text, ms] of cases) assert.equal(parseDuration(text, 'min-ttl'), ms, text);
  for (const bad of ['', '-1s', '5 minutes', 's', '1e3', '10w'])
    assert.throws(() => parseDuration(bad, 'min-ttl'), /--min-ttl: ".*" is not a duration/, bad);
});

test('flags have defaults, environment variables, and flags win over them', () => {
  const cfg = parseConfig(BASE, {}) as Config;
  assert.equal(cfg.bpfPinDir, '/sys/fs/bpf/fqdn-egress');
  assert.equal(cfg.minTtlMs, 30_000);
  assert.equal(cfg.maxIpsPerName, 1000);
  assert.equal(cfg.maxNamesPerPod, 4096);
  assert.equal((parseConfig(BASE, { FQDN_EGRESS_MAX_NAMES_PER_POD: '64' }) as Config).maxNamesPerPod, 64);
  assert.equal(cfg.attachMode, 'auto');
  assert.deepEqual(cfg.metricsAddress, { host: '0.0.0.0', port: 9464 });
  const env = {
    FQDN_EGRESS_MIN_TTL: '5s',
    FQDN_EGRESS_ALLOW_CIDRS: '192.0.2.0/24, 2001:db8::/32',
    FQDN_EGRESS_LOG_LEVEL: 'debug',
  };
  const fromEnv = parseConfig(BASE, env) as Config;
  assert.equal(fromEnv.minTtlMs, 5000);
  assert.equal(fromEnv.allowCidrs.length, 2);
  assert.equal(fromEnv.logLevel, 'debug');
  assert.equal((parseConfig([...BASE, '--min-ttl=1s'], env) as Config).minTtlMs, 1000);
  assert.equal((parseConfig(BASE, { FQDN_EGRESS_ATTACH_MODE: 'legacy' }) as Config).attachMode, 'legacy');
  assert.equal(
    (parseConfig([...BASE, '--attach-mode', 'tcx'], { FQDN_EGRESS_ATTACH_MODE: 'legacy' }) as Config).attachMode,
    'tcx',
  );
  assert.equal(cfg.dnsFilter, 'on', 'the DNS query filter is on by default');
  assert.equal(cfg.tcxHeadGuard, true, 'the tcx head guard is on by default');
  assert.equal((parseConfig(BASE, { FQDN_EGRESS_TCX_HEAD_GUARD: 'off' }) as Config).tcxHeadGuard, false);
  assert.deepEqual(cfg.clusterDomains, ['cluster.local']);
  const dnsFromEnv = parseConfig(BASE, {
    FQDN_EGRESS_DNS_FILTER: 'off',
    FQDN_EGRESS_CLUSTER_DOMAIN: 'Cluster.Local., corp.internal,cluster.local',
  }) as Config;
  assert.equal(dnsFromEnv.dnsFilter, 'off');
  assert.deepEqual(dnsFromEnv.clusterDomains, ['cluster.local', 'corp.internal'], 'normalized, duplicates merged');
  assert.equal(parseConfig(['--help'], {}), 'help');
  for (const name of Object.keys(FLAGS)) assert.ok(usage().includes(`--${name}`), `--help lists --${name}`);
});

test('bad flags are rejected with a message naming the flag', () => {
  const cases: Array<[string[], RegExp]> = [
    [['--bogus'], /unknown flag --bogus/],
    [['positional'], /unexpected argument "positional"/],
    [['--source', 'consul'], /--source: "consul" is not one of/],
    [['--source', 'file', '--dns-servers', '192.0.2.2'], /--endpoints-file is required/],
    [['--source', 'file', '--endpoints-file', 'x'], /--dns-servers is required/],
    [[...BASE, '--dns-servers', 'dns.google'], /--dns-servers: "dns.google" is not an IP address/],
    [[...BASE, '--min-ttl', '1h', '--max-ttl', '1m'], /--max-ttl \(1m\) is shorter than --min-ttl \(1h\)/],
    [[...BASE, '--max-ips-per-name', '0'], /--max-ips-per-name: "0" is not a positive whole number/],
    [[...BASE, '--max-names-per-pod', '0'], /--max-names-per-pod: "0" is not a positive whole number/],
    [[...BASE, '--allow-cidrs', '10.0.0.0/33'], /--allow-cidrs: invalid CIDR "10.0.0.0\/33"/],
    [[...BASE, '--metrics-address', 'nope'], /--metrics-address: "nope" is not HOST:PORT/],
    [[...BASE, '--log-level', 'loud'], /--log-level: "loud"/],
    [[...BASE, '--attach-mode', 'xdp'], /--attach-mode: "xdp" is not one of auto, tcx, legacy/],
    [[...BASE, '--min-ttl'], /--min-ttl needs a value/],
    [[...BASE, '--dns-filter', 'maybe'], /--dns-filter: "maybe" is not on or off/],
    [[...BASE, '--tcx-head-guard', 'true'], /--tcx-head-guard: "true" is not on or off/],
    [[...BASE, '--cluster-domain', '*.local'], /--cluster-domain "\*\.local": /],
    [[...BASE, '--cluster-domain', 'bad..local'], /--cluster-domain "bad\.\.local": /],
  ];
  for (const [argv, re] of cases)
    assert.throws(
      () => parseConfig(argv, {}),
      (e: Error) => e instanceof ConfigError && re.test(e.message),
      argv.join(' '),
    );
  assert.equal((parseConfig([...BASE, '--metrics-address', 'off'], {}) as Config).metricsAddress, undefined);
  assert.deepEqual((parseConfig([...BASE, '--metrics-address', '[::1]:9000'], {}) as Config).metricsAddress, {
    host: '::1',
    port: 9000,
  });
});

test('the endpoints file accepts YAML and JSON as in docs/operations.md', () => {
  const yaml = `pods:
  - namespace: shop
    name: payments-7d9f
    ips: [198.18.1.2, "2001:db8:1::2"]
    interface: veth-pay
    annotations:
      fqdn-egress.io/allow: "api.stripe.com:443, *.kadath.io"
`;
  const pods = parseEndpointsFile(yaml, 'f.yaml');
  assert.deepEqual(pods, [
    {
      namespace: 'shop',
      name: 'payments-7d9f',
      ips: ['198.18.1.2', '2001:db8:1::2'],
      interface: 'veth-pay',
      annotations: { 'fqdn-egress.io/allow': 'api.stripe.com:443, *.kadath.io' },
    },
  ]);
  assert.deepEqual(
    parseEndpointsFile(JSON.stringify({ pods: [{ namespace: 'a', name: 'b', ips: ['198.18.1.3'] }] }), 'f.json'),
    [{ namespace: 'a', name: 'b', ips: ['198.18.1.3'], annotations: {} }],
  );
  assert.deepEqual(parseEndpointsFile('', 'f'), []);
  assert.deepEqual(parseEndpointsFile('pods: []', 'f'), []);
});

test('the endpoints file may hold pod labels, namespace labels and policy resources', () => {
  const yaml = `pods:
  - {namespace: shop, name: pay, ips: [198.18.1.2], labels: {app: pay}}
namespaces:
  shop: {team: a}
policies:
  - kind: FQDNEgressPolicy
    metadata: {name: stripe, namespace: shop}
    spec: {podSelector: {matchLabels: {app: pay}}, egress: [{names: [api.stripe.com]}]}
  - kind: ClusterFQDNEgressPolicy
    metadata: {name: baseline}
    spec: {podSelector: {}, egress: [{names: ["*.internal"]}]}
`;
  const doc = parseEndpointsDocument(yaml, 'f.yaml');
  assert.deepEqual(doc.pods[0]!.labels, { app: 'pay' });
  assert.deepEqual(doc.policies.namespaces, { shop: { team: 'a' } });
  assert.equal(doc.policies.namespaced.length, 1);
  assert.equal(doc.policies.cluster.length, 1);
  assert.deepEqual(parseEndpointsDocument('pods: []', 'f').policies, { namespaced: [], cluster: [], namespaces: {} });
});

test('the endpoints file rejects bad input with the place and the reason', () => {
  const cases: Array<[string, RegExp]> = [
    ['pods: [ {namespace: shop', /f: not valid YAML or JSON/],
    ['- a\n- b\n', /top level: expected a mapping/],
    ['pods: 7', /pods: expected a list/],
    ['pod: []', /unknown key "pod"/],
    ['pods: [7]', /pods\[0\]: expected a mapping/],
    ['pods: [{name: b, ips: [198.18.1.2]}]', /pods\[0\]: "namespace" must be a non-empty string/],
    ['pods: [{namespace: a, name: b}]', /pods\[0\] \(a\/b\): "ips" must be a non-empty list/],
    ['pods: [{namespace: a, name: b, ips: [1.2.3]}]', /"1.2.3" is not an IP address/],
    [
      'pods: [{namespace: a, name: b, ips: [198.18.1.2], interface: "this-name-is-too-long"}]',
      /"interface" must be an interface name/,
    ],
    ['pods: [{namespace: a, name: b, ips: [198.18.1.2], annotations: {x: 1}}]', /annotation "x" must be a string/],
    [
      'pods: [{namespace: a, name: b, ips: [198.18.1.2]}, {namespace: a, name: b, ips: [198.18.1.3]}]',
      /pods\[1\] \(a\/b\): listed twice/,
    ],
    ['pods: [{namespace: a, name: b, ips: [198.18.1.2], extra: 1}]', /unknown key "extra"/],
    ['pods: [{namespace: a, name: b, ips: [198.18.1.2], labels: {app: 1}}]', /labels: "app" must be a string/],
    ['namespaces: [a]', /namespaces: expected a mapping of namespace name to labels/],
    ['namespaces: {shop: {team: [a]}}', /namespaces\.shop: "team" must be a string/],
    ['policies: {}', /policies: expected a list/],
    ['policies: [{kind: NetworkPolicy, metadata: {name: a}}]', /policies\[0\]: "kind" must be FQDNEgressPolicy/],
    [
      'policies: [{kind: FQDNEgressPolicy, metadata: {name: a}}]',
      /policies\[0\]: a FQDNEgressPolicy needs metadata\.namespace/,
    ],
    ['policies: [{kind: ClusterFQDNEgressPolicy}]', /policies\[0\]: needs metadata\.name/],
    [
      'policies: [{kind: ClusterFQDNEgressPolicy, metadata: {name: a}}, {kind: ClusterFQDNEgressPolicy, metadata: {name: a}}]',
      /policies\[1\]: listed twice/,
    ],
  ];
  for (const [text, re] of cases) assert.throws(() => parseEndpointsFile(text, 'f'), re, text);
});

test('the file source applies changes and keeps the last good state on bad input', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fqe-file-'));
  const path = join(dir, 'pods.yaml');
  try {
    writeFileSync(path, 'pods: [{namespace: a, name: b, ips: [198.18.1.2]}]');
    const snapshots: PodSpec[][] = [];
    const errors: string[] = [];
    const src = new FileSource({
      path,
      pollMs: 20,
      onPods: (p) => snapshots.push(p),
      onError: (e) => errors.push(e.message),
    });
    src.start();
    try {
      assert.equal(snapshots.length, 1);
      writeFileSync(path, 'pods: [{namespace: a, name: b, ips: [nope]}]');
      for (let i = 0; i < 100 && errors.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
      assert.match(errors[0] ?? '', /"nope" is not an IP address \(keeping the last good state\)/);
      assert.equal(src.snapshot?.[0]?.ips[0], '198.18.1.2');
      writeFileSync(path, 'pods: [{namespace: a, name: c, ips: [198.18.1.3]}]\n');
      for (let i = 0; i < 100 && snapshots.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
      assert.equal(snapshots[1]?.[0]?.name, 'c');
      rmSync(path);
      for (let i = 0; i < 100 && errors.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
      assert.match(errors[1] ?? '', /cannot read/);
      assert.equal(src.snapshot?.[0]?.name, 'c', 'a deleted file keeps the last good state');
    } finally {
      src.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
