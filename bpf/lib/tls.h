/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The TLS server name check (issue 13): the enforcer's judgement of a TCP
 * flow that only `tls` port rules allow. Such a flow is tracked with
 * FQE_CT_TLS_PENDING from its SYN; its segments do not take the tracked
 * fast path until the ClientHello has shown its server name (SNI).
 *
 * The parser walks the pod's byte stream one byte at a time under
 * bpf_loop(), through TLS record headers (handshake records only) into the
 * ClientHello, and keeps its place per flow in fqe_tls_flows, so the hello
 * may span segments and records. Segments pass until the name is seen.
 * Only the next in-order segment is parsed. A segment that repeats one
 * already parsed (same start, length and keyed hash of its bytes) passes:
 * it is a retransmission, and the server sees the bytes that were judged.
 * Anything else before or beyond the expected sequence number (a gap,
 * reordering, an overlap that brings new bytes) is dropped, so nothing
 * unchecked reaches the server; the client resends it in order.
 *
 * The name is compared the learner's way (bpf/lib/dns.h): keyed hash to
 * find the pod's rule, then the real bytes, exact or `*.` on a label
 * boundary, case-insensitive, a trailing dot ignored; a name that is not a
 * host name (bytes other than letters, digits and hyphens, an empty label,
 * a hyphen at a label's edge) is refused. It passes when that
 * rule allows TCP to the flow's port (a tls, tcp or any-protocol rule, or
 * no port at all). The flow is then watched (FQE_CT_TLS_WATCH) until the
 * server sends its first data, which it does only once it has read the
 * whole ClientHello: until then a byte of the hello sent again must be the
 * byte judged (a pod could have the first copy die on the way, with a low
 * TTL, and resend other bytes). The learner clears the watch when it sees
 * the server's data; from then on the flow costs what any tracked flow
 * costs.
 *
 * Refused (another name, no SNI, not a ClientHello, no name within
 * FQE_TLS_MAX_BYTES or FQE_TLS_MAX_SEGMENTS, parser state lost): the
 * segment becomes a RST to the pod, and the flow is marked
 * FQE_CT_TLS_REFUSED (and closing): every later packet of it is dropped. In audit mode the
 * refusal is reported and the flow passes as an audited one.
 */
#ifndef FQE_TLS_H
#define FQE_TLS_H

#include "dns_query.h"

#define FQE_TLS_CONTENT_HANDSHAKE 22
#define FQE_TLS_HANDSHAKE_CLIENT_HELLO 1
#define FQE_TLS_EXT_SERVER_NAME 0
#define FQE_TLS_MAX_RECORD 16384 /* TLSPlaintext.length limit */
#define FQE_TLS_CHUNK 64 /* bytes read from the packet at a time (a power of two) */
#define FQE_TLS_MAX_NAME 253 /* a dotted host name, without the trailing dot */

/* What the parser reads next inside the ClientHello. */
enum fqe_tls_state {
	FQE_TLS_HS_TYPE = 0, /* 1 byte: client_hello */
	FQE_TLS_HS_LEN, /* 3 */
	FQE_TLS_FIXED, /* 34: legacy_version, random (skipped) */
	FQE_TLS_SID_LEN, /* 1 */
	FQE_TLS_SID, /* skipped */
	FQE_TLS_CS_LEN, /* 2 */
	FQE_TLS_CS, /* skipped */
	FQE_TLS_COMP_LEN, /* 1 */
	FQE_TLS_COMP, /* skipped */
	FQE_TLS_EXTS_LEN, /* 2 */
	FQE_TLS_EXT_TYPE, /* 2 */
	FQE_TLS_EXT_LEN, /* 2 */
	FQE_TLS_EXT_BODY, /* skipped */
	FQE_TLS_SNI_LIST_LEN, /* 2 */
	FQE_TLS_SNI_TYPE, /* 1: host_name */
	FQE_TLS_SNI_LEN, /* 2 */
	FQE_TLS_SNI_NAME, /* collected into name[] */
};

/* Outcomes of the walk. */
#define FQE_TLS_MORE 0 /* no name yet: wait for the next segment */
#define FQE_TLS_NAME 1 /* the name is in f->name */
#define FQE_TLS_BAD (-1) /* not a ClientHello with a server name: refuse */

static __always_inline void fqe_tls_enter(struct fqe_tls_flow *f, __u8 state, __u32 need)
{
	f->state = state;
	f->need = need;
	f->acc = 0;
}

/* A whole field was read (its value in f->acc for numeric ones): what next? */
static __always_inline int fqe_tls_field_done(struct fqe_tls_flow *f)
{
	__u32 v = f->acc;

	switch (f->state) {
	case FQE_TLS_HS_TYPE:
		if (v != FQE_TLS_HANDSHAKE_CLIENT_HELLO)
			return FQE_TLS_BAD;
		fqe_tls_enter(f, FQE_TLS_HS_LEN, 3);
		return FQE_TLS_MORE;
	case FQE_TLS_HS_LEN:
		if (v < 34 + 1 + 2 + 2 + 1 + 2)
			return FQE_TLS_BAD;
		f->hs_left = v;
		fqe_tls_enter(f, FQE_TLS_FIXED, 34);
		return FQE_TLS_MORE;
	case FQE_TLS_FIXED:
		fqe_tls_enter(f, FQE_TLS_SID_LEN, 1);
		return FQE_TLS_MORE;
	case FQE_TLS_SID_LEN:
		if (v > 32)
			return FQE_TLS_BAD;
		if (v == 0)
			fqe_tls_enter(f, FQE_TLS_CS_LEN, 2);
		else
			fqe_tls_enter(f, FQE_TLS_SID, v);
		return FQE_TLS_MORE;
	case FQE_TLS_SID:
		fqe_tls_enter(f, FQE_TLS_CS_LEN, 2);
		return FQE_TLS_MORE;
	case FQE_TLS_CS_LEN:
		if (v < 2 || (v & 1))
			return FQE_TLS_BAD;
		fqe_tls_enter(f, FQE_TLS_CS, v);
		return FQE_TLS_MORE;
	case FQE_TLS_CS:
		fqe_tls_enter(f, FQE_TLS_COMP_LEN, 1);
		return FQE_TLS_MORE;
	case FQE_TLS_COMP_LEN:
		if (v == 0)
			return FQE_TLS_BAD;
		fqe_tls_enter(f, FQE_TLS_COMP, v);
		return FQE_TLS_MORE;
	case FQE_TLS_COMP:
		fqe_tls_enter(f, FQE_TLS_EXTS_LEN, 2);
		return FQE_TLS_MORE;
	case FQE_TLS_EXTS_LEN:
		/* the extensions fill the rest of the hello, as servers require */
		if (v == 0 || v != f->hs_left)
			return FQE_TLS_BAD;
		fqe_tls_enter(f, FQE_TLS_EXT_TYPE, 2);
		return FQE_TLS_MORE;
	case FQE_TLS_EXT_TYPE:
		f->ext_left = v; /* the type, until its length is read */
		fqe_tls_enter(f, FQE_TLS_EXT_LEN, 2);
		return FQE_TLS_MORE;
	case FQE_TLS_EXT_LEN:
		if (v > f->hs_left)
			return FQE_TLS_BAD;
		if (f->ext_left == FQE_TLS_EXT_SERVER_NAME) {
			/* list length (2), type (1), name length (2), a name */
			if (v < 2 + 1 + 2 + 1)
				return FQE_TLS_BAD;
			f->ext_left = v;
			fqe_tls_enter(f, FQE_TLS_SNI_LIST_LEN, 2);
		} else if (v == 0) {
			fqe_tls_enter(f, FQE_TLS_EXT_TYPE, 2);
		} else {
			fqe_tls_enter(f, FQE_TLS_EXT_BODY, v);
		}
		return FQE_TLS_MORE;
	case FQE_TLS_EXT_BODY:
		fqe_tls_enter(f, FQE_TLS_EXT_TYPE, 2);
		return FQE_TLS_MORE;
	case FQE_TLS_SNI_LIST_LEN:
		/* exactly one entry fills the list and the list the extension */
		if (v != f->ext_left - 2)
			return FQE_TLS_BAD;
		fqe_tls_enter(f, FQE_TLS_SNI_TYPE, 1);
		return FQE_TLS_MORE;
	case FQE_TLS_SNI_TYPE:
		if (v != 0)
			return FQE_TLS_BAD; /* host_name is the only type */
		fqe_tls_enter(f, FQE_TLS_SNI_LEN, 2);
		return FQE_TLS_MORE;
	case FQE_TLS_SNI_LEN:
		if (v == 0 || v > FQE_TLS_MAX_NAME + 1 || v != f->ext_left - 5)
			return FQE_TLS_BAD;
		f->name_len = 0;
		fqe_tls_enter(f, FQE_TLS_SNI_NAME, v);
		return FQE_TLS_MORE;
	case FQE_TLS_SNI_NAME:
		return FQE_TLS_NAME;
	}
	return FQE_TLS_BAD;
}

/* One byte of the ClientHello message (inside handshake records). */
static __always_inline int fqe_tls_hello_byte(struct fqe_tls_flow *f, __u8 b)
{
	int r;

	if (f->state >= FQE_TLS_FIXED) {
		if (f->hs_left == 0)
			return FQE_TLS_BAD; /* past the hello: it had no name */
		f->hs_left--;
	}
	if (f->state == FQE_TLS_SNI_NAME)
		f->name[f->name_len++ & (FQE_NAME_LEN - 1)] = b;
	else
		f->acc = (f->acc << 8) | b;
	if (f->need > 1) {
		f->need--;
		r = FQE_TLS_MORE;
	} else {
		r = fqe_tls_field_done(f);
	}
	if (r == FQE_TLS_MORE && f->state >= FQE_TLS_FIXED && f->hs_left == 0)
		return FQE_TLS_BAD; /* the hello ended without a name */
	return r;
}

/* One byte of the stream: TLS record headers are taken out here. */
static __always_inline int fqe_tls_byte(struct fqe_tls_flow *f, __u8 b)
{
	if (f->rec_hdr < 5) {
		switch (f->rec_hdr) {
		case 0:
			if (b != FQE_TLS_CONTENT_HANDSHAKE)
				return FQE_TLS_BAD;
			break;
		case 1:
			if (b != 3)
				return FQE_TLS_BAD;
			break;
		case 3:
			f->rec_left = (__u16)b << 8;
			break;
		case 4:
			f->rec_left |= b;
			if (f->rec_left == 0 || f->rec_left > FQE_TLS_MAX_RECORD)
				return FQE_TLS_BAD;
			break;
		}
		f->rec_hdr++;
		return FQE_TLS_MORE;
	}
	if (--f->rec_left == 0)
		f->rec_hdr = 0; /* the next byte starts a record header */
	return fqe_tls_hello_byte(f, b);
}

struct fqe_tls_walk {
	struct __sk_buff *skb;
	struct fqe_tls_flow *f;
	__u8 *chunk; /* FQE_TLS_CHUNK bytes of per-CPU scratch */
	__u32 off; /* the segment's payload offset */
	__u32 len; /* bytes to walk */
	__u64 h; /* keyed hash of the bytes walked */
	int result;
	int parsing; /* 0 once the verdict is in: the rest is only hashed */
};

static long fqe_tls_step(__u64 i, void *data)
{
	struct fqe_tls_walk *c = data;
	__u32 at = (__u32)i;
	__u32 rest_minus_1;
	__u8 b;

	if (at >= c->len)
		return 1;
	if ((at & (FQE_TLS_CHUNK - 1)) == 0) {
		rest_minus_1 = c->len - at - 1;
		if (rest_minus_1 > FQE_TLS_CHUNK - 1)
			rest_minus_1 = FQE_TLS_CHUNK - 1;
		/* a mask the compiler may not drop: the verifier sees 1 <= length <= 64 */
		asm volatile("%0 &= 0x3f" : "+r"(rest_minus_1));
		if (bpf_skb_load_bytes(c->skb, c->off + at, c->chunk, rest_minus_1 + 1) < 0) {
			c->result = FQE_TLS_BAD;
			return 1;
		}
	}
	b = c->chunk[at & (FQE_TLS_CHUNK - 1)];
	c->h = (c->h ^ b) * FQE_FNV64_PRIME;
	if (!c->f || !c->parsing)
		return 0; /* a retransmission, or past the name: hashed, not parsed */
	c->result = fqe_tls_byte(c->f, b);
	if (c->result == FQE_TLS_NAME)
		c->parsing = 0; /* hash the rest of the segment: it may be sent again */
	return c->result == FQE_TLS_BAD;
}

/*
 * Walk len bytes of the segment at off (or fewer, when the verdict comes
 * first): FQE_TLS_MORE, FQE_TLS_NAME or FQE_TLS_BAD; *h the keyed hash of
 * the bytes (all of them unless FQE_TLS_BAD). f NULL: only hash them.
 */
static __always_inline int fqe_tls_walk(struct __sk_buff *skb, struct fqe_tls_flow *f, __u8 *chunk,
					__u32 off, __u32 len, __u64 *h)
{
	struct fqe_tls_walk c = {
		.skb = skb, .f = f, .chunk = chunk, .off = off, .len = len,
		.h = FQE_FNV64_BASIS ^ fqe_dns_hash_key(), .parsing = 1,
	};

	bpf_loop(FQE_TLS_MAX_BYTES, fqe_tls_step, &c, 0);
	*h = c.h;
	return c.result;
}

struct fqe_tls_name_ctx {
	struct fqe_tls_flow *f;
	struct fqe_query_scratch *qs;
	__u32 n; /* name bytes */
	__u32 label_start; /* wire offset of the current label's length byte */
	__u32 cur_start; /* pass 2: the label being copied */
	__u32 cur_len;
	__u32 next_label;
	int bad;
};

/* A host name byte (letters, digits, hyphen): anything else is refused, NUL included. */
static __always_inline int fqe_tls_ldh(__u8 b)
{
	return (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || (b >= '0' && b <= '9') || b == '-';
}

/* Pass 1: dotted name -> wire format (in qs->refused.wire), labels and bytes checked. */
static long fqe_tls_wire_step(__u64 i, void *data)
{
	struct fqe_tls_name_ctx *c = data;
	__u32 at = (__u32)i & (FQE_NAME_LEN - 1);
	__u32 len;
	__u8 b;

	if (at > c->n)
		return 1;
	b = at < c->n ? c->f->name[at] : '.';
	if (b != '.') {
		c->qs->refused.wire[(at + 1) & (FQE_NAME_LEN - 1)] = b;
		if (!fqe_tls_ldh(b))
			c->bad = 1; /* the name is still shown (escaped), and refused */
		return 0;
	}
	len = at - c->label_start;
	if (len == 0 || len > 63) {
		c->bad = 1;
		return 1;
	}
	/* a label neither starts nor ends with a hyphen, as in the rules' names */
	if (c->f->name[c->label_start & (FQE_NAME_LEN - 1)] == '-' || c->f->name[(at - 1) & (FQE_NAME_LEN - 1)] == '-')
		c->bad = 1;
	c->qs->refused.wire[c->label_start & (FQE_NAME_LEN - 1)] = len;
	c->label_start = at + 1;
	return 0;
}

/* Pass 2: wire format -> the labels right to left in rev[], as dns.h hashes them. */
static long fqe_tls_rev_step(__u64 i, void *data)
{
	struct fqe_tls_name_ctx *c = data;
	struct fqe_learn_scratch *s = &c->qs->s;
	__u32 o = (__u32)i & (FQE_NAME_LEN - 1);
	__u32 t;

	if (o == c->next_label) {
		c->cur_start = o;
		c->cur_len = c->qs->refused.wire[o];
		c->next_label = o + c->cur_len + 1;
	}
	t = (FQE_DNS_WIRE_MAX - 2 * c->cur_start - c->cur_len - 1 + o) & (FQE_DNS_WIRE_MAX - 1);
	s->rev[t] = c->qs->refused.wire[o];
	s->is_start[t] = o == c->cur_start;
	return 0;
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
		if (rule->ports[i].port == port &&
		    (rule->ports[i].proto == 0 || rule->ports[i].proto == IPPROTO_TCP ||
		     rule->ports[i].proto == FQE_PROTO_TLS))
			return 1;
	}
	return 0;
}

/*
 * Is the server name in f->name one this pod may reach on this port? Leaves
 * the name in wire format in qs->refused for egressctl drops.
 */
static __always_inline int fqe_tls_name_allowed(struct fqe_tls_flow *f, struct fqe_query_scratch *qs,
						__u32 identity, __u16 port)
{
	struct fqe_tls_name_ctx c = { .f = f, .qs = qs };
	const struct fqe_policy_val *rule;
	struct fqe_qname q = {};
	__u64 name_hash = 0;
	int refused = 0;
	__u32 n = f->name_len;

	fqe_tls_no_name(qs);
	if (n > 0 && n <= FQE_TLS_MAX_NAME + 1 && f->name[(n - 1) & (FQE_NAME_LEN - 1)] == '.')
		n--; /* one trailing dot: the same name */
	if (n == 0 || n > FQE_TLS_MAX_NAME)
		return 0;
	c.n = n;
	bpf_loop(n + 1, fqe_tls_wire_step, &c, 0);
	if (c.label_start <= n)
		return 0; /* an empty or over-long label stopped the walk: no wire name to show */
	qs->refused.name_len = n + 1;
	qs->refused.flags = FQE_REFUSED_PARSED;
	if (c.bad)
		return 0;
	bpf_loop(n + 1, fqe_tls_rev_step, &c, 0);
	q.rev_pos = FQE_DNS_WIRE_MAX - (n + 1);
	rule = fqe_dns_match(&qs->s, &q, identity, fqe_dns_hash_key(), &name_hash, &refused);
	return rule && fqe_tls_rule_allows(rule, port);
}

/* A pod's SYN opens a flow that only tls rules allow: its parser starts. */
static const struct fqe_tls_flow fqe_tls_flow_start = {};

static __always_inline void fqe_tls_start(const struct fqe_ct_key *k, const struct fqe_pkt *p)
{
	struct fqe_tls_flow *f;

	if (bpf_map_update_elem(&fqe_tls_flows, k, &fqe_tls_flow_start, BPF_ANY) < 0)
		return; /* no state: the flow's first data is refused */
	f = bpf_map_lookup_elem(&fqe_tls_flows, k);
	if (f)
		f->next_seq = p->tcp_seq + 1;
}

/* Does this segment repeat one the parser has taken (a retransmission)? */
static __always_inline int fqe_tls_is_repeat(const struct fqe_tls_flow *f, __u32 seq, __u32 len, __u64 h)
{
#pragma unroll
	for (int i = 0; i < FQE_TLS_MAX_SEGMENTS; i++) {
		if (i < f->segments && f->seg_start[i] == seq && f->seg_len[i] == len && f->seg_hash[i] == h)
			return 1;
	}
	return 0;
}

/* The check's outcome for one segment. */
enum fqe_tls_outcome {
	FQE_TLS_PASS = 0, /* no verdict yet, or the name was allowed */
	FQE_TLS_HOLD = 1, /* drop this segment only: the client resends it in order */
	FQE_TLS_REFUSE = 2, /* the flow is refused */
	FQE_TLS_ALLOW = 3, /* the name is allowed: watched until the server answers */
};

/*
 * Judge one segment of a flow pending its check. f is its parser state
 * (NULL when lost: refused).
 */
static __always_inline int fqe_tls_segment(struct __sk_buff *skb, const struct fqe_pkt *p,
					   struct fqe_tls_flow *f, __u32 identity)
{
	struct fqe_query_scratch *qs = fqe_query_scratch_get();
	__u32 seq = p->tcp_seq + !!(p->tcp_flags & FQE_TCP_SYN);
	__u32 len = p->payload_len, budget;
	__s32 ahead;
	__u64 h;
	int r;

	if (!qs)
		return FQE_TLS_REFUSE;
	fqe_tls_no_name(qs);
	if (!f)
		return FQE_TLS_REFUSE;
	ahead = (__s32)(seq - f->next_seq);
	if (ahead >= 0 && f->name_done)
		return FQE_TLS_PASS; /* watched: new bytes, after the name */
	if (ahead > 0)
		return FQE_TLS_HOLD; /* a gap: nothing past it may pass unchecked */
	if (ahead < 0) {
		if ((__u32)-ahead < len)
			return FQE_TLS_HOLD; /* old bytes and new ones: resent in order later */
		fqe_tls_walk(skb, NULL, qs->seg, p->payload_off, len, &h);
		return fqe_tls_is_repeat(f, seq, len, h) ? FQE_TLS_PASS : FQE_TLS_HOLD;
	}
	if (f->segments >= FQE_TLS_MAX_SEGMENTS)
		return FQE_TLS_REFUSE;
	budget = FQE_TLS_MAX_BYTES - f->parsed;
	r = fqe_tls_walk(skb, f, qs->seg, p->payload_off, len < budget ? len : budget, &h);
	if (r == FQE_TLS_NAME) {
		if (!fqe_tls_name_allowed(f, qs, identity, p->dport))
			return FQE_TLS_REFUSE;
		f->name_done = 1;
	} else if (r == FQE_TLS_BAD || len >= budget || f->segments + 1 >= FQE_TLS_MAX_SEGMENTS) {
		return FQE_TLS_REFUSE;
	}
	/* remember the segment: no name yet (wait for the next one), or the one with the name */
	f->seg_start[f->segments & (FQE_TLS_MAX_SEGMENTS - 1)] = seq;
	f->seg_len[f->segments & (FQE_TLS_MAX_SEGMENTS - 1)] = len;
	f->seg_hash[f->segments & (FQE_TLS_MAX_SEGMENTS - 1)] = h;
	f->segments++;
	f->parsed += len;
	f->next_seq = seq + len;
	return f->name_done ? FQE_TLS_ALLOW : FQE_TLS_PASS;
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

/* The refused segment becomes a RST to the pod (as a refused DNS query over TCP). */
static __always_inline int fqe_tls_refuse(struct __sk_buff *skb, const struct fqe_pkt *p)
{
	struct fqe_query_scratch *qs = fqe_query_scratch_get();
	__u32 l4 = ETH_HLEN + (p->family == 4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr));

	if (!qs || fqe_dns_reset(skb, p, qs, l4) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect(skb->ifindex, 0);
}

#endif /* FQE_TLS_H */
