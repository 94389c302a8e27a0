/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * DNS queries are policy: the enforcer's judgement of a query an enforced
 * pod sends to a trusted resolver, and the NXDOMAIN it answers in place when
 * the query is refused.
 *
 * A query passes only when it is one plain question (QR 0, opcode 0, one
 * question, no answer or authority records, at most one additional record:
 * EDNS), its name uncompressed, and that name is one the pod's rules allow
 * (the learner's matching: bpf/lib/dns.h, real bytes compared after the
 * keyed hash) or lies under one of the cluster's domains (fqe_cluster_domains,
 * compared the same way). Over TCP the segment must hold exactly one whole
 * message after its length prefix; a segment without payload (handshake,
 * ACK, FIN) carries no query and passes. Anything else is refused: fail
 * closed.
 *
 * A refused UDP query becomes its own NXDOMAIN answer (same id and
 * question, QR and RA set, RCODE 3, no records; anything after the question,
 * an EDNS OPT record too, is cut), addresses, ports and MACs swapped,
 * checksums recomputed, and is redirected back out of the interface it came
 * in on, to the pod. A refused TCP segment becomes a RST to the pod, which
 * ends the connection. The resolver never sees either.
 */
#ifndef FQE_DNS_QUERY_H
#define FQE_DNS_QUERY_H

#include <linux/if_ether.h>
#include "dns.h"
#include "conntrack.h"

#define FQE_DNS_QR 0x8000
#define FQE_DNS_OPCODE_MASK 0x7800
#define FQE_DNS_RD 0x0100
#define FQE_DNS_RA 0x0080
#define FQE_DNS_CD 0x0010
#define FQE_DNS_RCODE_NXDOMAIN 3
#define FQE_DNS_SEG_MAX 528 /* UDP header + DNS header + question (<= 281) fit, and any masked length */

/* The ClientHello parser's walk over one segment (bpf/lib/tls.h). */
struct fqe_tls_walk {
	__u32 off; /* packet offset of the segment's first new byte */
	__u32 len; /* new bytes in the segment */
	__u32 at; /* bytes of them walked */
	__u32 base; /* stream offset of the first new byte */
	__s32 result; /* FQE_TLS_MORE, FQE_TLS_NAME or FQE_TLS_BAD */
	__u32 n; /* bytes this step takes */
	__u8 buf[8];
	__u32 fresh; /* new bytes in the segment (len: those the store holds) */
	__u32 seq_end; /* the sequence number after the segment */
	/* a copy into, or compare with, the flow's store */
	__u32 copy_off; /* packet offset */
	__u32 copy_len;
	__u32 copy_at; /* stream offset */
	__u32 chunk_len; /* bytes in chunk[] */
};

/* The server name's two passes (bpf/lib/tls.h). */
struct fqe_tls_name_walk {
	__u32 n; /* the name's bytes, dotted */
	__u32 start; /* its stream offset */
	__u32 stop; /* the walk met a label it cannot show */
	__u32 label_start;
	__u32 bad;
	__u32 next_label;
	__u32 cur_start;
	__u32 cur_len;
	__u32 first; /* stream offset of the first hello's name */
};

/* Per-CPU scratch for one query: too big for the stack. */
struct fqe_query_scratch {
	struct fqe_name_buf nb; /* the name being judged (a query's, a server name) */
	struct fqe_refused_name refused; /* what fqe_dns_refused gets */
	__u32 msg_off; /* where the DNS message starts */
	__u32 question_end; /* offset after QTYPE and QCLASS; 0 = not parsed */
	__u32 name_off; /* where the question name starts */
	__u32 name_len; /* its wire length without the root label */
	__u16 flags; /* the query's header flags */
	__u16 pad[3];
	__u8 seg[FQE_DNS_SEG_MAX]; /* the reply's UDP segment, for its checksum */
	/* the TLS check (bpf/lib/tls.h) */
	struct fqe_tls_walk walk; /* the ClientHello parser's place in a segment */
	struct fqe_tls_name_walk tn; /* the server name's passes */
	__u8 chunk[64]; /* segment bytes being compared with the store */
};

FQE_PERCPU_SCRATCH(fqe_query_scratch, struct fqe_query_scratch, fqe_query_scratch_get)

static __always_inline __u64 fqe_dns_hash_key(void)
{
	__u32 zero = 0;
	const struct fqe_hash_key *k = bpf_map_lookup_elem(&fqe_hash_key, &zero);

	return k ? k->key : 0;
}

/*
 * Is the hashed name a cluster domain or under one (the whole name or a
 * suffix on a label boundary, the shortest first)? Real bytes compared.
 */
static __always_inline int fqe_dns_in_cluster(struct fqe_name_buf *nb)
{
	const struct fqe_policy_val *domain = NULL;
	__u64 h;

	fqe_for (i, FQE_DNS_MAX_LABELS) {
		__u32 labels;

		fqe_barrier();
		labels = FQE_READ(nb->nlabels);
		if (i >= labels)
			break;
		/* the rightmost labels first; the last step is the whole name */
		nb->len = i + 1 < labels ? fqe_suffix_len(nb, labels - 2 - i) : nb->total;
		h = fqe_suffix_hash(nb, nb->len);
		domain = bpf_map_lookup_elem(&fqe_cluster_domains, &h);
		if (domain)
			break;
	}
	fqe_barrier();
	return domain && fqe_name_is(nb, domain);
}

/*
 * Where the query's DNS message lies: 1 with off and end set, 0 when the
 * packet carries no DNS data (a TCP segment without payload), -1 when it is
 * not exactly one message (refused).
 */
static __always_inline int fqe_dns_query_message(struct __sk_buff *skb, const struct fqe_pkt *p,
						 __u32 *off, __u32 *end)
{
	__be16 prefix;

	*off = p->payload_off;
	*end = p->payload_off + p->payload_len;
	if (p->proto == IPPROTO_TCP) {
		if (p->payload_len == 0)
			return 0;
		/* One whole message after its length prefix, nothing more, nothing less. */
		if (p->payload_len < 2 + FQE_DNS_HDR_LEN || bpf_skb_load_bytes(skb, *off, &prefix, 2) < 0 ||
		    bpf_ntohs(prefix) != p->payload_len - 2)
			return -1;
		*off += 2;
	}
	return p->payload_len >= FQE_DNS_HDR_LEN ? 1 : -1;
}

/* Did this refusal's event make it into fqe_recent? (rate-limited events do not) */
static __always_inline int fqe_event_recorded(__u32 identity, __u16 sport, __u64 now, __u8 reason)
{
	const struct fqe_recent *r;
	__u32 zero = 0, slot;
	__u64 *head = bpf_map_lookup_elem(&fqe_recent_seq, &zero);
	__u64 seq;

	if (!head)
		return 0;
	seq = *head;
	/* ours is the newest, unless another CPU wrote one since: look a few back */
	for (__u32 i = 1; i <= 4 && i <= seq; i++) {
		slot = FQE_MASK(seq - i, FQE_RECENT_EVENTS - 1);
		r = bpf_map_lookup_elem(&fqe_recent, &slot);
		if (r && r->ev.ts_ns == now && r->ev.identity == identity && r->ev.sport == sport &&
		    r->ev.reason == reason)
			return 1;
	}
	return 0;
}

/*
 * Keep the name a refused query asked for, keyed like its event, when the
 * event was recorded (so a flood of refusals cannot push out the names of
 * the events egressctl shows). Call after fqe_report(), before the reply
 * rewrites the packet.
 */
static __always_inline void fqe_dns_remember_refused(struct __sk_buff *skb, const struct fqe_pkt *p,
						     __u32 identity, __u64 now)
{
	struct fqe_refused_key k = { .ts_ns = now, .identity = identity, .sport = p->sport };
	struct fqe_query_scratch *qs = fqe_query_scratch_get();
	struct fqe_refused_name *v;
	__u64 len;

	if (!qs || !fqe_event_recorded(identity, p->sport, now, FQE_REASON_DNS_NAME))
		return;
	v = &qs->refused;
	v->proto = p->proto;
	v->name_len = 0;
	len = qs->name_len - 1;
	/* a root-only name has no bytes; fqe_dns_read_qname fits any other in 256 */
	if ((v->flags & FQE_REFUSED_PARSED) && len < FQE_NAME_LEN) {
		asm volatile("%0 &= 0xff" : "+r"(len)); /* the verifier sees 1 <= len + 1 <= 256 */
		len += 1;
		if (bpf_skb_load_bytes(skb, qs->name_off, v->wire, len) == 0)
			v->name_len = len;
	}
	bpf_map_update_elem(&fqe_dns_refused, &k, v, BPF_ANY);
}

/*
 * What may follow the question: nothing, or (arcount 1) exactly one EDNS
 * OPT record (root owner name, type 41) that ends the message. Anything
 * else would ride along to the resolver unjudged.
 */
static __always_inline int fqe_dns_query_tail_ok(struct __sk_buff *skb, __u32 at, __u32 end, __u16 arcount)
{
	struct {
		__u8 root;
		__be16 type;
		__be16 class;
		__be32 ttl;
		__be16 rdlen;
	} __attribute__((packed)) opt;

	if (arcount == 0)
		return at == end;
	if (at + sizeof(opt) > end || bpf_skb_load_bytes(skb, at, &opt, sizeof(opt)) < 0)
		return 0;
	return opt.root == 0 && bpf_ntohs(opt.type) == FQE_DNS_TYPE_OPT &&
	       at + sizeof(opt) + bpf_ntohs(opt.rdlen) == end;
}

/*
 * DNS over TCP: is this segment exactly the next bytes of the pod's stream
 * to the resolver (from the resolver's SYN-ACK on), without urgent data?
 * Only such a segment is judged; an overlap, a hole, a stream the kernel
 * did not see begin, or urgent data is refused: the resolver would read
 * other bytes than the ones judged.
 */
static __always_inline int fqe_dns_tcp_in_order(const struct fqe_pkt *p, __u32 identity)
{
	struct fqe_ct_key k;
	struct fqe_dns_tcp *s;

	if (p->proto != IPPROTO_TCP)
		return 1;
	if (fqe_tcp_urgent(p))
		return 0;
	fqe_ct_key_of(&k, identity, p, 1);
	s = bpf_map_lookup_elem(&fqe_dns_tcp, &k);
	return s && s->next_seq == p->tcp_seq;
}

/* A judged segment passes: the stream moves past it. */
static __always_inline void fqe_dns_tcp_advance(const struct fqe_pkt *p, __u32 identity)
{
	struct fqe_ct_key k;
	struct fqe_dns_tcp *s;

	if (p->proto != IPPROTO_TCP)
		return;
	fqe_ct_key_of(&k, identity, p, 1);
	s = bpf_map_lookup_elem(&fqe_dns_tcp, &k);
	if (s)
		s->next_seq = p->tcp_seq + p->payload_len + !!(p->tcp_flags & FQE_TCP_FIN);
}

/*
 * The verdict on a query to a trusted resolver: FQE_REASON_NONE passes,
 * FQE_REASON_DNS_NAME refuses. The scratch keeps what
 * fqe_dns_remember_refused() and fqe_dns_refuse() need.
 */
static __always_inline __u8 fqe_dns_query_verdict(struct __sk_buff *skb, const struct fqe_pkt *p,
						  __u32 identity)
{
	struct fqe_query_scratch *qs = fqe_query_scratch_get();
	struct fqe_dns_hdr hdr;
	__u64 name_hash = 0;
	__u32 off, end;
	__be16 qtype;
	int refused = 0, msg;

	if (!qs)
		return FQE_REASON_DNS_NAME;
	qs->question_end = 0;
	qs->refused.flags = 0;
	qs->refused.qtype = 0;
	msg = fqe_dns_query_message(skb, p, &off, &end);
	if (msg == 0)
		return FQE_REASON_NONE;
	if (!fqe_dns_tcp_in_order(p, identity))
		goto refuse;
	if (msg < 0 || bpf_skb_load_bytes(skb, off, &hdr, sizeof(hdr)) < 0)
		goto refuse;
	qs->msg_off = off;
	qs->flags = bpf_ntohs(hdr.flags);
	if (qs->flags & (FQE_DNS_QR | FQE_DNS_OPCODE_MASK) || bpf_ntohs(hdr.qdcount) != 1 || hdr.ancount ||
	    hdr.nscount || bpf_ntohs(hdr.arcount) > 1)
		goto refuse;
	if (fqe_dns_read_qname(skb, off + FQE_DNS_HDR_LEN, end, &qs->nb, fqe_dns_hash_key(), 0) < 0)
		goto refuse;
	if (qs->nb.end + 4 > end || bpf_skb_load_bytes(skb, qs->nb.end, &qtype, 2) < 0)
		goto refuse;
	qs->question_end = qs->nb.end + 4;
	qs->name_off = off + FQE_DNS_HDR_LEN;
	qs->name_len = qs->nb.end - 1 - qs->name_off;
	qs->refused.flags = FQE_REFUSED_PARSED;
	qs->refused.qtype = bpf_ntohs(qtype);
	if (!fqe_dns_query_tail_ok(skb, qs->question_end, end, bpf_ntohs(hdr.arcount)))
		goto refuse; /* bytes after the question that are not one EDNS record */
	if (fqe_dns_match(&qs->nb, identity, &name_hash, &refused))
		return FQE_REASON_NONE;
	if (fqe_dns_in_cluster(&qs->nb))
		return FQE_REASON_NONE;
refuse:
	return FQE_REASON_DNS_NAME;
}

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
 * The reply's UDP or TCP checksum (p->proto): pseudo header, then the
 * segment of seg_len bytes at l4, copied into qs->seg (zero padded).
 */
static __always_inline int fqe_l4_csum(struct __sk_buff *skb, const struct fqe_pkt *p, __u32 l4,
				       __u32 seg_len, struct fqe_query_scratch *qs, __u16 *check)
{
	__u64 len = seg_len - sizeof(struct udphdr), padded;
	__s64 sum;

#pragma unroll
	for (int i = 0; i < FQE_DNS_SEG_MAX / 8; i++)
		((__u64 *)qs->seg)[i] = 0;
	if (seg_len < sizeof(struct udphdr) || len > 300)
		return -1;
	asm volatile("%0 &= 0x1ff" : "+r"(len)); /* the verifier sees 8 <= len + 8 <= 519 */
	len += sizeof(struct udphdr);
	if (bpf_skb_load_bytes(skb, l4, qs->seg, len) < 0)
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
	sum = bpf_csum_diff(NULL, 0, (__be32 *)qs->seg, padded, (__u32)sum);
	if (sum < 0)
		return -1;
	*check = fqe_csum_fold(sum);
	if (*check == 0 && p->proto == IPPROTO_UDP)
		*check = 0xffff; /* 0 means "no checksum" (IPv4) and is invalid for IPv6 */
	return 0;
}

/*
 * Turn the packet around, back to the pod: MACs and addresses swapped, the
 * IP length for an L4 segment of seg_len bytes. Only a plain header (IPv4
 * without options, IPv6 without extension headers) is turned around.
 */
static __always_inline int fqe_turn_around(struct __sk_buff *skb, const struct fqe_pkt *p, __u32 seg_len)
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

/* A refused UDP query becomes its own NXDOMAIN answer. */
static __always_inline int fqe_dns_nxdomain(struct __sk_buff *skb, const struct fqe_pkt *p,
					    struct fqe_query_scratch *qs, __u32 l4)
{
	struct udphdr uh = {};
	__u32 udp_len;
	__be16 dns[5];
	__u16 check;

	if (!qs->question_end || p->payload_off != l4 + sizeof(uh) || qs->msg_off != p->payload_off ||
	    qs->question_end <= qs->msg_off)
		return -1; /* no question to echo, or a header we do not turn around */
	udp_len = sizeof(uh) + qs->question_end - qs->msg_off;
	if (bpf_skb_change_tail(skb, qs->question_end, 0) < 0)
		return -1;
	/* DNS: a response, recursion available, NXDOMAIN, the question alone. */
	dns[0] = bpf_htons(FQE_DNS_QR | FQE_DNS_RA | (qs->flags & (FQE_DNS_RD | FQE_DNS_CD)) |
			   FQE_DNS_RCODE_NXDOMAIN);
	dns[1] = bpf_htons(1);
	dns[2] = 0;
	dns[3] = 0;
	dns[4] = 0;
	if (bpf_skb_store_bytes(skb, qs->msg_off + 2, dns, sizeof(dns), 0) < 0 ||
	    fqe_turn_around(skb, p, udp_len) < 0)
		return -1;
	uh.source = bpf_htons(p->dport);
	uh.dest = bpf_htons(p->sport);
	uh.len = bpf_htons(udp_len);
	if (bpf_skb_store_bytes(skb, l4, &uh, sizeof(uh), 0) < 0 ||
	    fqe_l4_csum(skb, p, l4, udp_len, qs, &check) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, l4 + offsetof(struct udphdr, check), &check, sizeof(check), 0);
}

/*
 * A refused TCP query ends its connection: the segment becomes a RST (with
 * ACK) from the resolver, in sequence, so the pod's stack closes at once.
 * The resolver never sees the segment; its half of the connection times out.
 */
static __always_inline int fqe_dns_reset(struct __sk_buff *skb, const struct fqe_pkt *p,
					 struct fqe_query_scratch *qs, __u32 l4)
{
	struct tcphdr th, rst = {};
	__u16 check;

	if (p->payload_off < l4 + sizeof(th) || bpf_skb_load_bytes(skb, l4, &th, sizeof(th)) < 0)
		return -1;
	rst.source = th.dest;
	rst.dest = th.source;
	rst.seq = th.ack_seq; /* what the pod expects from the resolver next */
	rst.ack_seq = bpf_htonl(bpf_ntohl(th.seq) + p->payload_len + th.syn + th.fin);
	rst.doff = sizeof(rst) / 4;
	rst.rst = 1;
	rst.ack = 1;
	if (bpf_skb_change_tail(skb, l4 + sizeof(rst), 0) < 0 || fqe_turn_around(skb, p, sizeof(rst)) < 0 ||
	    bpf_skb_store_bytes(skb, l4, &rst, sizeof(rst), 0) < 0 ||
	    fqe_l4_csum(skb, p, l4, sizeof(rst), qs, &check) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, l4 + offsetof(struct tcphdr, check), &check, sizeof(check), 0);
}

/*
 * Answer a refused query and send the answer back to the pod
 * (TC_ACT_REDIRECT to the egress of the interface it came in on): UDP gets
 * its NXDOMAIN, TCP a RST. What cannot be turned around (IPv4 options, IPv6
 * extension headers, a UDP message with no question to echo) is dropped.
 */
static __always_inline int fqe_dns_refuse(struct __sk_buff *skb, const struct fqe_pkt *p)
{
	struct fqe_query_scratch *qs = fqe_query_scratch_get();
	__u32 l4 = ETH_HLEN + (p->family == 4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr));
	int err;

	if (!qs)
		return TC_ACT_SHOT;
	if (p->proto == IPPROTO_UDP)
		err = fqe_dns_nxdomain(skb, p, qs, l4);
	else if (p->proto == IPPROTO_TCP)
		err = fqe_dns_reset(skb, p, qs, l4);
	else
		err = -1;
	return err < 0 ? TC_ACT_SHOT : bpf_redirect(skb->ifindex, 0);
}

#endif /* FQE_DNS_QUERY_H */
