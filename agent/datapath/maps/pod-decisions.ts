/*
 * fqe_pod_decisions: what the agent decided for each pod scheduled to this
 * node (by namespace and name), for the chained CNI plugin
 * (cni/fqdn-egress-cni.c), which writes the pod's endpoint from it before
 * the pod can send. The plugin inserts a pending decision (PENDING_FLAG) for
 * a pod it finds none for; the agent replaces it (pods/decisions.ts). No
 * program reads this map.
 */
import { struct, u32, u64, cstring, named, type ValueOf } from '../layout.js';
import { MapType, BPF_F_NO_PREALLOC } from '../native.js';
import { keyValueMap } from './define.js';

/** FQE_EP_PENDING: userspace only (decisions and fqe_pods, never fqe_endpoints) */
export const PENDING_FLAG = 0x8;
/** FQE_PENDING_IDENTITY_BASE: the plugin claims identities from here up; the agent allocates below */
export const PENDING_IDENTITY_BASE = 0x80000000;

export const podRefCodec = struct('pod_ref', {
  namespace: named('pod_namespace', cstring(64, 'pod namespace')),
  name: named('pod_name', cstring(256, 'pod name')),
});
export type PodRef = ValueOf<typeof podRefCodec>;

export const podDecisionCodec = struct('pod_decision', {
  /** 0 when not enforced */
  identity: u32,
  /** EndpointFlag bits; 0 = decided not enforced; PENDING_FLAG = not decided yet (the plugin's) */
  flags: u32,
  /** CLOCK_MONOTONIC ns when it was written */
  sinceNs: u64,
});
export type PodDecision = ValueOf<typeof podDecisionCodec>;

/** FQE_MAX_POD_DECISIONS */
export const podDecisionsMap = keyValueMap({
  name: 'fqe_pod_decisions',
  property: 'podDecisions',
  type: MapType.HASH,
  maxEntries: 4096,
  flags: BPF_F_NO_PREALLOC,
  key: podRefCodec,
  value: podDecisionCodec,
});
