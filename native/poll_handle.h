// SPDX-License-Identifier: Apache-2.0
//
// PollHandle: a uv_poll_t watching one fd for readability on the
// environment's loop. The handle lives on the heap and frees itself in its
// close callback, so it may outlive the object that owns it by one loop turn.
// It keeps the loop alive while open unless unref'd, like a net.Socket.
#ifndef FQE_NATIVE_POLL_HANDLE_H
#define FQE_NATIVE_POLL_HANDLE_H

#include "errors.h"

#include <uv.h>

namespace fqe
{

class PollHandle
{
      public:
	PollHandle() = default;
	PollHandle(const PollHandle &) = delete;
	PollHandle &operator=(const PollHandle &) = delete;
	~PollHandle()
	{
		Close();
	}

	// Throws a BpfError (op names `what`) on failure.
	void Start(Napi::Env env, int fd, uv_poll_cb cb, void *data, const std::string &what)
	{
		uv_loop_t *loop = nullptr;
		if (napi_get_uv_event_loop(env, &loop) != napi_ok || !loop)
			ThrowErrno(env, EINVAL, "napi_get_uv_event_loop()");
		poll_ = new uv_poll_t;
		int ret = uv_poll_init(loop, poll_, fd);
		if (ret < 0) {
			delete poll_;
			poll_ = nullptr;
			ThrowErrno(env, -ret, "uv_poll_init(" + what + ")");
		}
		poll_->data = data;
		ret = uv_poll_start(poll_, UV_READABLE, cb);
		if (ret < 0) {
			Close();
			ThrowErrno(env, -ret, "uv_poll_start(" + what + ")");
		}
	}

	void Ref()
	{
		if (poll_)
			uv_ref(reinterpret_cast<uv_handle_t *>(poll_));
	}

	void Unref()
	{
		if (poll_)
			uv_unref(reinterpret_cast<uv_handle_t *>(poll_));
	}

	// Idempotent. Call before closing the watched fd.
	void Close()
	{
		if (!poll_)
			return;
		uv_poll_stop(poll_);
		poll_->data = nullptr;
		uv_close(reinterpret_cast<uv_handle_t *>(poll_),
			 [](uv_handle_t *h) { delete reinterpret_cast<uv_poll_t *>(h); });
		poll_ = nullptr;
	}

      private:
	uv_poll_t *poll_ = nullptr;
};

} // namespace fqe

#endif // FQE_NATIVE_POLL_HANDLE_H
