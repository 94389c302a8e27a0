// SPDX-License-Identifier: Apache-2.0
//
// Module init: per-environment state, the BpfError class registration, error
// construction, and the small helpers that belong to no other concern
// (possible CPUs, interface names).
#include "addon.h"
#include "errors.h"
#include "netns.h"

#include <bpf/libbpf.h>
#include <net/if.h>

#include <cerrno>
#include <cstring>

namespace fqe
{

AddonData::~AddonData()
{
	for (auto &entry : objects)
		bpf_object__close(entry.second);
	objects.clear();
}

AddonData *GetAddonData(Napi::Env env)
{
	return env.GetInstanceData<AddonData>();
}

std::string ErrnoName(int err)
{
	const char *name = strerrorname_np(err);
	if (name)
		return name;
	// Kernel-internal codes that reach userspace from bpf(2) and netlink.
	switch (err) {
	case 512:
		return "ERESTARTSYS";
	case 524:
		return "ENOTSUPP";
	case 525:
		return "ETOOSMALL";
	default:
		return "E" + std::to_string(err);
	}
}

Napi::Value MakeErrnoError(Napi::Env env, int err, const std::string &op, const std::string &details)
{
	std::string code = ErrnoName(err);
	std::string message = op + ": " + std::strerror(err) + " (" + code + ")";
	AddonData *data = GetAddonData(env);
	if (data && !data->errorCtor.IsEmpty()) {
		Napi::Value detailsValue = details.empty() ? env.Undefined() : Napi::String::New(env, details);
		return data->errorCtor.New({ Napi::String::New(env, message), Napi::String::New(env, code),
					     Napi::Number::New(env, err), Napi::String::New(env, op), detailsValue });
	}
	Napi::Error error = Napi::Error::New(env, message);
	error.Set("code", code);
	error.Set("errno", Napi::Number::New(env, err));
	error.Set("op", op);
	if (!details.empty())
		error.Set("details", details);
	return error.Value();
}

void ThrowErrno(Napi::Env env, int err, const std::string &op, const std::string &details)
{
	Napi::Value error = MakeErrnoError(env, err, op, details);
	throw Napi::Error(env, error);
}

// setErrorClass(ctor): ctor(message, code, errno, op, details?) builds the
// errors this addon throws.
static Napi::Value SetErrorClass(const Napi::CallbackInfo &info)
{
	Napi::Function ctor = FQE_ARG_FUNCTION("setErrorClass", 0, "ctor");
	GetAddonData(info.Env())->errorCtor = Napi::Persistent(ctor);
	return info.Env().Undefined();
}

static Napi::Value NumPossibleCpus(const Napi::CallbackInfo &info)
{
	int n = libbpf_num_possible_cpus();
	if (n < 0)
		ThrowErrno(info.Env(), -n, "libbpf_num_possible_cpus()");
	return Napi::Number::New(info.Env(), n);
}

// ifNameToIndex(name, netns?)
static Napi::Value IfNameToIndex(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	std::string name = FQE_ARG_STRING("ifNameToIndex", 0, "name");
	std::string netns = IsAbsent(info[1]) ? std::string() : FQE_ARG_STRING("ifNameToIndex", 1, "netns");
	unsigned int index;
	{
		NetnsGuard guard(env, netns);
		errno = 0;
		index = if_nametoindex(name.c_str());
		if (index == 0) {
			int err = errno ? errno : ENODEV;
			ThrowErrno(env, err, "if_nametoindex(" + name + ")");
		}
	}
	return Napi::Number::New(env, index);
}

static Napi::Object Init(Napi::Env env, Napi::Object exports)
{
	env.SetInstanceData(new AddonData());
	InstallLibbpfPrint();
	exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClass));
	exports.Set("numPossibleCpus", Napi::Function::New(env, NumPossibleCpus));
	exports.Set("ifNameToIndex", Napi::Function::New(env, IfNameToIndex));
	InitObject(env, exports);
	InitMaps(env, exports);
	InitTc(env, exports);
	InitTcx(env, exports);
	InitTestRun(env, exports);
	InitLayouts(env, exports);
	InitPacketSocket(env, exports);
	InitRingBuffer(env, exports);
	return exports;
}

} // namespace fqe

static Napi::Object InitModule(Napi::Env env, Napi::Object exports)
{
	return fqe::Init(env, exports);
}

NODE_API_MODULE(fqe_native, InitModule)
