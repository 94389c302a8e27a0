// SPDX-License-Identifier: Apache-2.0
//
// BPF_PROG_TEST_RUN: runs a loaded program on a packet in the kernel, for
// tests and fuzzing of the kernel parsers.
#include "addon.h"
#include "errors.h"

#include <bpf/bpf.h>

#include <algorithm>
#include <string>
#include <vector>

namespace fqe
{

// progTestRun(progFd, data, opts?: {repeat?, ctx?, dataOutSize?})
//   -> {retval, durationNs, data}
static Napi::Value ProgTestRun(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	int fd = FQE_ARG_FD("progTestRun", 0);
	auto data = FQE_ARG_BUFFER("progTestRun", 1, "data");
	uint32_t repeat = 1;
	uint32_t outSize = static_cast<uint32_t>(data.Length()) + 512;
	Napi::Buffer<uint8_t> ctx;
	if (!IsAbsent(info[2])) {
		Napi::Object o = FQE_ARG_OBJECT("progTestRun", 2, "opts");
		if (!IsAbsent(o.Get("repeat")))
			repeat = FQE_OPT_INT("progTestRun", o, "repeat", 1, INT32_MAX);
		if (!IsAbsent(o.Get("dataOutSize")))
			outSize = FQE_OPT_INT("progTestRun", o, "dataOutSize", 0, UINT32_MAX);
		if (!IsAbsent(o.Get("ctx")))
			ctx = ToBufferArg(env, o.Get("ctx"), "progTestRun", "ctx");
	}
	std::vector<uint8_t> out(std::max<uint32_t>(outSize, 1));
	auto opts = ZeroedOpts<bpf_test_run_opts>();
	opts.data_in = data.Data();
	opts.data_size_in = static_cast<uint32_t>(data.Length());
	opts.data_out = out.data();
	opts.data_size_out = outSize;
	opts.repeat = static_cast<int>(repeat);
	if (!ctx.IsEmpty()) {
		opts.ctx_in = ctx.Data();
		opts.ctx_size_in = static_cast<uint32_t>(ctx.Length());
	}
	int ret = bpf_prog_test_run_opts(fd, &opts);
	if (ret < 0)
		ThrowErrno(env, PositiveErrno(ret), "bpf_prog_test_run_opts(fd " + std::to_string(fd) + ")");
	Napi::Object result = Napi::Object::New(env);
	result.Set("retval", Napi::Number::New(env, opts.retval));
	result.Set("durationNs", Napi::Number::New(env, opts.duration));
	result.Set("data", Napi::Buffer<uint8_t>::Copy(env, out.data(), std::min(opts.data_size_out, outSize)));
	return result;
}

void InitTestRun(Napi::Env env, Napi::Object exports)
{
	exports.Set("progTestRun", Napi::Function::New(env, ProgTestRun));
}

} // namespace fqe
