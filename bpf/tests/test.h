/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * What every test program of bpf/tests/ shares: a header under test gets
 * its input in the test packet (after the 14 bytes of an Ethernet header,
 * FQE_TEST_IN) and leaves its results in the one slot of an array map,
 * fqe_test_out (value: struct test_out of the program), which
 * test/kernel/bpf-lib.test.ts reads after BPF_PROG_TEST_RUN. No pins: the
 * agent's loader never sees these objects (not bpf/<name>.bpf.o).
 */
#ifndef FQE_TEST_H
#define FQE_TEST_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#define FQE_TEST_IN 14

#define FQE_TEST_OUT(value_t)                                                                                          \
	struct {                                                                                                       \
		__uint(type, BPF_MAP_TYPE_ARRAY);                                                                      \
		__uint(max_entries, 1);                                                                                \
		__type(key, __u32);                                                                                    \
		__type(value, value_t);                                                                                \
	} fqe_test_out SEC(".maps");                                                                                   \
	static __always_inline value_t *test_out(void)                                                                 \
	{                                                                                                              \
		__u32 zero = 0;                                                                                        \
		return bpf_map_lookup_elem(&fqe_test_out, &zero);                                                      \
	}

#endif /* FQE_TEST_H */
