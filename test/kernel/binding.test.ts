/*
 * The native binding itself: error shape, argument checks, layouts, and map
 * access on real kernel maps (hash, LPM trie, per-CPU hash, ring buffer).
 * Needs root for bpf(2); as non-root it skips, except with CI=true where it
 * fails. Programs, tc and the packet tap are covered by the kernel tests.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  BpfError,
  BPF_F_NO_PREALLOC,
  BPF_NOEXIST,
  MapType,
  PacketSocket,
  RingBufferReader,
  closeFd,
  createMap,
  ifNameToIndex,
  layouts,
  loadObject,
  mapDelete,
  mapDeleteBatch,
  mapDump,
  mapGetNextKey,
  mapInfo,
  mapLookup,
  mapUpdate,
  mapUpdateBatch,
  native,
  numPossibleCpus,
  objGet,
  tcAttach,
  unpin,
} from '../../agent/datapath/native.js';

const isRoot = process.getuid?.() === 0;
const rootOnly = { skip: isRoot || process.env.CI === 'true' ? false : 'needs root (bpf(2))' };
const fds: number[] = [];
after(() => {
  for (const fd of fds) closeFd(fd);
});

function requireRoot(): void {
  assert.ok(isRoot, 'binding tests need root (CI=true: failing instead of skipping)');
}

function newMap(type: number, keySize: number, valueSize: number, maxEntries: number, flags = 0): number {
  const fd = createMap(type, keySize, valueSize, maxEntries, 'fqe_test', flags);
  fds.push(fd);
  return fd;
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

function u64(n: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(n);
  return b;
}

function assertBpfError(err: unknown, code: string, errno: number, op: RegExp): true {
  assert.ok(err instanceof BpfError, `a BpfError, got ${String(err)}`);
  assert.ok(err instanceof Error);
  assert.equal(err.name, 'BpfError');
  assert.equal(err.code, code);
  assert.equal(err.errno, errno);
  assert.match(err.op, op);
  assert.equal(err.message, `${err.op}: ${errnoText(errno)} (${code})`);
  return true;
}

function errnoText(errno: number): string {
  return (
    (
      {
        2: 'No such file or directory',
        9: 'Bad file descriptor',
        17: 'File exists',
        19: 'No such device',
        22: 'Invalid argument',
      } as Record<number, string>
    )[errno] ?? ''
  );
}

test('errno failures are BpfErrors with code, errno, op and message', rootOnly, () => {
  requireRoot();
  const fd = createMap(MapType.HASH, 4, 8, 4, 'fqe_test');
  closeFd(fd);
  assert.throws(
    () => mapLookup(fd, u32(1), 8),
    (e) => assertBpfError(e, 'EBADF', 9, /^bpf_map_lookup_elem\(fd \d+\)$/),
  );
  assert.throws(
    () => mapUpdate(fd, u32(1), u64(1n)),
    (e) => assertBpfError(e, 'EBADF', 9, /bpf_map_update_elem/),
  );
  assert.throws(
    () => closeFd(fd),
    (e) => assertBpfError(e, 'EBADF', 9, /^close\(/),
  );
  assert.throws(
    () => objGet('/sys/fs/bpf/fqe-test-does-not-exist'),
    (e) => assertBpfError(e, 'ENOENT', 2, /^bpf_obj_get\(/),
  );
  assert.throws(() => loadObject('/nonexistent/fqe.o', ''), /loadObject: pinDir must not be empty/);
  assert.throws(
    () => loadObject('/nonexistent/fqe.o', '/sys/fs/bpf/fqe-test-unused'),
    (e) => assertBpfError(e, 'ENOENT', 2, /^bpf_object__open_file\(\/nonexistent\/fqe.o\)$/),
  );
  assert.throws(
    () => ifNameToIndex('fqe-no-such-if'),
    (e) => assertBpfError(e, 'ENODEV', 19, /^if_nametoindex\(fqe-no-such-if\)$/),
  );
  assert.throws(
    () => ifNameToIndex('lo', '/nonexistent/netns'),
    (e) => assertBpfError(e, 'ENOENT', 2, /^open\(\/nonexistent\/netns\)$/),
  );
  assert.equal(unpin('/sys/fs/bpf/fqe-test-does-not-exist'), false);
  assert.throws(
    () => native.linkInfo(fd),
    (e) => assertBpfError(e, 'EBADF', 9, /^bpf_obj_get_info_by_fd\(link fd \d+\)$/),
  );
  assert.throws(
    () => native.linkDetach(fd),
    (e) => assertBpfError(e, 'EBADF', 9, /^bpf_link_detach\(link fd \d+\)$/),
  );
  assert.throws(
    () => native.linkUpdate(fd, fd),
    (e) => assertBpfError(e, 'EBADF', 9, /^bpf_link_update\(link fd \d+\)$/),
  );
  assert.equal(ifNameToIndex('lo'), 1);
});

test('wrong argument types throw TypeErrors with exact messages', () => {
  const bad = (fn: () => unknown, message: string, type: ErrorConstructor = TypeError): void => {
    assert.throws(fn, (e: unknown) => e instanceof type && (e as Error).message === message);
  };
  const any = native as unknown as Record<string, (...args: unknown[]) => unknown>;
  bad(() => any.loadObject!(1, '/sys/fs/bpf'), 'loadObject: path must be a string');
  bad(() => any.loadObject!('/x.o', null), 'loadObject: pinDir must be a string');
  bad(() => any.mapLookup!('3', Buffer.alloc(4), 8), 'mapLookup: fd must be a number');
  bad(() => any.mapLookup!(1.5, Buffer.alloc(4), 8), 'mapLookup: fd must be an integer');
  bad(() => any.mapUpdate!(3, 'key', Buffer.alloc(8)), 'mapUpdate: key must be a Buffer');
  bad(() => any.mapUpdate!(3, Buffer.alloc(4), [1]), 'mapUpdate: value must be a Buffer');
  bad(() => any.mapDump!(3, 4, '8'), 'mapDump: valueSize must be a number');
  bad(() => any.createMap!(1, 4, 8, 4, 7), 'createMap: name must be a string');
  bad(() => any.createMap!(1, -4, 8, 4, 'x'), 'createMap: keySize must be between 0 and 4294967295', RangeError);
  bad(() => any.tcAttach!('eth0'), 'tcAttach: options must be an object');
  bad(
    () => tcAttach({ ifindex: 1, direction: 'sideways' as 'ingress', handle: 1, priority: 1, progFd: 3 }),
    "tcAttach: direction must be 'ingress' or 'egress'",
  );
  bad(
    () => any.tcQuery!({ ifindex: '1', direction: 'ingress', handle: 1, priority: 1 }),
    'tcQuery: ifindex must be a number',
  );
  bad(() => any.tcxAttach!('eth0'), 'tcxAttach: options must be an object');
  bad(
    () => native.tcxAttach({ ifindex: 1, direction: 'up' as 'ingress', progFd: 3 }),
    "tcxAttach: direction must be 'ingress' or 'egress'",
  );
  bad(
    () => native.tcxAttach({ ifindex: 1, direction: 'ingress', progFd: 3, relativeFd: 4, relativeId: 5 }),
    'tcxAttach: relativeFd and relativeId exclude each other',
  );
  bad(
    () => any.tcxAttach!({ ifindex: 1, direction: 'ingress', progFd: 3, flags: -1 }),
    'tcxAttach: flags must be between 0 and 4294967295',
    RangeError,
  );
  bad(
    () => any.tcxQuery!({ ifindex: 0, direction: 'egress' }),
    'tcxQuery: ifindex must be between 1 and 2147483647',
    RangeError,
  );
  bad(() => any.linkUpdate!(3, 'x'), 'linkUpdate: newProgFd must be a number');
  bad(() => any.linkInfo!(null), 'linkInfo: fd must be a number');
  bad(() => any.ifNameToIndex!('lo', 5), 'ifNameToIndex: netns must be a string');
  bad(() => new PacketSocket({} as never), 'PacketSocket: progFd must be a number');
  bad(() => new PacketSocket({ progFd: 3 } as never), 'PacketSocket: onPackets must be a function');
  bad(
    () => new RingBufferReader({ mapFd: 3, onRecords: 'no' } as never),
    'RingBufferReader: onRecords must be a function',
  );
});

test('layouts() reports every struct of fqe_types.h and its constants', () => {
  const l = layouts();
  assert.deepEqual(l.allow_key, { size: 24, fields: { prefixlen: 0, identity: 4, addr: 8 } });
  assert.equal(l.allow_val?.size, 56);
  assert.equal(l.allow_val?.fields.ports, 24);
  assert.equal(l.event?.size, 56);
  assert.equal(l.ct_key?.size, 44);
  assert.ok(l.counters && l.counters.size % 8 === 0, 'counters: whole u64s');
  assert.equal(l.name?.size, 256);
  assert.equal(l.constants.NAME_LEN, 256);
  for (const name of [
    'pod_info',
    'config',
    'endpoint',
    'owner_key',
    'port_rule',
    'resolver_key',
    'query_key',
    'query_val',
    'ct_val',
  ]) {
    assert.ok(l[name] && l[name].size > 0, `struct fqe_${name}`);
  }
  assert.equal(l.constants.ABI_VERSION, 2);
  assert.equal(l.constants.MAX_PORT_RULES, 8);
  assert.equal(l.constants.MAX_ALLOW, 1048576);
  assert.equal(l.constants.REASON_SPOOFED, 4);
  assert.equal(l.constants.REASON_MAX, 13);
  assert.equal(l.constants.REASON_DNS_NAME, 10);
  assert.equal(l.constants.REASON_TLS_NAME, 11);
  assert.equal(l.constants.REASON_SPOOFED_ANSWER, 12);
  assert.ok(l.constants.REASON_MAX! <= l.constants.REASON_SLOTS!, 'the counters keep their layout');
  assert.equal(l.refused_name?.fields.wire, 8);
  assert.equal(l.constants.EV_DROP, 1);
});

test('hash map: update, lookup, delete, iterate, dump, batches', rootOnly, () => {
  requireRoot();
  const fd = newMap(MapType.HASH, 4, 8, 4096);
  assert.deepEqual(
    { ...mapInfo(fd), id: 0 },
    { id: 0, type: MapType.HASH, keySize: 4, valueSize: 8, maxEntries: 4096, flags: 0, name: 'fqe_test' },
  );
  assert.equal(mapLookup(fd, u32(1), 8), null);
  mapUpdate(fd, u32(1), u64(11n));
  assert.deepEqual(mapLookup(fd, u32(1), 8), u64(11n));
  assert.throws(
    () => mapUpdate(fd, u32(1), u64(12n), BPF_NOEXIST),
    (e) => assertBpfError(e, 'EEXIST', 17, /^bpf_map_update_elem\(fqe_test\)$/),
  );
  assert.throws(() => mapLookup(fd, Buffer.alloc(3), 8), /mapLookup: key must be 4 bytes, got 3/);
  assert.throws(() => mapLookup(fd, u32(1), 16), /mapLookup: valueSize must be 8, got 16/);
  assert.deepEqual(mapGetNextKey(fd, null, 4), u32(1));
  assert.equal(mapGetNextKey(fd, u32(1), 4), null);
  assert.equal(mapDelete(fd, u32(1)), true);
  assert.equal(mapDelete(fd, u32(1)), false);

  const n = 3000; // more than one lookup batch
  const keys = Buffer.concat(Array.from({ length: n }, (_, i) => u32(i)));
  const values = Buffer.concat(Array.from({ length: n }, (_, i) => u64(BigInt(i) * 10n)));
  assert.equal(mapUpdateBatch(fd, keys, values, n), n);
  assert.throws(() => mapUpdateBatch(fd, keys, values, n - 1), RangeError);
  const dump = mapDump(fd, 4, 8);
  assert.equal(dump.count, n);
  assert.equal(dump.keys.length, n * 4);
  assert.equal(dump.values.length, n * 8);
  const seen = new Map<number, bigint>();
  for (let i = 0; i < dump.count; i++) seen.set(dump.keys.readUInt32LE(i * 4), dump.values.readBigUInt64LE(i * 8));
  assert.equal(seen.size, n);
  assert.equal(seen.get(2999), 29990n);

  // 10 absent keys in the middle are skipped and not counted
  const del = Buffer.concat([
    ...Array.from({ length: 100 }, (_, i) => u32(i)),
    ...Array.from({ length: 10 }, (_, i) => u32(90000 + i)),
    ...Array.from({ length: 100 }, (_, i) => u32(100 + i)),
  ]);
  assert.equal(mapDeleteBatch(fd, del, 210), 200);
  assert.equal(mapDump(fd, 4, 8).count, n - 200);
  assert.equal(mapDeleteBatch(fd, Buffer.alloc(0), 0), 0);
});

test('LPM trie: longest prefix, batches fall back to single elements, dump iterates', rootOnly, () => {
  requireRoot();
  const l = layouts();
  const keySize = l.allow_key!.size;
  const fd = newMap(MapType.LPM_TRIE, keySize, 8, 64, BPF_F_NO_PREALLOC);
  const key = (prefixlen: number, identity: number, a: number, b: number, c: number, d: number): Buffer => {
    const k = Buffer.alloc(keySize);
    k.writeUInt32LE(prefixlen, 0);
    k.writeUInt32LE(identity, 4);
    k.set([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d], 8);
    return k;
  };
  const keys = Buffer.concat([
    key(32 + 96 + 24, 7, 198, 51, 100, 0),
    key(32 + 128, 7, 198, 51, 100, 9),
    key(32 + 128, 8, 203, 0, 113, 5),
  ]);
  const values = Buffer.concat([u64(1n), u64(2n), u64(3n)]);
  assert.equal(mapUpdateBatch(fd, keys, values, 3), 3);
  assert.deepEqual(mapLookup(fd, key(32 + 128, 7, 198, 51, 100, 9), 8), u64(2n));
  assert.deepEqual(mapLookup(fd, key(32 + 128, 7, 198, 51, 100, 10), 8), u64(1n));
  assert.equal(mapLookup(fd, key(32 + 128, 8, 198, 51, 100, 10), 8), null);
  const dump = mapDump(fd, keySize, 8);
  assert.equal(dump.count, 3);
  assert.deepEqual(Array.from({ length: 3 }, (_, i) => dump.values.readBigUInt64LE(i * 8)).sort(), [1n, 2n, 3n]);
  const del = Buffer.concat([
    key(32 + 128, 7, 198, 51, 100, 9),
    key(32 + 128, 9, 1, 2, 3, 4),
    key(32 + 128, 8, 203, 0, 113, 5),
  ]);
  assert.equal(mapDeleteBatch(fd, del, 3), 2);
  assert.equal(mapDump(fd, keySize, 8).count, 1);
});

test('per-CPU hash: values are roundup(size, 8) per possible CPU', rootOnly, () => {
  requireRoot();
  const cpus = numPossibleCpus();
  assert.ok(cpus >= 1);
  const fd = newMap(MapType.PERCPU_HASH, 4, 4, 16);
  const valueSize = 8 * cpus;
  const value = Buffer.alloc(valueSize);
  for (let c = 0; c < cpus; c++) value.writeUInt32LE(c + 100, c * 8);
  mapUpdate(fd, u32(5), value);
  assert.deepEqual(mapLookup(fd, u32(5), valueSize), value);
  assert.throws(() => mapLookup(fd, u32(5), 4), /valueSize must be/);
  const dump = mapDump(fd, 4, valueSize);
  assert.equal(dump.count, 1);
  assert.deepEqual(dump.values, value);
  assert.equal(mapUpdateBatch(fd, Buffer.concat([u32(6), u32(7)]), Buffer.concat([value, value]), 2), 2);
  assert.equal(mapDump(fd, 4, valueSize).count, 3);
});

test('RingBufferReader opens, consumes nothing, closes twice; wrong map is a BpfError', rootOnly, () => {
  requireRoot();
  const ring = newMap(MapType.RINGBUF, 0, 0, 4096);
  const records: Buffer[] = [];
  const reader = new RingBufferReader({ mapFd: ring, onRecords: (r) => records.push(...r) });
  assert.equal(reader.unref(), reader);
  assert.equal(reader.consume(), 0);
  reader.close();
  reader.close();
  assert.equal(reader.consume(), 0);
  const hash = newMap(MapType.HASH, 4, 4, 4);
  assert.throws(
    () => new RingBufferReader({ mapFd: hash, onRecords: () => {} }),
    (e) => e instanceof BpfError && /^ring_buffer__new\(fd \d+\)$/.test(e.op),
  );
});

test('PacketSocket refuses a program fd that is not a socket filter', rootOnly, () => {
  requireRoot();
  const hash = newMap(MapType.HASH, 4, 4, 4);
  assert.throws(
    () => new PacketSocket({ progFd: hash, onPackets: () => {} }),
    (e) => e instanceof BpfError && e.op === 'setsockopt(SO_ATTACH_BPF)' && e.code === 'EINVAL',
  );
});
