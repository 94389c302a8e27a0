// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tc egress of a pod's host-side interface, i.e. everything the pod receives.
 *  - The inline DNS learner: a DNS answer (UDP, or TCP with the whole
 *    message in one segment) from a trusted resolver to a query this pod
 *    really sent (transport, port, id) within the query window, for a name its
 *    policy allows (the real name compared, not only its keyed hash), has
 *    its A/AAAA written into the allow trie before the pod sees the answer,
 *    so the pod's first connection is never dropped (and learning goes on
 *    while the agent is down). A query is good for one answer. Up to
 *    FQE_LEARN_MAX_ANSWERS addresses per answer. Each answer learned from is
 *    reported to the agent as one record on fqe_learned (no packet to
 *    decode). What it cannot parse (a TCP message split over segments, a
 *    compressed question name) or holds only in part is marked in
 *    fqe_tap_pass, the only way an answer reaches the agent's tap, and
 *    counted (learn_skipped).
 *  - Conntrack for flows opened towards the pod, so that its replies pass.
 * Drops only a new inbound flow past the pod's share of the flow table.
 * Built twice: with FQE_INLINE_LEARNER=0 it is conntrack only, the fallback
 * for kernels whose verifier refuses the learner.
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

#ifndef FQE_INLINE_LEARNER
#define FQE_INLINE_LEARNER 1
#endif

#ifndef AF_INET
#define AF_INET	 2
#define AF_INET6 10
#endif

/*
 * A trusted resolver's packet on its way to the pod: did it come in where
 * the node routes to the resolver (strict reverse path)? A neighbour pod
 * that forges the resolver's address sends from its own interface. A
 * resolver on the node itself (a local route) answers from no interface.
 * 1: it did (or the resolver's mode skips the check), 0: it did not (or
 * the route cannot be found: what cannot be checked is refused), -1: the
 * source is not a trusted resolver.
 */
static __always_inline int resolver_path_ok(struct __sk_buff *skb, const struct fqe_pkt *p)
{
	const __u32 *mode = bpf_map_lookup_elem(&fqe_resolvers, p->saddr);
	struct bpf_fib_lookup fib = {};
	long ret;

	if (!mode)
		return -1;
	if (*mode & FQE_RESOLVER_NO_PATH_CHECK)
		return 1;
	fib.ifindex = skb->ingress_ifindex ? skb->ingress_ifindex : skb->ifindex;
	if (p->family == 4) {
		fib.family = AF_INET;
		__builtin_memcpy(&fib.ipv4_dst, p->saddr + 12, 4);
		__builtin_memcpy(&fib.ipv4_src, p->daddr + 12, 4);
	} else {
		fib.family = AF_INET6;
		__builtin_memcpy(fib.ipv6_dst, p->saddr, 16);
		__builtin_memcpy(fib.ipv6_src, p->daddr, 16);
	}
	fib.l4_protocol = p->proto;
	ret = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (ret == BPF_FIB_LKUP_RET_SUCCESS || ret == BPF_FIB_LKUP_RET_NO_NEIGH)
		return skb->ingress_ifindex != 0 && fib.ifindex == skb->ingress_ifindex;
	return ret == BPF_FIB_LKUP_RET_NOT_FWDED && skb->ingress_ifindex == 0;
}

#if FQE_INLINE_LEARNER
#include "lib/dns.h"

#define FQE_DEFAULT_MAX_TTL_S 86400

/* Scratch space for one answer (per CPU), shared by the learner's stages. */
FQE_PERCPU_SCRATCH(fqe_scratch, struct fqe_learn_scratch, learn_scratch)

/* The record being built for fqe_learned (per CPU): too big for the stack. */
FQE_PERCPU_SCRATCH(fqe_rec_scratch, struct fqe_learned_rec, learn_record)

_Static_assert(FQE_LEARNED_MAX_ADDRS == FQE_LEARN_MAX_ANSWERS, "a record holds every address learned");

/*
 * Ports of the new entry: the rule's, united with an unexpired old entry's.
 * A tls rule (FQE_PROTO_TLS) and a TCP or TCP+UDP rule for the same port
 * may both stay: the enforcer lets the one without the check win. A rule is
 * compared as one 32-bit word (port, proto, pad).
 */
static __always_inline void merge_ports(struct fqe_allow_val *v, const struct fqe_allow_val *old,
					const struct fqe_policy_val *rule)
{
	const __u64 *rp = (const __u64 *)rule->ports, *op;
	__u32 *vp = (__u32 *)v->ports;
	const __u32 *ow;

	_Static_assert(sizeof(struct fqe_port_rule) == 4 && FQE_MAX_PORT_RULES == 8, "eight 32-bit rules");
	v->nports = rule->nports > FQE_MAX_PORT_RULES ? FQE_MAX_PORT_RULES : rule->nports;
	__builtin_memcpy(v->ports, rule->ports, sizeof(v->ports));
	if (!old)
		return;
	if (old->nports == 0 || rule->nports == 0) {
		v->nports = 0; /* either grants any port */
		return;
	}
	op = (const __u64 *)old->ports;
	if (old->nports == v->nports && ((op[0] ^ rp[0]) | (op[1] ^ rp[1]) | (op[2] ^ rp[2]) | (op[3] ^ rp[3])) == 0)
		return; /* the same rules (the same name answered again) */
	ow = (const __u32 *)old->ports;
	fqe_for(i, FQE_MAX_PORT_RULES)
	{
		__u64 o, vn, found = 0;

		fqe_barrier();
		if (i >= FQE_READ(old->nports))
			break;
		o = FQE_READ(ow[i]);
		vn = FQE_READ(v->nports);
#pragma unroll
		for (int j = 0; j < FQE_MAX_PORT_RULES; j++)
			found |= fqe_bit_lt(j, vn) & fqe_bit_eq(vp[j], o);
		if (found || vn >= FQE_MAX_PORT_RULES)
			continue;
		vp[FQE_MASK(vn, FQE_MAX_PORT_RULES - 1)] = o;
		v->nports = vn + 1;
	}
	fqe_barrier();
}

/*
 * Write (or widen) the allow entry of one learned address; returns the
 * expiry it got, or 0 when it could not be written: a new entry past the
 * pod's share of fqe_allow (so that one pod cannot fill the node's map), or
 * the map full.
 */
static __always_inline __u64 write_allow(struct fqe_learn_scratch *s, __u32 identity, const __u8 *addr, __u64 expires,
					 __u64 name_hash, const struct fqe_policy_val *rule, __u64 now)
{
	struct fqe_allow_key k = { .prefixlen = 32 + 128 };

	k.identity = identity;
	struct fqe_allow_val *v = &s->allow;
	struct fqe_allow_val *old;
	struct fqe_pod_share *share;
	int added;

	__builtin_memcpy(k.addr, addr, 16);
	__builtin_memset(v, 0, sizeof(*v));
	old = bpf_map_lookup_elem(&fqe_allow, &k);
	/* a hit may be a covering prefix (allowCIDRs live elsewhere, but an LPM hit is not this host's entry) */
	added = !old || old->source == FQE_SRC_STATIC;
	share = fqe_pod_share_get(identity);
	if (added && (!share || share->allow >= FQE_READ(s->job.ips_per_pod)))
		return 0;
	/* A covering prefix (allowCIDRs) is not this host's entry. */
	if (old && (old->source == FQE_SRC_STATIC || (old->expires_ns && old->expires_ns <= now)))
		old = NULL;
	v->expires_ns = expires;
	if (old && old->expires_ns > expires)
		v->expires_ns = old->expires_ns;
	v->name_hash = name_hash;
	v->source = FQE_SRC_KERNEL;
	merge_ports(v, old, rule);
	if (bpf_map_update_elem(&fqe_allow, &k, v, BPF_ANY) < 0)
		return 0;
	if (added && share)
		__sync_fetch_and_add(&share->allow, 1);
	return v->expires_ns;
}

/* Start the record of an answer learned from: everything but the addresses. */
static __always_inline void record_begin(struct fqe_learned_rec *rec, const struct fqe_learn_scratch *s, __u32 identity,
					 __u64 name_hash, const struct fqe_policy_val *rule, __u64 now)
{
	rec->ts_ns = now;
	rec->name_hash = name_hash;
	rec->identity = identity;
	rec->naddrs = 0;
	rec->name_len = s->nb.dotted_len < FQE_NAME_LEN ? s->nb.dotted_len : FQE_NAME_LEN - 1;
	rec->flags = 0;
	rec->nports = rule->nports > FQE_MAX_PORT_RULES ? FQE_MAX_PORT_RULES : rule->nports;
	__builtin_memcpy(rec->ports, rule->ports, sizeof(rec->ports));
	__builtin_memcpy(rec->name, s->nb.dotted, FQE_NAME_LEN);
}

/*
 * Hand the record to the agent. Wake-ups are batched: the agent drains the
 * ring on its own clock (every 100 ms) and is woken once when much is
 * waiting. A full ring
 * loses the record, counted in fqe_learned_lost (the agent re-reads fqe_allow).
 */
static __always_inline void record_submit(struct fqe_learned_rec *rec, int n)
{
	__u64 size = sizeof(*rec) - sizeof(rec->addrs) + (__u64)n * sizeof(rec->addrs[0]);
	__u64 flags = BPF_RB_NO_WAKEUP;
	__u64 avail;
	__u32 zero = 0;
	__u64 *lost;

	if (n <= 0 || n > FQE_LEARNED_MAX_ADDRS)
		return;
	rec->naddrs = n;
	/* wake the agent once, as the waiting data crosses the mark (not on every
	 * record past it: while nobody reads, that would cost every answer) */
	avail = bpf_ringbuf_query(&fqe_learned, BPF_RB_AVAIL_DATA);
	if (avail < FQE_LEARNED_WAKEUP_BYTES && avail + size >= FQE_LEARNED_WAKEUP_BYTES)
		flags = BPF_RB_FORCE_WAKEUP;
	asm volatile("" : "+r"(size)); /* one register, checked once, then used */
	if (size > sizeof(*rec))
		return;
	if (bpf_ringbuf_output(&fqe_learned, rec, size, flags) == 0)
		return;
	lost = bpf_map_lookup_elem(&fqe_learned_lost, &zero);
	if (lost)
		(*lost)++;
}

/*
 * The answer to this query goes to the agent's tap: it is the only way an
 * answer reaches userspace (and, being the query's record now, the agent's
 * proof that the pod asked). TCP marks the connection too, for the segments
 * that follow.
 */
static __always_inline void mark_for_tap(const struct fqe_config *cfg, const struct fqe_query_key *qk, __u8 proto,
					 __u64 now)
{
	struct fqe_tap_key k = {
		.identity = qk->identity, .pod_port = qk->sport, .dns_id = qk->dns_id, .proto = proto
	};
	struct fqe_tap_val v = { .until_ns = now + fqe_query_window_ns(cfg) };

	__builtin_memcpy(k.resolver, qk->resolver, 16);
	bpf_map_update_elem(&fqe_tap_pass, &k, &v, BPF_ANY);
	if (proto == IPPROTO_TCP) {
		k.dns_id = 0;
		bpf_map_update_elem(&fqe_tap_pass, &k, &v, BPF_ANY);
	}
}

/*
 * Where the DNS message lies in this packet: UDP, the whole payload; TCP, the
 * payload after its two-byte length prefix. Returns 1 when the segment holds
 * exactly one whole message, 0 when it starts one it does not hold whole (a
 * message split over segments, or several in one), -1 when it carries no DNS
 * header at all (a bare ACK, FIN, or too short to tell).
 */
static __always_inline int dns_message(struct __sk_buff *skb, const struct fqe_pkt *p, __u32 *off, __u32 *len)
{
	__be16 prefix;

	*off = p->payload_off;
	*len = p->payload_len;
	if (p->proto != IPPROTO_TCP)
		return *len >= sizeof(struct fqe_dns_hdr) ? 1 : -1;
	if (*len < 2 + sizeof(struct fqe_dns_hdr) || bpf_skb_load_bytes(skb, *off, &prefix, 2) < 0)
		return -1;
	*off += 2;
	*len -= 2;
	/* No reassembly in the kernel: the rest of a split message is the agent's. */
	return bpf_ntohs(prefix) == *len ? 1 : 0;
}

/*
 * Learning runs as three tail-called stages, each a program the verifier
 * checks on its own (fqe_learner_tails): the question (fqe_learner_dns),
 * the answer section (fqe_learner_answers), the writes (fqe_learner_write,
 * FQE_WRITES_PER_CALL addresses a call, calling itself for the rest). What
 * one stage hands the next is in fqe_scratch (struct fqe_learn_job): the
 * stages of one object only ever call each other. A stage that cannot call
 * the next leaves the answer to the agent's tap.
 */
#define FQE_TAIL_LEARN	    0
#define FQE_TAIL_ANSWERS    1
#define FQE_TAIL_WRITE	    2
#define FQE_LEARNER_TAILS   3
#define FQE_WRITES_PER_CALL 32

int fqe_learner_dns(struct __sk_buff *skb);

/*
 * The learner's tail calls. Pinned, so that they stay while the agent is
 * away (a prog array empties when its last user reference goes); the loader
 * fills it with the object's own programs. The first stage finds all it
 * needs in the packet and the maps, so an older main program may call a
 * newer one during an upgrade; a change to what the stages pass each other
 * takes a new map name.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, FQE_LEARNER_TAILS);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fqe_learner_tails SEC(".maps");

/*
 * Is this an answer from a trusted resolver, to a query the pod sent (its
 * record in fqe_queries)? Fills the query key; the main program asks before
 * it calls the learner (an unsolicited answer costs no tail call), and the
 * first stage again (it is called with the packet alone).
 */
static __always_inline const struct fqe_query_val *answered_query(struct __sk_buff *skb, const struct fqe_pkt *p,
								  __u32 identity, struct fqe_query_key *qk,
								  struct fqe_dns_hdr *hdr, __u32 *off, __u32 *len,
								  int *whole)
{
	/* struct fqe_resolver_key is the address alone: the stack stays small */
	if (!bpf_map_lookup_elem(&fqe_resolvers, p->saddr))
		return NULL;
	*whole = dns_message(skb, p, off, len);
	if (*whole < 0 || bpf_skb_load_bytes(skb, *off, hdr, sizeof(*hdr)) < 0)
		return NULL;
	qk->identity = identity;
	qk->sport = p->dport;
	qk->dns_id = bpf_ntohs(hdr->id);
	__builtin_memcpy(qk->resolver, p->saddr, 16);
	return bpf_map_lookup_elem(&fqe_queries, qk);
}

/* The answer goes to the agent's tap (counted), its query is used up. */
static __always_inline void learn_skip(struct fqe_learn_scratch *s, __u32 identity)
{
	struct fqe_counters *c = fqe_counters_get(identity);

	if (c)
		c->learn_skipped++;
	mark_for_tap(fqe_config_get(), &s->job.qk, s->job.proto, s->job.now);
	bpf_map_delete_elem(&fqe_queries, &s->job.qk);
}

/*
 * Stage 1: a DNS answer (UDP, or TCP in one segment) on its way to the pod,
 * from a trusted resolver, to a query the pod sent: its question name, and
 * the pod's rule for it.
 */
SEC("tc")
int fqe_learner_dns(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	const struct fqe_endpoint *ep = bpf_map_lookup_elem(&fqe_endpoints, &ifindex);
	struct fqe_pkt *p = fqe_pkt_get();
	struct fqe_learn_scratch *s = learn_scratch();
	const struct fqe_config *cfg = fqe_config_get();
	struct fqe_owner_key ok = {};
	const struct fqe_query_val *sent;
	const struct fqe_policy_val *rule;
	struct fqe_counters *c;
	struct fqe_dns_hdr hdr;
	__u32 off, len, identity;
	int refused = 0, whole;
	__u16 flags;

	if (!ep || !p || !s || fqe_parse(skb, p) != FQE_PARSE_OK)
		return TC_ACT_UNSPEC;
	if (cfg && (cfg->flags & FQE_CFG_INLINE_LEARNER_OFF))
		return TC_ACT_UNSPEC;
	identity = ep->identity;
	__builtin_memset(&s->job, 0, sizeof(s->job));
	sent = answered_query(skb, p, identity, &s->job.qk, &hdr, &off, &len, &whole);
	if (!sent)
		return TC_ACT_UNSPEC; /* unsolicited: adds nothing */
	ok.identity = identity;
	__builtin_memcpy(ok.addr, p->daddr, 16);
	if (!bpf_map_lookup_elem(&fqe_owners, &ok))
		return TC_ACT_UNSPEC;
	flags = bpf_ntohs(hdr.flags);
	if (!(flags & 0x8000) || ((flags >> 11) & 0xf) != 0 || bpf_ntohs(hdr.qdcount) != 1)
		return TC_ACT_UNSPEC;
	s->job.now = bpf_ktime_get_ns();
	s->job.identity = identity;
	s->job.proto = p->proto;
	if (sent->proto != p->proto || fqe_older_than(s->job.now, sent->sent_ns, fqe_query_window_ns(cfg))) {
		bpf_map_delete_elem(&fqe_queries, &s->job.qk);
		return TC_ACT_UNSPEC; /* asked over another transport, or too long ago: adds nothing */
	}
	if (!whole || fqe_dns_read_qname(skb, off + sizeof(hdr), off + len, &s->nb, fqe_name_hash_key(), 1) < 0) {
		learn_skip(s, identity);
		return TC_ACT_UNSPEC;
	}
	rule = fqe_name_rule(&s->nb, identity, &s->job.name_hash, &refused);
	if (!rule) {
		c = fqe_counters_get(identity);
		if (refused && c)
			c->learn_refused++;
		bpf_map_delete_elem(&fqe_queries, &s->job.qk);
		return TC_ACT_UNSPEC; /* a name this pod may not reach */
	}
	s->job.rule = *rule;
	s->off = s->nb.end + 4;
	s->end = off + len;
	s->records = bpf_ntohs(hdr.ancount);
	bpf_tail_call(skb, &fqe_learner_tails, FQE_TAIL_ANSWERS);
	learn_skip(s, identity);
	return TC_ACT_UNSPEC;
}

/* Stage 2: the answer section's addresses; the record's header. */
SEC("tc")
int fqe_learner_answers(struct __sk_buff *skb)
{
	struct fqe_learn_scratch *s = learn_scratch();
	struct fqe_learned_rec *rec;
	const struct fqe_config *cfg = fqe_config_get();
	struct fqe_pod_share *share;
	__u32 lo, hi;
	int partial = 0, n;

	if (!s)
		return TC_ACT_UNSPEC;
	rec = learn_record();
	if (!rec)
		goto skip;
	n = fqe_dns_read_answers(skb, s->off, s->end, s->records, s, &partial);
	if (n < 0)
		goto skip;
	s->job.partial = partial;
	fqe_dns_lower_dotted(&s->nb);
	s->job.ips_per_pod = fqe_ips_per_pod(fqe_limits_get());
	share = fqe_pod_share_get(s->job.identity);
	/*
	 * fqe_names is for display (the record carries the name): a pod past its
	 * share of fqe_allow adds no names either, so one pod's names stay
	 * bounded by its share until the agent prunes them.
	 */
	if (share && share->allow < FQE_READ(s->job.ips_per_pod) && !bpf_map_lookup_elem(&fqe_names, &s->job.name_hash))
		bpf_map_update_elem(&fqe_names, &s->job.name_hash, s->nb.dotted, BPF_ANY);
	record_begin(rec, s, s->job.identity, s->job.name_hash, &s->job.rule, s->job.now);
	/* what every write needs, once */
	lo = cfg ? cfg->min_ttl_s : 0;
	hi = cfg && cfg->max_ttl_s ? cfg->max_ttl_s : FQE_DEFAULT_MAX_TTL_S;
	s->job.min_ttl_s = lo;
	s->job.max_ttl_s = hi < lo ? lo : hi;
	s->job.grace_ns = fqe_connect_grace_ns(cfg);
	s->job.written = 0;
	s->job.unwritten = 0;
	bpf_tail_call(skb, &fqe_learner_tails, FQE_TAIL_WRITE);
skip:
	learn_skip(s, s->job.identity);
	return TC_ACT_UNSPEC;
}

/* How long an address stays allowed: the TTL clamped, never under the grace. */
static __always_inline __u64 job_ttl_ns(const struct fqe_learn_job *job, __u32 ttl)
{
	__u64 ns;

	if (ttl < job->min_ttl_s)
		ttl = job->min_ttl_s;
	if (ttl > job->max_ttl_s)
		ttl = job->max_ttl_s;
	ns = (__u64)ttl * FQE_NSEC_PER_SEC;
	return ns < job->grace_ns ? job->grace_ns : ns;
}

/* Stage 3: the allow entries, FQE_WRITES_PER_CALL a call; then the record and the counters. */
SEC("tc")
int fqe_learner_write(struct __sk_buff *skb)
{
	struct fqe_learn_scratch *s = learn_scratch();
	struct fqe_learned_rec *rec;
	struct fqe_counters *c;

	if (!s)
		return TC_ACT_UNSPEC;
	rec = learn_record();
	if (!rec)
		goto skip;
	fqe_for(k, FQE_WRITES_PER_CALL)
	{
		__u32 i, slot, ttl;
		struct fqe_learned_addr *a;

		fqe_barrier();
		i = FQE_READ(s->job.written);
		if (i >= FQE_READ(s->n))
			break;
		slot = FQE_MASK(i, FQE_LEARN_MAX_ANSWERS - 1);
		a = &rec->addrs[slot];
		ttl = s->ttls[slot];
		if (s->min_cname_ttl < ttl)
			ttl = s->min_cname_ttl;
		__builtin_memcpy(a->addr, s->ips[slot], 16);
		a->ttl_s = ttl;
		a->expires_ns = write_allow(s, s->job.identity, s->ips[slot], s->job.now + job_ttl_ns(&s->job, ttl),
					    s->job.name_hash, &s->job.rule, s->job.now);
		a->flags = a->expires_ns ? 0 : FQE_ADDR_UNWRITTEN;
		s->job.unwritten += !a->expires_ns;
		s->job.written = i + 1;
	}
	fqe_barrier();
	if (s->job.written < s->n) {
		bpf_tail_call(skb, &fqe_learner_tails, FQE_TAIL_WRITE);
		goto skip; /* the rest is the agent's */
	}
	c = fqe_counters_get(s->job.identity);
	if (c) {
		c->learned += s->n - s->job.unwritten;
		c->learn_unwritten += s->job.unwritten;
	}
	if (s->job.partial)
		rec->flags |= FQE_REC_PARTIAL;
	record_submit(rec, s->n);
	if (s->job.partial)
		goto skip; /* the first FQE_LEARN_MAX_ANSWERS learned; the agent adds the rest */
	bpf_map_delete_elem(&fqe_queries, &s->job.qk);
	return TC_ACT_UNSPEC;
skip:
	learn_skip(s, s->job.identity);
	return TC_ACT_UNSPEC;
}
#endif /* FQE_INLINE_LEARNER */

/*
 * Is the destination the pod's own address? Only then is an inbound flow
 * tracked: the enforcer's fast path takes a tracked flow's pod address as
 * checked, so no flow may be keyed by an address the pod does not own.
 */
static __always_inline int pod_owns(__u32 identity, const __u8 *addr)
{
	struct fqe_owner_key k = { .identity = identity };

	__builtin_memcpy(k.addr, addr, 16);
	return bpf_map_lookup_elem(&fqe_owners, &k) != NULL;
}

/*
 * A trusted resolver's SYN-ACK to the pod: the pod's DNS-over-TCP stream
 * starts at its ack (the query filter judges from there, in order). A
 * stream already begun keeps its place: a SYN-ACK sent again moves nothing.
 */
static __always_inline void dns_tcp_begin(__u32 identity, const struct fqe_pkt *p)
{
	struct fqe_dns_tcp s = { .next_seq = p->tcp_ack };
	struct fqe_ct_key k;

	if (!bpf_map_lookup_elem(&fqe_resolvers, p->saddr) || !pod_owns(identity, p->daddr))
		return;
	fqe_ct_key_of(&k, identity, p, 0);
	bpf_map_update_elem(&fqe_dns_tcp, &k, &s, BPF_NOEXIST);
}

/* The random of a ServerHello that is a HelloRetryRequest (RFC 8446, 4.1.3). */
static const __u8 fqe_tls_hrr_random[32] __attribute__((aligned(8))) = {
	0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
	0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
};

/* Does the server's first data ask for a second ClientHello (a HelloRetryRequest)? */
static __always_inline int tls_server_retries(struct __sk_buff *skb, const struct fqe_pkt *p)
{
	/* record header (5), handshake type and length (4), version (2), then the random */
	const __u64 *hrr = (const __u64 *)fqe_tls_hrr_random;
	__u64 random[4];
	__u8 head[6];

	if (p->payload_len < 11 + sizeof(random) || bpf_skb_load_bytes(skb, p->payload_off, head, sizeof(head)) < 0 ||
	    bpf_skb_load_bytes(skb, p->payload_off + 11, random, sizeof(random)) < 0)
		return 0;
	return head[0] == 22 && head[5] == 2 && /* a handshake record, a server_hello */
	       ((random[0] ^ hrr[0]) | (random[1] ^ hrr[1]) | (random[2] ^ hrr[2]) | (random[3] ^ hrr[3])) == 0;
}

/*
 * The server's half of a flow under the TLS check. Its SYN-ACK gives the
 * stream's start: the client's first data byte is the one it acks (set
 * once, before anything is judged: the pod's own SYNs never set it). Its
 * first data ends the watch (it has read the whole ClientHello, whose name
 * was allowed), unless it is a HelloRetryRequest: the client's second
 * ClientHello is then checked too, and the server's answer to that ends it.
 */
static __always_inline void tls_server_packet(struct __sk_buff *skb, const struct fqe_pkt *p,
					      const struct fqe_ct_key *ct, struct fqe_ct_val *tracked)
{
	struct fqe_tls_flow *f;

	if ((p->tcp_flags & (FQE_TCP_SYN | FQE_TCP_ACK)) == (FQE_TCP_SYN | FQE_TCP_ACK)) {
		f = bpf_map_lookup_elem(&fqe_tls_flows, ct);
		if (f && !f->based && !f->parsed) {
			f->base_seq = p->tcp_ack;
			f->next_seq = p->tcp_ack;
			f->based = 1;
		}
		return;
	}
	if (!(tracked->flags & FQE_CT_TLS_WATCH) || p->payload_len == 0 || tls_server_retries(skb, p))
		return;
	tracked->flags &= ~FQE_CT_TLS_WATCH;
	bpf_map_delete_elem(&fqe_tls_flows, ct);
	bpf_map_delete_elem(&fqe_tls_bytes, ct);
}

/* Does this packet open a flow (rather than answer one the pod opened)? */
static __always_inline int opens_flow(const struct fqe_pkt *p)
{
	if (p->proto == IPPROTO_TCP)
		return (p->tcp_flags & (FQE_TCP_SYN | FQE_TCP_ACK)) == FQE_TCP_SYN;
	if (p->proto == IPPROTO_ICMP)
		return p->icmp_type == 8; /* echo request */
	if (p->proto == IPPROTO_ICMPV6)
		return p->icmp_type == 128; /* echo request */
	return 1;			    /* UDP and the rest: any packet */
}

SEC("tc")
int fqe_learner(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	const struct fqe_endpoint *ep = bpf_map_lookup_elem(&fqe_endpoints, &ifindex);
	const struct fqe_config *cfg;
	struct fqe_ct_val *tracked;
	struct fqe_ct_key ct;
	struct fqe_pkt *p = fqe_pkt_get();
	__u64 now;

	if (!ep || !(ep->flags & (FQE_EP_ENFORCE | FQE_EP_AUDIT)) || !p)
		return TC_ACT_UNSPEC;
	if (fqe_parse(skb, p) != FQE_PARSE_OK || p->frag || fqe_is_icmp6_link_control(p))
		return TC_ACT_UNSPEC;

	cfg = fqe_config_get();
	now = bpf_ktime_get_ns();
	if (p->sport == FQE_DNS_PORT && (p->proto == IPPROTO_UDP || p->proto == IPPROTO_TCP)) {
		int from;

		/*
		 * Came in on this very interface: the enforcer's own answer to a
		 * refused query (NXDOMAIN or RST), turned around. A pod cannot
		 * send itself another: the enforcer drops what it sends from an
		 * address not its own. It carries no address to learn.
		 */
		if (skb->ingress_ifindex == skb->ifindex)
			return TC_ACT_UNSPEC;
		from = resolver_path_ok(skb, p);

		if (from == 0) /* a forged answer (a neighbour with the resolver's address): it teaches nothing */
			return fqe_report(skb, cfg, ep, p, FQE_REASON_SPOOFED_ANSWER, FQE_PASS_OTHER, now)
				       ? TC_ACT_SHOT
				       : TC_ACT_UNSPEC;
		if (from < 0)
			return TC_ACT_UNSPEC;
		if (p->proto == IPPROTO_TCP &&
		    (p->tcp_flags & (FQE_TCP_SYN | FQE_TCP_ACK)) == (FQE_TCP_SYN | FQE_TCP_ACK))
			dns_tcp_begin(ep->identity, p);
#if FQE_INLINE_LEARNER
		struct fqe_query_key qk = {};
		struct fqe_dns_hdr hdr;
		__u32 off, len;
		int whole;

		if (answered_query(skb, p, ep->identity, &qk, &hdr, &off, &len, &whole))
			bpf_tail_call(skb, &fqe_learner_tails, FQE_TAIL_LEARN);
#endif
		return TC_ACT_UNSPEC; /* DNS answers: the learner's, not conntrack's */
	}
	fqe_ct_key_of(&ct, ep->identity, p, 0);
	tracked = fqe_ct_lookup(cfg, &ct, p, now);
	if (tracked && (tracked->flags & FQE_CT_TLS_CHECK))
		tls_server_packet(skb, p, &ct, tracked);
	if (tracked) {
		if (!fqe_ct_audit_ended(tracked, ep))
			fqe_ct_refresh(tracked, p, now);
	} else if (opens_flow(p) && pod_owns(ep->identity, p->daddr) &&
		   fqe_ct_create(cfg, &ct, now, FQE_CT_INBOUND) < 0) {
		/* past the pod's share of the flow table: refuse the new flow */
		if (fqe_report(skb, cfg, ep, p, FQE_REASON_FLOW_QUOTA, FQE_PASS_OTHER, now))
			return TC_ACT_SHOT;
	}
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
