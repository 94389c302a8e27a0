/*
 * Hand-built Ethernet frames for BPF_PROG_TEST_RUN: IPv4/IPv6 with TCP or
 * UDP. Pure; only what the benchmarks and fuzzers need.
 */
import { isIP } from 'node:net';
import { parseIp } from '../../agent/net/addr.js';

export interface FrameSpec {
  src: string;
  dst: string;
  proto: 'tcp' | 'udp';
  sport: number;
  dport: number;
  payload?: Buffer;
  /** TCP flags byte; default SYN */
  tcpFlags?: number;
  /** TCP sequence and acknowledgement numbers; default 0 */
  seq?: number;
  ack?: number;
  /** TCP urgent pointer; default 0 */
  urg?: number;
}

export function buildFrame(f: FrameSpec): Buffer {
  const v6 = isIP(f.src) === 6;
  const payload = f.payload ?? Buffer.alloc(0);
  const l4Len = (f.proto === 'tcp' ? 20 : 8) + payload.length;
  const ipLen = v6 ? 40 : 20;
  const b = Buffer.alloc(14 + ipLen + l4Len);
  b.writeUInt16BE(v6 ? 0x86dd : 0x0800, 12);
  const ip = 14;
  const protoNum = f.proto === 'tcp' ? 6 : 17;
  if (v6) {
    b.writeUInt32BE(0x60000000, ip);
    b.writeUInt16BE(l4Len, ip + 4);
    b[ip + 6] = protoNum;
    b[ip + 7] = 64;
    parseIp(f.src).copy(b, ip + 8);
    parseIp(f.dst).copy(b, ip + 24);
  } else {
    b[ip] = 0x45;
    b.writeUInt16BE(ipLen + l4Len, ip + 2);
    b[ip + 8] = 64;
    b[ip + 9] = protoNum;
    parseIp(f.src).copy(b, ip + 12, 12);
    parseIp(f.dst).copy(b, ip + 16, 12);
  }
  const l4 = ip + ipLen;
  b.writeUInt16BE(f.sport, l4);
  b.writeUInt16BE(f.dport, l4 + 2);
  if (f.proto === 'tcp') {
    b.writeUInt32BE((f.seq ?? 0) >>> 0, l4 + 4);
    b.writeUInt32BE((f.ack ?? 0) >>> 0, l4 + 8);
    b[l4 + 12] = 5 << 4;
    b[l4 + 13] = f.tcpFlags ?? 0x02;
    b.writeUInt16BE(f.urg ?? 0, l4 + 18);
    payload.copy(b, l4 + 20);
  } else {
    b.writeUInt16BE(l4Len, l4 + 4);
    payload.copy(b, l4 + 8);
  }
  return b;
}
