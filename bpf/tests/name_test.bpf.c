// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * bpf/lib/name.h on given bytes. Mode 0: a name in hash order (labels right
 * to left, each its length byte and bytes, as agent/policy/name-hash.ts
 * hashOrderBytes() writes it) and a key: the whole name's hash, and each
 * suffix step (fqe_name_suffix(): length, hash, and whether fqe_name_is()
 * finds it equal to the given rule name). Mode 1: fqe_name_lower() and
 * fqe_name_ldh() of every byte value.
 */
#include "test.h"
#include "../lib/name.h"

#define TEST_SUFFIXES 64

struct test_in {
	__u8 mode;
	__u8 pad[3];
	__u16 len;	/* bytes of name[] (1..255) */
	__u16 rule_len; /* bytes of rule[] */
	__u64 key;
	__u8 name[FQE_DNS_WIRE_MAX];
	__u8 rule[FQE_NAME_LEN];
};

struct test_out {
	/* results, read by the test */
	__s32 result; /* 0, or -1: the input did not parse */
	__u32 total;
	__u32 nlabels;
	__u32 pad;
	__u64 whole; /* fqe_suffix_hash() of the whole name */
	struct {
		__u32 len;
		__u32 is; /* fqe_name_is() against the rule */
		__u64 hash;
	} suffix[TEST_SUFFIXES]; /* step i of the suffix walk, the shortest first */
	__u8 lower[256];
	__u8 ldh[256];
	/* working space */
	struct test_in in;
	__u32 at;			  /* the label walk's place in in.name */
	__u32 at_rev[FQE_DNS_MAX_LABELS]; /* where each label (rightmost first) begins in rev[] */
	struct fqe_policy_val rule;
	struct fqe_name_buf nb;
};

FQE_TEST_OUT(struct test_out)

/* nb->rev, rev_pos, nlabels and starts[] from the hash-order bytes in in.name, as a packet's reader leaves them. */
static __always_inline int fill(struct test_out *o)
{
	struct fqe_name_buf *nb = &o->nb;
	__u32 len = o->in.len;

	if (len == 0 || len > FQE_DNS_WIRE_MAX - 1)
		return -1;
	nb->rev_pos = FQE_DNS_WIRE_MAX - len;
	fqe_for(j, FQE_DNS_WIRE_MAX)
	{
		fqe_barrier();
		if (j >= FQE_READ(o->in.len))
			break;
		nb->rev[FQE_MASK(FQE_READ(nb->rev_pos) + j, 2 * FQE_DNS_WIRE_MAX - 1)] = o->in.name[j];
	}
	fqe_barrier();
	nb->nlabels = 0;
	o->at = 0;
	fqe_for(k, FQE_DNS_MAX_LABELS)
	{
		__u32 at;

		fqe_barrier();
		at = FQE_READ(o->at);
		if (at >= FQE_READ(o->in.len))
			break;
		o->at_rev[k & (FQE_DNS_MAX_LABELS - 1)] = nb->rev_pos + at;
		o->at = at + 1 + o->in.name[FQE_MASK(at, FQE_DNS_WIRE_MAX - 1)];
		nb->nlabels = k + 1;
	}
	fqe_barrier();
	if (o->at != o->in.len)
		return -1;
	/* starts[] is leftmost first */
	fqe_for(i, FQE_DNS_MAX_LABELS)
	{
		fqe_barrier();
		if (i >= FQE_READ(nb->nlabels))
			break;
		nb->starts[i] = o->at_rev[FQE_MASK(FQE_READ(nb->nlabels) - 1 - i, FQE_DNS_MAX_LABELS - 1)];
	}
	fqe_barrier();
	return 0;
}

SEC("tc")
int name_test(struct __sk_buff *skb)
{
	struct test_out *o = test_out();

	if (!o)
		return TC_ACT_SHOT;
	if (bpf_skb_load_bytes(skb, FQE_TEST_IN, &o->in, sizeof(o->in)) < 0)
		return TC_ACT_SHOT;
	if (o->in.mode == 1) {
		fqe_for(c, 256)
		{
			o->lower[c] = fqe_name_lower(c);
			o->ldh[c] = fqe_name_ldh(c);
		}
		return TC_ACT_OK;
	}
	o->result = fill(o);
	if (o->result < 0)
		return TC_ACT_OK;
	__builtin_memcpy(o->rule.name, o->in.rule, sizeof(o->rule.name));
	o->rule.name_len = o->in.rule_len;
	fqe_name_hash(&o->nb, o->in.key);
	o->total = o->nb.total;
	o->nlabels = o->nb.nlabels;
	o->whole = fqe_suffix_hash(&o->nb, o->nb.total);
	fqe_for(i, TEST_SUFFIXES)
	{
		__u32 labels;

		fqe_barrier();
		labels = FQE_READ(o->nb.nlabels);
		if (i >= labels)
			break;
		o->suffix[i].hash = fqe_name_suffix(&o->nb, i, labels);
		o->suffix[i].len = o->nb.len;
		o->suffix[i].is = fqe_name_is(&o->nb, &o->rule);
	}
	fqe_barrier();
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
