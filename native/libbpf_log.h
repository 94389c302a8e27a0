// SPDX-License-Identifier: Apache-2.0
//
// libbpf's own messages. A process-wide print callback sends them to the
// LibbpfCapture of the running call on this thread (if any) so a failing call
// can put them into the error's `details`; otherwise warnings go to stderr.
// Debug messages are dropped unless FQE_LIBBPF_DEBUG=1, which also echoes
// captured text to stderr.
#ifndef FQE_NATIVE_LIBBPF_LOG_H
#define FQE_NATIVE_LIBBPF_LOG_H

#include <string>

namespace fqe
{

static constexpr size_t kDetailsBytes = 8 * 1024;

// Messages of the call running on this thread, when one is collecting.
extern thread_local std::string *tlsCapture;

// Collects libbpf output for the lifetime of the scope.
class LibbpfCapture
{
      public:
	LibbpfCapture()
	{
		prev_ = tlsCapture;
		tlsCapture = &text_;
	}
	~LibbpfCapture()
	{
		tlsCapture = prev_;
	}
	std::string Details() const
	{
		if (text_.size() <= kDetailsBytes)
			return text_;
		return text_.substr(text_.size() - kDetailsBytes);
	}

      private:
	std::string text_;
	std::string *prev_;
};

} // namespace fqe

#endif // FQE_NATIVE_LIBBPF_LOG_H
