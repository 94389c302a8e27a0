#!/usr/bin/env node
/*
 * Installs the chained CNI plugin on a node (the DaemonSet's init container
 * when the chart's cni.enabled is set; docs/cni.md): copies the binary into
 * the host's CNI bin dir, and makes fqdn-egress-cni the LAST plugin of the
 * node's first network configuration (lexical order, as the runtime picks
 * it), the way istio-cni chains itself. A single-plugin .conf/.json becomes
 * a .conflist beside it (the original kept as <name>.fqdn-egress.orig, which
 * no runtime reads). Idempotent: run again, it changes nothing, or only our
 * entry's bpfPinDir. Every write goes to a temp file renamed into place.
 * Pure apart from main(): chainConfig() is what the unit test checks.
 *   install-cni.js --source PATH --bin-dir DIR --conf-dir DIR [--bpf-pin-dir DIR]
 */
import { chmodSync, existsSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';

export const PLUGIN_TYPE = 'fqdn-egress-cni';
const CONF_EXTENSIONS = ['.conflist', '.conf', '.json'];

type Json = Record<string, unknown>;

/** The network configuration with our plugin last; `changed` false when it was so already. */
export function chainConfig(text: string, file: string, pinDir: string): { conflist: Json; changed: boolean } {
  let conf: Json;
  try {
    conf = JSON.parse(text) as Json;
  } catch (err) {
    throw new Error(`${file}: not JSON: ${(err as Error).message}`);
  }
  if (typeof conf !== 'object' || conf === null || Array.isArray(conf)) throw new Error(`${file}: not a JSON object`);
  let changed = false;
  let list: Json;
  if (Array.isArray(conf.plugins)) {
    list = conf;
  } else if (typeof conf.type === 'string') {
    // a single plugin's configuration: the same network as a list
    const { cniVersion, name, ...plugin } = conf;
    list = { cniVersion, name, plugins: [plugin] };
    changed = true;
  } else {
    throw new Error(`${file}: neither a plugin list ("plugins") nor a plugin ("type")`);
  }
  const plugins = (list.plugins as Json[]).filter((p) => p.type !== PLUGIN_TYPE);
  const ours = (list.plugins as Json[]).find((p) => p.type === PLUGIN_TYPE);
  const want: Json = { type: PLUGIN_TYPE, bpfPinDir: pinDir };
  if (!ours || JSON.stringify(ours) !== JSON.stringify(want) || (list.plugins as Json[]).at(-1) !== ours)
    changed = true;
  return { conflist: { ...list, plugins: [...plugins, want] }, changed };
}

/** The configuration the runtime uses: the first file of a known extension, in lexical order. */
export function firstConfig(confDir: string): string | undefined {
  return readdirSync(confDir)
    .filter((f) => CONF_EXTENSIONS.some((e) => f.endsWith(e)))
    .sort()[0];
}

function writeAtomically(path: string, data: string | Buffer, mode = 0o644): void {
  const tmp = join(path, '..', `.${basename(path)}.tmp`);
  writeFileSync(tmp, data, { mode });
  chmodSync(tmp, mode);
  renameSync(tmp, path);
}

function arg(argv: string[], name: string, fallback?: string): string {
  const i = argv.indexOf(`--${name}`);
  const v = i >= 0 ? argv[i + 1] : fallback;
  if (v === undefined) throw new Error(`install-cni: --${name} is required`);
  return v;
}

export function main(argv: string[]): void {
  const source = arg(argv, 'source', '/app/build/fqdn-egress-cni');
  const binDir = arg(argv, 'bin-dir');
  const confDir = arg(argv, 'conf-dir');
  const pinDir = arg(argv, 'bpf-pin-dir', '/sys/fs/bpf/fqdn-egress');
  const target = join(binDir, PLUGIN_TYPE);
  const binary = readFileSync(source);
  if (!existsSync(target) || !readFileSync(target).equals(binary)) {
    writeAtomically(target, binary, 0o755);
    console.log(`install-cni: ${target} installed`);
  } else {
    console.log(`install-cni: ${target} is current`);
  }
  const first = existsSync(confDir) ? firstConfig(confDir) : undefined;
  if (!first) throw new Error(`install-cni: no network configuration in ${confDir}: is the node's CNI installed yet?`);
  const path = join(confDir, first);
  const { conflist, changed } = chainConfig(readFileSync(path, 'utf8'), path, pinDir);
  if (!changed) {
    console.log(`install-cni: ${path} already ends with ${PLUGIN_TYPE}`);
    return;
  }
  if (path.endsWith('.conflist')) {
    writeAtomically(path, `${JSON.stringify(conflist, null, 2)}\n`);
    console.log(`install-cni: ${PLUGIN_TYPE} chained last in ${path}`);
  } else {
    const listPath = path.replace(/\.(conf|json)$/, '.conflist');
    writeAtomically(listPath, `${JSON.stringify(conflist, null, 2)}\n`);
    renameSync(path, `${path}.fqdn-egress.orig`);
    console.log(
      `install-cni: ${path} became ${listPath} with ${PLUGIN_TYPE} last (original: ${path}.fqdn-egress.orig)`,
    );
  }
}

if (process.argv[1] && basename(process.argv[1]) === 'install-cni.js') {
  try {
    main(process.argv.slice(2));
  } catch (err) {
    console.error((err as Error).message);
    process.exit(1);
  }
}
