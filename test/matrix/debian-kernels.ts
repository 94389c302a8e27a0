/*
 * Debian's own kernels for the kernel matrix: for each suite, the kernel its
 * `linux-image-cloud-amd64` metapackage points at today (the archive drops
 * old versions, so it is resolved at every run), fetched with apt-get
 * through a PRIVATE configuration (its own sources file, lists and cache
 * under the cache dir; the machine's apt sources and state are never read
 * or written), unpacked, and cached: the kernel image, its config and the
 * two modules legacy tc attach needs (clsact and cls_bpf are modules in the
 * cloud kernels). A second run downloads nothing unless a suite moved on;
 * older versions of a suite are removed when a new one is cached.
 */
import { execFileSync } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';

export const SUITES = ['bullseye', 'bookworm', 'trixie'] as const;
const FLAVOUR = 'cloud-amd64';
const MIRROR = 'http://deb.debian.org/debian';
const KEYRING = '/usr/share/keyrings/debian-archive-keyring.gpg';
/** modules of net/sched that legacy tc attach needs (clsact, cls_bpf), in load order */
export const TC_MODULES = ['sch_ingress', 'cls_bpf'];

export interface Kernel {
  suite: string;
  /** `uname -r` of the kernel: 6.1.0-50-cloud-amd64 */
  release: string;
  /** the Debian package version: 6.1.176-1 */
  version: string;
  vmlinuz: string;
  /** sch_ingress.ko and cls_bpf.ko, uncompressed */
  modules: string[];
  /** fetched by this run (false: from the cache) */
  fetched: boolean;
}

export class DebianKernels {
  private readonly aptDir: string;

  constructor(
    readonly cacheDir: string,
    private readonly log: (msg: string) => void,
  ) {
    this.aptDir = join(cacheDir, 'apt');
  }

  /** The apt options that make apt-get and apt-cache use our files only. */
  private aptOptions(): string[] {
    const sources = join(this.aptDir, 'sources.list');
    return [
      '-o',
      `Dir::Etc::sourcelist=${sources}`,
      '-o',
      'Dir::Etc::sourceparts=-',
      '-o',
      `Dir::State::Lists=${join(this.aptDir, 'lists')}`,
      '-o',
      `Dir::Cache=${join(this.aptDir, 'cache')}`,
      '-o',
      'Acquire::Languages=none',
      '-o',
      'APT::Architectures=amd64',
    ];
  }

  private updateLists(suites: readonly string[]): void {
    for (const d of ['lists/partial', 'cache/archives/partial']) mkdirSync(join(this.aptDir, d), { recursive: true });
    writeFileSync(
      join(this.aptDir, 'sources.list'),
      suites.map((s) => `deb [signed-by=${KEYRING}] ${MIRROR} ${s} main\n`).join(''),
    );
    try {
      execFileSync('apt-get', [...this.aptOptions(), '-qq', 'update'], {
        stdio: ['ignore', 'pipe', 'pipe'],
        timeout: 300_000,
      });
    } catch (err) {
      // offline: the lists of the last run (and the cached kernels) still serve
      this.log(`apt-get update failed, using the lists of the last run: ${stderrOf(err)}`);
    }
  }

  /** The kernel a suite's metapackage depends on: its release and package version. */
  private resolve(suite: string): { release: string; version: string } {
    const out = execFileSync('apt-cache', [...this.aptOptions(), 'show', `linux-image-${FLAVOUR}/${suite}`], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const m = new RegExp(`^Depends:.*?\\blinux-image-(\\S+-${FLAVOUR}) \\(= ([^)]+)\\)`, 'm').exec(out);
    if (!m) throw new Error(`linux-image-${FLAVOUR}/${suite}: no kernel in its Depends`);
    return { release: m[1]!, version: m[2]! };
  }

  private entry(suite: string, release: string, version: string): Kernel {
    const dir = join(this.cacheDir, suite, `${release}_${version}`);
    const modules = TC_MODULES.map((m) => join(dir, 'modules', `${m}.ko`)).filter((p) => existsSync(p));
    return { suite, release, version, vmlinuz: join(dir, 'vmlinuz'), modules, fetched: false };
  }

  /** Download the unsigned image package and keep what the VM needs (written aside, then renamed in place). */
  private fetch(suite: string, release: string, version: string): void {
    const suiteDir = join(this.cacheDir, suite);
    mkdirSync(suiteDir, { recursive: true });
    // what a run killed mid-download left (an hour old: not a download running now)
    for (const d of readdirSync(suiteDir).filter((f) => f.startsWith('.fetch-'))) {
      if (Date.now() - statSync(join(suiteDir, d)).mtimeMs > 3_600_000)
        rmSync(join(suiteDir, d), { recursive: true, force: true });
    }
    const tmp = mkdtempSync(join(suiteDir, '.fetch-'));
    try {
      const pkg = `linux-image-${release}-unsigned`;
      this.log(`downloading ${pkg} ${version} (${suite})`);
      // apt downloads as the _apt user: the directory must be its own
      try {
        execFileSync('chown', ['_apt', tmp], { stdio: 'ignore' });
      } catch {
        // no _apt user: apt downloads as root
      }
      execFileSync('apt-get', [...this.aptOptions(), '-qq', 'download', `${pkg}=${version}`], {
        cwd: tmp,
        stdio: ['ignore', 'pipe', 'pipe'],
        timeout: 600_000,
      });
      const deb = readdirSync(tmp).find((f) => f.endsWith('.deb'));
      if (!deb) throw new Error(`apt-get download ${pkg}=${version}: no .deb`);
      const root = join(tmp, 'x');
      execFileSync('dpkg-deb', ['-x', join(tmp, deb), root]);
      const out = join(tmp, 'kernel');
      mkdirSync(join(out, 'modules'), { recursive: true });
      copyFileSync(join(root, 'boot', `vmlinuz-${release}`), join(out, 'vmlinuz'));
      copyFileSync(join(root, 'boot', `config-${release}`), join(out, 'config'));
      // modules under /lib (bullseye, bookworm) or /usr/lib (trixie), plain, .xz or .zst
      for (const lib of ['lib', 'usr/lib']) {
        const sched = join(root, lib, 'modules', release, 'kernel', 'net', 'sched');
        if (!existsSync(sched)) continue;
        for (const m of TC_MODULES) {
          const found = readdirSync(sched).find((f) => f === `${m}.ko` || f.startsWith(`${m}.ko.`));
          if (!found) continue;
          const src = join(sched, found);
          const dst = join(out, 'modules', `${m}.ko`);
          if (found.endsWith('.xz')) writeFileSync(dst, execFileSync('xz', ['-dc', src], { maxBuffer: 64 << 20 }));
          else if (found.endsWith('.zst'))
            writeFileSync(dst, execFileSync('zstd', ['-dcq', src], { maxBuffer: 64 << 20 }));
          else copyFileSync(src, dst);
        }
      }
      renameSync(out, join(suiteDir, `${release}_${version}`));
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }

  /** The suite's cached kernels other than `keep`, newest first. */
  private cached(suite: string, keep?: string): string[] {
    const suiteDir = join(this.cacheDir, suite);
    if (!existsSync(suiteDir)) return [];
    return readdirSync(suiteDir)
      .filter((d) => !d.startsWith('.') && d !== keep && existsSync(join(suiteDir, d, 'vmlinuz')))
      .sort((a, b) => statSync(join(suiteDir, b)).mtimeMs - statSync(join(suiteDir, a)).mtimeMs);
  }

  /** Each suite's current kernel, from the cache or fetched. */
  get(suites: readonly string[] = SUITES): Kernel[] {
    this.updateLists(suites);
    return suites.map((suite) => {
      let release: string;
      let version: string;
      try {
        ({ release, version } = this.resolve(suite));
      } catch (err) {
        const last = this.cached(suite)[0];
        if (!last) throw new Error(`${suite}: cannot resolve its kernel (${stderrOf(err)}) and none is cached`);
        [release, version] = last.split('_') as [string, string];
        this.log(`${suite}: cannot resolve its kernel (${stderrOf(err)}); using the cached ${release} ${version}`);
        return this.entry(suite, release, version);
      }
      const dir = join(this.cacheDir, suite, `${release}_${version}`);
      let fetched = false;
      if (!existsSync(join(dir, 'vmlinuz'))) {
        this.fetch(suite, release, version);
        fetched = true;
      }
      for (const old of this.cached(suite, `${release}_${version}`))
        rmSync(join(this.cacheDir, suite, old), { recursive: true, force: true });
      return { ...this.entry(suite, release, version), fetched };
    });
  }
}

function stderrOf(err: unknown): string {
  const e = err as { stderr?: Buffer | string; message?: string };
  const text = e.stderr?.toString().trim() || e.message || String(err);
  return text.split('\n').slice(-2).join(' | ');
}
