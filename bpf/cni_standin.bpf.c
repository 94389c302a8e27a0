// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Tests only: a stand-in for a CNI's tc program. It counts the packets it
 * sees and passes every one with TC_ACT_OK, which ends a tcx chain (TCX_PASS)
 * and ends classification in cls_bpf: whatever is attached after it never
 * runs. Its map is not pinned, so it never touches the agent's pin dir.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define STANDIN_ALL 0 /* every packet */
#define STANDIN_SYN 1 /* IPv4 TCP SYNs without ACK: connection attempts */

/* How many packets (slot 0) and IPv4 SYNs (slot 1) has the stand-in seen? */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} standin_seen SEC(".maps");

static __always_inline void count(__u32 slot)
{
	__u64 *seen = bpf_map_lookup_elem(&standin_seen, &slot);

	if (seen)
		__sync_fetch_and_add(seen, 1);
}

static __always_inline int is_ipv4_syn(struct __sk_buff *skb)
{
	struct iphdr ip;
	struct tcphdr tcp;

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return 0;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
		return 0;
	if (ip.protocol != IPPROTO_TCP || ip.ihl < 5)
		return 0;
	if (bpf_skb_load_bytes(skb, ETH_HLEN + ip.ihl * 4, &tcp, sizeof(tcp)) < 0)
		return 0;
	return tcp.syn && !tcp.ack;
}

SEC("tc")
int standin_pass(struct __sk_buff *skb)
{
	count(STANDIN_ALL);
	if (is_ipv4_syn(skb))
		count(STANDIN_SYN);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
