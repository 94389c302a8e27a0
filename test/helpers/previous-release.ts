/*
 * An earlier release of this repository, built for upgrade tests: the tree
 * of a commit (git archive from the repository the tests run in), its BPF
 * objects, native addon and TypeScript, under os.tmpdir() in a directory
 * named for the full commit id. The build is kept there, so the next run
 * (or the next test file) reuses it; a build that fails or times out leaves
 * nothing behind, and two builds at once do not step on each other (each
 * builds in its own directory and the first to finish wins the name).
 *
 * node_modules: a symlink to this checkout's when both commits pin the same
 * package-lock.json (the dependencies are the same set), else npm ci.
 * Every step is time-bounded. It makes no pins, namespaces or processes that
 * outlive it.
 */
import { execFile } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
  lstatSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';

const HERE = dirname(fileURLToPath(import.meta.url));
const BUILT_MARK = '.fqe-release-built';

export interface Release {
  /** the full commit id */
  commit: string;
  dir: string;
  /** its agent's entry point (dist/agent/main.js) */
  agentMain: string;
  /** its egressctl */
  egressctl: string;
  /** false when an earlier run had built it already */
  built: boolean;
}

export class ReleaseUnavailable extends Error {
  override name = 'ReleaseUnavailable';
}

function sh(cmd: string, args: string[], opts: { cwd?: string; timeoutMs: number }): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      { cwd: opts.cwd, timeout: opts.timeoutMs, killSignal: 'SIGKILL', maxBuffer: 64 << 20, encoding: 'buffer' },
      (err, stdout, stderr) => {
        if (err) {
          const why = err.killed ? `timed out after ${opts.timeoutMs} ms` : err.message.trim();
          reject(
            new Error(
              `${cmd} ${args.join(' ')}${opts.cwd ? ` (in ${opts.cwd})` : ''}: ${why}\n${stderr.toString().slice(-4000)}${stdout.toString().slice(-2000)}`,
            ),
          );
          return;
        }
        resolve(stdout.toString());
      },
    );
  });
}

/** The repository this test file lives in (CI: a full clone of main). */
export async function repositoryRoot(): Promise<string> {
  try {
    return (await sh('git', ['-C', HERE, 'rev-parse', '--show-toplevel'], { timeoutMs: 10_000 })).trim();
  } catch (err) {
    throw new ReleaseUnavailable(`not inside a git checkout: ${(err as Error).message}`);
  }
}

function releaseFiles(dir: string, commit: string): Release {
  return {
    commit,
    dir,
    agentMain: join(dir, 'dist', 'agent', 'main.js'),
    egressctl: join(dir, 'dist', 'agent', 'cli', 'egressctl.js'),
    built: false,
  };
}

/** node_modules of the release: this checkout's (same lock file) or its own. */
async function provideModules(repo: string, dir: string, commit: string): Promise<void> {
  const ours = join(repo, 'node_modules');
  const lock = join(repo, 'package-lock.json');
  const theirs = await sh('git', ['-C', repo, 'show', `${commit}:package-lock.json`], { timeoutMs: 10_000 });
  const link = join(dir, 'node_modules');
  if (existsSync(lock) && existsSync(ours) && readFileSync(lock, 'utf8') === theirs) {
    if (lstatSync(link, { throwIfNoEntry: false })?.isSymbolicLink() && readlinkSync(link) === ours) return;
    rmSync(link, { recursive: true, force: true });
    symlinkSync(ours, link, 'dir');
    return;
  }
  if (lstatSync(link, { throwIfNoEntry: false })?.isDirectory()) return;
  rmSync(link, { force: true });
  await sh('npm', ['ci', '--ignore-scripts', '--no-audit', '--no-fund', '--loglevel=error'], {
    cwd: dir,
    timeoutMs: 300_000,
  });
}

/**
 * The release at `ref` (a commit of this repository), built. Throws
 * ReleaseUnavailable when the repository does not have that commit (a
 * shallow clone), any other error when the build fails.
 */
export async function previousRelease(ref: string): Promise<Release> {
  const repo = await repositoryRoot();
  let commit: string;
  try {
    commit = (
      await sh('git', ['-C', repo, 'rev-parse', '--verify', '--quiet', `${ref}^{commit}`], { timeoutMs: 10_000 })
    ).trim();
  } catch {
    throw new ReleaseUnavailable(`${repo} has no commit ${ref} (a shallow clone? fetch the full history)`);
  }
  const dir = join(tmpdir(), `fqe-release-${commit}`);
  const release = releaseFiles(dir, commit);
  if (existsSync(join(dir, BUILT_MARK)) && existsSync(release.agentMain)) {
    await provideModules(repo, dir, commit);
    return release;
  }
  rmSync(dir, { recursive: true, force: true }); // a half-made one from a killed run
  const work = `${dir}.build-${process.pid}-${randomBytes(3).toString('hex')}`;
  mkdirSync(work, { recursive: true });
  try {
    const tar = `${work}.tar`;
    try {
      await sh('git', ['-C', repo, 'archive', '--format=tar', '-o', tar, commit], { timeoutMs: 60_000 });
      await sh('tar', ['-xf', tar, '-C', work], { timeoutMs: 60_000 });
    } finally {
      rmSync(tar, { force: true });
    }
    await provideModules(repo, work, commit);
    await sh('make', ['-s', '-C', join(work, 'bpf')], { timeoutMs: 180_000 });
    await sh('npm', ['run', '-s', 'build:native'], { cwd: work, timeoutMs: 300_000 });
    await sh(join(work, 'node_modules', '.bin', 'tsc'), ['-p', join(work, 'tsconfig.json')], { timeoutMs: 300_000 });
    writeFileSync(join(work, BUILT_MARK), `${commit}\n`);
    try {
      renameSync(work, dir);
    } catch (err) {
      // Another run finished the same build first: use theirs.
      if (!existsSync(join(dir, BUILT_MARK))) throw err;
      rmSync(work, { recursive: true, force: true });
    }
  } catch (err) {
    rmSync(work, { recursive: true, force: true });
    throw err;
  }
  return { ...release, built: true };
}
