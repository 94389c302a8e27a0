/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Agent-wide tunables with their kernel defaults. */
#ifndef FQE_CONFIG_H
#define FQE_CONFIG_H

#include "maps.h"

#define FQE_NSEC_PER_SEC	     1000000000ULL
#define FQE_DEFAULT_CT_TCP_IDLE_NS   (3600ULL * FQE_NSEC_PER_SEC)
#define FQE_DEFAULT_CT_OTHER_IDLE_NS (60ULL * FQE_NSEC_PER_SEC)
/* A TCP flow that saw FIN or RST: final ACKs and retransmits only (agent/sync/flow-sweeper.ts too). */
#define FQE_CT_CLOSING_IDLE_NS	     (10ULL * FQE_NSEC_PER_SEC)
#define FQE_DEFAULT_EVENTS_PER_SEC   200
#define FQE_DEFAULT_CT_PER_POD	     16384
#define FQE_DEFAULT_QUERY_WINDOW_NS  (5ULL * FQE_NSEC_PER_SEC)
#define FQE_DEFAULT_CONNECT_GRACE_NS (5ULL * FQE_NSEC_PER_SEC)

static __always_inline const struct fqe_config *fqe_config_get(void)
{
	__u32 key = FQE_CONFIG_KEY;

	return bpf_map_lookup_elem(&fqe_config, &key);
}

static __always_inline __u64 fqe_ct_idle_ns(const struct fqe_config *cfg, __u8 proto)
{
	if (proto == IPPROTO_TCP)
		return cfg && cfg->ct_tcp_idle_ns ? cfg->ct_tcp_idle_ns : FQE_DEFAULT_CT_TCP_IDLE_NS;
	return cfg && cfg->ct_other_idle_ns ? cfg->ct_other_idle_ns : FQE_DEFAULT_CT_OTHER_IDLE_NS;
}

static __always_inline __u32 fqe_ct_per_pod(const struct fqe_config *cfg)
{
	return cfg && cfg->ct_per_pod ? cfg->ct_per_pod : FQE_DEFAULT_CT_PER_POD;
}

/* How long a recorded query may be answered. */
static __always_inline __u64 fqe_query_window_ns(const struct fqe_config *cfg)
{
	return cfg && cfg->query_window_ns ? cfg->query_window_ns : FQE_DEFAULT_QUERY_WINDOW_NS;
}

/* The least an accepted answer allows, whatever its TTL (TTL 0, CNAMEs). */
static __always_inline __u64 fqe_connect_grace_ns(const struct fqe_config *cfg)
{
	return cfg && cfg->connect_grace_ns ? cfg->connect_grace_ns : FQE_DEFAULT_CONNECT_GRACE_NS;
}

/*
 * Has `then` (a time another CPU may have stored after we read `now`) been
 * more than `span` ago? Signed: a `then` in our future is not old.
 */
static __always_inline int fqe_older_than(__u64 now, __u64 then, __u64 span)
{
	return (__s64)(now - then) > (__s64)span;
}

static __always_inline __u32 fqe_events_per_sec(const struct fqe_config *cfg)
{
	return cfg && cfg->events_per_sec ? cfg->events_per_sec : FQE_DEFAULT_EVENTS_PER_SEC;
}

static __always_inline const struct fqe_limits *fqe_limits_get(void)
{
	__u32 key = 0;

	return bpf_map_lookup_elem(&fqe_limits, &key);
}

/* The pod's share of the node-wide tables (made on first use), or NULL. */
static __always_inline struct fqe_pod_share *fqe_pod_share_get(__u32 identity)
{
	static const struct fqe_pod_share none = {};
	struct fqe_pod_share *s = bpf_map_lookup_elem(&fqe_pod_shares, &identity);

	if (s)
		return s;
	bpf_map_update_elem(&fqe_pod_shares, &identity, &none, BPF_NOEXIST);
	return bpf_map_lookup_elem(&fqe_pod_shares, &identity);
}

static __always_inline __u32 fqe_ips_per_pod(const struct fqe_limits *l)
{
	return l && l->ips_per_pod ? l->ips_per_pod : FQE_DEFAULT_IPS_PER_POD;
}

static __always_inline __u32 fqe_tls_flows_per_pod(const struct fqe_limits *l)
{
	return l && l->tls_flows_per_pod ? l->tls_flows_per_pod : FQE_DEFAULT_TLS_FLOWS_PER_POD;
}

#endif /* FQE_CONFIG_H */
