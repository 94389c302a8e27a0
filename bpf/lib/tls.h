/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The TLS server name check: the enforcer's judgement of a TCP
 * flow that only `tls` port rules allow. Such a flow is tracked with
 * FQE_CT_TLS_PENDING from its SYN; its segments do not take the tracked
 * fast path until the ClientHello has shown its server name (SNI).
 *
 * The parser (a state machine on bytes: bpf/lib/tls_parse.h) walks the
 * pod's byte stream by fields, not bytes: each step of a bounded loop
 * (FQE_TLS_STEPS a segment) takes a TLS record header (handshake records
 * only) or the part of one ClientHello field that lies in this segment and
 * record, and a field it skips costs one step however long it is. Here: the
 * bytes read from the segments, and the state kept per flow in
 * fqe_tls_flows, so the hello may
 * span segments and records. Segments pass until the name is seen; only
 * the bytes right after the last one taken are parsed. Every byte taken
 * goes into the flow's store (fqe_tls_bytes, FQE_TLS_MAX_BYTES), and a
 * segment that brings bytes again (a retransmission, or one cut
 * differently) passes only when they are the bytes the store holds:
 * compared byte for byte, so the server, whichever copy it reads, reads
 * what was judged. New bytes after them are parsed as usual. Other bytes in
 * the judged range, and anything past a gap, are dropped (the flow lives
 * on): nothing unchecked reaches the server, and the client resends in
 * order.
 *
 * The name is compared the learner's way (bpf/lib/name_match.h): keyed hash to
 * find the pod's rule, then the real bytes, exact or `*.` on a label
 * boundary, case-insensitive, a trailing dot ignored; a name that is not a
 * host name (bytes other than letters, digits and hyphens, an empty label,
 * a hyphen at a label's edge) is refused. It passes when that
 * rule allows TCP to the flow's port (a tls, tcp or any-protocol rule, or
 * no port at all). The flow is then watched (FQE_CT_TLS_WATCH) until the
 * server sends its first data, which it does only once it has read the
 * whole ClientHello: until then a byte of the hello sent again must be the
 * byte judged (a pod could have the first copy die on the way, with a low
 * TTL, and resend other bytes). The learner clears the watch, and frees
 * the state, when it sees the server's data; from then on the flow costs
 * what any tracked flow costs.
 *
 * Refused (another name, no SNI, not a ClientHello, no name within
 * FQE_TLS_MAX_BYTES or FQE_TLS_MAX_SEGMENTS, parser state lost): the
 * segment becomes a RST to the pod, and the flow is marked
 * FQE_CT_TLS_REFUSED (and closing): every later packet of it is dropped. In
 * audit mode the refusal is reported and the flow passes as an audited one.
 *
 * It runs in the enforcer's tail call fqe_enforcer_tls (enforcer.bpf.c).
 */
#ifndef FQE_TLS_H
#define FQE_TLS_H

#include "conntrack.h"
#include "report.h"
#include "name_match.h"
#include "reply.h"
#include "scratch.h"
#include "tls_step.h"

#define FQE_TLS_CHUNK	   64  /* bytes copied or compared at a time (a power of two) */
#define FQE_TLS_STEPS	   128 /* parser steps (record headers and fields) per segment */
#define FQE_TLS_MAX_HELLOS 2   /* ClientHellos a flow may send: the first, and one after a HelloRetryRequest */

/*
 * Walk on through the segment's new bytes (set up in w: len at packet
 * offset off, base the stream offset of the first, at the bytes walked), at
 * most FQE_TLS_STEPS steps: FQE_TLS_MORE (all walked), FQE_TLS_NAME (a
 * server name is whole: name_len bytes from stream offset ext_left; the
 * walk stops right after it) or FQE_TLS_BAD. A segment the steps do not
 * cover is BAD: nothing unparsed passes.
 */
static __always_inline int fqe_tls_parse(struct __sk_buff *skb, struct fqe_tls_flow *f, struct fqe_tls_walk *w)
{
	w->result = FQE_TLS_MORE;
	fqe_for(i, FQE_TLS_STEPS)
	{
		if (fqe_tls_step(skb, f, w))
			break;
	}
	fqe_barrier();
	if (w->result == FQE_TLS_MORE && w->at < w->len)
		return FQE_TLS_BAD;
	return w->result;
}

/*
 * Copy w->copy_len bytes of the segment at packet offset w->copy_off into
 * the flow's store at stream offset w->copy_at (the caller keeps copy_at +
 * copy_len <= FQE_TLS_MAX_BYTES).
 */
static __always_inline int fqe_tls_store(struct __sk_buff *skb, struct fqe_tls_bytes *store, struct fqe_tls_seg *w)
{
	fqe_for(c, FQE_TLS_MAX_BYTES / FQE_TLS_CHUNK)
	{
		__u32 done = c * FQE_TLS_CHUNK, k_minus_1, dst;

		fqe_barrier();
		k_minus_1 = FQE_READ(w->copy_len) - done - 1; /* as unsigned: huge once past the end */
		if (k_minus_1 >= FQE_TLS_MAX_BYTES)
			break;
		if (k_minus_1 > FQE_TLS_CHUNK - 1)
			k_minus_1 = FQE_TLS_CHUNK - 1;
		asm volatile("%0 &= 0x3f" : "+r"(k_minus_1)); /* one register: 1 <= size <= 64 */
		dst = FQE_MASK(FQE_READ(w->copy_at) + done, FQE_TLS_MAX_BYTES - 1);
		if (bpf_skb_load_bytes(skb, FQE_READ(w->copy_off) + done, &store->b[dst], k_minus_1 + 1) < 0)
			return -1;
	}
	fqe_barrier();
	return 0;
}

/*
 * Are the w->copy_len bytes of the segment at packet offset w->copy_off the
 * bytes the store holds at stream offset w->copy_at? Compared eight at a
 * time.
 */
static __always_inline int fqe_tls_same_bytes(struct __sk_buff *skb, const struct fqe_tls_bytes *store,
					      struct fqe_query_scratch *qs)
{
	struct fqe_tls_seg *w = &qs->tseg;

	fqe_for(c, FQE_TLS_MAX_BYTES / FQE_TLS_CHUNK)
	{
		__u32 done = c * FQE_TLS_CHUNK, k_minus_1, src;

		fqe_barrier();
		k_minus_1 = FQE_READ(w->copy_len) - done - 1;
		if (k_minus_1 >= FQE_TLS_MAX_BYTES)
			break;
		if (k_minus_1 > FQE_TLS_CHUNK - 1)
			k_minus_1 = FQE_TLS_CHUNK - 1;
		asm volatile("%0 &= 0x3f" : "+r"(k_minus_1));
		if (bpf_skb_load_bytes(skb, FQE_READ(w->copy_off) + done, qs->chunk, k_minus_1 + 1) < 0)
			return 0;
		w->chunk_len = k_minus_1 + 1;
		src = FQE_MASK(FQE_READ(w->copy_at) + done, FQE_TLS_MAX_BYTES - 1);
		fqe_for(i, FQE_TLS_CHUNK / 8)
		{
			__u32 valid;
			__u64 diff;

			fqe_barrier();
			valid = FQE_READ(w->chunk_len) - i * 8; /* bytes of this word in the segment */
			if (valid > FQE_TLS_CHUNK)
				break; /* past the end (the subtraction wrapped) */
			diff = *(const __u64 *)&qs->chunk[i * 8] ^ *(const __u64 *)&store->b[src + i * 8];
			if (valid < 8)
				diff &= (1ULL << (valid * 8)) - 1; /* little-endian: the first bytes */
			if (diff)
				return 0;
		}
	}
	fqe_barrier();
	return 1;
}

/* What egressctl drops shows for a refusal without a server name. */
static __always_inline void fqe_tls_no_name(struct fqe_query_scratch *qs)
{
	qs->refused.name_len = 0;
	qs->refused.flags = 0;
	qs->refused.qtype = 0;
	qs->refused.proto = IPPROTO_TCP;
}

/* May this rule's name be reached over TCP on this port? */
static __always_inline int fqe_tls_rule_allows(const struct fqe_policy_val *rule, __u16 port)
{
	if (rule->nports == 0)
		return 1;
#pragma unroll
	for (int i = 0; i < FQE_MAX_PORT_RULES; i++) {
		if (i >= rule->nports)
			break;
		if (rule->ports[i].port == port && (rule->ports[i].proto == 0 || rule->ports[i].proto == IPPROTO_TCP ||
						    rule->ports[i].proto == FQE_PROTO_TLS))
			return 1;
	}
	return 0;
}

/*
 * Pass 1 over the server name (n dotted bytes at stream offset start): its
 * wire format into qs->refused.wire, labels and bytes checked. Returns 1
 * when the walk reached the end (the name can be shown), with *bad set when
 * it is not a host name.
 */
static __always_inline int fqe_tls_name_wire(const struct fqe_tls_bytes *store, struct fqe_query_scratch *qs)
{
	struct fqe_tls_name_walk *t = &qs->tn;

	t->label_start = 0;
	t->bad = 0;
	t->stop = 0;
	fqe_for(i, FQE_TLS_MAX_NAME + 1)
	{
		__u32 n, start, len;
		__u8 b;

		fqe_barrier();
		n = FQE_READ(t->n);
		start = FQE_READ(t->start);
		if (i > n)
			break;
		b = i < n ? store->b[FQE_MASK(start + i, FQE_TLS_MAX_BYTES - 1)] : '.';
		if (b != '.') {
			qs->refused.wire[FQE_MASK(i + 1, FQE_NAME_LEN - 1)] = b;
			t->bad |= fqe_name_ldh(b) ^ 1; /* still shown (escaped), and refused */
			continue;
		}
		len = i - t->label_start;
		if (len == 0 || len > 63) {
			t->stop = 1; /* an empty or over-long label: no wire name to show */
			break;
		}
		/* a label neither starts nor ends with a hyphen, as in the rules' names */
		if (store->b[FQE_MASK(start + t->label_start, FQE_TLS_MAX_BYTES - 1)] == '-' ||
		    store->b[FQE_MASK(start + i - 1, FQE_TLS_MAX_BYTES - 1)] == '-')
			t->bad = 1;
		qs->refused.wire[FQE_MASK(t->label_start, FQE_NAME_LEN - 1)] = len;
		t->label_start = i + 1;
	}
	fqe_barrier();
	return !t->stop && t->label_start == t->n + 1;
}

/*
 * Pass 2: the wire name (n + 1 bytes in qs->refused.wire) into qs->nb, its
 * labels right to left, as a packet's name is read (bpf/lib/dns.h).
 */
static __always_inline void fqe_tls_name_rev(struct fqe_query_scratch *qs)
{
	struct fqe_tls_name_walk *t = &qs->tn;
	struct fqe_name_buf *nb = &qs->nb;

	nb->rev_pos = FQE_DNS_WIRE_MAX - (t->n + 1);
	nb->nlabels = 0;
	t->next_label = 0;
	fqe_for(o, FQE_DNS_WIRE_MAX - 1)
	{
		__u8 b;

		fqe_barrier();
		if (o > FQE_READ(t->n))
			break;
		b = qs->refused.wire[o];
		if (o == t->next_label) {
			t->cur_start = o;
			t->cur_len = b;
			t->next_label = o + b + 1;
			nb->starts[FQE_MASK(nb->nlabels, FQE_DNS_MAX_LABELS - 1)] = FQE_DNS_WIRE_MAX - 1 - o - b;
			nb->nlabels++;
		}
		nb->rev[FQE_MASK(FQE_DNS_WIRE_MAX - 1 - 2 * t->cur_start - t->cur_len + o, FQE_DNS_WIRE_MAX - 1)] = b;
	}
	fqe_barrier();
}

/*
 * The server name (name_len bytes from stream offset ext_left) as
 * egressctl drops shows it (wire format in qs->refused), and is it a host
 * name? A trailing dot is refused (RFC 6066: a server may take `name.` for
 * another host than `name`).
 */
static __always_inline int fqe_tls_name_shown(const struct fqe_tls_flow *f, const struct fqe_tls_bytes *store,
					      struct fqe_query_scratch *qs)
{
	__u32 n = f->name_len, start = f->ext_left;

	fqe_tls_no_name(qs);
	if (n == 0 || n > FQE_TLS_MAX_NAME)
		return 0;
	qs->tn.n = n;
	qs->tn.start = start;
	if (!fqe_tls_name_wire(store, qs))
		return 0; /* an empty label (a trailing dot too) or an over-long one */
	qs->refused.name_len = qs->tn.n + 1;
	qs->refused.flags = FQE_REFUSED_PARSED;
	return !qs->tn.bad;
}

/*
 * Is the server name (name_len bytes from stream offset ext_left) one this
 * pod may reach on this port? Leaves the name in wire format in qs->refused
 * for egressctl drops.
 */
static __always_inline int fqe_tls_name_allowed(const struct fqe_tls_flow *f, const struct fqe_tls_bytes *store,
						struct fqe_query_scratch *qs, __u32 identity, __u16 port)
{
	const struct fqe_policy_val *rule;
	__u64 name_hash = 0;
	int refused = 0;

	if (!fqe_tls_name_shown(f, store, qs))
		return 0;
	fqe_tls_name_rev(qs);
	fqe_name_hash(&qs->nb, fqe_name_hash_key());
	rule = fqe_name_rule(&qs->nb, identity, &name_hash, &refused);
	return rule && fqe_tls_rule_allows(rule, port);
}

/*
 * A later ClientHello's server name (after a HelloRetryRequest): the first
 * hello's, which was judged, in any case.
 */
static __always_inline int fqe_tls_name_same(const struct fqe_tls_flow *f, const struct fqe_tls_bytes *store,
					     struct fqe_query_scratch *qs)
{
	struct fqe_tls_name_walk *t = &qs->tn;

	if (!fqe_tls_name_shown(f, store, qs) || f->name_len != f->first_name_len)
		return 0;
	t->first = f->first_name_at;
	t->bad = 0;
	fqe_for(i, FQE_TLS_MAX_NAME + 1)
	{
		fqe_barrier();
		if (i >= FQE_READ(t->n))
			break;
		/* host names both (letters, digits, hyphens, dots): bit 0x20 is case alone */
		t->bad |= (store->b[FQE_MASK(FQE_READ(t->start) + i, FQE_TLS_MAX_BYTES - 1)] | 0x20) ^
			  (store->b[FQE_MASK(FQE_READ(t->first) + i, FQE_TLS_MAX_BYTES - 1)] | 0x20);
	}
	fqe_barrier();
	return t->bad == 0;
}

/* A pod's SYN opens a flow that only tls rules allow: its parser starts. */
static const struct fqe_tls_flow fqe_tls_flow_start = {};

static __always_inline void fqe_tls_start(const struct fqe_ct_key *k)
{
	if (bpf_map_update_elem(&fqe_tls_flows, k, &fqe_tls_flow_start, BPF_ANY) < 0)
		return;				/* no state: the flow's first data is refused */
	bpf_map_delete_elem(&fqe_tls_bytes, k); /* a store of an earlier flow on the 5-tuple */
}

/* The check of this flow is over (a verdict, or the watch ended): its state goes. */
static __always_inline void fqe_tls_forget(const struct fqe_ct_key *k)
{
	bpf_map_delete_elem(&fqe_tls_flows, k);
	bpf_map_delete_elem(&fqe_tls_bytes, k);
}

/* The flow's store of judged bytes, made on its first data. */
static const struct fqe_tls_bytes fqe_tls_bytes_empty = {};

static __always_inline struct fqe_tls_bytes *fqe_tls_store_of(const struct fqe_ct_key *k, int create)
{
	struct fqe_tls_bytes *store = bpf_map_lookup_elem(&fqe_tls_bytes, k);

	if (store || !create)
		return store;
	bpf_map_update_elem(&fqe_tls_bytes, k, &fqe_tls_bytes_empty, BPF_NOEXIST);
	return bpf_map_lookup_elem(&fqe_tls_bytes, k);
}

/* The check's outcome for one segment. */
enum fqe_tls_outcome {
	FQE_TLS_PASS = 0,   /* no verdict yet, or the name was allowed */
	FQE_TLS_HOLD = 1,   /* drop this segment only: the client resends it in order */
	FQE_TLS_REFUSE = 2, /* the flow is refused */
	FQE_TLS_ALLOW = 3,  /* a name is allowed: watched until the server answers */
	FQE_TLS_JUDGE = 4,  /* a server name is whole: the name program judges it, then the walk goes on */
};

/*
 * Walk on through the segment (qs->walk), to its end or to a server name;
 * at the end the segment is taken: the flow's stream moves past it.
 */
static __always_inline int fqe_tls_segment_walk(struct __sk_buff *skb, struct fqe_tls_flow *f,
						struct fqe_query_scratch *qs)
{
	int r = fqe_tls_parse(skb, f, &qs->walk);

	if (r == FQE_TLS_BAD)
		return FQE_TLS_REFUSE;
	if (r == FQE_TLS_NAME)
		return FQE_TLS_JUDGE;
	/* within the bounds: no byte past the store unparsed, and a first name within the segments */
	if (qs->tseg.fresh > qs->walk.len || (!f->hellos && f->segments + 1 >= FQE_TLS_MAX_SEGMENTS))
		return FQE_TLS_REFUSE;
	f->segments++;
	f->parsed += qs->tseg.fresh;
	f->next_seq = qs->tseg.seq_end;
	return f->hellos ? FQE_TLS_ALLOW : FQE_TLS_PASS;
}

/*
 * Judge one segment of a flow pending its check, or watched (every byte of
 * the client's plaintext handshake is parsed until the server answers its
 * last ClientHello). f is its parser state (NULL when lost: refused). No
 * data is judged before the server's SYN-ACK gave the stream's start.
 * Bytes before the next expected one were taken already: they must be the
 * bytes the store holds (the server reads whichever copy arrives first).
 * New bytes are kept in the store, then parsed in order.
 */
static __always_inline int fqe_tls_segment(struct __sk_buff *skb, const struct fqe_pkt *p, struct fqe_tls_flow *f,
					   const struct fqe_ct_key *ct)
{
	struct fqe_query_scratch *qs = fqe_query_scratch_get();
	__u32 seq = p->tcp_seq + !!(p->tcp_flags & FQE_TCP_SYN);
	__u32 len = p->payload_len, old = 0, at, stored, budget, fresh;
	struct fqe_tls_bytes *store;
	__s32 ahead;

	if (!qs)
		return FQE_TLS_REFUSE;
	fqe_tls_no_name(qs);
	if (!f)
		return FQE_TLS_REFUSE;
	if (!f->based)
		return FQE_TLS_HOLD; /* before the server's SYN-ACK (a hello in the SYN, TCP Fast Open): resent later */
	ahead = (__s32)(seq - f->next_seq);
	if (ahead > 0)
		return FQE_TLS_HOLD; /* a gap: nothing past it may pass unchecked */
	store = fqe_tls_store_of(ct, 1);
	if (!store)
		return FQE_TLS_REFUSE; /* no room to keep the bytes: they cannot be judged */
	if (ahead < 0) {
		old = (__u32)-ahead;
		if (old > f->parsed)
			return FQE_TLS_HOLD; /* bytes before the first data byte: never passed */
		at = f->parsed - old;
		if (old > len)
			old = len;
		stored = f->parsed < FQE_TLS_MAX_BYTES ? f->parsed : FQE_TLS_MAX_BYTES;
		if (at >= stored)
			return FQE_TLS_HOLD;
		qs->tseg.copy_off = p->payload_off;
		qs->tseg.copy_len = at + old > stored ? stored - at : old;
		qs->tseg.copy_at = at;
		if (!fqe_tls_same_bytes(skb, store, qs))
			return FQE_TLS_HOLD; /* another byte where one was judged: never passed */
	}
	if (old == len)
		return f->hellos ? FQE_TLS_ALLOW : FQE_TLS_PASS;
	fresh = len - old;
	if (f->parsed >= FQE_TLS_MAX_BYTES)
		return FQE_TLS_REFUSE;
	budget = FQE_TLS_MAX_BYTES - f->parsed;
	qs->tseg.copy_off = p->payload_off + old;
	qs->tseg.copy_len = fresh < budget ? fresh : budget;
	qs->tseg.copy_at = f->parsed;
	if (fqe_tls_store(skb, store, &qs->tseg) < 0)
		return FQE_TLS_REFUSE;
	qs->walk.off = p->payload_off + old;
	qs->walk.len = fresh < budget ? fresh : budget;
	qs->walk.at = 0;
	qs->walk.base = f->parsed;
	qs->tseg.fresh = fresh;
	qs->tseg.seq_end = seq + len;
	return fqe_tls_segment_walk(skb, f, qs);
}

/*
 * Keep the server name a refused flow sent (wire format, as a refused DNS
 * query's; none when it sent none), keyed like its event, for egressctl
 * drops. Call after fqe_report(), before the RST rewrites the packet.
 */
static __always_inline void fqe_tls_remember_refused(const struct fqe_pkt *p, __u32 identity, __u64 now)
{
	struct fqe_refused_key k = { .ts_ns = now, .identity = identity, .sport = p->sport };
	struct fqe_query_scratch *qs = fqe_query_scratch_get();

	if (qs && fqe_event_recorded(identity, p->sport, now, FQE_REASON_TLS_NAME))
		bpf_map_update_elem(&fqe_dns_refused, &k, &qs->refused, BPF_ANY);
}

/* The refused segment becomes a RST to the pod (bpf/lib/reply.h). */
static __always_inline int fqe_tls_refuse(struct __sk_buff *skb, const struct fqe_pkt *p)
{
	struct fqe_query_scratch *qs = fqe_query_scratch_get();

	if (!qs)
		return TC_ACT_SHOT;
	return fqe_reply_send(skb, fqe_reply_rst(skb, p, fqe_reply_l4(p), qs->seg));
}

#endif /* FQE_TLS_H */
