// SPDX-License-Identifier: Apache-2.0
/*
 * fqdn-egress-cni: a chained CNI plugin (spec 0.4.0, 1.0.0, 1.1.0) that puts
 * a new pod under enforcement before ADD returns, so its first packet meets
 * the enforcer whether the agent is running, slow or down.
 *
 * ADD: the host-side interface and the pod's addresses come from prevResult
 * (the interface without a "sandbox"; of several, the last that is not a
 * bridge), the pod from CNI_ARGS (K8S_POD_NAMESPACE, K8S_POD_NAME). The
 * agent's decision for the pod comes from the pinned fqe_pod_decisions:
 *   enforce/audit: its identity is allocated and its policy written already;
 *     we write owners, fqe_pods (interface), attach, and the endpoint LAST;
 *   not enforced: nothing is written;
 *   none (the agent is down or behind): pending. We claim an identity at
 *     random in [0x80000000, 0xffffffff] (an insert into fqe_pods that fails
 *     on a taken one), publish the pending decision (unless the agent beat us
 *     to it), write owners, attach, and under --unknown-pods closed (the
 *     default; a bit of fqe_config) an endpoint {enforce, DNS filter off}:
 *     an identity with no names passes link control and DNS to the trusted
 *     resolvers, nothing else. Under open: no endpoint entry.
 * The agent adopts what we wrote (pods/decisions.ts). A failed ADD takes
 * back what it wrote. Without the agent's pins the result passes through.
 * DEL takes back what ADD wrote (idempotent); CHECK verifies it.
 *
 * The output of ADD is prevResult, unchanged. Errors are the spec's error
 * result on stdout with a non-zero exit; the log goes to stderr.
 * Dependency-free: libc and raw bpf(2) / rtnetlink (kernel.c), our own JSON
 * reader (json.c). Built static by scripts/build.sh.
 */
#include "json.h"
#include "kernel.h"

#include <linux/bpf.h>
/* fqe_types.h takes the kernel's __u types under __BPF__: the ones linux/bpf.h brought in */
#define __BPF__ 1
#include "../bpf/lib/fqe_types.h"
#undef __BPF__

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_PIN_DIR "/sys/fs/bpf/fqdn-egress"
#define MAX_STDIN	(1 << 20)
#define MAX_IPS		16
#define TC_HANDLE	0xfe0e /* agent/datapath/attach.ts */
#define TC_PRIORITY	1
#define CLAIM_ATTEMPTS	32
#define ENOTSUPP_KERNEL 524

/* CNI error codes (SPEC.md, "Error") and ours */
#define ERR_VERSION	1
#define ERR_ENV		4
#define ERR_IO		5
#define ERR_DECODE	6
#define ERR_CONFIG	7
#define ERR_TRY_LATER	11
#define ERR_OURS	999

static const char *supported[] = { "0.4.0", "1.0.0", "1.1.0" };

static char cni_version[32] = "1.0.0";

static void logf_(const char *fmt, ...)
{
	va_list ap;

	fputs("fqdn-egress-cni: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void json_out_string(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

/* The spec's error result on stdout; exits non-zero. */
static void __attribute__((noreturn, format(printf, 3, 4))) die(int code, const char *details, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	logf_("error %d: %s%s%s", code, msg, details && *details ? ": " : "", details ? details : "");
	printf("{\"cniVersion\":");
	json_out_string(cni_version);
	printf(",\"code\":%d,\"msg\":", code);
	json_out_string(msg);
	if (details && *details) {
		printf(",\"details\":");
		json_out_string(details);
	}
	printf("}\n");
	fflush(stdout);
	exit(1);
}

/* ---- what the runtime gave us ---- */

struct pod_addr {
	uint8_t addr[16]; /* IPv4 as ::ffff:a.b.c.d */
};

struct request {
	const char *command;
	char pin_dir[256];
	char ns[FQE_POD_NAMESPACE_LEN];
	char name[FQE_POD_NAME_LEN];
	int has_pod;
	int has_prev;
	size_t prev_start, prev_end; /* prevResult's text */
	char ifname[FQE_IFNAME_LEN];
	int ifindex; /* 0: not found */
	struct pod_addr ips[MAX_IPS];
	int nips;
};

static struct json_doc doc;
static char input[MAX_STDIN + 1];

static size_t read_stdin(void)
{
	size_t n = 0;

	for (;;) {
		ssize_t r = read(0, input + n, MAX_STDIN + 1 - n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			die(ERR_IO, strerror(errno), "cannot read the network configuration from stdin");
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (n > MAX_STDIN)
			die(ERR_DECODE, NULL, "network configuration larger than %d bytes", MAX_STDIN);
	}
	input[n] = 0;
	return n;
}

static int version_supported(const char *v)
{
	for (size_t i = 0; i < sizeof(supported) / sizeof(supported[0]); i++)
		if (strcmp(v, supported[i]) == 0)
			return 1;
	return 0;
}

/* K8S_POD_NAMESPACE and K8S_POD_NAME from CNI_ARGS ("K=V;K=V"). */
static void parse_cni_args(struct request *r)
{
	const char *args = getenv("CNI_ARGS");
	char buf[2048], *save = NULL;
	int have_ns = 0, have_name = 0;

	if (!args || !*args)
		return;
	if (strlen(args) >= sizeof(buf))
		die(ERR_ENV, NULL, "CNI_ARGS longer than %zu bytes", sizeof(buf) - 1);
	strcpy(buf, args);
	for (char *kv = strtok_r(buf, ";", &save); kv; kv = strtok_r(NULL, ";", &save)) {
		char *eq = strchr(kv, '=');
		if (!eq)
			die(ERR_ENV, kv, "CNI_ARGS: an entry without '='");
		*eq = 0;
		if (strcmp(kv, "K8S_POD_NAMESPACE") == 0) {
			if (strlen(eq + 1) >= sizeof(r->ns) || !eq[1])
				die(ERR_ENV, eq + 1, "CNI_ARGS: K8S_POD_NAMESPACE empty or longer than %zu bytes",
				    sizeof(r->ns) - 1);
			strcpy(r->ns, eq + 1);
			have_ns = 1;
		} else if (strcmp(kv, "K8S_POD_NAME") == 0) {
			if (strlen(eq + 1) >= sizeof(r->name) || !eq[1])
				die(ERR_ENV, eq + 1, "CNI_ARGS: K8S_POD_NAME empty or longer than %zu bytes",
				    sizeof(r->name) - 1);
			strcpy(r->name, eq + 1);
			have_name = 1;
		}
	}
	r->has_pod = have_ns && have_name;
}

static int parse_ip(const char *cidr, struct pod_addr *out)
{
	char text[64];
	char *slash;

	if (strlen(cidr) >= sizeof(text))
		return -1;
	strcpy(text, cidr);
	slash = strchr(text, '/');
	if (slash)
		*slash = 0;
	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET, text, out->addr + 12) == 1) {
		out->addr[10] = 0xff;
		out->addr[11] = 0xff;
		return 0;
	}
	return inet_pton(AF_INET6, text, out->addr) == 1 ? 0 : -1;
}

/* The host-side interface and the pod's addresses from prevResult. */
static void parse_prev_result(struct request *r, int prev, int need_interface)
{
	int ifaces = json_get(&doc, prev, "interfaces"), ips = json_get(&doc, prev, "ips");
	int sandboxed[64] = { 0 }, idx = 0, host = -1;
	char name[64], kind[32];

	if (ifaces >= 0 && doc.nodes[ifaces].type != JSON_ARRAY)
		die(ERR_CONFIG, NULL, "prevResult.interfaces is not an array");
	if (ips >= 0 && doc.nodes[ips].type != JSON_ARRAY)
		die(ERR_CONFIG, NULL, "prevResult.ips is not an array");
	for (int c = ifaces >= 0 ? doc.nodes[ifaces].child : -1; c >= 0; c = doc.nodes[c].next, idx++) {
		int ifindex;

		if (idx >= 64)
			die(ERR_CONFIG, NULL, "prevResult has more than 64 interfaces");
		if (json_get_string(&doc, c, "name", name, sizeof(name)) < 0)
			die(ERR_CONFIG, NULL, "prevResult.interfaces[%d] has no name", idx);
		if (json_get(&doc, c, "sandbox") >= 0) {
			char sb[8];
			/* an empty sandbox counts as none (some plugins write "") */
			sandboxed[idx] = json_get_string(&doc, c, "sandbox", sb, sizeof(sb)) != 0;
			if (sandboxed[idx])
				continue;
		}
		/* bridge plugin: the bridge and the veth have no sandbox; the veth is ours */
		if (link_by_name(name, &ifindex, kind, sizeof(kind)) == 0 && strcmp(kind, "bridge") == 0)
			continue;
		host = c;
	}
	if (host < 0) {
		if (need_interface)
			die(ERR_CONFIG, NULL,
			    "prevResult has no host-side interface (an interface without \"sandbox\"): "
			    "fqdn-egress-cni needs a CNI that gives each pod a host-side interface (ptp, bridge, ...)");
		return;
	}
	if (json_get_string(&doc, host, "name", name, sizeof(name)) < 0 || strlen(name) >= sizeof(r->ifname))
		die(ERR_CONFIG, name, "prevResult: host-side interface name too long");
	strcpy(r->ifname, name);
	for (int c = ips >= 0 ? doc.nodes[ips].child : -1; c >= 0; c = doc.nodes[c].next) {
		char addr[64], num[16];
		int at = json_get(&doc, c, "interface");

		if (json_get_string(&doc, c, "address", addr, sizeof(addr)) < 0)
			die(ERR_CONFIG, NULL, "prevResult.ips[]: an entry without an address");
		if (at >= 0) { /* only the pod's own addresses (on a sandbox interface) */
			size_t l = doc.nodes[at].end - doc.nodes[at].start;
			long i;
			if (doc.nodes[at].type != JSON_NUMBER || l >= sizeof(num))
				die(ERR_CONFIG, NULL, "prevResult.ips[].interface is not an index");
			memcpy(num, doc.text + doc.nodes[at].start, l);
			num[l] = 0;
			i = strtol(num, NULL, 10);
			if (i >= 0 && i < 64 && !sandboxed[i])
				continue;
		}
		if (r->nips >= MAX_IPS)
			die(ERR_CONFIG, NULL, "prevResult has more than %d pod addresses", MAX_IPS);
		if (parse_ip(addr, &r->ips[r->nips]) < 0)
			die(ERR_CONFIG, addr, "prevResult.ips[]: not an IP address");
		r->nips++;
	}
}

static void parse_request(struct request *r, int need_prev)
{
	size_t n = read_stdin();
	const char *env_dir = getenv("FQDN_EGRESS_BPF_PIN_DIR");
	char v[32], dir[256];
	int prev;

	if (json_parse(&doc, input, n) < 0)
		die(ERR_DECODE, doc.error, "cannot decode the network configuration");
	if (doc.nodes[0].type != JSON_OBJECT)
		die(ERR_DECODE, NULL, "the network configuration is not a JSON object");
	if (json_get_string(&doc, 0, "cniVersion", v, sizeof(v)) < 0)
		die(ERR_CONFIG, NULL, "the network configuration has no cniVersion");
	if (!version_supported(v))
		die(ERR_VERSION, v, "cniVersion %s is not supported (supported: 0.4.0, 1.0.0, 1.1.0)", v);
	strcpy(cni_version, v);

	strcpy(r->pin_dir, DEFAULT_PIN_DIR);
	if (json_get(&doc, 0, "bpfPinDir") >= 0) {
		if (json_get_string(&doc, 0, "bpfPinDir", dir, sizeof(dir)) < 0 || dir[0] != '/')
			die(ERR_CONFIG, NULL, "bpfPinDir must be an absolute path shorter than %zu bytes", sizeof(dir));
		strcpy(r->pin_dir, dir);
	}
	if (env_dir && *env_dir) {
		if (env_dir[0] != '/' || strlen(env_dir) >= sizeof(r->pin_dir))
			die(ERR_ENV, env_dir, "FQDN_EGRESS_BPF_PIN_DIR must be an absolute path shorter than %zu bytes",
			    sizeof(r->pin_dir));
		strcpy(r->pin_dir, env_dir);
	}
	parse_cni_args(r);

	prev = json_get(&doc, 0, "prevResult");
	if (prev >= 0 && doc.nodes[prev].type == JSON_NULL)
		prev = -1;
	if (prev >= 0 && doc.nodes[prev].type != JSON_OBJECT)
		die(ERR_CONFIG, NULL, "prevResult is not an object");
	if (prev < 0) {
		if (need_prev)
			die(ERR_CONFIG, NULL,
			    "no prevResult: fqdn-egress-cni is a chained plugin and must come after the plugin that "
			    "creates the pod's interface");
		return;
	}
	r->has_prev = 1;
	r->prev_start = doc.nodes[prev].start;
	r->prev_end = doc.nodes[prev].end;
	parse_prev_result(r, prev, need_prev);
}

static void need_env(const char *name)
{
	const char *v = getenv(name);
	if (!v || !*v)
		die(ERR_ENV, NULL, "%s is not set", name);
}

/* ---- the agent's pins ---- */

struct pins {
	char dir[256];
	int decisions, pods, owners, endpoints, config;
	int counters, ct_counts, ct_in_counts, query_rate, pod_shares;
};

/* 0 opened; -ENOENT: the agent was never installed (or predates the plugin); other -errno. */
static int open_map(const struct pins *p, const char *name, int *fd)
{
	char path[320];

	snprintf(path, sizeof(path), "%s/%s", p->dir, name);
	*fd = bpf_obj_get(path);
	return *fd < 0 ? *fd : 0;
}

static int open_pins(struct pins *p, const char *dir)
{
	static const char *names[] = { "fqe_pod_decisions", "fqe_pods", "fqe_owners", "fqe_endpoints", "fqe_config" };
	int *fds[] = { &p->decisions, &p->pods, &p->owners, &p->endpoints, &p->config };
	static const char *optional[] = { "fqe_counters", "fqe_ct_counts", "fqe_ct_in_counts", "fqe_query_rate",
					  "fqe_pod_shares" };
	int *ofds[] = { &p->counters, &p->ct_counts, &p->ct_in_counts, &p->query_rate, &p->pod_shares };

	snprintf(p->dir, sizeof(p->dir), "%s", dir);
	for (size_t i = 0; i < 5; i++) {
		int ret = open_map(p, names[i], fds[i]);
		if (ret < 0) {
			if (ret != -ENOENT)
				die(ERR_TRY_LATER, strerror(-ret), "cannot open %s/%s", dir, names[i]);
			return -ENOENT;
		}
	}
	for (size_t i = 0; i < 5; i++)
		if (open_map(p, optional[i], ofds[i]) < 0)
			*ofds[i] = -1;
	return 0;
}

static uint64_t monotonic_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void pod_ref_of(const struct request *r, struct fqe_pod_ref *ref)
{
	memset(ref, 0, sizeof(*ref));
	memcpy(ref->pod_namespace, r->ns, strlen(r->ns));
	memcpy(ref->pod_name, r->name, strlen(r->name));
}

static uint32_t config_flags(const struct pins *p)
{
	struct fqe_config cfg;
	uint32_t key = FQE_CONFIG_KEY;

	memset(&cfg, 0, sizeof(cfg));
	if (bpf_map_lookup(p->config, &key, &cfg) < 0)
		return 0;
	return cfg.flags;
}

/* ---- attach (agent/datapath/attach.ts: tcx links pinned by name, else legacy tc) ---- */

static void link_pin(const struct pins *p, int ifindex, enum hook h, char *path, size_t cap)
{
	snprintf(path, cap, "%s/link_%d_%s", p->dir, ifindex, h == HOOK_INGRESS ? "ingress" : "egress");
}

/* 1: our link is pinned and attached to this hook; 0: no; a stale pin is removed when `clean`. */
static int own_link(const struct pins *p, int ifindex, enum hook h, int clean)
{
	char path[320];
	int fd, is;

	link_pin(p, ifindex, h, path, sizeof(path));
	fd = bpf_obj_get(path);
	if (fd < 0)
		return 0;
	is = tcx_link_is(fd, ifindex, h);
	close(fd);
	if (is != 1 && clean)
		unlink(path);
	return is == 1;
}

static int tcx_unavailable(int err)
{
	return err == -EINVAL || err == -EOPNOTSUPP || err == -ENOTSUPP_KERNEL || err == -E2BIG || err == -ERANGE;
}

/* Attach both programs; 0, or -errno with what failed in `what`. */
static int attach(const struct pins *p, int ifindex, char *what, size_t cap)
{
	static const char *progs[] = { "prog_enforcer", "prog_learner" };
	int legacy = (config_flags(p) & (FQE_CFG_STATES_WRITTEN | FQE_CFG_ATTACH_LEGACY)) ==
		     (FQE_CFG_STATES_WRITTEN | FQE_CFG_ATTACH_LEGACY);
	int fds[2] = { -1, -1 }, ret = 0;

	for (int h = 0; h < 2; h++) {
		char path[320];
		snprintf(path, sizeof(path), "%s/%s", p->dir, progs[h]);
		fds[h] = bpf_obj_get(path);
		if (fds[h] < 0) {
			ret = fds[h];
			snprintf(what, cap, "open %s", path);
			goto out;
		}
	}
	for (int h = 0; h < 2 && !legacy; h++) {
		char path[320];
		int link;

		if (own_link(p, ifindex, (enum hook)h, 1))
			continue; /* the agent (or an earlier ADD) put ours there */
		link = tcx_link_create(fds[h], ifindex, (enum hook)h);
		if (link < 0) {
			if (tcx_unavailable(link)) {
				logf_("the kernel refused a tcx link (%s): legacy tc", strerror(-link));
				legacy = 1;
				break;
			}
			ret = link;
			snprintf(what, cap, "tcx link on ifindex %d", ifindex);
			goto out;
		}
		link_pin(p, ifindex, (enum hook)h, path, sizeof(path));
		ret = bpf_obj_pin(link, path);
		close(link); /* unpinned, closing the last fd detaches it again */
		if (ret < 0) {
			snprintf(what, cap, "pin %s", path);
			goto out;
		}
	}
	for (int h = 0; h < 2 && legacy; h++) {
		ret = tc_attach(ifindex, (enum hook)h, fds[h], TC_HANDLE, TC_PRIORITY);
		if (ret < 0) {
			snprintf(what, cap, "tc filter on ifindex %d %s", ifindex, h ? "egress" : "ingress");
			goto out;
		}
	}
out:
	for (int h = 0; h < 2; h++)
		if (fds[h] >= 0)
			close(fds[h]);
	return ret;
}

/* Our links and legacy filters off the interface; the clsact qdisc and others' programs stay. */
static void detach(const struct pins *p, int ifindex)
{
	for (int h = 0; h < 2; h++) {
		char path[320];
		int fd;

		link_pin(p, ifindex, (enum hook)h, path, sizeof(path));
		fd = bpf_obj_get(path);
		if (fd >= 0) {
			if (tcx_link_is(fd, ifindex, (enum hook)h) == 1)
				bpf_link_detach(fd);
			close(fd);
			unlink(path);
		}
		tc_detach(ifindex, (enum hook)h, TC_HANDLE, TC_PRIORITY);
	}
}

static int attached(const struct pins *p, int ifindex, enum hook h)
{
	return own_link(p, ifindex, h, 0) || tc_present(ifindex, h, TC_HANDLE, TC_PRIORITY) == 1;
}

/* ---- ADD ---- */

static void write_owners(const struct pins *p, const struct request *r, uint32_t identity, int add)
{
	uint32_t one = 1;

	for (int i = 0; i < r->nips; i++) {
		struct fqe_owner_key k;
		memset(&k, 0, sizeof(k));
		k.identity = identity;
		memcpy(k.addr, r->ips[i].addr, 16);
		if (add) {
			int ret = bpf_map_update(p->owners, &k, &one, BPF_ANY);
			if (ret < 0)
				die(ERR_TRY_LATER, strerror(-ret), "cannot write fqe_owners");
		} else {
			bpf_map_delete(p->owners, &k);
		}
	}
}

static void pod_info_of(const struct request *r, uint32_t flags, struct fqe_pod_info *info)
{
	memset(info, 0, sizeof(*info));
	info->ifindex = (uint32_t)r->ifindex;
	info->flags = flags;
	memcpy(info->ifname, r->ifname, strlen(r->ifname));
	memcpy(info->pod_namespace, r->ns, strlen(r->ns));
	memcpy(info->pod_name, r->name, strlen(r->name));
}

/* Every entry keyed by a pending identity the plugin can reach by key. */
static void forget_pending(const struct pins *p, const struct request *r, uint32_t identity)
{
	int keyed[] = { p->counters, p->ct_counts, p->ct_in_counts, p->query_rate, p->pod_shares };
	struct fqe_pod_ref ref;
	struct fqe_pod_decision d;

	write_owners(p, r, identity, 0);
	bpf_map_delete(p->pods, &identity);
	for (size_t i = 0; i < sizeof(keyed) / sizeof(keyed[0]); i++)
		if (keyed[i] >= 0)
			bpf_map_delete(keyed[i], &identity);
	pod_ref_of(r, &ref);
	if (bpf_map_lookup(p->decisions, &ref, &d) == 0 && d.identity == identity && (d.flags & FQE_EP_PENDING))
		bpf_map_delete(p->decisions, &ref);
}

static void __attribute__((noreturn))
add_failed(const struct pins *p, const struct request *r, uint32_t identity, int pending, int err, const char *what)
{
	struct fqe_endpoint ep;

	if (bpf_map_lookup(p->endpoints, &r->ifindex, &ep) == 0 && ep.identity == identity)
		bpf_map_delete(p->endpoints, &r->ifindex);
	detach(p, r->ifindex);
	if (pending)
		forget_pending(p, r, identity);
	else
		write_owners(p, r, identity, 0);
	die(err == -EPERM || err == -EACCES ? ERR_OURS : ERR_TRY_LATER, strerror(-err), "%s", what);
}

static uint32_t random_identity(void)
{
	uint32_t v = 0;

	if (getrandom(&v, sizeof(v), 0) != sizeof(v))
		v = (uint32_t)monotonic_ns() ^ (uint32_t)getpid();
	return v | FQE_PENDING_IDENTITY_BASE;
}

static void print_prev_result(const struct request *r)
{
	fwrite(doc.text + r->prev_start, 1, r->prev_end - r->prev_start, stdout);
	putchar('\n');
}

static int cmd_add(void)
{
	struct request r = { .command = "ADD" };
	struct pins p;
	struct fqe_pod_ref ref;
	struct fqe_pod_decision d;
	struct fqe_pod_info info;
	struct fqe_endpoint ep;
	char kind[32], what[400];
	uint32_t identity = 0, ep_flags;
	int pending = 0, ret;

	need_env("CNI_CONTAINERID");
	need_env("CNI_NETNS");
	need_env("CNI_IFNAME");
	parse_request(&r, 1);
	ret = link_by_name(r.ifname, &r.ifindex, kind, sizeof(kind));
	if (ret < 0)
		die(ERR_CONFIG, strerror(-ret), "the host-side interface %s from prevResult is not on this host",
		    r.ifname);
	if (!r.has_pod) {
		logf_("no K8S_POD_NAMESPACE/K8S_POD_NAME in CNI_ARGS: not a Kubernetes pod; %s passed through",
		      r.ifname);
		print_prev_result(&r);
		return 0;
	}
	if (open_pins(&p, r.pin_dir) < 0) {
		logf_("no agent pins at %s (the agent was never installed here): pod %s/%s passed through, not "
		      "enforced",
		      r.pin_dir, r.ns, r.name);
		print_prev_result(&r);
		return 0;
	}
	pod_ref_of(&r, &ref);
	if (bpf_map_lookup(p.decisions, &ref, &d) < 0) {
		/* pending: claim an identity nobody holds, then publish the claim */
		for (int i = 0;; i++) {
			if (i == CLAIM_ATTEMPTS)
				die(ERR_TRY_LATER, NULL, "no free pending identity after %d attempts", CLAIM_ATTEMPTS);
			identity = random_identity();
			pod_info_of(&r, FQE_EP_ENFORCE | FQE_EP_DNS_FILTER_OFF | FQE_EP_PENDING, &info);
			ret = bpf_map_update(p.pods, &identity, &info, BPF_NOEXIST);
			if (ret == 0)
				break;
			if (ret != -EEXIST)
				die(ERR_TRY_LATER, strerror(-ret), "cannot write fqe_pods");
		}
		d = (struct fqe_pod_decision){ .identity = identity,
					       .flags = FQE_EP_PENDING,
					       .since_ns = monotonic_ns() };
		ret = bpf_map_update(p.decisions, &ref, &d, BPF_NOEXIST);
		if (ret == 0) {
			pending = 1;
		} else {
			bpf_map_delete(p.pods, &identity);
			if (ret != -EEXIST || bpf_map_lookup(p.decisions, &ref, &d) < 0)
				die(ERR_TRY_LATER, strerror(-ret), "cannot write fqe_pod_decisions");
			/* the agent decided meanwhile: its decision stands */
		}
	}
	if (pending) {
		uint32_t open = config_flags(&p) & FQE_CFG_UNKNOWN_PODS_OPEN;
		write_owners(&p, &r, identity, 1);
		ret = attach(&p, r.ifindex, what, sizeof(what));
		if (ret < 0)
			add_failed(&p, &r, identity, 1, ret, what);
		ep_flags = open ? 0 : FQE_EP_ENFORCE | FQE_EP_DNS_FILTER_OFF;
		/* the agent may have adopted the claim meanwhile: its decision, not ours, goes in */
		if (bpf_map_lookup(p.decisions, &ref, &d) == 0 && d.identity == identity && !(d.flags & FQE_EP_PENDING))
			ep_flags = d.flags & (FQE_EP_ENFORCE | FQE_EP_AUDIT | FQE_EP_DNS_FILTER_OFF);
		if (ep_flags) {
			ep = (struct fqe_endpoint){ .identity = identity, .flags = ep_flags };
			ret = bpf_map_update(p.endpoints, &r.ifindex, &ep, BPF_ANY);
			if (ret < 0)
				add_failed(&p, &r, identity, 1, ret, "cannot write fqe_endpoints");
		}
		logf_("pod %s/%s on %s: no decision from the agent yet: pending (identity %u), %s", r.ns, r.name,
		      r.ifname, identity,
		      open ? "passed until decided (--unknown-pods open)" : "DNS and link control only until decided");
		print_prev_result(&r);
		return 0;
	}
	if (d.flags & FQE_EP_PENDING) {
		/* another ADD of this pod (a new sandbox) found no decision either: the pod holds that identity */
		identity = d.identity;
		ep_flags = FQE_EP_ENFORCE | FQE_EP_DNS_FILTER_OFF;
		if (config_flags(&p) & FQE_CFG_UNKNOWN_PODS_OPEN)
			ep_flags = 0;
	} else {
		ep_flags = d.flags & (FQE_EP_ENFORCE | FQE_EP_AUDIT | FQE_EP_DNS_FILTER_OFF);
		identity = d.identity;
	}
	if (!(d.flags & (FQE_EP_ENFORCE | FQE_EP_AUDIT | FQE_EP_PENDING)) || identity == 0) {
		logf_("pod %s/%s: the agent does not enforce it; passed through", r.ns, r.name);
		print_prev_result(&r);
		return 0;
	}
	pod_info_of(&r, d.flags & FQE_EP_PENDING ? FQE_EP_ENFORCE | FQE_EP_DNS_FILTER_OFF | FQE_EP_PENDING : d.flags,
		    &info);
	ret = bpf_map_update(p.pods, &identity, &info, BPF_ANY);
	if (ret < 0)
		die(ERR_TRY_LATER, strerror(-ret), "cannot write fqe_pods");
	write_owners(&p, &r, identity, 1);
	ret = attach(&p, r.ifindex, what, sizeof(what));
	if (ret < 0)
		add_failed(&p, &r, identity, 0, ret, what);
	if (ep_flags) {
		ep = (struct fqe_endpoint){ .identity = identity, .flags = ep_flags };
		ret = bpf_map_update(p.endpoints, &r.ifindex, &ep, BPF_ANY); /* last: enforcement starts here */
		if (ret < 0)
			add_failed(&p, &r, identity, 0, ret, "cannot write fqe_endpoints");
	}
	logf_("pod %s/%s on %s: %s (identity %u)", r.ns, r.name, r.ifname,
	      d.flags & FQE_EP_PENDING ? "pending"
	      : d.flags & FQE_EP_AUDIT ? "audited"
				       : "enforced",
	      identity);
	print_prev_result(&r);
	return 0;
}

/* ---- DEL and CHECK ---- */

/* The identity fqe_pods gives this pod (and its interface, when prevResult did not). 0: none. */
static uint32_t find_pod(const struct pins *p, struct request *r, struct fqe_pod_info *found)
{
	uint32_t key, next;
	int first = 1;

	for (int n = 0; n < FQE_MAX_ENDPOINTS + 1; n++) {
		struct fqe_pod_info info;
		if (bpf_map_next_key(p->pods, first ? NULL : &key, &next) < 0)
			break;
		first = 0;
		key = next;
		if (bpf_map_lookup(p->pods, &key, &info) < 0)
			continue;
		if (strncmp(info.pod_namespace, r->ns, sizeof(info.pod_namespace)) ||
		    strncmp(info.pod_name, r->name, sizeof(info.pod_name)))
			continue;
		if (r->ifindex && info.ifindex && info.ifindex != (uint32_t)r->ifindex)
			continue;
		*found = info;
		return key;
	}
	return 0;
}

static int cmd_del(void)
{
	struct request r = { .command = "DEL" };
	struct pins p;
	struct fqe_pod_info info;
	struct fqe_endpoint ep;
	char kind[32];
	uint32_t identity;

	need_env("CNI_CONTAINERID");
	need_env("CNI_IFNAME");
	parse_request(&r, 0);
	if (r.ifname[0] && link_by_name(r.ifname, &r.ifindex, kind, sizeof(kind)) < 0)
		r.ifindex = 0; /* the interface is gone already */
	if (!r.has_pod || open_pins(&p, r.pin_dir) < 0)
		return 0;
	identity = find_pod(&p, &r, &info);
	if (!r.ifindex && identity)
		r.ifindex = (int)info.ifindex;
	if (r.ifindex > 0) {
		if (bpf_map_lookup(p.endpoints, &r.ifindex, &ep) == 0 && (!identity || ep.identity == identity)) {
			bpf_map_delete(p.endpoints, &r.ifindex);
			identity = ep.identity;
		}
		detach(&p, r.ifindex);
	}
	if (!identity)
		return 0;
	if (identity >= FQE_PENDING_IDENTITY_BASE) {
		if (!r.nips) { /* no prevResult: the pending identity's every address */
			struct fqe_owner_key k, next;
			int first = 1;
			for (int n = 0; n < 256 && bpf_map_next_key(p.owners, first ? NULL : &k, &next) == 0; n++) {
				first = 0;
				k = next;
				if (next.identity == identity && r.nips < MAX_IPS)
					memcpy(r.ips[r.nips++].addr, next.addr, 16);
			}
		}
		forget_pending(&p, &r, identity);
	} else {
		write_owners(&p, &r, identity, 0);
	}
	logf_("pod %s/%s: removed from %s (identity %u)", r.ns, r.name, r.ifname[0] ? r.ifname : "its interface",
	      identity);
	return 0;
}

static int cmd_check(void)
{
	struct request r = { .command = "CHECK" };
	struct pins p;
	struct fqe_pod_ref ref;
	struct fqe_pod_decision d;
	struct fqe_endpoint ep;
	char kind[32];
	int ret;

	need_env("CNI_CONTAINERID");
	need_env("CNI_NETNS");
	need_env("CNI_IFNAME");
	parse_request(&r, 1);
	ret = link_by_name(r.ifname, &r.ifindex, kind, sizeof(kind));
	if (ret < 0)
		die(ERR_CONFIG, strerror(-ret), "the host-side interface %s from prevResult is not on this host",
		    r.ifname);
	if (!r.has_pod || open_pins(&p, r.pin_dir) < 0)
		return 0;
	pod_ref_of(&r, &ref);
	if (bpf_map_lookup(p.decisions, &ref, &d) < 0)
		die(ERR_OURS, NULL, "pod %s/%s has no decision (ADD did not run, or DEL did)", r.ns, r.name);
	if (!(d.flags & (FQE_EP_ENFORCE | FQE_EP_AUDIT | FQE_EP_PENDING)))
		return 0; /* not enforced: nothing to check */
	if ((d.flags & FQE_EP_PENDING) && (config_flags(&p) & FQE_CFG_UNKNOWN_PODS_OPEN))
		ep.identity = d.identity;
	else if (bpf_map_lookup(p.endpoints, &r.ifindex, &ep) < 0 || ep.identity != d.identity)
		die(ERR_OURS, NULL, "pod %s/%s: no endpoint entry of identity %u on %s", r.ns, r.name, d.identity,
		    r.ifname);
	for (int h = 0; h < 2; h++)
		if (!attached(&p, r.ifindex, (enum hook)h))
			die(ERR_OURS, NULL, "pod %s/%s: our program is not attached to %s %s", r.ns, r.name, r.ifname,
			    h ? "egress" : "ingress");
	return 0;
}

static int cmd_version(void)
{
	size_t n = read_stdin();
	char v[32];

	if (n > 0 && json_parse(&doc, input, n) == 0 && json_get_string(&doc, 0, "cniVersion", v, sizeof(v)) >= 0 &&
	    version_supported(v))
		strcpy(cni_version, v);
	else
		strcpy(cni_version, "1.1.0");
	printf("{\"cniVersion\":\"%s\",\"supportedVersions\":[\"0.4.0\",\"1.0.0\",\"1.1.0\"]}\n", cni_version);
	return 0;
}

int main(void)
{
	const char *cmd = getenv("CNI_COMMAND");

	if (!cmd || !*cmd)
		die(ERR_ENV, NULL, "CNI_COMMAND is not set");
	if (strcmp(cmd, "ADD") == 0)
		return cmd_add();
	if (strcmp(cmd, "DEL") == 0)
		return cmd_del();
	if (strcmp(cmd, "CHECK") == 0)
		return cmd_check();
	if (strcmp(cmd, "VERSION") == 0)
		return cmd_version();
	if (strcmp(cmd, "GC") == 0 || strcmp(cmd, "STATUS") == 0)
		return 0; /* 1.1.0: nothing of ours to collect; ready whenever the host is */
	die(ERR_ENV, cmd, "unknown CNI_COMMAND");
}
