/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every key and value that crosses the kernel/userspace boundary, written
 * once. Included by the BPF programs and by the native binding (which reports
 * sizes and offsets so the TypeScript codecs can be checked against them).
 * Layouts use explicit padding only; no implicit holes.
 */
#ifndef FQE_TYPES_H
#define FQE_TYPES_H

#ifdef __BPF__
#include <linux/types.h>
#else
#include <stdint.h>
typedef uint8_t __u8;
typedef uint16_t __u16;
typedef uint32_t __u32;
typedef uint64_t __u64;
#endif

/* Bump when any layout below changes: the agent migrates older pins. */
#define FQE_ABI_VERSION	      2

#define FQE_MAX_ENDPOINTS     4096
#define FQE_MAX_OWNED_ADDRS   16384
#define FQE_MAX_ALLOW	      1048576
#define FQE_MAX_RESOLVERS     64
#define FQE_MAX_PENDING	      65536
#define FQE_MAX_CONNTRACK     262144
#define FQE_EVENTS_BYTES      (1 << 20)
#define FQE_MAX_PORT_RULES    8
#define FQE_RECENT_EVENTS     1024 /* a power of two */
#define FQE_MAX_NAMES	      65536
#define FQE_MAX_CIDRS	      1024
#define FQE_NAME_LEN	      256
#define FQE_POD_NAMESPACE_LEN 64
#define FQE_POD_NAME_LEN      256
#define FQE_IFNAME_LEN	      16

/* Endpoint flags. */
#define FQE_EP_ENFORCE	      0x1
#define FQE_EP_AUDIT	      0x2

/* Who wrote an allow entry. */
#define FQE_SRC_AGENT	      1
#define FQE_SRC_KERNEL	      2
#define FQE_SRC_STATIC	      3 /* allowCIDRs and tests: no name behind it */

/* Drop / audit reasons, reported in events and counters. */
enum fqe_reason {
	FQE_REASON_NONE = 0,
	FQE_REASON_NOT_ALLOWED = 1,	/* no allow entry for the destination */
	FQE_REASON_EXPIRED = 2,		/* allow entry found but its TTL ran out */
	FQE_REASON_PORT = 3,		/* allow entry found, port/protocol not listed */
	FQE_REASON_SPOOFED = 4,		/* source address not owned by this pod */
	FQE_REASON_UNTRUSTED_DNS = 5,	/* port 53 to a resolver we do not trust */
	FQE_REASON_MALFORMED = 6,	/* header could not be parsed */
	FQE_REASON_PROTOCOL = 7,	/* ethertype we do not enforce (VLAN, ...) */
	FQE_REASON_AUDIT_ENDED = 8,	/* a flow only audit mode let through, after the switch to enforce */
	FQE_REASON_FLOW_QUOTA = 9,	/* a new flow past the pod's share of the flow table */
	FQE_REASON_DNS_NAME = 10,	/* a DNS query for a name outside the pod's rules and the cluster domains */
	FQE_REASON_TLS_NAME = 11,	/* a flow allowed only by tls rules whose ClientHello named no allowed server */
	FQE_REASON_SPOOFED_ANSWER = 12, /* a trusted resolver's packet from where the node does not route to it */
	FQE_REASON_MAX = 13,
};

/* Room for reasons to come: counters keep their layout when one is added. */
#define FQE_REASON_SLOTS	     16

/* Event kinds on the ring buffer. */
#define FQE_EV_DROP		     1
#define FQE_EV_AUDIT		     2

/* fqe_config flags */
#define FQE_CFG_INLINE_LEARNER_OFF   0x1 /* learn in userspace only */
/*
 * The datapath's feature states, written by the agent for egressctl (no
 * program reads them; agent/datapath/features.ts).
 */
#define FQE_CFG_PRECISE_CLOCK	     0x2  /* the enforcer build on the precise clock */
#define FQE_CFG_TLS_CHECK_OFF	     0x4  /* an enforcer build without the TLS check */
#define FQE_CFG_DNS_QUERY_FILTER_OFF 0x8  /* ... without the DNS query filter */
#define FQE_CFG_ATTACH_LEGACY	     0x10 /* programs go on through legacy tc */
#define FQE_CFG_HEAD_GUARD_OFF	     0x20 /* --tcx-head-guard off */
#define FQE_CFG_STATES_WRITTEN	     0x80 /* the bits above are meaningful */

/* fqe_policy kinds */
#define FQE_POLICY_EXACT	     1 /* hash of the whole name */
#define FQE_POLICY_WILDCARD	     2 /* hash of the suffix after "*." */

#define FQE_MAX_POLICY		     65536

/* fqe_config has one slot. */
#define FQE_CONFIG_KEY		     0

/* Agent-wide tunables (array of one); zero fields take the kernel default. */
struct fqe_config {
	__u64 ct_tcp_idle_ns;	/* tracked TCP flow idle timeout */
	__u64 ct_other_idle_ns; /* tracked UDP/other flow idle timeout */
	__u32 events_per_sec;	/* per CPU, per identity; 0 = default */
	__u32 min_ttl_s;	/* the inline learner's TTL clamp (--min-ttl) */
	__u32 max_ttl_s;
	__u32 flags;
	__u64 agent_heartbeat_ns; /* CLOCK_MONOTONIC, written by a running agent */
	__u32 agent_pid;
	__u32 ct_per_pod;	/* tracked flows one pod may hold; 0 = default */
	__u64 query_window_ns;	/* a query is good for one answer within this; 0 = default */
	__u64 connect_grace_ns; /* an accepted answer allows at least this long; 0 = default */
};

/* The per-node secret that keys the name hash (one slot; never 0 once set). */
struct fqe_hash_key {
	__u64 key;
};

/* Which identity and mode owns this interface? key: __u32 ifindex */
struct fqe_endpoint {
	__u32 identity;
	__u32 flags; /* FQE_EP_* */
};

/* Does this pod own this source address? value: __u32 (1) */
struct fqe_owner_key {
	__u32 identity;
	__u8 addr[16]; /* IPv4 as ::ffff:a.b.c.d */
};

/* One allowed port. proto 0 = TCP and UDP. */
struct fqe_port_rule {
	__u16 port; /* host byte order */
	__u8 proto; /* 0, IPPROTO_TCP, IPPROTO_UDP or FQE_PROTO_TLS */
	__u8 pad;
};

/* May this pod reach this destination? LPM: prefixlen counts identity bits. */
struct fqe_allow_key {
	__u32 prefixlen; /* 32 + address bits (IPv4: 32 + 96 + len) */
	__u32 identity;	 /* always matched in full (prefixlen >= 32) */
	__u8 addr[16];
};

struct fqe_allow_val {
	__u64 expires_ns; /* CLOCK_MONOTONIC; 0 = never */
	__u64 name_hash;  /* hash of the name it was answered for; 0 = none */
	__u8 nports;	  /* 0 = any port, TCP and UDP */
	__u8 source;	  /* FQE_SRC_* */
	__u16 pad;
	__u32 pad2;
	struct fqe_port_rule ports[FQE_MAX_PORT_RULES];
};

/* May this pod learn from answers for this name (hash)? On which ports? */
struct fqe_policy_key {
	__u32 identity;
	__u32 kind; /* FQE_POLICY_* */
	__u64 hash; /* name hash (see agent/policy/name-hash.ts) */
};

/*
 * The hash only finds the rule; the kernel then compares the question's real
 * name with `name`: the wire labels from the RIGHTMOST to the leftmost (the
 * order the hash feeds them), lower case, without the root label. For an
 * exact rule that is the whole name; for `*.suffix`, the suffix.
 */
struct fqe_policy_val {
	__u8 nports; /* 0 = any port, TCP and UDP */
	__u8 pad[3];
	struct fqe_port_rule ports[FQE_MAX_PORT_RULES];
	__u16 name_len; /* bytes of name[] in use; 0 = no name: never matches */
	__u8 pad2[2];
	__u8 name[FQE_NAME_LEN];
};

/*
 * Agent-wide allowCIDRs: may any enforced pod reach this prefix (any port)?
 * LPM over family and address, so an IPv6 prefix never covers IPv4.
 */
struct fqe_cidr_key {
	__u32 prefixlen; /* 32 (family word) + address bits (IPv4: 32 + 96 + len) */
	__u8 family;	 /* 4 or 6 */
	__u8 pad[3];
	__u8 addr[16]; /* IPv4 as ::ffff:a.b.c.d */
};

/*
 * Is this address a trusted resolver? value: __u32, FQE_RESOLVER_* flags
 * (1: trusted, its packets checked against the route back to it).
 */
#define FQE_RESOLVER_TRUSTED	   0x1
#define FQE_RESOLVER_NO_PATH_CHECK 0x2 /* a Service address: its answers come from wherever its backends are */
struct fqe_resolver_key {
	__u8 addr[16];
};

/* Did this pod really ask this resolver this id from this port? */
struct fqe_query_key {
	__u32 identity;
	__u16 sport;  /* host byte order */
	__u16 dns_id; /* host byte order */
	__u8 resolver[16];
};

struct fqe_query_val {
	__u64 sent_ns;
	__u8 proto; /* IPPROTO_UDP or IPPROTO_TCP */
	__u8 pad[7];
};

/* Is this flow already tracked? Always from the pod's point of view. */
struct fqe_ct_key {
	__u32 identity;
	__u8 pod_addr[16];
	__u8 peer_addr[16];
	__u16 pod_port; /* host byte order; 0 for port-less protocols */
	__u16 peer_port;
	__u8 proto;
	__u8 pad[3];
};

#define FQE_CT_OUTBOUND 0x1 /* opened by the pod (allowed egress) */
#define FQE_CT_INBOUND	0x2 /* opened towards the pod */
#define FQE_CT_AUDITED	0x4 /* refused but passed in audit mode (reported once) */
#define FQE_CT_CLOSING	0x8 /* TCP FIN or RST seen: reclaimed after a short idle */

struct fqe_ct_val {
	__u64 last_seen_ns;
	__u64 created_ns;
	__u32 flags; /* FQE_CT_* */
	__u32 pad;
};

/* Per-identity counters (per CPU). */
struct fqe_counters {
	__u64 passed;
	__u64 dropped;
	__u64 audited;
	__u64 dns_queries;
	__u64 learn_unwritten; /* addresses the learner could not write: the pod's share of fqe_allow, or the map full */
	__u64 events_suppressed; /* rate limit or ring buffer full */
	__u64 learned;		 /* allow entries written by the inline learner */
	__u64 learn_skipped;	 /* answers the inline learner left to the agent */
	__u64 learn_refused;	 /* a rule's hash hit, but the real name did not match */
	__u64 reasons[FQE_REASON_SLOTS];
	/* event rate limiter state: window start and count in it */
	__u64 rl_window_ns;
	__u64 rl_count;
};

/* A drop or audit event, as written to the ring buffer. */
struct fqe_event {
	__u64 ts_ns; /* CLOCK_MONOTONIC */
	__u32 identity;
	__u32 ifindex;
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport; /* host byte order */
	__u16 dport;
	__u8 proto;
	__u8 reason; /* enum fqe_reason */
	__u8 kind;   /* FQE_EV_* */
	__u8 family; /* 4 or 6 */
};

/*
 * Userspace bookkeeping, pinned beside the datapath so that a restarted
 * agent and egressctl know names and pods without the agent's memory.
 */

/* Which name does this hash stand for? key: __u64 name hash */
struct fqe_name {
	char name[FQE_NAME_LEN]; /* lower case, no trailing dot, NUL padded */
};

/* Which pod owns this identity? key: __u32 identity */
struct fqe_pod_info {
	__u32 ifindex;
	__u32 flags; /* FQE_EP_* as last applied */
	char ifname[FQE_IFNAME_LEN];
	char pod_namespace[FQE_POD_NAMESPACE_LEN];
	char pod_name[FQE_POD_NAME_LEN];
};

/*
 * Where a pod's rules came from, for egressctl (no program reads it):
 * "annotation", or the policy resources that select the pod, as
 * "policy NS/NAME, clusterpolicy NAME" (cut with "..." when longer).
 * key: __u32 identity (fqe_pod_origins) or struct fqe_policy_key (fqe_rule_origins)
 */
#define FQE_ORIGINS_LEN		      500
#define FQE_ORIGIN_ANNOTATION_IGNORED 0x1 /* the pod's annotation is set, and ignored */
struct fqe_origins {
	__u32 flags;		    /* FQE_ORIGIN_* */
	char text[FQE_ORIGINS_LEN]; /* NUL padded */
};

/* The last FQE_RECENT_EVENTS events, for egressctl drops (slot = seq % N). */
struct fqe_recent {
	__u64 seq; /* 1-based; 0 = slot never written */
	struct fqe_event ev;
};

/*
 * The inline learner's reports (the agent is not on the packet
 * path). Each answer the kernel learned from becomes one learned record on
 * the fqe_learned ring buffer; the agent updates its cache from it without
 * decoding a packet. What the kernel could not handle is marked in
 * fqe_tap_pass, and only that reaches the agent's AF_PACKET tap.
 */
#define FQE_LEARNED_BYTES	 (1 << 22)
#define FQE_LEARNED_WAKEUP_BYTES (1 << 18) /* wake the agent once this much waits */
#define FQE_LEARNED_MAX_ADDRS	 128	   /* = FQE_LEARN_MAX_ANSWERS */
#define FQE_MAX_TAP_PASS	 65536

/* fqe_learned_rec flags */
#define FQE_REC_PARTIAL		 0x1 /* more addresses than the record holds: the tap has the answer */

/* One address the learner wrote, with the expiry it gave its allow entry. */
struct fqe_learned_addr {
	__u8 addr[16];	  /* IPv4 as ::ffff:a.b.c.d */
	__u64 expires_ns; /* the entry's expiry after the write (CLOCK_MONOTONIC) */
	__u32 ttl_s;	  /* the answer's TTL (smallest of the record and its CNAMEs) */
	__u32 flags;	  /* FQE_ADDR_* */
};

/* fqe_learned_addr flags */
#define FQE_ADDR_UNWRITTEN 0x1 /* not written: past the pod's share of fqe_allow, or the map was full */

/* An answer the inline learner learned from: header, then naddrs addresses. */
struct fqe_learned_rec {
	__u64 ts_ns;	 /* when the learner wrote it (CLOCK_MONOTONIC) */
	__u64 name_hash; /* keyed hash of name, as in fqe_allow_val */
	__u32 identity;
	__u16 naddrs;	/* addrs[] in use */
	__u16 name_len; /* bytes of name[] in use */
	__u8 flags;	/* FQE_REC_* */
	__u8 nports;	/* the rule's ports (0 = any) */
	__u8 pad[6];
	struct fqe_port_rule ports[FQE_MAX_PORT_RULES];
	char name[FQE_NAME_LEN]; /* the question, lower case, dotted, no trailing dot */
	struct fqe_learned_addr addrs[FQE_LEARNED_MAX_ADDRS];
};

/*
 * May the agent's tap take this answer? Set by the learner for an answer to
 * a real query that it could not learn from in full (UDP: per query id;
 * TCP: per connection, dns_id 0, as a message may span segments).
 */
struct fqe_tap_key {
	__u32 identity;
	__u16 pod_port; /* host byte order */
	__u16 dns_id;	/* host byte order; 0 for a TCP connection */
	__u8 resolver[16];
	__u8 proto; /* IPPROTO_UDP or IPPROTO_TCP */
	__u8 pad[3];
};

struct fqe_tap_val {
	__u64 until_ns; /* CLOCK_MONOTONIC: the tap passes it until then */
};

/*
 * How many queries may one pod have recorded per second, per CPU? Past it a
 * query still passes but is not recorded (its answer teaches nothing), so a
 * pod flooding its resolver cannot push other pods' pending queries out of
 * the node-wide fqe_queries (whose answers then no learner would take).
 */
#define FQE_QUERIES_PER_SEC 2048

/* The per-pod query recording window (per CPU). key: __u32 identity */
struct fqe_query_rate {
	__u64 window_ns;  /* CLOCK_MONOTONIC start of the current second */
	__u64 count;	  /* queries recorded in it */
	__u64 unrecorded; /* queries passed without a record, ever */
};

/*
 * ---- DNS query filter: queries are policy too ----
 * New maps only; no layout above changes.
 */

/* Endpoint flag: this pod's DNS queries are not judged by name (opt-out). */
#define FQE_EP_DNS_FILTER_OFF	0x4

#define FQE_MAX_CLUSTER_DOMAINS 64
#define FQE_MAX_DNS_REFUSED	(2 * FQE_RECENT_EVENTS) /* names of recorded events only; LRU slack */

/*
 * Is this suffix one of the cluster's own domains (--cluster-domain)?
 * key: __u64 keyed hash of the domain (as wildcardHash); value: struct
 * fqe_policy_val with the domain's real name (ports unused), so the kernel
 * compares bytes, not only a hash.
 */

/* Which name did a refused query ask for? Keyed like its event. */
struct fqe_refused_key {
	__u64 ts_ns; /* the event's ts_ns */
	__u32 identity;
	__u16 sport; /* host byte order */
	__u16 pad;
};

#define FQE_REFUSED_PARSED 0x1 /* a plain one-question query: qtype and name are set */

struct fqe_refused_name {
	__u16 name_len; /* bytes of wire[] in use */
	__u16 qtype;	/* host byte order */
	__u8 flags;	/* FQE_REFUSED_* */
	__u8 proto;	/* IPPROTO_UDP or IPPROTO_TCP */
	__u8 pad[2];
	__u8 wire[FQE_NAME_LEN]; /* the question name as sent, wire format, no root label */
};

/*
 * ---- TLS server name check ----
 * New map and new values in unused room only; no layout above changes.
 *
 * A port rule with proto FQE_PROTO_TLS allows TCP to its port once the
 * flow's ClientHello named a server the pod may reach there. A TCP or
 * TCP+UDP rule for the same port grants it without the check.
 */
#define FQE_PROTO_TLS	     0xfe

/* fqe_ct_val flags: the check's state of a flow allowed only by tls rules */
#define FQE_CT_TLS_PENDING   0x10 /* its server name is not known yet */
#define FQE_CT_TLS_REFUSED   0x20 /* its server name was refused: every packet drops */
#define FQE_CT_TLS_WATCH     0x40 /* allowed, until the server answers: a resent hello byte must be the one judged */
#define FQE_CT_TLS_CHECK     (FQE_CT_TLS_PENDING | FQE_CT_TLS_REFUSED | FQE_CT_TLS_WATCH)

#define FQE_MAX_TLS_FLOWS    16384
/* the client's plaintext handshake (its ClientHellos: two after a HelloRetryRequest) within this (a power of two) */
#define FQE_TLS_MAX_BYTES    8192
#define FQE_TLS_MAX_SEGMENTS 16 /* ... and within this many segments */

/*
 * Where the ClientHello parser of one flow stands, between its segments.
 * Key: struct fqe_ct_key (the flow, from the pod's point of view).
 */
struct fqe_tls_flow {
	__u32 next_seq; /* the next byte's TCP sequence number */
	__u32 parsed;	/* bytes parsed so far */
	__u32 need;	/* bytes left in the current field */
	__u32 acc;	/* the current numeric field, so far */
	__u32 hs_left;	/* bytes left in the ClientHello body */
	__u32 ext_left; /* bytes left in the current extension */
	__u16 rec_left; /* bytes left in the current TLS record */
	__u8 rec_hdr;	/* bytes of the current record header seen (0..5) */
	__u8 state;	/* where the parser is (enum in bpf/lib/tls.h) */
	__u8 segments;	/* segments parsed */
	__u8 name_done; /* the name was seen and allowed: watching resent bytes */
	__u16 name_len; /* the current server name's length */
	/* in the room of the segment starts of before the byte store */
	__u32 base_seq;	     /* the sequence number of the stream's first data byte (the server's SYN-ACK acks it) */
	__u8 based;	     /* base_seq is known: data is judged from there on, never before */
	__u8 hellos;	     /* ClientHellos whose server name was judged */
	__u8 rec_type;	     /* the current TLS record's content type */
	__u8 named;	     /* the current ClientHello's server name was seen */
	__u32 first_name_at; /* stream offset of the first ClientHello's server name */
	__u32 first_name_len;
	__u32 reserved[4];
	/* unused since the byte store (fqe_tls_bytes) took the place of segment hashes */
	__u32 seg_len[8];
	__u64 seg_hash[8];
	__u8 name[FQE_NAME_LEN]; /* unused since the byte store (the name is read from it) */
};

/*
 * The bytes of one flow's stream the check has taken, from its first data
 * byte (at most FQE_TLS_MAX_BYTES; the tail is room for 64-byte copies).
 * A byte sent again must be the byte judged. Key: struct fqe_ct_key.
 */
#define FQE_MAX_TLS_STORES 4096
struct fqe_tls_bytes {
	__u8 b[FQE_TLS_MAX_BYTES + 64];
};

/*
 * ---- DNS over TCP to a trusted resolver ----
 * Where the pod's byte stream to the resolver stands, so that the query
 * filter judges exactly the bytes the resolver will read: the next byte's
 * sequence number, taken from the resolver's SYN-ACK (the learner sees it)
 * and moved past each segment judged. Key: struct fqe_ct_key.
 */
#define FQE_MAX_DNS_TCP 16384
struct fqe_dns_tcp {
	__u32 next_seq; /* the pod's next byte (host byte order) */
	__u32 pad;
};

/*
 * ---- Per-pod shares of node-wide tables ----
 * Limits the agent sets (one slot; a field left 0 takes the kernel
 * default), and what each pod holds of them. The kernel counts up as it
 * adds; the agent writes exact counts back on its sweeps (entries expire
 * and are deleted from userspace).
 */
#define FQE_DEFAULT_IPS_PER_POD	      16384 /* of fqe_allow's FQE_MAX_ALLOW */
#define FQE_DEFAULT_TLS_FLOWS_PER_POD 1024  /* of fqe_tls_flows' FQE_MAX_TLS_FLOWS */
struct fqe_limits {
	__u32 ips_per_pod;	 /* allow entries the kernel learner may add for one pod */
	__u32 tls_flows_per_pod; /* flows of one pod under the TLS check at once */
	__u32 reserved[6];
};

struct fqe_pod_share {
	__u64 allow;	 /* entries of fqe_allow the pod holds */
	__u64 tls_flows; /* entries of fqe_tls_flows */
};

/*
 * ---- Pod start: decisions for the CNI plugin ----
 * New map only; no layout above changes.
 *
 * The agent publishes, per pod scheduled to this node, whether it enforces
 * it (computed from its watch, before the pod's sandbox exists); the chained
 * CNI plugin (cni/fqdn-egress-cni.c) reads it on ADD and writes the pod's
 * endpoint before the pod can send. No program reads this map.
 */
#define FQE_MAX_POD_DECISIONS	  4096
/*
 * Endpoint flag, userspace only: the plugin found no decision and enforces
 * the pod as pending until the agent decides (fqe_pod_decision.flags,
 * fqe_pod_info.flags; never in fqe_endpoints). Programs test the bits they
 * know, so this one is harmless there.
 */
#define FQE_EP_PENDING		  0x8
/* Identities the plugin claims for pending pods (the agent allocates below). */
#define FQE_PENDING_IDENTITY_BASE 0x80000000u

/* fqe_config flags: what the plugin does with a pod the agent has not decided */
#define FQE_CFG_UNKNOWN_PODS_OPEN 0x40 /* pass it (no endpoint entry); clear: DNS and link control only */

/* Which pod? (key of fqe_pod_decisions; NUL padded) */
struct fqe_pod_ref {
	char pod_namespace[FQE_POD_NAMESPACE_LEN];
	char pod_name[FQE_POD_NAME_LEN];
};

/* What was decided for this pod? */
struct fqe_pod_decision {
	__u32 identity; /* 0 when not enforced */
	__u32 flags;	/* FQE_EP_ENFORCE / AUDIT / DNS_FILTER_OFF; 0 = not enforced; FQE_EP_PENDING: undecided */
	__u64 since_ns; /* CLOCK_MONOTONIC: when it was written */
};

#endif /* FQE_TYPES_H */
