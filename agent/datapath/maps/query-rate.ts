/*
 * fqe_query_rate: each pod's query recording window, per CPU (the kernel's).
 * The agent reads only how many queries passed unrecorded, summed over CPUs.
 */
import { struct, hidden, u64, u32Codec } from '../layout.js';
import { MapType } from '../native.js';
import { perCpuMap, perCpuSlot } from './define.js';

export const queryRateLayout = struct('query_rate', { windowNs: hidden(u64), count: hidden(u64), unrecorded: u64 });

/** fqe_query_rate, summed over CPUs: the queries a pod sent past its recording rate. */
export const queryRateCodec = {
  decodePerCpu(b: Buffer, cpus: number): { unrecorded: bigint } {
    const slot = perCpuSlot(queryRateLayout.size);
    let unrecorded = 0n;
    for (let i = 0; i < cpus; i++) unrecorded += queryRateLayout.read(b, i * slot).unrecorded;
    return { unrecorded };
  },
};

/** FQE_MAX_ENDPOINTS */
export const queryRateMap = perCpuMap({
  name: 'fqe_query_rate',
  property: 'queryRate',
  type: MapType.PERCPU_HASH,
  maxEntries: 4096,
  key: u32Codec,
  value: queryRateLayout,
  fold: (b, cpus) => queryRateCodec.decodePerCpu(b, cpus),
});
