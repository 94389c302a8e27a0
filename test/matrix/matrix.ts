/*
 * The kernel matrix (`npm run test:kernels`, through scripts/kernels.sh,
 * which installs and builds first): Debian's kernels (debian-kernels.ts)
 * booted in qemu (qemu.ts) with one shared initramfs (initramfs.ts), each
 * running the runner (runner.ts), plus the runner on this machine's own
 * kernel; at most --jobs at a time. Each kernel's console goes to
 * <out>/<name>-<release>.log; the verdict and the tables (report.ts) to
 * stdout, <out>/matrix.md and <out>/matrix.json. Exit code 1 when anything
 * that must load does not, or a test fails; 2 when the matrix could not run.
 *
 *   node dist/test/matrix/matrix.js [--suites bullseye,bookworm,trixie] [--no-host]
 *     [--jobs 2] [--vm-timeout SECONDS] [--fuzz-runs N] [--out DIR] [--cache DIR]
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { release, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { DebianKernels, SUITES, type Kernel } from './debian-kernels.js';
import { buildInitramfs } from './initramfs.js';
import { bootVm, killVms } from './qemu.js';
import { parseExit, parseRecords } from './records.js';
import { buildReport, type KernelRun } from './report.js';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const RUNNER = join(REPO, 'dist', 'test', 'matrix', 'runner.js');

function log(msg: string): void {
  process.stderr.write(`kernels: ${msg}\n`);
}

const { values } = parseArgs({
  options: {
    suites: { type: 'string', default: SUITES.join(',') },
    'no-host': { type: 'boolean', default: false },
    jobs: { type: 'string', default: '2' },
    'vm-timeout': { type: 'string', default: '1200' },
    'fuzz-runs': { type: 'string', default: '300' },
    out: { type: 'string', default: join(REPO, 'build', 'kernels') },
    cache: { type: 'string', default: process.env.FQE_KERNEL_CACHE ?? '/var/cache/fqdn-egress/kernels' },
  },
});
const outDir = values.out;
const timeoutMs = Number(values['vm-timeout']) * 1000;
const runnerArgs = ['--fuzz-runs', values['fuzz-runs']];

let scratch: string | null = null;
const hostChildren = new Set<ChildProcess>();
function cleanUp(): void {
  killVms();
  for (const c of hostChildren) c.kill('SIGKILL');
  if (scratch) rmSync(scratch, { recursive: true, force: true });
  scratch = null;
}
for (const [signal, code] of [
  ['SIGINT', 130],
  ['SIGTERM', 143],
] as const) {
  process.once(signal, () => {
    cleanUp();
    process.exit(code);
  });
}

interface Job {
  name: string;
  release: string;
  run: () => Promise<KernelRun>;
}

function vmJob(k: Kernel, initrd: string): Job {
  return {
    name: k.suite,
    release: k.release,
    run: async () => {
      const r = await bootVm({
        vmlinuz: k.vmlinuz,
        initrd,
        logFile: join(outDir, `${k.suite}-${k.release}.log`),
        timeoutMs,
      });
      return {
        name: k.suite,
        release: k.release,
        packageVersion: k.version,
        where: 'vm',
        elapsedMs: r.elapsedMs,
        timedOut: r.timedOut,
        exitCode: parseExit(r.log),
        records: parseRecords(r.log),
      };
    },
  };
}

/** The runner on this machine's kernel: the same records, no VM (its attach probes use a namespace of their own). */
function hostJob(): Job {
  const rel = release();
  return {
    name: 'host',
    release: rel,
    run: () =>
      new Promise((resolve, reject) => {
        const t0 = performance.now();
        const out = createWriteStream(join(outDir, `host-${rel}.log`));
        const child = spawn(process.execPath, [RUNNER, ...runnerArgs], {
          cwd: REPO,
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        hostChildren.add(child);
        let text = '';
        const take = (d: Buffer) => {
          text += d.toString();
          out.write(d);
        };
        child.stdout.on('data', take);
        child.stderr.on('data', take);
        let timedOut = false;
        const timer = setTimeout(() => {
          timedOut = true;
          child.kill('SIGKILL');
        }, timeoutMs);
        child.on('error', reject);
        child.on('close', (code) => {
          clearTimeout(timer);
          hostChildren.delete(child);
          out.end(() =>
            resolve({
              name: 'host',
              release: rel,
              packageVersion: null,
              where: 'host',
              elapsedMs: Math.round(performance.now() - t0),
              timedOut,
              exitCode: code,
              records: parseRecords(text),
            }),
          );
        });
      }),
  };
}

/** Run the jobs, at most `width` at a time; results in the jobs' order. */
async function pool(jobs: Job[], width: number): Promise<KernelRun[]> {
  const results: KernelRun[] = new Array(jobs.length);
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const i = next++;
      const job = jobs[i]!;
      log(`${job.name} ${job.release}: started`);
      const r = await job.run();
      results[i] = r;
      const tests = r.records
        .filter((x) => x.type === 'suite')
        .reduce((t, s) => t + (s.type === 'suite' ? s.pass : 0), 0);
      const refused = r.records.filter((x) => x.type === 'object' && !x.loaded).length;
      log(
        `${job.name} ${job.release}: ${Math.round(r.elapsedMs / 1000)} s${r.timedOut ? ' (killed at the timeout)' : ''}, ${refused} objects refused, ${tests} tests passed`,
      );
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, jobs.length) }, worker));
  return results;
}

function commit(): string | null {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], {
      cwd: REPO,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
  } catch {
    return null;
  }
}

async function main(): Promise<number> {
  const t0 = performance.now();
  mkdirSync(outDir, { recursive: true });
  for (const f of readdirSync(outDir)) if (f.endsWith('.log') || f.startsWith('matrix.')) rmSync(join(outDir, f));

  const suites = values.suites.split(',').filter(Boolean);
  const kernels = suites.length ? new DebianKernels(values.cache, log).get(suites) : [];
  for (const k of kernels)
    log(`${k.suite}: ${k.release} (package ${k.version}, ${k.fetched ? 'downloaded' : 'cached'})`);

  const jobs: Job[] = [];
  if (kernels.length) {
    scratch = mkdtempSync(join(tmpdir(), 'fqe-kernels-'));
    const initrd = join(scratch, 'initramfs.cpio');
    const tb = performance.now();
    buildInitramfs({ appDir: REPO, kernels, runnerArgs, out: initrd });
    log(
      `initramfs: ${Math.round(statSync(initrd).size / 2 ** 20)} MiB in ${Math.round((performance.now() - tb) / 1000)} s`,
    );
    // newest first: the kernels that load everything run every suite, and take longest
    for (const k of [...kernels].reverse()) jobs.push(vmJob(k, initrd));
  }
  if (!values['no-host']) jobs.push(hostJob());

  const runs = await pool(jobs, Number(values.jobs));
  const order = (r: KernelRun) => (r.name === 'host' ? Infinity : suites.indexOf(r.name));
  runs.sort((a, b) => order(a) - order(b));
  cleanUp();

  const report = buildReport(runs);
  const totalMs = Math.round(performance.now() - t0);
  const md = `${report.markdown}\nCommit ${commit() ?? 'unknown'}, ${new Date().toISOString()}; the whole matrix took ${Math.round(totalMs / 1000)} s.\n`;
  writeFileSync(join(outDir, 'matrix.md'), md);
  writeFileSync(
    join(outDir, 'matrix.json'),
    `${JSON.stringify(
      {
        generated: new Date().toISOString(),
        commit: commit(),
        totalMs,
        ok: report.ok,
        problems: report.problems,
        notes: report.notes,
        runs,
      },
      null,
      2,
    )}\n`,
  );
  process.stdout.write(md);
  log(
    `${report.ok ? 'passed' : `FAILED (${report.problems.length} failures)`} in ${Math.round(totalMs / 1000)} s; tables in ${join(outDir, 'matrix.md')}, logs in ${outDir}`,
  );
  return report.ok ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    cleanUp();
    log(`cannot run the matrix: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exit(2);
  },
);
