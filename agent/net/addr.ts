/*
 * IP addresses as the kernel maps hold them: 16 bytes, IPv4 mapped into
 * ::ffff:0:0/96. Pure; owns parsing and formatting of addresses and CIDRs,
 * nothing else.
 */
import { isIP } from 'node:net';

export const ADDR_LEN = 16;
const V4_MAPPED_PREFIX_BITS = 96;

export interface Cidr {
  addr: Buffer; // 16 bytes, host bits cleared
  /** prefix length in the 128-bit mapped space */
  prefixLen: number;
  family: 4 | 6;
}

function parseV4Into(text: string, out: Buffer, at: number): boolean {
  const parts = text.split('.');
  if (parts.length !== 4) return false;
  for (let i = 0; i < 4; i++) {
    const p = parts[i]!;
    if (!/^\d{1,3}$/.test(p)) return false;
    const n = Number(p);
    if (n > 255) return false;
    out[at + i] = n;
  }
  return true;
}

/** Parse an IPv4 or IPv6 address into the 16-byte mapped form. */
export function parseIp(text: string): Buffer {
  const family = isIP(text);
  const out = Buffer.alloc(ADDR_LEN);
  if (family === 4) {
    out[10] = 0xff;
    out[11] = 0xff;
    parseV4Into(text, out, 12);
    return out;
  }
  if (family !== 6) throw new Error(`invalid IP address "${text}"`);
  let body = text.split('%')[0]!;
  const lastColon = body.lastIndexOf(':');
  const tailPart = body.slice(lastColon + 1);
  if (tailPart.includes('.')) {
    // Embedded IPv4 (::ffff:192.0.2.1): rewrite as two hex groups.
    const v4 = Buffer.alloc(4);
    parseV4Into(tailPart, v4, 0);
    body = `${body.slice(0, lastColon + 1)}${v4.readUInt16BE(0).toString(16)}:${v4.readUInt16BE(2).toString(16)}`;
  }
  const [head, rest] = body.split('::') as [string, string | undefined];
  const hex = (s: string) => (s === '' ? [] : s.split(':').map((g) => parseInt(g, 16)));
  const left = hex(head);
  const right = rest === undefined ? [] : hex(rest);
  const zeros = rest === undefined ? [] : new Array<number>(8 - left.length - right.length).fill(0);
  const groups = [...left, ...zeros, ...right];
  groups.forEach((g, i) => out.writeUInt16BE(g, i * 2));
  return out;
}

export function isV4Mapped(addr: Buffer): boolean {
  for (let i = 0; i < 10; i++) if (addr[i] !== 0) return false;
  return addr[10] === 0xff && addr[11] === 0xff;
}

/** Format a 16-byte address: IPv4-mapped ones as dotted quads. */
export function formatIp(addr: Buffer): string {
  if (addr.length !== ADDR_LEN) throw new Error(`address must be ${ADDR_LEN} bytes, got ${addr.length}`);
  if (isV4Mapped(addr)) return `${addr[12]}.${addr[13]}.${addr[14]}.${addr[15]}`;
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push(addr.readUInt16BE(i * 2));
  // Longest run of zero groups (length >= 2) becomes "::" (RFC 5952).
  let bestAt = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestAt = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (gs: number[]) => gs.map((g) => g.toString(16)).join(':');
  if (bestAt < 0) return hex(groups);
  return `${hex(groups.slice(0, bestAt))}::${hex(groups.slice(bestAt + bestLen))}`;
}

/** Parse "198.51.100.0/24", "2001:db8::/32" or a bare address (host route). */
export function parseCidr(text: string): Cidr {
  const [ip, len, extra] = text.trim().split('/');
  if (extra !== undefined || ip === undefined) throw new Error(`invalid CIDR "${text}"`);
  const family = isIP(ip);
  if (family !== 4 && family !== 6) throw new Error(`invalid CIDR "${text}": "${ip}" is not an IP address`);
  const max = family === 4 ? 32 : 128;
  let bits = max;
  if (len !== undefined) {
    if (!/^\d{1,3}$/.test(len) || Number(len) > max) {
      throw new Error(`invalid CIDR "${text}": prefix length must be 0..${max}`);
    }
    bits = Number(len);
  }
  const addr = parseIp(ip);
  const prefixLen = family === 4 ? V4_MAPPED_PREFIX_BITS + bits : bits;
  for (let bit = prefixLen; bit < 128; bit++) addr[bit >> 3]! &= ~(0x80 >> (bit & 7));
  return { addr, prefixLen, family };
}

export function formatCidr(addr: Buffer, prefixLen: number): string {
  if (isV4Mapped(addr) && prefixLen >= V4_MAPPED_PREFIX_BITS) {
    const bits = prefixLen - V4_MAPPED_PREFIX_BITS;
    return bits === 32 ? formatIp(addr) : `${formatIp(addr)}/${bits}`;
  }
  return prefixLen === 128 ? formatIp(addr) : `${formatIp(addr)}/${prefixLen}`;
}

/** Does the prefix cover this address (16 bytes, IPv4 mapped)? An IPv6 prefix never covers IPv4. */
export function cidrContains(cidr: Cidr, addr: Buffer): boolean {
  if (isV4Mapped(addr) !== (cidr.family === 4)) return false;
  for (let bit = 0; bit < cidr.prefixLen; bit++) {
    const mask = 0x80 >> (bit & 7);
    if ((addr[bit >> 3]! & mask) !== (cidr.addr[bit >> 3]! & mask)) return false;
  }
  return true;
}
