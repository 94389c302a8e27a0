// SPDX-License-Identifier: Apache-2.0
//
// tcx (kernel 6.6+): BPF links on a device's ingress/egress chain, and the
// query that lists that chain in order. libbpf 1.1 (Debian 12) and the
// system uapi header (6.1) predate tcx, so the two bpf(2) commands that need
// the new fields are made here with their 6.6 layout; link update, detach
// and info use what libbpf 1.1 has. Thin: which flags, which relative
// program, what to do on failure (fallback to legacy tc) is TypeScript's.
#include "addon.h"
#include "errors.h"
#include "netns.h"

#include <bpf/bpf.h>
#include <linux/bpf.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <string>
#include <vector>

namespace fqe
{

// enum bpf_attach_type (uapi 6.6)
constexpr uint32_t kTcxIngress = 46;
constexpr uint32_t kTcxEgress = 47;
// enum bpf_link_type (uapi 6.6)
constexpr uint32_t kLinkTypeTcx = 11;

// union bpf_attr.link_create with its tcx member (uapi 6.6).
struct TcxLinkCreateAttr {
	uint32_t prog_fd;
	uint32_t target_ifindex;
	uint32_t attach_type;
	uint32_t flags;
	uint32_t relative_fd_or_id; // tcx.relative_fd / tcx.relative_id
	uint32_t pad;
	uint64_t expected_revision; // tcx.expected_revision
};
static_assert(offsetof(TcxLinkCreateAttr, relative_fd_or_id) == 16);
static_assert(offsetof(TcxLinkCreateAttr, expected_revision) == 24);

// union bpf_attr.query with the mprog fields (uapi 6.6). The kernel writes
// revision, count and the arrays back at these offsets, so the struct must
// reach the end of `revision` whatever size is passed.
struct MprogQueryAttr {
	uint32_t target_ifindex;
	uint32_t attach_type;
	uint32_t query_flags;
	uint32_t attach_flags;
	uint64_t prog_ids;
	uint32_t count;
	uint32_t pad;
	uint64_t prog_attach_flags;
	uint64_t link_ids;
	uint64_t link_attach_flags;
	uint64_t revision;
};
static_assert(offsetof(MprogQueryAttr, prog_ids) == 16);
static_assert(offsetof(MprogQueryAttr, count) == 24);
static_assert(offsetof(MprogQueryAttr, link_ids) == 40);
static_assert(offsetof(MprogQueryAttr, revision) == 56);

// struct bpf_link_info with its tcx member (uapi 6.6): tcx sits where the
// 6.1 header has xdp.ifindex, checked below against that header.
struct LinkInfo {
	uint32_t type;
	uint32_t id;
	uint32_t prog_id;
	uint32_t pad;
	struct {
		uint32_t ifindex;
		uint32_t attach_type;
	} tcx;
} __attribute__((aligned(8)));
static_assert(offsetof(LinkInfo, tcx.ifindex) == offsetof(struct bpf_link_info, xdp.ifindex));

static long SysBpf(int cmd, void *attr, size_t size)
{
	return syscall(__NR_bpf, cmd, attr, size);
}

struct TcxTarget {
	int ifindex;
	uint32_t attachType;
	const char *direction;
	std::string netns;
};

static TcxTarget ParseTcxTarget(const Napi::CallbackInfo &info, const char *fn)
{
	Napi::Env env = info.Env();
	Napi::Object o = FQE_ARG_OBJECT(fn, 0, "options");
	TcxTarget t;
	t.ifindex = static_cast<int>(FQE_OPT_INT(fn, o, "ifindex", 1, INT32_MAX));
	std::string direction = FQE_OPT_STRING(fn, o, "direction");
	if (direction == "ingress") {
		t.attachType = kTcxIngress;
		t.direction = "ingress";
	} else if (direction == "egress") {
		t.attachType = kTcxEgress;
		t.direction = "egress";
	} else {
		ThrowType(env, fn, "direction", "'ingress' or 'egress'");
	}
	t.netns = FQE_OPT_STRING_OR_EMPTY(fn, o, "netns");
	return t;
}

static std::string TcxOp(const char *call, const TcxTarget &t)
{
	return std::string(call) + "(ifindex " + std::to_string(t.ifindex) + " tcx " + t.direction +
	       (t.netns.empty() ? "" : " netns " + t.netns) + ")";
}

// tcxAttach({ifindex, direction, progFd, flags?, relativeFd?, relativeId?,
//            expectedRevision?, netns?}) -> link fd (the caller closes it)
static Napi::Value TcxAttach(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	const char *fn = "tcxAttach";
	TcxTarget t = ParseTcxTarget(info, fn);
	Napi::Object o = info[0].As<Napi::Object>();
	TcxLinkCreateAttr attr;
	std::memset(&attr, 0, sizeof(attr));
	attr.prog_fd = static_cast<uint32_t>(FQE_OPT_INT(fn, o, "progFd", 0, INT32_MAX));
	attr.target_ifindex = static_cast<uint32_t>(t.ifindex);
	attr.attach_type = t.attachType;
	if (!IsAbsent(o.Get("flags")))
		attr.flags = FQE_OPT_U32(fn, o, "flags");
	bool hasFd = !IsAbsent(o.Get("relativeFd"));
	bool hasId = !IsAbsent(o.Get("relativeId"));
	if (hasFd && hasId)
		throw Napi::TypeError::New(env, "tcxAttach: relativeFd and relativeId exclude each other");
	if (hasFd)
		attr.relative_fd_or_id = FQE_OPT_U32(fn, o, "relativeFd");
	if (hasId)
		attr.relative_fd_or_id = FQE_OPT_U32(fn, o, "relativeId");
	if (!IsAbsent(o.Get("expectedRevision")))
		attr.expected_revision =
			static_cast<uint64_t>(FQE_OPT_INT(fn, o, "expectedRevision", 0, INT64_C(1) << 53));
	NetnsGuard guard(env, t.netns);
	long fd = SysBpf(BPF_LINK_CREATE, &attr, sizeof(attr));
	if (fd < 0) {
		int err = errno;
		ThrowErrno(env, err, TcxOp("bpf_link_create", t));
	}
	return Napi::Number::New(env, static_cast<double>(fd));
}

// tcxQuery({ifindex, direction, netns?}) -> {progIds, linkIds, revision}:
// the chain in run order; linkIds[i] is 0 where progIds[i] was attached
// without a link.
static Napi::Value TcxQuery(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	TcxTarget t = ParseTcxTarget(info, "tcxQuery");
	NetnsGuard guard(env, t.netns);
	std::vector<uint32_t> progIds;
	std::vector<uint32_t> linkIds;
	MprogQueryAttr attr;
	for (uint32_t room = 16;; room *= 2) {
		progIds.assign(room, 0);
		linkIds.assign(room, 0);
		std::memset(&attr, 0, sizeof(attr));
		attr.target_ifindex = static_cast<uint32_t>(t.ifindex);
		attr.attach_type = t.attachType;
		attr.prog_ids = reinterpret_cast<uintptr_t>(progIds.data());
		attr.link_ids = reinterpret_cast<uintptr_t>(linkIds.data());
		attr.count = room;
		if (SysBpf(BPF_PROG_QUERY, &attr, sizeof(attr)) == 0)
			break;
		int err = errno;
		if (err != ENOSPC || room >= 4096)
			ThrowErrno(env, err, TcxOp("bpf_prog_query", t));
	}
	uint32_t count = attr.count < progIds.size() ? attr.count : progIds.size();
	Napi::Array progs = Napi::Array::New(env, count);
	Napi::Array links = Napi::Array::New(env, count);
	for (uint32_t i = 0; i < count; i++) {
		progs.Set(i, Napi::Number::New(env, progIds[i]));
		links.Set(i, Napi::Number::New(env, linkIds[i]));
	}
	Napi::Object result = Napi::Object::New(env);
	result.Set("progIds", progs);
	result.Set("linkIds", links);
	result.Set("revision", Napi::Number::New(env, static_cast<double>(attr.revision)));
	return result;
}

// linkUpdate(linkFd, newProgFd, oldProgFd?): swaps the link's program in
// place (BPF_F_REPLACE when oldProgFd is given: only if it still runs that).
static Napi::Value LinkUpdate(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	int linkFd = FQE_ARG_FD("linkUpdate", 0);
	int progFd = static_cast<int>(FQE_ARG_INT("linkUpdate", 1, "newProgFd", 0, INT32_MAX));
	auto opts = ZeroedOpts<bpf_link_update_opts>();
	if (!IsAbsent(info[2])) {
		opts.old_prog_fd = static_cast<__u32>(FQE_ARG_INT("linkUpdate", 2, "oldProgFd", 0, INT32_MAX));
		opts.flags = BPF_F_REPLACE;
	}
	int ret = bpf_link_update(linkFd, progFd, &opts);
	if (ret < 0)
		ThrowErrno(env, PositiveErrno(ret), "bpf_link_update(link fd " + std::to_string(linkFd) + ")");
	return env.Undefined();
}

// linkDetach(linkFd): detaches the link from its hook now, whoever else
// holds it (a pin, another fd); the link object stays until closed/unpinned.
static Napi::Value LinkDetach(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	int linkFd = FQE_ARG_FD("linkDetach", 0);
	int ret = bpf_link_detach(linkFd);
	if (ret < 0)
		ThrowErrno(env, PositiveErrno(ret), "bpf_link_detach(link fd " + std::to_string(linkFd) + ")");
	return env.Undefined();
}

// linkInfo(fd) -> {id, type, progId, tcx?: {ifindex, direction}}; a tcx
// link whose device is gone reports ifindex 0.
static Napi::Value LinkInfoOf(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	int fd = FQE_ARG_FD("linkInfo", 0);
	LinkInfo li;
	std::memset(&li, 0, sizeof(li));
	__u32 len = sizeof(li);
	int ret = bpf_obj_get_info_by_fd(fd, &li, &len);
	if (ret < 0)
		ThrowErrno(env, InfoErrno(PositiveErrno(ret)),
			   "bpf_obj_get_info_by_fd(link fd " + std::to_string(fd) + ")");
	Napi::Object result = Napi::Object::New(env);
	result.Set("id", li.id);
	result.Set("type", li.type);
	result.Set("progId", li.prog_id);
	if (li.type == kLinkTypeTcx) {
		Napi::Object tcx = Napi::Object::New(env);
		tcx.Set("ifindex", li.tcx.ifindex);
		tcx.Set("direction", li.tcx.attach_type == kTcxIngress	? "ingress"
				     : li.tcx.attach_type == kTcxEgress ? "egress"
									: "unknown");
		result.Set("tcx", tcx);
	}
	return result;
}

void InitTcx(Napi::Env env, Napi::Object exports)
{
	exports.Set("tcxAttach", Napi::Function::New(env, TcxAttach));
	exports.Set("tcxQuery", Napi::Function::New(env, TcxQuery));
	exports.Set("linkUpdate", Napi::Function::New(env, LinkUpdate));
	exports.Set("linkDetach", Napi::Function::New(env, LinkDetach));
	exports.Set("linkInfo", Napi::Function::New(env, LinkInfoOf));
}

} // namespace fqe
