/*
 * DNS names and types as a person reads them (egressctl drops, the agent's
 * log). A pod chooses these bytes: every byte that could mislead a reader is
 * escaped, and what is not a well-formed label is shown as such, never
 * guessed at. Pure.
 */

/** DNS query types by number, for the names egressctl shows. */
const QTYPES: Record<number, string> = {
  1: 'A',
  2: 'NS',
  5: 'CNAME',
  6: 'SOA',
  12: 'PTR',
  15: 'MX',
  16: 'TXT',
  28: 'AAAA',
  33: 'SRV',
  64: 'SVCB',
  65: 'HTTPS',
  255: 'ANY',
};

export function qtypeName(qtype: number): string {
  return QTYPES[qtype] ?? `TYPE${qtype}`;
}

/**
 * A wire-format name (no root label) as presentation text with every byte a
 * pod could use to mislead a reader escaped (RFC 4343 style): `.` and `\`
 * inside a label, and anything outside printable ASCII, as `\DDD`.
 */
export function escapeWireName(wire: Buffer): string {
  const labels: string[] = [];
  let at = 0;
  while (at < wire.length) {
    const len = wire[at]!;
    if (len === 0 || len > 63 || at + 1 + len > wire.length) {
      labels.push('\\?'); // not a label: shown, never guessed at
      break;
    }
    let text = '';
    for (const b of wire.subarray(at + 1, at + 1 + len)) {
      if (b === 0x2e || b === 0x5c) text += `\\${String.fromCharCode(b)}`;
      else if (b > 0x20 && b < 0x7f) text += String.fromCharCode(b);
      else text += `\\${b.toString().padStart(3, '0')}`;
    }
    labels.push(text);
    at += 1 + len;
  }
  return labels.length === 0 ? '.' : labels.join('.');
}
