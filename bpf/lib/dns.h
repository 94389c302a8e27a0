/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The inline learner's DNS parser: the question name (hashed as
 * agent/policy/name-hash.ts does: FNV-1a 64, started from the basis XOR the
 * node's secret key, over the lower-cased wire labels from the rightmost
 * label to the leftmost, so one pass yields every suffix hash) and the
 * A/AAAA records of the answer section. The hash only finds a rule: a rule
 * matches when the question's real name bytes equal the rule's name (exact)
 * or end in it on a label boundary (wildcard). Bounded everywhere; anything
 * it cannot parse returns an error and is left to the agent.
 */
#ifndef FQE_DNS_H
#define FQE_DNS_H

#include "parse.h"

#define FQE_DNS_HDR_LEN 12
#define FQE_DNS_MAX_LABELS 128
#define FQE_DNS_WIRE_MAX 256 /* a wire-format name is at most 255 bytes */
/* Addresses learned from one answer (a power of two: slots are masked).
 * An answer with more address records has its first FQE_LEARN_MAX_ANSWERS
 * learned and is counted as left to the agent, which learns the rest. */
#define FQE_LEARN_MAX_ANSWERS 128
#define FQE_RR_NAME_MAX_LABELS 128 /* labels of an uncompressed owner name */
#define FQE_ANSWER_TOKENS 4096 /* labels + records the answer walk may visit */
#define FQE_FNV64_BASIS 0xcbf29ce484222325ULL
#define FQE_FNV64_PRIME 0x100000001b3ULL

#define FQE_DNS_TYPE_A 1
#define FQE_DNS_TYPE_CNAME 5
#define FQE_DNS_TYPE_AAAA 28
#define FQE_DNS_CLASS_IN 1

struct fqe_dns_hdr {
	__be16 id;
	__be16 flags;
	__be16 qdcount;
	__be16 ancount;
	__be16 nscount;
	__be16 arcount;
};

struct fqe_dns_rr {
	__be16 type;
	__be16 class;
	__be32 ttl;
	__be16 rdlen;
} __attribute__((packed));

struct fqe_qname {
	__u32 end; /* offset after the name's root label */
	__u32 rev_pos; /* the name occupies rev[rev_pos..FQE_DNS_WIRE_MAX) */
	__u32 dotted_len;
};

/* Per-CPU scratch space: too big for the stack. */
struct fqe_learn_scratch {
	struct fqe_qname q; /* where the question name lies */
	__u8 rev[2 * FQE_DNS_WIRE_MAX]; /* labels right to left: hashing order */
	__u8 is_start[2 * FQE_DNS_WIRE_MAX]; /* 1 where rev[] holds a length byte */
	char dotted[FQE_NAME_LEN + 64]; /* lower-case dotted name, NUL padded */
	__u8 ips[FQE_LEARN_MAX_ANSWERS][16];
	__u32 ttls[FQE_LEARN_MAX_ANSWERS];
};

/*
 * The loops below run under bpf_loop(): each callback is verified once,
 * which keeps the learner far below the verifier's complexity limit.
 * Callbacks return 0 to go on, 1 to stop; `result` says how it ended.
 */

struct fqe_qname_ctx {
	struct __sk_buff *skb;
	struct fqe_learn_scratch *s;
	__u32 off;
	__u32 end;
	__u32 pos;
	__u32 d;
	int result; /* 0 running, 1 done, -1 cannot parse */
};

static long fqe_qname_step(__u64 i, void *data)
{
	struct fqe_qname_ctx *c = data;
	struct fqe_learn_scratch *s = c->s;
	__u32 len, len_minus_1, pos, d;
	__u8 byte;

	if (c->off >= c->end || bpf_skb_load_bytes(c->skb, c->off, &byte, 1) < 0)
		goto fail;
	if (byte == 0) {
		c->off += 1;
		c->result = 1;
		return 1;
	}
	/* One comparison on one register, so the verifier sees 1 <= len <= 63. */
	len_minus_1 = byte - 1;
	asm volatile("" : "+r"(len_minus_1));
	if (len_minus_1 > 62)
		goto fail; /* compression or reserved label type: the agent's */
	len = len_minus_1 + 1;
	if (c->pos < len + 1 || c->off + 1 + len > c->end)
		goto fail;
	pos = (c->pos - len - 1) & (FQE_DNS_WIRE_MAX - 1);
	c->pos = pos;
	s->rev[pos] = len;
	s->is_start[pos] = 1;
	if (bpf_skb_load_bytes(c->skb, c->off + 1, &s->rev[pos + 1], len) < 0)
		goto fail;
	d = c->d & (FQE_DNS_WIRE_MAX - 1);
	if (d > 0)
		s->dotted[d++] = '.';
	if (bpf_skb_load_bytes(c->skb, c->off + 1, &s->dotted[d & (FQE_DNS_WIRE_MAX - 1)], len) < 0)
		goto fail;
	c->d = d + len;
	c->off += 1 + len;
	return 0;
fail:
	c->result = -1;
	return 1;
}

/* Copy the question name (no compression) into the scratch buffers. */
static __always_inline int fqe_dns_read_qname(struct __sk_buff *skb, __u32 off, __u32 end,
					      struct fqe_learn_scratch *s, struct fqe_qname *q)
{
	struct fqe_qname_ctx c = { .skb = skb, .s = s, .off = off, .end = end, .pos = FQE_DNS_WIRE_MAX };

#pragma unroll
	for (int i = 0; i < FQE_DNS_WIRE_MAX / 8; i++) {
		((__u64 *)s->is_start)[i] = 0;
		((__u64 *)s->dotted)[i] = 0;
	}
	bpf_loop(FQE_DNS_MAX_LABELS, fqe_qname_step, &c, 0);
	if (c.result != 1)
		return -1;
	q->end = c.off;
	q->rev_pos = c.pos;
	q->dotted_len = c.d;
	return 0;
}

static __always_inline __u8 fqe_lower(__u8 c)
{
	return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

static __always_inline __u64 fqe_hash_out(__u64 h)
{
	return h ? h : 1; /* 0 means "no name" */
}

struct fqe_match_ctx {
	struct fqe_learn_scratch *s;
	__u32 rev_pos;
	__u32 identity;
	__u64 h;
	__u64 name_hash; /* the whole name's hash, once reached */
	__u64 wild_hash; /* the first suffix with a wildcard rule */
	__u32 wild_len; /* that suffix's length in rev[] bytes */
	int differ; /* the name comparison: set when a byte differs */
	const struct fqe_policy_val *rule; /* the rule being compared */
};

static long fqe_match_step(__u64 j, void *data)
{
	struct fqe_match_ctx *c = data;
	struct fqe_policy_key k = { .identity = c->identity, .kind = FQE_POLICY_WILDCARD };
	__u32 idx = c->rev_pos + (__u32)j;
	__u32 next;
	__u8 b;

	if (idx >= FQE_DNS_WIRE_MAX)
		return 1;
	/* masks the compiler may not drop: the verifier needs them */
	asm volatile("%0 &= 0xff" : "+r"(idx));
	next = idx + 1;
	asm volatile("%0 &= 0x1ff" : "+r"(next));
	b = c->s->rev[idx];
	if (!c->s->is_start[idx])
		b = fqe_lower(b);
	c->h = (c->h ^ b) * FQE_FNV64_PRIME;
	if (next == FQE_DNS_WIRE_MAX) {
		c->name_hash = fqe_hash_out(c->h);
		return 1;
	}
	if (c->s->is_start[next] && !c->wild_hash) {
		k.hash = fqe_hash_out(c->h);
		if (bpf_map_lookup_elem(&fqe_policy, &k)) {
			c->wild_hash = k.hash;
			c->wild_len = (__u32)j + 1;
		}
	}
	return 0;
}

static long fqe_cmp_step(__u64 j, void *data)
{
	struct fqe_match_ctx *c = data;
	__u32 idx = c->rev_pos + (__u32)j;
	__u32 at = (__u32)j;

	if (idx >= FQE_DNS_WIRE_MAX || at >= FQE_NAME_LEN) {
		c->differ = 1;
		return 1;
	}
	asm volatile("%0 &= 0xff" : "+r"(idx));
	asm volatile("%0 &= 0xff" : "+r"(at));
	/* Length bytes are 1..63, below 'A': lower-casing leaves them alone. */
	if (fqe_lower(c->s->rev[idx]) != c->rule->name[at]) {
		c->differ = 1;
		return 1;
	}
	return 0;
}

/*
 * The fact behind a hash hit: the first `len` bytes of the question's rev[]
 * (its rightmost labels) equal the rule's name, and the rule names exactly
 * `len` bytes. The caller says which `len` the rule must cover; c is the
 * match walk's context (scratch, rev_pos), reused to keep the stack small.
 */
static __always_inline int fqe_dns_name_is(struct fqe_match_ctx *c,
					   const struct fqe_policy_val *rule, __u32 len)
{
	if (len == 0 || rule->name_len != len || len > FQE_NAME_LEN)
		return 0;
	c->rule = rule;
	c->differ = 0;
	bpf_loop(len, fqe_cmp_step, c, 0);
	return !c->differ;
}

/*
 * Hash the name in one right-to-left pass; at each label boundary look the
 * suffix up in the pod's policy as FQE_POLICY_WILDCARD, and the whole name
 * as FQE_POLICY_EXACT. A hit counts only when the real bytes match: the
 * whole name for an exact rule, a proper suffix on a label boundary for a
 * wildcard. Returns the matching rule (exact first) or NULL; *refused is
 * set when a hash hit but the name did not (a collision, or an attack).
 */
static __always_inline const struct fqe_policy_val *
fqe_dns_match(struct fqe_learn_scratch *s, const struct fqe_qname *q, __u32 identity,
	      __u64 hash_key, __u64 *name_hash, int *refused)
{
	struct fqe_match_ctx c = {
		.s = s, .rev_pos = q->rev_pos, .identity = identity, .h = FQE_FNV64_BASIS ^ hash_key,
	};
	struct fqe_policy_key k = { .identity = identity, .kind = FQE_POLICY_EXACT };
	const struct fqe_policy_val *rule;
	__u32 total;

	bpf_loop(FQE_DNS_WIRE_MAX, fqe_match_step, &c, 0);
	if (!c.name_hash || q->rev_pos >= FQE_DNS_WIRE_MAX)
		return NULL;
	total = FQE_DNS_WIRE_MAX - q->rev_pos;
	*name_hash = c.name_hash;
	k.hash = c.name_hash;
	rule = bpf_map_lookup_elem(&fqe_policy, &k);
	if (rule) {
		if (fqe_dns_name_is(&c, rule, total))
			return rule;
		*refused = 1;
	}
	if (!c.wild_hash)
		return NULL;
	k.kind = FQE_POLICY_WILDCARD;
	k.hash = c.wild_hash;
	rule = bpf_map_lookup_elem(&fqe_policy, &k);
	/* wild_len < total: a boundary inside the name, so a proper suffix */
	if (rule && c.wild_len < total && fqe_dns_name_is(&c, rule, c.wild_len))
		return rule;
	if (rule)
		*refused = 1;
	return NULL;
}

struct fqe_lower_ctx {
	struct fqe_learn_scratch *s;
};

static long fqe_lower_step(__u64 i, void *data)
{
	struct fqe_lower_ctx *c = data;
	__u32 at = (__u32)i & (FQE_DNS_WIRE_MAX - 1);

	c->s->dotted[at] = fqe_lower(c->s->dotted[at]);
	return 0;
}

static __always_inline void fqe_dns_lower_dotted(struct fqe_learn_scratch *s, __u32 len)
{
	struct fqe_lower_ctx c = { .s = s };

	bpf_loop(len < FQE_DNS_WIRE_MAX ? len : FQE_DNS_WIRE_MAX, fqe_lower_step, &c, 0);
}

struct fqe_answers_ctx {
	struct __sk_buff *skb;
	struct fqe_learn_scratch *s;
	__u32 off;
	__u32 end;
	__u32 n; /* addresses collected */
	__u32 records; /* records left to read */
	__u32 labels; /* labels of the current owner name so far */
	__u32 in_rr; /* 0: at an owner name label, 1: at the fixed part of a record */
	__u32 min_cname_ttl;
	int result; /* 0 fine, -1 cannot parse */
	int partial; /* more address records than FQE_LEARN_MAX_ANSWERS */
};

/*
 * One token of the answer section per call: a label (or pointer, or root)
 * of an owner name, or a record's fixed part and data. No nested loops.
 */
static long fqe_answer_step(__u64 i, void *data)
{
	struct fqe_answers_ctx *c = data;
	struct fqe_dns_rr rr;
	__u32 off = c->off;
	__u16 type, rdlen;
	__u32 ttl, slot;
	__u8 len;

	if (c->records == 0)
		return 1;
	if (!c->in_rr) {
		if (off >= c->end || bpf_skb_load_bytes(c->skb, off, &len, 1) < 0)
			goto fail;
		if ((len & 0xc0) == 0xc0) {
			c->off = off + 2;
			c->in_rr = 1;
		} else if (len & 0xc0) {
			goto fail;
		} else {
			c->off = off + 1 + len;
			if (len == 0)
				c->in_rr = 1;
			else if (++c->labels > FQE_RR_NAME_MAX_LABELS)
				goto fail;
		}
		return 0;
	}
	if (off + sizeof(rr) > c->end || bpf_skb_load_bytes(c->skb, off, &rr, sizeof(rr)) < 0)
		goto fail;
	off += sizeof(rr);
	type = bpf_ntohs(rr.type);
	rdlen = bpf_ntohs(rr.rdlen);
	ttl = bpf_ntohl(rr.ttl);
	if (off + rdlen > c->end)
		goto fail;
	c->off = off + rdlen;
	c->in_rr = 0;
	c->labels = 0;
	c->records--;
	if (bpf_ntohs(rr.class) != FQE_DNS_CLASS_IN)
		return 0;
	if ((type == FQE_DNS_TYPE_A || type == FQE_DNS_TYPE_AAAA) && c->n >= FQE_LEARN_MAX_ANSWERS) {
		c->partial = 1; /* the scratch is full: the agent learns the rest */
		return 1;
	}
	slot = c->n & (FQE_LEARN_MAX_ANSWERS - 1);
	if (type == FQE_DNS_TYPE_A) {
		if (rdlen != 4)
			goto fail;
		__builtin_memset(c->s->ips[slot], 0, 10);
		c->s->ips[slot][10] = 0xff;
		c->s->ips[slot][11] = 0xff;
		if (bpf_skb_load_bytes(c->skb, off, &c->s->ips[slot][12], 4) < 0)
			goto fail;
	} else if (type == FQE_DNS_TYPE_AAAA) {
		if (rdlen != 16)
			goto fail;
		if (bpf_skb_load_bytes(c->skb, off, c->s->ips[slot], 16) < 0)
			goto fail;
	} else {
		if (type == FQE_DNS_TYPE_CNAME && ttl < c->min_cname_ttl)
			c->min_cname_ttl = ttl;
		return 0;
	}
	c->s->ttls[slot] = ttl;
	c->n++;
	return 0;
fail:
	c->result = -1;
	return 1;
}

/*
 * Collect the A/AAAA records of the answer section (at most
 * FQE_LEARN_MAX_ANSWERS) into scratch; *min_cname_ttl gets the smallest
 * CNAME TTL seen. Returns how many addresses, or -1 when the section does not
 * parse (the agent will judge the answer). *partial is set when records were
 * left unread (more addresses than the scratch holds, or more tokens than the
 * walk may visit): the addresses collected are still good, the agent adds the
 * rest.
 */
static __always_inline int fqe_dns_read_answers(struct __sk_buff *skb, __u32 off, __u32 end,
						__u16 ancount, struct fqe_learn_scratch *s,
						__u32 *min_cname_ttl, int *partial)
{
	struct fqe_answers_ctx c = {
		.skb = skb, .s = s, .off = off, .end = end, .records = ancount, .min_cname_ttl = 0xffffffff,
	};

	bpf_loop(FQE_ANSWER_TOKENS, fqe_answer_step, &c, 0);
	*min_cname_ttl = c.min_cname_ttl;
	*partial = c.partial || c.records > 0;
	return c.result < 0 ? -1 : (int)c.n;
}

#endif /* FQE_DNS_H */
