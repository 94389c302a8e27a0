// SPDX-License-Identifier: Apache-2.0
/*
 * DNS message decoding for the learner: one DNS message (UDP payload, or one
 * message cut out of a TCP stream without its length prefix) → the queried
 * name, the addresses the answer section gives for it and their TTLs. Pure
 * and total: hostile bytes come back as a typed rejection, nothing throws.
 * It does not decide whether an answer is trusted or allowed (the agent does,
 * with the resolver list and the policy) and does not clamp TTLs.
 *
 * Rules (NPEP-133): every A/AAAA of class IN in the
 * ANSWER section counts for the queried name, whatever its owner name (CNAME
 * chains inside one answer); each address's TTL is min(its own TTL, every
 * CNAME TTL in the answer section). Authority and additional records never
 * count.
 *
 * dns-packet does the decoding; a structural walk over the wire format comes
 * first because dns-packet trusts what it reads: it ignores RDLENGTH for
 * A/AAAA/CNAME (a record with a wrong length shifts every record after it) and
 * formats an A record cut short as "1.2.undefined.undefined". The walk checks
 * every record's bounds and RDLENGTH, and that no label of the question or of
 * an answer name contains a '.' (dns-packet joins labels with dots, so
 * ["api.stripe", "com"] would read as api.stripe.com). A compression pointer
 * in the question name is refused: the question is the first name of the
 * message, so a pointer can only aim at the header, and the kernel learner
 * (bpf/lib/dns.h) refuses it too; both learners judge the same answers.
 */
import dnsPacket from 'dns-packet';
import type { DecodedPacket } from 'dns-packet';
import { isIPv4, isIPv6 } from 'node:net';
import { formatIp, parseIp } from '../net/addr.js';

export type DnsRejection = 'malformed' | 'no-question' | 'multiple-questions';

export interface AnsweredIp {
  /** dotted quad, or RFC 5952 IPv6 */
  ip: string;
  family: 4 | 6;
  /** seconds: min(record TTL, every CNAME TTL in the answer section); not clamped */
  ttl: number;
}

export interface DnsMessage {
  id: number;
  isResponse: boolean;
  /** 'NOERROR', 'NXDOMAIN', 'SERVFAIL', … (header RCODE, EDNS extension ignored) */
  rcode: string;
  /** TC bit: a UDP answer cut short by the server (the records present are whole) */
  truncated: boolean;
  /** name: lower case (ASCII), no trailing dot ('' for the root) */
  question?: { name: string; type: string };
  /** A/AAAA of the answer section, one entry per distinct address; [] for a query */
  answers: AnsweredIp[];
  /** CNAME targets in the answer section, lower case, no trailing dot, in order */
  cnames: string[];
  /** smallest TTL among the answer section's A/AAAA/CNAME records, null if none */
  minTtl: number | null;
}

export type DnsResult = { ok: true; message: DnsMessage } | { ok: false; reason: DnsRejection; detail: string };

const HEADER_LEN = 12;
const MAX_NAME_WIRE_LEN = 255;
const TYPE_A = 1;
const TYPE_CNAME = 5;
const TYPE_AAAA = 28;
const CLASS_IN = 1;
const OPCODE_QUERY = 0;

/** One record of the answer section as the wire holds it. */
interface WireRecord {
  type: number;
  klass: number;
  ttl: number;
  rdOffset: number;
  rdLength: number;
}

class Malformed extends Error {}

/** Lower-case ASCII letters only: DNS compares names case-insensitively in ASCII. */
function normalizeName(name: string): string {
  const lower = name.replace(/[A-Z]/g, (c) => c.toLowerCase());
  return lower.endsWith('.') ? lower.slice(0, -1) : lower;
}

/**
 * Walk a (possibly compressed) name at `off`; return the offset just past it
 * in the message. Pointers must point backwards (as dns-packet requires), so
 * the walk ends. With `strictLabels`, a label holding a '.' is refused; with
 * `noPointers`, any compression pointer is.
 */
function skipName(buf: Buffer, off: number, what: string, strictLabels: boolean, noPointers = false): number {
  let at = off;
  let end = -1;
  let wireLen = 0;
  let lowestPointerSource = off;
  for (;;) {
    if (at >= buf.length) throw new Malformed(`${what}: name runs past the message`);
    const len = buf[at]!;
    if (len === 0) {
      if (end < 0) end = at + 1;
      return end;
    }
    const kind = len & 0xc0;
    if (kind === 0xc0) {
      if (noPointers) throw new Malformed(`${what}: compression pointer in the question name`);
      if (at + 1 >= buf.length) throw new Malformed(`${what}: compression pointer runs past the message`);
      const target = buf.readUInt16BE(at) & 0x3fff;
      if (target >= lowestPointerSource) throw new Malformed(`${what}: compression pointer does not point backwards`);
      if (end < 0) end = at + 2;
      lowestPointerSource = target;
      at = target;
      continue;
    }
    if (kind !== 0) throw new Malformed(`${what}: unsupported label type 0x${len.toString(16)}`);
    if (at + 1 + len > buf.length) throw new Malformed(`${what}: label runs past the message`);
    wireLen += len + 1;
    if (wireLen >= MAX_NAME_WIRE_LEN) throw new Malformed(`${what}: name longer than ${MAX_NAME_WIRE_LEN} bytes`);
    if (strictLabels && buf.subarray(at + 1, at + 1 + len).includes(0x2e)) {
      throw new Malformed(`${what}: a label contains '.'`);
    }
    at += 1 + len;
  }
}

interface WireLayout {
  questionEnd: number;
  answersEnd: number;
  answers: WireRecord[];
}

/** Check the whole message's structure; return the answer records. */
function walk(buf: Buffer, anCount: number, nsCount: number, arCount: number): WireLayout {
  // The question is the message's first name: a pointer there can only aim
  // at the header. Refused, as the kernel learner refuses it.
  let at = skipName(buf, HEADER_LEN, 'question', true, true);
  if (at + 4 > buf.length) throw new Malformed('question: type/class run past the message');
  at += 4;
  const questionEnd = at;
  const answers: WireRecord[] = [];
  let answersEnd = at;
  const total = anCount + nsCount + arCount;
  for (let i = 0; i < total; i++) {
    const inAnswer = i < anCount;
    const what = inAnswer
      ? `answer ${i}`
      : i < anCount + nsCount
        ? `authority ${i - anCount}`
        : `additional ${i - anCount - nsCount}`;
    at = skipName(buf, at, what, inAnswer);
    if (at + 10 > buf.length) throw new Malformed(`${what}: record header runs past the message`);
    const record: WireRecord = {
      type: buf.readUInt16BE(at),
      klass: buf.readUInt16BE(at + 2),
      ttl: buf.readUInt32BE(at + 4),
      rdLength: buf.readUInt16BE(at + 8),
      rdOffset: at + 10,
    };
    at = record.rdOffset + record.rdLength;
    if (at > buf.length) throw new Malformed(`${what}: RDATA (${record.rdLength} bytes) runs past the message`);
    if (inAnswer) {
      if (record.type === TYPE_A && record.rdLength !== 4)
        throw new Malformed(`${what}: A record with RDLENGTH ${record.rdLength}`);
      if (record.type === TYPE_AAAA && record.rdLength !== 16)
        throw new Malformed(`${what}: AAAA record with RDLENGTH ${record.rdLength}`);
      if (record.type === TYPE_CNAME) {
        const nameEnd = skipName(buf.subarray(0, at), record.rdOffset, `${what} CNAME target`, true);
        if (nameEnd !== at) throw new Malformed(`${what}: CNAME target does not fill RDLENGTH ${record.rdLength}`);
      }
      answers.push(record);
      answersEnd = at;
    }
  }
  return { questionEnd, answersEnd, answers };
}

function rawAddress(buf: Buffer, record: WireRecord): string {
  if (record.type === TYPE_A) {
    return `${buf[record.rdOffset]}.${buf[record.rdOffset + 1]}.${buf[record.rdOffset + 2]}.${buf[record.rdOffset + 3]}`;
  }
  return formatIp(buf.subarray(record.rdOffset, record.rdOffset + 16));
}

/** Decode one DNS message. Never throws. */
export function decodeDns(payload: Buffer): DnsResult {
  try {
    return decodeUnchecked(payload);
  } catch (err) {
    const detail = err instanceof Error ? err.message : String(err);
    return { ok: false, reason: 'malformed', detail };
  }
}

function decodeUnchecked(buf: Buffer): DnsResult {
  if (!Buffer.isBuffer(buf)) return { ok: false, reason: 'malformed', detail: 'payload is not a buffer' };
  if (buf.length < HEADER_LEN)
    return { ok: false, reason: 'malformed', detail: `header needs ${HEADER_LEN} bytes, got ${buf.length}` };
  const flags = buf.readUInt16BE(2);
  const qdCount = buf.readUInt16BE(4);
  const anCount = buf.readUInt16BE(6);
  const nsCount = buf.readUInt16BE(8);
  const arCount = buf.readUInt16BE(10);
  if (qdCount === 0) return { ok: false, reason: 'no-question', detail: 'QDCOUNT is 0' };
  if (qdCount > 1) return { ok: false, reason: 'multiple-questions', detail: `QDCOUNT is ${qdCount}` };
  const opcode = (flags >> 11) & 0xf;
  if (opcode !== OPCODE_QUERY) {
    // UPDATE reuses the answer section for prerequisites; NOTIFY/IQUERY/STATUS
    // carry nothing a pod may learn from.
    return { ok: false, reason: 'malformed', detail: `opcode ${opcode} is not QUERY` };
  }
  const isResponse = (flags & 0x8000) !== 0;

  const layout = walk(buf, isResponse ? anCount : 0, isResponse ? nsCount : 0, isResponse ? arCount : 0);

  // dns-packet sees the header, the question and the answer section only:
  // nothing from authority/additional is used, and their exotic RDATA types
  // cannot make it throw.
  const end = isResponse ? layout.answersEnd : layout.questionEnd;
  const trimmed = Buffer.from(buf.subarray(0, end));
  trimmed.writeUInt16BE(isResponse ? anCount : 0, 6);
  trimmed.writeUInt16BE(0, 8);
  trimmed.writeUInt16BE(0, 10);
  let decoded: DecodedPacket;
  try {
    decoded = dnsPacket.decode(trimmed);
  } catch (err) {
    return {
      ok: false,
      reason: 'malformed',
      detail: `dns-packet: ${err instanceof Error ? err.message : String(err)}`,
    };
  }

  const q = decoded.questions?.[0];
  if (!q || typeof q.name !== 'string') return { ok: false, reason: 'malformed', detail: 'question did not decode' };
  const rcode = (decoded as { rcode?: unknown }).rcode;
  const message: DnsMessage = {
    id: buf.readUInt16BE(0),
    isResponse,
    rcode: typeof rcode === 'string' ? rcode : `RCODE_${flags & 0xf}`,
    truncated: (flags & 0x0200) !== 0,
    question: { name: normalizeName(q.name), type: String(q.type) },
    answers: [],
    cnames: [],
    minTtl: null,
  };
  if (!isResponse) return { ok: true, message };

  const records = decoded.answers ?? [];
  if (records.length !== layout.answers.length) {
    return {
      ok: false,
      reason: 'malformed',
      detail: `dns-packet decoded ${records.length} answers, the wire holds ${layout.answers.length}`,
    };
  }

  let cnameTtl = Infinity;
  let minTtl = Infinity;
  const addresses: Array<{ ip: string; family: 4 | 6; ttl: number }> = [];
  for (let i = 0; i < records.length; i++) {
    const wire = layout.answers[i]!;
    const record = records[i]!;
    if (wire.klass !== CLASS_IN) continue;
    if (wire.type === TYPE_CNAME) {
      if (record.type !== 'CNAME' || typeof record.data !== 'string') {
        return { ok: false, reason: 'malformed', detail: `answer ${i}: CNAME did not decode` };
      }
      message.cnames.push(normalizeName(record.data));
      cnameTtl = Math.min(cnameTtl, wire.ttl);
      minTtl = Math.min(minTtl, wire.ttl);
    } else if (wire.type === TYPE_A || wire.type === TYPE_AAAA) {
      const family = wire.type === TYPE_A ? 4 : 6;
      const text = (record as { data?: unknown }).data;
      const valid = typeof text === 'string' && (family === 4 ? isIPv4(text) : isIPv6(text));
      const ip = rawAddress(buf, wire);
      if (!valid || record.type !== (family === 4 ? 'A' : 'AAAA')) {
        return {
          ok: false,
          reason: 'malformed',
          detail: `answer ${i}: ${family === 4 ? 'A' : 'AAAA'} data did not decode to an address`,
        };
      }
      // The address comes from the wire bytes in the canonical format; the
      // string dns-packet produced must agree with it.
      if ((family === 4 ? text : formatIp(parseIp(text as string))) !== ip) {
        return {
          ok: false,
          reason: 'malformed',
          detail: `answer ${i}: decoder disagrees with the wire (${String(text)} vs ${ip})`,
        };
      }
      addresses.push({ ip, family, ttl: wire.ttl });
      minTtl = Math.min(minTtl, wire.ttl);
    }
  }
  // One entry per address; a repeated address keeps its smallest TTL.
  const byIp = new Map<string, AnsweredIp>();
  for (const a of addresses) {
    const ttl = Math.min(a.ttl, cnameTtl);
    const seen = byIp.get(a.ip);
    if (!seen) byIp.set(a.ip, { ip: a.ip, family: a.family, ttl });
    else seen.ttl = Math.min(seen.ttl, ttl);
  }
  message.answers = [...byIp.values()];
  message.minTtl = minTtl === Infinity ? null : minTtl;
  return { ok: true, message };
}
