/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every map of the datapath, pinned by name under the agent's pin dir. Each
 * program object includes this header, so whichever object loads first
 * creates the pins and the others reuse them.
 */
#ifndef FQE_MAPS_H
#define FQE_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "fqe_types.h"

/* Agent-wide tunables (one slot). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fqe_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fqe_config SEC(".maps");

/* Which identity and mode owns this interface? */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FQE_MAX_ENDPOINTS);
	__type(key, __u32); /* ifindex */
	__type(value, struct fqe_endpoint);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fqe_endpoints SEC(".maps");

/* Does this pod own this source address? */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FQE_MAX_OWNED_ADDRS);
	__type(key, struct fqe_owner_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fqe_owners SEC(".maps");

/* May this pod reach this destination, on which ports, until when? */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, FQE_MAX_ALLOW);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fqe_allow_key);
	__type(value, struct fqe_allow_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fqe_allow SEC(".maps");

/* May any enforced pod reach this prefix (agent-wide allowCIDRs)? */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, FQE_MAX_CIDRS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fqe_cidr_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fqe_cidrs SEC(".maps");

/* Which secret keys this node's name hash? (one slot, set once by the agent) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fqe_hash_key);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fqe_hash_key SEC(".maps");

/* May this pod learn from answers for this name, and for which ports? */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FQE_MAX_POLICY);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fqe_policy_key);
	__type(value, struct fqe_policy_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fqe_policy SEC(".maps");

/* Is this address a trusted resolver? */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FQE_MAX_RESOLVERS);
	__type(key, struct fqe_resolver_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fqe_resolvers SEC(".maps");

/* Which DNS queries did enforced pods really send? */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FQE_MAX_PENDING);
	__type(key, struct fqe_query_key);
	__type(value, struct fqe_query_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fqe_queries SEC(".maps");

/* Is this flow already tracked (pod's point of view)? */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FQE_MAX_CONNTRACK);
	__type(key, struct fqe_ct_key);
	__type(value, struct fqe_ct_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fqe_conntrack SEC(".maps");

/*
 * How many flows does each pod hold in fqe_conntrack? (key: identity) A pod
 * past its share opens no new flow, so it cannot push other pods' flows
 * out of the table. The datapath adds; the agent's sweep reclaims idle
 * flows and writes the exact counts back.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FQE_MAX_ENDPOINTS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fqe_ct_counts SEC(".maps");

/*
 * How many flows opened TOWARDS each pod does it hold? A share of its own
 * (the same size as the outbound one, fqe_ct_counts): peers that flood a
 * pod with new flows use up only this one, never the pod's own opens.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FQE_MAX_ENDPOINTS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fqe_ct_in_counts SEC(".maps");

/* Drop and audit events for the agent. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, FQE_EVENTS_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fqe_events SEC(".maps");

/* What were the last events? (a ring of FQE_RECENT_EVENTS slots) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FQE_RECENT_EVENTS);
	__type(key, __u32);
	__type(value, struct fqe_recent);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fqe_recent SEC(".maps");

/* How many events were ever written to fqe_recent? (one slot) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fqe_recent_seq SEC(".maps");

/* How many packets did each identity pass and drop (per CPU)? */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, FQE_MAX_ENDPOINTS);
	__type(key, __u32); /* identity */
	__type(value, struct fqe_counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fqe_counters SEC(".maps");

/* Which name does this hash stand for? (written by the agent) */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FQE_MAX_NAMES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct fqe_name);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fqe_names SEC(".maps");

/* Which pod owns this identity? (written by the agent) */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FQE_MAX_ENDPOINTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct fqe_pod_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fqe_pods SEC(".maps");

/* Which policies (or the annotation) decide this pod's rules? (written by the agent) */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FQE_MAX_ENDPOINTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32); /* identity */
	__type(value, struct fqe_origins);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fqe_pod_origins SEC(".maps");

/* Where did this rule of fqe_policy come from? (written by the agent, beside fqe_policy) */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FQE_MAX_POLICY);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fqe_policy_key);
	__type(value, struct fqe_origins);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fqe_rule_origins SEC(".maps");

/* What did the inline learner learn? (records for the agent; batched wake-ups) */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, FQE_LEARNED_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fqe_learned SEC(".maps");

/* How many learned records found the ring full? (per CPU; the agent then re-reads fqe_allow) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fqe_learned_lost SEC(".maps");

/* May the agent's DNS tap take this answer (the kernel could not learn it)? */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FQE_MAX_TAP_PASS);
	__type(key, struct fqe_tap_key);
	__type(value, struct fqe_tap_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fqe_tap_pass SEC(".maps");

/* How many queries did each pod have recorded this second (per CPU)? */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, FQE_MAX_ENDPOINTS);
	__type(key, __u32);
	__type(value, struct fqe_query_rate);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fqe_query_rate SEC(".maps");

/* ---- DNS query filter ---- */

/* Is this suffix (keyed hash) one of the cluster's own domains? */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FQE_MAX_CLUSTER_DOMAINS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct fqe_policy_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fqe_cluster_domains SEC(".maps");

/* Which name did a refused DNS query ask for? (egressctl drops shows it) */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FQE_MAX_DNS_REFUSED);
	__type(key, struct fqe_refused_key);
	__type(value, struct fqe_refused_name);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fqe_dns_refused SEC(".maps");

/* ---- TLS server name check ---- */

/*
 * Where does the ClientHello parser of this pending flow stand? An entry
 * lives from the flow's SYN to its verdict; one pushed out by the LRU fails
 * the flow closed.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FQE_MAX_TLS_FLOWS);
	__type(key, struct fqe_ct_key);
	__type(value, struct fqe_tls_flow);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fqe_tls_flows SEC(".maps");

/*
 * Which bytes of this flow did the check take (its first data byte on)?
 * Allocated on a flow's first data, freed with its verdict or the end of
 * its watch (the agent's sweep frees what a lost flow left).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FQE_MAX_TLS_STORES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fqe_ct_key);
	__type(value, struct fqe_tls_bytes);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fqe_tls_bytes SEC(".maps");

/*
 * Where does this pod's DNS-over-TCP stream to a resolver stand (the next
 * byte the resolver will read)? Made at the resolver's SYN-ACK, gone at the
 * pod's next SYN on the 5-tuple; the LRU reclaims the rest.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FQE_MAX_DNS_TCP);
	__type(key, struct fqe_ct_key);
	__type(value, struct fqe_dns_tcp);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fqe_dns_tcp SEC(".maps");

/* What each pod may hold of the node-wide tables (one slot, the agent's). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fqe_limits);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fqe_limits SEC(".maps");

/* How much of the node-wide tables does each pod hold? */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FQE_MAX_ENDPOINTS);
	__type(key, __u32);
	__type(value, struct fqe_pod_share);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fqe_pod_shares SEC(".maps");

/*
 * What did the agent decide for this pod (by namespace and name)? Written
 * by the agent from its watch, read (and, for a pod it has not decided,
 * claimed as pending) by the CNI plugin. No program reads it.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FQE_MAX_POD_DECISIONS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fqe_pod_ref);
	__type(value, struct fqe_pod_decision);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fqe_pod_decisions SEC(".maps");

#endif /* FQE_MAPS_H */
