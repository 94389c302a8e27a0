/*
 * The agent image as shipped: what build/image.oci.tar (scripts/image.sh)
 * holds, run as charts/fqdn-egress runs it. `npm run test:image` builds the
 * archive and runs this file; it is not in `npm test` (dist/test/image/ is
 * outside its glob).
 *
 * The archive is opened with buildah (a working container, mounted). One
 * test reads what it holds and must not hold. The others run its entrypoint
 * and its egressctl in the node-in-a-box under exactly what the rendered
 * chart asks for (test/image/chart-container.ts): its capabilities and no
 * other, uid 0, no_new_privs, a read-only root, the bpffs hostPath and the
 * /tmp emptyDir, the node's network (hostNetwork); once with runc (Debian's,
 * from an OCI bundle: what a kubelet's runtime does) and once without a
 * runtime (unshare, chroot and the image's setpriv). The pod is declared
 * through the file source, its endpoints file mounted read-only into the
 * container. Root only; with CI=true a missing tool, root or archive fails
 * the test instead of skipping it. Everything it makes (the working container
 * and its mount, runc state and bundles, namespaces, processes, pins) is
 * removed when it ends, also on failure.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { requireKernelTestEnv, run, sleep, Topology } from '../helpers/topology.js';
import { withAgentBox, type AgentBox } from '../helpers/agent-fixture.js';
import { helm, REPO_ROOT } from '../helpers/helm.js';
import {
  agentContainerSpec,
  capabilityMask,
  ociConfig,
  unshareArgv,
  type ContainerSpec,
  type RunSpec,
} from './chart-container.js';

const ARCHIVE = process.env.FQE_IMAGE_ARCHIVE ?? join(REPO_ROOT, 'build', 'image.oci.tar');
const TOOLS = ['buildah', 'unshare', 'nsenter', 'tar', 'dnsmasq', 'dig', 'curl'];
const PACKAGE = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };

interface OpenedImage {
  container: string;
  rootfs: string;
  entrypoint: string[];
  env: string[];
  workingDir: string;
  labels: Record<string, string>;
  /** run before the working container is removed: its processes must be gone */
  beforeRemove: Array<() => Promise<void>>;
}

/** Fail (CI=true) or skip when the environment or the archive is missing. */
function ready(t: TestContext, tools: string[] = []): boolean {
  if (!requireKernelTestEnv(t, [...TOOLS, ...tools])) return false;
  if (existsSync(ARCHIVE)) return true;
  const why = `no image archive at ${ARCHIVE} (bash scripts/image.sh makes it)`;
  if (process.env.CI === 'true') throw new Error(`${why} (CI=true: failing, not skipping)`);
  t.skip(why);
  return false;
}

const RUNC_STATE = `/run/fqet-${process.pid.toString(36)}-runc`;

/**
 * What this process made outside its topology, for when it is ended before
 * its t.after hooks run (the runner ends a file that overran --test-timeout
 * with SIGTERM; topology.ts then tears its topologies down and exits, which
 * runs this): runc containers, working containers, bundle and state dirs.
 */
const leftovers = { runc: new Set<string>(), buildah: new Set<string>(), dirs: new Set<string>() };
process.on('exit', () => {
  const quietly = (cmd: string, args: string[]) => {
    try {
      execFileSync(cmd, args, { stdio: 'ignore', timeout: 30_000 });
    } catch {
      /* already gone */
    }
  };
  for (const id of leftovers.runc) quietly('runc', ['--root', RUNC_STATE, 'delete', '--force', id]);
  for (const name of leftovers.buildah) quietly('buildah', ['rm', name]);
  for (const dir of leftovers.dirs) rmSync(dir, { recursive: true, force: true });
});

/** The chart's agent container, from `helm template` with default values. */
async function chartSpec(): Promise<ContainerSpec> {
  const { stdout } = await helm([
    'template',
    'fqdn-egress',
    join(REPO_ROOT, 'charts', 'fqdn-egress'),
    '--namespace',
    'kube-system',
  ]);
  return agentContainerSpec(
    parseAllDocuments(stdout)
      .map((d) => d.toJS())
      .filter((o) => o),
  );
}

/** A buildah working container of the archive, mounted; removed after the test. */
async function openImage(t: TestContext): Promise<OpenedImage> {
  const name = `fqet-${process.pid.toString(36)}-image-${Date.now().toString(36)}`; // swept by scripts/test-image.sh when left behind
  const beforeRemove: Array<() => Promise<void>> = [];
  t.after(async () => {
    for (const fn of beforeRemove) await fn().catch(() => undefined);
    await run('buildah', ['rm', name], 60_000).catch(() => undefined);
    leftovers.buildah.delete(name);
  });
  leftovers.buildah.add(name);
  await run('buildah', ['from', '--quiet', '--name', name, `oci-archive:${ARCHIVE}`], 300_000);
  const rootfs = (await run('buildah', ['mount', name])).stdout.trim();
  const info = JSON.parse((await run('buildah', ['inspect', '--type', 'container', name])).stdout) as {
    OCIv1: { config: Record<string, any> };
  };
  const config = info.OCIv1.config;
  return {
    container: name,
    rootfs,
    entrypoint: config.Entrypoint ?? [],
    env: config.Env ?? [],
    workingDir: config.WorkingDir ?? '/',
    labels: config.Labels ?? {},
    beforeRemove,
  };
}

/** The archive's manifest: its name and its layers (compressed sizes). */
async function archiveManifest(): Promise<{ refName: string; layers: number[] }> {
  const cat = async (member: string) => (await run('tar', ['-xOf', ARCHIVE, member], 60_000)).stdout;
  const index = JSON.parse(await cat('index.json')) as {
    manifests: Array<{ digest: string; annotations?: Record<string, string> }>;
  };
  assert.equal(index.manifests.length, 1, 'one image in the archive');
  const entry = index.manifests[0]!;
  const manifest = JSON.parse(await cat(`blobs/sha256/${entry.digest.replace('sha256:', '')}`)) as {
    layers: Array<{ size: number }>;
  };
  return {
    refName: entry.annotations?.['org.opencontainers.image.ref.name'] ?? '',
    layers: manifest.layers.map((l) => l.size),
  };
}

/** Whether the image holds path (a dangling or absolute symlink counts: it is not followed). */
function exists(rootfs: string, path: string): boolean {
  try {
    lstatSync(join(rootfs, path));
    return true;
  } catch {
    return false;
  }
}

function mib(bytes: number): string {
  return `${(bytes / 1048576).toFixed(1)} MiB`;
}

test("the image is the chart's, labelled from git, and holds the agent but no compiler, headers or dev dependencies", async (t) => {
  if (!ready(t)) return;
  const [spec, image, manifest] = await Promise.all([chartSpec(), openImage(t), archiveManifest()]);
  assert.equal(manifest.refName, spec.image, "the archive is named as the chart's default image");
  assert.equal(image.labels['org.opencontainers.image.version'], PACKAGE.version);
  assert.match(image.labels['org.opencontainers.image.revision'] ?? '', /^[0-9a-f]{40}(-dirty)?$/);
  assert.match(image.labels['org.opencontainers.image.source'] ?? '', /^https:\/\//);
  assert.deepEqual(image.entrypoint.slice(-1), ['/app/dist/agent/main.js']);

  const root = image.rootfs;
  for (const path of [
    'app/dist/agent/main.js',
    'app/dist/agent/cli/egressctl.js',
    'app/build/Release/fqe_native.node',
    'app/bpf/enforcer.bpf.o',
    'app/bpf/learner.bpf.o',
    'app/bpf/dns_filter.bpf.o',
    'usr/local/bin/egressctl',
    'usr/local/bin/node',
    'usr/bin/setpriv',
    'app/build/fqdn-egress-cni',
    'app/dist/agent/cli/install-cni.js',
  ]) {
    assert.ok(exists(root, path), `the image holds /${path}`);
  }
  // the CNI plugin goes onto the node (the chart's install-cni): static, so it runs on any host
  const plugin = join(root, 'app/build/fqdn-egress-cni');
  const elf = readFileSync(plugin);
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phnum = elf.readUInt16LE(0x38);
  const interp = Array.from({ length: phnum }, (_, i) => elf.readUInt32LE(phoff + i * elf.readUInt16LE(0x36))).includes(
    3,
  );
  assert.equal(interp, false, 'the CNI plugin is static (no program interpreter)');
  const version = spawnSync(plugin, [], { env: { CNI_COMMAND: 'VERSION' }, input: '{"cniVersion":"1.0.0"}' });
  assert.equal(version.status, 0, version.stderr.toString());
  assert.ok(
    (JSON.parse(version.stdout.toString()) as { supportedVersions: string[] }).supportedVersions.includes('1.0.0'),
    "the image's CNI plugin answers VERSION",
  );
  assert.ok(
    exists(root, 'usr/bin/ip') || exists(root, 'usr/sbin/ip') || exists(root, 'sbin/ip'),
    'the image holds ip (iproute2)',
  );
  const compilers = /^(cc|c\+\+|gcc|g\+\+|clang|clang\+\+|cpp|ld|ld\.bfd|as|llc|make)(-[0-9.]+)?$/;
  for (const dir of ['usr/bin', 'usr/local/bin', 'usr/sbin']) {
    const found = readdirSync(join(root, dir)).filter(
      (f) => compilers.test(f) || /^x86_64-linux-gnu-(gcc|g\+\+|ld)/.test(f),
    );
    assert.deepEqual(found, [], `no compiler or toolchain in /${dir}`);
  }
  for (const path of [
    'usr/include/bpf',
    'usr/include/linux',
    'usr/include/libelf.h',
    'usr/local/include/node',
    'app/dist/test',
    'app/dist/bench',
    'app/native',
    'app/bpf/lib',
  ]) {
    assert.ok(!exists(root, path), `no /${path} in the image`);
  }
  // every package the lock file marks dev-only (typescript, node-gyp, ... and theirs);
  // @types/node stays: @kubernetes/client-node depends on it
  const lock = JSON.parse(readFileSync(join(REPO_ROOT, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, { dev?: boolean }>;
  };
  const devOnly = Object.entries(lock.packages)
    .filter(([path, p]) => path && p.dev)
    .map(([path]) => path);
  assert.ok(devOnly.includes('node_modules/typescript'), 'the lock file marks typescript dev-only');
  const leaked = devOnly.filter((path) => exists(root, join('app', path)));
  assert.deepEqual(leaked, [], 'no dev-only package in /app/node_modules');
  const total = manifest.layers.reduce((a, b) => a + b, 0);
  t.diagnostic(
    `image ${spec.image}: ${manifest.layers.length} layers, ${mib(total)} compressed (${manifest.layers.map(mib).join(', ')})`,
  );
});

type Runtime = 'runc' | 'unshare';
let containers = 0;

/**
 * A command that runs cmd in the image as the chart's agent container, with
 * runc (an OCI bundle; a state dir of this process) or with unshare and the
 * image's setpriv. pid() tells the container's PID 1 once it runs; whatever
 * is left of it is removed before the working container.
 */
interface Container {
  argv: string[];
  /** the container's PID 1, given the launcher's PID */
  pid(launcherPid: number): number;
  /** ends it (runc outlives a killed `runc run`; unshare's PID 1 does not outlive unshare) */
  stop(): Promise<void>;
}

function container(runtime: Runtime, image: OpenedImage, spec: ContainerSpec, cmd: RunSpec): Container {
  const id = `fqet-${process.pid.toString(36)}-c${containers++}`;
  if (runtime === 'unshare') {
    let pid = 0;
    const gone = async () => {
      for (let i = 0; i < 100 && pid && existsSync(`/proc/${pid}`); i++) await sleep(50);
    };
    image.beforeRemove.push(gone);
    return {
      argv: unshareArgv(image.rootfs, spec, cmd),
      // PID 1 of the container is the launcher's only child
      pid: (launcher) =>
        (pid = Number(readFileSync(`/proc/${launcher}/task/${launcher}/children`, 'utf8').trim().split(/\s+/)[0])),
      async stop() {
        if (pid) process.kill(pid, 'SIGKILL');
        await gone();
      },
    };
  }
  const bundle = mkdtempSync(join(tmpdir(), 'fqet-bundle-'));
  leftovers.runc.add(id);
  leftovers.dirs.add(bundle).add(RUNC_STATE);
  const remove = async () => {
    await run('runc', ['--root', RUNC_STATE, 'delete', '--force', id]).catch(() => undefined);
    rmSync(bundle, { recursive: true, force: true });
    leftovers.runc.delete(id);
    leftovers.dirs.delete(bundle);
  };
  image.beforeRemove.push(async () => {
    await remove();
    rmSync(RUNC_STATE, { recursive: true, force: true }); // empty once its containers are deleted
  });
  execFileSync('runc', ['spec', '--bundle', bundle]);
  const defaults = JSON.parse(readFileSync(join(bundle, 'config.json'), 'utf8')) as Record<string, any>;
  writeFileSync(join(bundle, 'config.json'), JSON.stringify(ociConfig(defaults, image.rootfs, spec, cmd, id), null, 1));
  return {
    argv: ['runc', '--root', RUNC_STATE, 'run', '--bundle', bundle, id],
    pid: () =>
      (JSON.parse(execFileSync('runc', ['--root', RUNC_STATE, 'state', id], { encoding: 'utf8' })) as { pid: number })
        .pid,
    stop: remove,
  };
}

/** The agent in the container: its process, its enforcement, egressctl from the image. */
async function enforcesAndInspects(
  runtime: Runtime,
  box: AgentBox,
  image: OpenedImage,
  spec: ContainerSpec,
  env: string[],
  agent: Container,
): Promise<void> {
  const pid = agent.pid(box.agent!.pid!);
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string) => BigInt(`0x${new RegExp(`^${name}:\\s*([0-9a-f]+)$`, 'm').exec(status)?.[1] ?? 'x'}`);
  const want = capabilityMask(spec.capabilities);
  for (const set of ['CapEff', 'CapPrm', 'CapBnd', 'CapInh', 'CapAmb']) {
    assert.equal(
      field(set).toString(16),
      want.toString(16),
      `${set}: exactly the chart's ${spec.capabilities.join(', ')}`,
    );
  }
  assert.match(status, /^NoNewPrivs:\s*1$/m);
  assert.match(status, /^Uid:\s*0\s/m);
  assert.ok(
    readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('/app/dist/agent/main.js'),
    "the image's entrypoint runs",
  );

  assert.deepEqual(await box.dig('payments', 'api.stripe.test'), ['203.0.113.10'], 'an allowed name resolves');
  assert.equal(await box.connect('payments', '203.0.113.10', 443), true, 'and connects');
  assert.deepEqual(await box.dig('payments', 'blocked.test'), [], 'a name not allowed is refused');
  assert.equal(
    await box.connect('payments', '198.51.100.10', 443, 700),
    false,
    'its address typed directly is dropped',
  );
  assert.equal(await box.connect('frontend', '198.51.100.10', 443), true, 'a pod without the annotation is untouched');

  const ctl = container(runtime, image, spec, {
    env,
    workingDir: image.workingDir,
    argv: ['egressctl', 'inspect', '--output', 'json', '--pin-dir', box.topo.pinDir],
  });
  const inspect = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(
      'nsenter',
      [`--net=${Topology.nsPath(box.topo.nodeNs)}`, ...ctl.argv],
      { timeout: 60_000 },
      (err, stdout, stderr) => {
        resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
      },
    );
  });
  assert.equal(inspect.code, 0, `egressctl inspect: ${inspect.stderr}`);
  const pods = (JSON.parse(inspect.stdout) as { pods: Array<Record<string, any>> }).pods;
  const pay = pods.find((p) => p.name === 'payments');
  assert.ok(pay, 'egressctl lists payments');
  assert.equal(pay.mode, 'enforce');
  assert.deepEqual(
    pay.allow.map((a: { pattern: string }) => a.pattern),
    ['api.stripe.test'],
  );
  assert.equal(pay.ips.find((i: { ip: string }) => i.ip === '203.0.113.10')?.name, 'api.stripe.test');
  assert.ok(!pods.some((p) => p.name === 'frontend'), 'a pod without the annotation is not enforced');
}

for (const runtime of ['runc', 'unshare'] as const) {
  test(`the image's agent, with only the chart's capabilities (${runtime}), enforces an annotated pod; the image's egressctl inspect shows it`, async (t) => {
    if (!ready(t, runtime === 'runc' ? ['runc'] : [])) return;
    const [spec, image] = await Promise.all([chartSpec(), openImage(t)]);
    assert.ok(spec.hostNetwork, "the agent runs in the node's network (the node namespace here)");
    assert.ok(
      spec.volumes.some((v) => v.kind === 'bind' && v.containerPath === '/sys/fs/bpf'),
      'the bpffs hostPath',
    );
    // the downward API's node name, as the chart sets it
    const env = [...image.env, 'NODE_NAME=image-test-node', 'FQDN_EGRESS_NODE_NAME=image-test-node'];

    await withAgentBox(t, [{ name: 'payments' }, { name: 'frontend' }], {}, async (box) => {
      box.writePods([{ name: 'payments', allow: 'api.stripe.test' }, { name: 'frontend' }]);
      const binds = [dirname(box.endpointsFile)];
      const started: { agent?: Container } = {};
      try {
        await box.startAgent([], {
          launch: (flags) =>
            (started.agent = container(runtime, image, spec, {
              env,
              workingDir: image.workingDir,
              argv: [...image.entrypoint, ...flags],
              binds,
            })).argv,
          readyTimeoutMs: 90_000,
        });
        await enforcesAndInspects(runtime, box, image, spec, env, started.agent!);
      } finally {
        await started.agent?.stop(); // before the topology goes
      }
    });
  });
}
