/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Per-identity counters and rate-limited drop/audit events: the one place
 * where a verdict is counted and reported.
 */
#ifndef FQE_REPORT_H
#define FQE_REPORT_H

#include "config.h"
#include "parse.h"

/* Why a packet passed, for the counters. */
enum fqe_pass {
	FQE_PASS_OTHER = 0, /* allow entry, link control */
	FQE_PASS_DNS = 1,   /* query to a trusted resolver */
	FQE_PASS_CT = 2,    /* tracked flow */
};

/* A zeroed value to start a pod's counters from: in .rodata, not on the stack. */
static const struct fqe_counters fqe_zero_counters = {};

static __always_inline struct fqe_counters *fqe_counters_get(__u32 identity)
{
	struct fqe_counters *c = bpf_map_lookup_elem(&fqe_counters, &identity);

	if (c)
		return c;
	bpf_map_update_elem(&fqe_counters, &identity, &fqe_zero_counters, BPF_NOEXIST);
	return bpf_map_lookup_elem(&fqe_counters, &identity);
}

/* Token window per identity and CPU: a flooding pod cannot starve the agent. */
static __always_inline int fqe_event_allowed(const struct fqe_config *cfg, struct fqe_counters *c, __u64 now)
{
	if (now - c->rl_window_ns >= FQE_NSEC_PER_SEC) {
		c->rl_window_ns = now;
		c->rl_count = 0;
	}
	if (c->rl_count >= fqe_events_per_sec(cfg))
		return 0;
	c->rl_count++;
	return 1;
}

/* Keep a copy in the fqe_recent ring: egressctl reads it without consuming. */
static __always_inline void fqe_remember_event(const struct fqe_event *ev)
{
	struct fqe_recent *slot;
	__u32 zero = 0, at;
	__u64 *head, seq;

	head = bpf_map_lookup_elem(&fqe_recent_seq, &zero);
	if (!head)
		return;
	/*
	 * Read, then add without fetching (BPF_XADD: 5.10 has no fetching
	 * atomics). Two CPUs may take the same slot; the later copy wins, and
	 * the ring is a best-effort view anyway.
	 */
	seq = *(volatile __u64 *)head;
	__sync_fetch_and_add(head, 1);
	at = FQE_MASK(seq, FQE_RECENT_EVENTS - 1);
	slot = bpf_map_lookup_elem(&fqe_recent, &at);
	if (!slot)
		return;
	__builtin_memcpy(&slot->ev, ev, sizeof(*ev));
	slot->seq = seq + 1;
}

static __always_inline void fqe_emit_event(struct __sk_buff *skb, const struct fqe_pkt *p, __u32 identity, __u8 reason,
					   __u8 kind, __u64 now, struct fqe_counters *c)
{
	struct fqe_event *ev = bpf_ringbuf_reserve(&fqe_events, sizeof(*ev), 0);

	if (!ev) {
		c->events_suppressed++;
		return;
	}
	ev->ts_ns = now;
	ev->identity = identity;
	ev->ifindex = skb->ifindex;
	__builtin_memcpy(ev->saddr, p->saddr, 16);
	__builtin_memcpy(ev->daddr, p->daddr, 16);
	ev->sport = p->sport;
	ev->dport = p->dport;
	ev->proto = p->proto;
	ev->reason = reason;
	ev->kind = kind;
	ev->family = p->family;
	fqe_remember_event(ev);
	bpf_ringbuf_submit(ev, 0);
}

/*
 * Count the verdict and report a refusal. reason == FQE_REASON_NONE passes.
 * Audit mode passes refused packets too, reporting them as audit events.
 * Returns 1 when the packet must be dropped.
 */
static __always_inline int fqe_report(struct __sk_buff *skb, const struct fqe_config *cfg,
				      const struct fqe_endpoint *ep, const struct fqe_pkt *p, __u8 reason,
				      enum fqe_pass pass, __u64 now)
{
	struct fqe_counters *c = fqe_counters_get(ep->identity);
	int audit = ep->flags & FQE_EP_AUDIT;

	if (!c)
		return reason != FQE_REASON_NONE && !audit;
	if (reason == FQE_REASON_NONE) {
		c->passed++;
		if (pass == FQE_PASS_DNS)
			c->dns_queries++;
		return 0; /* a tracked flow's packet is not counted (its flow was, when it opened) */
	}
	if (reason < FQE_REASON_MAX)
		c->reasons[reason]++;
	if (audit)
		c->audited++;
	else
		c->dropped++;
	if (fqe_event_allowed(cfg, c, now))
		fqe_emit_event(skb, p, ep->identity, reason, audit ? FQE_EV_AUDIT : FQE_EV_DROP, now, c);
	else
		c->events_suppressed++;
	return !audit;
}

/*
 * Did this refusal's event make it into fqe_recent (rate-limited events do
 * not)? What a refusal keeps beside its event (the refused name) is kept
 * only then.
 */
static __always_inline int fqe_event_recorded(__u32 identity, __u16 sport, __u64 now, __u8 reason)
{
	const struct fqe_recent *r;
	__u32 zero = 0, slot;
	__u64 *head = bpf_map_lookup_elem(&fqe_recent_seq, &zero);
	__u64 seq;

	if (!head)
		return 0;
	seq = *head;
	/* ours is the newest, unless another CPU wrote one since: look a few back */
	for (__u32 i = 1; i <= 4 && i <= seq; i++) {
		slot = FQE_MASK(seq - i, FQE_RECENT_EVENTS - 1);
		r = bpf_map_lookup_elem(&fqe_recent, &slot);
		if (r && r->ev.ts_ns == now && r->ev.identity == identity && r->ev.sport == sport &&
		    r->ev.reason == reason)
			return 1;
	}
	return 0;
}

#endif /* FQE_REPORT_H */
