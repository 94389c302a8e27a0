/*
 * Byte layouts as field lists: a struct is declared once, in the order and
 * with the types of its C definition in bpf/lib/fqe_types.h, and both its
 * encoder and its decoder are derived from that list, with the offsets.
 *
 *   const portRule = struct('port_rule', { port: u16, proto: u8, pad: pad(1) });
 *   portRule.size            // 4
 *   portRule.offsets.proto   // 2
 *   portRule.decode(buf)     // { port, proto } (padding is not part of the value)
 *
 * A field's property name is its C name in camelCase (`expires_ns` ->
 * `expiresNs`); `named('pod_name', ...)` says the C name where the two differ
 * otherwise. Offsets follow C's natural alignment; fqe_types.h pads
 * explicitly, so the cross-check (test/kernel/codecs.test.ts) finds every
 * offset here equal to the compiler's.
 *
 * Pure: no I/O, no binding. It must not know any particular map; map
 * modules (maps/) declare their structs with it. Little-endian throughout,
 * as on every architecture the datapath runs on.
 */
import { ADDR_LEN } from '../net/addr.js';

/** One C member: its size and alignment, and how its value is read and written. */
export interface Field<T> {
  readonly size: number;
  readonly align: number;
  read(b: Buffer, at: number): T;
  /** `b` is zeroed: a field may leave bytes alone */
  write(b: Buffer, at: number, v: T): void;
  /** a nested struct (for the cross-check) */
  readonly struct?: Struct<unknown>;
  /** the C name when it is not the property name in snake_case */
  readonly cName?: string;
  /** in the layout, not in the value: padding, or kernel state userspace does not read */
  readonly hidden?: boolean;
  /** the length of another field: written from it, and bounding its decode */
  readonly countOf?: string;
  /** a field whose length another field holds */
  readonly counted?: {
    max: number;
    unit: string;
    take(b: Buffer, at: number, n: number): unknown;
    put(b: Buffer, at: number, v: unknown): number;
  };
}

function scalar<T>(
  size: number,
  read: (b: Buffer, at: number) => T,
  write: (b: Buffer, at: number, v: T) => void,
): Field<T> {
  return { size, align: size, read, write };
}

export const u8 = scalar<number>(
  1,
  (b, at) => b.readUInt8(at),
  (b, at, v) => void b.writeUInt8(v, at),
);
export const u16 = scalar<number>(
  2,
  (b, at) => b.readUInt16LE(at),
  (b, at, v) => void b.writeUInt16LE(v, at),
);
export const u32 = scalar<number>(
  4,
  (b, at) => b.readUInt32LE(at),
  (b, at, v) => void b.writeUInt32LE(v, at),
);
export const u64 = scalar<bigint>(
  8,
  (b, at) => b.readBigUInt64LE(at),
  (b, at, v) => void b.writeBigUInt64LE(v, at),
);
/** a __u8 read as a boolean (0 or 1) */
export const flag8 = scalar<boolean>(
  1,
  (b, at) => b[at] !== 0,
  (b, at, v) => void b.writeUInt8(v ? 1 : 0, at),
);

/** `__u8 x[n]`, copied out (a value owns its bytes). */
export function bytes(n: number): Field<Buffer> {
  return {
    size: n,
    align: 1,
    read: (b, at) => Buffer.from(b.subarray(at, at + n)),
    write: (b, at, v) => {
      if (v.length !== n) throw new Error(`${n}-byte field given ${v.length} bytes`);
      v.copy(b, at);
    },
  };
}

/** `__u8 addr[16]`: an IP address as the maps hold it (IPv4 mapped). */
export const addr: Field<Buffer> = {
  ...bytes(ADDR_LEN),
  write: (b, at, v) => {
    if (v.length !== ADDR_LEN) throw new Error(`address must be ${ADDR_LEN} bytes, got ${v.length}`);
    v.copy(b, at);
  },
};

/** `char x[n]`: UTF-8, NUL padded; a string must leave room for one NUL. */
export function cstring(n: number, what: string): Field<string> {
  return {
    size: n,
    align: 1,
    read: (b, at) => {
      const raw = b.subarray(at, at + n);
      const end = raw.indexOf(0);
      return raw.subarray(0, end < 0 ? n : end).toString('utf8');
    },
    write: (b, at, text) => {
      const encoded = Buffer.from(text, 'utf8');
      if (encoded.length >= n) throw new Error(`${what} "${text}" is longer than ${n - 1} bytes`);
      encoded.copy(b, at);
    },
  };
}

/** `T x[n]`, every element in the value. */
export function array<T>(item: Field<T>, n: number): Field<T[]> {
  return {
    size: item.size * n,
    align: item.align,
    ...(item.struct ? { struct: item.struct } : {}),
    read: (b, at) => Array.from({ length: n }, (_, i) => item.read(b, at + i * item.size)),
    write: (b, at, v) => {
      if (v.length !== n) throw new Error(`array of ${n} given ${v.length}`);
      v.forEach((x, i) => item.write(b, at + i * item.size, x));
    },
  };
}

/** `T x[max]` of which a count field (`countOf`) says how many are in use. */
export function list<T>(item: Field<T>, max: number, unit: string): Field<T[]> {
  return {
    size: item.size * max,
    align: item.align,
    ...(item.struct ? { struct: item.struct } : {}),
    read: () => [],
    write: () => undefined,
    counted: {
      max,
      unit,
      take: (b, at, n) => {
        const out: T[] = [];
        for (let i = 0; i < n; i++) out.push(item.read(b, at + i * item.size));
        return out;
      },
      put: (b, at, v) => {
        const items = v as T[];
        items.forEach((x, i) => item.write(b, at + i * item.size, x));
        return items.length;
      },
    },
  };
}

/** `__u8 x[max]` of which a count field says how many bytes are in use. */
export function byteList(max: number): Field<Buffer> {
  return {
    size: max,
    align: 1,
    read: () => Buffer.alloc(0),
    write: () => undefined,
    counted: {
      max,
      unit: 'bytes',
      take: (b, at, n) => Buffer.from(b.subarray(at, at + n)),
      put: (b, at, v) => (v as Buffer).copy(b, at),
    },
  };
}

/** A count (`__u8 nports`, `__u16 name_len`) of the field `of`: not in the value. */
export function countOf<T extends number>(of: string, field: Field<T>): Field<never> {
  return { ...(field as unknown as Field<never>), countOf: of, hidden: true };
}

/** A member in the layout but not in the value: written as zeros, not read. */
export function hidden<T>(field: Field<T>): Field<never> {
  return { ...(field as unknown as Field<never>), hidden: true };
}

/** Explicit padding: `__u8 pad[n]`. */
export function pad(n: number): Field<never> {
  return hidden(bytes(n));
}

/** The same member under its C name, where camelCase would not give it. */
export function named<T>(cName: string, field: Field<T>): Field<T> {
  return { ...field, cName };
}

/** A member stored one way and seen another (a prefix length stored with extra bits, a code as a name). */
export function mapped<S, T>(field: Field<S>, to: (stored: S) => T, from: (value: T) => S): Field<T> {
  const { read, write, ...rest } = field;
  return {
    ...(rest as Omit<Field<T>, 'read' | 'write'>),
    read: (b, at) => to(read(b, at)),
    write: (b, at, v) => write(b, at, from(v)),
  };
}

type Fields = Record<string, Field<unknown>>;
type Visible<F extends Fields> = {
  [K in keyof F as F[K] extends Field<never> ? never : K]: F[K] extends Field<infer T> ? T : never;
};

/** A decoded struct (its visible fields). */
export type ValueOf<S> = S extends Struct<infer T> ? T : never;

export interface Struct<T> extends Field<T> {
  /** the C name without `fqe_`, as native/layouts.cc and the BTF name it */
  readonly cName: string;
  /** byte offset of each member, by property name */
  readonly offsets: Readonly<Record<string, number>>;
  /** every member by C name (padding too): offset, and the struct it nests, for the cross-check */
  readonly members: ReadonlyArray<{ cName: string; offset: number; size: number; struct?: Struct<unknown> }>;
  encode(v: T): Buffer;
  decode(b: Buffer): T;
}

function snakeCase(name: string): string {
  return name.replace(/[A-Z]/g, (m) => `_${m.toLowerCase()}`);
}

/** A C struct from its members in order (see the header). */
export function struct<F extends Fields>(cName: string, fields: F): Struct<Visible<F>> {
  type T = Visible<F>;
  const members: Array<{ key: string; cName: string; offset: number; size: number; field: Field<unknown> }> = [];
  let offset = 0;
  let align = 1;
  for (const [key, field] of Object.entries(fields)) {
    offset = Math.ceil(offset / field.align) * field.align;
    members.push({ key, cName: field.cName ?? snakeCase(key), offset, size: field.size, field });
    offset += field.size;
    align = Math.max(align, field.align);
  }
  const size = Math.ceil(offset / align) * align;
  const what = `struct fqe_${cName}`;
  const plain = members.filter((m) => !m.field.hidden && !m.field.counted);
  const counted = members
    .filter((m) => m.field.counted)
    .map((m) => {
      const count = members.find((c) => c.field.countOf === m.key);
      if (!count) throw new Error(`${what}: no count field for ${m.key}`);
      return { ...m, counted: m.field.counted!, count };
    });

  // The plain members are read and written by functions made for this
  // struct: one object literal with its keys in order, so every value has
  // the same shape (the maps are dumped by the million; a loop over the
  // members with computed keys costs about 1.5x). Keys come from the
  // declarations, never from input.
  const readPlain = new Function(
    'r',
    `return function (b, at) { return { ${plain.map((m, i) => `${JSON.stringify(m.key)}: r[${i}](b, at + ${m.offset})`).join(', ')} }; };`,
  )(plain.map((m) => m.field.read)) as (b: Buffer, at: number) => Record<string, unknown>;
  const writePlain = new Function(
    'w',
    `return function (b, at, v) { ${plain.map((m, i) => `w[${i}](b, at + ${m.offset}, v[${JSON.stringify(m.key)}]);`).join(' ')} };`,
  )(plain.map((m) => m.field.write)) as (b: Buffer, at: number, v: Record<string, unknown>) => void;

  const decode = (b: Buffer, at = 0): T => {
    if (b.length < at + size) throw new Error(`${what} of ${b.length - at} bytes, expected ${size}`);
    const v = readPlain(b, at);
    for (const m of counted) {
      const n = Math.min(m.count.field.read(b, at + m.count.offset) as number, m.counted.max);
      v[m.key] = m.counted.take(b, at + m.offset, n);
    }
    return v as T;
  };
  const encodeInto = (b: Buffer, at: number, v: T): void => {
    const value = v as Record<string, unknown>;
    writePlain(b, at, value);
    for (const m of counted) {
      const items = value[m.key] as { length: number };
      if (items.length > m.counted.max)
        throw new Error(`${what}: ${m.key} of ${items.length} ${m.counted.unit}, at most ${m.counted.max} fit`);
      m.count.field.write(b, at + m.count.offset, m.counted.put(b, at + m.offset, items));
    }
  };
  const self: Struct<T> = {
    cName,
    size,
    align,
    offsets: Object.fromEntries(members.map((m) => [m.key, m.offset])),
    members: members.map((m) => ({
      cName: m.cName,
      offset: m.offset,
      size: m.size,
      ...(m.field.struct ? { struct: m.field.struct } : {}),
    })),
    read: (b, at) => decode(b, at),
    write: (b, at, v) => encodeInto(b, at, v),
    encode: (v) => {
      const b = Buffer.alloc(size);
      encodeInto(b, 0, v);
      return b;
    },
    decode: (b) => decode(b),
  };
  (self as { struct?: Struct<unknown> }).struct = self as Struct<unknown>;
  return self;
}

/**
 * A struct of one member, seen as that member's value (`struct fqe_name` as
 * its string); the struct stays known for the cross-check.
 */
export function single<T, K extends string>(
  s: Struct<Record<K, T>>,
  key: K,
): { readonly size: number; readonly struct: Struct<unknown>; encode(v: T): Buffer; decode(b: Buffer): T } {
  return {
    size: s.size,
    struct: s as Struct<unknown>,
    encode: (v) => s.encode({ [key]: v } as Record<K, T>),
    decode: (b) => s.decode(b)[key],
  };
}

/** A plain number or bigint as a whole key or value (`__u32 ifindex`, `__u64` counts). */
export interface ScalarCodec<T> {
  readonly size: number;
  encode(v: T): Buffer;
  decode(b: Buffer): T;
}

function scalarCodec<T>(field: Field<T>): ScalarCodec<T> {
  return {
    size: field.size,
    encode: (v) => {
      const b = Buffer.alloc(field.size);
      field.write(b, 0, v);
      return b;
    },
    decode: (b) => field.read(b, 0),
  };
}

export const u32Codec = scalarCodec(u32);
export const u16Codec = scalarCodec(u16);
export const u64Codec = scalarCodec(u64);
