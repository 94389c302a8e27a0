/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * A DNS name as the datapath judges it, one implementation for the learner
 * (bpf/lib/dns.h), the DNS query verdict (bpf/lib/dns_query.h) and the TLS
 * check (bpf/lib/tls.h). Pure: no maps, no helpers (bpf/tests/name_test.bpf.c
 * runs it on bytes alone); the map lookups are in bpf/lib/name_match.h.
 *
 * The keyed hash (agent/policy/name-hash.ts is the contract, checked
 * against test/fixtures/name-hash-vectors.json): FNV-1a 64, started from the
 * offset basis XOR the node's secret key, over the lower-cased wire-format
 * labels (length byte, then the bytes) from the rightmost label to the
 * leftmost, so one pass yields the hash of every suffix. 0 is "no name":
 * a hash of 0 is stored as 1. The hash only finds a rule: a name matches
 * when its real bytes equal the rule's name (exact), or a proper suffix of
 * it on a label boundary does (wildcard).
 */
#ifndef FQE_NAME_H
#define FQE_NAME_H

#include "fqe_types.h"
#include "loop.h"

#define FQE_DNS_MAX_LABELS 128 /* a power of two: slots are masked */
#define FQE_DNS_WIRE_MAX   256 /* a wire-format name is at most 255 bytes */
#define FQE_FNV64_BASIS	   0xcbf29ce484222325ULL
#define FQE_FNV64_PRIME	   0x100000001b3ULL

/*
 * A name being judged, labels right to left (the hash's order). The loops
 * below are bounded loops the verifier walks once per iteration (kernel 5.3+;
 * bpf_loop() would need 5.17): each keeps its state here, in per-CPU map
 * memory, and branches little, so that every iteration's paths meet in one
 * verifier state and the walk stays far below the verifier's limits on
 * every kernel from 5.10 on.
 */
struct fqe_name_buf {
	__u32 rev_pos;	  /* the name occupies rev[rev_pos..FQE_DNS_WIRE_MAX) */
	__u32 nlabels;	  /* labels, leftmost first in starts[] */
	__u32 end;	  /* offset after the name's root label (a packet's name) */
	__u32 dotted_len; /* bytes of dotted[] in use */
	/* the reader's place in the packet */
	__u32 off;
	__u32 pos;
	__u32 d;
	__s32 result; /* 0 running, 1 done, -1 cannot parse */
	/* loop bounds and results, in memory (bpf/lib/loop.h, fqe_for) */
	__u32 total;			 /* bytes of the name in rev[] */
	__u32 len;			 /* a suffix's length, a compare's length */
	__u8 rev[2 * FQE_DNS_WIRE_MAX];	 /* length byte, label bytes; rightmost label first */
	__u8 low[FQE_DNS_WIRE_MAX + 8];	 /* rev[rev_pos..] lower-cased, from index 0 (word compares) */
	__u64 hash_at[FQE_DNS_WIRE_MAX]; /* keyed hash of low[0..j] */
	__u8 starts[FQE_DNS_MAX_LABELS]; /* where label i (leftmost first) begins in rev[] */
	char dotted[FQE_NAME_LEN + 64];	 /* the name dotted, as sent (a packet's name) */
};

/* lo <= c <= hi, without a branch (the name walks run it on every byte) */
static __always_inline __u32 fqe_in_range(__u8 c, __u8 lo, __u8 hi)
{
	__s32 x = (__s32)c - lo;

	return ~(__u32)((x | ((__s32)(hi - lo) - x)) >> 31) & 1;
}

/* A byte lower-cased, without a branch: the hash walk runs it on every byte. */
static __always_inline __u8 fqe_name_lower(__u8 c)
{
	return c | (fqe_in_range(c, 'A', 'Z') << 5);
}

/* A host name byte (letters, digits, hyphen): anything else is refused, NUL included. */
static __always_inline __u32 fqe_name_ldh(__u8 b)
{
	__s32 hyphen = (__s32)(b ^ '-');

	return fqe_in_range(b | 0x20, 'a', 'z') | fqe_in_range(b, '0', '9') | (((hyphen - 1) >> 31) & 1);
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
	fqe_for(j, FQE_DNS_WIRE_MAX)
	{
		__u32 idx;
		__u8 b;

		fqe_barrier();
		if (j >= FQE_READ(nb->total))
			break;
		idx = FQE_MASK(FQE_READ(nb->rev_pos) + j, FQE_DNS_WIRE_MAX - 1);
		b = fqe_name_lower(nb->rev[idx]);
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
 * Step i of a walk over the name's suffixes on label boundaries, the
 * shortest first (i < labels - 1: proper suffixes, the rightmost label
 * first; i = labels - 1: the whole name): nb->len gets its length, and its
 * keyed hash is returned.
 */
static __always_inline __u64 fqe_name_suffix(struct fqe_name_buf *nb, __u32 i, __u32 labels)
{
	nb->len = i + 1 < labels ? fqe_suffix_len(nb, labels - 2 - i) : nb->total;
	return fqe_suffix_hash(nb, nb->len);
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
	fqe_for(w, FQE_NAME_LEN / 8)
	{
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

#endif /* FQE_NAME_H */
