/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The ClientHello parser (tls_parse.h) fed from a packet: one step reads
 * the bytes it needs with bpf_skb_load_bytes() and hands them over. No
 * maps: tls.h walks a segment with it, and bpf/tests/tls_parse_test.bpf.c
 * runs the same step on its test packets.
 */
#ifndef FQE_TLS_STEP_H
#define FQE_TLS_STEP_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "tls_parse.h"

/*
 * One step of the ClientHello parser (bpf/lib/tls_parse.h) on the segment's
 * bytes: a TLS record header (whole, or one byte of one split over
 * segments), or one field of the hello, or the part of it that lies in this
 * segment and record. A skipped field costs one step however long it is,
 * so the steps go by fields, not bytes. Returns nonzero to stop (the
 * segment is walked, or a verdict is in).
 */
static __always_inline int fqe_tls_step(struct __sk_buff *skb, struct fqe_tls_flow *f, struct fqe_tls_walk *w)
{
	__u32 at, avail;
	int numeric;

	fqe_barrier();
	at = FQE_READ(w->at);
	if (at >= FQE_READ(w->len))
		return 1;
	avail = FQE_READ(w->len) - at;
	if (f->rec_hdr < 5) {
		if (f->rec_hdr == 0 && avail >= 5) {
			if (bpf_skb_load_bytes(skb, w->off + at, w->buf, 5) < 0 || fqe_tls_record_header(f, w->buf) < 0)
				goto bad;
			w->at = at + 5;
			return 0;
		}
		/* a header split over segments: one byte at a time */
		if (bpf_skb_load_bytes(skb, w->off + at, w->buf, 1) < 0 || fqe_tls_record_byte(f, w->buf[0]) < 0)
			goto bad;
		w->at = at + 1;
		return 0;
	}
	/* inside a record: this field's bytes that lie in this segment and record */
	numeric = fqe_tls_field_span(f, w, avail);
	if (numeric < 0)
		goto bad;
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
		fqe_tls_field_value(f, w);
	}
	return fqe_tls_field_taken(f, w, at);
bad:
	w->result = FQE_TLS_BAD;
	return 1;
}

#endif /* FQE_TLS_STEP_H */
