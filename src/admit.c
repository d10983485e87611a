/* admit.c - admission control before the upgrade (see admit.h). */
#include "admit.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "common.h"

/* Rate-table entries kept at most (64 B each): 4 MiB whatever the number
 * of source addresses. */
#define RATE_MAX_ENTRIES 65536u
#define SHED_RETRY_S 5u
#define RSS_SAMPLE_MS 1000u

static const uint8_t v4_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static int fail(char *err, size_t errlen, const char *what, const char *detail)
{
    if (err && errlen)
        snprintf(err, errlen, "%s%s", what, detail);
    return CONDUIT_EINVAL;
}

/* Lower-case copies of the comma-separated origins. */
static int parse_origins(cd_admit *a, const char *text, char *err, size_t errlen)
{
    size_t cap = 1;
    for (const char *p = text; *p; p++)
        cap += *p == ',';
    if ((a->origins = calloc(cap, sizeof(char *))) == NULL)
        return CONDUIT_ENOMEM;
    for (const char *p = text; *p;) {
        size_t n = strcspn(p, ",");
        const char *s = p, *e = p + n;
        while (s < e && (*s == ' ' || *s == '\t'))
            s++;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if (e > s) {
            if (e - s == 1 && *s == '*') {
                a->any_origin = true;
            } else {
                char *o = strndup(s, (size_t)(e - s));
                if (o == NULL)
                    return CONDUIT_ENOMEM;
                for (char *c = o; *c; c++)
                    if (*c >= 'A' && *c <= 'Z')
                        *c = (char)(*c - 'A' + 'a');
                a->origins[a->n_origins++] = o;
                if (strstr(o, "://") == NULL) {
                    return fail(err, errlen, "allowed_origins: not scheme://host[:port]: ", o);
                }
            }
        }
        p += n + (p[n] == ',');
    }
    return 0;
}

int cd_admit_init(cd_admit *a, const conduit_options *o, char *err, size_t errlen)
{
    memset(a, 0, sizeof(*a));
    cd_cidr_list_init(&a->trusted);
    atomic_init(&a->n_ws, 0);
    atomic_init(&a->rss, 0);
    atomic_init(&a->rss_at_ms, 0);
    a->max_ws = o->ws_max_connections;
    a->max_per_ip = o->ws_max_connections_per_ip;
    a->max_per_user = o->ws_max_connections_per_user;
    a->max_pending = o->ws_max_pending_handshakes_per_ip;
    a->shed_rss = o->ws_shed_memory;
    a->proxy_header = o->trusted_proxy_header && strcmp(o->trusted_proxy_header, "forwarded") == 0
                          ? CD_PROXY_FORWARDED
                          : CD_PROXY_XFF;
    int rc;
    if ((rc = cd_counter_table_create(&a->per_ip, 0)) != 0 ||
        (rc = cd_counter_table_create(&a->per_user, 0)) != 0 ||
        (rc = cd_counter_table_create(&a->pending, 0)) != 0)
        return rc;
    if (o->ws_connection_rate_limit > 0 &&
        (rc = cd_rate_table_create(&a->rate, o->ws_connection_rate_limit,
                                   o->ws_connection_rate_window_ms, RATE_MAX_ENTRIES, 0)) != 0)
        return rc == CONDUIT_EINVAL ? fail(err, errlen, "bad ws_connection_rate_limit", "")
                                    : rc;
    if (o->trusted_proxies) {
        char why[256];
        if ((rc = cd_cidr_list_parse(&a->trusted, o->trusted_proxies, why, sizeof(why))) != 0)
            return rc == CONDUIT_EINVAL ? fail(err, errlen, "trusted_proxies: ", why) : rc;
    }
    if (o->allowed_origins && (rc = parse_origins(a, o->allowed_origins, err, errlen)) != 0)
        return rc;
    return 0;
}

void cd_admit_fini(cd_admit *a)
{
    cd_counter_table_destroy(a->per_ip);
    cd_counter_table_destroy(a->per_user);
    cd_counter_table_destroy(a->pending);
    cd_rate_table_destroy(a->rate);
    cd_cidr_list_fini(&a->trusted);
    for (size_t i = 0; i < a->n_origins; i++)
        free(a->origins[i]);
    free(a->origins);
    memset(a, 0, sizeof(*a));
}

/* ------------------------------------------------------------------ */
/* Addresses. */

bool cd_admit_ip16_from_addr(uint8_t ip[16], const cd_addr *a)
{
    const struct sockaddr *sa = (const struct sockaddr *)&a->ss;
    if (sa->sa_family == AF_INET && a->len >= (socklen_t)sizeof(struct sockaddr_in)) {
        memcpy(ip, v4_prefix, 12);
        memcpy(ip + 12, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
        return true;
    }
    if (sa->sa_family == AF_INET6 && a->len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        memcpy(ip, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
        return true;
    }
    memset(ip, 0, 16);
    return false;
}

void cd_admit_addr_from_ip16(cd_addr *a, const uint8_t ip[16])
{
    memset(a, 0, sizeof(*a));
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)(void *)&a->ss;
    v6->sin6_family = AF_INET6;
    memcpy(&v6->sin6_addr, ip, 16);
    a->len = sizeof(*v6);
}

cd_ip_key cd_admit_ip_key(const uint8_t ip[16])
{
    cd_addr a;
    cd_ip_key k;
    cd_admit_addr_from_ip16(&a, ip);
    (void)cd_ip_key_from_addr(&k, &a); /* AF_INET6 never fails */
    return k;
}

void cd_admit_ip_format(const uint8_t ip[16], char *buf, size_t cap)
{
    char tmp[INET6_ADDRSTRLEN];
    if (memcmp(ip, v4_prefix, 12) == 0)
        inet_ntop(AF_INET, ip + 12, tmp, sizeof(tmp));
    else
        inet_ntop(AF_INET6, ip, tmp, sizeof(tmp));
    snprintf(buf, cap, "%s", tmp);
}

bool cd_admit_is_trusted(const cd_admit *a, const uint8_t ip[16])
{
    if (a->trusted.n == 0)
        return false;
    cd_addr addr;
    cd_admit_addr_from_ip16(&addr, ip);
    return cd_cidr_list_match_addr(&a->trusted, &addr);
}

/* ------------------------------------------------------------------ */
/* Pending handshakes. */

bool cd_admit_pending_take(cd_admit *a, const uint8_t ip[16])
{
    if (a->max_pending == 0)
        return true;
    cd_ip_key k = cd_admit_ip_key(ip);
    /* Out of memory for the entry: admit rather than refuse everybody. */
    int rc = cd_counter_table_acquire(a->pending, k.b, sizeof(k.b), a->max_pending);
    return rc != CONDUIT_ELIMIT;
}

void cd_admit_pending_release(cd_admit *a, const uint8_t ip[16])
{
    if (a->max_pending == 0)
        return;
    cd_ip_key k = cd_admit_ip_key(ip);
    (void)cd_counter_table_release(a->pending, k.b, sizeof(k.b));
}

/* ------------------------------------------------------------------ */
/* Capacity. */

static void refuse(cd_admit_verdict *v, int status, const char *code, const char *reason,
                   const char *kind, uint32_t retry_after_s)
{
    v->status = status;
    v->code = code;
    v->reason = reason;
    v->kind = kind;
    v->retry_after_s = retry_after_s;
}

static uint64_t read_rss(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return 0;
    unsigned long long size = 0, resident = 0;
    int n = fscanf(f, "%llu %llu", &size, &resident);
    fclose(f);
    long page = sysconf(_SC_PAGESIZE);
    return n == 2 && page > 0 ? (uint64_t)resident * (uint64_t)page : 0;
}

static uint64_t sampled_rss(cd_admit *a, uint64_t now_ms)
{
    uint64_t at = atomic_load_explicit(&a->rss_at_ms, memory_order_relaxed);
    if (at == 0 || now_ms - at >= RSS_SAMPLE_MS || now_ms < at) {
        atomic_store_explicit(&a->rss, read_rss(), memory_order_relaxed);
        atomic_store_explicit(&a->rss_at_ms, now_ms ? now_ms : 1, memory_order_relaxed);
    }
    return atomic_load_explicit(&a->rss, memory_order_relaxed);
}

void cd_admit_capacity(cd_admit *a, uint64_t now_ms, cd_admit_verdict *v)
{
    memset(v, 0, sizeof(*v));
    if (a->shed_rss && sampled_rss(a, now_ms) > a->shed_rss) {
        refuse(v, 503, "Overloaded", "the server is shedding load (memory)", "memory",
               SHED_RETRY_S);
        return;
    }
    size_t n = atomic_fetch_add_explicit(&a->n_ws, 1, memory_order_relaxed);
    if (a->max_ws && n >= a->max_ws) {
        atomic_fetch_sub_explicit(&a->n_ws, 1, memory_order_relaxed);
        refuse(v, 503, "Overloaded", "the server is at its connection limit", "global",
               SHED_RETRY_S);
    }
}

void cd_admit_ws_release(cd_admit *a)
{
    atomic_fetch_sub_explicit(&a->n_ws, 1, memory_order_relaxed);
}

/* ------------------------------------------------------------------ */
/* Origin. */

static bool origin_listed(const cd_admit *a, const char *origin, size_t len)
{
    char low[512];
    if (len >= sizeof(low))
        return false;
    for (size_t i = 0; i < len; i++)
        low[i] = (char)(origin[i] >= 'A' && origin[i] <= 'Z' ? origin[i] - 'A' + 'a' : origin[i]);
    for (size_t i = 0; i < a->n_origins; i++)
        if (cd_auth_pattern_match(a->origins[i], low, len))
            return true;
    return false;
}

/* Same origin: the Origin's authority (after "scheme://") equals Host. */
static bool same_origin(const char *origin, size_t len, const char *host, size_t host_len)
{
    const char *sep = NULL;
    for (size_t i = 0; i + 3 <= len; i++)
        if (memcmp(origin + i, "://", 3) == 0) {
            sep = origin + i + 3;
            break;
        }
    if (sep == NULL || host == NULL)
        return false;
    size_t alen = len - (size_t)(sep - origin);
    return alen == host_len && strncasecmp(sep, host, alen) == 0;
}

void cd_admit_origin(const cd_admit *a, const char *origin, size_t len, const char *host,
                     size_t host_len, bool cookie_token, cd_admit_verdict *v)
{
    memset(v, 0, sizeof(*v));
    if (origin == NULL || a->any_origin)
        return;
    if (a->n_origins > 0) {
        if (!origin_listed(a, origin, len))
            refuse(v, 403, "Forbidden", "origin not allowed", NULL, 0);
        return;
    }
    if (cookie_token && !same_origin(origin, len, host, host_len))
        refuse(v, 403, "Forbidden", "a cookie token needs a same-origin request", NULL, 0);
}

/* ------------------------------------------------------------------ */
/* Per IP and per user. */

void cd_admit_ip(cd_admit *a, const uint8_t ip[16], uint64_t now_ms, cd_admit_verdict *v)
{
    memset(v, 0, sizeof(*v));
    cd_ip_key k = cd_admit_ip_key(ip);
    if (a->rate) {
        uint64_t retry_ms = 0;
        if (cd_rate_table_take(a->rate, &k, now_ms, &retry_ms) == CONDUIT_ELIMIT) {
            uint64_t s = (retry_ms + 999) / 1000;
            refuse(v, 429, "RateLimitExceeded", "too many new connections from this address",
                   "rate", (uint32_t)CD_MIN(CD_MAX(s, 1), UINT32_MAX));
            return;
        }
    }
    if (a->max_per_ip &&
        cd_counter_table_acquire(a->per_ip, k.b, sizeof(k.b), a->max_per_ip) == CONDUIT_ELIMIT)
        refuse(v, 429, "Overloaded", "too many connections from this address", "ip", 0);
}

void cd_admit_ip_release(cd_admit *a, const uint8_t ip[16])
{
    if (a->max_per_ip == 0)
        return;
    cd_ip_key k = cd_admit_ip_key(ip);
    (void)cd_counter_table_release(a->per_ip, k.b, sizeof(k.b));
}

void cd_admit_user(cd_admit *a, const char *user, cd_admit_verdict *v)
{
    memset(v, 0, sizeof(*v));
    if (a->max_per_user &&
        cd_counter_table_acquire(a->per_user, user, strlen(user), a->max_per_user) ==
            CONDUIT_ELIMIT)
        refuse(v, 429, "Overloaded", "too many connections for this user", "user", 0);
}

void cd_admit_user_release(cd_admit *a, const char *user)
{
    if (a->max_per_user)
        (void)cd_counter_table_release(a->per_user, user, strlen(user));
}
