/*
 * The kernel matrix's parsers and verdict (test/matrix/records.ts,
 * report.ts), on what the kernels and node's test runner really print.
 * Pure: no kernel, no VM (the matrix itself is `npm run test:kernels`).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  encodeRecord,
  parseExit,
  parseRecords,
  parseTap,
  parseVerifierStats,
  verifierError,
  type CniRecord,
  type CniRound,
  type DatapathRecord,
  type MatrixRecord,
  type ObjectRecord,
  type SuiteRecord,
} from '../matrix/records.js';
import { atLeast, buildReport, type KernelRun } from '../matrix/report.js';

test("the verifier's error is the block right above its statistics, without the trace or libbpf's lines", () => {
  const cases: [string, string, string[]][] = [
    [
      '5.10, log level 4',
      [
        'BPF_STX uses reserved fields',
        'processed 0 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0',
        "libbpf: prog 'fqe_learner': BPF program load failed: Invalid argument",
        "libbpf: prog 'fqe_learner': -- BEGIN PROG LOAD LOG --",
        'BPF_STX uses reserved fields',
        'processed 0 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0',
        '-- END PROG LOAD LOG --',
        "libbpf: prog 'fqe_learner': failed to load: -22",
      ].join('\n'),
      ['BPF_STX uses reserved fields'],
    ],
    [
      '6.1, with an instruction trace',
      [
        '; v->ports[v->nports & (FQE_MAX_PORT_RULES - 1)] = old->ports[i];',
        '2999: (61) r2 = *(u32 *)(r0 +52)      ; frame1: R0=map_value(off=0,ks=24,vs=56,imm=0) R2_w=scalar()',
        '3000: (63) *(u32 *)(r3 +24) = r2',
        'invalid variable-offset write to stack R3 var_off=(0x0; 0x3c) size=4',
        'processed 14030 insns (limit 1000000) max_states_per_insn 13 total_states 1116 peak_states 1056 mark_read 57',
      ].join('\n'),
      ['invalid variable-offset write to stack R3 var_off=(0x0; 0x3c) size=4'],
    ],
    [
      '6.1, log level 4: remarks on subprogram arguments before the verdict',
      [
        'reg type unsupported for arg#1 function fqe_qname_step#192',
        'invalid access to map value, value_size=4732 off=13 size=0',
        'R3 min value is outside of the allowed memory range',
        'processed 62390 insns (limit 1000000) max_states_per_insn 21 total_states 4162 peak_states 1836 mark_read 56',
      ].join('\n'),
      [
        'invalid access to map value, value_size=4732 off=13 size=0',
        'R3 min value is outside of the allowed memory range',
      ],
    ],
    [
      'refused by libbpf before the kernel',
      [
        "libbpf: prog 'fqe_x': failed to find kernel BTF type ID of 'foo': -3",
        "libbpf: prog 'fqe_x': failed to prepare load attributes: -3",
      ].join('\n'),
      ["prog 'fqe_x': failed to prepare load attributes: -3"],
    ],
  ];
  for (const [what, details, expected] of cases) assert.deepEqual(verifierError(details), expected, what);
  assert.deepEqual(verifierError(undefined), []);
});

test("the verifier's statistics are summed over an object's programs; the time is null where the kernel does not say", () => {
  const log =
    'verification time 1531 usec\nstack depth 176\nprocessed 695 insns (limit 1000000) max_states_per_insn 3\n' +
    'verification time 19 usec\nstack depth 0\nprocessed 2 insns (limit 1000000) max_states_per_insn 0\n';
  assert.deepEqual(parseVerifierStats(log), { insns: 697, verifyUs: 1550 });
  assert.deepEqual(parseVerifierStats('processed 14030 insns (limit 1000000)\n'), { insns: 14030, verifyUs: null });
  assert.deepEqual(parseVerifierStats(''), { insns: null, verifyUs: null });
});

test("node's TAP: passes, failures with their first error line, skips; tests left out by the name pattern are not counted", () => {
  const tap = [
    'TAP version 13',
    '# Subtest: a',
    'ok 1 - a',
    '  ---',
    '  duration_ms: 700.8',
    '  ...',
    '# Subtest: b',
    'not ok 2 - b',
    '  ---',
    '  duration_ms: 5.1',
    "  failureType: 'testCodeFailure'",
    '  error: |-',
    '    Expected values to be strictly equal:',
    '    ',
    '    1 !== 2',
    "  code: 'ERR_ASSERTION'",
    '  ...',
    'not ok 3 - c',
    '  ---',
    "  error: 'bpf_object__load(enforcer.bpf.o): Permission denied (EACCES)'",
    '  ...',
    'ok 4 - d # SKIP test name does not match pattern',
    'ok 5 - e # SKIP needs root',
    '1..5',
    '# tests 5',
    '# pass 1',
    '# fail 2',
  ].join('\n');
  assert.deepEqual(parseTap(tap), {
    pass: 1,
    fail: 2,
    skipped: 1,
    complete: true,
    failures: [
      { name: 'b', error: 'Expected values to be strictly equal:' },
      { name: 'c', error: 'bpf_object__load(enforcer.bpf.o): Permission denied (EACCES)' },
    ],
  });
  assert.equal(parseTap('TAP version 13\nok 1 - a\n').complete, false, 'cut short: no summary');
});

test('records survive the serial console: CR LF, boot noise, a line cut by the power-off', () => {
  const r: MatrixRecord = { type: 'done', ms: 12 };
  const log = `SeaBIOS\r\n\x1b[2J${encodeRecord(r)}\r\nFQE-MATRIX {"type":"suite","fi\r\nFQE-MATRIX-EXIT rc=0\r\n[ 9.8] reboot: Power down\r\n`;
  assert.deepEqual(parseRecords(log), [r]);
  assert.equal(parseExit(log), 0);
  assert.equal(parseExit('no marker'), null);
});

test('kernel releases compare by major and minor', () => {
  assert.ok(atLeast('6.12.117+deb13-cloud-amd64', '6.6'));
  assert.ok(atLeast('6.1.0-50-cloud-amd64', '5.17'));
  assert.ok(!atLeast('5.10.0-32-cloud-amd64', '5.11'));
  assert.ok(atLeast('5.11.0', '5.11'));
  assert.ok(!atLeast('6.1.0-50-cloud-amd64', '6.6'));
});

function run(
  name: string,
  release: string,
  objects: Partial<Record<string, string | null>>,
  more: MatrixRecord[] = [],
): KernelRun {
  const records: MatrixRecord[] = [{ type: 'kernel', release, node: 'v20', cpus: 1 }];
  for (const [file, error] of Object.entries(objects)) {
    const o: ObjectRecord = { type: 'object', file, loaded: error === null, ms: 1, insns: 10, verifyUs: null };
    if (error) Object.assign(o, { error: 'Invalid argument (EINVAL)', verifierError: [error] });
    records.push(o);
  }
  records.push(...more, { type: 'done', ms: 1 });
  return { name, release, packageVersion: null, where: 'vm', elapsedMs: 1000, timedOut: false, exitCode: 0, records };
}

const LOADED: DatapathRecord = {
  type: 'datapath',
  loaded: true,
  ms: 1,
  enforcer: 'enforcer.bpf.o',
  learner: 'learner.bpf.o',
  inlineLearnerUnavailable: null,
  enforcerOnPreciseClock: null,
  tlsCheckUnavailable: null,
  dnsQueryFilterUnavailable: null,
};
/** The CNI probe's two rounds, all well, the first attached as `mode`. */
function cni(mode: 'tcx' | 'legacy'): CniRecord {
  const ok = { ok: true };
  const round = (agentAttach: CniRound['agentAttach'], decision: CniRound['decision']): CniRound => ({
    agentAttach,
    decision,
    mode: agentAttach === 'legacy' ? 'legacy' : mode,
    add: ok,
    check: ok,
    del: ok,
    problems: [],
  });
  return { type: 'cni', rounds: [round('unset', 'enforce'), round('legacy', 'pending')] };
}

const SUITE: SuiteRecord = {
  type: 'suite',
  file: 'tls-check.test.js',
  patterns: [],
  pass: 10,
  fail: 0,
  skipped: 0,
  ms: 1,
  failures: [],
};

test('the verdict: an object fails where it must load, not where its feature is missing; tcx where the kernel has it', () => {
  const old = run(
    'bullseye',
    '5.10.0-32-cloud-amd64',
    {
      'enforcer.bpf.o': 'unknown func bpf_ktime_get_coarse_ns#160',
      'enforcer_precise_clock.bpf.o': null,
      'learner.bpf.o': null,
      'learner_ct_only.bpf.o': null,
    },
    [
      { ...LOADED, enforcer: 'enforcer_precise_clock.bpf.o', enforcerOnPreciseClock: 'y' },
      {
        type: 'attach',
        tcx: { ok: false, error: 'EINVAL' },
        legacy: { ok: true },
        datapath: { ok: true, mode: 'legacy' },
      },
      cni('legacy'),
      SUITE,
    ],
  );
  const ok = buildReport([old]);
  assert.deepEqual(ok.problems, [], 'the fallbacks load: nothing required is missing on 5.10');
  assert.equal(ok.notes.length, 1, 'the refused coarse-clock enforcer is noted');
  assert.match(
    ok.markdown,
    /\| bullseye 5\.10\.0-32-cloud-amd64 \| enforcer_precise_clock\.bpf\.o \| learner\.bpf\.o \| yes \| yes \| tcx ✗ legacy ✓ \(uses legacy\) \| legacy \| 10 \| 10 \| 10\/10 \| 1 s \|/,
    'the instructions of the variant that loaded',
  );
  const noLearner = buildReport([
    run('bullseye', '5.10.0-32-cloud-amd64', { 'learner.bpf.o': 'processed 1000001 insns' }, [
      LOADED,
      cni('legacy'),
      SUITE,
    ]),
  ]);
  assert.match(
    noLearner.problems.join('\n'),
    /learner\.bpf\.o does not load/,
    'the inline learner must load on 5.10 too',
  );

  const bad = buildReport([
    run(
      'bookworm',
      '6.1.0-50-cloud-amd64',
      { 'enforcer.bpf.o': 'R3 min value is outside of the allowed memory range' },
      [
        { ...LOADED, loaded: false, enforcer: null, learner: null, error: 'Permission denied' },
        {
          type: 'attach',
          tcx: { ok: false, error: 'EINVAL' },
          legacy: { ok: true },
          datapath: { ok: false, error: 'the datapath did not load', mode: null },
        },
        { ...SUITE, notRun: 'the datapath did not load', pass: 0 },
      ],
    ),
  ]);
  assert.deepEqual(bad.problems, [
    'bookworm 6.1.0-50-cloud-amd64: enforcer.bpf.o does not load: Invalid argument (EINVAL): R3 min value is outside of the allowed memory range',
    'bookworm 6.1.0-50-cloud-amd64: the datapath does not load (Datapath.load): Permission denied',
    'bookworm 6.1.0-50-cloud-amd64: tls-check.test.js not run: the datapath did not load',
  ]);

  const noTcx = buildReport([
    run('trixie', '6.12.117+deb13-cloud-amd64', { 'enforcer.bpf.o': null }, [
      LOADED,
      {
        type: 'attach',
        tcx: { ok: false, error: 'EINVAL' },
        legacy: { ok: true },
        datapath: { ok: true, mode: 'legacy' },
      },
      cni('tcx'),
      SUITE,
    ]),
  ]);
  assert.deepEqual(
    noTcx.problems.map((p) => p.replace(/^trixie \S+: /, '')),
    ['tcx attach fails: EINVAL', 'Datapath.attach chose legacy, expected tcx'],
  );

  const cut = run('trixie', '6.12.117+deb13-cloud-amd64', {});
  cut.records = cut.records.filter((r) => r.type === 'kernel');
  cut.timedOut = true;
  assert.match(buildReport([cut]).problems[0]!, /killed at the timeout/);
});

const TRIXIE = '6.12.117+deb13-cloud-amd64';

/** A kernel's report with the attach probe as that kernel gives it, and this CNI record (or none). */
function withCni(release: string, c: CniRecord | null) {
  const tcx = atLeast(release, '6.6');
  const attach: MatrixRecord = {
    type: 'attach',
    tcx: tcx ? { ok: true } : { ok: false, error: 'EINVAL' },
    legacy: { ok: true },
    datapath: { ok: true, mode: tcx ? 'tcx' : 'legacy' },
  };
  const name = tcx ? 'trixie' : 'bullseye';
  return buildReport([run(name, release, { 'learner.bpf.o': null }, [LOADED, attach, ...(c ? [c] : []), SUITE])]);
}

/** The "CNI plugin" cell of the table's only row. */
function cniCell(markdown: string): string | undefined {
  return /\| (?:bullseye|trixie) \S+ \|(?:[^|\n]*\|){5} ([^|\n]*) \|/.exec(markdown)?.[1];
}

test('the CNI probe passes with tcx where the kernel has it, legacy before 6.6; the column says which', () => {
  const tcx = withCni(TRIXIE, cni('tcx'));
  assert.deepEqual(tcx.problems, []);
  assert.equal(cniCell(tcx.markdown), 'tcx (legacy when told)');
  const legacy = withCni('5.10.0-32-cloud-amd64', cni('legacy'));
  assert.deepEqual(legacy.problems, []);
  assert.equal(cniCell(legacy.markdown), 'legacy');
});

test('the CNI probe fails the matrix: a missing record, a failed call, a check, the wrong attach mode; not where the datapath did not load', () => {
  const cases: [string, string, CniRecord | null, RegExp[]][] = [
    ['no record', TRIXIE, null, [/CNI plugin: no record$/]],
    [
      'the probe could not run',
      TRIXIE,
      { type: 'cni', rounds: [], error: 'no plugin at /app/build/fqdn-egress-cni' },
      [/CNI plugin: no plugin at/],
    ],
    ['legacy where tcx is', TRIXIE, cni('legacy'), [/agent's attach state unset: ADD attached legacy, expected tcx$/]],
    ['tcx before 6.6', '5.10.0-32-cloud-amd64', cni('tcx'), [/ADD attached tcx, expected legacy$/]],
  ];
  const failedAdd = cni('tcx');
  failedAdd.rounds[0] = {
    ...failedAdd.rounds[0]!,
    mode: null,
    add: { ok: false, error: 'ADD: exit 11: {"code":11,"msg":"tcx link on ifindex 1"}' },
    check: { ok: false, error: 'not run' },
    del: { ok: false, error: 'not run' },
  };
  cases.push([
    'a failed ADD: its error only',
    TRIXIE,
    failedAdd,
    [/decision, agent's attach state unset: ADD: exit 11: /],
  ]);
  const leftBehind = cni('tcx');
  leftBehind.rounds[1] = {
    ...leftBehind.rounds[1]!,
    del: { ok: false, error: 'DEL: exit 999: permission' },
    problems: ['after DEL: fqe_endpoints[1] is still there'],
  };
  cases.push([
    'a failed DEL and what it left',
    TRIXIE,
    leftBehind,
    [
      /a pending claim, agent's attach state legacy: DEL: exit 999/,
      /legacy: after DEL: fqe_endpoints\[1\] is still there$/,
    ],
  ]);
  for (const [what, release, c, expected] of cases) {
    const r = withCni(release, c);
    assert.equal(r.ok, false, what);
    assert.equal(r.problems.length, expected.length, `${what}: ${r.problems.join('; ')}`);
    expected.forEach((re, i) => assert.match(r.problems[i]!, re, what));
    assert.equal(cniCell(r.markdown), c ? 'FAIL' : '—', what);
  }

  const noDatapath = buildReport([
    run('trixie', TRIXIE, {}, [
      { ...LOADED, loaded: false, error: 'EPERM' },
      { type: 'cni', rounds: [], error: 'the datapath did not load' },
    ]),
  ]);
  assert.match(noDatapath.problems.join('\n'), /the datapath does not load \(Datapath\.load\): EPERM/);
  assert.doesNotMatch(
    noDatapath.problems.join('\n'),
    /CNI plugin/,
    'no CNI line where the datapath did not load: that failure says it',
  );
});
