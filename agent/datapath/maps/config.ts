/*
 * fqe_config: the agent-wide tunables, one slot (a field left 0 takes the
 * kernel default), and the feature-state bits egressctl reads. Written by
 * the agent (sync/static-maps.ts); the kernel only reads it.
 */
import { struct, u32, u64, u32Codec, type ValueOf } from '../layout.js';
import { MapType } from '../native.js';
import { keyValueMap } from './define.js';

/** fqe_config.flags: the kernel reads inlineLearnerOff; the rest are feature states for egressctl (features.ts). */
export const ConfigFlag = {
  inlineLearnerOff: 0x1,
  preciseClock: 0x2,
  tlsCheckOff: 0x4,
  dnsQueryFilterOff: 0x8,
  attachLegacy: 0x10,
  headGuardOff: 0x20,
  /** --unknown-pods open: the CNI plugin passes a pod the agent has not decided (read by the plugin, no program) */
  unknownPodsOpen: 0x40,
  statesWritten: 0x80,
} as const;

export const configCodec = struct('config', {
  ctTcpIdleNs: u64,
  ctOtherIdleNs: u64,
  eventsPerSec: u32,
  minTtlS: u32,
  maxTtlS: u32,
  flags: u32,
  /** CLOCK_MONOTONIC ns of the running agent's last tick; 0n = none */
  agentHeartbeatNs: u64,
  agentPid: u32,
  /** tracked flows one pod may hold; 0 = kernel default */
  ctPerPod: u32,
  /** a query is good for one answer within this; 0n = kernel default */
  queryWindowNs: u64,
  /** an accepted answer allows at least this long; 0n = kernel default */
  connectGraceNs: u64,
});
export type Config = ValueOf<typeof configCodec>;

/** Every tunable at "kernel default" (0), no agent running. */
export const ZERO_CONFIG: Config = {
  ctTcpIdleNs: 0n,
  ctOtherIdleNs: 0n,
  eventsPerSec: 0,
  minTtlS: 0,
  maxTtlS: 0,
  flags: 0,
  agentHeartbeatNs: 0n,
  agentPid: 0,
  ctPerPod: 0,
  queryWindowNs: 0n,
  connectGraceNs: 0n,
};

export const configMap = keyValueMap({
  name: 'fqe_config',
  property: 'config',
  type: MapType.ARRAY,
  maxEntries: 1,
  key: u32Codec,
  value: configCodec,
});
