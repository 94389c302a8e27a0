// SPDX-License-Identifier: Apache-2.0
//
// PacketSocket: an AF_PACKET tap with a BPF socket filter, read on the libuv
// loop. The socket is created with protocol 0 (it receives nothing), gets its
// filter, and only then is bound to ETH_P_ALL: no unfiltered packet is ever
// queued. Packets arrive in batches (recvmmsg), one JavaScript callback per
// batch. One teardown path (CloseResources) serves close(), the environment
// cleanup hook and the destructor.
#include "addon.h"
#include "errors.h"
#include "netns.h"
#include "poll_handle.h"

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <vector>

namespace fqe
{

static constexpr size_t kSlotBytes = 64 * 1024;
static constexpr int kMaxBatchesPerWakeup = 16;
static constexpr size_t kControlBytes = CMSG_SPACE(sizeof(struct timespec)) + 64;

class PacketSocket : public Napi::ObjectWrap<PacketSocket>
{
      public:
	static void Init(Napi::Env env, Napi::Object exports)
	{
		exports.Set("PacketSocket", DefineClass(env, "PacketSocket",
							{ InstanceMethod("stats", &PacketSocket::Stats),
							  InstanceMethod("close", &PacketSocket::JsClose),
							  InstanceMethod("ref", &PacketSocket::JsRef),
							  InstanceMethod("unref", &PacketSocket::JsUnref) }));
	}

	explicit PacketSocket(const Napi::CallbackInfo &info);
	~PacketSocket() override
	{
		CloseResources();
	}

      private:
	Napi::Value Stats(const Napi::CallbackInfo &info);
	Napi::Value JsClose(const Napi::CallbackInfo &info);
	Napi::Value JsRef(const Napi::CallbackInfo &info);
	Napi::Value JsUnref(const Napi::CallbackInfo &info);

	static void OnReadable(uv_poll_t *handle, int status, int events);
	static void OnEnvCleanup(void *arg);
	void Receive();
	void ReportError(int err, const std::string &op);
	void ReadStats();
	void CloseResources();

	Napi::Env env_;
	int fd_ = -1;
	PollHandle poll_;
	bool cleanupHook_ = false;
	unsigned batch_ = 64;
	Napi::FunctionReference onPackets_;
	Napi::FunctionReference onError_;
	std::unique_ptr<Napi::AsyncContext> asyncContext_;
	std::vector<uint8_t> slots_;
	std::vector<uint8_t> control_;
	std::vector<struct sockaddr_ll> names_;
	std::vector<struct iovec> iovs_;
	std::vector<struct mmsghdr> msgs_;
	double packets_ = 0;
	double drops_ = 0;
};

// Closes the fd unless released: the constructor's failure path.
struct FdHolder {
	int fd = -1;
	~FdHolder()
	{
		if (fd >= 0)
			close(fd);
	}
};

// new PacketSocket({progFd, netns?, batch?, bufferBytes?, onPackets, onError?})
PacketSocket::PacketSocket(const Napi::CallbackInfo &info) : Napi::ObjectWrap<PacketSocket>(info), env_(info.Env())
{
	Napi::Env env = info.Env();
	const char *fn = "PacketSocket";
	Napi::Object o = FQE_ARG_OBJECT(fn, 0, "options");
	int progFd = static_cast<int>(FQE_OPT_INT(fn, o, "progFd", 0, INT32_MAX));
	std::string netns = FQE_OPT_STRING_OR_EMPTY(fn, o, "netns");
	if (!IsAbsent(o.Get("batch")))
		batch_ = FQE_OPT_INT(fn, o, "batch", 1, 1024);
	int bufferBytes = 4 * 1024 * 1024;
	if (!IsAbsent(o.Get("bufferBytes")))
		bufferBytes = FQE_OPT_INT(fn, o, "bufferBytes", 1, INT32_MAX / 2);
	onPackets_ = Napi::Persistent(ToFunctionArg(env, o.Get("onPackets"), fn, "onPackets"));
	if (!IsAbsent(o.Get("onError")))
		onError_ = Napi::Persistent(ToFunctionArg(env, o.Get("onError"), fn, "onError"));

	FdHolder sock;
	{
		NetnsGuard guard(env, netns);
		sock.fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (sock.fd < 0)
			ThrowErrno(env, errno, "socket(AF_PACKET)");
		// FORCE ignores rmem_max (needs CAP_NET_ADMIN); else best effort.
		if (setsockopt(sock.fd, SOL_SOCKET, SO_RCVBUFFORCE, &bufferBytes, sizeof(bufferBytes)) != 0 &&
		    setsockopt(sock.fd, SOL_SOCKET, SO_RCVBUF, &bufferBytes, sizeof(bufferBytes)) != 0)
			ThrowErrno(env, errno, "setsockopt(SO_RCVBUF)");
		if (setsockopt(sock.fd, SOL_SOCKET, SO_ATTACH_BPF, &progFd, sizeof(progFd)) != 0)
			ThrowErrno(env, errno, "setsockopt(SO_ATTACH_BPF)");
		int one = 1;
		if (setsockopt(sock.fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one)) != 0)
			ThrowErrno(env, errno, "setsockopt(SO_TIMESTAMPNS)");
		struct sockaddr_ll sll;
		std::memset(&sll, 0, sizeof(sll));
		sll.sll_family = AF_PACKET;
		sll.sll_protocol = htons(ETH_P_ALL);
		sll.sll_ifindex = 0;
		if (bind(sock.fd, reinterpret_cast<struct sockaddr *>(&sll), sizeof(sll)) != 0)
			ThrowErrno(env, errno, "bind(AF_PACKET, ETH_P_ALL)");
	}
	// The filter was attached before bind, so nothing unfiltered can be
	// queued; drain once anyway.
	char scratch[1];
	for (int i = 0; i < 4096; i++) {
		if (recv(sock.fd, scratch, sizeof(scratch), MSG_DONTWAIT) < 0 && errno != EINTR)
			break;
	}

	slots_.resize(size_t(batch_) * kSlotBytes);
	control_.resize(size_t(batch_) * kControlBytes);
	names_.resize(batch_);
	iovs_.resize(batch_);
	msgs_.resize(batch_);
	poll_.Start(env, sock.fd, OnReadable, this, "PacketSocket");
	fd_ = sock.fd;
	sock.fd = -1;
	asyncContext_ = std::make_unique<Napi::AsyncContext>(env, "fqe.PacketSocket", info.This().As<Napi::Object>());
	napi_add_env_cleanup_hook(env, OnEnvCleanup, this);
	cleanupHook_ = true;
	Ref(); // alive while open, even if JavaScript drops it
}

void PacketSocket::OnEnvCleanup(void *arg)
{
	auto *self = static_cast<PacketSocket *>(arg);
	self->cleanupHook_ = false;
	self->CloseResources();
}

void PacketSocket::CloseResources()
{
	if (cleanupHook_) {
		napi_remove_env_cleanup_hook(env_, OnEnvCleanup, this);
		cleanupHook_ = false;
	}
	poll_.Close();
	if (fd_ >= 0) {
		close(fd_);
		fd_ = -1;
	}
	asyncContext_.reset();
}

void PacketSocket::OnReadable(uv_poll_t *handle, int status, int)
{
	auto *self = static_cast<PacketSocket *>(handle->data);
	if (!self)
		return;
	Napi::HandleScope scope(self->env_);
	[[maybe_unused]] Napi::Object keep = self->Value(); // no GC meanwhile
	if (status < 0) {
		self->poll_.Close();
		self->ReportError(-status, "uv_poll(PacketSocket)");
		return;
	}
	self->Receive();
}

void PacketSocket::ReportError(int err, const std::string &op)
{
	Napi::Env env = env_;
	Napi::Value error = MakeErrnoError(env, err, op);
	if (onError_.IsEmpty() || !asyncContext_) {
		napi_fatal_exception(env, error);
		return;
	}
	try {
		onError_.MakeCallback(Value(), { error }, *asyncContext_);
	} catch (const Napi::Error &e) {
		napi_fatal_exception(env, e.Value());
	}
}

void PacketSocket::Receive()
{
	Napi::Env env = env_;
	for (int round = 0; round < kMaxBatchesPerWakeup && fd_ >= 0; round++) {
		for (unsigned i = 0; i < batch_; i++) {
			iovs_[i].iov_base = slots_.data() + i * kSlotBytes;
			iovs_[i].iov_len = kSlotBytes;
			struct msghdr &h = msgs_[i].msg_hdr;
			std::memset(&h, 0, sizeof(h));
			h.msg_name = &names_[i];
			h.msg_namelen = sizeof(names_[i]);
			h.msg_iov = &iovs_[i];
			h.msg_iovlen = 1;
			h.msg_control = control_.data() + i * kControlBytes;
			h.msg_controllen = kControlBytes;
			msgs_[i].msg_len = 0;
		}
		// MSG_TRUNC: msg_len is the packet's full length even when
		// it did not fit into its slot.
		int n = recvmmsg(fd_, msgs_.data(), batch_, MSG_DONTWAIT | MSG_TRUNC, nullptr);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				ReportError(errno, "recvmmsg(PacketSocket)");
			return;
		}
		if (n == 0)
			return;
		Napi::Array packets = Napi::Array::New(env, n);
		for (int i = 0; i < n; i++) {
			const struct msghdr &h = msgs_[i].msg_hdr;
			size_t len = msgs_[i].msg_len;
			uint64_t tsNs = 0;
			for (struct cmsghdr *c = CMSG_FIRSTHDR(&h); c;
			     c = CMSG_NXTHDR(const_cast<struct msghdr *>(&h), c)) {
				if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
					struct timespec ts;
					std::memcpy(&ts, CMSG_DATA(c), sizeof(ts));
					tsNs = uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
				}
			}
			Napi::Object p = Napi::Object::New(env);
			p.Set("data", Napi::Buffer<uint8_t>::Copy(env, slots_.data() + i * kSlotBytes,
								  std::min(len, kSlotBytes)));
			p.Set("ifindex", Napi::Number::New(env, names_[i].sll_ifindex));
			p.Set("pktType", Napi::Number::New(env, names_[i].sll_pkttype));
			p.Set("tsNs", Napi::BigInt::New(env, tsNs));
			p.Set("origLen", Napi::Number::New(env, double(len)));
			packets.Set(uint32_t(i), p);
		}
		try {
			onPackets_.MakeCallback(Value(), { packets }, *asyncContext_);
		} catch (const Napi::Error &e) {
			napi_fatal_exception(env, e.Value());
			return;
		}
		if (unsigned(n) < batch_)
			return;
	}
}

// The kernel resets PACKET_STATISTICS on every read: keep totals here.
// Like the kernel's tp_packets, `packets` includes the dropped ones.
void PacketSocket::ReadStats()
{
	if (fd_ < 0)
		return;
	struct tpacket_stats st;
	socklen_t len = sizeof(st);
	if (getsockopt(fd_, SOL_PACKET, PACKET_STATISTICS, &st, &len) != 0)
		ThrowErrno(env_, errno, "getsockopt(PACKET_STATISTICS)");
	packets_ += st.tp_packets;
	drops_ += st.tp_drops;
}

Napi::Value PacketSocket::Stats(const Napi::CallbackInfo &info)
{
	ReadStats();
	Napi::Object result = Napi::Object::New(info.Env());
	result.Set("packets", packets_);
	result.Set("drops", drops_);
	return result;
}

Napi::Value PacketSocket::JsClose(const Napi::CallbackInfo &info)
{
	if (fd_ >= 0) {
		try {
			ReadStats(); // keep the last counts readable
		} catch (const Napi::Error &) {
		}
		CloseResources();
		Unref();
	}
	return info.Env().Undefined();
}

Napi::Value PacketSocket::JsRef(const Napi::CallbackInfo &info)
{
	poll_.Ref();
	return info.This();
}

Napi::Value PacketSocket::JsUnref(const Napi::CallbackInfo &info)
{
	poll_.Unref();
	return info.This();
}

void InitPacketSocket(Napi::Env env, Napi::Object exports)
{
	PacketSocket::Init(env, exports);
}

} // namespace fqe
