/*
 * A typed view of one kernel map: encodes keys and values with a codec and
 * calls the binding. Owns no policy; knows nothing of what the map means.
 */
import { native } from './native.js';

export interface Encoder<T> {
  encode(v: T): Buffer;
}
export interface Decoder<T> {
  decode(b: Buffer): T;
}
export type Codec<T> = Encoder<T> & Decoder<T>;

export class BpfMap<K, V> {
  constructor(
    readonly name: string,
    readonly fd: number,
    readonly keySize: number,
    readonly valueSize: number,
    private readonly keyCodec: Codec<K>,
    private readonly valueCodec: Partial<Encoder<V>> & Decoder<V>,
  ) {}

  private encodeValue(v: V): Buffer {
    if (!this.valueCodec.encode) throw new Error(`map ${this.name}: values are read-only from userspace`);
    return this.valueCodec.encode(v);
  }

  get(key: K): V | undefined {
    const raw = native.mapLookup(this.fd, this.keyCodec.encode(key), this.valueSize);
    return raw ? this.valueCodec.decode(raw) : undefined;
  }

  set(key: K, value: V, flags = 0): void {
    native.mapUpdate(this.fd, this.keyCodec.encode(key), this.encodeValue(value), flags);
  }

  delete(key: K): boolean {
    return native.mapDelete(this.fd, this.keyCodec.encode(key));
  }

  /** Write many entries in one batch where the map type allows it. */
  setMany(entries: Array<[K, V]>, flags = 0): number {
    if (entries.length === 0) return 0;
    const keys = Buffer.concat(entries.map(([k]) => this.keyCodec.encode(k)));
    const values = Buffer.concat(entries.map(([, v]) => this.encodeValue(v)));
    return native.mapUpdateBatch(this.fd, keys, values, entries.length, flags);
  }

  deleteMany(keys: K[]): number {
    if (keys.length === 0) return 0;
    return native.mapDeleteBatch(this.fd, Buffer.concat(keys.map((k) => this.keyCodec.encode(k))), keys.length);
  }

  /** The key after `key` in the map's own order (the first for null); undefined after the last. */
  nextKey(key: K | null): K | undefined {
    const next: Buffer | null = native.mapGetNextKey(
      this.fd,
      key === null ? null : this.keyCodec.encode(key),
      this.keySize,
    );
    return next ? this.keyCodec.decode(Buffer.from(next)) : undefined;
  }

  /** Every key, without copying values (for maps of big values). */
  keys(): K[] {
    const out: K[] = [];
    for (let k = this.nextKey(null); k !== undefined; k = this.nextKey(k)) out.push(k);
    return out;
  }

  /** Every entry, read in batches where the map type allows it. */
  entries(): Array<[K, V]> {
    const { keys, values, count } = native.mapDump(this.fd, this.keySize, this.valueSize);
    const out: Array<[K, V]> = [];
    for (let i = 0; i < count; i++) {
      const k = keys.subarray(i * this.keySize, (i + 1) * this.keySize);
      const v = values.subarray(i * this.valueSize, (i + 1) * this.valueSize);
      out.push([this.keyCodec.decode(Buffer.from(k)), this.valueCodec.decode(Buffer.from(v))]);
    }
    return out;
  }
}
