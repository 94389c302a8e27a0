// SPDX-License-Identifier: Apache-2.0
//
// The libbpf print callback (see libbpf_log.h).
#include "addon.h"
#include "libbpf_log.h"

#include <bpf/libbpf.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace fqe
{

thread_local std::string *tlsCapture = nullptr;

static bool LibbpfDebug()
{
	static const bool debug = [] {
		const char *v = std::getenv("FQE_LIBBPF_DEBUG");
		return v && std::strcmp(v, "1") == 0;
	}();
	return debug;
}

static int LibbpfPrint(enum libbpf_print_level level, const char *fmt, va_list args)
{
	bool debug = LibbpfDebug();
	if (level == LIBBPF_DEBUG && !debug)
		return 0;
	char small[512];
	va_list copy;
	va_copy(copy, args);
	int n = std::vsnprintf(small, sizeof(small), fmt, copy);
	va_end(copy);
	if (n < 0)
		return 0;
	std::string line;
	if (static_cast<size_t>(n) < sizeof(small)) {
		line.assign(small, n);
	} else {
		line.resize(n + 1);
		std::vsnprintf(&line[0], line.size(), fmt, args);
		line.resize(n);
	}
	if (tlsCapture) {
		tlsCapture->append(line);
		if (tlsCapture->size() > 2 * kDetailsBytes)
			tlsCapture->erase(0, tlsCapture->size() - kDetailsBytes);
		if (!debug)
			return 0;
	} else if (level != LIBBPF_WARN && !debug) {
		return 0;
	}
	std::fputs(line.c_str(), stderr);
	return 0;
}

void InstallLibbpfPrint()
{
	libbpf_set_print(LibbpfPrint);
}

} // namespace fqe
