/* bench_hist.h - log-linear latency histogram for conduit-bench.
 *
 * HdrHistogram's layout without its generality: values below 256 ns have a
 * bucket each; every power-of-two range above is split into 128 linear
 * buckets, so a reported value is within 1/128 (0.8%) of the true one.
 * Values of 2^40 ns (18 minutes) and more land in the top bucket; the exact
 * maximum is kept beside the buckets.  Recording is an index computation and
 * an increment: no per-sample storage, no allocation.  The struct is plain
 * data, so histograms from other processes arrive over a pipe as bytes and
 * merge by adding buckets. */
#ifndef CD_BENCH_HIST_H
#define CD_BENCH_HIST_H

#include <stdint.h>

#define CD_BENCH_HIST_SUB_BITS 7
#define CD_BENCH_HIST_MAX_BITS 40
#define CD_BENCH_HIST_BUCKETS \
    ((CD_BENCH_HIST_MAX_BITS - CD_BENCH_HIST_SUB_BITS + 1) << CD_BENCH_HIST_SUB_BITS)

typedef struct cd_bench_hist {
    uint64_t count;
    uint64_t max_ns;
    uint64_t sum_ns;
    uint64_t buckets[CD_BENCH_HIST_BUCKETS];
} cd_bench_hist;

void cd_bench_hist_init(cd_bench_hist *h);
void cd_bench_hist_record(cd_bench_hist *h, uint64_t value_ns);
/* Add every bucket of `from` into `into`. */
void cd_bench_hist_merge(cd_bench_hist *into, const cd_bench_hist *from);
/* The value at quantile q (0..1): the highest value equivalent to the
 * bucket holding the ceil(q * count)-th sample, capped at the exact max.
 * 0 for an empty histogram. */
uint64_t cd_bench_hist_quantile(const cd_bench_hist *h, double q);

#endif
