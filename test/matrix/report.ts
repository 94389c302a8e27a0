/*
 * The kernel matrix's verdict and tables. Pure: from each kernel's records
 * (records.ts) it decides what is a failure, and writes the table kernel ×
 * feature, the verifier's figures per object, and the list of what failed
 * (which object, which kernel, the verifier's words; which test, its
 * error). What must load where is written here once (REQUIRED_FROM,
 * TCX_FROM, after docs/development.md, "Requirements"); an object not listed must
 * load on every kernel the matrix boots, and the CNI plugin's ADD, CHECK and
 * DEL must pass on every one.
 */
import type {
  AttachRecord,
  CniRecord,
  DatapathRecord,
  DoneRecord,
  KernelRecord,
  MatrixRecord,
  ObjectRecord,
  SuiteRecord,
} from './records.js';

/** The oldest kernel each object must load on; the others must load everywhere (5.8+). */
export const REQUIRED_FROM: Readonly<Record<string, string>> = {
  'enforcer.bpf.o': '5.11', // bpf_ktime_get_coarse_ns; older kernels run enforcer_precise_clock.bpf.o
};
/** tcx links from 6.6; legacy tc everywhere. */
export const TCX_FROM = '6.6';

export interface KernelRun {
  /** `host`, or the Debian suite the kernel comes from */
  name: string;
  /** the kernel's release, as booted (the runner's record says it again) */
  release: string;
  /** the Debian package version, for a VM */
  packageVersion: string | null;
  where: 'vm' | 'host';
  elapsedMs: number;
  timedOut: boolean;
  /** the runner's exit code, or null when it never said (a VM cut short) */
  exitCode: number | null;
  records: MatrixRecord[];
}

export interface Report {
  ok: boolean;
  /** each failure, one line: kernel, what, why */
  problems: string[];
  /** what did not load where it need not (expected) */
  notes: string[];
  markdown: string;
}

/** a.b of a kernel release (5.10.0-32-cloud-amd64 → [5, 10]) at least a.b of `min`. */
export function atLeast(release: string, min: string): boolean {
  const [a = 0, b = 0] = release.split(/[.-]/).map(Number);
  const [x = 0, y = 0] = min.split('.').map(Number);
  return a > x || (a === x && b >= y);
}

function requiredOn(file: string, release: string): boolean {
  const from = REQUIRED_FROM[file];
  return from === undefined || atLeast(release, from);
}

interface Parsed {
  kernel?: KernelRecord;
  objects: ObjectRecord[];
  datapath?: DatapathRecord;
  attach?: AttachRecord;
  cni?: CniRecord;
  suites: SuiteRecord[];
  done?: DoneRecord;
}

function parse(records: MatrixRecord[]): Parsed {
  const p: Parsed = { objects: [], suites: [] };
  for (const r of records) {
    if (r.type === 'kernel') p.kernel = r;
    else if (r.type === 'object') p.objects.push(r);
    else if (r.type === 'datapath') p.datapath = r;
    else if (r.type === 'attach') p.attach = r;
    else if (r.type === 'cni') p.cni = r;
    else if (r.type === 'suite') p.suites.push(r);
    else if (r.type === 'done') p.done = r;
  }
  return p;
}

function label(run: KernelRun): string {
  return run.name === 'host' ? `host ${run.release}` : `${run.name} ${run.release}`;
}

function n(x: number): string {
  return x.toLocaleString('en-US');
}

function firstLine(o: ObjectRecord): string {
  return o.verifierError?.[0] ?? o.error ?? 'refused';
}

/** Markdown cell text: no pipes, no line breaks. */
function cell(s: string): string {
  return s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

function judge(run: KernelRun, p: Parsed, problems: string[], notes: string[]): void {
  const who = label(run);
  if (run.timedOut) problems.push(`${who}: killed at the timeout after ${Math.round(run.elapsedMs / 1000)} s`);
  else if (!p.done) problems.push(`${who}: the runner did not finish (exit ${run.exitCode ?? 'unknown'}; see its log)`);
  if (p.kernel && p.kernel.release !== run.release)
    problems.push(`${who}: booted ${p.kernel.release}, not ${run.release}`);
  for (const o of p.objects) {
    if (o.loaded) continue;
    const why = `${o.error ?? 'refused'}${o.verifierError?.length ? `: ${o.verifierError.join(' / ')}` : ''}`;
    if (requiredOn(o.file, run.release)) problems.push(`${who}: ${o.file} does not load: ${why}`);
    else notes.push(`${who}: ${o.file} does not load (not expected before ${REQUIRED_FROM[o.file]}): ${why}`);
  }
  if (p.done && p.objects.length === 0) problems.push(`${who}: no object loaded or refused (an empty bpf/?)`);
  if (p.datapath && !p.datapath.loaded)
    problems.push(`${who}: the datapath does not load (Datapath.load): ${p.datapath.error}`);
  else if (!p.datapath && p.done) problems.push(`${who}: no datapath record`);
  if (p.attach) {
    const a = p.attach;
    if (atLeast(run.release, TCX_FROM) && !a.tcx.ok) problems.push(`${who}: tcx attach fails: ${a.tcx.error}`);
    if (!a.legacy.ok) problems.push(`${who}: legacy tc attach fails: ${a.legacy.error}`);
    if (p.datapath?.loaded) {
      const want = atLeast(run.release, TCX_FROM) ? 'tcx' : 'legacy';
      if (!a.datapath.ok) problems.push(`${who}: Datapath.attach fails: ${a.datapath.error}`);
      else if (a.datapath.mode !== want)
        problems.push(`${who}: Datapath.attach chose ${a.datapath.mode}, expected ${want}`);
    }
  } else if (p.done) problems.push(`${who}: no attach record`);
  if (p.datapath?.loaded) problems.push(...cniProblems(run, p).map((x) => `${who}: CNI plugin: ${x}`));
  const notRun = p.suites.filter((s) => s.notRun);
  for (const why of new Set(notRun.map((s) => s.notRun))) {
    const files = notRun.filter((s) => s.notRun === why).map((s) => s.file);
    problems.push(
      `${who}: ${files.length === 1 ? `${files[0]} not run` : `${files.length} suites not run (${files.join(', ')})`}: ${why}`,
    );
  }
  for (const s of p.suites) {
    for (const f of s.failures) problems.push(`${who}: ${s.file}: ${f.name}: ${f.error}`);
    if (s.skipped > 0)
      problems.push(`${who}: ${s.file}: ${s.skipped} tests skipped (CI=true should fail them instead)`);
  }
}

/**
 * The CNI plugin's rounds (cni-probe.ts): each call must succeed, everything
 * must hold after it, and ours must sit as the kernel and the agent's state
 * say: tcx where the kernel has it and the agent wrote no state, else legacy
 * tc. Judged only where the datapath loaded (else that failure says it all).
 */
function cniProblems(run: KernelRun, p: Parsed): string[] {
  const c = p.cni;
  if (!c) return p.done ? ['no record'] : [];
  const out = c.error ? [c.error] : [];
  if (!c.error && c.rounds.length === 0) out.push('no round ran');
  for (const r of c.rounds) {
    const what = `${r.decision === 'enforce' ? "the agent's decision" : 'a pending claim'}, agent's attach state ${r.agentAttach}`;
    // after a failed ADD the rest did not run
    const calls = r.add.ok ? [r.add, r.check, r.del] : [r.add];
    for (const call of calls) if (!call.ok) out.push(`${what}: ${call.error}`);
    for (const x of r.problems) out.push(`${what}: ${x}`);
    const want = r.agentAttach === 'unset' && atLeast(run.release, TCX_FROM) ? 'tcx' : 'legacy';
    if (r.add.ok && r.mode !== want) out.push(`${what}: ADD attached ${r.mode}, expected ${want}`);
  }
  return out;
}

/** The CNI column: how ADD attached with no state from the agent, and that legacy works when the agent says so. */
function cniCell(run: KernelRun, p: Parsed): string {
  if (!p.cni) return '—';
  if (cniProblems(run, p).length > 0) return 'FAIL';
  const auto = p.cni.rounds.find((r) => r.agentAttach === 'unset')?.mode ?? '?';
  const told = p.cni.rounds.some((r) => r.agentAttach === 'legacy');
  return auto !== 'legacy' && told ? `${auto} (legacy when told)` : auto;
}

function featureRow(run: KernelRun, p: Parsed): string[] {
  const obj = (file: string) => p.objects.find((o) => o.file === file);
  const insns = (file: string) => {
    const o = obj(file);
    if (!o) return '—';
    if (o.loaded) return o.insns === null ? '✓' : n(o.insns);
    return `✗${o.insns ? ` (${n(o.insns)})` : ''}`;
  };
  const dp = p.datapath;
  const variant = (v: string | null) => (dp?.loaded ? (v ?? '?') : dp ? '✗' : '—');
  const feature = (unavailable: string | null) => (dp?.loaded ? (unavailable === null ? 'yes' : 'no') : '—');
  const a = p.attach;
  const attach = a
    ? `tcx ${a.tcx.ok ? '✓' : '✗'} legacy ${a.legacy.ok ? '✓' : '✗'}${a.datapath.mode ? ` (uses ${a.datapath.mode})` : ''}`
    : '—';
  const tests = p.suites.reduce((t, s) => ({ pass: t.pass + s.pass, all: t.all + s.pass + s.fail + s.skipped }), {
    pass: 0,
    all: 0,
  });
  const notRun = p.suites.filter((s) => s.notRun).length;
  const suites =
    p.suites.length === 0
      ? '—'
      : notRun === p.suites.length
        ? 'not run'
        : `${tests.pass}/${tests.all}${notRun ? ` (${notRun} files not run)` : ''}`;
  const time = `${Math.round(run.elapsedMs / 1000)} s${run.timedOut ? ' (timeout)' : ''}`;
  return [
    label(run),
    variant(dp?.enforcer ?? null),
    variant(dp?.learner ?? null),
    feature(dp?.tlsCheckUnavailable ?? null),
    feature(dp?.dnsQueryFilterUnavailable ?? null),
    attach,
    cniCell(run, p),
    insns(dp?.enforcer ?? 'enforcer.bpf.o'),
    insns(dp?.learner ?? 'learner.bpf.o'),
    suites,
    time,
  ];
}

function table(head: string[], rows: string[][]): string {
  return [
    `| ${head.join(' | ')} |`,
    `| ${head.map(() => '---').join(' | ')} |`,
    ...rows.map((r) => `| ${r.map(cell).join(' | ')} |`),
  ].join('\n');
}

export function buildReport(runs: KernelRun[]): Report {
  const problems: string[] = [];
  const notes: string[] = [];
  const parsed = runs.map((r) => parse(r.records));
  runs.forEach((r, i) => judge(r, parsed[i]!, problems, notes));

  const features = table(
    [
      'kernel',
      'enforcer',
      'learner',
      'TLS check',
      'DNS query filter',
      'attach',
      'CNI plugin',
      'insns enforcer',
      'insns learner',
      'tests passed',
      'time',
    ],
    runs.map((r, i) => featureRow(r, parsed[i]!)),
  );
  const files = [...new Set(parsed.flatMap((p) => p.objects.map((o) => o.file)))].sort();
  const objects = table(
    ['object', ...runs.map(label)],
    files.map((file) => [
      file,
      ...parsed.map((p, i) => {
        const o = p.objects.find((x) => x.file === file);
        if (!o) return '—';
        const verify =
          o.verifyUs !== null ? `, ${n(Math.round(o.verifyUs / 1000))} ms verifying` : `, ${n(o.ms)} ms to load`;
        if (o.loaded) return `${o.insns === null ? 'loads' : `${n(o.insns)} insns`}${verify}`;
        const expected = requiredOn(file, runs[i]!.release) ? '' : ' (not expected)';
        return `✗${expected} ${firstLine(o)}`;
      }),
    ]),
  );
  const versions = runs.map(
    (r) =>
      `- ${label(r)}${r.packageVersion ? ` (Debian package ${r.packageVersion})` : ''}: ${r.where === 'vm' ? 'qemu (TCG), 1 CPU' : 'this machine, no VM'}`,
  );
  const markdown = [
    '## Kernel matrix',
    '',
    ...versions,
    '',
    features,
    '',
    "### Objects: the verifier's instructions and time",
    '',
    objects,
    '',
    `### ${problems.length === 0 ? 'No failures' : `Failures (${problems.length})`}`,
    '',
    ...problems.map((p) => `- ${p}`),
    ...(notes.length ? ['', '### Expected (not required on that kernel)', '', ...notes.map((x) => `- ${x}`)] : []),
    '',
  ].join('\n');
  return { ok: problems.length === 0, problems, notes, markdown };
}
