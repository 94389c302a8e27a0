/*
 * Internet checksums for tests that inspect frames the kernel wrote: the
 * IPv4 header checksum and the UDP or TCP checksum over its pseudo header.
 * Pure.
 */

/** One's complement sum folded and inverted: 0 over data that carries its own correct checksum. */
export function internetChecksum(data: Buffer, initial = 0): number {
  let sum = initial;
  for (let i = 0; i + 1 < data.length; i += 2) sum += data.readUInt16BE(i);
  if (data.length % 2) sum += data[data.length - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/**
 * Whether the UDP or TCP checksum of an Ethernet frame (IPv4 without
 * options, or IPv6 without extension headers) is right.
 */
export function l4ChecksumOk(frame: Buffer): boolean {
  const v6 = frame.readUInt16BE(12) === 0x86dd;
  const l4 = 14 + (v6 ? 40 : 20);
  const proto = v6 ? frame[20]! : frame[23]!;
  const segLen = v6 ? frame.readUInt16BE(18) : frame.readUInt16BE(16) - 20;
  const seg = frame.subarray(l4, l4 + segLen);
  if (proto === 17 && seg.readUInt16BE(6) === 0) return !v6; // "no checksum": IPv4 UDP only
  const len = Buffer.from([seg.length >> 8, seg.length & 0xff]);
  const pseudo = v6
    ? Buffer.concat([frame.subarray(22, 54), Buffer.from([0, 0]), len, Buffer.from([0, 0, 0, proto])])
    : Buffer.concat([frame.subarray(26, 34), Buffer.from([0, proto]), len]);
  return internetChecksum(Buffer.concat([pseudo, seg])) === 0;
}
