/* admit.h - admission control: who may open a WebSocket connection, and
 * how many (docs/security.md, "Before the upgrade").
 *
 * One cd_admit per server, built from the options at create time and
 * shared by every worker: the counter and rate tables lock per shard, the
 * totals are atomics, and everything else is read-only after init.  Each
 * check returns a verdict that names the HTTP answer, so the connection
 * code only has to send it.  Nothing here touches a socket. */
#ifndef CD_ADMIT_H
#define CD_ADMIT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conduit.h"
#include "limits.h"
#include "net.h"
#include "proxy.h"

typedef struct cd_admit {
    cd_counter_table *per_ip;          /* open WebSocket connections per IP key */
    cd_counter_table *per_user;        /* ... per user id */
    cd_counter_table *pending;         /* request heads in progress per IP key */
    cd_rate_table *rate;               /* new connections per IP; NULL: off */
    cd_cidr_list trusted;              /* proxies whose word about the client counts */
    char **origins;                    /* allowed origins, lower case */
    size_t n_origins;
    bool any_origin;                   /* "*" configured */
    enum cd_proxy_header_kind proxy_header;
    uint32_t max_ws, max_per_ip, max_per_user, max_pending;
    uint64_t shed_rss;                 /* bytes; 0: off */
    atomic_size_t n_ws;                /* WebSocket connections held */
    atomic_uint_fast64_t rss;          /* last sampled resident memory */
    atomic_uint_fast64_t rss_at_ms;    /* when, on some worker's clock */
} cd_admit;

/* Why a connection is refused: the HTTP answer and the log line. */
typedef struct cd_admit_verdict {
    int status;                        /* 0: admitted */
    const char *code;                  /* protocol error code for the body */
    const char *reason;                /* static text for the body and log */
    const char *kind;                  /* connection_limit kind, or NULL */
    uint32_t retry_after_s;            /* Retry-After, 0: none */
} cd_admit_verdict;

/* Build from options; err gets one line naming the option on failure.
 * Returns 0, CONDUIT_EINVAL or CONDUIT_ENOMEM.  Thread: the creator. */
int cd_admit_init(cd_admit *a, const conduit_options *o, char *err, size_t errlen);
/* Free everything; safe on a zeroed or half-built struct.  Thread: the
 * creator, after the workers stopped. */
void cd_admit_fini(cd_admit *a);

/* Store an address as 16 bytes (IPv4 as ::ffff:a.b.c.d) and back; a
 * connection keeps only these.  Returns false for a non-IP family.  Pure. */
bool cd_admit_ip16_from_addr(uint8_t ip[16], const cd_addr *a);
void cd_admit_addr_from_ip16(cd_addr *a, const uint8_t ip[16]);
/* The counting key of a stored address (per /64 for IPv6).  Pure. */
cd_ip_key cd_admit_ip_key(const uint8_t ip[16]);
/* "203.0.113.7" or "2001:db8::1" for logs.  Pure. */
void cd_admit_ip_format(const uint8_t ip[16], char *buf, size_t cap);

/* Is the stored address one of the trusted proxies?  Thread: any. */
bool cd_admit_is_trusted(const cd_admit *a, const uint8_t ip[16]);

/* Take / give back a pending-handshake slot for ip.  Returns true when
 * taken (the caller must release it once).  Thread: any. */
bool cd_admit_pending_take(cd_admit *a, const uint8_t ip[16]);
void cd_admit_pending_release(cd_admit *a, const uint8_t ip[16]);

/* Server-wide capacity before anything else: memory ceiling, then the
 * global cap.  On success one global slot is held (release it with
 * cd_admit_ws_release).  now_ms is the caller's loop clock (the memory
 * sample is refreshed at most once a second).  Thread: any. */
void cd_admit_capacity(cd_admit *a, uint64_t now_ms, cd_admit_verdict *v);
void cd_admit_ws_release(cd_admit *a);

/* Origin check.  origin[0..len) is the Origin header (NULL: none, always
 * allowed); host[0..host_len) is the Host header, used for the same-origin
 * rule when no list is configured and cookie_token says the token came
 * from a cookie.  Thread: any. */
void cd_admit_origin(const cd_admit *a, const char *origin, size_t len,
                     const char *host, size_t host_len, bool cookie_token,
                     cd_admit_verdict *v);

/* Per-IP: the connection rate, then the open-connection cap.  On success
 * one per-IP slot is held (cd_admit_ip_release).  Thread: any. */
void cd_admit_ip(cd_admit *a, const uint8_t ip[16], uint64_t now_ms,
                 cd_admit_verdict *v);
void cd_admit_ip_release(cd_admit *a, const uint8_t ip[16]);

/* Per-user cap.  On success one slot is held (cd_admit_user_release).
 * Thread: any. */
void cd_admit_user(cd_admit *a, const char *user, cd_admit_verdict *v);
void cd_admit_user_release(cd_admit *a, const char *user);

#endif
