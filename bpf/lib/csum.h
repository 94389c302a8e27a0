/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Internet checksums of the replies the enforcer writes (bpf/lib/reply.h):
 * the IPv4 header's, and a UDP or TCP segment's with its pseudo header. The
 * sums go through bpf_csum_diff; bpf/tests/csum_test.bpf.c runs them on
 * given bytes.
 */
#ifndef FQE_CSUM_H
#define FQE_CSUM_H

#include "parse.h"

/* Bytes of a segment whose checksum is computed: UDP header + DNS header + question (<= 281) fit, and any masked length. */
#define FQE_CSUM_SEG_MAX 528

/* Fold a 32-bit one's complement sum to the 16 bits a header holds. */
static __always_inline __u16 fqe_csum_fold(__s64 sum)
{
	__u32 s = (__u32)sum;

	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

/* IPv4 header checksum of the 20-byte header `ip` (check already 0). */
static __always_inline void fqe_ip4_csum(struct iphdr *ip)
{
	ip->check = fqe_csum_fold(bpf_csum_diff(NULL, 0, (__be32 *)ip, sizeof(*ip), 0));
}

/*
 * The UDP or TCP checksum (p->proto) of a reply to the packet p: pseudo
 * header with p's addresses swapped (the reply's source is p's
 * destination), then the segment of seg_len bytes (at most 308) at packet
 * offset l4, copied into seg (FQE_CSUM_SEG_MAX bytes, zero padded).
 */
static __always_inline int fqe_l4_csum(struct __sk_buff *skb, const struct fqe_pkt *p, __u32 l4, __u32 seg_len,
				       __u8 *seg, __u16 *check)
{
	__u64 len = seg_len - sizeof(struct udphdr), padded;
	__s64 sum;

#pragma unroll
	for (int i = 0; i < FQE_CSUM_SEG_MAX / 8; i++)
		((__u64 *)seg)[i] = 0;
	if (seg_len < sizeof(struct udphdr) || len > 300)
		return -1;
	asm volatile("%0 &= 0x1ff" : "+r"(len)); /* the verifier sees 8 <= len + 8 <= 519 */
	len += sizeof(struct udphdr);
	if (bpf_skb_load_bytes(skb, l4, seg, len) < 0)
		return -1;
	padded = (len + 3) & ~3ULL; /* the zeroed tail pads it */
	if (p->family == 4) {
		struct {
			__u8 saddr[4], daddr[4];
			__u8 zero, proto;
			__be16 len;
		} ph = { .proto = p->proto, .len = bpf_htons(seg_len) };

		/* the reply's source is the query's destination */
		__builtin_memcpy(ph.saddr, p->daddr + 12, 4);
		__builtin_memcpy(ph.daddr, p->saddr + 12, 4);
		sum = bpf_csum_diff(NULL, 0, (__be32 *)&ph, sizeof(ph), 0);
	} else {
		struct {
			__u8 saddr[16], daddr[16];
			__be32 len;
			__u8 zero[3], next;
		} ph = { .len = bpf_htonl(seg_len), .next = p->proto };

		__builtin_memcpy(ph.saddr, p->daddr, 16);
		__builtin_memcpy(ph.daddr, p->saddr, 16);
		sum = bpf_csum_diff(NULL, 0, (__be32 *)&ph, sizeof(ph), 0);
	}
	if (sum < 0)
		return -1;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)seg, padded, (__u32)sum);
	if (sum < 0)
		return -1;
	*check = fqe_csum_fold(sum);
	if (*check == 0 && p->proto == IPPROTO_UDP)
		*check = 0xffff; /* 0 means "no checksum" (IPv4) and is invalid for IPv6 */
	return 0;
}

#endif /* FQE_CSUM_H */
