// SPDX-License-Identifier: Apache-2.0
/* The plugin's kernel calls: see kernel.h. */
#include "kernel.h"

#include <errno.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/netlink.h>
#include <linux/pkt_cls.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <arpa/inet.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

/* uapi 6.6, missing from older headers */
#define FQE_BPF_TCX_INGRESS   46
#define FQE_BPF_TCX_EGRESS    47
#define FQE_BPF_LINK_TYPE_TCX 11
#define FQE_BPF_F_BEFORE      (1U << 3)

static long sys_bpf(int cmd, void *attr, unsigned size)
{
	long r = syscall(__NR_bpf, cmd, attr, size);
	return r < 0 ? -errno : r;
}

static uint64_t ptr(const void *p)
{
	return (uint64_t)(uintptr_t)p;
}

int bpf_obj_get(const char *path)
{
	union bpf_attr a;

	memset(&a, 0, sizeof(a));
	a.pathname = ptr(path);
	return (int)sys_bpf(BPF_OBJ_GET, &a, sizeof(a));
}

int bpf_obj_pin(int fd, const char *path)
{
	union bpf_attr a;

	memset(&a, 0, sizeof(a));
	a.pathname = ptr(path);
	a.bpf_fd = (uint32_t)fd;
	return (int)sys_bpf(BPF_OBJ_PIN, &a, sizeof(a));
}

static int map_op(int cmd, int fd, const void *key, const void *value, uint64_t flags)
{
	union bpf_attr a;

	memset(&a, 0, sizeof(a));
	a.map_fd = (uint32_t)fd;
	a.key = ptr(key);
	a.value = ptr(value);
	a.flags = flags;
	return (int)sys_bpf(cmd, &a, sizeof(a));
}

int bpf_map_lookup(int fd, const void *key, void *value)
{
	return map_op(BPF_MAP_LOOKUP_ELEM, fd, key, value, 0);
}

int bpf_map_update(int fd, const void *key, const void *value, uint64_t flags)
{
	return map_op(BPF_MAP_UPDATE_ELEM, fd, key, value, flags);
}

int bpf_map_delete(int fd, const void *key)
{
	return map_op(BPF_MAP_DELETE_ELEM, fd, key, NULL, 0);
}

int bpf_map_next_key(int fd, const void *key, void *next)
{
	union bpf_attr a;

	memset(&a, 0, sizeof(a));
	a.map_fd = (uint32_t)fd;
	a.key = ptr(key);
	a.next_key = ptr(next);
	return (int)sys_bpf(BPF_MAP_GET_NEXT_KEY, &a, sizeof(a));
}

/* union bpf_attr.link_create with its tcx member (uapi 6.6) */
struct tcx_link_create_attr {
	uint32_t prog_fd;
	uint32_t target_ifindex;
	uint32_t attach_type;
	uint32_t flags;
	uint32_t relative_fd_or_id;
	uint32_t pad;
	uint64_t expected_revision;
	uint8_t rest[64]; /* the remainder of union bpf_attr: zero */
};

int tcx_link_create(int prog_fd, int ifindex, enum hook hook)
{
	struct tcx_link_create_attr a;

	memset(&a, 0, sizeof(a));
	a.prog_fd = (uint32_t)prog_fd;
	a.target_ifindex = (uint32_t)ifindex;
	a.attach_type = hook == HOOK_INGRESS ? FQE_BPF_TCX_INGRESS : FQE_BPF_TCX_EGRESS;
	a.flags = FQE_BPF_F_BEFORE; /* no relative program: the head of the chain */
	return (int)sys_bpf(BPF_LINK_CREATE, &a, sizeof(a));
}

/* struct bpf_link_info with its tcx member (uapi 6.6) */
struct link_info {
	uint32_t type;
	uint32_t id;
	uint32_t prog_id;
	uint32_t pad;
	uint32_t tcx_ifindex;
	uint32_t tcx_attach_type;
	uint8_t rest[64];
} __attribute__((aligned(8)));

int tcx_link_is(int link_fd, int ifindex, enum hook hook)
{
	struct link_info li;
	union bpf_attr a;
	long r;

	memset(&li, 0, sizeof(li));
	memset(&a, 0, sizeof(a));
	a.info.bpf_fd = (uint32_t)link_fd;
	a.info.info_len = sizeof(li);
	a.info.info = ptr(&li);
	r = sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &a, sizeof(a));
	if (r < 0)
		return (int)r;
	return li.type == FQE_BPF_LINK_TYPE_TCX && li.tcx_ifindex == (uint32_t)ifindex &&
	       li.tcx_attach_type == (hook == HOOK_INGRESS ? FQE_BPF_TCX_INGRESS : FQE_BPF_TCX_EGRESS);
}

int bpf_link_detach(int link_fd)
{
	union bpf_attr a;

	memset(&a, 0, sizeof(a));
	a.link_detach.link_fd = (uint32_t)link_fd;
	return (int)sys_bpf(BPF_LINK_DETACH, &a, sizeof(a));
}

/* ---- rtnetlink ---- */

struct nl_req {
	struct nlmsghdr nh;
	union {
		struct tcmsg tc;
		struct ifinfomsg ifi;
	};
	char attrs[512];
};

static struct rtattr *nl_add(struct nl_req *r, unsigned short type, const void *data, unsigned len)
{
	struct rtattr *rta = (struct rtattr *)((char *)&r->nh + NLMSG_ALIGN(r->nh.nlmsg_len));

	rta->rta_type = type;
	rta->rta_len = (unsigned short)RTA_LENGTH(len);
	if (len)
		memcpy(RTA_DATA(rta), data, len);
	r->nh.nlmsg_len = NLMSG_ALIGN(r->nh.nlmsg_len) + RTA_ALIGN(rta->rta_len);
	return rta;
}

static void nl_end_nest(struct nl_req *r, struct rtattr *nest)
{
	nest->rta_len = (unsigned short)((char *)&r->nh + r->nh.nlmsg_len - (char *)nest);
}

/*
 * Send one request; read replies until its ack. on_msg (optional) sees each
 * non-error reply. 0, or -errno from the kernel's ack.
 */
static int nl_talk(struct nl_req *r, int (*on_msg)(struct nlmsghdr *, void *), void *ctx)
{
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
	char buf[16384];
	int fd, ret = -EIO, one = 1;

	fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one));
	r->nh.nlmsg_seq = 1;
	r->nh.nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
	if (sendto(fd, r, r->nh.nlmsg_len, 0, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		ret = -errno;
		goto out;
	}
	for (int rounds = 0; rounds < 64; rounds++) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		struct nlmsghdr *h;

		if (n < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			goto out;
		}
		for (h = (struct nlmsghdr *)buf; NLMSG_OK(h, (unsigned)n); h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_type == NLMSG_ERROR) {
				struct nlmsgerr *e = NLMSG_DATA(h);
				ret = e->error; /* 0: the ack */
				goto out;
			}
			if (h->nlmsg_type == NLMSG_DONE) {
				ret = 0;
				goto out;
			}
			if (on_msg)
				on_msg(h, ctx);
		}
	}
out:
	close(fd);
	return ret;
}

static uint32_t hook_parent(enum hook hook)
{
	return TC_H_MAKE(TC_H_CLSACT, hook == HOOK_INGRESS ? TC_H_MIN_INGRESS : TC_H_MIN_EGRESS);
}

static void tc_req(struct nl_req *r, int type, int flags, int ifindex)
{
	memset(r, 0, sizeof(*r));
	r->nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct tcmsg));
	r->nh.nlmsg_type = (unsigned short)type;
	r->nh.nlmsg_flags = (unsigned short)flags;
	r->tc.tcm_family = AF_UNSPEC;
	r->tc.tcm_ifindex = ifindex;
}

static void tc_filter_req(struct nl_req *r, int type, int flags, int ifindex, enum hook hook, uint32_t handle,
			  uint16_t priority)
{
	tc_req(r, type, flags, ifindex);
	r->tc.tcm_handle = handle;
	r->tc.tcm_parent = hook_parent(hook);
	r->tc.tcm_info = TC_H_MAKE((uint32_t)priority << 16, htons(ETH_P_ALL));
}

int tc_attach(int ifindex, enum hook hook, int prog_fd, uint32_t handle, uint16_t priority)
{
	struct nl_req r;
	struct rtattr *opts;
	uint32_t fd = (uint32_t)prog_fd, flags = TCA_BPF_FLAG_ACT_DIRECT;
	int ret;

	/* clsact, created when missing and never removed (others may use it) */
	tc_req(&r, RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL, ifindex);
	r.tc.tcm_handle = TC_H_MAKE(TC_H_CLSACT, 0);
	r.tc.tcm_parent = TC_H_CLSACT;
	nl_add(&r, TCA_KIND, "clsact", sizeof("clsact"));
	ret = nl_talk(&r, NULL, NULL);
	if (ret < 0 && ret != -EEXIST)
		return ret;

	tc_filter_req(&r, RTM_NEWTFILTER, NLM_F_CREATE | NLM_F_REPLACE, ifindex, hook, handle, priority);
	nl_add(&r, TCA_KIND, "bpf", sizeof("bpf"));
	opts = nl_add(&r, TCA_OPTIONS, NULL, 0);
	nl_add(&r, TCA_BPF_FD, &fd, sizeof(fd));
	nl_add(&r, TCA_BPF_NAME, "fqdn-egress", sizeof("fqdn-egress"));
	nl_add(&r, TCA_BPF_FLAGS, &flags, sizeof(flags));
	nl_end_nest(&r, opts);
	return nl_talk(&r, NULL, NULL);
}

int tc_detach(int ifindex, enum hook hook, uint32_t handle, uint16_t priority)
{
	struct nl_req r;
	int ret;

	tc_filter_req(&r, RTM_DELTFILTER, 0, ifindex, hook, handle, priority);
	nl_add(&r, TCA_KIND, "bpf", sizeof("bpf"));
	ret = nl_talk(&r, NULL, NULL);
	return ret == -EINVAL ? -ENOENT : ret; /* EINVAL: no clsact at all */
}

static int seen(struct nlmsghdr *h, void *ctx)
{
	if (h->nlmsg_type == RTM_NEWTFILTER)
		*(int *)ctx = 1;
	return 0;
}

int tc_present(int ifindex, enum hook hook, uint32_t handle, uint16_t priority)
{
	struct nl_req r;
	int found = 0, ret;

	tc_filter_req(&r, RTM_GETTFILTER, 0, ifindex, hook, handle, priority);
	nl_add(&r, TCA_KIND, "bpf", sizeof("bpf"));
	ret = nl_talk(&r, seen, &found);
	if (ret == -ENOENT || ret == -EINVAL)
		return 0;
	return ret < 0 ? ret : found;
}

struct kind_ctx {
	char *kind;
	unsigned cap;
	int ifindex;
};

static int link_kind(struct nlmsghdr *h, void *ctx)
{
	struct kind_ctx *k = ctx;
	struct ifinfomsg *ifi = NLMSG_DATA(h);
	int len = (int)IFLA_PAYLOAD(h);

	if (h->nlmsg_type != RTM_NEWLINK)
		return 0;
	k->ifindex = ifi->ifi_index;
	for (struct rtattr *a = IFLA_RTA(ifi); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
		int inner;

		if (a->rta_type != IFLA_LINKINFO)
			continue;
		inner = (int)RTA_PAYLOAD(a);
		for (struct rtattr *b = RTA_DATA(a); RTA_OK(b, inner); b = RTA_NEXT(b, inner)) {
			if (b->rta_type == IFLA_INFO_KIND && RTA_PAYLOAD(b) < k->cap) {
				memcpy(k->kind, RTA_DATA(b), RTA_PAYLOAD(b));
				k->kind[RTA_PAYLOAD(b)] = 0;
			}
		}
	}
	return 0;
}

int link_by_name(const char *name, int *ifindex, char *kind, unsigned kind_cap)
{
	struct nl_req r;
	struct kind_ctx k = { .kind = kind, .cap = kind_cap, .ifindex = 0 };
	int ret;

	if (strlen(name) >= IFNAMSIZ)
		return -ENODEV;
	kind[0] = 0;
	memset(&r, 0, sizeof(r));
	r.nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
	r.nh.nlmsg_type = RTM_GETLINK;
	r.ifi.ifi_family = AF_UNSPEC;
	nl_add(&r, IFLA_IFNAME, name, (unsigned)strlen(name) + 1);
	ret = nl_talk(&r, link_kind, &k);
	if (ret < 0)
		return ret;
	if (k.ifindex <= 0)
		return -ENODEV;
	*ifindex = k.ifindex;
	return 0;
}
