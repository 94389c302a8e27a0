// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Socket filter for the agent's AF_PACKET tap in the node's network
 * namespace. The agent is not on the packet path: the inline learner
 * reports what it learned as records (fqe_learned), so the tap carries only
 * what the kernel could not handle. It passes a DNS answer (UDP/TCP source
 * port 53, with payload) from a trusted resolver on its way out to an
 * enforced pod (PACKET_OUTGOING: the copy that arrived from the resolver is
 * not taken, so each answer is delivered once, after the learner ran) when:
 *  - the learner marked it in fqe_tap_pass (UDP: that query id; TCP: that
 *    connection, whose messages may span segments), while the mark is fresh;
 *  - or the inline learner is off (FQE_CFG_INLINE_LEARNER_OFF): every answer
 *    to a query the enforcer recorded (UDP), every TCP answer segment.
 * Nothing a pod sends is delivered. Everything else is cut to zero bytes.
 */
#include <linux/bpf.h>
#include <linux/if_packet.h>
#include <bpf/bpf_helpers.h>

#include "lib/fqe_types.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/config.h"

/* Fallback (no inline learner): did the enforcer record the query of this UDP answer? */
static __always_inline int query_recorded(const struct fqe_tap_key *k)
{
	struct fqe_query_key q = { .identity = k->identity, .sport = k->pod_port, .dns_id = k->dns_id };

	__builtin_memcpy(q.resolver, k->resolver, 16);
	return bpf_map_lookup_elem(&fqe_queries, &q) != NULL;
}

SEC("socket")
int fqe_dns_filter(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	const struct fqe_endpoint *ep;
	const struct fqe_config *cfg;
	const struct fqe_tap_val *mark;
	struct fqe_tap_key k = {};
	struct fqe_pkt *p = fqe_pkt_get();
	__be16 id;

	/* the tap sees every frame of the node's namespace: the cheap test first */
	if (skb->pkt_type != PACKET_OUTGOING)
		return 0;
	ep = bpf_map_lookup_elem(&fqe_endpoints, &ifindex);
	if (!ep || !p)
		return 0;
	if (fqe_parse(skb, p) != FQE_PARSE_OK || p->frag || p->payload_len == 0)
		return 0;
	if ((p->proto != IPPROTO_UDP && p->proto != IPPROTO_TCP) || p->sport != FQE_DNS_PORT)
		return 0;
	if (!bpf_map_lookup_elem(&fqe_resolvers, p->saddr))
		return 0;
	k.identity = ep->identity;
	k.pod_port = p->dport;
	k.proto = p->proto;
	__builtin_memcpy(k.resolver, p->saddr, 16);
	if (p->proto == IPPROTO_UDP) {
		if (bpf_skb_load_bytes(skb, p->payload_off, &id, sizeof(id)) < 0)
			return 0;
		k.dns_id = bpf_ntohs(id);
	}
	cfg = fqe_config_get();
	if (cfg && (cfg->flags & FQE_CFG_INLINE_LEARNER_OFF))
		return p->proto == IPPROTO_TCP || query_recorded(&k) ? skb->len : 0;
	mark = bpf_map_lookup_elem(&fqe_tap_pass, &k);
	if (!mark || (__s64)(mark->until_ns - bpf_ktime_get_ns()) <= 0)
		return 0;
	return skb->len;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
