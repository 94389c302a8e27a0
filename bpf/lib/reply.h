/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Answers the enforcer writes in place of a refused packet and sends back
 * to the pod (TC_ACT_REDIRECT to the egress of the interface it came in
 * on): a refused UDP query becomes its own NXDOMAIN answer (same id and
 * question, QR and RA set, RCODE 3, no records; anything after the
 * question, an EDNS OPT record too, is cut), a refused TCP segment (a DNS
 * query over TCP, a ClientHello the TLS check refused) a RST that ends the
 * connection. Addresses, ports and MACs swapped, checksums recomputed
 * (bpf/lib/csum.h). Only a plain header (IPv4 without options, IPv6 without
 * extension headers) is turned around; the rest is dropped. The server
 * never sees the packet.
 */
#ifndef FQE_REPLY_H
#define FQE_REPLY_H

#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include "parse.h"
#include "csum.h"
#include "dns.h"

/* Where the L4 header of a packet the enforcer turns around starts. */
static __always_inline __u32 fqe_reply_l4(const struct fqe_pkt *p)
{
	return ETH_HLEN + (p->family == 4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr));
}

/*
 * Turn the packet around, back to the pod: MACs and addresses swapped, the
 * IP length for an L4 segment of seg_len bytes.
 */
static __always_inline int fqe_reply_turn_around(struct __sk_buff *skb, const struct fqe_pkt *p, __u32 seg_len)
{
	__u8 mac[2 * ETH_ALEN], swapped[2 * ETH_ALEN];

	if (bpf_skb_load_bytes(skb, 0, mac, sizeof(mac)) < 0)
		return -1;
	__builtin_memcpy(swapped, mac + ETH_ALEN, ETH_ALEN);
	__builtin_memcpy(swapped + ETH_ALEN, mac, ETH_ALEN);
	if (bpf_skb_store_bytes(skb, 0, swapped, sizeof(swapped), 0) < 0)
		return -1;
	if (p->family == 4) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0 || ip.ihl != 5)
			return -1;
		__builtin_memcpy(&ip.saddr, p->daddr + 12, 4);
		__builtin_memcpy(&ip.daddr, p->saddr + 12, 4);
		ip.tot_len = bpf_htons(sizeof(ip) + seg_len);
		ip.ttl = 64;
		ip.check = 0;
		fqe_ip4_csum(&ip);
		return bpf_skb_store_bytes(skb, ETH_HLEN, &ip, sizeof(ip), 0);
	} else {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) < 0 || ip6.nexthdr != p->proto)
			return -1;
		__builtin_memcpy(&ip6.saddr, p->daddr, 16);
		__builtin_memcpy(&ip6.daddr, p->saddr, 16);
		ip6.payload_len = bpf_htons(seg_len);
		ip6.hop_limit = 64;
		return bpf_skb_store_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6), 0);
	}
}

/*
 * A refused UDP query (its question at q, the UDP header at l4) becomes its
 * own NXDOMAIN answer. seg: FQE_CSUM_SEG_MAX bytes of scratch.
 */
static __always_inline int fqe_reply_nxdomain(struct __sk_buff *skb, const struct fqe_pkt *p, __u32 l4,
					      const struct fqe_dns_question *q, __u8 *seg)
{
	struct udphdr uh = {};
	__u32 udp_len;
	__be16 dns[5];
	__u16 check;

	if (!q->question_end || p->payload_off != l4 + sizeof(uh) || q->msg_off != p->payload_off ||
	    q->question_end <= q->msg_off)
		return -1; /* no question to echo, or a header we do not turn around */
	udp_len = sizeof(uh) + q->question_end - q->msg_off;
	if (bpf_skb_change_tail(skb, q->question_end, 0) < 0)
		return -1;
	/* DNS: a response, recursion available, NXDOMAIN, the question alone. */
	dns[0] = bpf_htons(FQE_DNS_QR | FQE_DNS_RA | (q->flags & (FQE_DNS_RD | FQE_DNS_CD)) | FQE_DNS_RCODE_NXDOMAIN);
	dns[1] = bpf_htons(1);
	dns[2] = 0;
	dns[3] = 0;
	dns[4] = 0;
	if (bpf_skb_store_bytes(skb, q->msg_off + 2, dns, sizeof(dns), 0) < 0 ||
	    fqe_reply_turn_around(skb, p, udp_len) < 0)
		return -1;
	uh.source = bpf_htons(p->dport);
	uh.dest = bpf_htons(p->sport);
	uh.len = bpf_htons(udp_len);
	if (bpf_skb_store_bytes(skb, l4, &uh, sizeof(uh), 0) < 0 || fqe_l4_csum(skb, p, l4, udp_len, seg, &check) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, l4 + offsetof(struct udphdr, check), &check, sizeof(check), 0);
}

/*
 * A refused TCP segment ends its connection: it becomes a RST (with ACK)
 * from the server, in sequence, so the pod's stack closes at once. The
 * server never sees the segment; its half of the connection times out.
 * seg: FQE_CSUM_SEG_MAX bytes of scratch.
 */
static __always_inline int fqe_reply_rst(struct __sk_buff *skb, const struct fqe_pkt *p, __u32 l4, __u8 *seg)
{
	struct tcphdr th, rst = {};
	__u16 check;

	if (p->payload_off < l4 + sizeof(th) || bpf_skb_load_bytes(skb, l4, &th, sizeof(th)) < 0)
		return -1;
	rst.source = th.dest;
	rst.dest = th.source;
	rst.seq = th.ack_seq; /* what the pod expects from the server next */
	rst.ack_seq = bpf_htonl(bpf_ntohl(th.seq) + p->payload_len + th.syn + th.fin);
	rst.doff = sizeof(rst) / 4;
	rst.rst = 1;
	rst.ack = 1;
	if (bpf_skb_change_tail(skb, l4 + sizeof(rst), 0) < 0 || fqe_reply_turn_around(skb, p, sizeof(rst)) < 0 ||
	    bpf_skb_store_bytes(skb, l4, &rst, sizeof(rst), 0) < 0 ||
	    fqe_l4_csum(skb, p, l4, sizeof(rst), seg, &check) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, l4 + offsetof(struct tcphdr, check), &check, sizeof(check), 0);
}

/* Send the reply written (err >= 0) back to the pod; without one the packet is dropped. */
static __always_inline int fqe_reply_send(struct __sk_buff *skb, int err)
{
	return err < 0 ? TC_ACT_SHOT : bpf_redirect(skb->ifindex, 0);
}

#endif /* FQE_REPLY_H */
