/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Flow tracking, always keyed from the pod's point of view so that both tc
 * hooks of its interface find the same entry. An entry lives while packets
 * keep flowing in either direction and dies after the idle timeout (a TCP
 * flow that saw FIN or RST: after a short one, once the agent sweeps it).
 * Each pod holds at most its share of the table (fqe_ct_counts for the
 * flows it opens, fqe_ct_in_counts for those opened towards it: a share
 * each), so one pod's flood cannot push another pod's flows out of the
 * LRU, and peers flooding a pod cannot use up its own opens.
 */
#ifndef FQE_CONNTRACK_H
#define FQE_CONNTRACK_H

#include "config.h"
#include "parse.h"

/* dir_from_pod: the packet was sent by the pod (saddr is the pod's). */
static __always_inline void fqe_ct_key_of(struct fqe_ct_key *k, __u32 identity, const struct fqe_pkt *p,
					  int dir_from_pod)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->identity = identity;
	k->proto = p->proto;
	if (dir_from_pod) {
		__builtin_memcpy(k->pod_addr, p->saddr, 16);
		__builtin_memcpy(k->peer_addr, p->daddr, 16);
		k->pod_port = p->sport;
		k->peer_port = p->dport;
	} else {
		__builtin_memcpy(k->pod_addr, p->daddr, 16);
		__builtin_memcpy(k->peer_addr, p->saddr, 16);
		k->pod_port = p->dport;
		k->peer_port = p->sport;
	}
}

/*
 * The live entry for this flow, or NULL when untracked or idle. Another CPU
 * may refresh the entry at any moment (a flow's two directions run on
 * different CPUs): time is compared signed, an idle entry is never deleted
 * here (a new flow overwrites it, the LRU reclaims it), and last_seen only
 * moves forward. A closed TCP flow (FIN or RST seen) lives only for its last
 * packets, and a new SYN on its 5-tuple is a new connection, judged afresh:
 * a pod cannot reopen a closed flow to skip the policy.
 */
static __always_inline struct fqe_ct_val *fqe_ct_lookup(const struct fqe_config *cfg, const struct fqe_ct_key *k,
							const struct fqe_pkt *p, __u64 now)
{
	struct fqe_ct_val *ct = bpf_map_lookup_elem(&fqe_conntrack, k);

	if (!ct)
		return NULL;
	if (ct->flags & FQE_CT_CLOSING) {
		if (fqe_older_than(now, ct->last_seen_ns, FQE_CT_CLOSING_IDLE_NS) ||
		    (p->proto == IPPROTO_TCP && (p->tcp_flags & (FQE_TCP_SYN | FQE_TCP_ACK)) == FQE_TCP_SYN))
			return NULL;
		return ct;
	}
	if (fqe_older_than(now, ct->last_seen_ns, fqe_ct_idle_ns(cfg, k->proto)))
		return NULL;
	return ct;
}

static __always_inline void fqe_ct_refresh(struct fqe_ct_val *ct, const struct fqe_pkt *p, __u64 now)
{
	if ((__s64)(now - ct->last_seen_ns) > 0)
		ct->last_seen_ns = now;
	if (p->proto == IPPROTO_TCP && (p->tcp_flags & (FQE_TCP_FIN | FQE_TCP_RST)) && !(ct->flags & FQE_CT_CLOSING))
		ct->flags |= FQE_CT_CLOSING; /* a lost race only delays reclaiming */
}

/*
 * A flow that only audit mode let through, while the pod is enforced now:
 * it is over (never refreshed, never passed), however it is kept alive.
 */
static __always_inline int fqe_ct_audit_ended(const struct fqe_ct_val *ct, const struct fqe_endpoint *ep)
{
	return (ct->flags & FQE_CT_AUDITED) && !(ep->flags & FQE_EP_AUDIT);
}

/*
 * Track a new flow, within the pod's share. Returns 0 when tracked, -1 when
 * the pod already holds its share (the caller refuses the flow). An idle
 * entry for the same flow is taken over without counting twice.
 */
static __always_inline int fqe_ct_create(const struct fqe_config *cfg, const struct fqe_ct_key *k, __u64 now,
					 __u32 flags)
{
	struct fqe_ct_val v = {
		.last_seen_ns = now,
		.created_ns = now,
		.flags = flags,
	};
	__u32 identity = k->identity;
	void *counts = flags & FQE_CT_INBOUND ? (void *)&fqe_ct_in_counts : (void *)&fqe_ct_counts;
	__u64 zero = 0, *count;

	count = bpf_map_lookup_elem(counts, &identity);
	if (!count) {
		bpf_map_update_elem(counts, &identity, &zero, BPF_NOEXIST);
		count = bpf_map_lookup_elem(counts, &identity);
		if (!count)
			return -1; /* more pods than the table of counts holds: fail closed */
	}
	if (*count < fqe_ct_per_pod(cfg) && bpf_map_update_elem(&fqe_conntrack, k, &v, BPF_NOEXIST) == 0) {
		__sync_fetch_and_add(count, 1);
		return 0;
	}
	/* an idle entry of this very flow: reuse it, the count is unchanged */
	return bpf_map_update_elem(&fqe_conntrack, k, &v, BPF_EXIST) == 0 ? 0 : -1;
}

#endif /* FQE_CONNTRACK_H */
