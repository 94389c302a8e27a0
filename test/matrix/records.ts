/*
 * What the kernel matrix's runner reports, and how it travels: one JSON
 * record per line, prefixed `FQE-MATRIX `, on the runner's stdout (a VM's
 * serial console, or a pipe on the host). Pure: the record types, their
 * line encoding, and the two parsers of what the kernel and the test runner
 * print (the verifier's statistics and errors, node's TAP summary). The
 * runner (runner.ts) writes records; the host (matrix.ts, report.ts) reads
 * them. A record type changed here changes both sides at once.
 */

export const RECORD_PREFIX = 'FQE-MATRIX ';
/** Printed by the VM's /init after the runner exits, with its exit code. */
export const EXIT_MARKER = 'FQE-MATRIX-EXIT';

/** The kernel the runner found itself on. */
export interface KernelRecord {
  type: 'kernel';
  release: string;
  node: string;
  cpus: number;
}

/** One object file of bpf/, loaded on its own with the verifier's statistics. */
export interface ObjectRecord {
  type: 'object';
  file: string;
  loaded: boolean;
  /** wall time of the load (open, verify, pin), ms */
  ms: number;
  /** instructions the verifier processed, summed over the object's programs (also on failure, when it says) */
  insns: number | null;
  /** the verifier's own time, µs (kernels from 5.16 report it) */
  verifyUs: number | null;
  /** on failure: the error (errno) */
  error?: string;
  /** on failure: the verifier's last words before its statistics, first line first */
  verifierError?: string[];
}

/** The datapath loaded the way the agent loads it (Datapath.load), fallbacks included. */
export interface DatapathRecord {
  type: 'datapath';
  loaded: boolean;
  /** the object each role runs, or null when the datapath did not load */
  enforcer: string | null;
  learner: string | null;
  /** why the loaded enforcer lacks a feature (null: it has it) */
  inlineLearnerUnavailable: string | null;
  enforcerOnPreciseClock: string | null;
  tlsCheckUnavailable: string | null;
  dnsQueryFilterUnavailable: string | null;
  ms: number;
  error?: string;
}

/** Attach probes on the runner's own loopback (a VM's, or a private network namespace). */
export interface AttachRecord {
  type: 'attach';
  /** a tcx link (6.6+) of a pass-through program */
  tcx: Probe;
  /** a legacy tc (clsact + cls_bpf) filter of the same program */
  legacy: Probe;
  /** Datapath.attach in auto mode: the mode it chose, or null when the datapath did not load */
  datapath: Probe & { mode: 'tcx' | 'legacy' | null };
}

export interface Probe {
  ok: boolean;
  error?: string;
}

/** One ADD, CHECK and DEL of the CNI plugin (build/fqdn-egress-cni) on one interface, with what held after each. */
export interface CniRound {
  /** the agent's attach state in fqe_config: none written (the plugin tries tcx first), or legacy */
  agentAttach: 'unset' | 'legacy';
  /** the pod's decision: the agent's (enforce, under its identity), or none (the plugin claims a pending one) */
  decision: 'enforce' | 'pending';
  /** how ours sat on the interface after ADD (attach.ts), or null when ADD failed */
  mode: 'tcx' | 'legacy' | 'mixed' | 'none' | null;
  add: Probe;
  check: Probe;
  del: Probe;
  /** what did not hold after ADD or DEL (an entry, a program, a pin), one line each; empty: all held */
  problems: string[];
}

/** The CNI plugin run as a runtime runs it, against the runner's datapath, in a network namespace of its own. */
export interface CniRecord {
  type: 'cni';
  rounds: CniRound[];
  /** the probe could not run (or stopped): why */
  error?: string;
}

/** One test file run with node's test runner (or a part of it, by name pattern). */
export interface SuiteRecord {
  type: 'suite';
  file: string;
  /** name patterns that picked the tests (the file's other tests need network namespaces) */
  patterns: string[];
  /** did not run, and why (counted as a failure) */
  notRun?: string;
  pass: number;
  fail: number;
  /** skipped for another reason than the name pattern, or todo */
  skipped: number;
  ms: number;
  failures: { name: string; error: string }[];
}

export interface DoneRecord {
  type: 'done';
  ms: number;
}

export type MatrixRecord =
  KernelRecord | ObjectRecord | DatapathRecord | AttachRecord | CniRecord | SuiteRecord | DoneRecord;

export function encodeRecord(r: MatrixRecord): string {
  return RECORD_PREFIX + JSON.stringify(r);
}

/** The records in a console log, in order; other lines (boot, test output) are ignored. */
export function parseRecords(log: string): MatrixRecord[] {
  const out: MatrixRecord[] = [];
  for (const raw of log.split('\n')) {
    const line = raw.replace(/\r$/, '');
    const at = line.indexOf(RECORD_PREFIX);
    if (at < 0) continue;
    try {
      out.push(JSON.parse(line.slice(at + RECORD_PREFIX.length)) as MatrixRecord);
    } catch {
      // a line cut by the console (the VM powered off mid-line): the record is lost, the table says what is missing
    }
  }
  return out;
}

/** The exit code /init printed after the runner, or null when it never got there. */
export function parseExit(log: string): number | null {
  const m = new RegExp(`${EXIT_MARKER} rc=(\\d+)`).exec(log);
  return m ? Number(m[1]) : null;
}

export interface VerifierStats {
  insns: number | null;
  verifyUs: number | null;
}

/**
 * Sums the verifier's statistics over the programs of an object: its log
 * (level 4) holds, per program, "verification time N usec" (5.16+) and
 * "processed N insns (limit ...) ...".
 */
export function parseVerifierStats(log: string): VerifierStats {
  let insns: number | null = null;
  let verifyUs: number | null = null;
  for (const m of log.matchAll(/^processed (\d+) insns/gm)) insns = (insns ?? 0) + Number(m[1]);
  for (const m of log.matchAll(/^verification time (\d+) usec/gm)) verifyUs = (verifyUs ?? 0) + Number(m[1]);
  return { insns, verifyUs };
}

/** Lines of an instruction trace or of the statistics, not the verifier's verdict. */
const TRACE_LINE =
  /^(\d+: |; |from \d+ to \d+|verification time |stack depth |mark_precise|last_idx |regs=|parent |func#|caller:|callee:|\s*$)/;
/** What the verifier says on its way that refuses nothing (6.1 on a static subprogram's arguments). */
const REMARK =
  /^(reg type unsupported for arg#\d+ function |arg#\d+ reference type|Func#\d+ \(.*\) is (global|safe)|Validating .* func#\d+)/;

/**
 * The verifier's error, from a failed load's details (the log of each
 * program, then libbpf's messages): the lines just before the failing
 * program's "processed N insns" line that are neither trace nor statistics,
 * at most three. Without such a line (libbpf refused the object before the
 * kernel saw it), libbpf's last message.
 */
export function verifierError(details: string | undefined): string[] {
  if (!details) return [];
  const lines = details.split('\n').map((l) => l.trimEnd());
  const own = lines.filter((l) => !l.startsWith('libbpf:') && !l.startsWith('-- '));
  // the failing program is the last one the kernel answered (libbpf stops at the first failure)
  let end = -1;
  for (let i = own.length - 1; i >= 0; i--) {
    if (/^processed \d+ insns/.test(own[i]!)) {
      end = i;
      break;
    }
  }
  if (end >= 0) {
    const verdict: string[] = [];
    for (let i = end - 1; i >= 0 && verdict.length < 3; i--) {
      const l = own[i]!;
      if (/^processed \d+ insns/.test(l)) break; // the previous program's statistics
      if (REMARK.test(l)) continue;
      if (TRACE_LINE.test(l)) {
        if (verdict.length > 0) break; // the verdict is the block right above the statistics
        continue;
      }
      verdict.unshift(l);
    }
    if (verdict.length > 0) return verdict;
  }
  const libbpf = lines.filter((l) => l.startsWith('libbpf:') && !/BEGIN PROG LOAD LOG|END PROG LOAD LOG/.test(l));
  return libbpf.length > 0 ? [libbpf[libbpf.length - 1]!.replace(/^libbpf:\s*/, '')] : [];
}

export interface TapSummary {
  pass: number;
  fail: number;
  /** skipped (not by the name pattern) or todo; a cancelled test counts as failed */
  skipped: number;
  /** the summary lines were there (the run was not cut short) */
  complete: boolean;
  failures: { name: string; error: string }[];
}

const PATTERN_SKIP = '# SKIP test name does not match pattern';

/**
 * Counts of a `node --test --test-reporter=tap` run, from its top-level
 * test lines ("ok N - name", "not ok N - name", "# SKIP"), with the first
 * line of each failure's error. Tests left out by --test-name-pattern are
 * not counted.
 */
export function parseTap(tap: string): TapSummary {
  const lines = tap.split('\n').map((l) => l.replace(/\r$/, ''));
  const s: TapSummary = { pass: 0, fail: 0, skipped: 0, complete: false, failures: [] };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (/^# (tests|fail) \d+$/.test(line)) s.complete = true;
    const m = /^(not ok|ok) \d+ - (.*)$/.exec(line);
    if (!m) continue;
    const name = m[2]!;
    if (name.endsWith(PATTERN_SKIP)) continue;
    if (/ # (SKIP|TODO)\b/.test(name)) {
      s.skipped++;
      continue;
    }
    if (m[1] === 'ok') {
      s.pass++;
      continue;
    }
    // its YAML block: "  ---" ... "  error: ..." ... "  ..."
    let error = '';
    for (let j = i + 1; j < lines.length && !/^ {2}\.\.\.$/.test(lines[j]!); j++) {
      const e = /^ {2}error: ?(.*)$/.exec(lines[j]!);
      if (!e) continue;
      const v = e[1]!.trim();
      error = /^[|>]-?$/.test(v) ? (lines[j + 1] ?? '').trim() : v.replace(/^'(.*)'$/, '$1');
      break;
    }
    s.fail++;
    s.failures.push({ name, error });
  }
  return s;
}
