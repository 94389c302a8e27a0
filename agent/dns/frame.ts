// SPDX-License-Identifier: Apache-2.0
/*
 * Frame parsing for the DNS tap: an Ethernet frame as the AF_PACKET socket
 * delivers it → the transport segment it carries (addresses, ports, payload).
 * Pure and total: every byte is hostile, nothing throws, a frame that cannot
 * be used comes back as a typed rejection. It must not interpret the payload
 * (message.ts does) nor keep state across frames (tcp-stream.ts does).
 *
 * Follows bpf/lib/parse.h: Ethernet II without VLAN tags, IPv4 (options
 * allowed, no fragments), IPv6 with up to four extension headers (hop-by-hop,
 * routing, destination options; any fragment header is refused). The IP
 * length decides where the packet ends, so Ethernet padding is ignored.
 */
import { formatIp } from '../net/addr.js';

/** A frame as the tap delivers it (the binding's PacketSocket gives these). */
export interface CapturedPacket {
  data: Buffer;
  ifindex: number;
  /** sll_pkttype: PACKET_HOST 0, PACKET_OUTGOING 4, ... */
  pktType: number;
  /** CLOCK_REALTIME ns (SO_TIMESTAMPNS) */
  tsNs: bigint;
}

export type FrameRejection = 'truncated' | 'not-ip' | 'not-udp-tcp' | 'fragment' | 'bad-header';

export interface TcpInfo {
  /** sequence number of the first payload byte (or of the SYN) */
  seq: number;
  /** the flag byte: FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10 */
  flags: number;
}

export interface Segment {
  ifindex: number;
  /** sll_pkttype: 0 host (query from the pod), 4 outgoing (answer to the pod) */
  pktType: number;
  tsNs: bigint;
  family: 4 | 6;
  /** dotted quad for IPv4, RFC 5952 for IPv6 */
  src: string;
  dst: string;
  proto: 'udp' | 'tcp';
  sport: number;
  dport: number;
  /** a view into the captured frame (not a copy) */
  payload: Buffer;
  tcp?: TcpInfo;
}

export type FrameResult = { ok: true; segment: Segment } | { ok: false; reason: FrameRejection; detail: string };

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;

const ETH_HLEN = 14;
const ETH_P_IP = 0x0800;
const ETH_P_IPV6 = 0x86dd;
const IPV4_MIN_HLEN = 20;
const IPV6_HLEN = 40;
const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;
const NEXTHDR_HOP = 0;
const NEXTHDR_ROUTING = 43;
const NEXTHDR_FRAGMENT = 44;
const NEXTHDR_DEST = 60;
const MAX_EXT_HDRS = 4;
const UDP_HLEN = 8;
const TCP_MIN_HLEN = 20;

type Failure = { ok: false; reason: FrameRejection; detail: string };

function reject(reason: FrameRejection, detail: string): Failure {
  return { ok: false, reason, detail };
}

/** IP layer result: where the transport header starts and ends. */
interface IpLayer {
  family: 4 | 6;
  src: string;
  dst: string;
  proto: number;
  /** offset of the transport header in the frame */
  l4Start: number;
  /** end of the IP packet in the frame (padding excluded) */
  l4End: number;
}

function formatV4(data: Buffer, at: number): string {
  return `${data[at]}.${data[at + 1]}.${data[at + 2]}.${data[at + 3]}`;
}

function parseIpv4(data: Buffer, off: number): IpLayer | Failure {
  if (data.length < off + IPV4_MIN_HLEN)
    return reject('truncated', `IPv4 header needs ${IPV4_MIN_HLEN} bytes, ${data.length - off} captured`);
  const version = data[off]! >> 4;
  if (version !== 4) return reject('bad-header', `IPv4 ethertype with IP version ${version}`);
  const hlen = (data[off]! & 0x0f) * 4;
  if (hlen < IPV4_MIN_HLEN) return reject('bad-header', `IPv4 header length ${hlen} below ${IPV4_MIN_HLEN}`);
  const totalLen = data.readUInt16BE(off + 2);
  if (totalLen < hlen) return reject('bad-header', `IPv4 total length ${totalLen} below header length ${hlen}`);
  if (data.length < off + totalLen)
    return reject('truncated', `IPv4 total length ${totalLen}, ${data.length - off} captured`);
  const fragField = data.readUInt16BE(off + 6);
  const moreFragments = (fragField & 0x2000) !== 0;
  const fragOffset = fragField & 0x1fff;
  if (moreFragments || fragOffset !== 0) {
    return reject('fragment', `IPv4 fragment (offset ${fragOffset * 8}, more fragments ${moreFragments})`);
  }
  return {
    family: 4,
    src: formatV4(data, off + 12),
    dst: formatV4(data, off + 16),
    proto: data[off + 9]!,
    l4Start: off + hlen,
    l4End: off + totalLen,
  };
}

function parseIpv6(data: Buffer, off: number): IpLayer | Failure {
  if (data.length < off + IPV6_HLEN)
    return reject('truncated', `IPv6 header needs ${IPV6_HLEN} bytes, ${data.length - off} captured`);
  const version = data[off]! >> 4;
  if (version !== 6) return reject('bad-header', `IPv6 ethertype with IP version ${version}`);
  const payloadLen = data.readUInt16BE(off + 4);
  // A zero payload length means a jumbogram (RFC 2675): not DNS, not supported.
  if (payloadLen === 0) return reject('bad-header', 'IPv6 payload length 0 (jumbogram or empty)');
  const end = off + IPV6_HLEN + payloadLen;
  if (data.length < end)
    return reject('truncated', `IPv6 payload length ${payloadLen}, ${data.length - off - IPV6_HLEN} captured`);
  let next = data[off + 6]!;
  let at = off + IPV6_HLEN;
  for (let i = 0; ; i++) {
    if (next === NEXTHDR_FRAGMENT) return reject('fragment', 'IPv6 fragment header');
    if (next !== NEXTHDR_HOP && next !== NEXTHDR_ROUTING && next !== NEXTHDR_DEST) break;
    if (i === MAX_EXT_HDRS) return reject('bad-header', `more than ${MAX_EXT_HDRS} IPv6 extension headers`);
    if (at + 2 > end) return reject('bad-header', `IPv6 extension header ${next} runs past the payload`);
    const extLen = (data[at + 1]! + 1) * 8;
    if (at + extLen > end)
      return reject('bad-header', `IPv6 extension header ${next} (${extLen} bytes) runs past the payload`);
    next = data[at]!;
    at += extLen;
  }
  return {
    family: 6,
    src: formatIp(data.subarray(off + 8, off + 24)),
    dst: formatIp(data.subarray(off + 24, off + 40)),
    proto: next,
    l4Start: at,
    l4End: end,
  };
}

/** Parse one captured frame. Never throws. */
export function parseFrame(p: CapturedPacket): FrameResult {
  const data = p.data;
  if (!Buffer.isBuffer(data) || data.length < ETH_HLEN) {
    return reject(
      'truncated',
      `Ethernet header needs ${ETH_HLEN} bytes, ${Buffer.isBuffer(data) ? data.length : 0} captured`,
    );
  }
  const ethertype = data.readUInt16BE(12);
  let ip: IpLayer | Failure;
  if (ethertype === ETH_P_IP) ip = parseIpv4(data, ETH_HLEN);
  else if (ethertype === ETH_P_IPV6) ip = parseIpv6(data, ETH_HLEN);
  else return reject('not-ip', `ethertype 0x${ethertype.toString(16).padStart(4, '0')}`);
  if ('ok' in ip) return ip;

  const base = { ifindex: p.ifindex, pktType: p.pktType, tsNs: p.tsNs, family: ip.family, src: ip.src, dst: ip.dst };
  const l4Len = ip.l4End - ip.l4Start;
  if (ip.proto === IPPROTO_UDP) {
    if (l4Len < UDP_HLEN) return reject('bad-header', `UDP header needs ${UDP_HLEN} bytes, IP carries ${l4Len}`);
    const udpLen = data.readUInt16BE(ip.l4Start + 4);
    if (udpLen < UDP_HLEN || udpLen > l4Len) return reject('bad-header', `UDP length ${udpLen}, IP carries ${l4Len}`);
    return {
      ok: true,
      segment: {
        ...base,
        proto: 'udp',
        sport: data.readUInt16BE(ip.l4Start),
        dport: data.readUInt16BE(ip.l4Start + 2),
        payload: data.subarray(ip.l4Start + UDP_HLEN, ip.l4Start + udpLen),
      },
    };
  }
  if (ip.proto === IPPROTO_TCP) {
    if (l4Len < TCP_MIN_HLEN)
      return reject('bad-header', `TCP header needs ${TCP_MIN_HLEN} bytes, IP carries ${l4Len}`);
    const hlen = (data[ip.l4Start + 12]! >> 4) * 4;
    if (hlen < TCP_MIN_HLEN || hlen > l4Len)
      return reject('bad-header', `TCP header length ${hlen}, IP carries ${l4Len}`);
    return {
      ok: true,
      segment: {
        ...base,
        proto: 'tcp',
        sport: data.readUInt16BE(ip.l4Start),
        dport: data.readUInt16BE(ip.l4Start + 2),
        payload: data.subarray(ip.l4Start + hlen, ip.l4End),
        tcp: { seq: data.readUInt32BE(ip.l4Start + 4), flags: data[ip.l4Start + 13]! },
      },
    };
  }
  return reject('not-udp-tcp', `IP protocol ${ip.proto}`);
}
