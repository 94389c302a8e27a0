/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the plugin asks of the kernel, without libbpf: pinned objects and map
 * elements through raw bpf(2), tcx links (kernel 6.6+, with their 6.6 layout,
 * as native/tcx.cc), and legacy tc (clsact + cls_bpf, direct action) through
 * rtnetlink, as the agent's binding sends it. Each call returns 0 or a
 * negative errno.
 */
#ifndef FQE_CNI_KERNEL_H
#define FQE_CNI_KERNEL_H

#include <stdint.h>

enum hook { HOOK_INGRESS, HOOK_EGRESS };

int bpf_obj_get(const char *path); /* fd, or -errno */
int bpf_obj_pin(int fd, const char *path);
int bpf_map_lookup(int fd, const void *key, void *value);
int bpf_map_update(int fd, const void *key, const void *value, uint64_t flags);
int bpf_map_delete(int fd, const void *key);
int bpf_map_next_key(int fd, const void *key, void *next); /* key NULL: the first */

/* A tcx link of prog at the head of the hook's chain: its fd, or -errno. */
int tcx_link_create(int prog_fd, int ifindex, enum hook hook);
/* Is this link fd a tcx link on ifindex and hook? 1 yes, 0 no, -errno. */
int tcx_link_is(int link_fd, int ifindex, enum hook hook);
int bpf_link_detach(int link_fd);

/* Legacy tc: our filter (handle, priority) on clsact, created when missing. */
int tc_attach(int ifindex, enum hook hook, int prog_fd, uint32_t handle, uint16_t priority);
int tc_detach(int ifindex, enum hook hook, uint32_t handle, uint16_t priority);	 /* 0, or -ENOENT when none */
int tc_present(int ifindex, enum hook hook, uint32_t handle, uint16_t priority); /* 1, 0, -errno */

/* The link's kind ("veth", "bridge", ...; "" when none) and index by name. */
int link_by_name(const char *name, int *ifindex, char *kind, unsigned kind_cap);

#endif
