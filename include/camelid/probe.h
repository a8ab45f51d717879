/* Machine probes for benchmarks: sustained read bandwidth and fp32 FMA throughput with the pool's threads
 * and the active ISA, so that achieved figures can be shown as a fraction of this machine's peak. */
#ifndef CAMELID_PROBE_H
#define CAMELID_PROBE_H

#include "camelid/pool.h"

/* Read bandwidth in GB/s over a buffer much larger than the caches (best of a few passes); 0 on failure. */
double cm_probe_read_bandwidth(cm_pool *pool, size_t bytes);
/* fp32 multiply-add throughput in GFLOP/s (an FMA counts 2) with independent accumulators per thread. */
double cm_probe_fma_peak(cm_pool *pool);

#endif
