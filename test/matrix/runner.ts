/*
 * The kernel matrix's runner: what runs on each kernel, inside a VM (as the
 * VM's only job, from its /init) or directly on the host. It reports, as
 * FQE-MATRIX records on stdout (records.ts):
 *   1. every object of bpf/ loaded on its own, with the verifier's
 *      instruction count, its time, and its error when it refuses one;
 *   2. the datapath loaded the way the agent loads it (Datapath.load, with
 *      its fallbacks), and which variant of each program that gave;
 *   3. whether tcx and legacy tc attach work, and which one Datapath.attach
 *      picks, on the loopback of a network namespace of its own (the
 *      runner's own namespace, the host's included, is never touched);
 *   4. the CNI plugin's ADD, CHECK and DEL against that datapath, in another
 *      namespace of its own (cni-probe.ts);
 *   5. the kernel-level test suites that need no network namespace
 *      (BPF_PROG_TEST_RUN only), with CI=true and short fuzz runs.
 * It judges nothing: report.ts decides what must load where. Exit code 0
 * when it got to the end, whatever it found.
 *
 *   node dist/test/matrix/runner.js [--fuzz-runs N] [--test-timeout SECONDS] [--no-suites]
 */
import { spawn, execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { cpus, release } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Datapath, DEFAULT_BPF_DIR, TC_HANDLE, TC_PRIORITY } from '../../agent/datapath/datapath.js';
import { native, type BpfError } from '../../agent/datapath/native.js';
import { probeCni } from './cni-probe.js';
import {
  encodeRecord,
  parseTap,
  parseVerifierStats,
  verifierError,
  type AttachRecord,
  type DatapathRecord,
  type MatrixRecord,
  type ObjectRecord,
  type Probe,
  type SuiteRecord,
} from './records.js';

const TEST_DIR = join(dirname(fileURLToPath(import.meta.url)), '..');
/** build/fqdn-egress-cni of the repository (of /app in a VM) */
const CNI_PLUGIN = join(TEST_DIR, '..', '..', 'build', 'fqdn-egress-cni');
const PIN_ROOT = '/sys/fs/bpf';

/**
 * The suites that run through BPF_PROG_TEST_RUN alone. escape and flows
 * mostly need veth pairs and real servers: only their test-run tests are
 * picked, by name (a pattern that matches nothing fails the suite).
 */
const SUITES: readonly { file: string; patterns?: string[] }[] = [
  { file: 'kernel/inline-learner.test.js' },
  { file: 'kernel/dns-query-filter.test.js' },
  { file: 'kernel/tls-check.test.js' },
  { file: 'kernel/tcp-stream.test.js' },
  {
    file: 'e2e/escape.test.js',
    patterns: [
      '^a name-hash collision teaches the kernel nothing',
      '^a tracked flow is no way around the source check',
      '^a pod flooding its resolver cannot flush',
      '^a rule without a port allows TCP and UDP',
    ],
  },
  {
    file: 'e2e/flows.test.js',
    patterns: [
      '^BIG TCP: ',
      '^a closed TCP flow cannot be reopened',
      '^flows opened towards a pod count against a share of their own',
    ],
  },
];

/** Named as the tests name theirs (fqet-<pid in base 36>-...): scripts/sweep.sh removes what a killed run left. */
function ownPrefix(): string {
  return `fqet-${process.pid.toString(36)}-matrix`;
}

function emit(r: MatrixRecord): void {
  process.stdout.write(`${encodeRecord(r)}\n`);
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function loadEachObject(bpfDir: string, pinRoot: string): void {
  const files = readdirSync(bpfDir)
    .filter((f) => f.endsWith('.bpf.o'))
    .sort();
  for (const file of files) {
    const pinDir = join(pinRoot, `obj-${file.replace(/\.bpf\.o$/, '')}`);
    mkdirSync(pinDir, { recursive: true });
    const t0 = performance.now();
    let r: ObjectRecord;
    try {
      const obj = native.loadObject(join(bpfDir, file), pinDir, { verifierStats: true });
      const ms = Math.round(performance.now() - t0);
      native.closeObject(obj.id);
      r = { type: 'object', file, loaded: true, ms, ...parseVerifierStats(obj.verifierLog ?? '') };
    } catch (err) {
      const details = (err as BpfError).details;
      r = {
        type: 'object',
        file,
        loaded: false,
        ms: Math.round(performance.now() - t0),
        ...parseVerifierStats(details ?? ''),
        error: errorText(err),
        verifierError: verifierError(details),
      };
    }
    rmSync(pinDir, { recursive: true, force: true });
    emit(r);
  }
}

function loadDatapath(pinRoot: string): Datapath | null {
  const t0 = performance.now();
  try {
    const dp = Datapath.load(join(pinRoot, 'datapath'));
    emit({
      type: 'datapath',
      loaded: true,
      ms: Math.round(performance.now() - t0),
      enforcer: dp.enforcerOnPreciseClock === null ? 'enforcer.bpf.o' : 'enforcer_precise_clock.bpf.o',
      learner: dp.inlineLearnerUnavailable === null ? 'learner.bpf.o' : 'learner_ct_only.bpf.o',
      inlineLearnerUnavailable: dp.inlineLearnerUnavailable,
      enforcerOnPreciseClock: dp.enforcerOnPreciseClock,
      tlsCheckUnavailable: dp.tlsCheckUnavailable,
      dnsQueryFilterUnavailable: dp.dnsQueryFilterUnavailable,
    });
    return dp;
  } catch (err) {
    const r: DatapathRecord = {
      type: 'datapath',
      loaded: false,
      ms: Math.round(performance.now() - t0),
      enforcer: null,
      learner: null,
      inlineLearnerUnavailable: null,
      enforcerOnPreciseClock: null,
      tlsCheckUnavailable: null,
      dnsQueryFilterUnavailable: null,
      error: [errorText(err), ...verifierError((err as BpfError).details)].join(': '),
    };
    emit(r);
    return null;
  }
}

function probe(fn: () => void): Probe {
  try {
    fn();
    return { ok: true };
  } catch (err) {
    return { ok: false, error: errorText(err) };
  }
}

/** tcx, legacy tc and the datapath's own attach, on the loopback of a namespace made for it. */
function probeAttach(pinRoot: string, dp: Datapath | null): void {
  const name = `${ownPrefix()}-attach`;
  const netns = `/var/run/netns/${name}`;
  const failed = (error: string) => {
    emit({
      type: 'attach',
      tcx: { ok: false, error },
      legacy: { ok: false, error },
      datapath: { ok: false, error, mode: null },
    });
  };
  const made = probe(() => execFileSync('ip', ['netns', 'add', name], { stdio: 'pipe' }));
  if (!made.ok) {
    failed(`no network namespace to probe in: ${made.error}`);
    return;
  }
  const pinDir = join(pinRoot, 'attach');
  mkdirSync(pinDir, { recursive: true });
  let objId: number | null = null;
  try {
    const ifindex = native.ifNameToIndex('lo', netns);
    const obj = native.loadObject(join(DEFAULT_BPF_DIR, 'passthrough.bpf.o'), pinDir);
    objId = obj.id;
    const progFd = obj.programs.fqe_passthrough!.fd;
    const r: AttachRecord = {
      type: 'attach',
      // an unpinned link: closing its fd detaches it
      tcx: probe(() => native.closeFd(native.tcxAttach({ ifindex, direction: 'ingress', netns, progFd }))),
      legacy: probe(() => {
        const target = { ifindex, direction: 'ingress' as const, netns, handle: TC_HANDLE, priority: TC_PRIORITY };
        native.tcAttach({ ...target, progFd });
        native.tcDetach(target);
      }),
      datapath: { ok: false, error: 'the datapath did not load', mode: null },
    };
    if (dp) {
      try {
        const result = dp.attach(ifindex, { netns });
        dp.detach(ifindex, { netns });
        r.datapath = { ok: true, mode: result.mode };
      } catch (err) {
        r.datapath = { ok: false, error: errorText(err), mode: null };
      }
    }
    emit(r);
  } catch (err) {
    failed(errorText(err));
  } finally {
    if (objId !== null) native.closeObject(objId);
    rmSync(pinDir, { recursive: true, force: true });
    probe(() => execFileSync('ip', ['netns', 'del', name], { stdio: 'pipe' }));
  }
}

function runSuite(suite: (typeof SUITES)[number], fuzzRuns: number, timeoutS: number): Promise<SuiteRecord> {
  const patterns = suite.patterns ?? [];
  const args = [
    '--test',
    '--test-reporter=tap',
    '--test-concurrency=1',
    `--test-timeout=${timeoutS * 1000}`,
    ...patterns.map((p) => `--test-name-pattern=${p}`),
    join(TEST_DIR, suite.file),
  ];
  const env = { ...process.env, CI: 'true', FQE_FUZZ_RUNS: String(fuzzRuns) };
  const t0 = performance.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let tap = '';
    child.stdout.on('data', (d: Buffer) => {
      tap += d.toString();
      process.stderr.write(d); // the whole TAP goes to the log, next to the records
    });
    child.stderr.on('data', (d: Buffer) => process.stderr.write(d));
    child.on('close', (code, signal) => {
      const s = parseTap(tap);
      const r: SuiteRecord = {
        type: 'suite',
        file: suite.file,
        patterns,
        pass: s.pass,
        fail: s.fail,
        skipped: s.skipped,
        ms: Math.round(performance.now() - t0),
        failures: s.failures,
      };
      if (!s.complete) {
        r.fail++;
        r.failures.push({ name: '(the test runner)', error: `ended without its summary (exit ${code ?? signal})` });
      } else if (code !== 0 && s.fail === 0) {
        r.fail++;
        r.failures.push({ name: '(the test runner)', error: `exit ${code ?? signal} with no test failed` });
      }
      if (patterns.length > 0 && s.pass + s.fail < patterns.length) {
        r.fail++;
        r.failures.push({
          name: '(name patterns)',
          error: `${patterns.length} patterns picked ${s.pass + s.fail} tests: a test was renamed?`,
        });
      }
      resolve(r);
    });
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      'fuzz-runs': { type: 'string', default: '2000' },
      'test-timeout': { type: 'string', default: '900' },
      'no-suites': { type: 'boolean', default: false },
    },
  });
  const t0 = performance.now();
  emit({ type: 'kernel', release: release(), node: process.version, cpus: cpus().length });
  const pinRoot = join(PIN_ROOT, ownPrefix());
  mkdirSync(pinRoot, { recursive: true });
  let dp: Datapath | null = null;
  try {
    loadEachObject(DEFAULT_BPF_DIR, pinRoot);
    dp = loadDatapath(pinRoot);
    probeAttach(pinRoot, dp);
    emit(
      dp
        ? probeCni({ dp, plugin: CNI_PLUGIN, netnsName: `${ownPrefix()}-cni` })
        : { type: 'cni', rounds: [], error: 'the datapath did not load' },
    );
  } finally {
    dp?.close();
    rmSync(pinRoot, { recursive: true, force: true });
  }
  if (!values['no-suites']) {
    for (const suite of SUITES) {
      const r: SuiteRecord = dp
        ? await runSuite(suite, Number(values['fuzz-runs']), Number(values['test-timeout']))
        : {
            type: 'suite',
            file: suite.file,
            patterns: suite.patterns ?? [],
            notRun: 'the datapath did not load',
            pass: 0,
            fail: 0,
            skipped: 0,
            ms: 0,
            failures: [],
          };
      emit(r);
    }
  }
  emit({ type: 'done', ms: Math.round(performance.now() - t0) });
}

await main();
