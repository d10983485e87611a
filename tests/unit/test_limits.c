/* Unit tests for limits.c: bucket arithmetic to the token, IP keys, the
 * counter table under four threads, the rate table's bounded eviction and
 * hard cap.  Time is always an argument, so every expectation is exact. */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>

#include "common.h"
#include "conduit.h"
#include "limits.h"
#include "test.h"

/* ------------------------------------------------------------------ */
/* Token bucket. */

#define T0 UINT64_C(5000000)  /* an arbitrary monotonic "now" */

TEST(bucket_fits_in_a_connection)
{
    CHECK(sizeof(cd_bucket) <= 16);
}

TEST(bucket_init_bounds)
{
    cd_bucket b;
    CHECK_EQ(cd_bucket_init(&b, 1000, 60000, T0), 0);
    CHECK_EQ(cd_bucket_init(&b, 0, 0, T0), 0);            /* unlimited */
    CHECK_EQ(cd_bucket_init(&b, 1, 0, T0), CONDUIT_EINVAL);
    CHECK_EQ(cd_bucket_init(&b, CD_BUCKET_MAX_LIMIT + 1, 1000, T0), CONDUIT_EINVAL);
    CHECK_EQ(cd_bucket_init(&b, 1, CD_BUCKET_MAX_WINDOW_MS + 1u, T0), CONDUIT_EINVAL);
    CHECK(cd_bucket_take(&b, T0, 1));                      /* failed init: open */
    CHECK_EQ(cd_bucket_init(&b, CD_BUCKET_MAX_LIMIT, CD_BUCKET_MAX_WINDOW_MS, T0), 0);
    CHECK_EQ(cd_bucket_tokens_milli(&b, T0), (uint64_t)CD_BUCKET_MAX_LIMIT * 1000);
    CHECK(cd_bucket_take(&b, T0, CD_BUCKET_MAX_LIMIT));
    CHECK(!cd_bucket_take(&b, T0, 1));
}

TEST(bucket_burst_then_one_token_per_60ms)
{
    cd_bucket b;
    cd_bucket_init(&b, 1000, 60000, T0);
    CHECK_EQ(cd_bucket_tokens_milli(&b, T0), 1000000);
    CHECK_EQ(cd_bucket_next_ms(&b, T0, 1), 0);
    for (int i = 0; i < 1000; i++)
        CHECK(cd_bucket_take(&b, T0, 1));
    CHECK(!cd_bucket_take(&b, T0, 1));
    CHECK_EQ(cd_bucket_tokens_milli(&b, T0), 0);
    CHECK_EQ(cd_bucket_next_ms(&b, T0, 1), 60);
    CHECK_EQ(cd_bucket_tokens_milli(&b, T0 + 30), 500);    /* half a token */
    CHECK_EQ(cd_bucket_tokens_milli(&b, T0 + 59), 983);
    CHECK_EQ(cd_bucket_next_ms(&b, T0 + 59, 1), 1);
    CHECK(!cd_bucket_take(&b, T0 + 59, 1));
    CHECK(cd_bucket_take(&b, T0 + 60, 1));
    CHECK(!cd_bucket_take(&b, T0 + 60, 1));
    CHECK_EQ(cd_bucket_next_ms(&b, T0 + 60, 2), 120);
    /* A full window refills the whole bucket, and no further. */
    CHECK_EQ(cd_bucket_tokens_milli(&b, T0 + 60 + 60000), 1000000);
    CHECK_EQ(cd_bucket_tokens_milli(&b, T0 + 10 * 60000), 1000000);
    for (int i = 0; i < 1000; i++)
        CHECK(cd_bucket_take(&b, T0 + 10 * 60000, 1));
    CHECK(!cd_bucket_take(&b, T0 + 10 * 60000, 1));
}

TEST(bucket_costs)
{
    cd_bucket b;
    cd_bucket_init(&b, 10, 1000, T0);
    CHECK(cd_bucket_take(&b, T0, 0));
    CHECK(!cd_bucket_take(&b, T0, 11));                    /* never fits */
    CHECK_EQ(cd_bucket_next_ms(&b, T0, 11), UINT64_MAX);
    CHECK(cd_bucket_take(&b, T0, 7));
    CHECK(!cd_bucket_take(&b, T0, 4));                     /* refused whole */
    CHECK_EQ(cd_bucket_tokens_milli(&b, T0), 3000);
    CHECK_EQ(cd_bucket_next_ms(&b, T0, 4), 100);
    CHECK(cd_bucket_take(&b, T0, 3));
    CHECK(cd_bucket_take(&b, T0, 0));                      /* empty, cost 0 */
    CHECK_EQ(cd_bucket_next_ms(&b, T0, 0), 0);
    CHECK_EQ(cd_bucket_next_ms(&b, T0, 10), 1000);
    CHECK(!cd_bucket_take(&b, T0 + 999, 10));
    CHECK(cd_bucket_take(&b, T0 + 1000, 10));
}

TEST(bucket_unlimited)
{
    cd_bucket b;
    cd_bucket_init(&b, 0, 0, T0);
    for (int i = 0; i < 100000; i++)
        CHECK_EQ(cd_bucket_take_warn(&b, T0, 1000), CD_BUCKET_ALLOWED);
    CHECK_EQ(cd_bucket_tokens_milli(&b, T0), UINT64_MAX);
    CHECK_EQ(cd_bucket_next_ms(&b, T0, UINT32_MAX), 0);
}

TEST(bucket_warning_at_80_percent)
{
    cd_bucket b;
    cd_bucket_init(&b, 1000, 60000, T0);
    for (int i = 1; i <= 1000; i++) {
        int want = i == 800 ? CD_BUCKET_WARN : CD_BUCKET_ALLOWED;
        CHECK_EQ(cd_bucket_take_warn(&b, T0, 1), want);
    }
    CHECK_EQ(cd_bucket_take_warn(&b, T0, 1), CD_BUCKET_DENIED);
    /* Hovering near the top: refill one token, take it, no new warning. */
    for (uint64_t t = T0 + 60; t <= T0 + 6000; t += 60)
        CHECK_EQ(cd_bucket_take_warn(&b, t, 1), CD_BUCKET_ALLOWED);
    /* Exactly 50 % used is not below the re-arm mark ... */
    uint64_t t1 = T0 + 6000 + 500 * 60;                     /* 500 used */
    CHECK_EQ(cd_bucket_tokens_milli(&b, t1), 500000);
    CHECK_EQ(cd_bucket_take_warn(&b, t1, 0), CD_BUCKET_ALLOWED);
    for (int i = 0; i < 300; i++)                           /* to 800 used */
        CHECK_EQ(cd_bucket_take_warn(&b, t1, 1), CD_BUCKET_ALLOWED);
    /* ... one token more refilled is: the next crossing warns again. */
    uint64_t t2 = t1 + 301 * 60;                            /* 499 used */
    CHECK_EQ(cd_bucket_tokens_milli(&b, t2), 501000);
    for (int i = 1; i <= 301; i++) {
        int want = i == 301 ? CD_BUCKET_WARN : CD_BUCKET_ALLOWED;
        CHECK_EQ(cd_bucket_take_warn(&b, t2, 1), want);
    }
    /* A small limit: 4 of 5 is 80 %. */
    cd_bucket_init(&b, 5, 1000, T0);
    CHECK_EQ(cd_bucket_take_warn(&b, T0, 3), CD_BUCKET_ALLOWED);
    CHECK_EQ(cd_bucket_take_warn(&b, T0, 1), CD_BUCKET_WARN);
    CHECK_EQ(cd_bucket_take_warn(&b, T0, 1), CD_BUCKET_ALLOWED);
    /* One big take can cross straight from full to denied-next. */
    cd_bucket_init(&b, 5, 1000, T0);
    CHECK_EQ(cd_bucket_take_warn(&b, T0, 5), CD_BUCKET_WARN);
}

/* One hour of simulated time, a take attempted every millisecond. */
TEST(bucket_warning_counts_whole_tokens)
{
    /* Ten quick messages of a 10-per-minute bucket: the refill that
     * trickles in between them (a few thousandths of a token) does not
     * push the warning past the 8th. */
    cd_bucket b;
    cd_bucket_init(&b, 10, 60000, T0);
    for (int i = 1; i <= 10; i++) {
        int want = i == 8 ? CD_BUCKET_WARN : CD_BUCKET_ALLOWED;
        CHECK_EQ(cd_bucket_take_warn(&b, T0 + (uint64_t)i * 3, 1), want);
    }
    CHECK_EQ(cd_bucket_take_warn(&b, T0 + 40, 1), CD_BUCKET_DENIED);
}

TEST(bucket_no_drift_over_an_hour)
{
    cd_bucket b;
    cd_bucket_init(&b, 1000, 60000, T0);
    uint64_t allowed = 0, off_grid = 0, denied_wrong = 0;
    while (cd_bucket_take(&b, T0, 1))                /* the burst, at once */
        allowed++;
    CHECK_EQ(allowed, 1000);
    for (uint64_t t = T0 + 1; t <= T0 + 3600000; t++) {
        uint64_t wait = cd_bucket_next_ms(&b, t, 1);
        bool ok = cd_bucket_take(&b, t, 1);
        if (ok != (wait == 0))
            denied_wrong++;
        if (!ok)
            continue;
        allowed++;
        /* After the burst, the k-th token arrives at exactly T0 + 60 k. */
        if (allowed > 1000 && t != T0 + 60 * (allowed - 1000))
            off_grid++;
    }
    CHECK_EQ(allowed, 1000 + 60000);
    CHECK_EQ(off_grid, 0);
    CHECK_EQ(denied_wrong, 0);
    CHECK_EQ(cd_bucket_tokens_milli(&b, T0 + 3600000), 0);

    /* A rate that is not a whole number of ms per token: 7 per second.
     * Token k (after the burst) is due at ceil(1000 k / 7) ms. */
    cd_bucket_init(&b, 7, 1000, T0);
    allowed = off_grid = 0;
    while (cd_bucket_take(&b, T0, 1))
        allowed++;
    CHECK_EQ(allowed, 7);
    for (uint64_t t = T0 + 1; t <= T0 + 1000000; t++) {
        if (!cd_bucket_take(&b, t, 1))
            continue;
        allowed++;
        if (t != T0 + (1000 * (allowed - 7) + 6) / 7)
            off_grid++;
    }
    CHECK_EQ(allowed, 7 + 7000);
    CHECK_EQ(off_grid, 0);
}

/* next_ms is exact: the take fails one ms earlier and succeeds then. */
TEST(bucket_next_ms_is_exact)
{
    const uint32_t limits[][2] = {{7, 1000}, {1000, 60000}, {3, 10}, {1, 86400000}};
    for (size_t i = 0; i < CD_ARRAY_LEN(limits); i++) {
        cd_bucket b;
        cd_bucket_init(&b, limits[i][0], limits[i][1], T0);
        uint64_t t = T0;
        for (int n = 0; n < 50; n++) {
            uint32_t cost = 1 + (uint32_t)n % limits[i][0];
            uint64_t w = cd_bucket_next_ms(&b, t, cost);
            if (w > 0) {
                cd_bucket probe = b;
                CHECK(!cd_bucket_take(&probe, t + w - 1, cost));
            }
            CHECK(cd_bucket_take(&b, t + w, cost));
            t += w;
        }
    }
}

TEST(bucket_clock_backwards_is_harmless)
{
    cd_bucket b;
    cd_bucket_init(&b, 1000, 60000, T0);
    for (int i = 0; i < 1000; i++)
        CHECK(cd_bucket_take(&b, T0, 1));
    /* An hour back: nothing granted, nothing refilled, nothing lost: once
     * the clock is back, the bucket is exactly where it was. */
    uint64_t back = T0 - 3600000;
    CHECK_EQ(cd_bucket_tokens_milli(&b, back), 0);
    CHECK(!cd_bucket_take(&b, back, 1));
    CHECK(cd_bucket_take(&b, back, 0));
    CHECK(!cd_bucket_take(&b, back + 60, 1));
    CHECK_EQ(cd_bucket_tokens_milli(&b, T0 + 30), 500);
    CHECK(!cd_bucket_take(&b, T0 + 59, 1));
    CHECK(cd_bucket_take(&b, T0 + 60, 1));
    /* Half a window back on a half-full bucket: reads emptier, no more. */
    cd_bucket_init(&b, 1000, 60000, T0);
    for (int i = 0; i < 500; i++)
        CHECK(cd_bucket_take(&b, T0, 1));
    CHECK_EQ(cd_bucket_tokens_milli(&b, T0 - 6000), 400000);
    CHECK_EQ(cd_bucket_tokens_milli(&b, T0 - 60000), 0);
    for (int i = 0; i < 400; i++)
        CHECK(cd_bucket_take(&b, T0 - 6000, 1));
    CHECK(!cd_bucket_take(&b, T0 - 6000, 1));
    CHECK_EQ(cd_bucket_tokens_milli(&b, T0), 100000);
    /* Two clocks 500 ms apart taking turns (two workers sharing an entry)
     * over 10 s: never more tokens than the burst plus what the furthest
     * time reached refills. */
    cd_bucket_init(&b, 1000, 60000, T0);
    uint64_t granted = 0, furthest = T0;
    for (uint64_t step = 0; step < 10000; step++) {
        uint64_t t = T0 + step - (step % 2) * 500;
        if (t < T0)
            t = T0;
        furthest = CD_MAX(furthest, t);
        while (cd_bucket_take(&b, t, 1))
            granted++;
    }
    CHECK(granted <= 1000 + (furthest - T0) / 60);
    /* Before the epoch of the first init and at absurd clocks: no crash. */
    cd_bucket_init(&b, 10, 1000, UINT64_MAX);
    CHECK(!cd_bucket_take(&b, 0, 1));
    CHECK(cd_bucket_take(&b, UINT64_MAX, 1));
    CHECK(cd_bucket_tokens_milli(&b, UINT64_MAX) <= 10000);
}

/* ------------------------------------------------------------------ */
/* IP keys. */

static cd_addr mkaddr(const char *ip, int port)
{
    cd_addr a;
    memset(&a, 0, sizeof(a));
    struct sockaddr_in *v4 = (struct sockaddr_in *)&a.ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&a.ss;
    if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        a.len = sizeof(*v4);
    } else if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        a.len = sizeof(*v6);
    }
    return a;
}

static cd_ip_key key_of(const char *ip)
{
    cd_ip_key k;
    cd_addr a = mkaddr(ip, 1234);
    memset(&k, 0xaa, sizeof(k));
    CHECK_EQ(cd_ip_key_from_addr(&k, &a), 0);
    return k;
}

static void check_key_text(const char *ip, const char *want)
{
    char buf[CD_IP_KEY_STRLEN];
    cd_ip_key k = key_of(ip);
    CHECK_EQ(cd_ip_key_format(&k, buf, sizeof(buf)), strlen(want));
    CHECK_STR(buf, want);
}

TEST(ip_keys)
{
    cd_ip_key a = key_of("203.0.113.7"), b = key_of("::ffff:203.0.113.7");
    CHECK(cd_ip_key_is_v4(&a));
    CHECK_MEM(&a, &b, sizeof(a));                  /* mapped = IPv4 */
    cd_ip_key c = key_of("203.0.113.8");
    CHECK(memcmp(&a, &c, sizeof(a)) != 0);
    /* One /64, one key; the next /64 is another. */
    cd_ip_key d = key_of("2001:db8:1:2::1"), e = key_of("2001:db8:1:2:ffff:ffff:ffff:ffff");
    cd_ip_key f = key_of("2001:db8:1:3::1");
    CHECK(!cd_ip_key_is_v4(&d));
    CHECK_MEM(&d, &e, sizeof(d));
    CHECK(memcmp(&d, &f, sizeof(d)) != 0);
    /* ::ffff:0:0/96 inside a /64 cannot collide with a /64 key. */
    cd_ip_key g = key_of("::"), h = key_of("0.0.0.0"), i = key_of("::1.2.3.4");
    CHECK(memcmp(&g, &h, sizeof(g)) != 0);
    CHECK_MEM(&g, &i, sizeof(g));                   /* IPv4-compatible is IPv6 */
    check_key_text("203.0.113.7", "203.0.113.7");
    check_key_text("::ffff:10.1.2.3", "10.1.2.3");
    check_key_text("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64");
    check_key_text("::1", "::/64");
    check_key_text("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff::/64");
    check_key_text("255.255.255.255", "255.255.255.255");
    char small[6];
    CHECK_EQ(cd_ip_key_format(&a, small, sizeof(small)), 5);
    CHECK_STR(small, "203.0");
    CHECK_EQ(cd_ip_key_format(&a, small, 0), 0);
}

TEST(ip_key_bad_families)
{
    cd_ip_key k;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    ss.ss_family = AF_UNIX;
    CHECK_EQ(cd_ip_key_from_sockaddr(&k, (struct sockaddr *)&ss, sizeof(ss)), CONDUIT_EINVAL);
    ss.ss_family = AF_INET6;
    CHECK_EQ(cd_ip_key_from_sockaddr(&k, (struct sockaddr *)&ss, 8), CONDUIT_EINVAL);
    CHECK_EQ(cd_ip_key_from_sockaddr(&k, NULL, 0), CONDUIT_EINVAL);
}

/* ------------------------------------------------------------------ */
/* Counter table. */

TEST(counter_limits)
{
    cd_counter_table *t;
    CHECK_EQ(cd_counter_table_create(&t, 3), CONDUIT_EINVAL);
    CHECK_EQ(cd_counter_table_create(&t, 512), CONDUIT_EINVAL);
    CHECK_EQ(cd_counter_table_create(&t, 0), 0);
    cd_ip_key ip = key_of("198.51.100.1");
    for (int i = 0; i < 50; i++)
        CHECK_EQ(cd_counter_table_acquire(t, &ip, sizeof(ip), 50), 0);
    CHECK_EQ(cd_counter_table_acquire(t, &ip, sizeof(ip), 50), CONDUIT_ELIMIT);
    CHECK_EQ(cd_counter_table_count(t, &ip, sizeof(ip)), 50);
    CHECK_EQ(cd_counter_table_release(t, &ip, sizeof(ip)), 0);
    CHECK_EQ(cd_counter_table_acquire(t, &ip, sizeof(ip), 50), 0);
    /* A lower limit (after a reload) refuses without touching the count. */
    CHECK_EQ(cd_counter_table_acquire(t, &ip, sizeof(ip), 10), CONDUIT_ELIMIT);
    CHECK_EQ(cd_counter_table_count(t, &ip, sizeof(ip)), 50);
    /* Users: keys of different lengths are different keys. */
    CHECK_EQ(cd_counter_table_acquire(t, "alice", 5, 5), 0);
    CHECK_EQ(cd_counter_table_acquire(t, "alice2", 6, 5), 0);
    CHECK_EQ(cd_counter_table_acquire(t, "alic", 4, 5), 0);
    CHECK_EQ(cd_counter_table_count(t, "alice", 5), 1);
    CHECK_EQ(cd_counter_table_size(t), 4);
    /* Unlimited. */
    for (int i = 0; i < 1000; i++)
        CHECK_EQ(cd_counter_table_acquire(t, "bob", 3, 0), 0);
    CHECK_EQ(cd_counter_table_count(t, "bob", 3), 1000);
    /* Bad keys and unbalanced releases. */
    static char big[CD_COUNTER_MAX_KEY + 1];
    CHECK_EQ(cd_counter_table_acquire(t, big, sizeof(big), 0), CONDUIT_EINVAL);
    CHECK_EQ(cd_counter_table_acquire(t, "", 0, 0), CONDUIT_EINVAL);
    CHECK_EQ(cd_counter_table_acquire(t, big, CD_COUNTER_MAX_KEY, 0), 0);
    CHECK_EQ(cd_counter_table_release(t, big, CD_COUNTER_MAX_KEY), 0);
    CHECK_EQ(cd_counter_table_release(t, "carol", 5), CONDUIT_ENOTFOUND);
    CHECK_EQ(cd_counter_table_release(t, "", 0), CONDUIT_ENOTFOUND);
    /* Entries vanish at zero. */
    for (int i = 0; i < 50; i++)
        CHECK_EQ(cd_counter_table_release(t, &ip, sizeof(ip)), 0);
    CHECK_EQ(cd_counter_table_release(t, &ip, sizeof(ip)), CONDUIT_ENOTFOUND);
    CHECK_EQ(cd_counter_table_count(t, &ip, sizeof(ip)), 0);
    CHECK_EQ(cd_counter_table_size(t), 4);
    cd_counter_table_destroy(t);                   /* frees what is held */
    cd_counter_table_destroy(NULL);
}

TEST(counter_many_keys)
{
    cd_counter_table *t;
    CHECK_EQ(cd_counter_table_create(&t, 1), 0);   /* one shard: all growth */
    for (uint32_t i = 0; i < 100000; i++)
        CHECK_EQ(cd_counter_table_acquire(t, &i, sizeof(i), 1), 0);
    CHECK_EQ(cd_counter_table_size(t), 100000);
    for (uint32_t i = 0; i < 100000; i += 7)
        CHECK_EQ(cd_counter_table_acquire(t, &i, sizeof(i), 1), CONDUIT_ELIMIT);
    for (uint32_t i = 0; i < 100000; i++)
        CHECK_EQ(cd_counter_table_release(t, &i, sizeof(i)), 0);
    CHECK_EQ(cd_counter_table_size(t), 0);
    uint32_t again = 5;
    CHECK_EQ(cd_counter_table_acquire(t, &again, sizeof(again), 1), 0);
    CHECK_EQ(cd_counter_table_release(t, &again, sizeof(again)), 0);
    cd_counter_table_destroy(t);
}

/* Four threads fight over 8 keys with a limit of 3: the count is never
 * exceeded (each holder checks a shadow count), and everything balances. */
#define N_THREADS 4
#define N_KEYS 8
#define KEY_LIMIT 3
#define ITERS 40000

typedef struct counter_ctx {
    cd_counter_table *t;
    atomic_int held[N_KEYS];
    atomic_int over;
    atomic_long n_ok, n_limit, n_bad;
} counter_ctx;

typedef struct thread_arg {
    counter_ctx *ctx;
    unsigned seed;
} thread_arg;

static void *counter_worker(void *p)
{
    thread_arg *a = p;
    counter_ctx *ctx = a->ctx;
    unsigned x = a->seed;
    for (int i = 0; i < ITERS; i++) {
        x = x * 1103515245u + 12345u;
        unsigned k = (x >> 16) % N_KEYS;
        char key[8] = {'u', 's', 'e', 'r', (char)('0' + k)};
        int rc = cd_counter_table_acquire(ctx->t, key, 5, KEY_LIMIT);
        if (rc == CONDUIT_ELIMIT) {
            atomic_fetch_add(&ctx->n_limit, 1);
            continue;
        }
        if (rc != 0) {
            atomic_fetch_add(&ctx->n_bad, 1);
            continue;
        }
        atomic_fetch_add(&ctx->n_ok, 1);
        if (atomic_fetch_add(&ctx->held[k], 1) + 1 > KEY_LIMIT)
            atomic_fetch_add(&ctx->over, 1);
        atomic_fetch_sub(&ctx->held[k], 1);
        if (cd_counter_table_release(ctx->t, key, 5) != 0)
            atomic_fetch_add(&ctx->n_bad, 1);
    }
    return NULL;
}

TEST(counter_four_threads)
{
    static counter_ctx ctx;
    pthread_t th[N_THREADS];
    thread_arg args[N_THREADS];
    CHECK_EQ(cd_counter_table_create(&ctx.t, 4), 0);
    for (int i = 0; i < N_THREADS; i++) {
        args[i].ctx = &ctx;
        args[i].seed = 17u * (unsigned)i + 1;
        CHECK_EQ(pthread_create(&th[i], NULL, counter_worker, &args[i]), 0);
    }
    for (int i = 0; i < N_THREADS; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ(atomic_load(&ctx.over), 0);
    CHECK_EQ(atomic_load(&ctx.n_bad), 0);
    CHECK_EQ(atomic_load(&ctx.n_ok) + atomic_load(&ctx.n_limit), N_THREADS * ITERS);
    CHECK(atomic_load(&ctx.n_ok) > 0);
    CHECK_EQ(cd_counter_table_size(ctx.t), 0);
    cd_counter_table_destroy(ctx.t);
}

/* ------------------------------------------------------------------ */
/* Rate table. */

static cd_ip_key ipn(uint32_t n)
{
    cd_ip_key k;
    cd_addr a;
    memset(&a, 0, sizeof(a));
    struct sockaddr_in *v4 = (struct sockaddr_in *)&a.ss;
    v4->sin_family = AF_INET;
    v4->sin_addr.s_addr = htonl(0x0a000000u + n);
    a.len = sizeof(*v4);
    cd_ip_key_from_addr(&k, &a);
    return k;
}

TEST(rate_create_bounds)
{
    cd_rate_table *t;
    CHECK_EQ(cd_rate_table_create(&t, 10, 1000, 0, 0), CONDUIT_EINVAL);
    CHECK_EQ(cd_rate_table_create(&t, 10, 1000, 16, 6), CONDUIT_EINVAL);
    CHECK_EQ(cd_rate_table_create(&t, 10, 0, 16, 0), CONDUIT_EINVAL);
    CHECK_EQ(cd_rate_table_create(&t, CD_BUCKET_MAX_LIMIT + 1, 1000, 16, 0), CONDUIT_EINVAL);
    CHECK_EQ(cd_rate_table_create(&t, 0, 0, 16, 0), 0);    /* unlimited */
    cd_ip_key k = ipn(1);
    for (int i = 0; i < 1000; i++)
        CHECK_EQ(cd_rate_table_take(t, &k, T0, NULL), 0);
    cd_rate_table_stats st;
    cd_rate_table_stats_get(t, &st);
    CHECK_EQ(st.n_entries, 0);
    cd_rate_table_destroy(t);
    cd_rate_table_destroy(NULL);
}

TEST(rate_limit_and_retry_after)
{
    cd_rate_table *t;
    CHECK_EQ(cd_rate_table_create(&t, 3, 1000, 64, 0), 0);
    cd_ip_key a = ipn(1), b = ipn(2);
    uint64_t retry = 0;
    for (int i = 0; i < 3; i++)
        CHECK_EQ(cd_rate_table_take(t, &a, T0, &retry), 0);
    CHECK_EQ(cd_rate_table_take(t, &a, T0, &retry), CONDUIT_ELIMIT);
    CHECK_EQ(retry, 334);                            /* ceil(1000 / 3) */
    CHECK_EQ(cd_rate_table_take(t, &a, T0, NULL), CONDUIT_ELIMIT);
    /* Others are unaffected.  (Taken at T0 + 300, b is not yet full again
     * at T0 + 334, so the bounded sweep cannot expire it there whichever
     * shard the random hash seed puts it in.) */
    CHECK_EQ(cd_rate_table_take(t, &b, T0 + 300, &retry), 0);
    CHECK_EQ(cd_rate_table_take(t, &a, T0 + 333, NULL), CONDUIT_ELIMIT);
    CHECK_EQ(cd_rate_table_take(t, &a, T0 + 334, NULL), 0);
    cd_rate_table_stats st;
    cd_rate_table_stats_get(t, &st);
    CHECK_EQ(st.n_entries, 2);
    CHECK_EQ(st.n_denied, 3);
    CHECK_EQ(st.n_evicted, 0);
    cd_rate_table_destroy(t);
}

TEST(rate_expires_at_most_two_per_take)
{
    cd_rate_table *t;
    cd_rate_table_stats st;
    CHECK_EQ(cd_rate_table_create(&t, 1, 1000, 100, 1), 0);
    for (uint32_t i = 0; i < 10; i++) {
        cd_ip_key k = ipn(i);
        CHECK_EQ(cd_rate_table_take(t, &k, T0, NULL), 0);
    }
    cd_rate_table_stats_get(t, &st);
    CHECK_EQ(st.n_entries, 10);
    /* 999 ms later none has refilled: nothing may be expired. */
    cd_ip_key k100 = ipn(100);
    CHECK_EQ(cd_rate_table_take(t, &k100, T0 + 999, NULL), 0);
    cd_rate_table_stats_get(t, &st);
    CHECK_EQ(st.n_entries, 11);
    CHECK_EQ(st.n_expired, 0);
    /* At T0 + 1000 the ten first are idle; each take frees two of them. */
    for (uint32_t i = 0; i < 5; i++) {
        cd_ip_key k = ipn(200 + i);
        CHECK_EQ(cd_rate_table_take(t, &k, T0 + 1000, NULL), 0);
        cd_rate_table_stats_get(t, &st);
        CHECK_EQ(st.n_expired, 2 * (i + 1));
        CHECK_EQ(st.n_entries, 11 - 2 * (i + 1) + (i + 1));
    }
    /* The sweep stops at the first entry still in use (ipn(100)). */
    cd_ip_key k300 = ipn(300);
    CHECK_EQ(cd_rate_table_take(t, &k300, T0 + 1000, NULL), 0);
    cd_rate_table_stats_get(t, &st);
    CHECK_EQ(st.n_expired, 10);
    CHECK_EQ(st.n_entries, 7);
    cd_rate_table_destroy(t);
}

TEST(rate_hard_cap)
{
    cd_rate_table *t;
    cd_rate_table_stats st;
    CHECK_EQ(cd_rate_table_create(&t, 1, 60000, 8, 1), 0);
    for (uint32_t i = 0; i < 100; i++) {
        cd_ip_key k = ipn(i);
        CHECK_EQ(cd_rate_table_take(t, &k, T0 + i, NULL), 0);
        cd_rate_table_stats_get(t, &st);
        CHECK(st.n_entries <= 8);
    }
    CHECK_EQ(st.n_entries, 8);
    CHECK_EQ(st.n_evicted, 92);
    /* The 8 most recent keys are still limited; the evicted oldest one is
     * forgotten and gets a fresh burst (the documented price of the cap). */
    cd_ip_key recent = ipn(99), old = ipn(0);
    CHECK_EQ(cd_rate_table_take(t, &recent, T0 + 100, NULL), CONDUIT_ELIMIT);
    CHECK_EQ(cd_rate_table_take(t, &old, T0 + 100, NULL), 0);
    cd_rate_table_destroy(t);

    /* Sharded: the cap holds across shards too (8 per shard here). */
    CHECK_EQ(cd_rate_table_create(&t, 5, 1000, 128, 16), 0);
    for (uint32_t i = 0; i < 20000; i++) {
        cd_ip_key k = ipn(i);
        cd_rate_table_take(t, &k, T0, NULL);
    }
    cd_rate_table_stats_get(t, &st);
    CHECK(st.n_entries <= 128);
    CHECK(st.n_entries >= 100);
    CHECK_EQ(st.n_evicted + st.n_entries, 20000);
    cd_rate_table_destroy(t);
}

typedef struct rate_arg {
    cd_rate_table *t;
    unsigned seed;
    long n_ok, n_limit, n_bad;
} rate_arg;

static void *rate_worker(void *p)
{
    rate_arg *a = p;
    unsigned x = a->seed;
    for (uint64_t i = 0; i < 50000; i++) {
        x = x * 1103515245u + 12345u;
        cd_ip_key k = ipn((x >> 16) % 512);
        int rc = cd_rate_table_take(a->t, &k, T0 + i / 8, NULL);
        if (rc == 0)
            a->n_ok++;
        else if (rc == CONDUIT_ELIMIT)
            a->n_limit++;
        else
            a->n_bad++;
    }
    return NULL;
}

TEST(rate_four_threads)
{
    cd_rate_table *t;
    pthread_t th[N_THREADS];
    rate_arg args[N_THREADS];
    CHECK_EQ(cd_rate_table_create(&t, 20, 1000, 256, 4), 0);
    for (int i = 0; i < N_THREADS; i++) {
        args[i] = (rate_arg){.t = t, .seed = 31u * (unsigned)i + 7};
        CHECK_EQ(pthread_create(&th[i], NULL, rate_worker, &args[i]), 0);
    }
    long ok = 0, limited = 0, bad = 0;
    for (int i = 0; i < N_THREADS; i++) {
        pthread_join(th[i], NULL);
        ok += args[i].n_ok;
        limited += args[i].n_limit;
        bad += args[i].n_bad;
    }
    cd_rate_table_stats st;
    cd_rate_table_stats_get(t, &st);
    CHECK_EQ(bad, 0);
    CHECK_EQ(ok + limited, N_THREADS * 50000);
    CHECK_EQ((long)st.n_denied, limited);
    CHECK(st.n_entries <= 256);
    cd_rate_table_destroy(t);
}

int main(void)
{
    RUN(bucket_fits_in_a_connection);
    RUN(bucket_init_bounds);
    RUN(bucket_burst_then_one_token_per_60ms);
    RUN(bucket_costs);
    RUN(bucket_unlimited);
    RUN(bucket_warning_at_80_percent);
    RUN(bucket_warning_counts_whole_tokens);
    RUN(bucket_no_drift_over_an_hour);
    RUN(bucket_next_ms_is_exact);
    RUN(bucket_clock_backwards_is_harmless);
    RUN(ip_keys);
    RUN(ip_key_bad_families);
    RUN(counter_limits);
    RUN(counter_many_keys);
    RUN(counter_four_threads);
    RUN(rate_create_bounds);
    RUN(rate_limit_and_retry_after);
    RUN(rate_expires_at_most_two_per_take);
    RUN(rate_hard_cap);
    RUN(rate_four_threads);
    return test_main_end();
}
