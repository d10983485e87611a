/* conduit.h - the embedding API of libconduit.
 *
 * One public header with opaque handles.  Every function returns 0 or a
 * negative CONDUIT_E* code (see conduit_strerror) unless it says otherwise.
 * Ownership and threading are stated on each declaration and in
 * docs/api.md.  This header includes only standard headers. */
#ifndef CONDUIT_H
#define CONDUIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define CONDUIT_API __attribute__((visibility("default")))
#else
#define CONDUIT_API
#endif

/* The one error vocabulary: name, value, message. */
#define CONDUIT_ERRORS(X)                                        \
    X(ENOMEM, -1, "out of memory")                               \
    X(EINVAL, -2, "invalid argument")                            \
    X(ECLOSED, -3, "connection is closed")                       \
    X(ELIMIT, -4, "limit exceeded")                              \
    X(EPROTO, -5, "protocol violation")                          \
    X(EIO, -6, "input/output error")                             \
    X(ESTATE, -7, "not allowed in the current state")            \
    X(ENOTFOUND, -8, "not found")                                \
    X(EADDR, -9, "cannot listen on the address")                 \
    X(EDENIED, -10, "permission denied")

enum conduit_err {
    CONDUIT_OK = 0,
#define CONDUIT_ERR_ENUM_(name, code, msg) CONDUIT_##name = (code),
    CONDUIT_ERRORS(CONDUIT_ERR_ENUM_)
#undef CONDUIT_ERR_ENUM_
};

/* A static, human-readable message for any value of enum conduit_err. */
CONDUIT_API const char *conduit_strerror(int err);
/* The symbolic name ("CONDUIT_ENOMEM"), or "CONDUIT_UNKNOWN". */
CONDUIT_API const char *conduit_err_name(int err);

/* The library version string, e.g. "0.1.0". */
CONDUIT_API const char *conduit_version(void);


/* ------------------------------------------------------------------ */
/* Options.  One public struct, filled with defaults by
 * conduit_options_init() and released by conduit_options_fini().  Fields
 * are only ever appended.  Every field also has a configuration key (the
 * field name without its unit suffix), a CONDUIT_* environment variable and
 * a --flag; see docs/configuration.md, generated from the same table.
 * Strings are owned by the options (set them with conduit_options_set). */

#define CONDUIT_MAX_LISTEN 16
#define CONDUIT_MAX_NAMESPACES 32

/* Per-namespace overrides for channels named "<name>:...".  -1 in a field
 * means "as the global option". */
typedef struct conduit_namespace {
    char name[64];                     /* lower case */
    int8_t presence;                   /* member lists, online/offline */
    int8_t join_leave;                 /* join/leave events */
    int8_t client_publish;             /* clients may publish */
    int8_t typing;                     /* typing events */
    int64_t max_subscribers;           /* per channel; 0: unlimited */
    int8_t anonymous;                  /* anonymous connections may subscribe/publish */
    int8_t publish_requires_subscribe; /* only subscribers may publish */
} conduit_namespace;

typedef struct conduit_options {
    char *listen[CONDUIT_MAX_LISTEN];  /* "HOST:PORT", "[V6]:PORT"; port 0: ephemeral, shared by workers */
    size_t n_listen;
    uint32_t workers;                  /* worker threads; 0: number of cores */
    char *config_file;                 /* the file the options were loaded from, or NULL */
    int log_level;                     /* 0 debug, 1 info, 2 warn, 3 error */
    uint32_t handshake_timeout_s;      /* whole HTTP request head + upgrade */
    uint32_t ws_heartbeat_interval_s;  /* server ping period; 0: off */
    uint32_t ws_heartbeat_timeout_s;   /* close when nothing heard for this long */
    uint32_t ws_idle_timeout_s;        /* close when no data message for this long; 0: off */
    uint64_t ws_max_message_size;      /* bytes, native endpoints; 1009 past it */
    uint32_t ws_max_fragments;         /* frames per message */
    bool ws_compression;               /* negotiate permessage-deflate */
    uint32_t ws_compression_window_bits; /* 9..15, server window cap */
    uint32_t ws_compression_mem_level; /* 1..9, deflate memory per connection */
    uint32_t ws_compression_min_size;  /* smaller messages are sent uncompressed */
    bool echo_enabled;                 /* serve the raw echo endpoint */
    char *echo_path;
    uint64_t echo_max_message_size;    /* bytes */
    uint32_t close_timeout_s;          /* wait for the peer's close / FIN */
    char *ws_path;                     /* native protocol endpoint ("/ws") */
    char *auth_mode;                   /* "optional", "required", "insecure" */
    uint32_t ws_max_subscriptions_per_connection;
    uint32_t ws_max_subscribers_per_channel;  /* 0: unlimited */
    bool ws_allow_broadcast_all;       /* publish without a channel reaches everyone */
    bool ws_presence;                  /* defaults for every namespace: */
    bool ws_join_leave_events;
    bool ws_client_publish;
    bool ws_typing;
    uint32_t ws_typing_rate_limit;     /* typing events per window per connection */
    uint32_t ws_typing_rate_window_ms;
    uint64_t ws_max_queue_bytes;       /* send queue cap per connection */
    uint32_t ws_max_queue_messages;
    conduit_namespace ns[CONDUIT_MAX_NAMESPACES];
    size_t n_ns;
    /* Authentication (docs/security.md). */
    char *jwt_secret;                  /* HMAC secret (HS256/384/512) */
    char *jwt_key_file;                /* PEM public key or JWKS file */
    char *jwt_issuer;                  /* expected "iss"; NULL: unchecked */
    char *jwt_audience;                /* expected in "aud"; NULL: unchecked */
    uint32_t jwt_leeway_s;             /* clock skew allowed on exp/nbf */
    char *jwt_cookie_name;             /* cookie that may carry the token */
    uint32_t auth_timeout_s;           /* required mode: auth message deadline */
    uint32_t token_expiring_warning_s; /* TokenExpiring this long before exp */
    char *allowed_origins;             /* comma-separated; NULL: any */
    bool ws_allow_anonymous;           /* namespace default */
    bool ws_publish_requires_subscribe;/* namespace default */
    /* Abuse protection. */
    uint32_t ws_max_connections;       /* WebSocket connections; 0: unlimited */
    uint32_t ws_max_connections_per_user;
    uint32_t ws_max_connections_per_ip;
    uint32_t ws_max_pending_handshakes_per_ip;
    uint32_t ws_connection_rate_limit; /* new connections per IP per window; 0: off */
    uint32_t ws_connection_rate_window_ms;
    uint64_t ws_shed_memory;           /* RSS ceiling for new upgrades; 0: off */
    uint32_t ws_message_rate_limit;    /* frames per window per connection; 0: off */
    uint32_t ws_rate_window_ms;
    char *ws_rate_limit_policy;        /* "close" or "throttle" */
    char *trusted_proxies;             /* CIDRs whose forwarding headers count */
    char *trusted_proxy_header;        /* "x-forwarded-for" or "forwarded" */
    bool proxy_protocol;               /* trusted peers send a PROXY header */
} conduit_options;

/* Fill every field with its default.  Thread: any. */
CONDUIT_API void conduit_options_init(conduit_options *opt);
/* Free the strings the options own; the struct may be re-initialised. */
CONDUIT_API void conduit_options_fini(conduit_options *opt);

/* Set one option by configuration key ("ws_max_message_size") from its
 * text form.  A list option (listen) appends.  On failure returns
 * CONDUIT_EINVAL and writes a one-line message naming the key into err. */
CONDUIT_API int conduit_options_set(conduit_options *opt, const char *key,
                                    const char *value, char *err,
                                    size_t errlen);
/* Load a YAML configuration file (see docs/configuration.md). */
CONDUIT_API int conduit_options_load_file(conduit_options *opt,
                                          const char *path, char *err,
                                          size_t errlen);
/* Apply every CONDUIT_* variable of envp that names an option.  Variables
 * that name no option are skipped (orchestrators set CONDUIT_* variables of
 * their own); see conduit_options_is_key to warn about them.  A list option
 * given in the environment is comma-separated and replaces the default. */
CONDUIT_API int conduit_options_load_env(conduit_options *opt,
                                         char *const *envp, char *err,
                                         size_t errlen);

/* Empty a list option or unset a string option (the first --listen flag
 * replaces the default list instead of adding to it). */
CONDUIT_API int conduit_options_clear(conduit_options *opt, const char *key);
/* True when `key` names an option. */
CONDUIT_API bool conduit_options_is_key(const char *key);
/* Write the effective options as YAML to fd, secrets masked. */
CONDUIT_API int conduit_options_write(const conduit_options *opt, int fd);
/* Write the Markdown reference of every option (docs/configuration.md). */
CONDUIT_API int conduit_options_write_reference(int fd);

/* ------------------------------------------------------------------ */
/* Server. */

typedef struct conduit_server conduit_server;
typedef struct conduit_conn conduit_conn;

/* An application message: a text message whose "type" is not one of the
 * protocol's own.  Every pointer borrows the received message and is valid
 * only during the callback; the *_len fields are byte counts. */
typedef struct conduit_msg {
    const char *type;                  /* as the client spelled it */
    size_t type_len;
    const char *id;                    /* raw JSON of "id", or NULL */
    size_t id_len;
    const char *data;                  /* raw JSON of "data", or NULL */
    size_t data_len;
    const char *json;                  /* the whole message */
    size_t json_len;
} conduit_msg;

/* What a permission check is about. */
typedef enum conduit_action {
    CONDUIT_ACTION_SUBSCRIBE = 0,      /* also presence and typing */
    CONDUIT_ACTION_PUBLISH = 1,
} conduit_action;

/* Typed callbacks; any may be NULL.  They run on the worker thread that
 * owns the connection, and may call every conduit_conn_* function on that
 * connection, conduit_publish and conduit_send. */
typedef struct conduit_callbacks {
    /* A native-protocol connection is open (after its initial room). */
    void (*on_open)(conduit_conn *c, void *user);
    /* An application message.  Return 0 when handled (reply with
     * conduit_conn_reply), or CONDUIT_ENOTFOUND to let the server answer
     * UnknownType. */
    int (*on_message)(conduit_conn *c, const conduit_msg *m, void *user);
    /* The connection is gone; `code` is the close code (1006 when the peer
     * vanished).  The handle is invalid after this returns. */
    void (*on_close)(conduit_conn *c, int code, void *user);
    void *user;
    /* Authentication hook (docs/security.md).  Called with every token a
     * client presents, after the built-in JWT check when JWT keys are
     * configured (jwt_user is then the verified "sub") or instead of it
     * (jwt_user NULL).  Return 0 to accept, writing the user id into
     * user[0..user_cap) (an empty string keeps jwt_user), or any other
     * value to refuse (401 in the handshake, Unauthorized in band).
     * Runs on a worker thread; must be thread-safe and must not block. */
    int (*authenticate)(const char *token, size_t token_len, const char *jwt_user,
                        char *user, size_t user_cap, void *ud);
    /* Permission hook: called after the built-in rules allowed `action`
     * on channel[0..len) for `user`; return 0 to allow, anything else to
     * deny (Forbidden).  Runs on the connection's worker thread. */
    int (*check_permission)(conduit_conn *c, const char *user, const char *channel,
                            size_t len, conduit_action action, void *ud);
} conduit_callbacks;

/* Create a server from options (copied).  Nothing is bound yet.
 * The caller owns *out and releases it with conduit_server_destroy. */
CONDUIT_API int conduit_server_create(conduit_server **out,
                                      const conduit_options *opt);
/* Install callbacks (copied) before conduit_server_start.  Thread: the
 * creating thread.  Returns CONDUIT_ESTATE once started. */
CONDUIT_API int conduit_server_set_callbacks(conduit_server *srv,
                                             const conduit_callbacks *cb);
/* Bind every listen address and start the workers; returns once the server
 * accepts connections.  Thread: the thread that created the server. */
CONDUIT_API int conduit_server_start(conduit_server *srv);
/* Stop accepting, close every connection with 1001 and join the workers.
 * Idempotent.  Thread: the creating thread (never a worker callback). */
CONDUIT_API int conduit_server_stop(conduit_server *srv);
/* Stop if needed and free everything. */
CONDUIT_API void conduit_server_destroy(conduit_server *srv);
/* Re-read the JWT keys (jwt_key_file) and JWT options from `opt` (only
 * the jwt_* fields are used) and give them to every worker; open
 * connections keep their identity.  On failure the old keys stay and err
 * gets one line.  Thread: the creating thread (SIGHUP in the binary). */
CONDUIT_API int conduit_server_reload_auth(conduit_server *srv,
                                           const conduit_options *opt,
                                           char *err, size_t errlen);
/* The bound address of listen entry i ("127.0.0.1:43117"), after start.
 * Returns the length written, or a negative error. */
CONDUIT_API int conduit_server_listen_address(const conduit_server *srv,
                                              size_t i, char *buf,
                                              size_t len);

/* ------------------------------------------------------------------ */
/* Messaging. */

/* Publish `data` (one JSON value, copied) to `channel` as the server:
 * subscribers get {"type":"message","channel":...,"data":...,"offset":...}.
 * Thread: any, once started.  Returns 0, CONDUIT_EINVAL (bad channel name
 * or data that is not JSON) or CONDUIT_ENOMEM.  *offset_out (may be NULL)
 * gets the message's offset, 0 when nobody was subscribed. */
CONDUIT_API int conduit_publish(conduit_server *srv, const char *channel,
                                const char *data, size_t len,
                                uint64_t *offset_out);
/* Send one text message (copied) to the connection with id `conn_id`.
 * Thread: any, once started.  The message is queued on the connection's
 * worker; returns 0 even if the connection has gone meanwhile, or
 * CONDUIT_ENOTFOUND for an id no worker could have issued. */
CONDUIT_API int conduit_send(conduit_server *srv, uint64_t conn_id,
                             const char *text, size_t len);

/* The rest belongs to the connection's worker thread (callbacks). */

/* Queue one text message (copied).  Returns 0, CONDUIT_ECLOSED when the
 * connection is closing, or CONDUIT_ELIMIT when its send queue is over
 * its limit (it is then closed with 4008). */
CONDUIT_API int conduit_conn_send_text(conduit_conn *c, const char *text,
                                       size_t len);
/* Answer an application message: {"type":"<type>_response","id":<id>,
 * "data":<data>}.  `data` is one JSON value (copied) or NULL. */
CONDUIT_API int conduit_conn_reply(conduit_conn *c, const conduit_msg *m,
                                   const char *data, size_t len);
/* Start a close with `code` (1000, 1008, 3000-4999 ...). */
CONDUIT_API void conduit_conn_close(conduit_conn *c, int code,
                                    const char *reason);
/* The connection's id (unique within the server), and its user. */
CONDUIT_API uint64_t conduit_conn_id(const conduit_conn *c);
CONDUIT_API const char *conduit_conn_user_id(const conduit_conn *c);
/* Per-connection application data; the library never touches it. */
CONDUIT_API void conduit_conn_set_user(conduit_conn *c, void *user);
CONDUIT_API void *conduit_conn_user(const conduit_conn *c);

#ifdef __cplusplus
}
#endif

#endif
