// SPDX-License-Identifier: Apache-2.0
//
// RingBufferReader: a libbpf ring_buffer over one BPF_MAP_TYPE_RINGBUF map,
// read on the libuv loop through its epoll fd. Each wakeup drains the ring and
// hands the records (copies) to JavaScript in one callback. One teardown path
// (CloseResources) serves close(), the environment cleanup hook and the
// destructor.
#include "addon.h"
#include "errors.h"
#include "libbpf_log.h"
#include "poll_handle.h"

#include <bpf/libbpf.h>

#include <cerrno>
#include <memory>

namespace fqe
{

class RingBufferReader : public Napi::ObjectWrap<RingBufferReader>
{
      public:
	static void Init(Napi::Env env, Napi::Object exports)
	{
		exports.Set("RingBufferReader", DefineClass(env, "RingBufferReader",
							    { InstanceMethod("consume", &RingBufferReader::JsConsume),
							      InstanceMethod("close", &RingBufferReader::JsClose),
							      InstanceMethod("ref", &RingBufferReader::JsRef),
							      InstanceMethod("unref", &RingBufferReader::JsUnref) }));
	}

	explicit RingBufferReader(const Napi::CallbackInfo &info);
	~RingBufferReader() override
	{
		CloseResources();
	}

      private:
	Napi::Value JsConsume(const Napi::CallbackInfo &info);
	Napi::Value JsClose(const Napi::CallbackInfo &info);
	Napi::Value JsRef(const Napi::CallbackInfo &info);
	Napi::Value JsUnref(const Napi::CallbackInfo &info);

	static int OnRecord(void *ctx, void *data, size_t size);
	static void OnReadable(uv_poll_t *handle, int status, int events);
	static void OnEnvCleanup(void *arg);
	// Drains the ring into one callback; returns the record count.
	// fromLoop: exceptions become uncaught exceptions instead of throwing.
	int Drain(bool fromLoop);
	void CloseResources();

	Napi::Env env_;
	struct ring_buffer *rb_ = nullptr;
	PollHandle poll_;
	bool cleanupHook_ = false;
	Napi::FunctionReference onRecords_;
	std::unique_ptr<Napi::AsyncContext> asyncContext_;
	Napi::Array *collecting_ = nullptr; // records of the running Drain
};

// new RingBufferReader({mapFd, onRecords})
RingBufferReader::RingBufferReader(const Napi::CallbackInfo &info)
    : Napi::ObjectWrap<RingBufferReader>(info), env_(info.Env())
{
	Napi::Env env = info.Env();
	const char *fn = "RingBufferReader";
	Napi::Object o = FQE_ARG_OBJECT(fn, 0, "options");
	int mapFd = static_cast<int>(FQE_OPT_INT(fn, o, "mapFd", 0, INT32_MAX));
	onRecords_ = Napi::Persistent(ToFunctionArg(env, o.Get("onRecords"), fn, "onRecords"));
	{
		LibbpfCapture capture;
		errno = 0;
		rb_ = ring_buffer__new(mapFd, OnRecord, this, nullptr);
		if (!rb_)
			ThrowErrno(env, InfoErrno(errno ? errno : EINVAL),
				   "ring_buffer__new(fd " + std::to_string(mapFd) + ")", capture.Details());
	}
	try {
		poll_.Start(env, ring_buffer__epoll_fd(rb_), OnReadable, this, "RingBufferReader");
	} catch (...) {
		ring_buffer__free(rb_);
		rb_ = nullptr;
		throw;
	}
	asyncContext_ =
		std::make_unique<Napi::AsyncContext>(env, "fqe.RingBufferReader", info.This().As<Napi::Object>());
	napi_add_env_cleanup_hook(env, OnEnvCleanup, this);
	cleanupHook_ = true;
	Ref(); // alive while open, even if JavaScript drops it
}

void RingBufferReader::OnEnvCleanup(void *arg)
{
	auto *self = static_cast<RingBufferReader *>(arg);
	self->cleanupHook_ = false;
	self->CloseResources();
}

void RingBufferReader::CloseResources()
{
	if (cleanupHook_) {
		napi_remove_env_cleanup_hook(env_, OnEnvCleanup, this);
		cleanupHook_ = false;
	}
	poll_.Close(); // before ring_buffer__free closes the epoll fd
	if (rb_) {
		ring_buffer__free(rb_);
		rb_ = nullptr;
	}
	asyncContext_.reset();
}

int RingBufferReader::OnRecord(void *ctx, void *data, size_t size)
{
	auto *self = static_cast<RingBufferReader *>(ctx);
	if (!self->collecting_)
		return 0;
	Napi::Array &records = *self->collecting_;
	records.Set(records.Length(), Napi::Buffer<uint8_t>::Copy(self->env_, static_cast<uint8_t *>(data), size));
	return 0;
}

int RingBufferReader::Drain(bool fromLoop)
{
	Napi::Env env = env_;
	if (!rb_)
		return 0;
	Napi::Array records = Napi::Array::New(env);
	collecting_ = &records;
	int n = ring_buffer__consume(rb_);
	collecting_ = nullptr;
	if (n < 0) {
		Napi::Value error = MakeErrnoError(env, -n, "ring_buffer__consume()");
		if (!fromLoop)
			throw Napi::Error(env, error);
		napi_fatal_exception(env, error);
		return 0;
	}
	if (records.Length() == 0)
		return 0;
	if (!fromLoop) {
		onRecords_.MakeCallback(Value(), { records }, *asyncContext_);
		return static_cast<int>(records.Length());
	}
	try {
		onRecords_.MakeCallback(Value(), { records }, *asyncContext_);
	} catch (const Napi::Error &e) {
		napi_fatal_exception(env, e.Value());
	}
	return static_cast<int>(records.Length());
}

void RingBufferReader::OnReadable(uv_poll_t *handle, int status, int)
{
	auto *self = static_cast<RingBufferReader *>(handle->data);
	if (!self)
		return;
	Napi::HandleScope scope(self->env_);
	[[maybe_unused]] Napi::Object keep = self->Value(); // no GC meanwhile
	if (status < 0) {
		self->poll_.Close();
		napi_fatal_exception(self->env_, MakeErrnoError(self->env_, -status, "uv_poll(RingBufferReader)"));
		return;
	}
	self->Drain(true);
}

Napi::Value RingBufferReader::JsConsume(const Napi::CallbackInfo &info)
{
	return Napi::Number::New(info.Env(), Drain(false));
}

Napi::Value RingBufferReader::JsClose(const Napi::CallbackInfo &info)
{
	if (rb_) {
		CloseResources();
		Unref();
	}
	return info.Env().Undefined();
}

Napi::Value RingBufferReader::JsRef(const Napi::CallbackInfo &info)
{
	poll_.Ref();
	return info.This();
}

Napi::Value RingBufferReader::JsUnref(const Napi::CallbackInfo &info)
{
	poll_.Unref();
	return info.This();
}

void InitRingBuffer(Napi::Env env, Napi::Object exports)
{
	RingBufferReader::Init(env, exports);
}

} // namespace fqe
