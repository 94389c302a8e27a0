/*
 * The name hash: how a DNS name reaches the kernel. Pure; owns the hash and
 * the wire-format conversion it is defined on, nothing else. The C side
 * (bpf/) implements the same function; both are checked against
 * test/fixtures/name-hash-vectors.json. Changing anything here is a map
 * layout change.
 *
 * Definition (64-bit FNV-1a keyed with the node's secret K, offset basis
 * 0xcbf29ce484222325, prime 0x100000001b3, arithmetic modulo 2^64):
 *   1. Take the name's wire-format labels, ASCII A-Z lower-cased to a-z
 *      (no other byte changes). A trailing dot (root) is dropped; the root's
 *      zero-length label is never fed.
 *   2. h = offset basis XOR K. For each label from the RIGHTMOST to the leftmost:
 *      feed its length byte, then its bytes left to right, where feeding a
 *      byte b is h = (h XOR b) * prime mod 2^64.
 *   3. The running h right after feeding label k (0 = leftmost) is the hash
 *      of the suffix that starts at label k. So one right-to-left pass yields
 *      the hash of every suffix, and the last one is the hash of the name.
 *   4. 0 means "no name" in the maps: a result of 0 is reported as 1. This
 *      mapping applies only to the reported value, never to the running h.
 * Example: "a" feeds 0x01 0x61; "b.a" feeds 0x01 0x61 0x01 0x62.
 * K = 0 gives plain FNV-1a (the shared vectors use it and a few keys).
 *
 * Why keyed, and why it is not enough: unkeyed FNV-1a is invertible (a
 * lattice search finds a name with any given hash in about a minute), and a
 * pod chooses the names it asks for. K (random per node, pinned in
 * fqe_hash_key, kept across restarts) makes collisions unknowable in
 * advance; the kernel still compares the real name with the rule's
 * hashOrderBytes() before it trusts a hit. A hash only indexes.
 *
 * Wildcards: `*.suffix` is stored as wildcardHash(suffix) = nameHash(suffix);
 * the kernel matches it when some PROPER suffix (k >= 1) of the queried name
 * hashes to it, never the full name.
 *
 * Input: a name as text; one trailing dot allowed; labels 1..63 bytes of
 * printable ASCII other than '.'; at most 255 bytes in wire format (with the
 * final zero). Anything else throws. Policy validity (allowed characters,
 * hyphens) is pattern.ts's business, not this module's.
 *
 * API (key: the node's secret, 0n when omitted):
 *   nameHash(name, key): bigint          hash of the whole name
 *   suffixHashes(name, key): bigint[]    [k] = hash of the suffix starting at
 *                                        label k: [0] = whole name … [n-1] = last label
 *   wildcardHash(suffix, key): bigint    = nameHash(suffix, key)
 *   nameToWire(name): Buffer             lower-cased wire format, ending in 0x00
 *   hashOrderBytes(name): Buffer         the bytes the hash feeds, in order
 *                                        (what fqe_policy_val.name holds)
 */

export const FNV64_OFFSET_BASIS = 0xcbf29ce484222325n;
export const FNV64_PRIME = 0x100000001b3n;
/** The hash value that means "no name"; never returned. */
export const NO_NAME_HASH = 0n;

const MASK64 = (1n << 64n) - 1n;
const MAX_WIRE_LENGTH = 255;
const MAX_LABEL_LENGTH = 63;

/**
 * The name's lower-cased bytes (without a trailing dot) and where each label
 * starts and ends, leftmost first. Throws on an invalid name.
 */
function parse(name: string): { bytes: Uint8Array; starts: number[]; ends: number[] } {
  const text = name.endsWith('.') && name !== '.' ? name.slice(0, -1) : name;
  if (text === '' || text === '.') throw new Error(`name hash: "${name}" has no labels`);
  if (text.length + 2 > MAX_WIRE_LENGTH)
    throw new Error(`name hash: "${name}" is ${text.length + 2} bytes in wire format, at most ${MAX_WIRE_LENGTH}`);
  const bytes = new Uint8Array(text.length);
  const starts: number[] = [0];
  const ends: number[] = [];
  for (let i = 0; i <= text.length; i++) {
    const c = i < text.length ? text.charCodeAt(i) : 0x2e;
    if (c === 0x2e) {
      const len = i - starts[starts.length - 1]!;
      if (len === 0) throw new Error(`name hash: "${name}" has an empty label`);
      if (len > MAX_LABEL_LENGTH)
        throw new Error(`name hash: "${name}" has a label longer than ${MAX_LABEL_LENGTH} bytes`);
      ends.push(i);
      if (i < text.length) starts.push(i + 1);
      continue;
    }
    if (c < 0x21 || c > 0x7e) throw new Error(`name hash: "${name}" has a byte outside printable ASCII`);
    bytes[i] = c >= 0x41 && c <= 0x5a ? c + 0x20 : c;
  }
  return { bytes, starts, ends };
}

/** Lower-cased label bytes, leftmost first. Throws on an invalid name. */
function labelsOf(name: string): Buffer[] {
  const { bytes, starts, ends } = parse(name);
  return starts.map((at, k) => Buffer.from(bytes.subarray(at, ends[k])));
}

/*
 * FNV-1a 64 on two 32-bit halves (the same function as on bigint, without
 * its allocations): h = (h ^ byte) * 0x100000001b3 mod 2^64, where the
 * multiplication is h * 0x1b3 plus h << 40.
 */
const PRIME_LOW = 0x1b3;

function toBigInt(hi: number, lo: number): bigint {
  return (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
}

function report(h: bigint): bigint {
  return h === NO_NAME_HASH ? 1n : h;
}

/** [k] = hash of the suffix starting at label k; [0] is the whole name, the last entry the last label alone. */
export function suffixHashes(name: string, key = 0n): bigint[] {
  const { bytes, starts, ends } = parse(name);
  const hashes = new Array<bigint>(starts.length);
  const basis = (FNV64_OFFSET_BASIS ^ key) & MASK64;
  let hi = Number(basis >> 32n) >>> 0;
  let lo = Number(basis & 0xffffffffn) >>> 0;
  const feed = (byte: number) => {
    lo = (lo ^ byte) >>> 0;
    const a = (lo & 0xffff) * PRIME_LOW;
    const b = (lo >>> 16) * PRIME_LOW + (a >>> 16);
    const newLo = (((b & 0xffff) << 16) | (a & 0xffff)) >>> 0;
    hi = (Math.imul(hi, PRIME_LOW) + (b >>> 16) + (lo << 8)) >>> 0;
    lo = newLo;
  };
  for (let k = starts.length - 1; k >= 0; k--) {
    const at = starts[k]!;
    const end = ends[k]!;
    feed(end - at);
    for (let i = at; i < end; i++) feed(bytes[i]!);
    hashes[k] = report(toBigInt(hi, lo));
  }
  return hashes;
}

/** Hash of the whole (exact) name. */
export function nameHash(name: string, key = 0n): bigint {
  return suffixHashes(name, key)[0]!;
}

/** What `*.suffix` is stored as: the hash of the suffix. */
export function wildcardHash(suffix: string, key = 0n): bigint {
  return nameHash(suffix, key);
}

/** The bytes the hash feeds, in order: each label (right to left) as its length byte and lower-cased bytes. */
export function hashOrderBytes(name: string): Buffer {
  const labels = labelsOf(name);
  return Buffer.concat(labels.reverse().flatMap((l) => [Buffer.from([l.length]), l]));
}

/** Lower-cased wire format including the final zero byte (which the hash does not feed). */
export function nameToWire(name: string): Buffer {
  const labels = labelsOf(name);
  return Buffer.concat([...labels.flatMap((l) => [Buffer.from([l.length]), l]), Buffer.from([0])]);
}
