/* config.c - options: the declarative table and the three ways to fill it
 * (YAML file, CONDUIT_* environment, --flags; main.c applies them in the
 * order file < env < flags).  No other module parses configuration text. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include "common.h"
#include "log.h"
#include "net.h"
#include "proxy.h"

#define OFF(field) offsetof(conduit_options, field)

/* List options keep their count right after the array (see conduit.h). */
_Static_assert(offsetof(conduit_options, n_listen) ==
                   offsetof(conduit_options, listen) + sizeof(char *) * CONDUIT_MAX_LISTEN,
               "n_listen must follow listen[]");

static const cd_conf_entry conf_table[] = {
    {"listen", CD_CONF_LIST, OFF(listen), 0, 0, "127.0.0.1:8080", CD_CONF_ADDRESS,
     "Address to listen on, HOST:PORT or [IPV6]:PORT; repeat for several "
     "(comma-separated in the environment). Port 0 picks one free port "
     "shared by all workers."},
    {"workers", CD_CONF_U32, OFF(workers), 0, 1024, "0", 0,
     "Worker threads, each with its own event loop and listening socket "
     "(SO_REUSEPORT). 0 means one per CPU core."},
    {"config", CD_CONF_STR, OFF(config_file), 0, 0, NULL, CD_CONF_NO_FILE,
     "YAML configuration file to load before the environment and flags."},
    {"log_level", CD_CONF_LOG_LEVEL, OFF(log_level), 0, 3, "info", 0,
     "Lowest level logged: debug, info, warn or error."},
    {"handshake_timeout", CD_CONF_SECONDS, OFF(handshake_timeout_s), 1, 3600,
     "10", 0,
     "Seconds a client has to send its whole HTTP request head; then 408 "
     "and close."},
    {"ws_heartbeat_interval", CD_CONF_SECONDS, OFF(ws_heartbeat_interval_s),
     0, 86400, "30", 0,
     "Seconds between server pings on an otherwise quiet connection; 0 "
     "disables pings."},
    {"ws_heartbeat_timeout", CD_CONF_SECONDS, OFF(ws_heartbeat_timeout_s), 0,
     86400, "60", 0,
     "Close a connection (1001) when nothing, not even a pong, was received "
     "for this many seconds; 0 disables."},
    {"ws_idle_timeout", CD_CONF_SECONDS, OFF(ws_idle_timeout_s), 0, 604800,
     "0", 0,
     "Close a connection (1001) when it sent no data message for this many "
     "seconds; 0 disables."},
    {"ws_max_message_size", CD_CONF_BYTES, OFF(ws_max_message_size), 125,
     UINT64_C(1) << 32, "1048576", 0,
     "Largest message a client may send on the native endpoints, checked "
     "from the frame header before it is buffered: over it, a "
     "MessageTooLarge error and close 1009."},
    {"ws_max_fragments", CD_CONF_U32, OFF(ws_max_fragments), 1, 1u << 24,
     "131072", 0, "Most frames one fragmented message may have (close 1009 past it)."},
    {"ws_compression", CD_CONF_BOOL, OFF(ws_compression), 0, 0, "true", 0,
     "Negotiate permessage-deflate (RFC 7692) when a client offers it."},
    {"ws_compression_window_bits", CD_CONF_U32,
     OFF(ws_compression_window_bits), 9, 15, "15", 0,
     "Largest deflate window the server uses for its own messages "
     "(memory: 2^(bits+2) bytes per compressing connection)."},
    {"ws_compression_mem_level", CD_CONF_U32, OFF(ws_compression_mem_level),
     1, 9, "8", 0,
     "zlib memLevel for outgoing compression (memory: 2^(level+9) bytes per "
     "compressing connection)."},
    {"ws_compression_min_size", CD_CONF_U32, OFF(ws_compression_min_size), 0,
     1u << 30, "0", 0, "Outgoing messages smaller than this are sent uncompressed."},
    {"echo_enabled", CD_CONF_BOOL, OFF(echo_enabled), 0, 0, "true", 0,
     "Serve the raw echo endpoint (every message sent back as it came), for "
     "conformance suites and health checks."},
    {"echo_path", CD_CONF_STR, OFF(echo_path), 0, 0, "/echo", 0,
     "Path of the raw echo endpoint."},
    {"echo_max_message_size", CD_CONF_BYTES, OFF(echo_max_message_size), 125,
     UINT64_C(1) << 32, "16777216", 0,
     "Largest message the echo endpoint accepts (close 1009 past it)."},
    {"close_timeout", CD_CONF_SECONDS, OFF(close_timeout_s), 1, 60, "5", 0,
     "Seconds to wait for the peer's side of a closing handshake before the "
     "socket is closed anyway."},
    {"ws_path", CD_CONF_STR, OFF(ws_path), 0, 0, "/ws", 0,
     "Path of the native protocol endpoint; PATH/{room} joins the room on "
     "open."},
    {"auth_mode", CD_CONF_ENUM, OFF(auth_mode), 0, 0, "optional", 0,
     "optional: anonymous connections allowed (each its own user); "
     "required: a valid token is needed; insecure: development only, "
     "?user_id= is trusted without a token (logged as a warning).",
     "optional|required|insecure"},
    {"ws_max_subscriptions_per_connection", CD_CONF_U32,
     OFF(ws_max_subscriptions_per_connection), 1, 1000000, "128", 0,
     "Channels one connection may be subscribed to "
     "(SubscriptionLimitExceeded past it)."},
    {"ws_max_subscribers_per_channel", CD_CONF_U32,
     OFF(ws_max_subscribers_per_channel), 0, UINT32_MAX, "0", 0,
     "Subscriptions one channel may have (ChannelFull past it); 0 is "
     "unlimited."},
    {"ws_allow_broadcast_all", CD_CONF_BOOL, OFF(ws_allow_broadcast_all), 0, 0,
     "true", 0, "A publish naming no channel reaches every connection."},
    {"ws_presence", CD_CONF_BOOL, OFF(ws_presence), 0, 0, "true", 0,
     "Presence (member lists, online/offline events) for channels whose "
     "namespace does not say otherwise."},
    {"ws_join_leave_events", CD_CONF_BOOL, OFF(ws_join_leave_events), 0, 0, "true", 0,
     "join/leave events to channel members, where presence is on."},
    {"ws_client_publish", CD_CONF_BOOL, OFF(ws_client_publish), 0, 0, "true", 0,
     "Clients may publish (the server API always may)."},
    {"ws_typing", CD_CONF_BOOL, OFF(ws_typing), 0, 0, "true", 0,
     "typing events between channel members."},
    {"ws_typing_rate_limit", CD_CONF_U32, OFF(ws_typing_rate_limit), 1, 1000000, "10", 0,
     "typing events one connection may send per window (RateLimitExceeded "
     "past it)."},
    {"ws_typing_rate_window_ms", CD_CONF_U32, OFF(ws_typing_rate_window_ms), 1,
     86400000, "10000", 0, "The typing rate window, in milliseconds."},
    {"ws_max_queue_bytes", CD_CONF_BYTES, OFF(ws_max_queue_bytes), 1024,
     UINT64_C(1) << 34, "4194304", 0,
     "Bytes waiting to be written to one connection; past it the "
     "connection is a slow consumer and is closed with 4008."},
    {"ws_max_queue_messages", CD_CONF_U32, OFF(ws_max_queue_messages), 1,
     UINT32_MAX, "1000", 0,
     "Messages waiting to be written to one connection; past it, as above."},
    {"jwt_secret", CD_CONF_STR, OFF(jwt_secret), 0, 0, NULL,
     CD_CONF_SECRET | CD_CONF_RELOAD,
     "HMAC secret for HS256/HS384/HS512 tokens, as given (at least 32 bytes; "
     "48 for HS384, 64 for HS512)."},
    {"jwt_key_file", CD_CONF_STR, OFF(jwt_key_file), 0, 0, NULL, CD_CONF_RELOAD,
     "PEM public key (RSA, EC P-256/P-384, Ed25519) or JWKS file; several "
     "keys by kid for rotation.  Re-read on SIGHUP."},
    {"jwt_issuer", CD_CONF_STR, OFF(jwt_issuer), 0, 0, NULL, CD_CONF_RELOAD,
     "Expected \"iss\" claim; unset: not checked."},
    {"jwt_audience", CD_CONF_STR, OFF(jwt_audience), 0, 0, NULL, CD_CONF_RELOAD,
     "Expected in the \"aud\" claim; unset: not checked."},
    {"jwt_leeway", CD_CONF_SECONDS, OFF(jwt_leeway_s), 0, 300, "5", 0,
     "Clock skew allowed when checking exp and nbf."},
    {"jwt_cookie_name", CD_CONF_STR, OFF(jwt_cookie_name), 0, 0, "token", 0,
     "Cookie that may carry the token (after the Authorization header and "
     "the token/auth_token query parameters)."},
    {"auth_timeout", CD_CONF_SECONDS, OFF(auth_timeout_s), 1, 3600, "10", 0,
     "With auth_mode=required, a connection that brought no token must send "
     "auth or hello with one within this time (then close 1008)."},
    {"token_expiring_warning", CD_CONF_SECONDS, OFF(token_expiring_warning_s), 0,
     86400, "60", 0,
     "A TokenExpiring warning is sent this long before the token's exp; "
     "0: no warning."},
    {"allowed_origins", CD_CONF_STR, OFF(allowed_origins), 0, 0, NULL, 0,
     "Comma-separated origins allowed to upgrade (scheme://host[:port], "
     "compared exactly; * is a wildcard; \"*\" alone allows any).  Unset: "
     "any origin, but same-origin only when the token comes from a cookie."},
    {"ws_allow_anonymous", CD_CONF_BOOL, OFF(ws_allow_anonymous), 0, 0, "true", 0,
     "Anonymous connections may subscribe and publish (namespace default)."},
    {"ws_publish_requires_subscribe", CD_CONF_BOOL,
     OFF(ws_publish_requires_subscribe), 0, 0, "false", 0,
     "Only subscribers of a channel may publish to it (namespace default)."},
    {"ws_max_connections", CD_CONF_U32, OFF(ws_max_connections), 0, UINT32_MAX,
     "0", 0, "WebSocket connections in all; past it upgrades get 503.  0 is "
     "unlimited."},
    {"ws_max_connections_per_user", CD_CONF_U32, OFF(ws_max_connections_per_user),
     0, UINT32_MAX, "5", 0,
     "WebSocket connections of one user; past it 429 (or close 1008 after "
     "an in-band auth).  0 is unlimited."},
    {"ws_max_connections_per_ip", CD_CONF_U32, OFF(ws_max_connections_per_ip), 0,
     UINT32_MAX, "50", 0,
     "WebSocket connections from one IP (IPv6: per /64); past it 429.  0 is "
     "unlimited."},
    {"ws_max_pending_handshakes_per_ip", CD_CONF_U32,
     OFF(ws_max_pending_handshakes_per_ip), 0, UINT32_MAX, "32", 0,
     "Connections from one IP still sending their request head; one more is "
     "answered 429 at once.  0 is unlimited."},
    {"ws_connection_rate_limit", CD_CONF_U32, OFF(ws_connection_rate_limit), 0,
     1000000, "0", 0,
     "New WebSocket connections one IP may open per rate window (burst = "
     "the limit); past it 429 with Retry-After.  0 is off."},
    {"ws_connection_rate_window_ms", CD_CONF_U32, OFF(ws_connection_rate_window_ms),
     1, 0x7fffffff, "60000", 0, "The connection rate window, in milliseconds."},
    {"ws_shed_memory", CD_CONF_BYTES, OFF(ws_shed_memory), 0, UINT64_C(1) << 44, "0",
     0, "Resident memory above which new upgrades get 503 while open "
     "connections keep working.  0 is off."},
    {"ws_message_rate_limit", CD_CONF_U32, OFF(ws_message_rate_limit), 0, 1000000,
     "1000", 0,
     "Frames (data, ping, pong) one native connection may send per rate "
     "window; continuous refill, burst = the limit, RateLimitWarning at 80 %. "
     "0 is off."},
    {"ws_rate_window_ms", CD_CONF_U32, OFF(ws_rate_window_ms), 1, 0x7fffffff,
     "60000", 0, "The message rate window, in milliseconds."},
    {"ws_rate_limit_policy", CD_CONF_ENUM, OFF(ws_rate_limit_policy), 0, 0, "close",
     0, "Past the message rate: close (RateLimitExceeded, then close 1008) or "
     "throttle (stop reading the connection until tokens return).",
     "close|throttle"},
    {"trusted_proxies", CD_CONF_STR, OFF(trusted_proxies), 0, 0, NULL, CD_CONF_CIDRS,
     "Comma-separated CIDRs of proxies whose X-Forwarded-For/Forwarded or "
     "PROXY header names the client; from anyone else they are ignored."},
    {"trusted_proxy_header", CD_CONF_ENUM, OFF(trusted_proxy_header), 0, 0,
     "x-forwarded-for", 0, "Which header a trusted proxy writes the client into.",
     "x-forwarded-for|forwarded"},
    {"proxy_protocol", CD_CONF_BOOL, OFF(proxy_protocol), 0, 0, "false", 0,
     "Connections from trusted proxies begin with a PROXY protocol v1/v2 "
     "header (required from them)."},
};

/* Namespace options: key ns_<name>_<option>, e.g. ns_chat_presence or the
 * variable CONDUIT_NS_CHAT_PRESENCE.  Unset fields follow the global
 * option named in `global`. */
typedef struct ns_entry {
    const char *option;
    cd_conf_type type;
    size_t offset;
    const char *global;
    const char *help;
} ns_entry;

static const ns_entry ns_table[] = {
    {"presence", CD_CONF_BOOL, offsetof(conduit_namespace, presence), "ws_presence",
     "member lists and online/offline events"},
    {"join_leave", CD_CONF_BOOL, offsetof(conduit_namespace, join_leave),
     "ws_join_leave_events", "join/leave events"},
    {"client_publish", CD_CONF_BOOL, offsetof(conduit_namespace, client_publish),
     "ws_client_publish", "clients may publish"},
    {"typing", CD_CONF_BOOL, offsetof(conduit_namespace, typing), "ws_typing",
     "typing events"},
    {"max_subscribers", CD_CONF_U32, offsetof(conduit_namespace, max_subscribers),
     "ws_max_subscribers_per_channel", "subscriptions per channel (0: unlimited)"},
    {"anonymous", CD_CONF_BOOL, offsetof(conduit_namespace, anonymous),
     "ws_allow_anonymous", "anonymous connections may subscribe and publish"},
    {"publish_requires_subscribe", CD_CONF_BOOL,
     offsetof(conduit_namespace, publish_requires_subscribe),
     "ws_publish_requires_subscribe", "only subscribers may publish"},
};

const cd_conf_entry *cd_conf_table(size_t *n)
{
    *n = CD_ARRAY_LEN(conf_table);
    return conf_table;
}

const cd_conf_entry *cd_conf_find(const char *key)
{
    for (size_t i = 0; i < CD_ARRAY_LEN(conf_table); i++)
        if (strcmp(conf_table[i].key, key) == 0)
            return &conf_table[i];
    return NULL;
}

const cd_conf_entry *cd_conf_find_flag(const char *flag)
{
    char key[64];
    size_t n = strlen(flag);
    if (n == 0 || n >= sizeof(key))
        return NULL;
    for (size_t i = 0; i <= n; i++)
        key[i] = flag[i] == '-' ? '_' : flag[i];
    if (strchr(flag, '_') != NULL)
        return NULL; /* flags are spelled with dashes only */
    return cd_conf_find(key);
}

static void *field(conduit_options *opt, const cd_conf_entry *e)
{
    return (char *)opt + e->offset;
}

static const void *cfield(const conduit_options *opt, const cd_conf_entry *e)
{
    return (const char *)opt + e->offset;
}

static int fail(char *err, size_t errlen, const char *origin,
                const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, const char *origin,
                const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        int n = snprintf(err, errlen, "%s: ", origin);
        if (n >= 0 && (size_t)n < errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return CONDUIT_EINVAL;
}

/* Parse an unsigned decimal with an optional unit suffix.  `units` maps a
 * lower-case suffix letter to its multiplier; returns false on any junk. */
static bool parse_uint(const char *s, const char *suffixes,
                       const uint64_t *mult, uint64_t *out)
{
    if (!isdigit((unsigned char)s[0]))
        return false;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0)
        return false;
    uint64_t m = 1;
    if (*end != '\0') {
        const char *p = suffixes ? strchr(suffixes, tolower((unsigned char)*end)) : NULL;
        if (p == NULL || end[1] != '\0')
            return false;
        m = mult[p - suffixes];
    }
    if (m != 1 && v > UINT64_MAX / m)
        return false;
    *out = (uint64_t)v * m;
    return true;
}

static int set_string(char **slot, const char *value, const char *origin,
                      char *err, size_t errlen)
{
    char *copy = strdup(value);
    if (copy == NULL)
        return fail(err, errlen, origin, "out of memory");
    free(*slot);
    *slot = copy;
    return 0;
}

static int append_list(conduit_options *opt, const cd_conf_entry *e,
                       const char *value, const char *origin, char *err,
                       size_t errlen)
{
    char **items = field(opt, e);
    size_t *count = (size_t *)(void *)((char *)items +
                                       sizeof(char *) * CONDUIT_MAX_LISTEN);
    if (value[0] == '\0')
        return fail(err, errlen, origin, "empty value");
    if (e->flags & CD_CONF_ADDRESS) {
        cd_addr addr;
        char why[160];
        if (cd_addr_parse(value, &addr, why, sizeof(why)) != 0)
            return fail(err, errlen, origin, "%s", why);
    }
    if (*count >= CONDUIT_MAX_LISTEN)
        return fail(err, errlen, origin, "at most %d values", CONDUIT_MAX_LISTEN);
    char *copy = strdup(value);
    if (copy == NULL)
        return fail(err, errlen, origin, "out of memory");
    items[(*count)++] = copy;
    return 0;
}

void cd_conf_list_clear(conduit_options *opt, const cd_conf_entry *e)
{
    char **items = field(opt, e);
    size_t *count = (size_t *)(void *)((char *)items +
                                       sizeof(char *) * CONDUIT_MAX_LISTEN);
    for (size_t i = 0; i < *count; i++) {
        free(items[i]);
        items[i] = NULL;
    }
    *count = 0;
}

int cd_conf_set(conduit_options *opt, const cd_conf_entry *e,
                const char *value, const char *origin, char *err,
                size_t errlen)
{
    static const uint64_t byte_mult[] = {1024, 1024 * 1024, 1024 * 1024 * 1024};
    static const uint64_t sec_mult[] = {1, 60, 3600};
    uint64_t v;

    switch (e->type) {
    case CD_CONF_STR:
        if (e->flags & CD_CONF_CIDRS) {
            cd_cidr_list l;
            char why[256];
            cd_cidr_list_init(&l);
            int rc = cd_cidr_list_parse(&l, value, why, sizeof(why));
            cd_cidr_list_fini(&l);
            if (rc != 0)
                return fail(err, errlen, origin, "%s", why);
        }
        return set_string(field(opt, e), value, origin, err, errlen);
    case CD_CONF_ENUM: {
        size_t n = strlen(value);
        for (const char *ch = e->choices; ch && *ch;) {
            size_t k = strcspn(ch, "|");
            if (k == n && n > 0 && strncmp(ch, value, n) == 0)
                return set_string(field(opt, e), value, origin, err, errlen);
            ch += k + (ch[k] == '|');
        }
        return fail(err, errlen, origin, "expected one of %s, got \"%s\"", e->choices, value);
    }
    case CD_CONF_LIST:
        return append_list(opt, e, value, origin, err, errlen);
    case CD_CONF_BOOL:
        if (!strcmp(value, "true") || !strcmp(value, "1") || !strcmp(value, "yes") ||
            !strcmp(value, "on"))
            *(bool *)field(opt, e) = true;
        else if (!strcmp(value, "false") || !strcmp(value, "0") ||
                 !strcmp(value, "no") || !strcmp(value, "off"))
            *(bool *)field(opt, e) = false;
        else
            return fail(err, errlen, origin, "expected true or false, got \"%s\"", value);
        return 0;
    case CD_CONF_LOG_LEVEL: {
        int lvl = cd_log_level_parse(value);
        if (lvl < 0)
            return fail(err, errlen, origin,
                        "expected debug, info, warn or error, got \"%s\"", value);
        *(int *)field(opt, e) = lvl;
        return 0;
    }
    case CD_CONF_U32:
    case CD_CONF_SECONDS:
        if (!parse_uint(value, e->type == CD_CONF_SECONDS ? "smh" : NULL,
                        sec_mult, &v) || v < e->min || v > e->max)
            return fail(err, errlen, origin,
                        "expected %s between %" PRIu64 " and %" PRIu64 ", got \"%s\"",
                        e->type == CD_CONF_SECONDS ? "seconds" : "an integer",
                        e->min, e->max, value);
        *(uint32_t *)field(opt, e) = (uint32_t)v;
        return 0;
    case CD_CONF_BYTES:
        if (!parse_uint(value, "kmg", byte_mult, &v) || v < e->min || v > e->max)
            return fail(err, errlen, origin,
                        "expected a size in bytes (k, m, g suffixes allowed) "
                        "between %" PRIu64 " and %" PRIu64 ", got \"%s\"",
                        e->min, e->max, value);
        *(uint64_t *)field(opt, e) = v;
        return 0;
    }
    return fail(err, errlen, origin, "unsupported option type");
}


/* ------------------------------------------------------------------ */
/* Namespace keys. */

/* Split "ns_<name>_<option>": the option is the longest known suffix.
 * Returns the option's entry and writes the lower-case name, or NULL. */
static const ns_entry *ns_parse_key(const char *key, char *name, size_t cap)
{
    if (strncmp(key, "ns_", 3) != 0)
        return NULL;
    const char *rest = key + 3;
    size_t rlen = strlen(rest);
    const ns_entry *best = NULL;
    size_t best_len = 0;
    for (size_t i = 0; i < CD_ARRAY_LEN(ns_table); i++) {
        size_t olen = strlen(ns_table[i].option);
        if (rlen > olen + 1 && rest[rlen - olen - 1] == '_' &&
            strcmp(rest + rlen - olen, ns_table[i].option) == 0 && olen > best_len) {
            best = &ns_table[i];
            best_len = olen;
        }
    }
    if (best == NULL)
        return NULL;
    size_t nlen = rlen - best_len - 1;
    if (nlen == 0 || nlen >= cap || nlen >= sizeof(((conduit_namespace *)0)->name))
        return NULL;
    for (size_t i = 0; i < nlen; i++) {
        char ch = (char)tolower((unsigned char)rest[i]);
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '-'))
            return NULL;
        name[i] = ch;
    }
    name[nlen] = '\0';
    return best;
}

static conduit_namespace *ns_get(conduit_options *opt, const char *name)
{
    for (size_t i = 0; i < opt->n_ns; i++)
        if (strcmp(opt->ns[i].name, name) == 0)
            return &opt->ns[i];
    if (opt->n_ns >= CONDUIT_MAX_NAMESPACES)
        return NULL;
    conduit_namespace *ns = &opt->ns[opt->n_ns++];
    memset(ns, 0, sizeof(*ns));
    snprintf(ns->name, sizeof(ns->name), "%s", name);
    ns->presence = ns->join_leave = ns->client_publish = ns->typing = -1;
    ns->anonymous = ns->publish_requires_subscribe = -1;
    ns->max_subscribers = -1;
    return ns;
}

static int ns_set(conduit_options *opt, const ns_entry *ne, const char *name,
                  const char *value, const char *origin, char *err, size_t errlen)
{
    /* Parse with the global option's own rules, then store it here. */
    const cd_conf_entry *g = cd_conf_find(ne->global);
    conduit_options scratch;
    memset(&scratch, 0, sizeof(scratch));
    int rc = cd_conf_set(&scratch, g, value, origin, err, errlen);
    if (rc != 0)
        return rc;
    conduit_namespace *ns = ns_get(opt, name);
    if (ns == NULL)
        return fail(err, errlen, origin, "at most %d namespaces", CONDUIT_MAX_NAMESPACES);
    void *dst = (char *)ns + ne->offset;
    if (ne->type == CD_CONF_BOOL)
        *(int8_t *)dst = *(bool *)cfield(&scratch, g) ? 1 : 0;
    else
        *(int64_t *)dst = *(const uint32_t *)cfield(&scratch, g);
    return 0;
}

/* Set any key: a table entry or a namespace key. */
static int set_key(conduit_options *opt, const char *key, const char *value,
                   const char *origin, char *err, size_t errlen)
{
    const cd_conf_entry *e = cd_conf_find(key);
    if (e != NULL)
        return cd_conf_set(opt, e, value, origin, err, errlen);
    char name[64];
    const ns_entry *ne = ns_parse_key(key, name, sizeof(name));
    if (ne == NULL)
        return fail(err, errlen, origin, "unknown option");
    return ns_set(opt, ne, name, value, origin, err, errlen);
}

static bool is_ns_key(const char *key)
{
    char name[64];
    return ns_parse_key(key, name, sizeof(name)) != NULL;
}

CONDUIT_API void conduit_options_init(conduit_options *opt)
{
    memset(opt, 0, sizeof(*opt));
    for (size_t i = 0; i < CD_ARRAY_LEN(conf_table); i++) {
        const cd_conf_entry *e = &conf_table[i];
        if (e->def == NULL)
            continue;
        /* Defaults are compile-time constants that the table's own unit
         * test parses; a failure here is a table bug, caught by that test. */
        (void)cd_conf_set(opt, e, e->def, e->key, NULL, 0);
    }
}

int cd_conf_copy(conduit_options *dst, const conduit_options *src)
{
    *dst = *src;
    for (size_t i = 0; i < CD_ARRAY_LEN(conf_table); i++) {
        const cd_conf_entry *e = &conf_table[i];
        if (e->type == CD_CONF_STR || e->type == CD_CONF_ENUM) {
            *(char **)field(dst, e) = NULL;
        } else if (e->type == CD_CONF_LIST) {
            char **items = field(dst, e);
            memset(items, 0, sizeof(char *) * CONDUIT_MAX_LISTEN);
            *(size_t *)(void *)(items + CONDUIT_MAX_LISTEN) = 0;
        }
    }
    for (size_t i = 0; i < CD_ARRAY_LEN(conf_table); i++) {
        const cd_conf_entry *e = &conf_table[i];
        const void *from = cfield(src, e);
        if (e->type == CD_CONF_STR || e->type == CD_CONF_ENUM) {
            const char *v = *(char *const *)from;
            if (v && (*(char **)field(dst, e) = strdup(v)) == NULL)
                goto fail;
        } else if (e->type == CD_CONF_LIST) {
            char *const *items = from;
            size_t n = *(const size_t *)(const void *)(items + CONDUIT_MAX_LISTEN);
            char **out = field(dst, e);
            for (size_t k = 0; k < n; k++) {
                if ((out[k] = strdup(items[k])) == NULL)
                    goto fail;
                *(size_t *)(void *)(out + CONDUIT_MAX_LISTEN) = k + 1;
            }
        }
    }
    return 0;
fail:
    conduit_options_fini(dst);
    return CONDUIT_ENOMEM;
}

CONDUIT_API void conduit_options_fini(conduit_options *opt)
{
    for (size_t i = 0; i < CD_ARRAY_LEN(conf_table); i++) {
        const cd_conf_entry *e = &conf_table[i];
        if (e->type == CD_CONF_STR || e->type == CD_CONF_ENUM) {
            char **s = field(opt, e);
            free(*s);
            *s = NULL;
        } else if (e->type == CD_CONF_LIST) {
            cd_conf_list_clear(opt, e);
        }
    }
}

CONDUIT_API int conduit_options_set(conduit_options *opt, const char *key,
                                    const char *value, char *err,
                                    size_t errlen)
{
    return set_key(opt, key, value, key, err, errlen);
}

/* A list given whole (environment, a YAML sequence or scalar) replaces the
 * default instead of adding to it; flags then append to that. */
static int set_list_whole(conduit_options *opt, const cd_conf_entry *e,
                          const char *csv, const char *origin, char *err,
                          size_t errlen)
{
    cd_conf_list_clear(opt, e);
    char *copy = strdup(csv);
    if (copy == NULL)
        return fail(err, errlen, origin, "out of memory");
    int rc = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok && rc == 0;
         tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        rc = append_list(opt, e, tok, origin, err, errlen);
    }
    free(copy);
    return rc;
}

CONDUIT_API int conduit_options_load_env(conduit_options *opt,
                                         char *const *envp, char *err,
                                         size_t errlen)
{
    for (; envp && *envp; envp++) {
        const char *kv = *envp;
        if (strncmp(kv, "CONDUIT_", 8) != 0)
            continue;
        const char *eq = strchr(kv, '=');
        if (eq == NULL)
            continue;
        char name[96], key[96];
        size_t n = (size_t)(eq - kv);
        if (n >= sizeof(name))
            return fail(err, errlen, "environment", "variable name too long");
        memcpy(name, kv, n);
        name[n] = '\0';
        size_t k = 0;
        for (size_t i = 8; i <= n; i++)
            key[k++] = (char)tolower((unsigned char)name[i]);
        const cd_conf_entry *e = cd_conf_find(key);
        if (e == NULL && is_ns_key(key)) {
            int rc = set_key(opt, key, eq + 1, name, err, errlen);
            if (rc != 0)
                return rc;
            continue;
        }
        if (e == NULL)
            continue;
        int rc = e->type == CD_CONF_LIST
                     ? set_list_whole(opt, e, eq + 1, name, err, errlen)
                     : cd_conf_set(opt, e, eq + 1, name, err, errlen);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* YAML: a mapping whose nested mappings are flattened with '_' (so
 * "ws: {max_message_size: 1m}" is the key ws_max_message_size); a list
 * option takes a sequence or a comma-separated scalar. */
typedef struct yaml_walk {
    conduit_options *opt;
    const char *path;
    char *err;
    size_t errlen;
    yaml_parser_t parser;
} yaml_walk;

static int yaml_fail(yaml_walk *y, size_t line, const char *key,
                     const char *msg)
{
    char origin[256];
    snprintf(origin, sizeof(origin), "%s:%zu", y->path, line + 1);
    return key ? fail(y->err, y->errlen, origin, "%s: %s", key, msg)
               : fail(y->err, y->errlen, origin, "%s", msg);
}

static int yaml_next(yaml_walk *y, yaml_event_t *ev)
{
    if (!yaml_parser_parse(&y->parser, ev)) {
        char msg[160];
        snprintf(msg, sizeof(msg), "invalid YAML: %s",
                 y->parser.problem ? y->parser.problem : "parse error");
        return yaml_fail(y, y->parser.problem_mark.line, NULL, msg);
    }
    return 0;
}

static int yaml_scalar_value(yaml_walk *y, const cd_conf_entry *e,
                             const char *key, const char *value, size_t line)
{
    char origin[320];
    snprintf(origin, sizeof(origin), "%s:%zu: %s", y->path, line + 1, key);
    if (e->type == CD_CONF_LIST)
        return set_list_whole(y->opt, e, value, origin, y->err, y->errlen);
    return cd_conf_set(y->opt, e, value, origin, y->err, y->errlen);
}

static int yaml_sequence(yaml_walk *y, const cd_conf_entry *e, const char *key)
{
    cd_conf_list_clear(y->opt, e);
    for (;;) {
        yaml_event_t ev;
        int rc = yaml_next(y, &ev);
        if (rc != 0)
            return rc;
        if (ev.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&ev);
            return 0;
        }
        size_t line = ev.start_mark.line;
        if (ev.type != YAML_SCALAR_EVENT) {
            yaml_event_delete(&ev);
            return yaml_fail(y, line, key, "expected a list of scalars");
        }
        char origin[320];
        snprintf(origin, sizeof(origin), "%s:%zu: %s", y->path, line + 1, key);
        rc = append_list(y->opt, e, (const char *)ev.data.scalar.value, origin,
                         y->err, y->errlen);
        yaml_event_delete(&ev);
        if (rc != 0)
            return rc;
    }
}

static int yaml_mapping(yaml_walk *y, const char *prefix)
{
    for (;;) {
        yaml_event_t kev;
        int rc = yaml_next(y, &kev);
        if (rc != 0)
            return rc;
        if (kev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&kev);
            return 0;
        }
        size_t line = kev.start_mark.line;
        if (kev.type != YAML_SCALAR_EVENT) {
            yaml_event_delete(&kev);
            return yaml_fail(y, line, NULL, "expected a key");
        }
        char key[160];
        int n = snprintf(key, sizeof(key), "%s%s%s", prefix, prefix[0] ? "_" : "",
                         (const char *)kev.data.scalar.value);
        yaml_event_delete(&kev);
        if (n < 0 || (size_t)n >= sizeof(key))
            return yaml_fail(y, line, NULL, "key too long");

        yaml_event_t vev;
        if ((rc = yaml_next(y, &vev)) != 0)
            return rc;
        const cd_conf_entry *e = cd_conf_find(key);
        if (vev.type == YAML_MAPPING_START_EVENT) {
            yaml_event_delete(&vev);
            rc = yaml_mapping(y, key);
        } else if (e == NULL && vev.type == YAML_SCALAR_EVENT && is_ns_key(key)) {
            char origin[320];
            snprintf(origin, sizeof(origin), "%s:%zu: %s", y->path, line + 1, key);
            rc = set_key(y->opt, key, (const char *)vev.data.scalar.value, origin, y->err,
                         y->errlen);
            yaml_event_delete(&vev);
        } else if (e == NULL || (e->flags & CD_CONF_NO_FILE)) {
            yaml_event_delete(&vev);
            rc = yaml_fail(y, line, key, "unknown option");
        } else if (vev.type == YAML_SEQUENCE_START_EVENT && e->type == CD_CONF_LIST) {
            yaml_event_delete(&vev);
            rc = yaml_sequence(y, e, key);
        } else if (vev.type == YAML_SCALAR_EVENT) {
            rc = yaml_scalar_value(y, e, key, (const char *)vev.data.scalar.value,
                                   vev.start_mark.line);
            yaml_event_delete(&vev);
        } else {
            yaml_event_delete(&vev);
            rc = yaml_fail(y, line, key, "expected a single value");
        }
        if (rc != 0)
            return rc;
    }
}

CONDUIT_API int conduit_options_load_file(conduit_options *opt,
                                          const char *path, char *err,
                                          size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return fail(err, errlen, path, "cannot open: %s", strerror(errno));
    yaml_walk y = {.opt = opt, .path = path, .err = err, .errlen = errlen};
    if (!yaml_parser_initialize(&y.parser)) {
        fclose(f);
        return fail(err, errlen, path, "out of memory");
    }
    yaml_parser_set_input_file(&y.parser, f);

    int rc = 0;
    bool seen_root = false;
    for (;;) {
        yaml_event_t ev;
        if ((rc = yaml_next(&y, &ev)) != 0)
            break;
        yaml_event_type_t t = ev.type;
        size_t line = ev.start_mark.line;
        yaml_event_delete(&ev);
        if (t == YAML_STREAM_END_EVENT)
            break;
        if (t == YAML_MAPPING_START_EVENT && !seen_root) {
            seen_root = true;
            if ((rc = yaml_mapping(&y, "")) != 0)
                break;
        } else if (t == YAML_SCALAR_EVENT || t == YAML_SEQUENCE_START_EVENT ||
                   (t == YAML_MAPPING_START_EVENT && seen_root)) {
            rc = yaml_fail(&y, line, NULL, "the file must be one mapping of options");
            break;
        }
    }
    yaml_parser_delete(&y.parser);
    fclose(f);
    if (rc == 0)
        rc = set_string(&opt->config_file, path, path, err, errlen);
    return rc;
}

static void format_value(const conduit_options *opt, const cd_conf_entry *e,
                         char *out, size_t cap)
{
    const void *p = cfield(opt, e);
    switch (e->type) {
    case CD_CONF_STR:
    case CD_CONF_ENUM: {
        const char *s = *(char *const *)p;
        snprintf(out, cap, "%s", s ? s : "");
        break;
    }
    case CD_CONF_LIST: {
        char *const *items = p;
        size_t count = *(const size_t *)(const void *)((const char *)p +
                                                       sizeof(char *) * CONDUIT_MAX_LISTEN);
        size_t len = 0;
        out[0] = '\0';
        for (size_t i = 0; i < count && len < cap; i++)
            len += (size_t)snprintf(out + len, cap - len, "%s%s", i ? "," : "", items[i]);
        break;
    }
    case CD_CONF_BOOL:
        snprintf(out, cap, "%s", *(const bool *)p ? "true" : "false");
        break;
    case CD_CONF_LOG_LEVEL:
        snprintf(out, cap, "%s", cd_log_level_name((cd_log_level) * (const int *)p));
        break;
    case CD_CONF_U32:
    case CD_CONF_SECONDS:
        snprintf(out, cap, "%" PRIu32, *(const uint32_t *)p);
        break;
    case CD_CONF_BYTES:
        snprintf(out, cap, "%" PRIu64, *(const uint64_t *)p);
        break;
    }
}

void cd_conf_print(const conduit_options *opt, FILE *out)
{
    for (size_t i = 0; i < CD_ARRAY_LEN(conf_table); i++) {
        const cd_conf_entry *e = &conf_table[i];
        char v[1024];
        format_value(opt, e, v, sizeof(v));
        if ((e->flags & CD_CONF_SECRET) && v[0] != '\0')
            snprintf(v, sizeof(v), "********");
        fprintf(out, "%s: \"%s\"\n", e->key, v);
    }
    for (size_t i = 0; i < opt->n_ns; i++) {
        const conduit_namespace *ns = &opt->ns[i];
        for (size_t k = 0; k < CD_ARRAY_LEN(ns_table); k++) {
            const void *p = (const char *)ns + ns_table[k].offset;
            if (ns_table[k].type == CD_CONF_BOOL && *(const int8_t *)p >= 0)
                fprintf(out, "ns_%s_%s: \"%s\"\n", ns->name, ns_table[k].option,
                        *(const int8_t *)p ? "true" : "false");
            else if (ns_table[k].type != CD_CONF_BOOL && *(const int64_t *)p >= 0)
                fprintf(out, "ns_%s_%s: \"%lld\"\n", ns->name, ns_table[k].option,
                        (long long)*(const int64_t *)p);
        }
    }
}

static void print_names(const cd_conf_entry *e, char *env, char *flag, size_t cap)
{
    size_t n = strlen(e->key);
    snprintf(env, cap, "CONDUIT_");
    snprintf(flag, cap, "--");
    for (size_t i = 0; i < n && i + 10 < cap; i++) {
        env[8 + i] = (char)toupper((unsigned char)e->key[i]);
        flag[2 + i] = e->key[i] == '_' ? '-' : e->key[i];
        env[9 + i] = '\0';
        flag[3 + i] = '\0';
    }
}

void cd_conf_print_reference(FILE *out)
{
    static const char *const type_names[] = {
        [CD_CONF_STR] = "string", [CD_CONF_LIST] = "list", [CD_CONF_BOOL] = "bool",
        [CD_CONF_U32] = "integer", [CD_CONF_BYTES] = "bytes",
        [CD_CONF_SECONDS] = "seconds", [CD_CONF_LOG_LEVEL] = "level",
        [CD_CONF_ENUM] = "choice",
    };
    fprintf(out, "| file key | environment | flag | type | default | reload | description |\n"
                 "|---|---|---|---|---|---|---|\n");
    for (size_t i = 0; i < CD_ARRAY_LEN(conf_table); i++) {
        const cd_conf_entry *e = &conf_table[i];
        char env[96], flag[96];
        print_names(e, env, flag, sizeof(env));
        fprintf(out, "| %s | `%s` | `%s` | %s | %s%s%s | %s | %s%s%s |\n",
                (e->flags & CD_CONF_NO_FILE) ? "—" : e->key, env, flag,
                type_names[e->type], e->def ? "`" : "", e->def ? e->def : "none",
                e->def ? "`" : "", (e->flags & CD_CONF_RELOAD) ? "yes" : "no",
                e->help, e->choices ? " One of: " : "", e->choices ? e->choices : "");
    }
    fprintf(out, "\n### Namespace options\n\n"
                 "Channels named `NAME:rest` belong to namespace `NAME`. Each option below "
                 "can be set per namespace as file key `ns_NAME_OPTION` (or nested: "
                 "`ns: {NAME: {OPTION: value}}`), variable `CONDUIT_NS_NAME_OPTION`, or "
                 "flag `--ns-NAME-OPTION`; unset, it follows the global option. "
                 "Namespace names are lower case letters, digits, `_` and `-`.\n\n"
                 "| option | global option | what |\n|---|---|---|\n");
    for (size_t i = 0; i < CD_ARRAY_LEN(ns_table); i++)
        fprintf(out, "| %s | `%s` | %s |\n", ns_table[i].option, ns_table[i].global,
                ns_table[i].help);
}

CONDUIT_API int conduit_options_clear(conduit_options *opt, const char *key)
{
    const cd_conf_entry *e = cd_conf_find(key);
    if (e == NULL)
        return CONDUIT_ENOTFOUND;
    if (e->type == CD_CONF_LIST) {
        cd_conf_list_clear(opt, e);
    } else if (e->type == CD_CONF_STR) {
        char **s = field(opt, e);
        free(*s);
        *s = NULL;
    } else {
        return CONDUIT_EINVAL;
    }
    return 0;
}

CONDUIT_API bool conduit_options_is_key(const char *key)
{
    return cd_conf_find(key) != NULL || is_ns_key(key);
}

static int write_with(int fd, void (*fn)(const conduit_options *, FILE *),
                      const conduit_options *opt)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    if (mem == NULL)
        return CONDUIT_ENOMEM;
    fn(opt, mem);
    if (fclose(mem) != 0) {
        free(buf);
        return CONDUIT_ENOMEM;
    }
    int rc = 0;
    for (size_t off = 0; off < len;) {
        ssize_t n = write(fd, buf + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = CONDUIT_EIO;
            break;
        }
        off += (size_t)n;
    }
    free(buf);
    return rc;
}

static void print_reference(const conduit_options *opt, FILE *out)
{
    (void)opt;
    cd_conf_print_reference(out);
}

CONDUIT_API int conduit_options_write(const conduit_options *opt, int fd)
{
    return write_with(fd, cd_conf_print, opt);
}

CONDUIT_API int conduit_options_write_reference(int fd)
{
    return write_with(fd, print_reference, NULL);
}
