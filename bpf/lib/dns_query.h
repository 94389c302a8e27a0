/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * DNS queries are policy: the enforcer's judgement of a query an enforced
 * pod sends to a trusted resolver, and the NXDOMAIN it answers in place when
 * the query is refused.
 *
 * A query passes only when it is one plain question (QR 0, opcode 0, one
 * question, no answer or authority records, at most one additional record:
 * EDNS), its name uncompressed, and that name is one the pod's rules allow
 * (the learner's matching: bpf/lib/name_match.h, real bytes compared after
 * the keyed hash) or lies under one of the cluster's domains (fqe_cluster_domains,
 * compared the same way). Over TCP the segment must hold exactly one whole
 * message after its length prefix; a segment without payload (handshake,
 * ACK, FIN) carries no query and passes. Anything else is refused: fail
 * closed.
 *
 * A refused UDP query becomes its own NXDOMAIN answer, a refused TCP
 * segment a RST, sent back to the pod (bpf/lib/reply.h). The resolver never
 * sees either.
 */
#ifndef FQE_DNS_QUERY_H
#define FQE_DNS_QUERY_H

#include "dns.h"
#include "conntrack.h"
#include "report.h"
#include "reply.h"
#include "scratch.h"

/*
 * Where the query's DNS message lies: 1 with off and end set, 0 when the
 * packet carries no DNS data (a TCP segment without payload), -1 when it is
 * not exactly one message (refused).
 */
static __always_inline int fqe_dns_query_message(struct __sk_buff *skb, const struct fqe_pkt *p, __u32 *off, __u32 *end)
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

/*
 * Keep the name a refused query asked for, keyed like its event, when the
 * event was recorded (so a flood of refusals cannot push out the names of
 * the events egressctl shows). Call after fqe_report(), before the reply
 * rewrites the packet.
 */
static __always_inline void fqe_dns_remember_refused(struct __sk_buff *skb, const struct fqe_pkt *p, __u32 identity,
						     __u64 now)
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
	len = qs->q.name_len - 1;
	/* a root-only name has no bytes; fqe_dns_read_qname fits any other in 256 */
	if ((v->flags & FQE_REFUSED_PARSED) && len < FQE_NAME_LEN) {
		asm volatile("%0 &= 0xff" : "+r"(len)); /* the verifier sees 1 <= len + 1 <= 256 */
		len += 1;
		if (bpf_skb_load_bytes(skb, qs->q.name_off, v->wire, len) == 0)
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
static __always_inline __u8 fqe_dns_query_verdict(struct __sk_buff *skb, const struct fqe_pkt *p, __u32 identity)
{
	struct fqe_query_scratch *qs = fqe_query_scratch_get();
	struct fqe_dns_hdr hdr;
	__u64 name_hash = 0;
	__u32 off, end;
	__be16 qtype;
	int refused = 0, msg;

	if (!qs)
		return FQE_REASON_DNS_NAME;
	qs->q.question_end = 0;
	qs->refused.flags = 0;
	qs->refused.qtype = 0;
	msg = fqe_dns_query_message(skb, p, &off, &end);
	if (msg == 0)
		return FQE_REASON_NONE;
	if (!fqe_dns_tcp_in_order(p, identity))
		goto refuse;
	if (msg < 0 || bpf_skb_load_bytes(skb, off, &hdr, sizeof(hdr)) < 0)
		goto refuse;
	qs->q.msg_off = off;
	qs->q.flags = bpf_ntohs(hdr.flags);
	if (qs->q.flags & (FQE_DNS_QR | FQE_DNS_OPCODE_MASK) || bpf_ntohs(hdr.qdcount) != 1 || hdr.ancount ||
	    hdr.nscount || bpf_ntohs(hdr.arcount) > 1)
		goto refuse;
	if (fqe_dns_read_qname(skb, off + FQE_DNS_HDR_LEN, end, &qs->nb, fqe_name_hash_key(), 0) < 0)
		goto refuse;
	if (qs->nb.end + 4 > end || bpf_skb_load_bytes(skb, qs->nb.end, &qtype, 2) < 0)
		goto refuse;
	qs->q.question_end = qs->nb.end + 4;
	qs->q.name_off = off + FQE_DNS_HDR_LEN;
	qs->q.name_len = qs->nb.end - 1 - qs->q.name_off;
	qs->refused.flags = FQE_REFUSED_PARSED;
	qs->refused.qtype = bpf_ntohs(qtype);
	if (!fqe_dns_query_tail_ok(skb, qs->q.question_end, end, bpf_ntohs(hdr.arcount)))
		goto refuse; /* bytes after the question that are not one EDNS record */
	if (fqe_name_rule(&qs->nb, identity, &name_hash, &refused))
		return FQE_REASON_NONE;
	if (fqe_name_in_cluster(&qs->nb))
		return FQE_REASON_NONE;
refuse:
	return FQE_REASON_DNS_NAME;
}

/*
 * Answer a refused query and send the answer back to the pod: UDP gets its
 * NXDOMAIN, TCP a RST (bpf/lib/reply.h). What cannot be turned around (IPv4
 * options, IPv6 extension headers, a UDP message with no question to echo)
 * is dropped.
 */
static __always_inline int fqe_dns_refuse(struct __sk_buff *skb, const struct fqe_pkt *p)
{
	struct fqe_query_scratch *qs = fqe_query_scratch_get();
	__u32 l4 = fqe_reply_l4(p);
	int err;

	if (!qs)
		return TC_ACT_SHOT;
	if (p->proto == IPPROTO_UDP)
		err = fqe_reply_nxdomain(skb, p, l4, &qs->q, qs->seg);
	else if (p->proto == IPPROTO_TCP)
		err = fqe_reply_rst(skb, p, l4, qs->seg);
	else
		err = -1;
	return fqe_reply_send(skb, err);
}

#endif /* FQE_DNS_QUERY_H */
