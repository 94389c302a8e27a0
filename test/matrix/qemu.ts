/*
 * One VM of the kernel matrix: qemu boots a kernel with the shared
 * initramfs, one CPU, no network device, the serial console on stdout,
 * which goes to a log file as it comes. The VM powers itself off when its
 * runner is done; past the hard timeout it is killed.
 *
 * Always TCG (emulation): /dev/kvm exists on these machines but nested KVM
 * does not boot these kernels (an MSR assertion in qemu with -cpu host or
 * max, an emulation failure in the kernel's decompressor otherwise).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';

export interface VmOptions {
  vmlinuz: string;
  initrd: string;
  logFile: string;
  timeoutMs: number;
  memoryMb?: number;
}

export interface VmResult {
  log: string;
  elapsedMs: number;
  timedOut: boolean;
}

const live = new Set<ChildProcess>();

/** Kill the VMs still running (the matrix was interrupted). */
export function killVms(): void {
  for (const child of live) child.kill('SIGKILL');
}

export function bootVm(opts: VmOptions): Promise<VmResult> {
  const args = [
    '-accel',
    'tcg',
    '-cpu',
    'max',
    '-smp',
    '1',
    '-m',
    String(opts.memoryMb ?? 2048),
    '-nographic',
    '-no-reboot',
    '-nic',
    'none',
    '-kernel',
    opts.vmlinuz,
    '-initrd',
    opts.initrd,
    '-append',
    'console=ttyS0 panic=-1 quiet',
  ];
  const t0 = performance.now();
  const out = createWriteStream(opts.logFile);
  return new Promise((resolve, reject) => {
    const child = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    live.add(child);
    let log = '';
    let timedOut = false;
    const take = (d: Buffer) => {
      const text = d.toString().replace(/\r/g, '');
      log += text;
      out.write(text);
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      live.delete(child);
      out.end();
      reject(err);
    });
    child.on('close', () => {
      clearTimeout(timer);
      live.delete(child);
      if (timedOut) take(Buffer.from(`\n[kernel matrix: killed after ${Math.round(opts.timeoutMs / 1000)} s]\n`));
      out.end(() => resolve({ log, elapsedMs: Math.round(performance.now() - t0), timedOut }));
    });
  });
}
