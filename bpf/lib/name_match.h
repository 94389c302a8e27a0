/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * A hashed name's rule (bpf/lib/name.h has the hash and the compare): the
 * keyed hash finds a pod's rule in fqe_policy, or a cluster domain in
 * fqe_cluster_domains, and the real bytes decide. One implementation for
 * the learner, the DNS query verdict and the TLS check.
 */
#ifndef FQE_NAME_MATCH_H
#define FQE_NAME_MATCH_H

#include "maps.h"
#include "name.h"

/* The node's secret that keys the name hash (0 until the agent wrote one). */
static __always_inline __u64 fqe_name_hash_key(void)
{
	__u32 zero = 0;
	const struct fqe_hash_key *k = bpf_map_lookup_elem(&fqe_hash_key, &zero);

	return k ? k->key : 0;
}

/*
 * Find the rule for the hashed name: the whole name as FQE_POLICY_EXACT,
 * else its proper suffixes as FQE_POLICY_WILDCARD, the shortest first. A hit
 * counts only when the real bytes match: the whole name for an exact rule, a
 * proper suffix on a label boundary for a wildcard. Returns the rule or
 * NULL; *name_hash is the whole name's hash; *refused is set when a hash hit
 * but the name did not (a collision, or an attack).
 */
static __always_inline const struct fqe_policy_val *fqe_name_rule(struct fqe_name_buf *nb, __u32 identity,
								  __u64 *name_hash, int *refused)
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
	fqe_for(i, FQE_DNS_MAX_LABELS - 1)
	{
		__u32 labels;

		fqe_barrier();
		labels = FQE_READ(nb->nlabels);
		if (i + 1 >= labels)
			break;
		k.hash = fqe_name_suffix(nb, i, labels);
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
 * Is the hashed name a cluster domain or under one (the whole name or a
 * suffix on a label boundary, the shortest first)? Real bytes compared.
 */
static __always_inline int fqe_name_in_cluster(struct fqe_name_buf *nb)
{
	const struct fqe_policy_val *domain = NULL;
	__u64 h;

	fqe_for(i, FQE_DNS_MAX_LABELS)
	{
		__u32 labels;

		fqe_barrier();
		labels = FQE_READ(nb->nlabels);
		if (i >= labels)
			break;
		h = fqe_name_suffix(nb, i, labels);
		domain = bpf_map_lookup_elem(&fqe_cluster_domains, &h);
		if (domain)
			break;
	}
	fqe_barrier();
	return domain && fqe_name_is(nb, domain);
}

#endif /* FQE_NAME_MATCH_H */
