/* limits.c - token buckets, IP keys, and the shared counter and rate tables
 * (see limits.h).
 *
 * Invariants a reader must keep:
 *  - A bucket's `tat` only moves forward, and only by an allowed take, so
 *    a clock that goes backwards (or two workers whose cached clocks differ
 *    by a few ms, sharing a rate-table entry) can never grant a token.
 *    After an allowed take at time t, tat <= t + one full bucket.
 *  - A counter-table entry exists iff its count is > 0.
 *  - A rate-table shard never holds more than per_shard_cap entries, and
 *    every entry is on both its hash chain and the shard's LRU list.
 *  - Each shard's mutex guards that shard's fields only; no function holds
 *    two shard locks at once, so there is no lock order to keep. */
#include "limits.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "common.h"
#include "conduit.h"

/* ------------------------------------------------------------------ */
/* Token bucket (GCRA).  With u = 1/limit ms, one token is window_ms u and
 * the whole bucket is limit * window_ms u.  `debt` is how far tat lies
 * ahead of now: the part of the bucket in use. */

static uint64_t bucket_now(const cd_bucket *b, uint64_t now_ms)
{
    if (now_ms > CD_BUCKET_MAX_NOW_MS)
        now_ms = CD_BUCKET_MAX_NOW_MS;
    return now_ms * b->limit;                /* <= 2^43 * 10^6 < 2^63 */
}

static uint64_t bucket_full(const cd_bucket *b)
{
    return (uint64_t)b->limit * b->window_ms; /* < 2^51 */
}

/* Units in use at time t, at most a full bucket (tat lies further ahead
 * only when the clock went backwards: the bucket then reads as empty). */
static uint64_t bucket_debt(const cd_bucket *b, uint64_t t)
{
    if (b->tat <= t)
        return 0;
    uint64_t d = b->tat - t;
    uint64_t full = bucket_full(b);
    return d > full ? full : d;
}

int cd_bucket_init(cd_bucket *b, uint32_t limit, uint32_t window_ms,
                   uint64_t now_ms)
{
    memset(b, 0, sizeof(*b));
    if (limit == 0)
        return 0;
    if (limit > CD_BUCKET_MAX_LIMIT || window_ms == 0 ||
        window_ms > CD_BUCKET_MAX_WINDOW_MS)
        return CONDUIT_EINVAL;               /* left unlimited, see limits.h */
    b->limit = limit;
    b->window_ms = window_ms;
    b->tat = bucket_now(b, now_ms);          /* full: nothing in use */
    return 0;
}

int cd_bucket_take_warn(cd_bucket *b, uint64_t now_ms, uint32_t cost)
{
    if (b->limit == 0)
        return CD_BUCKET_ALLOWED;
    uint64_t t = bucket_now(b, now_ms);
    uint64_t full = bucket_full(b);
    uint64_t used = bucket_debt(b, t);
    /* Products below: used, need <= full < 2^51, times 1000 < 2^61. */
    if (used * 1000 < (uint64_t)CD_BUCKET_REARM_PERMILLE * full)
        b->is_warned = 0;
    if (cost > b->limit)
        return CD_BUCKET_DENIED;
    uint64_t need = (uint64_t)cost * b->window_ms;
    if (used + need > full)
        return CD_BUCKET_DENIED;
    /* tat only ever moves forward, and only here: never lowering it is
     * what keeps a clock that went backwards from granting anything. */
    b->tat = (b->tat > t ? b->tat : t) + need;
    /* Counted in whole tokens (a partly refilled one is still used), so
     * the warning comes at the 8th of 10 quick messages, not a refill
     * crumb later. */
    uint64_t used_tokens = (used + need + b->window_ms - 1) / b->window_ms;
    if (!b->is_warned &&
        used_tokens * 1000 >= (uint64_t)CD_BUCKET_WARN_PERMILLE * b->limit) {
        b->is_warned = 1;
        return CD_BUCKET_WARN;
    }
    return CD_BUCKET_ALLOWED;
}

bool cd_bucket_take(cd_bucket *b, uint64_t now_ms, uint32_t cost)
{
    return cd_bucket_take_warn(b, now_ms, cost) != CD_BUCKET_DENIED;
}

uint64_t cd_bucket_tokens_milli(const cd_bucket *b, uint64_t now_ms)
{
    if (b->limit == 0)
        return UINT64_MAX;
    uint64_t left = bucket_full(b) - bucket_debt(b, bucket_now(b, now_ms));
    return left * 1000 / b->window_ms;
}

uint64_t cd_bucket_next_ms(const cd_bucket *b, uint64_t now_ms, uint32_t cost)
{
    if (b->limit == 0 || cost == 0)
        return 0;
    if (cost > b->limit)
        return UINT64_MAX;
    uint64_t used = bucket_debt(b, bucket_now(b, now_ms));
    uint64_t need = (uint64_t)cost * b->window_ms;
    uint64_t full = bucket_full(b);
    if (used + need <= full)
        return 0;
    /* The debt falls by `limit` units per ms. */
    return (used + need - full + b->limit - 1) / b->limit;
}

static bool bucket_is_full(const cd_bucket *b, uint64_t now_ms)
{
    return b->limit == 0 || bucket_debt(b, bucket_now(b, now_ms)) == 0;
}

/* ------------------------------------------------------------------ */
/* IP keys. */

static const uint8_t v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

int cd_ip_key_from_sockaddr(cd_ip_key *k, const struct sockaddr *sa,
                            socklen_t len)
{
    memset(k, 0, sizeof(*k));
    if (sa == NULL)
        return CONDUIT_EINVAL;
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)(const void *)sa;
        memcpy(k->b, v4_mapped_prefix, 12);
        memcpy(k->b + 12, &v4->sin_addr, 4);
        return 0;
    }
    if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)(const void *)sa;
        memcpy(k->b, &v6->sin6_addr, 16);
        if (memcmp(k->b, v4_mapped_prefix, 12) != 0)
            memset(k->b + 8, 0, 8);          /* keep the /64 */
        return 0;
    }
    return CONDUIT_EINVAL;
}

int cd_ip_key_from_addr(cd_ip_key *k, const cd_addr *a)
{
    return cd_ip_key_from_sockaddr(k, (const struct sockaddr *)&a->ss, a->len);
}

bool cd_ip_key_is_v4(const cd_ip_key *k)
{
    return memcmp(k->b, v4_mapped_prefix, 12) == 0;
}

size_t cd_ip_key_format(const cd_ip_key *k, char *buf, size_t cap)
{
    char tmp[CD_IP_KEY_STRLEN];
    if (cap == 0)
        return 0;
    if (cd_ip_key_is_v4(k)) {
        inet_ntop(AF_INET, k->b + 12, tmp, sizeof(tmp));
    } else {
        inet_ntop(AF_INET6, k->b, tmp, sizeof(tmp) - 3);
        strcat(tmp, "/64");
    }
    size_t n = strlen(tmp);
    if (n >= cap)
        n = cap - 1;
    memcpy(buf, tmp, n);
    buf[n] = '\0';
    return n;
}

/* ------------------------------------------------------------------ */
/* Keyed hashing (SipHash-2-4): the tables' keys come from clients, so the
 * hash is seeded per table and an attacker cannot build colliding keys. */

static uint64_t rotl(uint64_t x, unsigned b)
{
    return (x << b) | (x >> (64 - b));
}

#define SIPROUND                                                             \
    do {                                                                     \
        v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32);             \
        v2 += v3; v3 = rotl(v3, 16); v3 ^= v2;                               \
        v0 += v3; v3 = rotl(v3, 21); v3 ^= v0;                               \
        v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32);             \
    } while (0)

static uint64_t siphash(const uint64_t key[2], const uint8_t *in, size_t len)
{
    uint64_t v0 = UINT64_C(0x736f6d6570736575) ^ key[0];
    uint64_t v1 = UINT64_C(0x646f72616e646f6d) ^ key[1];
    uint64_t v2 = UINT64_C(0x6c7967656e657261) ^ key[0];
    uint64_t v3 = UINT64_C(0x7465646279746573) ^ key[1];
    uint64_t last = (uint64_t)len << 56;
    size_t whole = len - len % 8;

    for (size_t i = 0; i < whole; i += 8) {
        uint64_t m = 0;
        for (unsigned j = 0; j < 8; j++)
            m |= (uint64_t)in[i + j] << (8 * j);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    for (size_t j = 0; j < len % 8; j++)
        last |= (uint64_t)in[whole + j] << (8 * j);
    v3 ^= last;
    SIPROUND;
    SIPROUND;
    v0 ^= last;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

static void seed_init(uint64_t seed[2], const void *salt)
{
    if (getrandom(seed, 2 * sizeof(uint64_t), 0) == (ssize_t)(2 * sizeof(uint64_t)))
        return;
    /* No getrandom (ENOSYS): ASLR bits are weak but better than a constant. */
    seed[0] = (uint64_t)(uintptr_t)salt * UINT64_C(0x9e3779b97f4a7c15);
    seed[1] = (uint64_t)(uintptr_t)&seed * UINT64_C(0xc2b2ae3d27d4eb4f);
}

static int shard_bits_of(size_t n_shards, unsigned *bits)
{
    if (n_shards == 0)
        n_shards = CD_LIMITS_DEFAULT_SHARDS;
    if (n_shards > CD_LIMITS_MAX_SHARDS || (n_shards & (n_shards - 1)) != 0)
        return CONDUIT_EINVAL;
    unsigned b = 0;
    while (((size_t)1 << b) < n_shards)
        b++;
    *bits = b;
    return 0;
}

/* The top bits pick the shard, the low bits the slot, so the two are
 * independent. */
static size_t shard_of(uint64_t hash, unsigned bits)
{
    return bits == 0 ? 0 : (size_t)(hash >> (64 - bits));
}

/* Shards sit on their own cache lines so that two workers locking
 * neighbouring shards do not bounce one line between cores. */
static void *alloc_shards(size_t n, size_t size)
{
    size_t bytes = (n * size + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, bytes);
    if (p != NULL)
        memset(p, 0, bytes);
    return p;
}

/* ------------------------------------------------------------------ */
/* Counter table. */

typedef struct counter_entry {
    struct counter_entry *next;
    uint64_t hash;
    uint32_t count;                  /* > 0 while the entry exists */
    uint32_t key_len;
    uint8_t key[];
} counter_entry;

typedef struct counter_shard {
    _Alignas(64) pthread_mutex_t mu; /* guards every field below */
    counter_entry **slots;
    size_t cap;                      /* 0 or a power of two */
    size_t count;                    /* entries */
} counter_shard;

struct cd_counter_table {
    uint64_t seed[2];
    unsigned shard_bits;
    size_t n_shards;
    counter_shard *shards;
};

#define COUNTER_MIN_CAP 16u

int cd_counter_table_create(cd_counter_table **out, size_t n_shards)
{
    unsigned bits;
    *out = NULL;
    if (shard_bits_of(n_shards, &bits) != 0)
        return CONDUIT_EINVAL;
    cd_counter_table *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return CONDUIT_ENOMEM;
    t->shard_bits = bits;
    t->n_shards = (size_t)1 << bits;
    t->shards = alloc_shards(t->n_shards, sizeof(counter_shard));
    if (t->shards == NULL) {
        free(t);
        return CONDUIT_ENOMEM;
    }
    for (size_t i = 0; i < t->n_shards; i++)
        pthread_mutex_init(&t->shards[i].mu, NULL);
    seed_init(t->seed, t);
    *out = t;
    return 0;
}

void cd_counter_table_destroy(cd_counter_table *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->n_shards; i++) {
        counter_shard *s = &t->shards[i];
        for (size_t j = 0; j < s->cap; j++) {
            counter_entry *next;
            for (counter_entry *e = s->slots[j]; e != NULL; e = next) {
                next = e->next;
                free(e);
            }
        }
        free(s->slots);
        pthread_mutex_destroy(&s->mu);
    }
    free(t->shards);
    free(t);
}

/* Rehash a shard into new_cap slots.  On allocation failure the shard
 * keeps its old array (longer chains, still correct). */
static void counter_resize(counter_shard *s, size_t new_cap)
{
    counter_entry **slots = calloc(new_cap, sizeof(*slots));
    if (slots == NULL)
        return;
    for (size_t j = 0; j < s->cap; j++) {
        counter_entry *next;
        for (counter_entry *e = s->slots[j]; e != NULL; e = next) {
            next = e->next;
            size_t i = (size_t)e->hash & (new_cap - 1);
            e->next = slots[i];
            slots[i] = e;
        }
    }
    free(s->slots);
    s->slots = slots;
    s->cap = new_cap;
}

/* The link that points at the entry for key, or at the NULL ending its
 * chain.  The shard must have slots. */
static counter_entry **counter_find(counter_shard *s, uint64_t hash,
                                    const void *key, size_t len)
{
    counter_entry **pp = &s->slots[(size_t)hash & (s->cap - 1)];
    for (; *pp != NULL; pp = &(*pp)->next) {
        counter_entry *e = *pp;
        if (e->hash == hash && e->key_len == len && memcmp(e->key, key, len) == 0)
            break;
    }
    return pp;
}

static counter_shard *counter_shard_for(cd_counter_table *t, const void *key,
                                        size_t len, uint64_t *hash)
{
    *hash = siphash(t->seed, key, len);
    return &t->shards[shard_of(*hash, t->shard_bits)];
}

int cd_counter_table_acquire(cd_counter_table *t, const void *key,
                             size_t key_len, uint32_t limit)
{
    uint64_t hash;
    int rc = 0;

    if (key_len == 0 || key_len > CD_COUNTER_MAX_KEY)
        return CONDUIT_EINVAL;
    counter_shard *s = counter_shard_for(t, key, key_len, &hash);
    pthread_mutex_lock(&s->mu);
    if (s->cap == 0)
        counter_resize(s, COUNTER_MIN_CAP);
    if (s->cap == 0) {
        rc = CONDUIT_ENOMEM;
        goto out;
    }
    counter_entry **pp = counter_find(s, hash, key, key_len);
    if (*pp != NULL) {
        counter_entry *e = *pp;
        if ((limit != 0 && e->count >= limit) || e->count == UINT32_MAX)
            rc = CONDUIT_ELIMIT;
        else
            e->count++;
        goto out;
    }
    counter_entry *e = malloc(sizeof(*e) + key_len);
    if (e == NULL) {
        rc = CONDUIT_ENOMEM;
        goto out;
    }
    e->next = NULL;
    e->hash = hash;
    e->count = 1;                    /* limit 0 or >= 1: one always fits */
    e->key_len = (uint32_t)key_len;
    memcpy(e->key, key, key_len);
    *pp = e;
    if (++s->count > s->cap)
        counter_resize(s, s->cap * 2);
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int cd_counter_table_release(cd_counter_table *t, const void *key,
                             size_t key_len)
{
    uint64_t hash;
    int rc = 0;

    if (key_len == 0 || key_len > CD_COUNTER_MAX_KEY)
        return CONDUIT_ENOTFOUND;
    counter_shard *s = counter_shard_for(t, key, key_len, &hash);
    pthread_mutex_lock(&s->mu);
    counter_entry **pp = s->cap ? counter_find(s, hash, key, key_len) : NULL;
    if (pp == NULL || *pp == NULL) {
        rc = CONDUIT_ENOTFOUND;
        goto out;
    }
    counter_entry *e = *pp;
    if (--e->count == 0) {
        *pp = e->next;
        free(e);
        /* Give memory back after a storm, with hysteresis (grow at load
         * 1, shrink at 1/8) so a count hovering at one size never
         * resizes back and forth. */
        if (--s->count < s->cap / 8 && s->cap > COUNTER_MIN_CAP)
            counter_resize(s, s->cap / 2);
    }
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

uint32_t cd_counter_table_count(cd_counter_table *t, const void *key,
                                size_t key_len)
{
    uint64_t hash;
    uint32_t n = 0;

    if (key_len == 0 || key_len > CD_COUNTER_MAX_KEY)
        return 0;
    counter_shard *s = counter_shard_for(t, key, key_len, &hash);
    pthread_mutex_lock(&s->mu);
    if (s->cap != 0) {
        counter_entry **pp = counter_find(s, hash, key, key_len);
        if (*pp != NULL)
            n = (*pp)->count;
    }
    pthread_mutex_unlock(&s->mu);
    return n;
}

size_t cd_counter_table_size(cd_counter_table *t)
{
    size_t n = 0;
    for (size_t i = 0; i < t->n_shards; i++) {
        pthread_mutex_lock(&t->shards[i].mu);
        n += t->shards[i].count;
        pthread_mutex_unlock(&t->shards[i].mu);
    }
    return n;
}

/* ------------------------------------------------------------------ */
/* Rate table. */

typedef struct rate_entry {
    struct rate_entry *hnext;        /* hash chain */
    struct rate_entry *prev, *next;  /* LRU: prev is more recent */
    uint64_t hash;
    cd_ip_key key;
    cd_bucket bucket;
} rate_entry;

_Static_assert(sizeof(rate_entry) == 64, "the memory bound in limits.h");

typedef struct rate_shard {
    _Alignas(64) pthread_mutex_t mu; /* guards every field below */
    rate_entry **slots;              /* mask + 1 chains, fixed at create */
    size_t mask;
    rate_entry *head, *tail;         /* most and least recently used */
    size_t count;                    /* <= per_shard_cap */
    uint64_t n_expired, n_evicted, n_denied;
} rate_shard;

struct cd_rate_table {
    uint64_t seed[2];
    uint32_t limit;
    uint32_t window_ms;
    size_t per_shard_cap;
    unsigned shard_bits;
    size_t n_shards;
    rate_shard *shards;
};

/* Keys per table: 2^26 entries is 4 GiB of entries; anything near it is a
 * configuration mistake. */
#define RATE_MAX_ENTRIES ((size_t)1 << 26)
/* Idle entries freed per take (nginx limit_req frees up to two). */
#define RATE_EXPIRE_PER_TAKE 2

int cd_rate_table_create(cd_rate_table **out, uint32_t limit,
                         uint32_t window_ms, size_t max_entries,
                         size_t n_shards)
{
    unsigned bits;
    cd_bucket probe;

    *out = NULL;
    if (shard_bits_of(n_shards, &bits) != 0 || max_entries == 0 ||
        max_entries > RATE_MAX_ENTRIES ||
        cd_bucket_init(&probe, limit, window_ms, 0) != 0)
        return CONDUIT_EINVAL;
    cd_rate_table *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return CONDUIT_ENOMEM;
    t->limit = limit;
    t->window_ms = window_ms;
    t->shard_bits = bits;
    t->n_shards = (size_t)1 << bits;
    t->per_shard_cap = (max_entries + t->n_shards - 1) / t->n_shards;
    t->shards = alloc_shards(t->n_shards, sizeof(rate_shard));
    if (t->shards == NULL) {
        free(t);
        return CONDUIT_ENOMEM;
    }
    size_t n_slots = 1;
    while (n_slots < t->per_shard_cap)
        n_slots *= 2;
    for (size_t i = 0; i < t->n_shards; i++) {
        rate_shard *s = &t->shards[i];
        pthread_mutex_init(&s->mu, NULL);
        s->mask = n_slots - 1;
        if (limit != 0 && (s->slots = calloc(n_slots, sizeof(*s->slots))) == NULL) {
            t->n_shards = i + 1;     /* destroy frees what was built */
            cd_rate_table_destroy(t);
            return CONDUIT_ENOMEM;
        }
    }
    seed_init(t->seed, t);
    *out = t;
    return 0;
}

void cd_rate_table_destroy(cd_rate_table *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->n_shards; i++) {
        rate_shard *s = &t->shards[i];
        rate_entry *next;
        for (rate_entry *e = s->head; e != NULL; e = next) {
            next = e->next;
            free(e);
        }
        free(s->slots);
        pthread_mutex_destroy(&s->mu);
    }
    free(t->shards);
    free(t);
}

static void lru_unlink(rate_shard *s, rate_entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        s->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        s->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push_head(rate_shard *s, rate_entry *e)
{
    e->prev = NULL;
    e->next = s->head;
    if (s->head)
        s->head->prev = e;
    else
        s->tail = e;
    s->head = e;
}

static void rate_remove(rate_shard *s, rate_entry *e)
{
    rate_entry **pp = &s->slots[(size_t)e->hash & s->mask];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    lru_unlink(s, e);
    s->count--;
    free(e);
}

static rate_entry *rate_find(rate_shard *s, uint64_t hash, const cd_ip_key *k)
{
    for (rate_entry *e = s->slots[(size_t)hash & s->mask]; e; e = e->hnext)
        if (e->hash == hash && memcmp(&e->key, k, sizeof(*k)) == 0)
            return e;
    return NULL;
}

/* Bounded cleanup: free at most RATE_EXPIRE_PER_TAKE idle entries from the
 * cold end, stopping at the first one that still remembers something. */
static void rate_expire(rate_shard *s, uint64_t now_ms)
{
    for (int i = 0; i < RATE_EXPIRE_PER_TAKE && s->tail != NULL; i++) {
        if (!bucket_is_full(&s->tail->bucket, now_ms))
            return;
        rate_remove(s, s->tail);
        s->n_expired++;
    }
}

int cd_rate_table_take(cd_rate_table *t, const cd_ip_key *key, uint64_t now_ms,
                       uint64_t *retry_after_ms)
{
    int rc = 0;

    if (t->limit == 0)
        return 0;
    uint64_t hash = siphash(t->seed, key->b, sizeof(key->b));
    rate_shard *s = &t->shards[shard_of(hash, t->shard_bits)];
    pthread_mutex_lock(&s->mu);
    rate_expire(s, now_ms);
    rate_entry *e = rate_find(s, hash, key);
    if (e != NULL) {
        lru_unlink(s, e);
    } else {
        if (s->count >= t->per_shard_cap) {
            rate_remove(s, s->tail);         /* the hard cap; see limits.h */
            s->n_evicted++;
        }
        if ((e = malloc(sizeof(*e))) == NULL) {
            rc = CONDUIT_ENOMEM;
            goto out;
        }
        e->hash = hash;
        e->key = *key;
        cd_bucket_init(&e->bucket, t->limit, t->window_ms, now_ms); /* checked at create */
        e->hnext = s->slots[(size_t)hash & s->mask];
        s->slots[(size_t)hash & s->mask] = e;
        s->count++;
    }
    lru_push_head(s, e);
    if (!cd_bucket_take(&e->bucket, now_ms, 1)) {
        rc = CONDUIT_ELIMIT;
        s->n_denied++;
        if (retry_after_ms != NULL)
            *retry_after_ms = cd_bucket_next_ms(&e->bucket, now_ms, 1);
    }
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void cd_rate_table_stats_get(cd_rate_table *t, cd_rate_table_stats *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < t->n_shards; i++) {
        rate_shard *s = &t->shards[i];
        pthread_mutex_lock(&s->mu);
        out->n_entries += s->count;
        out->n_expired += s->n_expired;
        out->n_evicted += s->n_evicted;
        out->n_denied += s->n_denied;
        pthread_mutex_unlock(&s->mu);
    }
}
