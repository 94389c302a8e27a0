/*
 * The agent container of charts/fqdn-egress, reproduced on a node without a
 * kubelet: what the DaemonSet asks of a container runtime, read from the
 * rendered chart, and two ways to give a process in an image's root file
 * system exactly that.
 *
 *   agentContainerSpec(objects)  from `helm template` output: the agent's
 *                                capabilities, uid/gid, no_new_privs,
 *                                read-only root, host network and volumes
 *                                (hostPath -> bind, emptyDir -> tmpfs);
 *                                throws on anything it cannot reproduce
 *   ociConfig(defaults, rootfs, spec, run)
 *                                an OCI runtime config for runc, from runc's
 *                                own default (`runc spec`): the chart's
 *                                capabilities in every set, no_new_privs, the
 *                                read-only root, the volumes (bpffs rbind with
 *                                rslave propagation: HostToContainer), `binds`,
 *                                no network namespace (hostNetwork: the caller's,
 *                                the node's) and a cgroup below the caller's own
 *   unshareArgv(rootfs, spec, run)
 *                                the same without a runtime: a private mount and
 *                                PID namespace (argv is PID 1, killed when the
 *                                launcher dies; mounts slave to the host's),
 *                                the root remounted read-only,
 *                                fresh proc and sysfs, a minimal /dev, the
 *                                volumes, `binds`, the image's environment only,
 *                                then the image's own setpriv: uid/gid 0, no
 *                                supplementary groups, bounding, inheritable and
 *                                ambient sets = the chart's capabilities,
 *                                no_new_privs
 *   capabilityMask(names)        the CapEff/CapBnd mask /proc shows for them
 *
 * `run` is { env, workingDir, argv, binds }: the image's config and command,
 * and host directories mounted read-only at the same path (the test's
 * endpoints file). Neither way touches the host: mounts are made in the new
 * mount namespace, which dies with its last process. The caller runs the
 * command in the node's network namespace (nsenter --net) and owns the root
 * file system and any runtime state.
 */

type Obj = Record<string, any>;

export interface Volume {
  containerPath: string;
  kind: 'bind' | 'tmpfs';
  /** bind: the host path */
  hostPath?: string;
  /** tmpfs: size limit, as Kubernetes writes it (16Mi) */
  size?: string;
  readOnly: boolean;
}

export interface ContainerSpec {
  image: string;
  /** without the CAP_ prefix, as the chart lists them (BPF, NET_ADMIN, ...) */
  capabilities: string[];
  uid: number;
  gid: number;
  noNewPrivs: boolean;
  readOnlyRoot: boolean;
  hostNetwork: boolean;
  volumes: Volume[];
}

/** Linux capability numbers of the names a chart may add. */
const CAP_NUMBERS: Record<string, number> = {
  NET_ADMIN: 12,
  NET_RAW: 13,
  SYS_ADMIN: 21,
  SYS_RESOURCE: 24,
  PERFMON: 38,
  BPF: 39,
};

export function capabilityMask(names: string[]): bigint {
  let mask = 0n;
  for (const n of names) {
    const bit = CAP_NUMBERS[n];
    if (bit === undefined) throw new Error(`capability ${n}: number not known here`);
    mask |= 1n << BigInt(bit);
  }
  return mask;
}

export function agentContainerSpec(objects: Obj[]): ContainerSpec {
  const ds = objects.find((o) => o.kind === 'DaemonSet');
  if (!ds) throw new Error('the chart rendered no DaemonSet');
  const pod = ds.spec.template.spec;
  const agent = pod.containers.find((c: Obj) => c.name === 'agent');
  if (!agent) throw new Error('the DaemonSet has no agent container');
  const sc = agent.securityContext ?? {};
  if (sc.privileged) throw new Error('a privileged agent: nothing to reproduce with capabilities');
  if (JSON.stringify(sc.capabilities?.drop) !== '["ALL"]')
    throw new Error(`capabilities.drop is ${JSON.stringify(sc.capabilities?.drop)}, not [ALL]`);
  const volumes: Volume[] = [];
  for (const m of agent.volumeMounts ?? []) {
    const v = (pod.volumes ?? []).find((x: Obj) => x.name === m.name);
    if (!v) throw new Error(`volume ${m.name}: not in the pod`);
    if (m.subPath) throw new Error(`volume ${m.name}: subPath is not reproduced here`);
    if (v.hostPath)
      volumes.push({ containerPath: m.mountPath, kind: 'bind', hostPath: v.hostPath.path, readOnly: !!m.readOnly });
    else if (v.emptyDir) {
      if (v.emptyDir.medium !== 'Memory')
        throw new Error(`volume ${m.name}: only a Memory emptyDir is reproduced here`);
      volumes.push({ containerPath: m.mountPath, kind: 'tmpfs', size: v.emptyDir.sizeLimit, readOnly: !!m.readOnly });
    } else throw new Error(`volume ${m.name}: kind ${Object.keys(v).join(',')} not reproduced here`);
  }
  return {
    image: agent.image,
    capabilities: [...(sc.capabilities?.add ?? [])],
    uid: sc.runAsUser ?? 0,
    gid: sc.runAsGroup ?? 0,
    noNewPrivs: sc.allowPrivilegeEscalation === false,
    readOnlyRoot: sc.readOnlyRootFilesystem === true,
    hostNetwork: pod.hostNetwork === true,
    volumes,
  };
}

/** POSIX shell quoting. */
function q(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** 16Mi -> 16m (tmpfs's size= suffixes); plain bytes stay. */
function tmpfsSize(size: string | undefined): string {
  if (!size) return '';
  const m = /^(\d+)(Ki|Mi|Gi)?$/.exec(size);
  if (!m) throw new Error(`emptyDir sizeLimit ${size}: not understood here`);
  return `,size=${m[1]}${m[2] ? m[2][0]!.toLowerCase() : ''}`;
}

export interface RunSpec {
  env: string[];
  workingDir?: string;
  argv: string[];
  binds?: string[];
}

export function ociConfig(defaults: Obj, rootfs: string, spec: ContainerSpec, run: RunSpec, cgroup: string): Obj {
  const config = structuredClone(defaults);
  const caps = spec.capabilities.map((c) => `CAP_${c}`);
  config.root = { path: rootfs, readonly: spec.readOnlyRoot };
  config.process = {
    ...config.process,
    terminal: false,
    user: { uid: spec.uid, gid: spec.gid },
    args: run.argv,
    env: run.env,
    cwd: run.workingDir || '/',
    capabilities: { bounding: caps, effective: caps, permitted: caps, inheritable: caps, ambient: caps },
    noNewPrivileges: spec.noNewPrivs,
  };
  delete config.process.rlimits; // the caller's, as a kubelet leaves them
  if (!spec.hostNetwork) throw new Error("the chart's agent is expected on the host network");
  // hostNetwork: the node's network and UTS namespaces (the caller's)
  config.linux.namespaces = config.linux.namespaces.filter((ns: Obj) => ns.type !== 'network' && ns.type !== 'uts');
  delete config.hostname;
  config.linux.cgroupsPath = cgroup; // relative: below the caller's own cgroup
  for (const v of spec.volumes) {
    if (v.kind === 'bind') {
      config.mounts.push({
        destination: v.containerPath,
        type: 'bind',
        source: v.hostPath,
        options: ['rbind', 'rslave', ...(v.readOnly ? ['ro'] : [])],
      });
    } else {
      config.mounts.push({
        destination: v.containerPath,
        type: 'tmpfs',
        source: 'tmpfs',
        options: ['nosuid', 'nodev', ...(v.readOnly ? ['ro'] : []), ...(v.size ? [tmpfsSize(v.size).slice(1)] : [])],
      });
    }
  }
  for (const dir of run.binds ?? [])
    config.mounts.push({ destination: dir, type: 'bind', source: dir, options: ['bind', 'ro'] });
  return config;
}

export function unshareArgv(rootfs: string, spec: ContainerSpec, run: RunSpec): string[] {
  const r = q(rootfs);
  const lines = ['set -eu'];
  if (spec.readOnlyRoot) lines.push(`mount -o remount,bind,ro ${r}`);
  lines.push(
    `mount -t proc -o nosuid,nodev,noexec proc ${r}/proc`,
    `mount -t sysfs -o ro,nosuid,nodev,noexec sysfs ${r}/sys`,
    `mount -t tmpfs -o nosuid,noexec,mode=755,size=64k tmpfs ${r}/dev`,
    `for d in null zero full random urandom tty; do touch ${r}/dev/$d; mount --bind /dev/$d ${r}/dev/$d; done`,
    `ln -s /proc/self/fd ${r}/dev/fd; ln -s /proc/self/fd/0 ${r}/dev/stdin; ln -s /proc/self/fd/1 ${r}/dev/stdout; ln -s /proc/self/fd/2 ${r}/dev/stderr`,
    `mkdir ${r}/dev/shm; mount -t tmpfs -o nosuid,nodev,noexec,size=64m shm ${r}/dev/shm`,
  );
  for (const v of spec.volumes) {
    const at = `${r}${q(v.containerPath)}`;
    if (v.kind === 'bind') lines.push(`mount --rbind ${q(v.hostPath!)} ${at}`);
    else lines.push(`mount -t tmpfs -o nosuid,nodev${tmpfsSize(v.size)} tmpfs ${at}`);
    if (v.readOnly) lines.push(`mount -o remount,bind,ro ${at}`);
  }
  for (const dir of run.binds ?? []) {
    lines.push(
      `mkdir -p ${r}${q(dir)}`,
      `mount --bind ${q(dir)} ${r}${q(dir)}`,
      `mount -o remount,bind,ro ${r}${q(dir)}`,
    );
  }
  const caps = `-all,${spec.capabilities.map((c) => `+${c.toLowerCase()}`).join(',')}`;
  const setpriv = [
    'setpriv',
    `--reuid=${spec.uid}`,
    `--regid=${spec.gid}`,
    '--clear-groups',
    `--inh-caps=${caps}`,
    `--ambient-caps=${caps}`,
    `--bounding-set=${caps}`,
    ...(spec.noNewPrivs ? ['--no-new-privs'] : []),
    '--',
  ];
  // unshare --root/--wd: chroot and chdir into the image, then its setpriv and its PATH
  const exec = [
    'env',
    '-i',
    ...run.env,
    '/usr/bin/unshare',
    `--root=${rootfs}`,
    `--wd=${run.workingDir || '/'}`,
    ...setpriv,
    ...run.argv,
  ];
  lines.push(`exec ${exec.map(q).join(' ')}`);
  // slave: the host's later mounts reach the container (HostToContainer), none go back
  return [
    'unshare',
    '--mount',
    '--propagation',
    'slave',
    '--pid',
    '--fork',
    '--kill-child',
    '--',
    'sh',
    '-c',
    lines.join('\n'),
  ];
}
