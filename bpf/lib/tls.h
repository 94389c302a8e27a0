/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The TLS server name check: the enforcer's judgement of a TCP
 * flow that only `tls` port rules allow. Such a flow is tracked with
 * FQE_CT_TLS_PENDING from its SYN; its segments do not take the tracked
 * fast path until the ClientHello has shown its server name (SNI).
 *
 * The parser walks the pod's byte stream by fields, not bytes: each step
 * of a bounded loop (FQE_TLS_STEPS a segment) takes a TLS record header
 * (handshake records only) or the part of one ClientHello field that lies
 * in this segment and record, and a field it skips costs one step however
 * long it is. Its place is kept per flow in fqe_tls_flows, so the hello may
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

#include "dns_query.h"

#define FQE_TLS_CONTENT_CCS 20
#define FQE_TLS_CONTENT_ALERT 21
#define FQE_TLS_CONTENT_HANDSHAKE 22
#define FQE_TLS_CONTENT_APPDATA 23
#define FQE_TLS_HANDSHAKE_CLIENT_HELLO 1
#define FQE_TLS_EXT_SERVER_NAME 0
#define FQE_TLS_MAX_RECORD 16384 /* TLSPlaintext.length limit */
#define FQE_TLS_CHUNK 64 /* bytes copied or compared at a time (a power of two) */
#define FQE_TLS_STEPS 128 /* parser steps (record headers and fields) per segment */
#define FQE_TLS_MAX_HELLOS 2 /* ClientHellos a flow may send: the first, and one after a HelloRetryRequest */
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
	FQE_TLS_SNI_NAME, /* kept in the stream store; judged by the name program */
	FQE_TLS_SKIP_RECORD, /* a record that is not a handshake (ChangeCipherSpec, early data, alert): skipped */
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

/*
 * A whole field was read (its value in f->acc for numeric ones): what next?
 * `at` is the stream offset (from the first data byte) of the next byte.
 */
static __always_inline int fqe_tls_field_done(struct fqe_tls_flow *f, __u32 at)
{
	__u32 v = f->acc;

	switch (f->state) {
	case FQE_TLS_HS_TYPE:
		/* the client's plaintext handshake is ClientHellos only while the check runs */
		if (v != FQE_TLS_HANDSHAKE_CLIENT_HELLO)
			return FQE_TLS_BAD;
		f->named = 0;
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
		f->name_len = v;
		f->ext_left = at; /* from here on: where the name starts in the stream */
		fqe_tls_enter(f, FQE_TLS_SNI_NAME, v);
		return FQE_TLS_MORE;
	case FQE_TLS_SNI_NAME:
		/* the name program judges it (name_len bytes at stream offset ext_left); then the walk goes on */
		f->named = 1;
		if (f->hs_left == 0)
			fqe_tls_enter(f, FQE_TLS_HS_TYPE, 1); /* it ended the hello */
		else
			fqe_tls_enter(f, FQE_TLS_EXT_TYPE, 2);
		return FQE_TLS_NAME;
	case FQE_TLS_SKIP_RECORD:
		fqe_tls_enter(f, FQE_TLS_HS_TYPE, 1);
		return FQE_TLS_MORE;
	}
	return FQE_TLS_BAD;
}

/* Fields read as numbers (the rest are skipped, or for the name kept in the stream store), as a bit per state. */
#define FQE_TLS_NUMERIC                                                                                   \
	((1U << FQE_TLS_HS_TYPE) | (1U << FQE_TLS_HS_LEN) | (1U << FQE_TLS_SID_LEN) | (1U << FQE_TLS_CS_LEN) | \
	 (1U << FQE_TLS_COMP_LEN) | (1U << FQE_TLS_EXTS_LEN) | (1U << FQE_TLS_EXT_TYPE) |                     \
	 (1U << FQE_TLS_EXT_LEN) | (1U << FQE_TLS_SNI_LIST_LEN) | (1U << FQE_TLS_SNI_TYPE) |                 \
	 (1U << FQE_TLS_SNI_LEN))
/* States inside the hello's body (after its type and length), as a bit per state. */
#define FQE_TLS_IN_BODY (~((1U << FQE_TLS_HS_TYPE) | (1U << FQE_TLS_HS_LEN) | (1U << FQE_TLS_SKIP_RECORD)))

/*
 * May a record of this content type start here? Handshake records always;
 * after a judged ClientHello, between handshake messages, also a
 * ChangeCipherSpec (TLS 1.3 sends one before its second hello), early data
 * and alerts, whose bodies are skipped.
 */
static __always_inline int fqe_tls_record_ok(const struct fqe_tls_flow *f, __u32 type)
{
	if (type == FQE_TLS_CONTENT_HANDSHAKE)
		return 1;
	if (type != FQE_TLS_CONTENT_CCS && type != FQE_TLS_CONTENT_ALERT && type != FQE_TLS_CONTENT_APPDATA)
		return 0;
	return f->hellos > 0 && f->state == FQE_TLS_HS_TYPE && f->acc == 0;
}

/* A record header is whole: a record that is not a handshake is skipped. */
static __always_inline void fqe_tls_record_begins(struct fqe_tls_flow *f)
{
	if (f->rec_type != FQE_TLS_CONTENT_HANDSHAKE)
		fqe_tls_enter(f, FQE_TLS_SKIP_RECORD, f->rec_left);
}

/*
 * One step of the ClientHello parser: a TLS record header (whole, or one
 * byte of one split over segments), or one field of the hello, or the part
 * of it that lies in this segment and record. A skipped field costs one
 * step however long it is, so the steps go by fields, not bytes.
 * Returns nonzero to stop (the segment is walked, or a verdict is in).
 */
static __always_inline int fqe_tls_step(struct __sk_buff *skb, struct fqe_tls_flow *f, struct fqe_tls_walk *w)
{
	__u32 at, avail, n, v, state, numeric;
	int r;

	fqe_barrier();
	at = FQE_READ(w->at);
	if (at >= FQE_READ(w->len))
		return 1;
	avail = FQE_READ(w->len) - at;
	if (f->rec_hdr < 5) {
		if (f->rec_hdr == 0 && avail >= 5) {
			if (bpf_skb_load_bytes(skb, w->off + at, w->buf, 5) < 0)
				goto bad;
			if (!fqe_tls_record_ok(f, w->buf[0]) || w->buf[1] != 3)
				goto bad;
			v = ((__u32)w->buf[3] << 8) | w->buf[4];
			if (v - 1 >= FQE_TLS_MAX_RECORD)
				goto bad; /* 0, or over the limit */
			f->rec_type = w->buf[0];
			f->rec_left = v;
			f->rec_hdr = 5;
			fqe_tls_record_begins(f);
			w->at = at + 5;
			return 0;
		}
		/* a header split over segments: one byte at a time */
		if (bpf_skb_load_bytes(skb, w->off + at, w->buf, 1) < 0)
			goto bad;
		v = w->buf[0];
		if ((f->rec_hdr == 0 && !fqe_tls_record_ok(f, v)) || (f->rec_hdr == 1 && v != 3))
			goto bad;
		if (f->rec_hdr == 0)
			f->rec_type = v;
		f->rec_left = (f->rec_left << 8) | v; /* bytes 3 and 4 are the length */
		if (f->rec_hdr == 4) {
			if (f->rec_left - 1 >= FQE_TLS_MAX_RECORD)
				goto bad;
			fqe_tls_record_begins(f);
		}
		f->rec_hdr++;
		w->at = at + 1;
		return 0;
	}
	/* inside a record: this field's bytes that lie in this segment and record */
	if (f->need == 0)
		f->need = 1; /* a flow's first field (its parser state starts zeroed): the handshake type */
	n = avail < f->rec_left ? avail : f->rec_left;
	if (n > f->need)
		n = f->need;
	w->n = n; /* read back where it is used: its branches stay here */
	state = f->state & 31;
	/* inside the hello body (FIXED on) every byte counts against its length */
	if (((FQE_TLS_IN_BODY >> state) & 1) && f->hs_left < n)
		goto bad; /* the field runs past the hello */
	f->hs_left -= n * ((FQE_TLS_IN_BODY >> state) & 1);
	numeric = (FQE_TLS_NUMERIC >> state) & 1;
	if (numeric) {
		/* a numeric field: 1 to 3 bytes, loaded as they are, big-endian */
		__u32 size_minus_1 = FQE_READ(w->n) - 1;

		if (size_minus_1 > 2)
			goto bad;
		size_minus_1 &= 3;
		asm volatile("%0 &= 0x3" : "+r"(size_minus_1)); /* a mask the verifier sees: 1 <= size <= 4 */
		*(__u32 *)w->buf = 0;
		if (bpf_skb_load_bytes(skb, w->off + at, w->buf, size_minus_1 + 1) < 0)
			goto bad;
		v = ((__u32)w->buf[0] << 16) | ((__u32)w->buf[1] << 8) | w->buf[2];
		n = FQE_READ(w->n) & 3;
		f->acc = (f->acc << (8 * n)) | (v >> (8 * (3 - n)));
	}
	n = FQE_READ(w->n);
	if (n == 0)
		goto bad; /* need is never 0 inside a field */
	f->need -= n;
	f->rec_left -= n;
	if (f->rec_left == 0)
		f->rec_hdr = 0; /* the next byte starts a record header */
	w->at = at + n;
	if (f->need > 0)
		return 0;
	r = fqe_tls_field_done(f, w->base + at + n);
	if (r == FQE_TLS_MORE && ((FQE_TLS_IN_BODY >> (f->state & 31)) & 1) && f->hs_left == 0) {
		/* the hello ended: it must have named a server; the next handshake message may follow */
		if (!f->named)
			r = FQE_TLS_BAD;
		else
			fqe_tls_enter(f, FQE_TLS_HS_TYPE, 1);
	}
	if (r == FQE_TLS_MORE)
		return 0;
	w->result = r;
	return 1;
bad:
	w->result = FQE_TLS_BAD;
	return 1;
}

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
	fqe_for (i, FQE_TLS_STEPS) {
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
static __always_inline int fqe_tls_store(struct __sk_buff *skb, struct fqe_tls_bytes *store, struct fqe_tls_walk *w)
{
	fqe_for (c, FQE_TLS_MAX_BYTES / FQE_TLS_CHUNK) {
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
	struct fqe_tls_walk *w = &qs->walk;

	fqe_for (c, FQE_TLS_MAX_BYTES / FQE_TLS_CHUNK) {
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
		fqe_for (i, FQE_TLS_CHUNK / 8) {
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

/* x in [lo, hi], without a branch (the name walk runs it on every byte) */
static __always_inline __u32 fqe_in_range(__u8 c, __u8 lo, __u8 hi)
{
	__s32 x = (__s32)c - lo;

	return ~(__u32)((x | ((__s32)(hi - lo) - x)) >> 31) & 1;
}

/* A host name byte (letters, digits, hyphen): anything else is refused, NUL included. */
static __always_inline __u32 fqe_tls_ldh(__u8 b)
{
	__s32 hyphen = (__s32)(b ^ '-');

	return fqe_in_range(b | 0x20, 'a', 'z') | fqe_in_range(b, '0', '9') | (((hyphen - 1) >> 31) & 1);
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
	fqe_for (i, FQE_TLS_MAX_NAME + 1) {
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
			t->bad |= fqe_tls_ldh(b) ^ 1; /* still shown (escaped), and refused */
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
	fqe_for (o, FQE_DNS_WIRE_MAX - 1) {
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
	fqe_name_hash(&qs->nb, fqe_dns_hash_key());
	rule = fqe_dns_match(&qs->nb, identity, &name_hash, &refused);
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
	fqe_for (i, FQE_TLS_MAX_NAME + 1) {
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
		return; /* no state: the flow's first data is refused */
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
	FQE_TLS_PASS = 0, /* no verdict yet, or the name was allowed */
	FQE_TLS_HOLD = 1, /* drop this segment only: the client resends it in order */
	FQE_TLS_REFUSE = 2, /* the flow is refused */
	FQE_TLS_ALLOW = 3, /* a name is allowed: watched until the server answers */
	FQE_TLS_JUDGE = 4, /* a server name is whole: the name program judges it, then the walk goes on */
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
	if (qs->walk.fresh > qs->walk.len || (!f->hellos && f->segments + 1 >= FQE_TLS_MAX_SEGMENTS))
		return FQE_TLS_REFUSE;
	f->segments++;
	f->parsed += qs->walk.fresh;
	f->next_seq = qs->walk.seq_end;
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
		qs->walk.copy_off = p->payload_off;
		qs->walk.copy_len = at + old > stored ? stored - at : old;
		qs->walk.copy_at = at;
		if (!fqe_tls_same_bytes(skb, store, qs))
			return FQE_TLS_HOLD; /* another byte where one was judged: never passed */
	}
	if (old == len)
		return f->hellos ? FQE_TLS_ALLOW : FQE_TLS_PASS;
	fresh = len - old;
	if (f->parsed >= FQE_TLS_MAX_BYTES)
		return FQE_TLS_REFUSE;
	budget = FQE_TLS_MAX_BYTES - f->parsed;
	qs->walk.copy_off = p->payload_off + old;
	qs->walk.copy_len = fresh < budget ? fresh : budget;
	qs->walk.copy_at = f->parsed;
	if (fqe_tls_store(skb, store, &qs->walk) < 0)
		return FQE_TLS_REFUSE;
	qs->walk.off = p->payload_off + old;
	qs->walk.len = fresh < budget ? fresh : budget;
	qs->walk.at = 0;
	qs->walk.base = f->parsed;
	qs->walk.fresh = fresh;
	qs->walk.seq_end = seq + len;
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
