/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The TLS check's ClientHello parser as a state machine: bytes in, state
 * out. No maps, no helpers (bpf/tests/tls_parse_test.bpf.c feeds it bytes
 * alone); bpf/lib/tls.h reads the bytes from the packet, keeps the state
 * (struct fqe_tls_flow, one per flow in fqe_tls_flows) and judges the name.
 *
 * The parser goes by fields, not bytes. A step is one of:
 * - a TLS record header: whole (fqe_tls_record_header(), 5 bytes) or, split
 *   over segments, one byte of it (fqe_tls_record_byte());
 * - the part of one ClientHello field that lies in the bytes at hand and
 *   in the current record: fqe_tls_field_span() says how many bytes (w->n)
 *   and whether they are a number to read (the reader puts them in w->buf,
 *   big-endian, and calls fqe_tls_field_value()); fqe_tls_field_taken()
 *   moves past them and, at a field's end, to the next state
 *   (fqe_tls_field_done()). A skipped field costs one step however long.
 * A server name is reported, not read: FQE_TLS_NAME with its length in
 * f->name_len and its stream offset in f->ext_left. Records that are not
 * handshakes (after a judged hello: ChangeCipherSpec, early data, alerts)
 * are skipped; anything else that is not a ClientHello with one host_name
 * is FQE_TLS_BAD.
 */
#ifndef FQE_TLS_PARSE_H
#define FQE_TLS_PARSE_H

#include "fqe_types.h"
#include "loop.h"

#define FQE_TLS_CONTENT_CCS	       20
#define FQE_TLS_CONTENT_ALERT	       21
#define FQE_TLS_CONTENT_HANDSHAKE      22
#define FQE_TLS_CONTENT_APPDATA	       23
#define FQE_TLS_HANDSHAKE_CLIENT_HELLO 1
#define FQE_TLS_EXT_SERVER_NAME	       0
#define FQE_TLS_MAX_RECORD	       16384 /* TLSPlaintext.length limit */
#define FQE_TLS_MAX_NAME	       253   /* a dotted host name, without the trailing dot */

/* What the parser reads next inside the ClientHello. */
enum fqe_tls_state {
	FQE_TLS_HS_TYPE = 0,  /* 1 byte: client_hello */
	FQE_TLS_HS_LEN,	      /* 3 */
	FQE_TLS_FIXED,	      /* 34: legacy_version, random (skipped) */
	FQE_TLS_SID_LEN,      /* 1 */
	FQE_TLS_SID,	      /* skipped */
	FQE_TLS_CS_LEN,	      /* 2 */
	FQE_TLS_CS,	      /* skipped */
	FQE_TLS_COMP_LEN,     /* 1 */
	FQE_TLS_COMP,	      /* skipped */
	FQE_TLS_EXTS_LEN,     /* 2 */
	FQE_TLS_EXT_TYPE,     /* 2 */
	FQE_TLS_EXT_LEN,      /* 2 */
	FQE_TLS_EXT_BODY,     /* skipped */
	FQE_TLS_SNI_LIST_LEN, /* 2 */
	FQE_TLS_SNI_TYPE,     /* 1: host_name */
	FQE_TLS_SNI_LEN,      /* 2 */
	FQE_TLS_SNI_NAME,     /* kept in the stream store; judged by the name program */
	FQE_TLS_SKIP_RECORD,  /* a record that is not a handshake (ChangeCipherSpec, early data, alert): skipped */
};

/* Outcomes of the walk. */
#define FQE_TLS_MORE 0	  /* no name yet: wait for the next segment */
#define FQE_TLS_NAME 1	  /* a server name is whole: name_len bytes at stream offset ext_left */
#define FQE_TLS_BAD  (-1) /* not a ClientHello with a server name: refuse */

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
#define FQE_TLS_NUMERIC                                                                                                \
	((1U << FQE_TLS_HS_TYPE) | (1U << FQE_TLS_HS_LEN) | (1U << FQE_TLS_SID_LEN) | (1U << FQE_TLS_CS_LEN) |         \
	 (1U << FQE_TLS_COMP_LEN) | (1U << FQE_TLS_EXTS_LEN) | (1U << FQE_TLS_EXT_TYPE) | (1U << FQE_TLS_EXT_LEN) |    \
	 (1U << FQE_TLS_SNI_LIST_LEN) | (1U << FQE_TLS_SNI_TYPE) | (1U << FQE_TLS_SNI_LEN))
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
 * The parser's place in the bytes at hand (a segment's new bytes; kept in
 * per-CPU scratch so that the verifier's states of each step meet).
 */
struct fqe_tls_walk {
	__u32 off;    /* where the bytes lie (the packet offset of the first) */
	__u32 len;    /* bytes at hand */
	__u32 at;     /* bytes of them walked */
	__u32 base;   /* stream offset of the first byte at hand */
	__s32 result; /* FQE_TLS_MORE, FQE_TLS_NAME or FQE_TLS_BAD */
	__u32 n;      /* bytes this step takes */
	__u8 buf[8];  /* the bytes a step reads */
};

/* A whole record header (the 5 bytes at h): 0, or FQE_TLS_BAD. */
static __always_inline int fqe_tls_record_header(struct fqe_tls_flow *f, const __u8 *h)
{
	__u32 v;

	if (!fqe_tls_record_ok(f, h[0]) || h[1] != 3)
		return FQE_TLS_BAD;
	v = ((__u32)h[3] << 8) | h[4];
	if (v - 1 >= FQE_TLS_MAX_RECORD)
		return FQE_TLS_BAD; /* 0, or over the limit */
	f->rec_type = h[0];
	f->rec_left = v;
	f->rec_hdr = 5;
	fqe_tls_record_begins(f);
	return 0;
}

/* The next byte v of a record header split over segments: 0, or FQE_TLS_BAD. */
static __always_inline int fqe_tls_record_byte(struct fqe_tls_flow *f, __u32 v)
{
	if ((f->rec_hdr == 0 && !fqe_tls_record_ok(f, v)) || (f->rec_hdr == 1 && v != 3))
		return FQE_TLS_BAD;
	if (f->rec_hdr == 0)
		f->rec_type = v;
	f->rec_left = (f->rec_left << 8) | v; /* bytes 3 and 4 are the length */
	if (f->rec_hdr == 4) {
		if (f->rec_left - 1 >= FQE_TLS_MAX_RECORD)
			return FQE_TLS_BAD;
		fqe_tls_record_begins(f);
	}
	f->rec_hdr++;
	return 0;
}

/*
 * Inside a record (f->rec_hdr == 5), with avail bytes at hand: how many of
 * them the current field takes (w->n: within the field, the record and the
 * bytes at hand), counted against the hello. Returns 1 when they are a
 * number (1 to 3 bytes) to read into w->buf, 0 when they are skipped, or
 * FQE_TLS_BAD when the field runs past the hello.
 */
static __always_inline int fqe_tls_field_span(struct fqe_tls_flow *f, struct fqe_tls_walk *w, __u32 avail)
{
	__u32 n, state;

	if (f->need == 0)
		f->need = 1; /* a flow's first field (its parser state starts zeroed): the handshake type */
	n = avail < f->rec_left ? avail : f->rec_left;
	if (n > f->need)
		n = f->need;
	w->n = n; /* read back where it is used: its branches stay here */
	state = f->state & 31;
	/* inside the hello body (FIXED on) every byte counts against its length */
	if (((FQE_TLS_IN_BODY >> state) & 1) && f->hs_left < n)
		return FQE_TLS_BAD; /* the field runs past the hello */
	f->hs_left -= n * ((FQE_TLS_IN_BODY >> state) & 1);
	return (FQE_TLS_NUMERIC >> state) & 1;
}

/* The w->n bytes of a number, in w->buf[0..3) (big-endian, zero after them): into f->acc. */
static __always_inline void fqe_tls_field_value(struct fqe_tls_flow *f, struct fqe_tls_walk *w)
{
	__u32 v = ((__u32)w->buf[0] << 16) | ((__u32)w->buf[1] << 8) | w->buf[2], n;

	n = FQE_READ(w->n) & 3;
	f->acc = (f->acc << (8 * n)) | (v >> (8 * (3 - n)));
}

/*
 * The field's w->n bytes at w->at (= at) are taken: past them, and at the
 * field's end on to the next state. Returns nonzero to stop, with the
 * verdict in w->result (FQE_TLS_NAME or FQE_TLS_BAD).
 */
static __always_inline int fqe_tls_field_taken(struct fqe_tls_flow *f, struct fqe_tls_walk *w, __u32 at)
{
	__u32 n = FQE_READ(w->n);
	int r;

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

#endif /* FQE_TLS_PARSE_H */
