/* limits.h - the pure building blocks of abuse protection.
 *
 * Four pieces, none of which reads a clock, a socket or a configuration
 * (time is an argument, STYLE rule 6):
 *
 *   cd_bucket          a token bucket with continuous refill, 16 bytes, one
 *                      per connection (message rate); owned by one thread.
 *   cd_ip_key          the address a client is counted under: IPv4 as is,
 *                      IPv4-mapped IPv6 as IPv4, other IPv6 per /64.
 *   cd_counter_table   thread-safe counts per key (connections per IP, per
 *                      user, pending handshakes per IP) shared by every
 *                      worker: a sharded hash with one mutex per shard.
 *   cd_rate_table      thread-safe token buckets per IP key (connection rate
 *                      against reconnect storms) with bounded eviction and a
 *                      hard cap on entries.
 *
 * The two tables are the only synchronisation in this module; each shard's
 * mutex protects that shard's hash chains, counts and LRU list and nothing
 * else.  They are touched at accept, upgrade and close, never per message.
 *
 * Rates are exact rationals in integer arithmetic: a bucket of `limit`
 * tokens per `window_ms` refills one token every window_ms/limit ms with no
 * rounding drift, and reports its level in milli-tokens (STYLE rule 9). */

#ifndef CD_LIMITS_H
#define CD_LIMITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "net.h"

/* ------------------------------------------------------------------ */
/* Token bucket. */

/* Bounds accepted by cd_bucket_init (the config table should use them). */
#define CD_BUCKET_MAX_LIMIT 1000000u          /* tokens per window */
#define CD_BUCKET_MAX_WINDOW_MS 0x7fffffffu   /* about 24.8 days */
/* now_ms beyond this (2^43 ms, 278 years of uptime) is treated as this, so
 * the fixed-point products below cannot overflow 64 bits. */
#define CD_BUCKET_MAX_NOW_MS (UINT64_C(1) << 43)
/* cd_bucket_take_warn reports CD_BUCKET_WARN once when an allowed take
 * leaves at least 80 % of the limit used (in whole tokens, rounded up), and re-arms once a take finds
 * less than 50 % used (hysteresis: a client that hovers at 80 % is warned
 * once, not on every message). */
#define CD_BUCKET_WARN_PERMILLE 800u
#define CD_BUCKET_REARM_PERMILLE 500u

/* A generic cell rate algorithm (GCRA) bucket, which is a token bucket
 * stored as one timestamp.  Time is counted in units of 1/limit ms, so one
 * token is exactly window_ms units and the full bucket is limit * window_ms
 * units: every quantity is an integer and refill never drifts.
 * The caller provides the memory (_init, no _fini: it owns no resources).
 * Thread: the owner only (one connection, one worker); no locking. */
typedef struct cd_bucket {
    uint64_t tat;               /* units: when the bucket is full again */
    uint32_t limit;             /* tokens per window = burst; 0: unlimited */
    uint32_t window_ms : 31;
    uint32_t is_warned : 1;     /* CD_BUCKET_WARN given, not yet re-armed */
} cd_bucket;

_Static_assert(sizeof(cd_bucket) <= 16, "cd_bucket lives in every connection");

/* Start a full bucket: `limit` tokens per `window_ms`, burst = limit.
 * limit 0 means unlimited (every take succeeds; window_ms is ignored).
 * Returns 0, or CONDUIT_EINVAL when limit > CD_BUCKET_MAX_LIMIT, or when
 * limit > 0 and window_ms is 0 or > CD_BUCKET_MAX_WINDOW_MS (the bucket is
 * then unlimited, so a caller that ignores the error fails open).
 * Thread: the owner. */
int cd_bucket_init(cd_bucket *b, uint32_t limit, uint32_t window_ms,
                   uint64_t now_ms);

/* Take `cost` tokens at `now_ms` (the loop's cached clock).  Returns true
 * and consumes them when they are there, else false and consumes nothing.
 * cost 0 always succeeds; cost > limit never does.  A clock that goes
 * backwards never grants a token: the bucket reads as emptier by the
 * difference (empty at most) and refills only once the clock is back.
 * Over any run, tokens granted <= limit + (latest now - init now) * limit
 * / window_ms, whatever order the times come in, so workers whose cached
 * clocks differ by a few ms may share a bucket (the rate table does).
 * Thread: the owner. */
bool cd_bucket_take(cd_bucket *b, uint64_t now_ms, uint32_t cost);

enum cd_bucket_verdict {
    CD_BUCKET_DENIED = 0,       /* nothing consumed: RateLimitExceeded */
    CD_BUCKET_ALLOWED = 1,
    CD_BUCKET_WARN = 2,         /* allowed, and this take crossed 80 % used:
                                 * send RateLimitWarning (once per episode) */
};

/* cd_bucket_take plus the warning: returns an enum cd_bucket_verdict.
 * Thread: the owner. */
int cd_bucket_take_warn(cd_bucket *b, uint64_t now_ms, uint32_t cost);

/* Tokens available at now_ms in milli-tokens (0 .. limit * 1000, rounded
 * down); UINT64_MAX for an unlimited bucket.  Pure: changes nothing.
 * Thread: the owner. */
uint64_t cd_bucket_tokens_milli(const cd_bucket *b, uint64_t now_ms);

/* Milliseconds from now_ms until cd_bucket_take(b, now_ms + result, cost)
 * succeeds: 0 when it would succeed now, UINT64_MAX when cost > limit.
 * Rounded up, so arming a timer for now_ms + result never wakes early.
 * For the throttle policy: stop reading, wake after this, read again.
 * Pure.  Thread: the owner. */
uint64_t cd_bucket_next_ms(const cd_bucket *b, uint64_t now_ms, uint32_t cost);

/* ------------------------------------------------------------------ */
/* IP keys. */

/* The 16 bytes a client is counted under, compared with memcmp:
 * IPv4 a.b.c.d is stored as ::ffff:a.b.c.d (so an IPv4-mapped IPv6 peer
 * is the same key as the IPv4 peer), any other IPv6 address keeps its /64
 * prefix and zeroes the interface identifier (RFC 4291 §2.5.4: one site,
 * one /64; a host gets 2^64 addresses for free).  The two forms cannot
 * collide: a /64 key has zero in bytes 8..15, a mapped key 0xffff in 10..11.
 * A plain value; copy it freely.  Thread: any. */
typedef struct cd_ip_key {
    uint8_t b[16];
} cd_ip_key;

/* "255.255.255.255" or "ffff:ffff:ffff:ffff::/64" plus NUL. */
#define CD_IP_KEY_STRLEN 48

/* Derive the key of an AF_INET or AF_INET6 address (the port is ignored).
 * Returns 0, or CONDUIT_EINVAL for another family or a short length (an
 * AF_UNIX peer has no IP: the caller skips per-IP limits).  Thread: any. */
int cd_ip_key_from_sockaddr(cd_ip_key *k, const struct sockaddr *sa,
                            socklen_t len);
/* The same for a cd_addr.  Thread: any. */
int cd_ip_key_from_addr(cd_ip_key *k, const cd_addr *a);
/* True when the key stands for an IPv4 address.  Thread: any. */
bool cd_ip_key_is_v4(const cd_ip_key *k);
/* Format for logs: "203.0.113.7" or "2001:db8:1:2::/64".  Writes at most
 * cap bytes, NUL included (cap >= CD_IP_KEY_STRLEN never truncates);
 * returns the length written without the NUL.  Thread: any. */
size_t cd_ip_key_format(const cd_ip_key *k, char *buf, size_t cap);

/* ------------------------------------------------------------------ */
/* Counter table: connections per IP / per user, pending handshakes. */

/* Default and maximum number of shards (a power of two). */
#define CD_LIMITS_DEFAULT_SHARDS 16u
#define CD_LIMITS_MAX_SHARDS 256u
/* Longest key: an IP key is 16 bytes; a user id ("sub") longer than this
 * is refused with CONDUIT_EINVAL (the caller may hash it first). */
#define CD_COUNTER_MAX_KEY 1024u

/* Opaque.  Keys are byte strings (an IP key's 16 bytes, or a user id);
 * use one table per kind so an IP and a user id can never be confused.
 * An entry exists only while its count is > 0, so the table's memory is
 * bounded by the number of acquisitions outstanding, that is by the
 * connections themselves; the hash is keyed with a random seed so an
 * attacker cannot aim keys at one chain.
 * Thread: every function but _create and _destroy may be called from any
 * thread at any time; each locks one shard for O(1) expected work. */
typedef struct cd_counter_table cd_counter_table;

/* Create an empty table with n_shards shards (0: the default; otherwise a
 * power of two <= CD_LIMITS_MAX_SHARDS).  The caller owns *out and frees it
 * with cd_counter_table_destroy.  Returns 0, CONDUIT_EINVAL or
 * CONDUIT_ENOMEM.  Thread: any, before the table is shared. */
int cd_counter_table_create(cd_counter_table **out, size_t n_shards);
/* Free the table and every entry.  Thread: the owner, once no other thread
 * can use the table.  NULL is ignored. */
void cd_counter_table_destroy(cd_counter_table *t);

/* Count one more under `key` if that keeps the count <= limit (limit 0:
 * unlimited).  The check and the increment are one atomic step, so N
 * threads racing for the last slot let exactly one through.  Returns 0
 * (the caller now holds one unit and must release it exactly once),
 * CONDUIT_ELIMIT (count unchanged: answer 429), CONDUIT_EINVAL (empty key
 * or longer than CD_COUNTER_MAX_KEY) or CONDUIT_ENOMEM.  The key is
 * copied.  Thread: any. */
int cd_counter_table_acquire(cd_counter_table *t, const void *key,
                             size_t key_len, uint32_t limit);
/* Give back one unit acquired under `key`; the entry is freed when its
 * count reaches 0.  Returns 0, or CONDUIT_ENOTFOUND when nothing is held
 * under key (a caller bug: release without acquire, or twice).
 * Thread: any. */
int cd_counter_table_release(cd_counter_table *t, const void *key,
                             size_t key_len);
/* The current count under key (0 when absent).  Thread: any; the answer
 * may be stale by the time it is used. */
uint32_t cd_counter_table_count(cd_counter_table *t, const void *key,
                                size_t key_len);
/* Number of keys with a count > 0 (locks every shard in turn, for stats
 * and tests, not the hot path).  Thread: any. */
size_t cd_counter_table_size(cd_counter_table *t);

/* ------------------------------------------------------------------ */
/* Rate table: a token bucket per IP key (new connections per IP). */

/* Opaque.  Each shard keeps its entries on an LRU list; every take first
 * frees at most two idle entries from the cold end (an entry is idle when
 * its bucket has refilled completely: it remembers nothing a fresh entry
 * would not), as nginx's limit_req expires entries (STYLE rule 9).
 *
 * Hard cap: a shard holds at most ceil(max_entries / n_shards) entries.
 * When a new key arrives at a full shard, the least recently used entry of
 * that shard is evicted even if it is not idle (counted in n_evicted).
 * Policy "evict the oldest", not "refuse": refusing would let an attacker
 * with many source addresses lock every new client out, which is the very
 * outage the limiter exists to prevent; evicting costs only the memory of
 * the key that has been quiet longest, which then gets a fresh burst when
 * it returns.  The per-IP connection cap (cd_counter_table) still applies
 * to it.  Memory is therefore bounded by max_entries (rounded up to a
 * multiple of n_shards) entries of 64 bytes, plus about one pointer per
 * entry for the slots, whatever the number of source addresses.
 * Thread: every function but _create and _destroy may be called from any
 * thread; each locks one shard for O(1) work. */
typedef struct cd_rate_table cd_rate_table;

typedef struct cd_rate_table_stats {
    size_t n_entries;           /* keys tracked now */
    uint64_t n_expired;         /* idle entries freed by the bounded sweep */
    uint64_t n_evicted;         /* non-idle entries pushed out by the cap */
    uint64_t n_denied;          /* takes refused */
} cd_rate_table_stats;

/* Create a table whose buckets allow `limit` takes per `window_ms` per key
 * (burst = limit; limit 0: unlimited, every take succeeds and nothing is
 * stored), holding at most max_entries keys (>= 1) in n_shards shards (0:
 * the default; otherwise a power of two <= CD_LIMITS_MAX_SHARDS).  The
 * slot arrays are allocated here; entries as keys arrive.  The caller owns
 * *out.  Returns 0, CONDUIT_EINVAL or CONDUIT_ENOMEM.  Thread: any, before
 * the table is shared. */
int cd_rate_table_create(cd_rate_table **out, uint32_t limit,
                         uint32_t window_ms, size_t max_entries,
                         size_t n_shards);
/* Free the table.  Thread: the owner, once no other thread can use it.
 * NULL is ignored. */
void cd_rate_table_destroy(cd_rate_table *t);

/* Take one token for `key` at now_ms.  Returns 0 (allowed), CONDUIT_ELIMIT
 * (refused: answer 429; when retry_after_ms is not NULL it receives the
 * milliseconds until a take would succeed, for Retry-After, rounded up),
 * or CONDUIT_ENOMEM (no entry could be allocated; nothing was counted, and
 * the caller chooses: allowing is the fail-open answer).  Thread: any. */
int cd_rate_table_take(cd_rate_table *t, const cd_ip_key *key, uint64_t now_ms,
                       uint64_t *retry_after_ms);
/* Snapshot of the counters (each shard locked in turn).  Thread: any. */
void cd_rate_table_stats_get(cd_rate_table *t, cd_rate_table_stats *out);

#endif
