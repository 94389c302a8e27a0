// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tc egress of a pod's host-side interface, i.e. everything the pod receives.
 * Tracks flows opened towards the pod so that its replies pass the enforcer.
 * The inline DNS learner will live here too. Never drops.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "lib/fqe_types.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/config.h"
#include "lib/conntrack.h"

/* Does this packet open a flow (rather than answer one the pod opened)? */
static __always_inline int opens_flow(const struct fqe_pkt *p)
{
	if (p->proto == IPPROTO_TCP)
		return (p->tcp_flags & (FQE_TCP_SYN | FQE_TCP_ACK)) == FQE_TCP_SYN;
	if (p->proto == IPPROTO_ICMP)
		return p->icmp_type == 8; /* echo request */
	if (p->proto == IPPROTO_ICMPV6)
		return p->icmp_type == 128; /* echo request */
	return 1; /* UDP and the rest: any packet */
}

SEC("tc")
int fqe_learner(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	const struct fqe_endpoint *ep = bpf_map_lookup_elem(&fqe_endpoints, &ifindex);
	const struct fqe_config *cfg;
	struct fqe_ct_key ct;
	struct fqe_pkt p = {};
	__u64 now;

	if (!ep || !(ep->flags & (FQE_EP_ENFORCE | FQE_EP_AUDIT)))
		return TC_ACT_UNSPEC;
	if (fqe_parse(skb, &p) != FQE_PARSE_OK || p.frag || fqe_is_icmp6_link_control(&p))
		return TC_ACT_UNSPEC;
	if (p.sport == FQE_DNS_PORT && (p.proto == IPPROTO_UDP || p.proto == IPPROTO_TCP))
		return TC_ACT_UNSPEC; /* DNS answers: the learner's, not conntrack's */

	cfg = fqe_config_get();
	now = bpf_ktime_get_ns();
	fqe_ct_key_of(&ct, ep->identity, &p, 0);
	if (!fqe_ct_touch(cfg, &ct, now) && opens_flow(&p))
		fqe_ct_create(&ct, now, FQE_CT_INBOUND);
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
