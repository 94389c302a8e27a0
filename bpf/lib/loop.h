/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Bounded loops and the masks and comparisons they need, for every header
 * (the pure ones too: no maps, no helpers here).
 */
#ifndef FQE_LOOP_H
#define FQE_LOOP_H

#include <linux/types.h>

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

/*
 * Bounded loops (the verifier walks each iteration; kernel 5.3+) rather than
 * bpf_loop() (5.17+). So that the iterations of a loop, and its exits, meet
 * in one verifier state, a loop keeps what it carries from one iteration to
 * the next, and its bound, in memory (per-CPU scratch), starts each
 * iteration with fqe_barrier() and reads them with FQE_READ(): a register
 * compared inside a loop would leave it with a different range at each
 * exit, and each exit would verify the rest of the program again.
 */
#define fqe_for(i, n) _Pragma("clang loop unroll(disable)") for (__u32 i = 0; i < (n); i++)
#define fqe_barrier() asm volatile("" ::: "memory")
#define FQE_READ(x)   (*(volatile __typeof__(x) *)&(x))
/*
 * x & m as an instruction the compiler must keep: an index or a size is
 * bounded by it where it is used (the compiler drops a mask it can prove
 * redundant, and the 5.10 verifier does not carry a comparison's bound over
 * to a copy spilled before it).
 */
#define FQE_MASK(x, m)                                                                                                 \
	({                                                                                                             \
		__u64 __v = (x);                                                                                       \
		asm volatile("%0 &= %1" : "+r"(__v) : "i"(m));                                                         \
		__v;                                                                                                   \
	})

/*
 * Comparisons as 0 or 1 by arithmetic the compiler cannot turn into a
 * branch (each branch is a path the verifier walks): a == b for 32-bit
 * values, a < b for values below 2^63.
 */
static __always_inline __u64 fqe_bit_eq(__u64 a, __u64 b)
{
	__u64 d = a ^ b;

	asm volatile("%0 += -1\n\t%0 >>= 63" : "+r"(d));
	return d;
}

static __always_inline __u64 fqe_bit_lt(__u64 a, __u64 b)
{
	__u64 d = a - b;

	asm volatile("%0 >>= 63" : "+r"(d));
	return d;
}

#endif /* FQE_LOOP_H */
