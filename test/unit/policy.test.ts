/*
 * Policy: name patterns, the opt-in annotations and the name hash. Pure
 * modules, no kernel needed. Table-driven accept/reject cases; the name hash
 * is checked against test/fixtures/name-hash-vectors.json, which the C
 * implementation is checked against too.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { MAX_PORT_RULES } from '../../agent/datapath/codecs.js';
import {
  normalizeName,
  parsePattern,
  matchesPattern,
  patternToString,
  NameError,
  type NamePattern,
} from '../../agent/policy/pattern.js';
import {
  parsePodPolicy,
  rulesForName,
  ALLOW_ANNOTATION,
  MODE_ANNOTATION,
  type PortRule,
} from '../../agent/policy/annotation.js';
import { POLICY_LIMITS } from '../helpers/policy-limits.js';
import {
  nameHash,
  suffixHashes,
  wildcardHash,
  nameToWire,
  hashOrderBytes,
  FNV64_OFFSET_BASIS,
  FNV64_PRIME,
} from '../../agent/policy/name-hash.js';
import { dnsFilterFor, parseClusterDomains, clusterDomainEntries } from '../../agent/policy/dns-query-filter.js';
import { escapeWireName, qtypeName } from '../../agent/dns/presentation.js';

const label63 = 'x'.repeat(63);
const label64 = 'x'.repeat(64);
// 4 labels of 63 + 61 characters: 63*3 + 61 + 3 dots = 253.
const name253 = `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(61)}`;
const name254 = `${name253}d`;

test('name lengths used below are what they claim', () => {
  assert.equal(name253.length, 253);
  assert.equal(name254.length, 254);
});

test('parsePattern accepts valid names and wildcards, normalized', () => {
  const cases: [string, NamePattern][] = [
    ['api.stripe.com', { kind: 'exact', name: 'api.stripe.com' }],
    ['API.Stripe.COM', { kind: 'exact', name: 'api.stripe.com' }],
    ['api.stripe.com.', { kind: 'exact', name: 'api.stripe.com' }],
    ['localhost', { kind: 'exact', name: 'localhost' }],
    ['_sip._tcp.example.org', { kind: 'exact', name: '_sip._tcp.example.org' }],
    ['a-1.b2-c.xn--bcher-kva.example', { kind: 'exact', name: 'a-1.b2-c.xn--bcher-kva.example' }],
    ['1.2.3.example.com', { kind: 'exact', name: '1.2.3.example.com' }],
    [`${label63}.com`, { kind: 'exact', name: `${label63}.com` }],
    [name253, { kind: 'exact', name: name253 }],
    [`${name253}.`, { kind: 'exact', name: name253 }],
    ['*.example.com', { kind: 'wildcard', suffix: 'example.com' }],
    ['*.Example.COM.', { kind: 'wildcard', suffix: 'example.com' }],
    ['*.com', { kind: 'wildcard', suffix: 'com' }],
  ];
  for (const [text, want] of cases) {
    assert.deepEqual(parsePattern(text), want, text);
  }
});

test('parsePattern rejects invalid names and wildcards with a reason', () => {
  const cases: [string, RegExp][] = [
    ['', /empty/],
    ['.', /root/],
    ['*', /lone "\*"/],
    ['*.', /wildcard needs a name after "\*\."/],
    ['*..', /wildcard needs a name/],
    ['a*.b', /"\*" is only allowed/],
    ['*a.b', /"\*" is only allowed/],
    ['**.b', /"\*" is only allowed/],
    ['*.*.b', /"\*" is only allowed/],
    ['a.*.b', /"\*" is only allowed/],
    ['-a.b', /starts with "-"/],
    ['a-.b', /ends with "-"/],
    ['*.-a.b', /starts with "-"/],
    ['a..b', /empty label/],
    ['.a.b', /starts with "\."/],
    ['a.b..', /more than one "\."/],
    [`${label64}.com`, /64 characters long, at most 63/],
    [name254, /254 characters long, at most 253/],
    [`*.${name253}`, /no name of at most 253 fits/],
    ['1.2.3.4', /IPv4 address is not a name.*allowCIDRs/],
    ['1.2.3.4.', /IPv4 address/],
    ['10.0.0.0/8', /IPv4 address/],
    ['2001:db8::1', /IPv6 address is not a name/],
    ['example.123', /all digits/],
    ['exa mple.com', /character " " is not allowed/],
    ['ex!ample.com', /character "!" is not allowed/],
    ['bücher.example', /character "ü" is not allowed/],
    ['^api\\.example\\.com$', /not allowed/],
    ['api.example.com/x', /character "\/" is not allowed/],
  ];
  for (const [text, reason] of cases) {
    assert.throws(
      () => parsePattern(text),
      (err: unknown) => err instanceof NameError && reason.test(err.reason) && err.message.includes(`"${text}"`),
      `${JSON.stringify(text)} should be rejected with ${reason}`,
    );
  }
});

test('normalizeName lower-cases ASCII and drops one trailing dot', () => {
  assert.equal(normalizeName('WWW.Example.COM.'), 'www.example.com');
  assert.equal(normalizeName('localhost'), 'localhost');
  assert.throws(() => normalizeName('*.example.com'), NameError);
});

test('matchesPattern: exact and wildcard (one or more labels, never the suffix itself)', () => {
  const exact = parsePattern('api.example.com');
  const wild = parsePattern('*.example.com');
  const cases: [NamePattern, string, boolean][] = [
    [exact, 'api.example.com', true],
    [exact, 'API.Example.Com.', true],
    [exact, 'x.api.example.com', false],
    [exact, 'example.com', false],
    [wild, 'a.example.com', true],
    [wild, 'a.b.example.com', true],
    [wild, 'A.Example.COM.', true],
    [wild, 'example.com', false],
    [wild, 'badexample.com', false],
    [wild, '.example.com', false],
    [wild, 'a..example.com', false],
    [wild, 'example.com.evil.net', false],
    [wild, 'not valid!.example.com', false],
    [wild, '', false],
  ];
  for (const [pattern, name, want] of cases) {
    assert.equal(matchesPattern(pattern, name), want, `${patternToString(pattern)} vs ${JSON.stringify(name)}`);
  }
});

test('patternToString is the canonical text and parses back', () => {
  for (const text of ['api.stripe.com', '*.example.com', 'localhost']) {
    assert.equal(patternToString(parsePattern(text)), text);
  }
  assert.equal(patternToString(parsePattern('*.EXAMPLE.com.')), '*.example.com');
});

function allow(value: string, mode?: string) {
  const annotations: Record<string, string> = { [ALLOW_ANNOTATION]: value };
  if (mode !== undefined) annotations[MODE_ANNOTATION] = mode;
  return parsePodPolicy(annotations, POLICY_LIMITS);
}

/** Rules as compact text: "name" or "name:443/tcp,80" for easy tables. */
function rulesText(value: string): string[] {
  return allow(value).rules.map((r) => {
    const ports = r.ports.map((p) => (p.proto === 'any' ? `${p.port}` : `${p.port}/${p.proto}`)).join(',');
    return ports === '' ? patternToString(r.pattern) : `${patternToString(r.pattern)}:${ports}`;
  });
}

test('allow annotation: accepted values', () => {
  const cases: [string, string[]][] = [
    ['', []],
    ['  , ,\n\t', []],
    ['api.stripe.com', ['api.stripe.com']],
    ['a.com,b.com  c.com,\n d.com', ['a.com', 'b.com', 'c.com', 'd.com']],
    ['API.Stripe.COM.', ['api.stripe.com']],
    ['*.example.com', ['*.example.com']],
    ['api.stripe.com:443', ['api.stripe.com:443']],
    ['a.com:1', ['a.com:1']],
    ['a.com:65535', ['a.com:65535']],
    ['a.com:443/TCP', ['a.com:443/tcp']],
    ['a.com:53/udp', ['a.com:53/udp']],
    // duplicates and case variants merge
    ['a.com a.com A.COM. a.com', ['a.com']],
    ['a.com:443 a.com:443', ['a.com:443']],
    // any entry without a port makes the pattern allow any port
    ['a.com:443 a.com a.com:80', ['a.com']],
    // tcp + udp of one port become both; a narrower rule under a wider one vanishes
    ['a.com:53/tcp a.com:53/udp', ['a.com:53']],
    ['a.com:53 a.com:53/tcp', ['a.com:53']],
    ['a.com:53/udp a.com:53', ['a.com:53']],
    ['a.com:8080 a.com:443/tcp a.com:80', ['a.com:80,443/tcp,8080']],
    // the exact name and the wildcard are different patterns
    ['example.com *.example.com:443', ['example.com', '*.example.com:443']],
    // tls: TCP with the server name check; TCP without the check (tcp or both) wins
    ['api.stripe.com:443/tls', ['api.stripe.com:443/tls']],
    ['a.com:443/TLS', ['a.com:443/tls']],
    ['a.com:443/tls a.com:443/tcp', ['a.com:443/tcp']],
    ['a.com:443/tcp a.com:443/tls', ['a.com:443/tcp']],
    ['a.com:443/tls a.com:443', ['a.com:443']],
    ['a.com:443/tls a.com:443/udp', ['a.com:443/udp,443/tls']],
    ['a.com:443/tls a.com:443/udp a.com:443/tcp', ['a.com:443']],
    ['a.com:443/tls a.com:443/tls', ['a.com:443/tls']],
  ];
  for (const [value, want] of cases) {
    const policy = allow(value);
    assert.deepEqual(policy.errors, [], JSON.stringify(value));
    assert.equal(policy.enforced, true);
    assert.deepEqual(rulesText(value), want, JSON.stringify(value));
  }
});

test('allow annotation: rejected entries name the entry and the reason; valid ones still apply', () => {
  const cases: [string, RegExp][] = [
    ['*', /lone "\*"/],
    ['*.', /wildcard needs a name after "\*\."/],
    ['a*.b', /only allowed/],
    ['*.*.b', /only allowed/],
    ['-a.b', /starts with "-"/],
    ['a-.b', /ends with "-"/],
    [`${label64}.com`, /at most 63/],
    [name254, /at most 253/],
    ['1.2.3.4', /IPv4 address.*allowCIDRs/],
    ['1.2.3.4:443', /IPv4 address/],
    ['10.0.0.0/8', /IPv4 address/],
    ['2001:db8::1', /IPv6 address/],
    ['[2001:db8::1]:443', /IPv6 address/],
    ['a.com:0', /port 0 is out of range 1\.\.65535/],
    ['a.com:65536', /port 65536 is out of range/],
    ['a.com:+443', /not a decimal number/],
    ['a.com:-1', /not a decimal number/],
    ['a.com:0443', /leading zero/],
    ['a.com:abc', /port "abc" is not a decimal number/],
    ['a.com:', /port is empty/],
    [':443', /name is empty/],
    ['a.com:443/sctp', /unknown protocol "sctp"/],
    ['a.com:443/', /protocol is empty/],
    ['a.com:443/tcp/udp', /unknown protocol/],
    ['a.com/tcp', /protocol needs a port/],
    ['a.com:443:80', /more than one ":"/],
  ];
  for (const [entry, reason] of cases) {
    const policy = allow(`ok.example.com ${entry}`);
    assert.equal(policy.errors.length, 1, `${entry}: ${JSON.stringify(policy.errors)}`);
    const [error] = policy.errors;
    assert.equal(error!.entry, entry);
    assert.equal(error!.annotation, ALLOW_ANNOTATION);
    assert.ok(error!.message.startsWith(`invalid entry "${entry}": `), error!.message);
    assert.match(error!.message, reason, entry);
    assert.deepEqual(
      policy.rules,
      [{ pattern: { kind: 'exact', name: 'ok.example.com' }, ports: [], from: ['annotation'] }],
      entry,
    );
  }
  assert.deepEqual(allow('*.').errors, [
    { annotation: ALLOW_ANNOTATION, entry: '*.', message: 'invalid entry "*.": wildcard needs a name after "*."' },
  ]);
});

test(`allow annotation: at most ${MAX_PORT_RULES} port rules per pattern, the rest fail closed`, () => {
  const entries = Array.from({ length: MAX_PORT_RULES + 2 }, (_, i) => `a.com:${1000 + i}`);
  const policy = allow([...entries, 'a.com:1000/tcp', 'b.com:1'].join(','));
  assert.deepEqual(
    policy.rules[0]!.ports.map((p) => p.port),
    Array.from({ length: MAX_PORT_RULES }, (_, i) => 1000 + i),
  );
  assert.deepEqual(
    policy.errors.map((e) => e.entry),
    entries.slice(MAX_PORT_RULES),
  );
  assert.match(policy.errors[0]!.message, /already has 8 port rules.*allows nothing/);
  assert.deepEqual(rulesForName(policy, 'a.com'), { allowed: true, ports: policy.rules[0]!.ports });
  assert.deepEqual(policy.rules[1], {
    pattern: { kind: 'exact', name: 'b.com' },
    ports: [{ port: 1, proto: 'any' }],
    from: ['annotation'],
  });
  // With an any-port entry the limit does not matter.
  assert.deepEqual(allow([...entries, 'a.com'].join(' ')).errors, []);
});

test('pod policy: absent annotations, enforcement and mode', () => {
  assert.deepEqual(parsePodPolicy(undefined, POLICY_LIMITS), {
    enforced: false,
    mode: 'enforce',
    rules: [],
    errors: [],
    origins: [],
  });
  assert.deepEqual(parsePodPolicy({ other: 'x' }, POLICY_LIMITS), {
    enforced: false,
    mode: 'enforce',
    rules: [],
    errors: [],
    origins: [],
  });
  assert.deepEqual(parsePodPolicy({ [ALLOW_ANNOTATION]: '' }, POLICY_LIMITS), {
    enforced: true,
    mode: 'enforce',
    rules: [],
    errors: [],
    origins: ['annotation'],
  });

  const modes: [string | undefined, 'enforce' | 'audit', boolean][] = [
    [undefined, 'enforce', true],
    ['enforce', 'enforce', true],
    ['audit', 'audit', true],
    ['AUDIT', 'audit', true],
    ['  Audit \n', 'audit', true],
    ['Enforce', 'enforce', true],
    ['', 'enforce', false],
    ['off', 'enforce', false],
    ['audit,enforce', 'enforce', false],
    ['dry-run', 'enforce', false],
  ];
  for (const [value, want, valid] of modes) {
    const policy = allow('a.com', value);
    assert.equal(policy.mode, want, JSON.stringify(value));
    assert.equal(policy.errors.length, valid ? 0 : 1, JSON.stringify(value));
    if (!valid) {
      assert.equal(policy.errors[0]!.annotation, MODE_ANNOTATION);
      assert.equal(policy.errors[0]!.entry, value);
      assert.match(policy.errors[0]!.message, /expected "enforce" or "audit"; enforcing/);
    }
    assert.equal(policy.rules.length, 1);
  }
});

test('rulesForName: matching and the union of ports over every matching rule', () => {
  const policy = allow(
    'api.example.com:443/tcp *.example.com:80 *.example.com:443/udp a.example.com:8443 free.example.com *.free.example.com other.org',
  );
  const cases: [string, boolean, PortRule[]][] = [
    [
      'api.example.com',
      true,
      [
        { port: 80, proto: 'any' },
        { port: 443, proto: 'any' },
      ],
    ],
    [
      'API.example.com.',
      true,
      [
        { port: 80, proto: 'any' },
        { port: 443, proto: 'any' },
      ],
    ],
    [
      'a.example.com',
      true,
      [
        { port: 80, proto: 'any' },
        { port: 443, proto: 'udp' },
        { port: 8443, proto: 'any' },
      ],
    ],
    [
      'x.y.example.com',
      true,
      [
        { port: 80, proto: 'any' },
        { port: 443, proto: 'udp' },
      ],
    ],
    ['free.example.com', true, []],
    ['x.free.example.com', true, []],
    ['other.org', true, []],
    ['example.com', false, []],
    ['badexample.com', false, []],
    ['x.other.org', false, []],
    ['not a name', false, []],
  ];
  for (const [name, allowed, ports] of cases) {
    assert.deepEqual(rulesForName(policy, name), { allowed, ports }, name);
  }
  assert.deepEqual(rulesForName(parsePodPolicy(undefined, POLICY_LIMITS), 'a.com'), { allowed: false, ports: [] });
});

interface Vector {
  description: string;
  name: string;
  wire: string;
  labels: number;
  hash: string;
  suffixHashes: string[];
}

const hex = (h: bigint) => h.toString(16).padStart(16, '0');
const vectorsUrl = new URL('../../../test/fixtures/name-hash-vectors.json', import.meta.url);

test('name hash matches the shared vectors', () => {
  const file = JSON.parse(readFileSync(vectorsUrl, 'utf8')) as { vectors: Vector[] };
  assert.ok(file.vectors.length >= 10);
  const descriptions = file.vectors.map((v) => v.description).join('\n');
  for (const needed of ['upper case', 'trailing dot', '63-byte label', '127 labels', 'underscore', 'single label']) {
    assert.ok(descriptions.includes(needed), `vectors cover ${needed}`);
  }
  for (const v of file.vectors) {
    assert.equal(nameToWire(v.name).toString('hex'), v.wire, `${v.description}: wire`);
    assert.equal(hex(nameHash(v.name)), v.hash, `${v.description}: hash`);
    assert.deepEqual(suffixHashes(v.name).map(hex), v.suffixHashes, `${v.description}: suffix hashes`);
    assert.equal(v.suffixHashes.length, v.labels);
    assert.equal(v.suffixHashes[0], v.hash);
  }
});

test('name hash is FNV-1a 64 over the labels right to left', () => {
  // Published FNV-1a 64 vector: "a" → 0xaf63dc4c8601ec8c. Our "a" feeds 0x01 'a'.
  let h = FNV64_OFFSET_BASIS;
  for (const b of [0x61]) h = ((h ^ BigInt(b)) * FNV64_PRIME) & ((1n << 64n) - 1n);
  assert.equal(h, 0xaf63dc4c8601ec8cn);
  const fnv = (bytes: number[]) =>
    bytes.reduce((acc, b) => ((acc ^ BigInt(b)) * FNV64_PRIME) & ((1n << 64n) - 1n), FNV64_OFFSET_BASIS);
  assert.equal(nameHash('a'), fnv([1, 0x61]));
  assert.equal(nameHash('b.a'), fnv([1, 0x61, 1, 0x62]));
  assert.equal(
    nameHash('WWW.Ex.com'),
    fnv([3, ...Buffer.from('com'), 2, ...Buffer.from('ex'), 3, ...Buffer.from('www')]),
  );
});

test('name hash properties: case, trailing dot, suffixes, wildcards', () => {
  const names = [
    'localhost',
    'api.stripe.com',
    '_sip._tcp.Example.ORG',
    `${label63}.example.com`,
    `${'a.'.repeat(126)}b`,
    name253,
  ];
  for (const name of names) {
    assert.equal(nameHash(name.toUpperCase()), nameHash(name.toLowerCase()), name);
    assert.equal(nameHash(`${name}.`), nameHash(name), name);
    const labels = name.split('.');
    const suffixes = suffixHashes(name);
    assert.equal(suffixes.length, labels.length);
    labels.forEach((_, k) => assert.equal(suffixes[k], nameHash(labels.slice(k).join('.')), `${name} suffix ${k}`));
    for (const s of suffixes) assert.notEqual(s, 0n);
  }
  // *.example.com matches a name when a PROPER suffix of it hashes to the wildcard.
  const wild = wildcardHash('example.com');
  assert.equal(wild, nameHash('example.com'));
  assert.ok(suffixHashes('a.b.example.com').slice(1).includes(wild));
  assert.ok(!suffixHashes('example.com').slice(1).includes(wild));
  assert.ok(!suffixHashes('badexample.com').slice(1).includes(wild));
  assert.notEqual(nameHash('ab.c'), nameHash('a.bc'));
});

test('name hash rejects what is not a wire-format name', () => {
  for (const bad of ['', '.', 'a..b', '.a', `${label64}.com`, `${name253}.x`, 'ü.com', 'a b.com']) {
    assert.throws(() => nameHash(bad), /name hash/, JSON.stringify(bad));
  }
  assert.equal(nameToWire('Ab.c.').toString('hex'), '0261620163' + '00');
});

test('the DNS filter annotation: on, off, the agent default when absent, on (and a message) when misspelled', () => {
  const cases: Array<[Record<string, string>, 'on' | 'off', 'on' | 'off', boolean]> = [
    [{}, 'on', 'on', false],
    [{}, 'off', 'off', false],
    [{ 'fqdn-egress.io/dns-filter': 'off' }, 'on', 'off', false],
    [{ 'fqdn-egress.io/dns-filter': ' ON ' }, 'off', 'on', false],
    [{ 'fqdn-egress.io/dns-filter': 'false' }, 'off', 'on', true],
    [{ 'fqdn-egress.io/dns-filter': '' }, 'on', 'on', true],
  ];
  for (const [annotations, fallback, mode, problem] of cases) {
    const r = dnsFilterFor(annotations, fallback);
    assert.equal(r.mode, mode, JSON.stringify(annotations));
    assert.equal(r.problem !== null, problem, JSON.stringify(annotations));
  }
});

test('cluster domains reach the kernel as their keyed hash and real bytes', () => {
  assert.deepEqual(parseClusterDomains(['Cluster.Local.', 'cluster.local', 'corp.internal']), [
    'cluster.local',
    'corp.internal',
  ]);
  assert.throws(() => parseClusterDomains(['*.local']), /--cluster-domain "\*\.local"/);
  const [e] = clusterDomainEntries(['cluster.local'], 42n);
  assert.equal(e!.hash, wildcardHash('cluster.local', 42n));
  assert.deepEqual(e!.name, hashOrderBytes('cluster.local'));
});

test('refused names are shown escaped: dots and backslashes in labels, bytes outside printable ASCII', () => {
  const wire = (...labels: Buffer[]) => Buffer.concat(labels.flatMap((l) => [Buffer.from([l.length]), l]));
  assert.equal(escapeWireName(wire(Buffer.from('evil'), Buffer.from('example'))), 'evil.example');
  assert.equal(escapeWireName(wire(Buffer.from('a.b'), Buffer.from('c\\d'))), 'a\\.b.c\\\\d');
  assert.equal(escapeWireName(wire(Buffer.from([0x1b, 0x5b, 0x32, 0x4a]), Buffer.from(' x'))), '\\027[2J.\\032x');
  assert.equal(escapeWireName(Buffer.alloc(0)), '.');
  assert.equal(escapeWireName(Buffer.from([5, 0x61])), '\\?', 'a truncated label is not guessed at');
  assert.equal(qtypeName(16), 'TXT');
  assert.equal(qtypeName(4242), 'TYPE4242');
});
