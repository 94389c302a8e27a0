/*
 * TLS ClientHellos for the server name check's tests: real ones, written by
 * OpenSSL (Python's ssl over a MemoryBIO, no network), and a small parser
 * and rebuilder to reshape them the way other clients send theirs (the
 * server name last, after a big extension; the handshake split over several
 * records). parseServerName() is the reference the kernel parser is fuzzed
 * against. Pure apart from the one python3 call.
 */
import { execFileSync } from 'node:child_process';

export interface HelloSpec {
  /** undefined: no server_name extension */
  serverName?: string;
  version?: '1.2' | '1.3';
  /** 'P-256': the only group offered (its key share is for secp256r1, as a second ClientHello after a retry request asking for it) */
  groups?: 'P-256';
}

const GENERATOR = `
import ssl, sys, json
out = []
for spec in json.loads(sys.argv[1]):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if spec.get('version') == '1.2':
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    if spec.get('groups') == 'P-256':
        ctx.set_ecdh_curve('prime256v1')
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = ctx.wrap_bio(incoming, outgoing, server_hostname=spec.get('serverName'))
    try:
        conn.do_handshake()
    except ssl.SSLWantReadError:
        pass
    out.append(outgoing.read().hex())
print(json.dumps(out))
`;

/** Real ClientHellos (whole TLS records, as sent on the wire), one per spec. */
export function realClientHellos(specs: HelloSpec[]): Buffer[] {
  const out = execFileSync('python3', ['-c', GENERATOR, JSON.stringify(specs)], { encoding: 'utf8', timeout: 30_000 });
  return (JSON.parse(out) as string[]).map((h) => Buffer.from(h, 'hex'));
}

export interface Extension {
  type: number;
  data: Buffer;
}

/** A ClientHello taken apart: the body up to the extensions, and the extensions. */
export interface ClientHello {
  head: Buffer;
  extensions: Extension[];
}

/** The handshake bytes of a stream of TLS records (handshake records only). */
function handshakeBytes(records: Buffer): Buffer {
  const parts: Buffer[] = [];
  let at = 0;
  while (at + 5 <= records.length) {
    if (records[at] !== 22) throw new Error(`record type ${records[at]} is not handshake`);
    const len = records.readUInt16BE(at + 3);
    parts.push(records.subarray(at + 5, at + 5 + len));
    at += 5 + len;
  }
  return Buffer.concat(parts);
}

export function parseClientHello(records: Buffer): ClientHello {
  const hs = handshakeBytes(records);
  if (hs[0] !== 1) throw new Error('not a ClientHello');
  const body = hs.subarray(4, 4 + hs.readUIntBE(1, 3));
  let at = 34;
  at += 1 + body[at]!; // session id
  at += 2 + body.readUInt16BE(at); // cipher suites
  at += 1 + body[at]!; // compression methods
  const head = body.subarray(0, at);
  const extEnd = at + 2 + body.readUInt16BE(at);
  const extensions: Extension[] = [];
  at += 2;
  while (at + 4 <= extEnd) {
    const len = body.readUInt16BE(at + 2);
    extensions.push({ type: body.readUInt16BE(at), data: Buffer.from(body.subarray(at + 4, at + 4 + len)) });
    at += 4 + len;
  }
  return { head: Buffer.from(head), extensions };
}

/** The hello as TLS records of at most recordSize handshake bytes each. */
export function buildClientHello(h: ClientHello, recordSize = 16384): Buffer {
  const exts = Buffer.concat(
    h.extensions.map((e) => {
      const b = Buffer.alloc(4);
      b.writeUInt16BE(e.type, 0);
      b.writeUInt16BE(e.data.length, 2);
      return Buffer.concat([b, e.data]);
    }),
  );
  const extLen = Buffer.alloc(2);
  extLen.writeUInt16BE(exts.length);
  const body = Buffer.concat([h.head, extLen, exts]);
  const hs = Buffer.concat([Buffer.from([1, body.length >> 16, (body.length >> 8) & 0xff, body.length & 0xff]), body]);
  const records: Buffer[] = [];
  for (let at = 0; at < hs.length; at += recordSize) {
    const chunk = hs.subarray(at, at + recordSize);
    records.push(Buffer.from([22, 3, 1, chunk.length >> 8, chunk.length & 0xff]), chunk);
  }
  return Buffer.concat(records);
}

export const EXT_SERVER_NAME = 0;
export const EXT_PADDING = 21;

/** An extension's worth of server_name for `name` (bytes as given). */
export function serverNameExtension(name: Buffer | string): Extension {
  const n = typeof name === 'string' ? Buffer.from(name, 'latin1') : name;
  const data = Buffer.alloc(5 + n.length);
  data.writeUInt16BE(3 + n.length, 0);
  data[2] = 0;
  data.writeUInt16BE(n.length, 3);
  n.copy(data, 5);
  return { type: EXT_SERVER_NAME, data };
}

/**
 * The hello as a post-quantum, shuffling browser sends it: `padding` bytes of
 * a padding extension first, the server name last (the hello then spans
 * segments and its name comes in the last one).
 */
export function nameLast(records: Buffer, padding: number, recordSize?: number): Buffer {
  const h = parseClientHello(records);
  const sni = h.extensions.filter((e) => e.type === EXT_SERVER_NAME);
  const rest = h.extensions.filter((e) => e.type !== EXT_SERVER_NAME && e.type !== EXT_PADDING);
  return buildClientHello(
    { head: h.head, extensions: [{ type: EXT_PADDING, data: Buffer.alloc(padding) }, ...rest, ...sni] },
    recordSize,
  );
}

/**
 * The reference: the server name a server would read from this stream (as
 * far as it goes: a hello cut short after its name, or followed by a bad
 * record, still names it), or null
 * when the bytes up to the name are not a well-formed ClientHello with one
 * host_name entry (what the kernel parser must refuse). Lower case, a
 * trailing dot dropped.
 */
export function parseServerName(stream: Buffer): string | null {
  try {
    const hsParts: Buffer[] = [];
    for (let at = 0; at + 5 <= stream.length;) {
      const len = stream.readUInt16BE(at + 3);
      // a bad record header ends what a server can read: the name must come before it
      if (stream[at] !== 22 || stream[at + 1] !== 3 || len === 0 || len > 16384) break;
      hsParts.push(stream.subarray(at + 5, Math.min(at + 5 + len, stream.length)));
      at += 5 + len;
    }
    const hs = Buffer.concat(hsParts);
    if (hs.length < 4 || hs[0] !== 1) return null;
    const declared = hs.readUIntBE(1, 3);
    const body = hs.subarray(4, 4 + declared);
    let p = 34;
    if (body[p]! > 32) return null;
    p += 1 + body[p]!;
    const cs = body.readUInt16BE(p);
    if (cs < 2 || cs & 1) return null;
    p += 2 + cs;
    if (body[p]! === 0) return null;
    p += 1 + body[p]!;
    if (body.readUInt16BE(p) !== declared - p - 2) return null;
    p += 2;
    while (p + 4 <= body.length) {
      const type = body.readUInt16BE(p);
      const len = body.readUInt16BE(p + 2);
      if (p + 4 + len > declared) return null;
      if (type === EXT_SERVER_NAME) {
        const d = body.subarray(p + 4, p + 4 + len);
        if (d.length < len) return null; // the name not all there
        if (d.length < 6 || d.readUInt16BE(0) !== d.length - 2 || d[2] !== 0 || d.readUInt16BE(3) !== d.length - 5)
          return null;
        let name = d.subarray(5).toString('latin1').toLowerCase();
        if (name.endsWith('.')) name = name.slice(0, -1);
        return name;
      }
      p += 4 + len;
    }
    return null;
  } catch {
    return null; // ran off the end
  }
}

/** An extension type reserved to be ignored (GREASE, RFC 8701): servers skip its bytes. */
export const EXT_GREASE = 0x0a0a;

/** The stream a pod sends with one urgent byte in it, and where that byte is. */
export interface UrgentHello {
  /** every byte the pod sends, the urgent one included: what a parser of segments sees */
  sent: Buffer;
  /** the urgent byte's offset in `sent` */
  urgentAt: number;
  /** `sent` without the urgent byte: what a receiver without SO_OOBINLINE reads */
  read: Buffer;
}

/**
 * A ClientHello that names `readName` to a server that takes the urgent byte
 * out of the stream, and `seenName` to a parser that reads every byte. The
 * server reads the hello of `records` (its server name replaced by
 * readName) with a GREASE extension first, of 256 bytes, whose body holds a
 * server_name extension for seenName. The urgent byte (0) goes between the
 * GREASE extension's type and its length: counting it, the length reads 1,
 * so a parser that keeps the byte skips one byte and takes the hidden
 * server_name extension as the next one.
 */
export function urgentByteHello(records: Buffer, readName: string, seenName: string): UrgentHello {
  const h = parseClientHello(records);
  const hidden = serverNameExtension(seenName);
  const body = Buffer.alloc(256); // length 0x0100: after the urgent byte 0x00, a parser reads 0x0001
  body.writeUInt16BE(EXT_SERVER_NAME, 0);
  body.writeUInt16BE(hidden.data.length, 2);
  hidden.data.copy(body, 4);
  const extensions = [
    { type: EXT_GREASE, data: body },
    ...h.extensions.map((e) => (e.type === EXT_SERVER_NAME ? serverNameExtension(readName) : e)),
  ];
  const read = buildClientHello({ head: h.head, extensions });
  const urgentAt = 5 + 4 + h.head.length + 2 + 2; // record and handshake headers, the body's head, the extensions' length, GREASE's type
  const sent = Buffer.concat([read.subarray(0, urgentAt), Buffer.from([0]), read.subarray(urgentAt)]);
  return { sent, urgentAt, read };
}

export const CONTENT_CHANGE_CIPHER_SPEC = 20;
export const CONTENT_HANDSHAKE = 22;
export const CONTENT_APPLICATION_DATA = 23;

/** One TLS record (legacy version 3.3, as TLS 1.3 writes every record after the first). */
export function tlsRecord(type: number, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from([type, 3, 3, body.length >> 8, body.length & 0xff]), body]);
}

/** The ChangeCipherSpec record a TLS 1.3 client sends in middlebox compatibility mode (and TLS 1.2 for real). */
export const CHANGE_CIPHER_SPEC = tlsRecord(CONTENT_CHANGE_CIPHER_SPEC, Buffer.from([1]));

/** An application_data record of n opaque bytes: what every encrypted TLS 1.3 record looks like. */
export function applicationData(n: number, fill = 0xa5): Buffer {
  return tlsRecord(CONTENT_APPLICATION_DATA, Buffer.alloc(n, fill));
}

/** SHA-256("HelloRetryRequest"): the random of a ServerHello that is a HelloRetryRequest (RFC 8446, 4.1.3). */
const HRR_RANDOM = Buffer.from('cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c', 'hex');

/**
 * A TLS 1.3 ServerHello record (TLS_AES_128_GCM_SHA256, supported_versions
 * 1.3, a key_share for secp256r1), or with `retry` a HelloRetryRequest
 * asking for a secp256r1 key share.
 */
export function serverHello(opts: { retry?: boolean } = {}): Buffer {
  const keyShare = opts.retry
    ? Buffer.from('00330002' + '0017', 'hex')
    : Buffer.concat([Buffer.from('00330045' + '00170041', 'hex'), Buffer.alloc(65, 4)]);
  const extensions = Buffer.concat([Buffer.from('002b00020304', 'hex'), keyShare]);
  const body = Buffer.concat([
    Buffer.from([3, 3]),
    opts.retry ? HRR_RANDOM : Buffer.alloc(32, 0x5e),
    Buffer.from([0]),
    Buffer.from([0x13, 0x01, 0]),
    Buffer.from([extensions.length >> 8, extensions.length & 0xff]),
    extensions,
  ]);
  return tlsRecord(CONTENT_HANDSHAKE, Buffer.concat([Buffer.from([2, 0, body.length >> 8, body.length & 0xff]), body]));
}
