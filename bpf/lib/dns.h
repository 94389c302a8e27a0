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
#define FQE_DNS_MAX_LABELS 128 /* a power of two: slots are masked */
#define FQE_DNS_WIRE_MAX 256 /* a wire-format name is at most 255 bytes */
/* Addresses learned from one answer (a power of two: slots are masked).
 * An answer with more address records has its first FQE_LEARN_MAX_ANSWERS
 * learned and is counted as left to the agent, which learns the rest. */
#define FQE_LEARN_MAX_ANSWERS 128
#define FQE_RR_NAME_MAX_LABELS 128 /* labels of an uncompressed owner name */
#define FQE_ANSWER_TOKENS 512 /* labels + records the answer walk may visit */
#define FQE_FNV64_BASIS 0xcbf29ce484222325ULL
#define FQE_FNV64_PRIME 0x100000001b3ULL

#define FQE_DNS_TYPE_A 1
#define FQE_DNS_TYPE_CNAME 5
#define FQE_DNS_TYPE_AAAA 28
#define FQE_DNS_TYPE_OPT 41
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

/*
 * A name being judged, labels right to left (the hash's order). The loops
 * below are bounded loops the verifier walks once per iteration (kernel 5.3+;
 * bpf_loop() would need 5.17): each keeps its state here, in per-CPU map
 * memory, and branches little, so that every iteration's paths meet in one
 * verifier state and the walk stays far below the verifier's limits on
 * every kernel from 5.10 on.
 */
struct fqe_name_buf {
	__u32 rev_pos; /* the name occupies rev[rev_pos..FQE_DNS_WIRE_MAX) */
	__u32 nlabels; /* labels, leftmost first in starts[] */
	__u32 end; /* offset after the name's root label (a packet's name) */
	__u32 dotted_len; /* bytes of dotted[] in use */
	/* the reader's place in the packet */
	__u32 off;
	__u32 pos;
	__u32 d;
	__s32 result; /* 0 running, 1 done, -1 cannot parse */
	/* loop bounds and results, in memory (bpf/lib/parse.h, fqe_for) */
	__u32 total; /* bytes of the name in rev[] */
	__u32 len; /* a suffix's length, a compare's length */
	__u8 rev[2 * FQE_DNS_WIRE_MAX]; /* length byte, label bytes; rightmost label first */
	__u8 low[FQE_DNS_WIRE_MAX + 8]; /* rev[rev_pos..] lower-cased, from index 0 (word compares) */
	__u64 hash_at[FQE_DNS_WIRE_MAX]; /* keyed hash of low[0..j] */
	__u8 starts[FQE_DNS_MAX_LABELS]; /* where label i (leftmost first) begins in rev[] */
	char dotted[FQE_NAME_LEN + 64]; /* the name dotted, as sent (a packet's name) */
};

/* An answer being learned from, between the learner's stages (learner.bpf.c). */
struct fqe_learn_job {
	__u64 now;
	__u64 name_hash;
	__u64 grace_ns;
	struct fqe_query_key qk; /* the query it answers */
	__u32 identity;
	__u32 min_ttl_s;
	__u32 max_ttl_s;
	__u32 written; /* addresses written so far */
	__u32 unwritten; /* ... of them not written (past the pod's share, or the map full) */
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
	__u32 n; /* addresses collected */
	__u32 records; /* records left to read */
	__u32 labels; /* labels of the current owner name so far */
	__u32 min_cname_ttl;
	__s32 result; /* 0 fine, -1 cannot parse */
	__u32 partial; /* more address records than FQE_LEARN_MAX_ANSWERS */
	__u8 ips[FQE_LEARN_MAX_ANSWERS][16];
	__u32 ttls[FQE_LEARN_MAX_ANSWERS];
	struct fqe_allow_val allow; /* the entry being written */
	struct fqe_learn_job job; /* what one stage of the learner hands the next */
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

static __always_inline __u8 fqe_lower(__u8 c)
{
	return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

/* fqe_lower() without a branch: the hash walk runs it on every byte. */
static __always_inline __u8 fqe_lower_nb(__u8 c)
{
	__s32 x = (__s32)c - 'A';
	/* sign bit clear exactly when 0 <= x <= 25 */
	__u32 upper = ~(__u32)((x | (25 - x)) >> 31) & 1;

	return c | (upper << 5);
}

/*
 * Hash the name in rev[] (set rev_pos, nlabels and starts[] first): low[]
 * gets its bytes lower-cased, hash_at[j] the keyed FNV-1a of low[0..j]. The
 * length bytes (1..63) lie below 'A', so lower-casing leaves them alone.
 */
static __always_inline void fqe_name_hash(struct fqe_name_buf *nb, __u64 hash_key)
{
	__u64 h = FQE_FNV64_BASIS ^ hash_key;

	nb->total = FQE_DNS_WIRE_MAX - nb->rev_pos;
	fqe_for (j, FQE_DNS_WIRE_MAX) {
		__u32 idx;
		__u8 b;

		fqe_barrier();
		if (j >= FQE_READ(nb->total))
			break;
		idx = FQE_MASK(FQE_READ(nb->rev_pos) + j, FQE_DNS_WIRE_MAX - 1);
		b = fqe_lower_nb(nb->rev[idx]);
		nb->low[j] = b;
		h = (h ^ b) * FQE_FNV64_PRIME;
		nb->hash_at[j] = h;
	}
	fqe_barrier();
	/* zeros after the name: a word compare reads up to 7 bytes past it */
	*(__u64 *)&nb->low[FQE_MASK(FQE_READ(nb->total), FQE_DNS_WIRE_MAX - 1)] = 0;
}

static __always_inline __u64 fqe_hash_out(__u64 h)
{
	return h ? h : 1; /* 0 means "no name" */
}

/* The keyed hash of the name's rightmost `len` bytes of rev[] (1 <= len <= 255). */
static __always_inline __u64 fqe_suffix_hash(const struct fqe_name_buf *nb, __u32 len)
{
	return fqe_hash_out(nb->hash_at[FQE_MASK(len - 1, FQE_DNS_WIRE_MAX - 1)]);
}


/*
 * Length in rev[] of the proper suffix that drops the leftmost k+1 labels
 * (k = 0: every label but the leftmost; k = nlabels - 2: the rightmost).
 */
static __always_inline __u32 fqe_suffix_len(const struct fqe_name_buf *nb, __u32 k)
{
	return nb->starts[FQE_MASK(k, FQE_DNS_MAX_LABELS - 1)] - nb->rev_pos;
}

/*
 * The fact behind a hash hit: the first nb->len bytes of the name (its
 * rightmost labels, lower case) equal the rule's name, and the rule names
 * exactly that many bytes. Compared eight bytes at a time.
 */
static __always_inline int fqe_name_is(struct fqe_name_buf *nb, const struct fqe_policy_val *rule)
{
	__u32 len = nb->len;

	if (len == 0 || rule->name_len != len || len > FQE_NAME_LEN)
		return 0;
	fqe_for (w, FQE_NAME_LEN / 8) {
		__u32 at = w * 8;
		__u64 diff, left;

		fqe_barrier();
		left = FQE_READ(nb->len) - at; /* as unsigned: huge once past the end */
		if (left > FQE_NAME_LEN)
			break;
		diff = *(const __u64 *)&nb->low[at] ^ *(const __u64 *)&rule->name[at];
		if (left < 8)
			diff &= (1ULL << (left * 8)) - 1; /* little-endian: the first bytes */
		if (diff)
			return 0;
	}
	return 1;
}

/*
 * Find the rule for the hashed name: the whole name as FQE_POLICY_EXACT,
 * else its proper suffixes as FQE_POLICY_WILDCARD, the shortest first. A hit
 * counts only when the real bytes match: the whole name for an exact rule, a
 * proper suffix on a label boundary for a wildcard. Returns the rule or
 * NULL; *name_hash is the whole name's hash; *refused is set when a hash hit
 * but the name did not (a collision, or an attack).
 */
static __always_inline const struct fqe_policy_val *
fqe_dns_match(struct fqe_name_buf *nb, __u32 identity, __u64 *name_hash, int *refused)
{
	struct fqe_policy_key k = { .identity = identity, .kind = FQE_POLICY_EXACT };
	const struct fqe_policy_val *rule = NULL;

	if (nb->total == 0 || nb->total > FQE_DNS_WIRE_MAX - 1)
		return NULL;
	k.hash = fqe_suffix_hash(nb, nb->total);
	*name_hash = k.hash;
	rule = bpf_map_lookup_elem(&fqe_policy, &k);
	if (rule) {
		nb->len = nb->total;
		if (fqe_name_is(nb, rule))
			return rule;
		*refused = 1;
	}
	k.kind = FQE_POLICY_WILDCARD;
	rule = NULL;
	fqe_for (i, FQE_DNS_MAX_LABELS - 1) {
		__u32 labels;

		fqe_barrier();
		labels = FQE_READ(nb->nlabels);
		if (i + 1 >= labels)
			break;
		nb->len = fqe_suffix_len(nb, labels - 2 - i);
		k.hash = fqe_suffix_hash(nb, nb->len);
		rule = bpf_map_lookup_elem(&fqe_policy, &k);
		if (rule)
			break;
	}
	fqe_barrier();
	if (!rule)
		return NULL;
	/* len < total: a boundary inside the name, so a proper suffix */
	if (nb->len < nb->total && fqe_name_is(nb, rule))
		return rule;
	*refused = 1;
	return NULL;
}

/*
 * Read a packet's question name (no compression) at off into nb and hash
 * it. Returns 0, or -1 when it does not parse (the agent's, or refused).
 */
static __always_inline int fqe_dns_read_qname(struct __sk_buff *skb, __u32 off, __u32 end,
					      struct fqe_name_buf *nb, __u64 hash_key, int with_dotted)
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
	fqe_for (i, FQE_DNS_MAX_LABELS) {
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
	fqe_for (i, FQE_DNS_WIRE_MAX) {
		fqe_barrier();
		if (i >= FQE_READ(nb->dotted_len))
			break;
		nb->dotted[i] = fqe_lower_nb(nb->dotted[i]);
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
static __always_inline int fqe_dns_read_answers(struct __sk_buff *skb, __u32 off, __u32 end,
						__u16 ancount, struct fqe_learn_scratch *s, int *partial)
{
	s->off = off;
	s->end = end;
	s->records = ancount;
	s->n = 0;
	s->labels = 0;
	s->min_cname_ttl = 0xffffffff;
	s->result = 0;
	s->partial = 0;
	fqe_for (i, FQE_ANSWER_TOKENS) {
		if (fqe_answer_step(skb, s))
			break;
	}
	fqe_barrier();
	*partial = s->partial || s->records > 0;
	return s->result < 0 ? -1 : (int)s->n;
}

#endif /* FQE_DNS_H */
