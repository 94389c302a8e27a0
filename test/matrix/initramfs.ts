/*
 * The root file system of the kernel matrix's VMs: one uncompressed newc
 * cpio (the kernel unpacks it into RAM), shared by every kernel. It holds
 * busybox (the shell, mount, insmod, nsenter), the host's node, iproute2's
 * `ip` and a python3 that can write TLS ClientHellos (what the kernel suites
 * call), each with the libraries ldd lists; the project as the tests run it
 * (the BPF objects, the addon, the CNI plugin (static: no library), dist/,
 * the fixtures, the production node_modules); for each kernel, the tc
 * modules legacy attach needs; and an /init that mounts the pseudo file
 * systems, runs the runner (runner.ts), prints its exit code and powers
 * off. Built in a temp dir, removed once packed.
 */
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  realpathSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative } from 'node:path';
import { EXIT_MARKER } from './records.js';
import type { Kernel } from './debian-kernels.js';

export interface InitramfsOptions {
  /** the repository root, built */
  appDir: string;
  kernels: Kernel[];
  /** arguments of the runner in the VM */
  runnerArgs: string[];
  /** the cpio file to write */
  out: string;
}

/** What python3 imports to write a ClientHello (test/helpers/client-hello.ts): its files and their compiled copies. */
const PYTHON_PROBE = `
import ssl, sys, json
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.maximum_version = ssl.TLSVersion.TLSv1_2
conn = ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname='probe.test')
try:
    conn.do_handshake()
except ssl.SSLWantReadError:
    pass
print(json.dumps(sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, '__file__', None)})))
`;

/** Files of node_modules that nothing loads at run time. */
const NOT_AT_RUNTIME = /\.(map|d\.ts|d\.mts|d\.cts|ts|md|markdown)$/;

function which(names: string[]): string {
  const found = names.find((p) => existsSync(p));
  if (!found) throw new Error(`none of ${names.join(', ')} exists`);
  return found;
}

/** The shared libraries a dynamic executable or library needs (nothing for a static one). */
function sharedLibraries(file: string): string[] {
  let out: string;
  try {
    out = execFileSync('ldd', [file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch {
    return []; // "not a dynamic executable"
  }
  return [...out.matchAll(/(?:=>\s*)?(\/\S+)\s+\(0x/g)].map((m) => m[1]!);
}

class Staging {
  readonly root = mkdtempSync(join(tmpdir(), 'fqe-initramfs-'));

  /** Copy a file (its content, symlinks followed) to the same path, or to `at`, inside the image. */
  file(src: string, at: string = src): void {
    const dst = join(this.root, at);
    if (existsSync(dst)) return;
    mkdirSync(dirname(dst), { recursive: true });
    cpSync(realpathSync(src), dst, { dereference: true });
  }

  /** An executable or library and every library it needs, at their paths. */
  binary(src: string, at: string = src): void {
    this.file(src, at);
    for (const lib of sharedLibraries(src)) this.file(lib);
  }

  tree(src: string, at: string, filter: (path: string) => boolean = () => true): void {
    cpSync(src, join(this.root, at), { recursive: true, dereference: true, filter });
  }

  write(at: string, content: string, mode = 0o644): void {
    const dst = join(this.root, at);
    mkdirSync(dirname(dst), { recursive: true });
    writeFileSync(dst, content);
    chmodSync(dst, mode);
  }

  pack(out: string): void {
    mkdirSync(dirname(out), { recursive: true });
    execFileSync('sh', ['-c', 'find . -print0 | cpio --null -o -H newc --quiet > "$1"', 'sh', out], { cwd: this.root });
  }

  remove(): void {
    rmSync(this.root, { recursive: true, force: true });
  }
}

function initScript(runnerArgs: string[]): string {
  const args = runnerArgs.map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(' ');
  return `#!/bin/busybox sh
# The kernel matrix VM: mount what the runner needs, load the tc modules of
# this kernel, run the runner, say how it ended, power off.
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root PYTHONDONTWRITEBYTECODE=1
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t bpf bpf /sys/fs/bpf
mount -t tmpfs tmp /tmp
mkdir -p /var /root
ln -s /run /var/run
for m in /kmod/$(uname -r)/*.ko; do [ -e "$m" ] && insmod "$m"; done
ip link set lo up
cd /app
node dist/test/matrix/runner.js ${args}
echo "${EXIT_MARKER} rc=$?"
poweroff -f
`;
}

export function buildInitramfs(opts: InitramfsOptions): void {
  const s = new Staging();
  try {
    for (const d of ['proc', 'sys', 'dev', 'tmp', 'run', 'root', 'etc'])
      mkdirSync(join(s.root, d), { recursive: true });
    s.file('/bin/busybox');
    s.binary(realpathSync(process.execPath), '/usr/bin/node');
    s.binary(which(['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip']), '/usr/sbin/ip');

    const python = which(['/usr/bin/python3']);
    s.binary(python);
    const pyFiles = JSON.parse(execFileSync(python, ['-c', PYTHON_PROBE], { encoding: 'utf8' })) as string[];
    const tag = pythonTag(python);
    for (const f of pyFiles) {
      if (f.endsWith('.so')) s.binary(f);
      else s.file(f);
      const compiled = join(dirname(f), '__pycache__', `${basename(f, '.py')}.cpython-${tag}.pyc`);
      if (f.endsWith('.py') && existsSync(compiled)) s.file(compiled);
    }

    const app = opts.appDir;
    s.file(join(app, 'package.json'), '/app/package.json');
    for (const o of readdirSync(join(app, 'bpf')).filter((f) => f.endsWith('.bpf.o')))
      s.file(join(app, 'bpf', o), `/app/bpf/${o}`);
    const addon = join(app, 'build', 'Release', 'fqe_native.node');
    s.binary(addon, '/app/build/Release/fqe_native.node');
    s.binary(join(app, 'build', 'fqdn-egress-cni'), '/app/build/fqdn-egress-cni');
    const jsOnly = (p: string) => !p.endsWith('.map');
    s.tree(join(app, 'dist', 'agent'), '/app/dist/agent', jsOnly);
    s.tree(join(app, 'dist', 'test'), '/app/dist/test', jsOnly);
    s.tree(join(app, 'test', 'fixtures'), '/app/test/fixtures');
    // a package nested in another's node_modules comes with it
    const packages = productionPackages(app)
      .filter((p) => p.startsWith(join(app, 'node_modules') + '/'))
      .sort();
    const tops = packages.filter((p, i) => !packages.slice(0, i).some((q) => p.startsWith(`${q}/`)));
    for (const m of tops) s.tree(m, join('/app', relative(app, m)), (p) => !NOT_AT_RUNTIME.test(p));

    for (const k of opts.kernels) for (const m of k.modules) s.file(m, `/kmod/${k.release}/${basename(m)}`);
    s.write('/init', initScript(opts.runnerArgs), 0o755);
    s.pack(opts.out);
  } finally {
    s.remove();
  }
}

/** 311 for python 3.11: the tag of its compiled files. */
function pythonTag(python: string): string {
  return execFileSync(python, ['-c', 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")'], {
    encoding: 'utf8',
  }).trim();
}

/** Paths of the production packages, as npm lists them (it exits 1 on an extraneous package, and still lists). */
function productionPackages(app: string): string[] {
  try {
    return execFileSync('npm', ['ls', '--omit=dev', '--parseable', '--all'], {
      cwd: app,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).split('\n');
  } catch (err) {
    const out = (err as { stdout?: string }).stdout;
    if (!out) throw err;
    return out.split('\n');
  }
}
