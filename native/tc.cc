// SPDX-License-Identifier: Apache-2.0
//
// tc attach points: our own filters on a clsact qdisc, found by handle and
// priority. The clsact qdisc is created when missing (-EEXIST is the normal
// case) and never destroyed: other tools may have filters on it.
#include "addon.h"
#include "errors.h"
#include "libbpf_log.h"
#include "netns.h"

#include <bpf/libbpf.h>

#include <cerrno>
#include <string>

namespace fqe
{

struct TcTarget {
	int ifindex;
	enum bpf_tc_attach_point point;
	const char *direction;
	uint32_t handle;
	uint32_t priority;
	std::string netns;
};

static TcTarget ParseTarget(const Napi::CallbackInfo &info, const char *fn)
{
	Napi::Env env = info.Env();
	Napi::Object o = FQE_ARG_OBJECT(fn, 0, "options");
	TcTarget t;
	t.ifindex = static_cast<int>(FQE_OPT_INT(fn, o, "ifindex", 1, INT32_MAX));
	std::string direction = FQE_OPT_STRING(fn, o, "direction");
	if (direction == "ingress") {
		t.point = BPF_TC_INGRESS;
		t.direction = "ingress";
	} else if (direction == "egress") {
		t.point = BPF_TC_EGRESS;
		t.direction = "egress";
	} else {
		ThrowType(env, fn, "direction", "'ingress' or 'egress'");
	}
	t.handle = FQE_OPT_INT(fn, o, "handle", 1, UINT32_MAX);
	t.priority = FQE_OPT_INT(fn, o, "priority", 1, UINT16_MAX);
	t.netns = FQE_OPT_STRING_OR_EMPTY(fn, o, "netns");
	return t;
}

static std::string Op(const char *call, const TcTarget &t)
{
	return std::string(call) + "(ifindex " + std::to_string(t.ifindex) + " " + t.direction + " handle " +
	       std::to_string(t.handle) + " priority " + std::to_string(t.priority) +
	       (t.netns.empty() ? "" : " netns " + t.netns) + ")";
}

static struct bpf_tc_hook Hook(const TcTarget &t)
{
	auto hook = ZeroedOpts<bpf_tc_hook>();
	hook.ifindex = t.ifindex;
	hook.attach_point = t.point;
	return hook;
}

// Our filter on that hook: found and replaced by handle and priority only.
static struct bpf_tc_opts Filter(const TcTarget &t)
{
	auto opts = ZeroedOpts<bpf_tc_opts>();
	opts.handle = t.handle;
	opts.priority = t.priority;
	return opts;
}

// tcAttach({ifindex, direction, progFd, handle, priority, netns?}) -> prog id
static Napi::Value TcAttach(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	TcTarget t = ParseTarget(info, "tcAttach");
	Napi::Object o = info[0].As<Napi::Object>();
	int progFd = static_cast<int>(FQE_OPT_INT("tcAttach", o, "progFd", 0, INT32_MAX));
	NetnsGuard guard(env, t.netns);
	LibbpfCapture capture; // expected misses stay quiet
	struct bpf_tc_hook hook = Hook(t);
	int ret = bpf_tc_hook_create(&hook);
	if (ret < 0 && ret != -EEXIST)
		ThrowErrno(env, PositiveErrno(ret), Op("bpf_tc_hook_create", t), capture.Details());
	struct bpf_tc_opts opts = Filter(t);
	opts.prog_fd = progFd;
	opts.flags = BPF_TC_F_REPLACE;
	ret = bpf_tc_attach(&hook, &opts);
	if (ret < 0)
		ThrowErrno(env, PositiveErrno(ret), Op("bpf_tc_attach", t), capture.Details());
	return Napi::Number::New(env, opts.prog_id);
}

// tcDetach({ifindex, direction, handle, priority, netns?}) -> false if absent
static Napi::Value TcDetach(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	TcTarget t = ParseTarget(info, "tcDetach");
	NetnsGuard guard(env, t.netns);
	LibbpfCapture capture; // expected misses stay quiet
	struct bpf_tc_hook hook = Hook(t);
	struct bpf_tc_opts opts = Filter(t);
	int ret = bpf_tc_detach(&hook, &opts);
	if (ret < 0) {
		int err = PositiveErrno(ret);
		if (err == ENOENT || err == EINVAL) // no filter, or no clsact
			return Napi::Boolean::New(env, false);
		ThrowErrno(env, err, Op("bpf_tc_detach", t), capture.Details());
	}
	return Napi::Boolean::New(env, true);
}

// tcQuery({ifindex, direction, handle, priority, netns?}) -> prog id | null
static Napi::Value TcQuery(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	TcTarget t = ParseTarget(info, "tcQuery");
	NetnsGuard guard(env, t.netns);
	LibbpfCapture capture; // expected misses stay quiet
	struct bpf_tc_hook hook = Hook(t);
	struct bpf_tc_opts opts = Filter(t);
	int ret = bpf_tc_query(&hook, &opts);
	if (ret < 0) {
		int err = PositiveErrno(ret);
		if (err == ENOENT || err == EINVAL)
			return env.Null();
		ThrowErrno(env, err, Op("bpf_tc_query", t), capture.Details());
	}
	return Napi::Number::New(env, opts.prog_id);
}

void InitTc(Napi::Env env, Napi::Object exports)
{
	exports.Set("tcAttach", Napi::Function::New(env, TcAttach));
	exports.Set("tcDetach", Napi::Function::New(env, TcDetach));
	exports.Set("tcQuery", Napi::Function::New(env, TcQuery));
}

} // namespace fqe
