// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * bpf/lib/tls_parse.h on given bytes: a client's stream (TLS records) cut
 * into segments, walked as bpf/lib/tls.h walks a flow's segments (a fresh
 * flow state, a server name handed out and the walk resumed after it, as
 * the name program does; the steps are not counted per segment). What comes out:
 * each segment's outcome, each name's stream offset and length, the
 * parser's final state.
 */
#include "test.h"
#include "../lib/tls_step.h"

#define TEST_SEGMENTS 16
#define TEST_NAMES    4
#define TEST_STEPS    256 /* steps in all (record headers and fields); each costs the verifier ~1K instructions */
#define TEST_STREAM   (FQE_TEST_IN + 4 + 4 * TEST_SEGMENTS) /* packet offset of the stream */

struct test_in {
	__u32 nseg;
	__u32 seg_len[TEST_SEGMENTS];
};

struct test_out {
	/* results, read by the test */
	__s32 result[TEST_SEGMENTS]; /* FQE_TLS_MORE (walked), FQE_TLS_BAD; a name resumes */
	__u32 walked;		     /* segments walked */
	__u32 names;
	struct {
		__u32 at; /* stream offset */
		__u32 len;
	} name[TEST_NAMES];
	struct fqe_tls_flow f; /* the parser's state after the last segment */
	/* working space */
	struct test_in in;
	struct fqe_tls_walk w;
	__u32 seg;
	__u32 base;
	__u32 load; /* the next step starts segment seg */
};

FQE_TEST_OUT(struct test_out)

SEC("tc")
int tls_parse_test(struct __sk_buff *skb)
{
	struct test_out *o = test_out();

	if (!o)
		return TC_ACT_SHOT;
	if (bpf_skb_load_bytes(skb, FQE_TEST_IN, &o->in, sizeof(o->in)) < 0)
		return TC_ACT_SHOT;
	__builtin_memset(o, 0, offsetof(struct test_out, in)); /* the slot keeps the last run's */
	__builtin_memset(&o->w, 0, sizeof(o->w));
	o->base = 0;
	o->seg = 0;
	o->load = 1;
	/*
	 * One loop of steps over every segment (the verifier's states meet at
	 * each step, as in bpf/lib/tls.h), a segment loaded when the last one
	 * is walked, the walk resumed after a name as the name program does.
	 */
	fqe_for(i, TEST_STEPS)
	{
		__u32 seg;
		int r;

		fqe_barrier();
		seg = FQE_READ(o->seg);
		if (seg >= FQE_READ(o->in.nseg) || seg >= TEST_SEGMENTS)
			break;
		if (FQE_READ(o->load)) {
			o->w.off = TEST_STREAM + o->base;
			o->w.len = o->in.seg_len[seg & (TEST_SEGMENTS - 1)];
			o->w.at = 0;
			o->w.base = o->base;
			o->w.result = FQE_TLS_MORE;
			o->load = 0;
		}
		if (!fqe_tls_step(skb, &o->f, &o->w))
			continue;
		r = o->w.result;
		if (r == FQE_TLS_NAME) {
			__u32 k = o->names;

			if (k >= TEST_NAMES)
				break;
			o->name[k & (TEST_NAMES - 1)].at = o->f.ext_left;
			o->name[k & (TEST_NAMES - 1)].len = o->f.name_len;
			o->names = k + 1;
			o->f.hellos++; /* judged: the walk goes on */
			o->w.result = FQE_TLS_MORE;
			continue;
		}
		o->result[seg & (TEST_SEGMENTS - 1)] = r;
		o->walked = seg + 1;
		if (r == FQE_TLS_BAD)
			break;
		o->base += o->w.len;
		o->seg = seg + 1;
		o->load = 1;
	}
	fqe_barrier();
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
