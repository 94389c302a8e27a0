/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Flow tracking, always keyed from the pod's point of view so that both tc
 * hooks of its interface find the same entry. An entry lives while packets
 * keep flowing in either direction and dies after the idle timeout.
 */
#ifndef FQE_CONNTRACK_H
#define FQE_CONNTRACK_H

#include "config.h"
#include "parse.h"

/* dir_from_pod: the packet was sent by the pod (saddr is the pod's). */
static __always_inline void fqe_ct_key_of(struct fqe_ct_key *k, __u32 identity,
					  const struct fqe_pkt *p, int dir_from_pod)
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

/* A live entry for this flow, refreshed; NULL when untracked or idle. */
static __always_inline struct fqe_ct_val *
fqe_ct_touch(const struct fqe_config *cfg, const struct fqe_ct_key *k, __u64 now)
{
	struct fqe_ct_val *ct = bpf_map_lookup_elem(&fqe_conntrack, k);

	if (!ct)
		return NULL;
	if (now - ct->last_seen_ns > fqe_ct_idle_ns(cfg, k->proto)) {
		bpf_map_delete_elem(&fqe_conntrack, k);
		return NULL;
	}
	if (ct->last_seen_ns != now)
		ct->last_seen_ns = now;
	return ct;
}

static __always_inline void fqe_ct_create(const struct fqe_ct_key *k, __u64 now,
					  __u32 flags)
{
	struct fqe_ct_val v = {
		.last_seen_ns = now,
		.created_ns = now,
		.flags = flags,
	};

	bpf_map_update_elem(&fqe_conntrack, k, &v, BPF_ANY);
}

#endif /* FQE_CONNTRACK_H */
