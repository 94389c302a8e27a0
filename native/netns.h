// SPDX-License-Identifier: Apache-2.0
//
// NetnsGuard: runs the enclosing scope with the calling thread inside another
// network namespace (a path such as /var/run/netns/NAME) and switches back
// when the scope ends, also when it ends by an exception. If switching back
// fails the process aborts: a JavaScript thread left in the wrong namespace
// would silently act on the wrong interfaces. An empty path does nothing.
#ifndef FQE_NATIVE_NETNS_H
#define FQE_NATIVE_NETNS_H

#include "errors.h"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace fqe
{

class NetnsGuard
{
      public:
	NetnsGuard(Napi::Env env, const std::string &path)
	{
		if (path.empty())
			return;
		int orig = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
		if (orig < 0)
			ThrowErrno(env, errno, "open(/proc/thread-self/ns/net)");
		int target = open(path.c_str(), O_RDONLY | O_CLOEXEC);
		if (target < 0) {
			int err = errno;
			close(orig);
			ThrowErrno(env, err, "open(" + path + ")");
		}
		if (setns(target, CLONE_NEWNET) != 0) {
			int err = errno;
			close(target);
			close(orig);
			ThrowErrno(env, err, "setns(" + path + ")");
		}
		close(target);
		orig_ = orig;
	}

	~NetnsGuard()
	{
		if (orig_ < 0)
			return;
		if (setns(orig_, CLONE_NEWNET) != 0) {
			std::fprintf(stderr,
				     "fqe_native: cannot return to the original "
				     "network namespace: %s\n",
				     std::strerror(errno));
			std::abort();
		}
		close(orig_);
	}

	NetnsGuard(const NetnsGuard &) = delete;
	NetnsGuard &operator=(const NetnsGuard &) = delete;

      private:
	int orig_ = -1;
};

} // namespace fqe

#endif // FQE_NATIVE_NETNS_H
