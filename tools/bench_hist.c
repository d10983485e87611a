/* bench_hist.c - log-linear latency histogram (see bench_hist.h).
 *
 * Index layout, with S = 2^SUB_BITS = 128: values v < 2S are their own
 * index.  Above, with shift = msb(v) - SUB_BITS, v >> shift lies in [S, 2S)
 * and the index is shift * S + (v >> shift); consecutive octaves therefore
 * occupy consecutive runs of S buckets and the mapping is monotonic, which
 * is what the quantile walk relies on. */
#include "bench_hist.h"

#include <string.h>

#define SUB (1u << CD_BENCH_HIST_SUB_BITS)

static uint32_t index_of(uint64_t v)
{
    uint32_t msb;
    uint32_t shift;

    if (v < 2 * SUB)
        return (uint32_t)v;
    msb = 63u - (uint32_t)__builtin_clzll(v);
    if (msb >= CD_BENCH_HIST_MAX_BITS)
        return CD_BENCH_HIST_BUCKETS - 1;
    shift = msb - CD_BENCH_HIST_SUB_BITS;
    return shift * SUB + (uint32_t)(v >> shift);
}

/* The largest value that maps to bucket `idx`. */
static uint64_t highest_of(uint32_t idx)
{
    uint32_t shift;
    uint64_t top;

    if (idx < 2 * SUB)
        return idx;
    shift = idx / SUB - 1;
    top = idx - shift * SUB;
    return (top << shift) + ((uint64_t)1 << shift) - 1;
}

void cd_bench_hist_init(cd_bench_hist *h)
{
    memset(h, 0, sizeof(*h));
}

void cd_bench_hist_record(cd_bench_hist *h, uint64_t value_ns)
{
    h->buckets[index_of(value_ns)]++;
    h->count++;
    h->sum_ns += value_ns;
    if (value_ns > h->max_ns)
        h->max_ns = value_ns;
}

void cd_bench_hist_merge(cd_bench_hist *into, const cd_bench_hist *from)
{
    for (uint32_t i = 0; i < CD_BENCH_HIST_BUCKETS; i++)
        into->buckets[i] += from->buckets[i];
    into->count += from->count;
    into->sum_ns += from->sum_ns;
    if (from->max_ns > into->max_ns)
        into->max_ns = from->max_ns;
}

uint64_t cd_bench_hist_quantile(const cd_bench_hist *h, double q)
{
    uint64_t want;
    uint64_t seen = 0;

    if (h->count == 0)
        return 0;
    if (q >= 1.0)
        return h->max_ns;
    want = (uint64_t)(q * (double)h->count);
    if ((double)want < q * (double)h->count)
        want++;
    if (want == 0)
        want = 1;
    for (uint32_t i = 0; i < CD_BENCH_HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= want) {
            uint64_t v = highest_of(i);
            /* The top bucket also holds everything past 2^40 ns. */
            if (i == CD_BENCH_HIST_BUCKETS - 1)
                return h->max_ns;
            return v < h->max_ns ? v : h->max_ns;
        }
    }
    return h->max_ns;
}
