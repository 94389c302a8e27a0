/*
 * fqe_events: the drop and audit events, a ring buffer the agent reads
 * (Datapath.openEvents). Also the reasons by value (enum fqe_reason) and
 * the event record, which fqe_recent keeps a copy of.
 */
import { struct, u8, u16, u32, u64, addr, mapped } from '../layout.js';
import { formatIp, parseIp } from '../../net/addr.js';
import { ringBuffer } from './define.js';

/** enum fqe_reason, by value. */
export const REASONS = [
  'none',
  'not-allowed',
  'expired',
  'port',
  'spoofed',
  'untrusted-dns',
  'malformed',
  'protocol',
  'audit-ended',
  'flow-quota',
  'dns-name',
  'tls-server-name',
  'spoofed-answer',
] as const;
export type Reason = (typeof REASONS)[number];

export const EventKind = { drop: 1, audit: 2 } as const;

const ipText = mapped(addr, formatIp, parseIp);

export const eventCodec = struct('event', {
  tsNs: u64,
  identity: u32,
  ifindex: u32,
  saddr: ipText,
  daddr: ipText,
  sport: u16,
  dport: u16,
  proto: u8,
  reason: mapped(
    u8,
    (r): Reason => REASONS[r] ?? 'malformed',
    (r: Reason) => REASONS.indexOf(r),
  ),
  kind: mapped(
    u8,
    (k): 'drop' | 'audit' => (k === EventKind.audit ? 'audit' : 'drop'),
    (k: 'drop' | 'audit') => EventKind[k],
  ),
  family: mapped(
    u8,
    (f): 4 | 6 => (f === 6 ? 6 : 4),
    (f: 4 | 6) => f,
  ),
});
export type DropEvent = ReturnType<typeof eventCodec.decode>;

/** FQE_EVENTS_BYTES */
export const eventsMap = ringBuffer({ name: 'fqe_events', property: 'eventsFd', bytes: 1 << 20, record: eventCodec });
