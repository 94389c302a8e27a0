/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * DNS on the wire: the question name of a packet (read into a name buffer
 * and hashed: bpf/lib/name.h; its rule found: bpf/lib/name_match.h) for the
 * learner and the DNS query verdict, and the A/AAAA records of an answer
 * section for the learner. Bounded everywhere; anything it cannot parse
 * returns an error and is left to the agent.
 */
#ifndef FQE_DNS_H
#define FQE_DNS_H

#include "parse.h"
#include "name_match.h"

#define FQE_DNS_HDR_LEN	       12
/* Addresses learned from one answer (a power of two: slots are masked).
 * An answer with more address records has its first FQE_LEARN_MAX_ANSWERS
 * learned and is counted as left to the agent, which learns the rest. */
#define FQE_LEARN_MAX_ANSWERS  128
#define FQE_RR_NAME_MAX_LABELS 128 /* labels of an uncompressed owner name */
#define FQE_ANSWER_TOKENS      512 /* labels + records the answer walk may visit */

#define FQE_DNS_TYPE_A	       1
#define FQE_DNS_TYPE_CNAME     5
#define FQE_DNS_TYPE_AAAA      28
#define FQE_DNS_TYPE_OPT       41
#define FQE_DNS_CLASS_IN       1

/* Header flags */
#define FQE_DNS_QR	       0x8000
#define FQE_DNS_OPCODE_MASK    0x7800
#define FQE_DNS_RD	       0x0100
#define FQE_DNS_RA	       0x0080
#define FQE_DNS_CD	       0x0010
#define FQE_DNS_RCODE_NXDOMAIN 3

struct fqe_dns_hdr {
	__be16 id;
	__be16 flags;
	__be16 qdcount;
	__be16 ancount;
	__be16 nscount;
	__be16 arcount;
};

/* A query's question: where it lies in the packet (the DNS query verdict fills it, an NXDOMAIN echoes it). */
struct fqe_dns_question {
	__u32 msg_off;	    /* where the DNS message starts */
	__u32 question_end; /* offset after QTYPE and QCLASS; 0 = not parsed */
	__u32 name_off;	    /* where the question name starts */
	__u32 name_len;	    /* its wire length without the root label */
	__u16 flags;	    /* the query's header flags */
	__u16 pad[3];
};

struct fqe_dns_rr {
	__be16 type;
	__be16 class;
	__be32 ttl;
	__be16 rdlen;
} __attribute__((packed));

/* An answer being learned from, between the learner's stages (learner.bpf.c). */
struct fqe_learn_job {
	__u64 now;
	__u64 name_hash;
	__u64 grace_ns;
	struct fqe_query_key qk; /* the query it answers */
	__u32 identity;
	__u32 min_ttl_s;
	__u32 max_ttl_s;
	__u32 written;	   /* addresses written so far */
	__u32 unwritten;   /* ... of them not written (past the pod's share, or the map full) */
	__u32 ips_per_pod; /* the pod's share of fqe_allow */
	__u32 partial;
	__u8 proto;
	__u8 pad[3];
	struct fqe_policy_val rule; /* the rule the name matched (a copy) */
};

/* Per-CPU scratch space of the learner: too big for the stack. */
struct fqe_learn_scratch {
	struct fqe_name_buf nb; /* the question */
	/* the answer walk's place */
	__u32 off;
	__u32 end;
	__u32 n;       /* addresses collected */
	__u32 records; /* records left to read */
	__u32 labels;  /* labels of the current owner name so far */
	__u32 min_cname_ttl;
	__s32 result;  /* 0 fine, -1 cannot parse */
	__u32 partial; /* more address records than FQE_LEARN_MAX_ANSWERS */
	__u8 ips[FQE_LEARN_MAX_ANSWERS][16];
	__u32 ttls[FQE_LEARN_MAX_ANSWERS];
	struct fqe_allow_val allow; /* the entry being written */
	struct fqe_learn_job job;   /* what one stage of the learner hands the next */
};

/*
 * One label of a packet's (uncompressed) name per call: its length byte at
 * rev[pos], its bytes after it, and (with_dotted) a copy in dotted[].
 * Returns nonzero to stop.
 */
static __always_inline int fqe_qname_step(struct __sk_buff *skb, struct fqe_name_buf *nb, int with_dotted)
{
	__u32 off, len, len_minus_1, pos, d;
	__u8 byte;

	fqe_barrier();
	off = nb->off;
	if (off >= nb->end || bpf_skb_load_bytes(skb, off, &byte, 1) < 0)
		goto fail;
	if (byte == 0) {
		nb->off = off + 1;
		nb->result = 1;
		return 1;
	}
	len_minus_1 = byte - 1;
	if (len_minus_1 > 62)
		goto fail; /* compression or a reserved label type: the agent's */
	/* a mask the compiler may not drop: the verifier sees 1 <= len <= 64 */
	asm volatile("%0 &= 0x3f" : "+r"(len_minus_1));
	len = len_minus_1 + 1;
	if (nb->pos < len + 1 || off + 1 + len > nb->end)
		goto fail;
	pos = FQE_MASK(nb->pos - len - 1, FQE_DNS_WIRE_MAX - 1);
	nb->pos = pos;
	nb->rev[pos] = len;
	nb->starts[FQE_MASK(nb->nlabels, FQE_DNS_MAX_LABELS - 1)] = pos;
	nb->nlabels++;
	if (bpf_skb_load_bytes(skb, off + 1, &nb->rev[pos + 1], len) < 0)
		goto fail;
	if (with_dotted) {
		d = FQE_MASK(nb->d, FQE_DNS_WIRE_MAX - 1);
		if (d > 0)
			nb->dotted[d++] = '.';
		if (bpf_skb_load_bytes(skb, off + 1, &nb->dotted[FQE_MASK(d, FQE_DNS_WIRE_MAX - 1)], len) < 0)
			goto fail;
		nb->d = d + len;
	}
	nb->off = off + 1 + len;
	return 0;
fail:
	nb->result = -1;
	return 1;
}

/*
 * Read a packet's question name (no compression) at off into nb and hash
 * it. Returns 0, or -1 when it does not parse (the agent's, or refused).
 */
static __always_inline int fqe_dns_read_qname(struct __sk_buff *skb, __u32 off, __u32 end, struct fqe_name_buf *nb,
					      __u64 hash_key, int with_dotted)
{
	nb->off = off;
	nb->end = end;
	nb->pos = FQE_DNS_WIRE_MAX;
	nb->d = 0;
	nb->nlabels = 0;
	nb->result = 0;
	if (with_dotted) {
#pragma unroll
		for (int i = 0; i < FQE_DNS_WIRE_MAX / 8; i++)
			((__u64 *)nb->dotted)[i] = 0;
	}
	fqe_for(i, FQE_DNS_MAX_LABELS)
	{
		if (fqe_qname_step(skb, nb, with_dotted))
			break;
	}
	fqe_barrier();
	if (nb->result != 1 || nb->pos >= FQE_DNS_WIRE_MAX)
		return -1;
	nb->rev_pos = nb->pos;
	nb->end = nb->off;
	nb->dotted_len = nb->d;
	fqe_name_hash(nb, hash_key);
	return 0;
}

/* Lower-case dotted[] (dotted_len bytes) in place. */
static __always_inline void fqe_dns_lower_dotted(struct fqe_name_buf *nb)
{
	fqe_for(i, FQE_DNS_WIRE_MAX)
	{
		fqe_barrier();
		if (i >= FQE_READ(nb->dotted_len))
			break;
		nb->dotted[i] = fqe_name_lower(nb->dotted[i]);
	}
	fqe_barrier();
}

/*
 * One token of the answer section per call: an owner name's label, or (once
 * the owner name ends in a pointer or the root label) the record's fixed part
 * and data. No nested loops. Returns nonzero to stop.
 */
static __always_inline int fqe_answer_step(struct __sk_buff *skb, struct fqe_learn_scratch *s)
{
	struct fqe_dns_rr rr;
	__u32 off, slot;
	__u16 type, rdlen;
	__u32 ttl;
	__u8 len;

	fqe_barrier();
	off = s->off;
	if (s->records == 0)
		return 1;
	if (off >= s->end || bpf_skb_load_bytes(skb, off, &len, 1) < 0)
		goto fail;
	if ((len & 0xc0) == 0xc0) {
		off += 2; /* a pointer ends the owner name */
	} else if (len & 0xc0) {
		goto fail;
	} else if (len) {
		if (++s->labels > FQE_RR_NAME_MAX_LABELS)
			goto fail;
		s->off = off + 1 + len; /* a label: the owner name goes on */
		return 0;
	} else {
		off += 1; /* the root label */
	}
	if (off + sizeof(rr) > s->end || bpf_skb_load_bytes(skb, off, &rr, sizeof(rr)) < 0)
		goto fail;
	off += sizeof(rr);
	type = bpf_ntohs(rr.type);
	rdlen = bpf_ntohs(rr.rdlen);
	ttl = bpf_ntohl(rr.ttl);
	if (off + rdlen > s->end)
		goto fail;
	s->off = off + rdlen;
	s->labels = 0;
	s->records--;
	if (bpf_ntohs(rr.class) != FQE_DNS_CLASS_IN)
		return 0;
	if (type == FQE_DNS_TYPE_CNAME) {
		if (ttl < s->min_cname_ttl)
			s->min_cname_ttl = ttl;
		return 0;
	}
	if (type != FQE_DNS_TYPE_A && type != FQE_DNS_TYPE_AAAA)
		return 0;
	if (s->n >= FQE_LEARN_MAX_ANSWERS) {
		s->partial = 1; /* the scratch is full: the agent learns the rest */
		return 1;
	}
	slot = FQE_MASK(s->n, FQE_LEARN_MAX_ANSWERS - 1);
	if (type == FQE_DNS_TYPE_A) {
		if (rdlen != 4)
			goto fail;
		*(__u64 *)&s->ips[slot][0] = 0;
		*(__u32 *)&s->ips[slot][8] = bpf_htonl(0xffff);
		if (bpf_skb_load_bytes(skb, off, &s->ips[slot][12], 4) < 0)
			goto fail;
	} else {
		if (rdlen != 16 || bpf_skb_load_bytes(skb, off, s->ips[slot], 16) < 0)
			goto fail;
	}
	s->ttls[slot] = ttl;
	s->n++;
	return 0;
fail:
	s->result = -1;
	return 1;
}

/*
 * Collect the A/AAAA records of the answer section (at most
 * FQE_LEARN_MAX_ANSWERS) into scratch; s->min_cname_ttl gets the smallest
 * CNAME TTL seen. Returns how many addresses, or -1 when the section does not
 * parse (the agent will judge the answer). *partial is set when records were
 * left unread (more addresses than the scratch holds, or more tokens than the
 * walk may visit): the addresses collected are still good, the agent adds the
 * rest.
 */
static __always_inline int fqe_dns_read_answers(struct __sk_buff *skb, __u32 off, __u32 end, __u16 ancount,
						struct fqe_learn_scratch *s, int *partial)
{
	s->off = off;
	s->end = end;
	s->records = ancount;
	s->n = 0;
	s->labels = 0;
	s->min_cname_ttl = 0xffffffff;
	s->result = 0;
	s->partial = 0;
	fqe_for(i, FQE_ANSWER_TOKENS)
	{
		if (fqe_answer_step(skb, s))
			break;
	}
	fqe_barrier();
	*partial = s->partial || s->records > 0;
	return s->result < 0 ? -1 : (int)s->n;
}

#endif /* FQE_DNS_H */
