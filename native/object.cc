// SPDX-License-Identifier: Apache-2.0
//
// BPF objects and pinned things: load an ELF object (maps pinned by name under
// a pin dir, reusing compatible pins), keep it open by id, pin/unpin/open
// pinned programs and maps, close fds, and describe programs and maps.
#include "addon.h"
#include "errors.h"
#include "libbpf_log.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace fqe
{

// Closes the object unless released: one teardown path for a failing load.
struct ObjectHolder {
	struct bpf_object *obj = nullptr;
	~ObjectHolder()
	{
		if (obj)
			bpf_object__close(obj);
	}
};

// Writes `value` into the const volatile global `name` of .rodata.
static void SetRodata(Napi::Env env, struct bpf_object *obj, const std::string &name, Napi::Buffer<uint8_t> value)
{
	const std::string op = "loadObject rodata(" + name + ")";
	struct btf *btf = bpf_object__btf(obj);
	struct bpf_map *rodata = nullptr;
	struct bpf_map *map;
	bpf_object__for_each_map(map, obj)
	{
		const char *mapName = bpf_map__name(map);
		size_t len = std::strlen(mapName);
		if (len >= 7 && std::strcmp(mapName + len - 7, ".rodata") == 0)
			rodata = map;
	}
	if (!btf || !rodata)
		ThrowErrno(env, ENOENT, op);
	int secId = btf__find_by_name_kind(btf, ".rodata", BTF_KIND_DATASEC);
	if (secId < 0)
		ThrowErrno(env, ENOENT, op);
	const struct btf_type *sec = btf__type_by_id(btf, secId);
	const struct btf_var_secinfo *vars = btf_var_secinfos(sec);
	for (int i = 0; i < btf_vlen(sec); i++) {
		const struct btf_type *var = btf__type_by_id(btf, vars[i].type);
		const char *varName = btf__name_by_offset(btf, var->name_off);
		if (!varName || name != varName)
			continue;
		if (value.Length() != vars[i].size)
			ThrowRange(env, "loadObject: rodata." + name + " must be " + std::to_string(vars[i].size) +
						" bytes");
		size_t size = 0;
		const void *data = bpf_map__initial_value(rodata, &size);
		if (!data || vars[i].offset + vars[i].size > size)
			ThrowErrno(env, EINVAL, op);
		const uint8_t *bytes = static_cast<const uint8_t *>(data);
		std::vector<uint8_t> image(bytes, bytes + size);
		std::memcpy(image.data() + vars[i].offset, value.Data(), value.Length());
		int ret = bpf_map__set_initial_value(rodata, image.data(), image.size());
		if (ret < 0)
			ThrowErrno(env, PositiveErrno(ret), op);
		return;
	}
	ThrowErrno(env, ENOENT, op);
}

// The verifier's statistics line ("processed N insns ..."), per program,
// when loadObject is asked for them (log level 4: errors and statistics,
// no instruction trace).
//
// For a developer finding where the instructions go: FQE_VERIFIER_LOG_LEVEL
// (1 or 2, the instruction trace) raises the level and the buffer to 512 MiB.
struct VerifierLogs {
	std::vector<std::vector<char>> bufs;

	void Attach(struct bpf_object *obj)
	{
		const char *env = std::getenv("FQE_VERIFIER_LOG_LEVEL");
		uint32_t level = env ? 4 | (std::atoi(env) & 3) : 4;
		size_t bytes = level == 4 ? 64 * 1024 : (size_t)1 << 29;
		struct bpf_program *prog;
		bpf_object__for_each_program(prog, obj)
		{
			bufs.emplace_back(bytes, '\0');
			bpf_program__set_log_buf(prog, bufs.back().data(), bytes);
			bpf_program__set_log_level(prog, level);
		}
	}

	std::string Text() const
	{
		std::string all;
		for (const auto &b : bufs)
			all.append(b.data(), strnlen(b.data(), b.size()));
		return all;
	}
};

// loadObject(path, pinDir, opts?: {rodata?: Record<string, Buffer>,
//            verifierStats?: boolean, programs?: string[]}): programs, when
// given, are the only ones loaded (the rest of the object's are skipped).
static Napi::Value LoadObject(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	std::string path = FQE_ARG_STRING("loadObject", 0, "path");
	std::string pinDir = FQE_ARG_STRING("loadObject", 1, "pinDir");
	if (pinDir.empty()) // libbpf would pin into the root of /sys/fs/bpf
		ThrowRange(env, "loadObject: pinDir must not be empty");
	Napi::Object rodataValues;
	bool verifierStats = false;
	std::vector<std::string> onlyPrograms;
	bool onlySome = false;
	if (!IsAbsent(info[2])) {
		Napi::Object opts = FQE_ARG_OBJECT("loadObject", 2, "opts");
		Napi::Value only = opts.Get("programs");
		if (!IsAbsent(only)) {
			if (!only.IsArray())
				ThrowType(env, "loadObject", "programs", "an array of program names");
			Napi::Array names = only.As<Napi::Array>();
			for (uint32_t i = 0; i < names.Length(); i++) {
				Napi::Value n = names.Get(i);
				if (!n.IsString())
					ThrowType(env, "loadObject", "programs", "an array of program names");
				onlyPrograms.push_back(n.As<Napi::String>().Utf8Value());
			}
			onlySome = true;
		}
		if (!IsAbsent(opts.Get("rodata")))
			rodataValues = ToObjectArg(env, opts.Get("rodata"), "loadObject", "rodata");
		Napi::Value stats = opts.Get("verifierStats");
		if (!IsAbsent(stats)) {
			if (!stats.IsBoolean())
				ThrowType(env, "loadObject", "verifierStats", "a boolean");
			verifierStats = stats.As<Napi::Boolean>().Value();
		}
	}

	LibbpfCapture capture;
	auto openOpts = ZeroedOpts<bpf_object_open_opts>();
	openOpts.pin_root_path = pinDir.c_str();
	ObjectHolder holder;
	errno = 0;
	holder.obj = bpf_object__open_file(path.c_str(), &openOpts);
	if (!holder.obj) {
		int err = errno ? errno : EINVAL;
		ThrowErrno(env, err, "bpf_object__open_file(" + path + ")", capture.Details());
	}
	if (!rodataValues.IsEmpty()) {
		Napi::Array names = rodataValues.GetPropertyNames();
		for (uint32_t i = 0; i < names.Length(); i++) {
			std::string name = names.Get(i).As<Napi::String>().Utf8Value();
			Napi::Value v = rodataValues.Get(name);
			if (!v.IsBuffer())
				ThrowType(env, "loadObject", ("rodata." + name).c_str(), "a Buffer");
			SetRodata(env, holder.obj, name, v.As<Napi::Buffer<uint8_t>>());
		}
	}
	if (onlySome) {
		struct bpf_program *p;
		bpf_object__for_each_program(p, holder.obj)
		{
			bool wanted = false;
			for (const auto &n : onlyPrograms)
				wanted = wanted || n == bpf_program__name(p);
			bpf_program__set_autoload(p, wanted);
		}
	}
	VerifierLogs logs;
	if (verifierStats)
		logs.Attach(holder.obj);
	int ret = bpf_object__load(holder.obj);
	if (ret < 0)
		ThrowErrno(env, PositiveErrno(ret), "bpf_object__load(" + path + ")",
			   verifierStats ? logs.Text() + capture.Details() : capture.Details());

	Napi::Object programs = Napi::Object::New(env);
	struct bpf_program *prog;
	bpf_object__for_each_program(prog, holder.obj)
	{
		int fd = bpf_program__fd(prog);
		if (fd < 0)
			continue; // autoload disabled
		Napi::Object p = Napi::Object::New(env);
		p.Set("fd", fd);
		p.Set("type", static_cast<uint32_t>(bpf_program__type(prog)));
		p.Set("name", bpf_program__name(prog));
		programs.Set(bpf_program__name(prog), p);
	}
	Napi::Object maps = Napi::Object::New(env);
	struct bpf_map *map;
	bpf_object__for_each_map(map, holder.obj)
	{
		const char *name = bpf_map__name(map);
		if (name[0] == '.' || bpf_map__is_internal(map))
			continue;
		Napi::Object m = Napi::Object::New(env);
		m.Set("fd", bpf_map__fd(map));
		m.Set("type", static_cast<uint32_t>(bpf_map__type(map)));
		m.Set("keySize", bpf_map__key_size(map));
		m.Set("valueSize", bpf_map__value_size(map));
		m.Set("maxEntries", bpf_map__max_entries(map));
		maps.Set(name, m);
	}

	AddonData *data = GetAddonData(env);
	uint32_t id = data->nextObjectId++;
	data->objects[id] = holder.obj;
	holder.obj = nullptr;
	Napi::Object result = Napi::Object::New(env);
	result.Set("id", id);
	result.Set("programs", programs);
	result.Set("maps", maps);
	if (verifierStats)
		result.Set("verifierLog", logs.Text());
	return result;
}

// closeObject(id): closes the object's fds; pins stay.
static Napi::Value CloseObject(const Napi::CallbackInfo &info)
{
	uint32_t id = FQE_ARG_U32("closeObject", 0, "id");
	AddonData *data = GetAddonData(info.Env());
	auto it = data->objects.find(id);
	if (it == data->objects.end())
		ThrowErrno(info.Env(), ENOENT, "closeObject(" + std::to_string(id) + ")");
	bpf_object__close(it->second);
	data->objects.erase(it);
	return info.Env().Undefined();
}

// pinProgram(fd, path), pinObject(fd, path): any bpf fd (a link, say)
static Napi::Value Pin(const Napi::CallbackInfo &info, const char *fn)
{
	int fd = FQE_ARG_FD(fn, 0);
	std::string path = FQE_ARG_STRING(fn, 1, "path");
	int ret = bpf_obj_pin(fd, path.c_str());
	if (ret < 0)
		ThrowErrno(info.Env(), PositiveErrno(ret), "bpf_obj_pin(" + path + ")");
	return info.Env().Undefined();
}

static Napi::Value PinProgram(const Napi::CallbackInfo &info)
{
	return Pin(info, "pinProgram");
}

static Napi::Value PinObject(const Napi::CallbackInfo &info)
{
	return Pin(info, "pinObject");
}

// unpin(path) -> false when there was nothing to unpin
static Napi::Value Unpin(const Napi::CallbackInfo &info)
{
	std::string path = FQE_ARG_STRING("unpin", 0, "path");
	if (unlink(path.c_str()) != 0) {
		if (errno == ENOENT)
			return Napi::Boolean::New(info.Env(), false);
		ThrowErrno(info.Env(), errno, "unlink(" + path + ")");
	}
	return Napi::Boolean::New(info.Env(), true);
}

// objGet(path) -> fd
static Napi::Value ObjGet(const Napi::CallbackInfo &info)
{
	std::string path = FQE_ARG_STRING("objGet", 0, "path");
	int fd = bpf_obj_get(path.c_str());
	if (fd < 0)
		ThrowErrno(info.Env(), PositiveErrno(fd), "bpf_obj_get(" + path + ")");
	return Napi::Number::New(info.Env(), fd);
}

// closeFd(fd)
static Napi::Value CloseFd(const Napi::CallbackInfo &info)
{
	int fd = FQE_ARG_FD("closeFd", 0);
	if (close(fd) != 0 && errno != EINTR)
		ThrowErrno(info.Env(), errno, "close(" + std::to_string(fd) + ")");
	return info.Env().Undefined();
}

// progInfo(fd) -> {id, type, name, tag}
static Napi::Value ProgInfo(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	int fd = FQE_ARG_FD("progInfo", 0);
	struct bpf_prog_info pi;
	std::memset(&pi, 0, sizeof(pi));
	__u32 len = sizeof(pi);
	int ret = bpf_obj_get_info_by_fd(fd, &pi, &len);
	if (ret < 0)
		ThrowErrno(env, InfoErrno(PositiveErrno(ret)), "bpf_obj_get_info_by_fd(fd " + std::to_string(fd) + ")");
	char tag[2 * BPF_TAG_SIZE + 1];
	for (int i = 0; i < BPF_TAG_SIZE; i++)
		std::snprintf(tag + 2 * i, 3, "%02x", pi.tag[i]);
	Napi::Object result = Napi::Object::New(env);
	result.Set("id", pi.id);
	result.Set("type", pi.type);
	result.Set("name", pi.name);
	result.Set("tag", tag);
	return result;
}

// mapInfo(fd) -> {id, type, keySize, valueSize, maxEntries, flags, name}
static Napi::Value MapInfo(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	int fd = FQE_ARG_FD("mapInfo", 0);
	struct bpf_map_info mi;
	std::memset(&mi, 0, sizeof(mi));
	__u32 len = sizeof(mi);
	int ret = bpf_obj_get_info_by_fd(fd, &mi, &len);
	if (ret < 0)
		ThrowErrno(env, InfoErrno(PositiveErrno(ret)), "bpf_obj_get_info_by_fd(fd " + std::to_string(fd) + ")");
	Napi::Object result = Napi::Object::New(env);
	result.Set("id", mi.id);
	result.Set("type", mi.type);
	result.Set("keySize", mi.key_size);
	result.Set("valueSize", mi.value_size);
	result.Set("maxEntries", mi.max_entries);
	result.Set("flags", mi.map_flags);
	result.Set("name", mi.name);
	return result;
}

// describeObject(path): the maps an object file defines (internal ones left
// out), without loading anything: lets the agent compare them with pins.
static Napi::Value DescribeObject(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	std::string path = FQE_ARG_STRING("describeObject", 0, "path");
	LibbpfCapture capture;
	ObjectHolder holder;
	errno = 0;
	holder.obj = bpf_object__open_file(path.c_str(), nullptr);
	if (!holder.obj) {
		int err = errno ? errno : EINVAL;
		ThrowErrno(env, err, "bpf_object__open_file(" + path + ")", capture.Details());
	}
	Napi::Object maps = Napi::Object::New(env);
	struct bpf_map *map;
	bpf_object__for_each_map(map, holder.obj)
	{
		const char *name = bpf_map__name(map);
		if (!name || name[0] == '.' || std::strchr(name, '.'))
			continue;
		Napi::Object m = Napi::Object::New(env);
		m.Set("type", Napi::Number::New(env, bpf_map__type(map)));
		m.Set("keySize", Napi::Number::New(env, bpf_map__key_size(map)));
		m.Set("valueSize", Napi::Number::New(env, bpf_map__value_size(map)));
		m.Set("maxEntries", Napi::Number::New(env, bpf_map__max_entries(map)));
		m.Set("flags", Napi::Number::New(env, bpf_map__map_flags(map)));
		maps.Set(name, m);
	}
	return maps;
}

void InitObject(Napi::Env env, Napi::Object exports)
{
	exports.Set("describeObject", Napi::Function::New(env, DescribeObject));
	exports.Set("loadObject", Napi::Function::New(env, LoadObject));
	exports.Set("closeObject", Napi::Function::New(env, CloseObject));
	exports.Set("pinProgram", Napi::Function::New(env, PinProgram));
	exports.Set("pinObject", Napi::Function::New(env, PinObject));
	exports.Set("unpin", Napi::Function::New(env, Unpin));
	exports.Set("objGet", Napi::Function::New(env, ObjGet));
	exports.Set("closeFd", Napi::Function::New(env, CloseFd));
	exports.Set("progInfo", Napi::Function::New(env, ProgInfo));
	exports.Set("mapInfo", Napi::Function::New(env, MapInfo));
}

} // namespace fqe
