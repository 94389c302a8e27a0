/*
 * DNS servers that --allow-cidrs opens. A prefix of --allow-cidrs passes
 * any port: DNS to a server inside it is not DNS to a trusted resolver, so
 * the DNS query filter never judges it (a pod can tunnel through that
 * server) and its answers teach nothing. The agent cannot know every DNS
 * server; it checks the ones it knows of (the node's resolv.conf
 * nameservers) against the prefixes, and says which are open. Pure: takes
 * resolv.conf's text, returns what to warn about.
 */
import { isIP } from 'node:net';
import { formatCidr, parseIp, type Cidr } from './addr.js';

export interface OpenResolver {
  /** the --allow-cidrs prefix, as written back */
  cidr: string;
  /** the DNS server inside it */
  resolver: string;
}

/** The `nameserver` addresses of a resolv.conf (zone ids dropped; anything else ignored). */
export function nameserversOf(resolvConf: string): string[] {
  const out: string[] = [];
  for (const line of resolvConf.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    const ip = m?.[1]?.split('%')[0];
    if (ip && isIP(ip) !== 0) out.push(ip);
  }
  return out;
}

function covers(cidr: Cidr, addr: Buffer, family: number): boolean {
  if (cidr.family !== family) return false; // families stay apart, as in fqe_cidrs
  for (let bit = 0; bit < cidr.prefixLen; bit++) {
    const mask = 0x80 >> (bit & 7);
    if ((cidr.addr[bit >> 3]! & mask) !== (addr[bit >> 3]! & mask)) return false;
  }
  return true;
}

/** Each (prefix, DNS server) where an --allow-cidrs prefix covers a server that is not a trusted resolver. */
export function openResolvers(allowCidrs: Cidr[], servers: string[], trusted: string[]): OpenResolver[] {
  const trustedAddrs = new Set(trusted.map((t) => parseIp(t).toString('hex')));
  const out: OpenResolver[] = [];
  for (const server of new Set(servers)) {
    const addr = parseIp(server);
    if (trustedAddrs.has(addr.toString('hex'))) continue;
    for (const cidr of allowCidrs) {
      if (covers(cidr, addr, isIP(server))) out.push({ cidr: formatCidr(cidr.addr, cidr.prefixLen), resolver: server });
    }
  }
  return out;
}
