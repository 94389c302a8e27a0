// SPDX-License-Identifier: Apache-2.0
//
// layouts(): sizeof and offsetof of every struct and field of fqe_types.h,
// and its constants, as the compiler lays them out. Only for the cross-check
// (test/kernel/codecs.test.ts): each map module under agent/datapath/maps/
// declares its structs once, and is checked here against the one header the
// BPF programs are compiled with.
#include "addon.h"
#include "errors.h"

extern "C" {
#include "fqe_types.h"
}

#include <cstddef>

namespace fqe
{

#define FQE_STRUCT(name)                                                                                               \
	{                                                                                                              \
		Napi::Object fields = Napi::Object::New(env);                                                          \
		Napi::Object layout = Napi::Object::New(env);                                                          \
		layout.Set("size", Napi::Number::New(env, sizeof(struct fqe_##name)));                                 \
		layout.Set("fields", fields);                                                                          \
		result.Set(#name, layout);                                                                             \
		using S = struct fqe_##name;
#define FQE_FIELD(field) fields.Set(#field, Napi::Number::New(env, offsetof(S, field)));
#define FQE_END		 }
#define FQE_CONST(name)	 constants.Set(#name, Napi::Number::New(env, static_cast<double>(FQE_##name)));

static Napi::Value Layouts(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	Napi::Object result = Napi::Object::New(env);

	FQE_STRUCT(config)
	FQE_FIELD(ct_tcp_idle_ns)
	FQE_FIELD(ct_other_idle_ns)
	FQE_FIELD(events_per_sec)
	FQE_FIELD(min_ttl_s)
	FQE_FIELD(max_ttl_s)
	FQE_FIELD(flags)
	FQE_FIELD(agent_heartbeat_ns)
	FQE_FIELD(agent_pid)
	FQE_FIELD(ct_per_pod)
	FQE_FIELD(query_window_ns)
	FQE_FIELD(connect_grace_ns)
	FQE_END

	FQE_STRUCT(hash_key)
	FQE_FIELD(key)
	FQE_END

	FQE_STRUCT(cidr_key)
	FQE_FIELD(prefixlen)
	FQE_FIELD(family)
	FQE_FIELD(pad)
	FQE_FIELD(addr)
	FQE_END

	FQE_STRUCT(endpoint)
	FQE_FIELD(identity)
	FQE_FIELD(flags)
	FQE_END

	FQE_STRUCT(owner_key)
	FQE_FIELD(identity)
	FQE_FIELD(addr)
	FQE_END

	FQE_STRUCT(port_rule)
	FQE_FIELD(port)
	FQE_FIELD(proto)
	FQE_FIELD(pad)
	FQE_END

	FQE_STRUCT(allow_key)
	FQE_FIELD(prefixlen)
	FQE_FIELD(identity)
	FQE_FIELD(addr)
	FQE_END

	FQE_STRUCT(allow_val)
	FQE_FIELD(expires_ns)
	FQE_FIELD(name_hash)
	FQE_FIELD(nports)
	FQE_FIELD(source)
	FQE_FIELD(pad)
	FQE_FIELD(pad2)
	FQE_FIELD(ports)
	FQE_END

	FQE_STRUCT(policy_key)
	FQE_FIELD(identity)
	FQE_FIELD(kind)
	FQE_FIELD(hash)
	FQE_END

	FQE_STRUCT(policy_val)
	FQE_FIELD(nports)
	FQE_FIELD(pad)
	FQE_FIELD(ports)
	FQE_FIELD(name_len)
	FQE_FIELD(pad2)
	FQE_FIELD(name)
	FQE_END

	FQE_STRUCT(resolver_key)
	FQE_FIELD(addr)
	FQE_END

	FQE_STRUCT(query_key)
	FQE_FIELD(identity)
	FQE_FIELD(sport)
	FQE_FIELD(dns_id)
	FQE_FIELD(resolver)
	FQE_END

	FQE_STRUCT(query_val)
	FQE_FIELD(sent_ns)
	FQE_FIELD(proto)
	FQE_FIELD(pad)
	FQE_END

	FQE_STRUCT(ct_key)
	FQE_FIELD(identity)
	FQE_FIELD(pod_addr)
	FQE_FIELD(peer_addr)
	FQE_FIELD(pod_port)
	FQE_FIELD(peer_port)
	FQE_FIELD(proto)
	FQE_FIELD(pad)
	FQE_END

	FQE_STRUCT(ct_val)
	FQE_FIELD(last_seen_ns)
	FQE_FIELD(created_ns)
	FQE_FIELD(flags)
	FQE_FIELD(pad)
	FQE_END

	FQE_STRUCT(counters)
	FQE_FIELD(passed)
	FQE_FIELD(dropped)
	FQE_FIELD(audited)
	FQE_FIELD(dns_queries)
	FQE_FIELD(learn_unwritten)
	FQE_FIELD(events_suppressed)
	FQE_FIELD(learned)
	FQE_FIELD(learn_skipped)
	FQE_FIELD(learn_refused)
	FQE_FIELD(reasons)
	FQE_FIELD(rl_window_ns)
	FQE_FIELD(rl_count)
	FQE_END

	FQE_STRUCT(name)
	FQE_FIELD(name)
	FQE_END

	FQE_STRUCT(pod_info)
	FQE_FIELD(ifindex)
	FQE_FIELD(flags)
	FQE_FIELD(ifname)
	FQE_FIELD(pod_namespace)
	FQE_FIELD(pod_name)
	FQE_END

	FQE_STRUCT(origins)
	FQE_FIELD(flags)
	FQE_FIELD(text)
	FQE_END

	FQE_STRUCT(recent)
	FQE_FIELD(seq)
	FQE_FIELD(ev)
	FQE_END

	FQE_STRUCT(event)
	FQE_FIELD(ts_ns)
	FQE_FIELD(identity)
	FQE_FIELD(ifindex)
	FQE_FIELD(saddr)
	FQE_FIELD(daddr)
	FQE_FIELD(sport)
	FQE_FIELD(dport)
	FQE_FIELD(proto)
	FQE_FIELD(reason)
	FQE_FIELD(kind)
	FQE_FIELD(family)
	FQE_END

	FQE_STRUCT(learned_addr)
	FQE_FIELD(addr)
	FQE_FIELD(expires_ns)
	FQE_FIELD(ttl_s)
	FQE_FIELD(flags)
	FQE_END

	FQE_STRUCT(limits)
	FQE_FIELD(ips_per_pod)
	FQE_FIELD(tls_flows_per_pod)
	FQE_FIELD(reserved)
	FQE_END

	FQE_STRUCT(pod_share)
	FQE_FIELD(allow)
	FQE_FIELD(tls_flows)
	FQE_END

	FQE_STRUCT(learned_rec)
	FQE_FIELD(ts_ns)
	FQE_FIELD(name_hash)
	FQE_FIELD(identity)
	FQE_FIELD(naddrs)
	FQE_FIELD(name_len)
	FQE_FIELD(flags)
	FQE_FIELD(nports)
	FQE_FIELD(ports)
	FQE_FIELD(name)
	FQE_FIELD(addrs)
	FQE_END

	FQE_STRUCT(tap_key)
	FQE_FIELD(identity)
	FQE_FIELD(pod_port)
	FQE_FIELD(dns_id)
	FQE_FIELD(resolver)
	FQE_FIELD(proto)
	FQE_END

	FQE_STRUCT(tap_val)
	FQE_FIELD(until_ns)
	FQE_END

	FQE_STRUCT(query_rate)
	FQE_FIELD(window_ns)
	FQE_FIELD(count)
	FQE_FIELD(unrecorded)
	FQE_END

	/* DNS query filter */
	FQE_STRUCT(refused_key)
	FQE_FIELD(ts_ns)
	FQE_FIELD(identity)
	FQE_FIELD(sport)
	FQE_FIELD(pad)
	FQE_END

	/* TLS server name check */
	FQE_STRUCT(tls_flow)
	FQE_FIELD(next_seq)
	FQE_FIELD(parsed)
	FQE_FIELD(need)
	FQE_FIELD(acc)
	FQE_FIELD(hs_left)
	FQE_FIELD(ext_left)
	FQE_FIELD(rec_left)
	FQE_FIELD(rec_hdr)
	FQE_FIELD(state)
	FQE_FIELD(segments)
	FQE_FIELD(name_done)
	FQE_FIELD(name_len)
	FQE_FIELD(base_seq)
	FQE_FIELD(based)
	FQE_FIELD(hellos)
	FQE_FIELD(rec_type)
	FQE_FIELD(named)
	FQE_FIELD(first_name_at)
	FQE_FIELD(first_name_len)
	FQE_FIELD(reserved)
	FQE_FIELD(seg_len)
	FQE_FIELD(seg_hash)
	FQE_FIELD(name)
	FQE_END

	FQE_STRUCT(tls_bytes)
	FQE_FIELD(b)
	FQE_END

	FQE_STRUCT(dns_tcp)
	FQE_FIELD(next_seq)
	FQE_FIELD(pad)
	FQE_END

	FQE_STRUCT(refused_name)
	FQE_FIELD(name_len)
	FQE_FIELD(qtype)
	FQE_FIELD(flags)
	FQE_FIELD(proto)
	FQE_FIELD(pad)
	FQE_FIELD(wire)
	FQE_END

	/* pod start: decisions for the CNI plugin */
	FQE_STRUCT(pod_ref)
	FQE_FIELD(pod_namespace)
	FQE_FIELD(pod_name)
	FQE_END

	FQE_STRUCT(pod_decision)
	FQE_FIELD(identity)
	FQE_FIELD(flags)
	FQE_FIELD(since_ns)
	FQE_END

	Napi::Object constants = Napi::Object::New(env);
	FQE_CONST(ABI_VERSION)
	FQE_CONST(MAX_ENDPOINTS)
	FQE_CONST(MAX_OWNED_ADDRS)
	FQE_CONST(MAX_ALLOW)
	FQE_CONST(MAX_RESOLVERS)
	FQE_CONST(MAX_PENDING)
	FQE_CONST(MAX_CONNTRACK)
	FQE_CONST(EVENTS_BYTES)
	FQE_CONST(MAX_PORT_RULES)
	FQE_CONST(MAX_NAMES)
	FQE_CONST(MAX_CIDRS)
	FQE_CONST(RECENT_EVENTS)
	FQE_CONST(NAME_LEN)
	FQE_CONST(POD_NAMESPACE_LEN)
	FQE_CONST(POD_NAME_LEN)
	FQE_CONST(IFNAME_LEN)
	FQE_CONST(EP_ENFORCE)
	FQE_CONST(EP_AUDIT)
	FQE_CONST(SRC_AGENT)
	FQE_CONST(SRC_KERNEL)
	FQE_CONST(SRC_STATIC)
	FQE_CONST(REASON_NONE)
	FQE_CONST(REASON_NOT_ALLOWED)
	FQE_CONST(REASON_EXPIRED)
	FQE_CONST(REASON_PORT)
	FQE_CONST(REASON_SPOOFED)
	FQE_CONST(REASON_UNTRUSTED_DNS)
	FQE_CONST(REASON_MALFORMED)
	FQE_CONST(REASON_PROTOCOL)
	FQE_CONST(REASON_AUDIT_ENDED)
	FQE_CONST(REASON_FLOW_QUOTA)
	FQE_CONST(REASON_MAX)
	FQE_CONST(REASON_SLOTS)
	FQE_CONST(EV_DROP)
	FQE_CONST(EV_AUDIT)
	FQE_CONST(CONFIG_KEY)
	FQE_CONST(PROTO_TLS)
	FQE_CONST(CT_TLS_PENDING)
	FQE_CONST(CT_TLS_REFUSED)
	FQE_CONST(CT_TLS_WATCH)
	FQE_CONST(MAX_TLS_FLOWS)
	FQE_CONST(CT_OUTBOUND)
	FQE_CONST(CT_INBOUND)
	FQE_CONST(CT_AUDITED)
	FQE_CONST(CT_CLOSING)
	FQE_CONST(CFG_INLINE_LEARNER_OFF)
	FQE_CONST(CFG_PRECISE_CLOCK)
	FQE_CONST(CFG_TLS_CHECK_OFF)
	FQE_CONST(CFG_DNS_QUERY_FILTER_OFF)
	FQE_CONST(CFG_ATTACH_LEGACY)
	FQE_CONST(CFG_HEAD_GUARD_OFF)
	FQE_CONST(CFG_STATES_WRITTEN)
	FQE_CONST(POLICY_EXACT)
	FQE_CONST(POLICY_WILDCARD)
	FQE_CONST(MAX_POLICY)
	FQE_CONST(LEARNED_BYTES)
	FQE_CONST(LEARNED_MAX_ADDRS)
	FQE_CONST(MAX_TAP_PASS)
	FQE_CONST(REC_PARTIAL)
	FQE_CONST(QUERIES_PER_SEC)
	/* DNS query filter */
	FQE_CONST(REASON_DNS_NAME)
	FQE_CONST(REASON_TLS_NAME)
	FQE_CONST(REASON_SPOOFED_ANSWER)
	FQE_CONST(RESOLVER_NO_PATH_CHECK)
	FQE_CONST(EP_DNS_FILTER_OFF)
	FQE_CONST(MAX_CLUSTER_DOMAINS)
	FQE_CONST(MAX_DNS_REFUSED)
	FQE_CONST(REFUSED_PARSED)
	/* pod start */
	FQE_CONST(MAX_POD_DECISIONS)
	FQE_CONST(EP_PENDING)
	FQE_CONST(PENDING_IDENTITY_BASE)
	FQE_CONST(CFG_UNKNOWN_PODS_OPEN)
	result.Set("constants", constants);
	return result;
}

void InitLayouts(Napi::Env env, Napi::Object exports)
{
	exports.Set("layouts", Napi::Function::New(env, Layouts));
}

} // namespace fqe
