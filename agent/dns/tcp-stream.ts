// SPDX-License-Identifier: Apache-2.0
/*
 * DNS over TCP: reassembles each direction of a TCP connection from the
 * segments the tap delivers and cuts the byte stream into DNS messages (each
 * behind a 2-byte length, RFC 1035 4.2.2). Pure: the clock is injected, no
 * I/O, no timers (the owner calls sweep()). Memory is bounded per flow
 * (maxBytesPerFlow) and in total (maxTotalBytes: the least recently used
 * flows go first). Work is linear in the bytes received: a flow's bytes sit
 * in one buffer that grows by doubling, and each byte is copied a bounded
 * number of times whatever the segmentation (a message in 1-byte segments
 * costs no more than in one). It does not decode messages (message.ts does)
 * and does not decide whom to trust.
 *
 * What the tap shows shapes the design: the socket filter passes only
 * segments with payload, so bare SYN/FIN/RST are normally never seen. A flow
 * therefore starts at the first data segment it sees, ends on a FIN carried by
 * data (or on SYN/RST when they do show up), and otherwise goes away by LRU
 * eviction or sweep(). A closed flow leaves a small tombstone (its next
 * sequence number) so a retransmission of its last segment yields nothing.
 * A sequence jump beyond the window (a new connection on the same 4-tuple,
 * or a lost segment we gave up on) restarts the flow at that segment.
 */
import type { Segment } from './frame.js';
import { TCP_FIN, TCP_RST, TCP_SYN } from './frame.js';

export interface TcpReassemblerOptions {
  /** live flows kept; one more evicts the least recently used */
  maxFlows: number;
  /**
   * bytes held per flow (in-order remainder + out-of-order segments); also the
   * out-of-order window. Must be ≥ 65537 to pass every legal message.
   */
  maxBytesPerFlow: number;
  /** bytes held by all flows together (buffers and out-of-order segments); default maxFlows × maxBytesPerFlow */
  maxTotalBytes?: number;
  /** a flow (or tombstone) unseen this long is dropped by sweep() */
  idleMs: number;
  /** milliseconds, any monotonic origin */
  now: () => number;
}

export interface PushResult {
  /** whole DNS messages, without their length prefix, in stream order (copies) */
  messages: Buffer[];
  /** why state was thrown away while handling this segment (for logs/metrics) */
  dropped?: string;
}

/** Out-of-order segments held per flow, whatever their size. */
const MAX_PENDING_SEGMENTS = 64;
const LENGTH_PREFIX = 2;
const EMPTY = Buffer.alloc(0);

interface Flow {
  key: string;
  /** sequence number of the next byte the stream needs */
  nextSeq: number;
  /** sequence number of the SYN that started the flow, if seen */
  synSeq: number | null;
  /** in-order bytes not yet cut into messages: buf[0..used) (buf may be larger) */
  buf: Buffer;
  used: number;
  /** out-of-order segments by sequence number */
  pending: Map<number, Buffer>;
  pendingBytes: number;
  /** sequence number of the FIN, once seen */
  finSeq: number | null;
  lastSeen: number;
}

interface Tombstone {
  nextSeq: number;
  lastSeen: number;
}

/** a - b as a signed 32-bit distance in sequence space */
function seqDiff(a: number, b: number): number {
  return (a - b) | 0;
}

export function flowKey(seg: Segment): string {
  return `${seg.family}|${seg.src}|${seg.sport}|${seg.dst}|${seg.dport}`;
}

export class TcpDnsReassembler {
  readonly #opts: TcpReassemblerOptions;
  /** insertion order = recency order (touched flows are re-inserted) */
  readonly #flows = new Map<string, Flow>();
  readonly #closed = new Map<string, Tombstone>();
  /** bytes held by every flow: buffer capacities and pending segments */
  #totalBytes = 0;

  constructor(opts: TcpReassemblerOptions) {
    for (const field of ['maxFlows', 'maxBytesPerFlow', 'idleMs'] as const) {
      if (!Number.isFinite(opts[field]) || opts[field] <= 0) {
        throw new Error(`TcpDnsReassembler: ${field} must be a positive number, got ${opts[field]}`);
      }
    }
    this.#opts = { ...opts };
  }

  /** live flows (tombstones not counted) */
  get size(): number {
    return this.#flows.size;
  }

  /** bytes held by all flows now */
  get bytesHeld(): number {
    return this.#totalBytes;
  }

  #held(flow: Flow): number {
    return flow.buf.length + flow.pendingBytes;
  }

  /** Forget a flow and the bytes it held. */
  #forget(key: string): void {
    const flow = this.#flows.get(key);
    if (!flow) return;
    this.#totalBytes -= this.#held(flow);
    this.#flows.delete(key);
  }

  push(seg: Segment): PushResult {
    const messages: Buffer[] = [];
    const notes: string[] = [];
    const result = (): PushResult => (notes.length > 0 ? { messages, dropped: notes.join('; ') } : { messages });
    if (seg.proto !== 'tcp' || !seg.tcp) {
      notes.push('not a TCP segment');
      return result();
    }
    const key = flowKey(seg);
    const now = this.#opts.now();
    const { seq, flags } = seg.tcp;
    const payload = seg.payload;

    if (flags & TCP_RST) {
      this.#forget(key);
      this.#closed.delete(key);
      return result();
    }

    let flow = this.#flows.get(key);
    let dataSeq = seq >>> 0;
    if (flags & TCP_SYN) {
      dataSeq = (seq + 1) >>> 0;
      // A retransmitted SYN (same ISN) keeps the flow; a new one restarts it.
      if (flow && flow.synSeq !== seq) {
        this.#forget(key);
        flow = undefined;
      }
      this.#closed.delete(key);
    }

    if (!flow) {
      const tomb = this.#closed.get(key);
      if (tomb) {
        const off = seqDiff(dataSeq, tomb.nextSeq);
        if (off + payload.length <= 0 && off >= -this.#opts.maxBytesPerFlow) {
          tomb.lastSeen = now; // retransmission of a closed stream
          return result();
        }
        this.#closed.delete(key);
      }
      flow = this.#open(key, dataSeq, flags & TCP_SYN ? seq : null, now, notes);
    } else {
      this.#flows.delete(key);
      this.#flows.set(key, flow);
      flow.lastSeen = now;
      const off = seqDiff(dataSeq, flow.nextSeq);
      if (off > this.#opts.maxBytesPerFlow || off + payload.length < -this.#opts.maxBytesPerFlow) {
        notes.push(`flow ${key}: sequence jump of ${off} bytes, restarted`);
        this.#forget(key);
        flow = this.#open(key, dataSeq, null, now, notes);
      }
    }

    if (payload.length > 0 && !this.#accept(flow, dataSeq, payload, notes)) return result();
    if (flags & TCP_FIN) flow.finSeq = (dataSeq + payload.length) >>> 0;
    if (!this.#cut(flow, messages, notes)) return result();

    const held = flow.used + flow.pendingBytes;
    if (held > this.#opts.maxBytesPerFlow) {
      this.#drop(flow, `holds ${held} bytes, over maxBytesPerFlow ${this.#opts.maxBytesPerFlow}`, notes);
      return result();
    }
    if (flow.finSeq !== null && flow.pending.size === 0 && seqDiff(flow.nextSeq, flow.finSeq) >= 0) {
      if (flow.used > 0) notes.push(`flow ${key}: FIN with ${flow.used} bytes of an incomplete message`);
      this.#forget(key);
      this.#entomb(key, flow.nextSeq, now);
    }
    this.#enforceTotal(flow, notes);
    return result();
  }

  /** Drop flows and tombstones idle for idleMs or more; returns the flows dropped. */
  sweep(): number {
    const now = this.#opts.now();
    let dropped = 0;
    for (const [key, flow] of this.#flows) {
      if (now - flow.lastSeen >= this.#opts.idleMs) {
        this.#forget(key);
        dropped++;
      }
    }
    for (const [key, tomb] of this.#closed) {
      if (now - tomb.lastSeen >= this.#opts.idleMs) this.#closed.delete(key);
    }
    return dropped;
  }

  #open(key: string, nextSeq: number, synSeq: number | null, now: number, notes: string[]): Flow {
    const flow: Flow = {
      key,
      nextSeq,
      synSeq,
      buf: EMPTY,
      used: 0,
      pending: new Map(),
      pendingBytes: 0,
      finSeq: null,
      lastSeen: now,
    };
    this.#flows.set(key, flow);
    if (this.#flows.size > this.#opts.maxFlows) {
      const oldest = this.#flows.keys().next().value as string;
      this.#forget(oldest);
      notes.push(`flow ${oldest}: evicted, over maxFlows ${this.#opts.maxFlows}`);
    }
    return flow;
  }

  #entomb(key: string, nextSeq: number, now: number): void {
    this.#closed.delete(key);
    this.#closed.set(key, { nextSeq, lastSeen: now });
    if (this.#closed.size > this.#opts.maxFlows) this.#closed.delete(this.#closed.keys().next().value as string);
  }

  #drop(flow: Flow, why: string, notes: string[]): void {
    this.#forget(flow.key);
    notes.push(`flow ${flow.key}: dropped, ${why}`);
  }

  /** Over the total: the least recently used flows go (never the one just fed, unless alone). */
  #enforceTotal(current: Flow, notes: string[]): void {
    const cap = this.#opts.maxTotalBytes ?? this.#opts.maxFlows * this.#opts.maxBytesPerFlow;
    for (const [key, flow] of this.#flows) {
      if (this.#totalBytes <= cap) return;
      if (flow === current && this.#flows.size > 1) continue;
      this.#forget(key);
      notes.push(`flow ${key}: evicted, all flows together over maxTotalBytes ${cap}`);
    }
  }

  /** Take a segment's bytes: in order now, ahead of the stream into pending. */
  #accept(flow: Flow, dataSeq: number, payload: Buffer, notes: string[]): boolean {
    const off = seqDiff(dataSeq, flow.nextSeq);
    if (off <= 0) {
      if (off + payload.length > 0) this.#append(flow, payload.subarray(-off));
    } else {
      const held = flow.pending.get(dataSeq);
      if (!held || held.length < payload.length) {
        if (!held && flow.pending.size >= MAX_PENDING_SEGMENTS) {
          this.#drop(flow, `more than ${MAX_PENDING_SEGMENTS} out-of-order segments`, notes);
          return false;
        }
        const grow = payload.length - (held?.length ?? 0);
        flow.pendingBytes += grow;
        this.#totalBytes += grow;
        flow.pending.set(dataSeq, Buffer.from(payload));
      }
    }
    // Pending segments that the stream has now reached.
    for (let progressed = true; progressed && flow.pending.size > 0;) {
      progressed = false;
      for (const [pendingSeq, data] of flow.pending) {
        const at = seqDiff(pendingSeq, flow.nextSeq);
        if (at > 0) continue;
        flow.pending.delete(pendingSeq);
        flow.pendingBytes -= data.length;
        this.#totalBytes -= data.length;
        if (at + data.length > 0) this.#append(flow, data.subarray(-at));
        progressed = true;
      }
    }
    return true;
  }

  /** Append in place; the buffer doubles when full, so appending is amortized linear. */
  #append(flow: Flow, bytes: Buffer): void {
    const need = flow.used + bytes.length;
    if (need > flow.buf.length) {
      const grown = Buffer.allocUnsafe(Math.max(need, flow.buf.length * 2, 512));
      flow.buf.copy(grown, 0, 0, flow.used);
      this.#totalBytes += grown.length - flow.buf.length;
      flow.buf = grown;
    }
    bytes.copy(flow.buf, flow.used);
    flow.used = need;
    flow.nextSeq = (flow.nextSeq + bytes.length) >>> 0;
  }

  /** Cut whole messages off the in-order bytes. False if the flow was dropped. */
  #cut(flow: Flow, messages: Buffer[], notes: string[]): boolean {
    const buf = flow.buf;
    let at = 0;
    while (flow.used - at >= LENGTH_PREFIX) {
      const len = buf.readUInt16BE(at);
      if (LENGTH_PREFIX + len > this.#opts.maxBytesPerFlow) {
        this.#drop(flow, `message of ${len} bytes over maxBytesPerFlow ${this.#opts.maxBytesPerFlow}`, notes);
        return false;
      }
      if (flow.used - at < LENGTH_PREFIX + len) break;
      if (len > 0) messages.push(Buffer.from(buf.subarray(at + LENGTH_PREFIX, at + LENGTH_PREFIX + len)));
      at += LENGTH_PREFIX + len;
    }
    if (at === 0) return true;
    if (at === flow.used) {
      this.#totalBytes -= flow.buf.length; // nothing left: let the buffer go
      flow.buf = EMPTY;
      flow.used = 0;
    } else {
      buf.copy(buf, 0, at, flow.used); // the start of the next message moves to the front, once
      flow.used -= at;
    }
    return true;
  }
}
