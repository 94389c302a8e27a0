/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The enforcer's per-CPU scratch: what its judgements of one packet keep
 * between steps and tail calls (the same CPU, the same packet), too big for
 * the stack. Shared by the DNS query verdict (bpf/lib/dns_query.h), the
 * replies (bpf/lib/reply.h) and the TLS check (bpf/lib/tls.h).
 */
#ifndef FQE_SCRATCH_H
#define FQE_SCRATCH_H

#include "parse.h"
#include "name.h"
#include "dns.h"
#include "csum.h"
#include "tls_parse.h"

/* The TLS check's segment beyond the parser's walk (bpf/lib/tls.h). */
struct fqe_tls_seg {
	__u32 fresh;   /* new bytes in the segment (walk.len: those the store holds) */
	__u32 seq_end; /* the sequence number after the segment */
	/* a copy into, or compare with, the flow's store */
	__u32 copy_off; /* packet offset */
	__u32 copy_len;
	__u32 copy_at;	 /* stream offset */
	__u32 chunk_len; /* bytes in chunk[] */
};

/* The server name's two passes (bpf/lib/tls.h). */
struct fqe_tls_name_walk {
	__u32 n;     /* the name's bytes, dotted */
	__u32 start; /* its stream offset */
	__u32 stop;  /* the walk met a label it cannot show */
	__u32 label_start;
	__u32 bad;
	__u32 next_label;
	__u32 cur_start;
	__u32 cur_len;
	__u32 first; /* stream offset of the first hello's name */
};

struct fqe_query_scratch {
	struct fqe_name_buf nb;		 /* the name being judged (a query's, a server name) */
	struct fqe_refused_name refused; /* what fqe_dns_refused gets */
	struct fqe_dns_question q;	 /* the query's question */
	__u8 seg[FQE_CSUM_SEG_MAX];	 /* the reply's segment, for its checksum */
	/* the TLS check (bpf/lib/tls.h) */
	struct fqe_tls_walk walk;    /* the ClientHello parser's place in a segment */
	struct fqe_tls_seg tseg;     /* ... and the segment's */
	struct fqe_tls_name_walk tn; /* the server name's passes */
	__u8 chunk[64];		     /* segment bytes being compared with the store */
};

FQE_PERCPU_SCRATCH(fqe_query_scratch, struct fqe_query_scratch, fqe_query_scratch_get)

#endif /* FQE_SCRATCH_H */
