/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * One packet parser for every program (tc and socket filter): Ethernet,
 * IPv4/IPv6 (with up to FQE_MAX_EXT_HDRS extension headers), TCP/UDP ports,
 * ICMP type. It reads through bpf_skb_load_bytes, so non-linear skbs and
 * socket filters (no direct packet access) take the same path.
 */
#ifndef FQE_PARSE_H
#define FQE_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "loop.h"

#define FQE_MAX_EXT_HDRS 4
#define FQE_DNS_PORT	 53

#ifndef IPPROTO_ICMPV6
#define IPPROTO_ICMPV6 58
#endif
#define FQE_NEXTHDR_HOP	     0
#define FQE_NEXTHDR_ROUTING  43
#define FQE_NEXTHDR_FRAGMENT 44
#define FQE_NEXTHDR_DEST     60

enum fqe_parse_result {
	FQE_PARSE_OK = 0,
	FQE_PARSE_ARP = 1,	 /* ARP: always passes */
	FQE_PARSE_OTHER = 2,	 /* an ethertype we do not look into */
	FQE_PARSE_MALFORMED = 3, /* truncated or inconsistent headers */
};

struct fqe_pkt {
	__u8 saddr[16]; /* IPv4 as ::ffff:a.b.c.d */
	__u8 daddr[16];
	__u32 payload_off; /* first byte after the L4 header */
	__u32 payload_len;
	__u16 sport; /* host byte order */
	__u16 dport;
	__u8 family; /* 4 or 6 */
	__u8 proto;
	__u8 frag; /* non-first fragment: no L4 header */
	__u8 icmp_type;
	__u8 tcp_flags; /* byte 13 of the TCP header */
	__u8 hop_limit; /* IPv4 TTL or IPv6 hop limit */
	__u32 tcp_seq;	/* host byte order; TCP only */
	__u32 tcp_ack;	/* host byte order; TCP only */
	__u16 urg_ptr;	/* TCP urgent pointer, host byte order */
	__u16 pad;
};

/*
 * Scratch space of one CPU, per object (not pinned): a map of one slot
 * and its getter. Big or long-lived working state goes here rather than on
 * the stack: the stack holds 512 bytes, and the 5.10 verifier keeps states
 * apart by which stack bytes each path wrote.
 */
#define FQE_PERCPU_SCRATCH(map, value_t, getter)                                                                       \
	struct {                                                                                                       \
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);                                                               \
		__uint(max_entries, 1);                                                                                \
		__type(key, __u32);                                                                                    \
		__type(value, value_t);                                                                                \
	} map SEC(".maps");                                                                                            \
	static __always_inline value_t *getter(void)                                                                   \
	{                                                                                                              \
		__u32 zero = 0;                                                                                        \
		return bpf_map_lookup_elem(&map, &zero);                                                               \
	}

/* The packet being judged (fqe_parse() fills it). */
FQE_PERCPU_SCRATCH(fqe_pkt_scratch, struct fqe_pkt, fqe_pkt_get)

#define FQE_TCP_FIN 0x01
#define FQE_TCP_SYN 0x02
#define FQE_TCP_RST 0x04
#define FQE_TCP_ACK 0x10
#define FQE_TCP_URG 0x20

/*
 * Does this segment point at urgent data (URG, or an urgent pointer)? A
 * Linux receiver takes the urgent byte out of the stream (without
 * SO_OOBINLINE), so a stream checked with it in would not be the stream
 * read: refused wherever the kernel judges a stream.
 */
static __always_inline int fqe_tcp_urgent(const struct fqe_pkt *p)
{
	return p->proto == IPPROTO_TCP && ((p->tcp_flags & FQE_TCP_URG) || p->urg_ptr);
}

static __always_inline void fqe_addr_from_v4(__u8 *dst, __be32 v4)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &v4, 4);
}

static __always_inline int fqe_parse_l4(struct __sk_buff *skb, struct fqe_pkt *p, __u32 off, __u32 end)
{
	if (p->proto == IPPROTO_TCP) {
		struct tcphdr th;

		if (bpf_skb_load_bytes(skb, off, &th, sizeof(th)) < 0)
			return FQE_PARSE_MALFORMED;
		if (th.doff < 5)
			return FQE_PARSE_MALFORMED;
		p->sport = bpf_ntohs(th.source);
		p->dport = bpf_ntohs(th.dest);
		p->tcp_flags = ((__u8 *)&th)[13];
		p->tcp_seq = bpf_ntohl(th.seq);
		p->tcp_ack = bpf_ntohl(th.ack_seq);
		p->urg_ptr = bpf_ntohs(th.urg_ptr);
		p->payload_off = off + th.doff * 4;
	} else if (p->proto == IPPROTO_UDP) {
		struct udphdr uh;

		if (bpf_skb_load_bytes(skb, off, &uh, sizeof(uh)) < 0)
			return FQE_PARSE_MALFORMED;
		p->sport = bpf_ntohs(uh.source);
		p->dport = bpf_ntohs(uh.dest);
		p->payload_off = off + sizeof(uh);
	} else if (p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6) {
		if (bpf_skb_load_bytes(skb, off, &p->icmp_type, 1) < 0)
			return FQE_PARSE_MALFORMED;
		p->payload_off = off;
	} else {
		p->payload_off = off;
	}
	if (p->payload_off > end)
		return FQE_PARSE_MALFORMED;
	p->payload_len = end - p->payload_off;
	return FQE_PARSE_OK;
}

static __always_inline int fqe_parse_v4(struct __sk_buff *skb, struct fqe_pkt *p, __u32 off)
{
	struct iphdr ip;
	__u32 end;

	if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) < 0)
		return FQE_PARSE_MALFORMED;
	if (ip.ihl < 5 || ip.version != 4)
		return FQE_PARSE_MALFORMED;
	p->family = 4;
	p->proto = ip.protocol;
	fqe_addr_from_v4(p->saddr, ip.saddr);
	fqe_addr_from_v4(p->daddr, ip.daddr);
	p->hop_limit = ip.ttl;
	/* BIG TCP (GSO beyond 64 KiB): tot_len 0, the length is the skb's. */
	end = ip.tot_len ? off + bpf_ntohs(ip.tot_len) : skb->len;
	if (end > skb->len || end < off + ip.ihl * 4)
		return FQE_PARSE_MALFORMED;
	if (bpf_ntohs(ip.frag_off) & 0x1fff) {
		p->frag = 1;
		return FQE_PARSE_OK;
	}
	return fqe_parse_l4(skb, p, off + ip.ihl * 4, end);
}

static __always_inline int fqe_parse_v6(struct __sk_buff *skb, struct fqe_pkt *p, __u32 off)
{
	struct ipv6hdr ip6;
	__u8 nexthdr;
	__u32 end;

	if (bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)) < 0)
		return FQE_PARSE_MALFORMED;
	if (ip6.version != 6)
		return FQE_PARSE_MALFORMED;
	p->family = 6;
	__builtin_memcpy(p->saddr, &ip6.saddr, 16);
	__builtin_memcpy(p->daddr, &ip6.daddr, 16);
	p->hop_limit = ip6.hop_limit;
	/* BIG TCP: payload length 0 (the jumbo option is gone by tc), the skb's. */
	end = ip6.payload_len ? off + sizeof(ip6) + bpf_ntohs(ip6.payload_len) : skb->len;
	if (end > skb->len)
		return FQE_PARSE_MALFORMED;
	nexthdr = ip6.nexthdr;
	off += sizeof(ip6);

#pragma unroll
	for (int i = 0; i < FQE_MAX_EXT_HDRS; i++) {
		__u8 hdr[4];

		if (nexthdr != FQE_NEXTHDR_HOP && nexthdr != FQE_NEXTHDR_ROUTING && nexthdr != FQE_NEXTHDR_DEST &&
		    nexthdr != FQE_NEXTHDR_FRAGMENT)
			break;
		if (bpf_skb_load_bytes(skb, off, hdr, sizeof(hdr)) < 0)
			return FQE_PARSE_MALFORMED;
		if (nexthdr == FQE_NEXTHDR_FRAGMENT) {
			/* hdr[2..3]: offset (13 bits) and flags */
			if (((hdr[2] << 8) | hdr[3]) & 0xfff8)
				p->frag = 1;
			off += 8;
		} else {
			off += (hdr[1] + 1) * 8;
		}
		nexthdr = hdr[0];
	}
	p->proto = nexthdr;
	if (p->frag)
		return FQE_PARSE_OK;
	if (nexthdr == FQE_NEXTHDR_HOP || nexthdr == FQE_NEXTHDR_ROUTING || nexthdr == FQE_NEXTHDR_DEST ||
	    nexthdr == FQE_NEXTHDR_FRAGMENT)
		return FQE_PARSE_MALFORMED; /* longer chain than we follow */
	return fqe_parse_l4(skb, p, off, end);
}

/* Parse from the Ethernet header at offset 0 (p: fqe_pkt_get()). */
static __always_inline int fqe_parse(struct __sk_buff *skb, struct fqe_pkt *p)
{
	__be16 eth_proto;

	__builtin_memset(p, 0, sizeof(*p));
	if (bpf_skb_load_bytes(skb, offsetof(struct ethhdr, h_proto), &eth_proto, sizeof(eth_proto)) < 0)
		return FQE_PARSE_MALFORMED;
	if (eth_proto == bpf_htons(ETH_P_ARP))
		return FQE_PARSE_ARP;
	if (eth_proto == bpf_htons(ETH_P_IP))
		return fqe_parse_v4(skb, p, sizeof(struct ethhdr));
	if (eth_proto == bpf_htons(ETH_P_IPV6))
		return fqe_parse_v6(skb, p, sizeof(struct ethhdr));
	return FQE_PARSE_OTHER;
}

static __always_inline int fqe_is_link_local6(const __u8 *a)
{
	return a[0] == 0xfe && (a[1] & 0xc0) == 0x80; /* fe80::/10 */
}

static __always_inline int fqe_is_unspecified6(const __u8 *a)
{
	__u8 any = 0;

#pragma unroll
	for (int i = 0; i < 16; i++)
		any |= a[i];
	return any == 0;
}

/*
 * ICMPv6 that passes unconditionally: real link control only, which cannot
 * leave the link. Neighbour discovery (133-137) carries hop limit 255 (RFC
 * 4861 receivers discard anything else); MLD (130-132, 143) comes from a
 * link-local or the unspecified source. Either goes to a link-local address
 * or to link-scope multicast (ff02::/16: solicited-node, all-nodes,
 * all-routers, MLDv2 routers). Anything else ICMPv6 is judged like any
 * other packet.
 */
static __always_inline int fqe_is_icmp6_link_control(const struct fqe_pkt *p)
{
	int nd, mld;

	if (p->family != 6 || p->proto != IPPROTO_ICMPV6 || p->frag)
		return 0;
	nd = p->icmp_type >= 133 && p->icmp_type <= 137;
	mld = (p->icmp_type >= 130 && p->icmp_type <= 132) || p->icmp_type == 143;
	if (!nd && !mld)
		return 0;
	if (!fqe_is_link_local6(p->daddr) && !(p->daddr[0] == 0xff && p->daddr[1] == 0x02))
		return 0;
	if (nd)
		return p->hop_limit == 255;
	return fqe_is_link_local6(p->saddr) || fqe_is_unspecified6(p->saddr);
}

#endif /* FQE_PARSE_H */
