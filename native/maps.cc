// SPDX-License-Identifier: Apache-2.0
//
// Map element access: single elements, iteration, dumps and batches, plus
// createMap. Every call first reads the map's shape (one bpf_obj_get_info_by_fd)
// so a wrong key/value size from JavaScript is a RangeError instead of the
// kernel writing past a Buffer, and so errors name the map
// ("bpf_map_update_elem(fqe_allow)").
#include "addon.h"
#include "errors.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <vector>

namespace fqe
{

static constexpr int kENOTSUPP = 524; // kernel-internal, reaches userspace

struct MapShape {
	uint32_t type;
	uint32_t keySize;
	uint32_t valueSize; // per-CPU maps: roundup(size, 8) * possible CPUs
	uint32_t maxEntries;
	std::string label; // map name, or "fd N" for unnamed maps
};

static bool IsPerCpu(uint32_t type)
{
	return type == BPF_MAP_TYPE_PERCPU_HASH || type == BPF_MAP_TYPE_PERCPU_ARRAY ||
	       type == BPF_MAP_TYPE_LRU_PERCPU_HASH || type == BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE;
}

static bool HasBatchLookup(uint32_t type)
{
	return type == BPF_MAP_TYPE_HASH || type == BPF_MAP_TYPE_PERCPU_HASH || type == BPF_MAP_TYPE_LRU_HASH ||
	       type == BPF_MAP_TYPE_LRU_PERCPU_HASH || type == BPF_MAP_TYPE_ARRAY || type == BPF_MAP_TYPE_PERCPU_ARRAY;
}

static bool IsNoBatchError(int err)
{
	return err == EINVAL || err == kENOTSUPP || err == EOPNOTSUPP;
}

// `call` names the libbpf call the error should mention.
static MapShape GetShape(Napi::Env env, int fd, const char *call)
{
	struct bpf_map_info mi;
	std::memset(&mi, 0, sizeof(mi));
	__u32 len = sizeof(mi);
	int ret = bpf_obj_get_info_by_fd(fd, &mi, &len);
	if (ret < 0)
		ThrowErrno(env, InfoErrno(PositiveErrno(ret)), std::string(call) + "(fd " + std::to_string(fd) + ")");
	MapShape shape;
	shape.type = mi.type;
	shape.keySize = mi.key_size;
	shape.valueSize = mi.value_size;
	shape.maxEntries = mi.max_entries;
	if (IsPerCpu(mi.type)) {
		int cpus = libbpf_num_possible_cpus();
		if (cpus < 0)
			ThrowErrno(env, -cpus, "libbpf_num_possible_cpus()");
		shape.valueSize = ((mi.value_size + 7) & ~7u) * cpus;
	}
	shape.label = mi.name[0] ? std::string(mi.name) : "fd " + std::to_string(fd);
	return shape;
}

static std::string Op(const char *call, const MapShape &shape)
{
	return std::string(call) + "(" + shape.label + ")";
}

static void CheckLength(Napi::Env env, const char *fn, const char *name, size_t got, size_t want)
{
	if (got != want)
		ThrowRange(env, std::string(fn) + ": " + name + " must be " + std::to_string(want) + " bytes, got " +
					std::to_string(got));
}

static void CheckSizeArg(Napi::Env env, const char *fn, const char *name, uint32_t got, uint32_t want)
{
	if (got != want)
		ThrowRange(env, std::string(fn) + ": " + name + " must be " + std::to_string(want) + ", got " +
					std::to_string(got));
}

// mapUpdate(fd, key, value, flags = 0)
static Napi::Value MapUpdate(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	int fd = FQE_ARG_FD("mapUpdate", 0);
	auto key = FQE_ARG_BUFFER("mapUpdate", 1, "key");
	auto value = FQE_ARG_BUFFER("mapUpdate", 2, "value");
	uint32_t flags = FQE_ARG_U32_OR("mapUpdate", 3, "flags", 0);
	MapShape shape = GetShape(env, fd, "bpf_map_update_elem");
	CheckLength(env, "mapUpdate", "key", key.Length(), shape.keySize);
	CheckLength(env, "mapUpdate", "value", value.Length(), shape.valueSize);
	int ret = bpf_map_update_elem(fd, key.Data(), value.Data(), flags);
	if (ret < 0)
		ThrowErrno(env, PositiveErrno(ret), Op("bpf_map_update_elem", shape));
	return env.Undefined();
}

// mapLookup(fd, key, valueSize) -> Buffer | null
static Napi::Value MapLookup(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	int fd = FQE_ARG_FD("mapLookup", 0);
	auto key = FQE_ARG_BUFFER("mapLookup", 1, "key");
	uint32_t valueSize = FQE_ARG_U32("mapLookup", 2, "valueSize");
	MapShape shape = GetShape(env, fd, "bpf_map_lookup_elem");
	CheckLength(env, "mapLookup", "key", key.Length(), shape.keySize);
	CheckSizeArg(env, "mapLookup", "valueSize", valueSize, shape.valueSize);
	auto value = Napi::Buffer<uint8_t>::New(env, valueSize);
	int ret = bpf_map_lookup_elem(fd, key.Data(), value.Data());
	if (ret < 0) {
		int err = PositiveErrno(ret);
		if (err == ENOENT)
			return env.Null();
		ThrowErrno(env, err, Op("bpf_map_lookup_elem", shape));
	}
	return value;
}

// mapDelete(fd, key) -> false when absent
static Napi::Value MapDelete(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	int fd = FQE_ARG_FD("mapDelete", 0);
	auto key = FQE_ARG_BUFFER("mapDelete", 1, "key");
	MapShape shape = GetShape(env, fd, "bpf_map_delete_elem");
	CheckLength(env, "mapDelete", "key", key.Length(), shape.keySize);
	int ret = bpf_map_delete_elem(fd, key.Data());
	if (ret < 0) {
		int err = PositiveErrno(ret);
		if (err == ENOENT)
			return Napi::Boolean::New(env, false);
		ThrowErrno(env, err, Op("bpf_map_delete_elem", shape));
	}
	return Napi::Boolean::New(env, true);
}

// mapGetNextKey(fd, key | null, keySize) -> Buffer | null (null: no more)
static Napi::Value MapGetNextKey(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	int fd = FQE_ARG_FD("mapGetNextKey", 0);
	bool fromStart = IsAbsent(info[1]);
	Napi::Buffer<uint8_t> key;
	if (!fromStart)
		key = FQE_ARG_BUFFER("mapGetNextKey", 1, "key");
	uint32_t keySize = FQE_ARG_U32("mapGetNextKey", 2, "keySize");
	MapShape shape = GetShape(env, fd, "bpf_map_get_next_key");
	CheckSizeArg(env, "mapGetNextKey", "keySize", keySize, shape.keySize);
	if (!fromStart)
		CheckLength(env, "mapGetNextKey", "key", key.Length(), shape.keySize);
	auto next = Napi::Buffer<uint8_t>::New(env, keySize);
	int ret = bpf_map_get_next_key(fd, fromStart ? nullptr : key.Data(), next.Data());
	if (ret < 0) {
		int err = PositiveErrno(ret);
		if (err == ENOENT)
			return env.Null();
		ThrowErrno(env, err, Op("bpf_map_get_next_key", shape));
	}
	return next;
}

// Packed keys and values of a dump.
struct Dump {
	std::vector<uint8_t> keys;
	std::vector<uint8_t> values;
	size_t count = 0;
	void Reserve(const MapShape &s, size_t n)
	{
		if (keys.size() < n * s.keySize)
			keys.resize(n * s.keySize);
		if (values.size() < n * s.valueSize)
			values.resize(n * s.valueSize);
	}
};

// Returns false if the kernel has no batch lookup for this map.
static bool DumpBatch(Napi::Env env, int fd, const MapShape &s, Dump &dump)
{
	uint32_t chunk = 1024;
	size_t tokenSize = std::max<size_t>(s.keySize, 8);
	std::vector<uint8_t> inToken(tokenSize), outToken(tokenSize);
	auto opts = ZeroedOpts<bpf_map_batch_opts>();
	bool first = true;
	for (;;) {
		dump.Reserve(s, dump.count + chunk);
		__u32 n = chunk;
		int ret = bpf_map_lookup_batch(fd, first ? nullptr : inToken.data(), outToken.data(),
					       dump.keys.data() + dump.count * s.keySize,
					       dump.values.data() + dump.count * s.valueSize, &n, &opts);
		int err = ret < 0 ? PositiveErrno(ret) : 0;
		if (err && err != ENOENT) {
			if (err == ENOSPC) { // one hash bucket holds more than chunk
				chunk = std::max(chunk * 2, n + 1);
				continue;
			}
			if (first && IsNoBatchError(err))
				return false;
			ThrowErrno(env, err, Op("bpf_map_lookup_batch", s));
		}
		dump.count += n;
		if (err == ENOENT)
			return true;
		inToken.swap(outToken);
		first = false;
	}
}

static void DumpIterate(Napi::Env env, int fd, const MapShape &s, Dump &dump)
{
	std::vector<uint8_t> cur(s.keySize), next(s.keySize);
	bool first = true;
	// An LPM trie restarts from its first key when the current one was
	// deleted meanwhile; never return more than the map can hold.
	while (dump.count < s.maxEntries) {
		int ret = bpf_map_get_next_key(fd, first ? nullptr : cur.data(), next.data());
		if (ret < 0) {
			int err = PositiveErrno(ret);
			if (err == ENOENT)
				return;
			ThrowErrno(env, err, Op("bpf_map_get_next_key", s));
		}
		first = false;
		cur.swap(next);
		dump.Reserve(s, dump.count + 1);
		ret = bpf_map_lookup_elem(fd, cur.data(), dump.values.data() + dump.count * s.valueSize);
		if (ret < 0) {
			int err = PositiveErrno(ret);
			if (err == ENOENT)
				continue; // deleted between the two calls
			ThrowErrno(env, err, Op("bpf_map_lookup_elem", s));
		}
		std::memcpy(dump.keys.data() + dump.count * s.keySize, cur.data(), s.keySize);
		dump.count++;
	}
}

// mapDump(fd, keySize, valueSize) -> {keys, values, count}
static Napi::Value MapDump(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	int fd = FQE_ARG_FD("mapDump", 0);
	uint32_t keySize = FQE_ARG_U32("mapDump", 1, "keySize");
	uint32_t valueSize = FQE_ARG_U32("mapDump", 2, "valueSize");
	MapShape shape = GetShape(env, fd, "bpf_map_lookup_batch");
	CheckSizeArg(env, "mapDump", "keySize", keySize, shape.keySize);
	CheckSizeArg(env, "mapDump", "valueSize", valueSize, shape.valueSize);
	Dump dump;
	if (!HasBatchLookup(shape.type) || !DumpBatch(env, fd, shape, dump)) {
		dump = Dump();
		DumpIterate(env, fd, shape, dump);
	}
	Napi::Object result = Napi::Object::New(env);
	result.Set("keys", Napi::Buffer<uint8_t>::Copy(env, dump.keys.data(), dump.count * shape.keySize));
	result.Set("values", Napi::Buffer<uint8_t>::Copy(env, dump.values.data(), dump.count * shape.valueSize));
	result.Set("count", Napi::Number::New(env, dump.count));
	return result;
}

// mapUpdateBatch(fd, keys, values, count, flags = 0) -> updated
static Napi::Value MapUpdateBatch(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	int fd = FQE_ARG_FD("mapUpdateBatch", 0);
	auto keys = FQE_ARG_BUFFER("mapUpdateBatch", 1, "keys");
	auto values = FQE_ARG_BUFFER("mapUpdateBatch", 2, "values");
	uint32_t count = FQE_ARG_U32("mapUpdateBatch", 3, "count");
	uint32_t flags = FQE_ARG_U32_OR("mapUpdateBatch", 4, "flags", 0);
	MapShape s = GetShape(env, fd, "bpf_map_update_batch");
	CheckLength(env, "mapUpdateBatch", "keys", keys.Length(), size_t(count) * s.keySize);
	CheckLength(env, "mapUpdateBatch", "values", values.Length(), size_t(count) * s.valueSize);
	if (count == 0)
		return Napi::Number::New(env, 0);
	auto opts = ZeroedOpts<bpf_map_batch_opts>();
	opts.elem_flags = flags;
	__u32 n = count;
	int ret = bpf_map_update_batch(fd, keys.Data(), values.Data(), &n, &opts);
	if (ret == 0)
		return Napi::Number::New(env, n);
	int err = PositiveErrno(ret);
	if (!IsNoBatchError(err))
		ThrowErrno(env, err, Op("bpf_map_update_batch", s));
	for (uint32_t i = 0; i < count; i++) {
		ret = bpf_map_update_elem(fd, keys.Data() + size_t(i) * s.keySize,
					  values.Data() + size_t(i) * s.valueSize, flags);
		if (ret < 0)
			ThrowErrno(env, PositiveErrno(ret), Op("bpf_map_update_elem", s));
	}
	return Napi::Number::New(env, count);
}

// mapDeleteBatch(fd, keys, count) -> deleted (absent keys are not counted)
static Napi::Value MapDeleteBatch(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	int fd = FQE_ARG_FD("mapDeleteBatch", 0);
	auto keys = FQE_ARG_BUFFER("mapDeleteBatch", 1, "keys");
	uint32_t count = FQE_ARG_U32("mapDeleteBatch", 2, "count");
	MapShape s = GetShape(env, fd, "bpf_map_delete_batch");
	CheckLength(env, "mapDeleteBatch", "keys", keys.Length(), size_t(count) * s.keySize);
	auto opts = ZeroedOpts<bpf_map_batch_opts>();
	bool batch = true;
	uint32_t i = 0, deleted = 0;
	while (i < count) {
		const uint8_t *key = keys.Data() + size_t(i) * s.keySize;
		if (batch) {
			__u32 n = count - i;
			int ret = bpf_map_delete_batch(fd, key, &n, &opts);
			if (ret == 0) {
				deleted += n;
				i += n;
				continue;
			}
			int err = PositiveErrno(ret);
			if (err == ENOENT) { // keys before i + n went; that one is absent
				deleted += n;
				i += n + 1;
				continue;
			}
			if (IsNoBatchError(err)) { // e.g. LPM trie: key by key from i
				batch = false;
				continue;
			}
			ThrowErrno(env, err, Op("bpf_map_delete_batch", s));
		}
		int ret = bpf_map_delete_elem(fd, key);
		if (ret == 0) {
			deleted++;
		} else {
			int err = PositiveErrno(ret);
			if (err != ENOENT)
				ThrowErrno(env, err, Op("bpf_map_delete_elem", s));
		}
		i++;
	}
	return Napi::Number::New(env, deleted);
}

// createMap(type, keySize, valueSize, maxEntries, name, flags = 0) -> fd
static Napi::Value CreateMap(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	uint32_t type = FQE_ARG_U32("createMap", 0, "type");
	uint32_t keySize = FQE_ARG_U32("createMap", 1, "keySize");
	uint32_t valueSize = FQE_ARG_U32("createMap", 2, "valueSize");
	uint32_t maxEntries = FQE_ARG_U32("createMap", 3, "maxEntries");
	std::string name = FQE_ARG_STRING("createMap", 4, "name");
	uint32_t flags = FQE_ARG_U32_OR("createMap", 5, "flags", 0);
	auto opts = ZeroedOpts<bpf_map_create_opts>();
	opts.map_flags = flags;
	int fd = bpf_map_create(static_cast<enum bpf_map_type>(type), name.empty() ? nullptr : name.c_str(), keySize,
				valueSize, maxEntries, &opts);
	if (fd < 0)
		ThrowErrno(env, PositiveErrno(fd), "bpf_map_create(" + (name.empty() ? "" : name) + ")");
	return Napi::Number::New(env, fd);
}

void InitMaps(Napi::Env env, Napi::Object exports)
{
	exports.Set("mapUpdate", Napi::Function::New(env, MapUpdate));
	exports.Set("mapLookup", Napi::Function::New(env, MapLookup));
	exports.Set("mapDelete", Napi::Function::New(env, MapDelete));
	exports.Set("mapGetNextKey", Napi::Function::New(env, MapGetNextKey));
	exports.Set("mapDump", Napi::Function::New(env, MapDump));
	exports.Set("mapUpdateBatch", Napi::Function::New(env, MapUpdateBatch));
	exports.Set("mapDeleteBatch", Napi::Function::New(env, MapDeleteBatch));
	exports.Set("createMap", Napi::Function::New(env, CreateMap));
}

} // namespace fqe
