/*
 * Every map module, one line each: the datapath's maps (MAP_NAMES,
 * DatapathMaps, buildMaps in registry.ts) are every map definition
 * exported from here, so a new map is its module and its line below.
 * Also what importers use: each module's codecs, types and constants.
 */
export * from './common.js';
export { shapeChange, perCpuSlot, type MapDefinition } from './define.js';
export { u32Codec, u64Codec } from '../layout.js';

export * from './allow.js';
export * from './cidrs.js';
export * from './cluster-domains.js';
export * from './config.js';
export * from './conntrack.js';
export * from './counters.js';
export * from './ct-counts.js';
export * from './dns-refused.js';
export * from './dns-tcp.js';
export * from './endpoints.js';
export * from './events.js';
export * from './hash-key.js';
export * from './learned.js';
export * from './limits.js';
export * from './names.js';
export * from './origins.js';
export * from './owners.js';
export * from './pod-decisions.js';
export * from './pod-shares.js';
export * from './pods.js';
export * from './policy.js';
export * from './queries.js';
export * from './query-rate.js';
export * from './recent.js';
export * from './resolvers.js';
export * from './tap-pass.js';
export * from './tls-bytes.js';
export * from './tls-flows.js';
