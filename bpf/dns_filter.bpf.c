// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Socket filter for the agent's AF_PACKET tap in the node's network
 * namespace. Passes, for enforced pods' interfaces only:
 *  - DNS answers (UDP/TCP source port 53 with payload) on their way out to
 *    the pod (PACKET_OUTGOING): the routed answer is also seen when it
 *    arrives from the resolver, and that copy is dropped, so each answer
 *    reaches userspace once, after the tc learner has run;
 *  - DNS queries (destination port 53 with payload) as they arrive from the
 *    pod.
 * Everything else is cut to zero bytes (not delivered).
 */
#include <linux/bpf.h>
#include <linux/if_packet.h>
#include <bpf/bpf_helpers.h>

#include "lib/fqe_types.h"
#include "lib/maps.h"
#include "lib/parse.h"

SEC("socket")
int fqe_dns_filter(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct fqe_pkt p = {};

	if (!bpf_map_lookup_elem(&fqe_endpoints, &ifindex))
		return 0;
	if (fqe_parse(skb, &p) != FQE_PARSE_OK || p.frag || p.payload_len == 0)
		return 0;
	if (p.proto != IPPROTO_UDP && p.proto != IPPROTO_TCP)
		return 0;
	if (p.sport == FQE_DNS_PORT && skb->pkt_type == PACKET_OUTGOING)
		return skb->len;
	if (p.dport == FQE_DNS_PORT && skb->pkt_type != PACKET_OUTGOING)
		return skb->len;
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
