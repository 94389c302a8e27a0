// SPDX-License-Identifier: Apache-2.0
//
// Shared declarations of the addon: per-environment state, the init function
// of each concern, and a zeroed libbpf options struct helper.
#ifndef FQE_NATIVE_ADDON_H
#define FQE_NATIVE_ADDON_H

#include <napi.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <map>

struct bpf_object;

namespace fqe
{

struct AddonData {
	// The BpfError class registered by TypeScript (setErrorClass).
	Napi::FunctionReference errorCtor;
	// Loaded objects stay open here so their program and map fds stay valid.
	std::map<uint32_t, struct bpf_object *> objects;
	uint32_t nextObjectId = 1;
	~AddonData();
};

// libbpf "opts" structs: zeroed, with sz set.
template <typename T> T ZeroedOpts()
{
	T opts;
	std::memset(&opts, 0, sizeof(opts));
	opts.sz = sizeof(opts);
	return opts;
}

void InitObject(Napi::Env env, Napi::Object exports);
void InitMaps(Napi::Env env, Napi::Object exports);
void InitTc(Napi::Env env, Napi::Object exports);
void InitTcx(Napi::Env env, Napi::Object exports);
void InitTestRun(Napi::Env env, Napi::Object exports);
void InitLayouts(Napi::Env env, Napi::Object exports);
void InitPacketSocket(Napi::Env env, Napi::Object exports);
void InitRingBuffer(Napi::Env env, Napi::Object exports);

// BPF_OBJ_GET_INFO_BY_FD answers EBADFD for a closed fd on recent kernels
// where every other bpf command answers EBADF: report EBADF everywhere.
inline int InfoErrno(int err)
{
	return err == EBADFD ? EBADF : err;
}

// Installs the libbpf print callback (process-wide, once).
void InstallLibbpfPrint();

} // namespace fqe

#endif // FQE_NATIVE_ADDON_H
