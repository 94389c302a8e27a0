// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The enforcer: tc ingress of a pod's host-side interface, i.e. everything
 * the pod sends. An enforced pod's packet passes only when it is link
 * control (that cannot leave the link), DNS to a trusted resolver, part of a
 * tracked flow, or bound for a destination the pod was allowed (a learned
 * entry not expired with the port listed, or an allowCIDRs prefix).
 * Everything else is dropped (or passed and reported in audit mode). A flow
 * that only audit mode let through ends when the pod is switched to enforce.
 * A DNS query is judged by its name too (lib/dns_query.h): a refused one is
 * answered NXDOMAIN in place (over TCP: reset) and never reaches the resolver.
 * A TCP flow that only `tls` port rules allow is judged by the server name
 * of its ClientHello too (lib/tls.h): until then it is tracked as pending
 * and its segments skip the fast path; a refused one is reset and dropped.
 *
 * "Pass" is TC_ACT_UNSPEC: the next tc filter (a CNI's) still runs.
 *
 * A packet of a tracked flow costs the endpoint lookup and one conntrack
 * lookup, read against the coarse clock (one tick, a few ms, is nothing
 * next to TTLs and idle timeouts of seconds); it is not counted per packet.
 * The heavy judgements run as tail calls (fqe_enforcer_tails), each a
 * program the verifier checks on its own: a DNS query to a trusted resolver
 * (fqe_enforcer_dns) and a data segment of a flow under the TLS check
 * (fqe_enforcer_tls). Each parses the packet again and finishes it (counts,
 * reports, answers) as the main program does. A tail call that cannot run
 * refuses the packet: fail closed.
 *
 * Built twice: with FQE_COARSE_CLOCK=0 it reads the precise clock, for
 * kernels without bpf_ktime_get_coarse_ns (before 5.11).
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "lib/fqe_types.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/config.h"
#include "lib/conntrack.h"
#include "lib/report.h"
#include "lib/dns_query.h"
#include "lib/tls.h"

#ifndef FQE_COARSE_CLOCK
#define FQE_COARSE_CLOCK 1
#endif

static __always_inline __u64 enforcer_now(void)
{
#if FQE_COARSE_CLOCK
	return bpf_ktime_get_coarse_ns();
#else
	return bpf_ktime_get_ns();
#endif
}

static const struct fqe_query_rate fqe_zero_rate = {};

/*
 * May this pod have one more query recorded this second (on this CPU)?
 * Past FQE_QUERIES_PER_SEC the query passes unrecorded, and is counted.
 */
static __always_inline int query_within_rate(__u32 identity, __u64 now)
{
	struct fqe_query_rate *r = bpf_map_lookup_elem(&fqe_query_rate, &identity);

	if (!r) {
		bpf_map_update_elem(&fqe_query_rate, &identity, &fqe_zero_rate, BPF_NOEXIST);
		r = bpf_map_lookup_elem(&fqe_query_rate, &identity);
		if (!r)
			return 0;
	}
	if (fqe_older_than(now, r->window_ns, FQE_NSEC_PER_SEC)) {
		r->window_ns = now;
		r->count = 0;
	}
	if (r->count >= FQE_QUERIES_PER_SEC) {
		r->unrecorded++;
		return 0;
	}
	r->count++;
	return 1;
}

/* Remember a DNS query so that only its answer can teach the learner. */
static __always_inline void record_query(struct __sk_buff *skb, __u32 identity, const struct fqe_pkt *p, __u64 now)
{
	struct fqe_query_key k = {};
	struct fqe_query_val v = {};
	/* DNS over TCP carries a two-byte length before the header. */
	__u32 prefix = p->proto == IPPROTO_TCP ? 2 : 0;
	__be16 id;

	if (p->payload_len < prefix + 12)
		return; /* no DNS header in this segment (SYN, ACK, ...) */
	if (!query_within_rate(identity, now))
		return;
	if (bpf_skb_load_bytes(skb, p->payload_off + prefix, &id, sizeof(id)) < 0)
		return;
	k.identity = identity;
	k.sport = p->sport;
	k.dns_id = bpf_ntohs(id);
	__builtin_memcpy(k.resolver, p->daddr, 16);
	v.sent_ns = now;
	v.proto = p->proto;
	bpf_map_update_elem(&fqe_queries, &k, &v, BPF_ANY);
}

/* Port rule verdicts: a plain rule passes at once, a tls rule after the server name check. */
#define PORT_NO	 0
#define PORT_YES 1
#define PORT_TLS 2

static __always_inline int port_allowed(const struct fqe_allow_val *v, const struct fqe_pkt *p)
{
	int tls = PORT_NO;

	if (v->nports == 0) /* any port, TCP and UDP (a later fragment: judged by its address) */
		return p->frag || p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP ? PORT_YES : PORT_NO;
	if (p->frag) {
		/*
		 * A later fragment is judged by its address, unless a tls rule
		 * is there: it could carry ClientHello bytes the check never saw.
		 */
#pragma unroll
		for (int i = 0; i < FQE_MAX_PORT_RULES; i++) {
			if (i < v->nports && v->ports[i].proto == FQE_PROTO_TLS)
				return PORT_NO;
		}
		return PORT_YES;
	}
	if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP)
		return PORT_NO;
#pragma unroll
	for (int i = 0; i < FQE_MAX_PORT_RULES; i++) {
		if (i >= v->nports)
			break;
		if (v->ports[i].port != p->dport)
			continue;
		if (v->ports[i].proto == 0 || v->ports[i].proto == p->proto)
			return PORT_YES; /* a plain rule wins over a tls one */
		if (v->ports[i].proto == FQE_PROTO_TLS && p->proto == IPPROTO_TCP)
			tls = PORT_TLS;
	}
	return tls;
}

/*
 * The allow trie's verdict for this destination: NONE when it may pass
 * (*tls set when only a tls rule allows it: the server name decides).
 */
static __always_inline __u8 allow_verdict(__u32 identity, const struct fqe_pkt *p, __u64 now, int *tls)
{
	struct fqe_allow_key k = {
		.prefixlen = 32 + 128,
		.identity = identity,
	};
	struct fqe_allow_val *v;

	__builtin_memcpy(k.addr, p->daddr, 16);
	v = bpf_map_lookup_elem(&fqe_allow, &k);
	if (!v)
		return FQE_REASON_NOT_ALLOWED;
	if (v->expires_ns && now >= v->expires_ns)
		return FQE_REASON_EXPIRED;
	switch (port_allowed(v, p)) {
	case PORT_YES:
		return FQE_REASON_NONE;
	case PORT_TLS:
		*tls = 1;
		return FQE_REASON_NONE;
	}
	return FQE_REASON_PORT;
}

/* Is the destination inside an agent-wide allowCIDRs prefix (any port)? */
static __always_inline int cidr_allows(const struct fqe_pkt *p)
{
	struct fqe_cidr_key k = {
		.prefixlen = 32 + 128,
		.family = p->family,
	};

	__builtin_memcpy(k.addr, p->daddr, 16);
	return bpf_map_lookup_elem(&fqe_cidrs, &k) != NULL;
}

static __always_inline int is_trusted_resolver(const struct fqe_pkt *p)
{
	struct fqe_resolver_key k;

	if (p->dport != FQE_DNS_PORT || p->frag || (p->proto != IPPROTO_UDP && p->proto != IPPROTO_TCP))
		return 0;
	__builtin_memcpy(k.addr, p->daddr, 16);
	return bpf_map_lookup_elem(&fqe_resolvers, &k) != NULL;
}

static __always_inline int owns_source(__u32 identity, const struct fqe_pkt *p)
{
	struct fqe_owner_key k = { .identity = identity };

	__builtin_memcpy(k.addr, p->saddr, 16);
	return bpf_map_lookup_elem(&fqe_owners, &k) != NULL;
}

/* Verdicts decide() hands to a tail call (not reasons: never reported as such). */
#define FQE_TAIL_DNS_QUERY    0
#define FQE_TAIL_TLS	      1
#define FQE_TAIL_TLS_NAME     2
#define FQE_TAILS	      3
#define FQE_VERDICT_TAIL_BASE 0xf0 /* decide() returns FQE_VERDICT_TAIL_BASE + slot */

int fqe_enforcer_dns(struct __sk_buff *skb);
int fqe_enforcer_tls(struct __sk_buff *skb);
int fqe_enforcer_tls_name(struct __sk_buff *skb);

/*
 * The enforcer's tail calls. Pinned (fqe_enforcer_tails), so its programs
 * stay while the agent is away (a prog array empties when its last user
 * reference goes); the loader fills it with the object's own programs. A
 * tail program finds everything it needs in the packet and the maps, so an
 * older main program may call a newer one during an upgrade.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, FQE_TAILS);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fqe_enforcer_tails SEC(".maps");

/*
 * May this pod have one more flow under the TLS check (its share of
 * fqe_tls_flows: many flows held pending cannot push other pods' checks
 * out of the LRU)? Takes it.
 */
static __always_inline int tls_share_take(__u32 identity)
{
	struct fqe_pod_share *share = fqe_pod_share_get(identity);

	if (!share || share->tls_flows >= fqe_tls_flows_per_pod(fqe_limits_get()))
		return 0;
	__sync_fetch_and_add(&share->tls_flows, 1);
	return 1;
}

/*
 * A flow under the TLS check refused: it drops from now on, its check's
 * state goes (in audit mode it passes on as an audited flow).
 */
static __always_inline void tls_flow_refused(const struct fqe_endpoint *ep, const struct fqe_ct_key *ct,
					     struct fqe_ct_val *tracked)
{
	fqe_tls_forget(ct);
	if (ep->flags & FQE_EP_AUDIT)
		tracked->flags = (tracked->flags & ~FQE_CT_TLS_CHECK) | FQE_CT_AUDITED;
	else /* closing: reclaimed soon; a new SYN on the 5-tuple is judged afresh */
		tracked->flags = (tracked->flags & ~(FQE_CT_TLS_PENDING | FQE_CT_TLS_WATCH)) | FQE_CT_TLS_REFUSED |
				 FQE_CT_CLOSING;
}

/*
 * decide()'s verdict: FQE_REASON_NONE passes (pass says why, for the
 * counters), another reason refuses (tls: the TLS check's, which keeps the
 * server name and answers with a RST), FQE_VERDICT_TAIL_BASE + slot hands
 * the packet to a tail call.
 */
struct verdict {
	__u8 reason;
	__u8 tls;
	enum fqe_pass pass;
};

#define VERDICT(r, p) ((struct verdict){ .reason = (r), .pass = (p) })

/* Refused by the TLS check: what egressctl drops shows is no server name. */
static __always_inline struct verdict tls_refused(void)
{
	struct fqe_query_scratch *qs = fqe_query_scratch_get();

	if (qs)
		fqe_tls_no_name(qs);
	return (struct verdict){ .reason = FQE_REASON_TLS_NAME, .tls = 1, .pass = FQE_PASS_OTHER };
}

/*
 * A packet of a tracked flow, the one path for them all: refused by the
 * TLS check (dropped), passed (refreshed), or under the check (pending or
 * watched: its data goes to the check, a tail call). Under the check, refused at once: urgent
 * data (the receiver would read another stream than the one checked), and
 * while the name is pending, the pod's FIN or RST (a stream cut short
 * cannot be re-anchored: a new connection is a new SYN, judged afresh). A
 * SYN again changes nothing: the stream's start comes from the server's
 * SYN-ACK.
 */
static __always_inline struct verdict tracked_flow(const struct fqe_endpoint *ep, const struct fqe_pkt *p,
						   const struct fqe_ct_key *ct, struct fqe_ct_val *tracked, __u64 now)
{
	if (tracked->flags & FQE_CT_TLS_REFUSED)
		return VERDICT(FQE_REASON_TLS_NAME, FQE_PASS_OTHER);
	if (!(tracked->flags & FQE_CT_TLS_CHECK)) {
		fqe_ct_refresh(tracked, p, now);
		return VERDICT(FQE_REASON_NONE, FQE_PASS_CT);
	}
	if (fqe_tcp_urgent(p) ||
	    ((tracked->flags & FQE_CT_TLS_PENDING) && (p->tcp_flags & (FQE_TCP_FIN | FQE_TCP_RST)))) {
		struct verdict v = tls_refused();

		tls_flow_refused(ep, ct, tracked);
		if (p->payload_len == 0 && !fqe_tcp_urgent(p) && !(ep->flags & FQE_EP_AUDIT))
			return VERDICT(FQE_REASON_NONE,
				       FQE_PASS_CT); /* the FIN or RST itself ends the server's half too */
		return v;
	}
	fqe_ct_refresh(tracked, p, now);
	if (p->payload_len == 0)
		return VERDICT(FQE_REASON_NONE, FQE_PASS_CT); /* the handshake, an ACK, a FIN: no hello bytes */
	return VERDICT(FQE_VERDICT_TAIL_BASE + FQE_TAIL_TLS, FQE_PASS_CT);
}

/*
 * Decide a parsed packet from an enforced pod (struct verdict says what
 * comes of it).
 */
static __always_inline struct verdict decide(struct __sk_buff *skb, const struct fqe_config *cfg,
					     const struct fqe_endpoint *ep, const struct fqe_pkt *p, __u64 now)
{
	__u32 identity = ep->identity;
	/* a tracked flow only audit mode let through, its pod now enforced */
	struct fqe_ct_val *audited = NULL;
	struct fqe_ct_key ct;
	int tls = 0;
	__u8 reason;

	if (fqe_is_icmp6_link_control(p))
		return VERDICT(FQE_REASON_NONE, FQE_PASS_OTHER);
	/*
	 * The common case first: a packet of a tracked flow (replies to inbound
	 * flows, flows past their IP's TTL, any established flow) costs this one
	 * lookup. The key holds the pod's address, and a flow is tracked only
	 * once that address was found to be the pod's (here for the flows it
	 * opens, in the learner for those opened towards it), so a hit is that
	 * check too. Queries to a resolver are judged every time, never by the
	 * flow. An established flow outlives its IP's TTL; when a rule change
	 * revokes its name, the agent deletes the flow (sync/revoked-flows.ts).
	 */
	fqe_ct_key_of(&ct, identity, p, 1);
	if (!p->frag && !is_trusted_resolver(p)) {
		struct fqe_ct_val *tracked = fqe_ct_lookup(cfg, &ct, p, now);

		if (tracked && !fqe_ct_audit_ended(tracked, ep))
			return tracked_flow(ep, p, &ct, tracked, now);
		audited = tracked;
	}
	if (!owns_source(identity, p))
		return VERDICT(FQE_REASON_SPOOFED, FQE_PASS_OTHER);
	if (is_trusted_resolver(p)) {
		if (p->proto == IPPROTO_TCP && (p->tcp_flags & (FQE_TCP_SYN | FQE_TCP_ACK)) == FQE_TCP_SYN)
			bpf_map_delete_elem(&fqe_dns_tcp, &ct); /* a new stream: its start comes with the SYN-ACK */
		if (ep->flags & FQE_EP_DNS_FILTER_OFF) {
			record_query(skb, identity, p, now);
			return VERDICT(FQE_REASON_NONE, FQE_PASS_DNS);
		}
		/* a TCP segment without payload (handshake, ACK, FIN) carries no query, but may point at urgent data */
		if (p->payload_len > 0 || p->proto == IPPROTO_UDP)
			return VERDICT(FQE_VERDICT_TAIL_BASE + FQE_TAIL_DNS_QUERY, FQE_PASS_DNS);
		return VERDICT(fqe_tcp_urgent(p) ? FQE_REASON_DNS_NAME : FQE_REASON_NONE, FQE_PASS_DNS);
	}
	reason = allow_verdict(identity, p, now, &tls);
	if ((reason != FQE_REASON_NONE || tls) && cidr_allows(p)) {
		reason = FQE_REASON_NONE;
		tls = 0; /* allowCIDRs allow any port: no name check */
	}
	if (reason == FQE_REASON_NONE && tls) {
		/* only a flow's start shows its ClientHello: a flow met mid-stream cannot be checked */
		if (audited || (p->tcp_flags & (FQE_TCP_SYN | FQE_TCP_ACK)) != FQE_TCP_SYN)
			return tls_refused();
		if (!tls_share_take(identity) || fqe_ct_create(cfg, &ct, now, FQE_CT_OUTBOUND | FQE_CT_TLS_PENDING) < 0)
			return VERDICT(FQE_REASON_FLOW_QUOTA, FQE_PASS_OTHER);
		fqe_tls_start(&ct);
		if (p->payload_len > 0) /* a ClientHello in the SYN (TCP Fast Open): held, no base yet */
			return VERDICT(FQE_VERDICT_TAIL_BASE + FQE_TAIL_TLS, FQE_PASS_OTHER);
		return VERDICT(FQE_REASON_NONE, FQE_PASS_OTHER);
	}
	if (reason == FQE_REASON_NONE) {
		if (audited) {
			fqe_ct_refresh(audited, p, now);
			/* the policy allows it now: no longer an audit-only flow */
			if (audited->flags & FQE_CT_AUDITED)
				audited->flags = FQE_CT_OUTBOUND;
		} else if (!p->frag && fqe_ct_create(cfg, &ct, now, FQE_CT_OUTBOUND) < 0) {
			return VERDICT(FQE_REASON_FLOW_QUOTA, FQE_PASS_OTHER);
		}
		return VERDICT(FQE_REASON_NONE, FQE_PASS_OTHER);
	}
	if (audited)
		return VERDICT(FQE_REASON_AUDIT_ENDED, FQE_PASS_OTHER); /* only audit let it through */
	if (reason == FQE_REASON_NOT_ALLOWED && p->dport == FQE_DNS_PORT &&
	    (p->proto == IPPROTO_UDP || p->proto == IPPROTO_TCP))
		reason = FQE_REASON_UNTRUSTED_DNS;
	/* Audit mode: report a flow once; the rest of it passes as tracked. */
	if ((ep->flags & FQE_EP_AUDIT) && !p->frag)
		fqe_ct_create(cfg, &ct, now, FQE_CT_OUTBOUND | FQE_CT_AUDITED);
	return VERDICT(reason, FQE_PASS_OTHER);
}

/*
 * The one report point: count the verdict, report a refusal, and answer it
 * (NXDOMAIN for a refused query, a RST for a refused TLS flow) or drop it.
 */
static __always_inline int finish(struct __sk_buff *skb, const struct fqe_config *cfg, const struct fqe_endpoint *ep,
				  const struct fqe_pkt *p, __u8 reason, enum fqe_pass pass, __u64 now, int tls_verdict)
{
	int drop;

	/* A tracked flow's packet: two lookups, nothing counted (the flow was, when it opened). */
	if (reason == FQE_REASON_NONE && pass == FQE_PASS_CT)
		return TC_ACT_UNSPEC;
	drop = fqe_report(skb, cfg, ep, p, reason, pass, now);
	if (reason == FQE_REASON_DNS_NAME)
		fqe_dns_remember_refused(skb, p, ep->identity, now); /* the name, for egressctl drops */
	tls_verdict = tls_verdict && reason == FQE_REASON_TLS_NAME;
	if (tls_verdict)
		fqe_tls_remember_refused(p, ep->identity, now);
	if (!drop)
		return TC_ACT_UNSPEC;
	if (reason == FQE_REASON_DNS_NAME)
		return fqe_dns_refuse(skb, p); /* NXDOMAIN back to the pod */
	if (tls_verdict)
		return fqe_tls_refuse(skb, p); /* RST back to the pod */
	return TC_ACT_SHOT;
}

/* What every program of the enforcer starts with: the pod, the packet, the clock. */
struct fqe_enforcer_ctx {
	const struct fqe_endpoint *ep;
	const struct fqe_config *cfg;
	struct fqe_pkt *p;
	__u64 now;
	__s64 parsed;
};

static __always_inline int enforcer_begin(struct __sk_buff *skb, struct fqe_enforcer_ctx *c)
{
	__u32 ifindex = skb->ifindex;

	c->ep = bpf_map_lookup_elem(&fqe_endpoints, &ifindex);
	if (!c->ep || !(c->ep->flags & (FQE_EP_ENFORCE | FQE_EP_AUDIT)))
		return 0; /* not an enforced pod */
	c->p = fqe_pkt_get();
	if (!c->p)
		return 0;
	c->parsed = fqe_parse(skb, c->p);
	if (c->parsed == FQE_PARSE_ARP)
		return 0;
	c->cfg = fqe_config_get();
	c->now = enforcer_now();
	return 1;
}

SEC("tc")
int fqe_enforcer(struct __sk_buff *skb)
{
	struct fqe_enforcer_ctx c;
	struct verdict v;

	if (!enforcer_begin(skb, &c))
		return TC_ACT_UNSPEC;
	if (c.parsed == FQE_PARSE_OTHER)
		v = VERDICT(FQE_REASON_PROTOCOL, FQE_PASS_OTHER);
	else if (c.parsed != FQE_PARSE_OK)
		v = VERDICT(FQE_REASON_MALFORMED, FQE_PASS_OTHER);
	else
		v = decide(skb, c.cfg, c.ep, c.p, c.now);
	if (v.reason >= FQE_VERDICT_TAIL_BASE) {
		bpf_tail_call(skb, &fqe_enforcer_tails, v.reason - FQE_VERDICT_TAIL_BASE);
		/* the tail program is missing: what it would judge is refused */
		if (v.reason == FQE_VERDICT_TAIL_BASE + FQE_TAIL_DNS_QUERY) {
			struct fqe_query_scratch *qs = fqe_query_scratch_get();

			if (qs) {
				qs->q.question_end = 0;
				qs->refused.flags = 0;
			}
			v = VERDICT(FQE_REASON_DNS_NAME, FQE_PASS_OTHER);
		} else {
			v = (struct verdict){ .reason = FQE_REASON_TLS_NAME, .tls = 1, .pass = FQE_PASS_OTHER };
		}
	}
	return finish(skb, c.cfg, c.ep, c.p, v.reason, v.pass, c.now, v.tls);
}

/* A DNS query to a trusted resolver, from a pod whose query filter is on. */
SEC("tc")
int fqe_enforcer_dns(struct __sk_buff *skb)
{
	struct fqe_enforcer_ctx c;
	__u8 reason;

	if (!enforcer_begin(skb, &c) || c.parsed != FQE_PARSE_OK)
		return TC_ACT_SHOT; /* only the main program calls this, for a parsed packet */
	reason = fqe_dns_query_verdict(skb, c.p, c.ep->identity);
	/* audit passes a refused query: its answer is matched as usual */
	if (reason == FQE_REASON_NONE || (c.ep->flags & FQE_EP_AUDIT)) {
		record_query(skb, c.ep->identity, c.p, c.now);
		fqe_dns_tcp_advance(c.p, c.ep->identity);
	}
	return finish(skb, c.cfg, c.ep, c.p, reason, FQE_PASS_DNS, c.now, 0);
}

/*
 * The TLS check's walk of a segment hands a whole server name to the name
 * program, which hands the rest of the segment back: skb->cb[0] says so
 * (cb lives with the packet, across tail calls), the walk's place is in
 * the per-CPU scratch (the same CPU, the same packet).
 */
#define FQE_TLS_RESUME 0xf9e7150fU

/* What a tail program of the TLS check starts with: the flow, its state, the scratch. */
struct fqe_tls_ctx {
	struct fqe_enforcer_ctx c;
	struct fqe_ct_key ct;
	struct fqe_ct_val *tracked;
	struct fqe_tls_flow *f;
	struct fqe_query_scratch *qs;
};

static __always_inline int tls_begin(struct __sk_buff *skb, struct fqe_tls_ctx *t)
{
	if (!enforcer_begin(skb, &t->c) || t->c.parsed != FQE_PARSE_OK)
		return 0;
	fqe_ct_key_of(&t->ct, t->c.ep->identity, t->c.p, 1);
	t->tracked = bpf_map_lookup_elem(&fqe_conntrack, &t->ct);
	t->f = bpf_map_lookup_elem(&fqe_tls_flows, &t->ct);
	t->qs = fqe_query_scratch_get();
	return t->tracked && t->qs && (t->tracked->flags & (FQE_CT_TLS_PENDING | FQE_CT_TLS_WATCH));
}

/* The check's outcome for this segment, told to the flow and reported. */
static __always_inline int tls_finish(struct __sk_buff *skb, struct fqe_tls_ctx *t, int out)
{
	enum fqe_pass pass = FQE_PASS_OTHER;
	__u8 reason = FQE_REASON_TLS_NAME;
	int tls_verdict = 1;

	skb->cb[0] = 0;
	if (out == FQE_TLS_PASS || out == FQE_TLS_ALLOW) {
		reason = FQE_REASON_NONE;
		pass = FQE_PASS_CT;
		tls_verdict = 0;
	} else if (out == FQE_TLS_HOLD && !(t->c.ep->flags & FQE_EP_AUDIT)) {
		tls_verdict = 0; /* this segment only: resent in order later */
	} else if (t->tracked) {
		tls_flow_refused(t->c.ep, &t->ct, t->tracked);
	}
	return finish(skb, t->c.cfg, t->c.ep, t->c.p, reason, pass, t->c.now, tls_verdict);
}

/*
 * A data segment of a flow under the TLS check (pending or watched): the
 * parser's walk through it (from its start, or resumed after a name).
 */
SEC("tc")
int fqe_enforcer_tls(struct __sk_buff *skb)
{
	struct fqe_tls_ctx t = {};
	int out;

	if (!tls_begin(skb, &t))
		return t.c.ep && t.c.p ? tls_finish(skb, &t, FQE_TLS_REFUSE) : TC_ACT_SHOT;
	if (skb->cb[0] == FQE_TLS_RESUME && t.f)
		out = fqe_tls_segment_walk(skb, t.f, t.qs);
	else
		out = fqe_tls_segment(skb, t.c.p, t.f, &t.ct);
	if (out == FQE_TLS_JUDGE) {
		skb->cb[0] = FQE_TLS_RESUME;
		bpf_tail_call(skb, &fqe_enforcer_tails, FQE_TAIL_TLS_NAME);
		out = FQE_TLS_REFUSE; /* no name program: the name cannot be judged */
	}
	return tls_finish(skb, &t, out);
}

/*
 * A server name the walk found whole: the first ClientHello's must be one
 * the pod may reach on this port; a later one's (after a
 * HelloRetryRequest), the same name. Then the walk goes on.
 */
SEC("tc")
int fqe_enforcer_tls_name(struct __sk_buff *skb)
{
	struct fqe_tls_bytes *store;
	struct fqe_tls_ctx t = {};
	int ok;

	if (!tls_begin(skb, &t) || skb->cb[0] != FQE_TLS_RESUME || !t.f)
		return t.c.ep && t.c.p ? tls_finish(skb, &t, FQE_TLS_REFUSE) : TC_ACT_SHOT;
	store = bpf_map_lookup_elem(&fqe_tls_bytes, &t.ct);
	if (!store || t.f->hellos >= FQE_TLS_MAX_HELLOS)
		return tls_finish(skb, &t, FQE_TLS_REFUSE);
	if (t.f->hellos == 0)
		ok = fqe_tls_name_allowed(t.f, store, t.qs, t.c.ep->identity, t.c.p->dport);
	else
		ok = fqe_tls_name_same(t.f, store, t.qs);
	if (!ok)
		return tls_finish(skb, &t, FQE_TLS_REFUSE);
	if (t.f->hellos == 0) {
		t.f->first_name_at = t.f->ext_left;
		t.f->first_name_len = t.f->name_len;
		/* allowed: watched until the server answers its last hello (the learner ends it), then the fast path */
		if (t.tracked->flags & FQE_CT_TLS_PENDING)
			t.tracked->flags = (t.tracked->flags & ~FQE_CT_TLS_PENDING) | FQE_CT_TLS_WATCH;
	}
	t.f->hellos++;
	bpf_tail_call(skb, &fqe_enforcer_tails, FQE_TAIL_TLS);
	return tls_finish(skb, &t, FQE_TLS_REFUSE); /* the rest of the segment cannot be walked */
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
