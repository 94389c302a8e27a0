// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * bpf/lib/csum.h on a given frame (Ethernet, IPv4 without options or IPv6,
 * then UDP or TCP): its IPv4 header checksum and its L4 checksum computed
 * afresh (the packet's own fields zeroed first), for the test to compare
 * with the ones the frame carries; and fqe_csum_fold() of given sums.
 */
#include "test.h"
#include "../lib/csum.h"

#define TEST_FOLDS 8

struct test_out {
	/* results, read by the test */
	__s32 result;	/* 0, or -1 */
	__u16 ip_check; /* as the header holds it (network order) */
	__u16 l4_check;
	__u16 fold[TEST_FOLDS];
	/* working space */
	__s64 sums[TEST_FOLDS];
	__u8 seg[FQE_CSUM_SEG_MAX];
	struct fqe_pkt p;
};

FQE_TEST_OUT(struct test_out)

SEC("tc")
int csum_test(struct __sk_buff *skb)
{
	struct test_out *o = test_out();
	__u32 l4, check_at;
	__u16 zero = 0;

	if (!o)
		return TC_ACT_SHOT;
	o->result = -1;
	/* sums to fold: a frame with another ethertype carries them after its header (a real frame: ignored) */
	if (bpf_skb_load_bytes(skb, FQE_TEST_IN, o->sums, sizeof(o->sums)) == 0) {
#pragma unroll
		for (int i = 0; i < TEST_FOLDS; i++)
			o->fold[i] = fqe_csum_fold(o->sums[i]);
	}
	if (fqe_parse(skb, &o->p) != FQE_PARSE_OK || o->p.frag)
		return TC_ACT_OK;
	l4 = ETH_HLEN + (o->p.family == 4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr));
	if (o->p.family == 4) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0 || ip.ihl != 5)
			return TC_ACT_OK;
		ip.check = 0;
		fqe_ip4_csum(&ip);
		o->ip_check = ip.check;
	}
	if (o->p.proto == IPPROTO_UDP)
		check_at = l4 + offsetof(struct udphdr, check);
	else if (o->p.proto == IPPROTO_TCP)
		check_at = l4 + offsetof(struct tcphdr, check);
	else
		return TC_ACT_OK;
	if (bpf_skb_store_bytes(skb, check_at, &zero, sizeof(zero), 0) < 0)
		return TC_ACT_OK;
	/* the pseudo header with the addresses swapped (a reply's) sums the same */
	o->result = fqe_l4_csum(skb, &o->p, l4, skb->len - l4, o->seg, &o->l4_check);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
