/*
 * egressctl as a user runs it: the built CLI in a child process, in the
 * node's namespace when given (where the agent and its pins live).
 */
import { execFile } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export const EGRESSCTL = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'agent', 'cli', 'egressctl.js');

export function egressctl(
  args: string[],
  netnsPath?: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const [cmd, argv] = netnsPath
    ? ['nsenter', [`--net=${netnsPath}`, process.execPath, EGRESSCTL, ...args]]
    : [process.execPath, [EGRESSCTL, ...args]];
  return new Promise((resolve) => {
    execFile(cmd as string, argv as string[], { timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({
        code: err ? (((err as NodeJS.ErrnoException & { code?: number }).code as unknown as number) ?? 1) : 0,
        stdout,
        stderr,
      });
    });
  });
}
