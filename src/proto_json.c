/* proto_json.c - the native protocol, JSON encoding (docs/protocol.md).
 *
 * One pass over each message picks out the envelope fields without
 * building a tree (json.c); "data" is forwarded as the bytes that came in.
 * Every request gets exactly one reply: "<type>_response" with the
 * request's "id" (same JSON type), or an "error".  Nothing here closes a
 * connection for a bad message: the client gets a stable error code and
 * the connection stays. */
#include "proto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "conn.h"
#include "hub.h"
#include "json.h"
#include "ws.h"

#define TYPE_MAX 32
#define MAX_DEPTH 64

enum {
    F_TYPE, F_ID, F_CHANNEL, F_CHANNELS, F_ROOM, F_DATA, F_EXCLUDE_SELF,
    F_VERSION, F_TOKEN, F_CLIENT,
    N_FIELDS
};

static const char *const field_names[N_FIELDS] = {
    [F_TYPE] = "type", [F_ID] = "id", [F_CHANNEL] = "channel",
    [F_CHANNELS] = "channels", [F_ROOM] = "room", [F_DATA] = "data",
    [F_EXCLUDE_SELF] = "exclude_self", [F_VERSION] = "version",
    [F_TOKEN] = "token", [F_CLIENT] = "client",
};

typedef struct req {
    cd_conn *c;
    conduit_server *srv;
    cd_json_value f[N_FIELDS];
    const char *json;
    size_t json_len;
    char type[TYPE_MAX + 1];             /* lower case */
    char type_orig[TYPE_MAX + 1];        /* decoded, as the client spelled it */
    size_t type_len;
} req;

/* ------------------------------------------------------------------ */
/* Framing and replies. */

cd_frame *cd_proto_text_frame(const void *text, size_t len)
{
    uint8_t hdr[CD_WS_MAX_HEADER];
    size_t hlen = cd_ws_header_write(hdr, CD_WS_OP_TEXT, true, false, len);
    cd_frame *f = cd_frame_alloc(hlen + len);
    if (f == NULL)
        return NULL;
    memcpy(f->data, hdr, hlen);
    memcpy(f->data + hlen, text, len);
    f->len = (uint32_t)(hlen + len);
    return f;
}

static cd_frame *finish_frame(cd_jw *w, cd_bytes *b)
{
    cd_frame *f = cd_jw_finish(w) == 0 ? cd_proto_text_frame(b->data, b->len) : NULL;
    cd_bytes_free(b);
    return f;
}

static void send_frame(req *r, cd_frame *f)
{
    if (f == NULL) {
        cd_conn_close(r->c, CD_WS_CLOSE_INTERNAL, "out of memory");
        return;
    }
    cd_conn_send_frame(r->c, f);
}

cd_frame *cd_proto_json_warning_frame(const char *code, const char *message,
                                      const char *num_key, uint64_t num)
{
    cd_bytes b = CD_BYTES_INIT;
    cd_jw w;
    cd_jw_init(&w, &b);
    cd_jw_object_begin(&w);
    cd_jw_key(&w, "type");
    cd_jw_cstr(&w, "warning");
    cd_jw_key(&w, "code");
    cd_jw_cstr(&w, code);
    cd_jw_key(&w, "message");
    cd_jw_cstr(&w, message);
    if (num_key) {
        cd_jw_key(&w, num_key);
        cd_jw_uint(&w, num);
    }
    cd_jw_object_end(&w);
    return finish_frame(&w, &b);
}

cd_frame *cd_proto_json_error_frame(const char *id, size_t id_len,
                                    const char *code, const char *message)
{
    cd_bytes b = CD_BYTES_INIT;
    cd_jw w;
    cd_jw_init(&w, &b);
    cd_jw_object_begin(&w);
    cd_jw_key(&w, "type");
    cd_jw_cstr(&w, "error");
    if (id) {
        cd_jw_key(&w, "id");
        cd_jw_raw(&w, id, id_len);
    }
    cd_jw_key(&w, "error");
    cd_jw_object_begin(&w);
    cd_jw_key(&w, "code");
    cd_jw_cstr(&w, code);
    cd_jw_key(&w, "message");
    cd_jw_cstr(&w, message);
    cd_jw_object_end(&w);
    cd_jw_object_end(&w);
    return finish_frame(&w, &b);
}

static void send_error(req *r, const char *code, const char *message)
{
    const cd_json_value *id = &r->f[F_ID];
    bool has_id = id->type == CD_JSON_STRING || id->type == CD_JSON_NUMBER;
    send_frame(r, cd_proto_json_error_frame(has_id ? id->raw : NULL, has_id ? id->len : 0,
                                            code, message));
}

/* Start "{"type":"<type>_response","id":<id>" for the request. */
static void reply_begin(req *r, cd_jw *w, cd_bytes *b)
{
    char type[TYPE_MAX + 16];
    snprintf(type, sizeof(type), "%s_response", r->type);
    cd_jw_init(w, b);
    cd_jw_object_begin(w);
    cd_jw_key(w, "type");
    cd_jw_cstr(w, type);
    if (r->f[F_ID].type != CD_JSON_NONE) {
        cd_jw_key(w, "id");
        cd_jw_value(w, &r->f[F_ID]);
    }
}

static void reply_end(req *r, cd_jw *w, cd_bytes *b)
{
    cd_jw_object_end(w);
    send_frame(r, finish_frame(w, b));
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ------------------------------------------------------------------ */
/* Channel arguments. */

#define BAD_CHANNEL_NAME \
    "channel names are 1-255 characters of A-Z a-z 0-9 _-:.@,=/+#!$*~"

/* The protocol's answer to a failed cd_hub_subscribe. */
static const char *subscribe_error_code(int rc)
{
    return rc == CONDUIT_ELIMIT    ? "SubscriptionLimitExceeded"
           : rc == CONDUIT_EDENIED ? "ChannelFull"
                                   : "Internal";
}

typedef struct names {
    size_t n;
    char (*v)[CD_CHANNEL_MAX_LEN + 1];
    size_t *len;
} names;

static void names_free(names *ns)
{
    free(ns->v);
    free(ns->len);
}

static int add_name(req *r, names *ns, const cd_json_value *v)
{
    size_t len = 0;
    if (v->type != CD_JSON_STRING ||
        cd_json_name(v, ns->v[ns->n], sizeof(ns->v[0]), &len) != 0 ||
        !cd_hub_channel_name_valid(ns->v[ns->n], len)) {
        send_error(r, "BadRequest", BAD_CHANNEL_NAME);
        return -1;
    }
    for (size_t i = 0; i < ns->n; i++)
        if (ns->len[i] == len && memcmp(ns->v[i], ns->v[ns->n], len) == 0)
            return 0; /* the same channel twice counts once */
    ns->len[ns->n++] = len;
    return 0;
}

/* Collect the channels named by "channels", "channel" or "room".  Returns
 * the count (0: none given), or -1 after replying with an error. */
static int collect_names(req *r, names *ns)
{
    memset(ns, 0, sizeof(*ns));
    const cd_json_value *arr = &r->f[F_CHANNELS];
    size_t want = 0;
    if (arr->type == CD_JSON_ARRAY) {
        size_t pos = 0;
        cd_json_value e;
        while (cd_json_array_next(arr, &pos, &e))
            want++;
    } else if (arr->type != CD_JSON_NONE) {
        send_error(r, "BadRequest", "\"channels\" must be an array of strings");
        return -1;
    }
    want += r->f[F_CHANNEL].type != CD_JSON_NONE;
    want += r->f[F_ROOM].type != CD_JSON_NONE;
    if (want == 0)
        return 0;
    if (want > 1024) {
        send_error(r, "BadRequest", "at most 1024 channels per request");
        return -1;
    }
    ns->v = malloc(want * sizeof(*ns->v));
    ns->len = malloc(want * sizeof(*ns->len));
    if (ns->v == NULL || ns->len == NULL) {
        names_free(ns);
        send_error(r, "Internal", "out of memory");
        return -1;
    }
    if (arr->type == CD_JSON_ARRAY) {
        size_t pos = 0;
        cd_json_value e;
        while (cd_json_array_next(arr, &pos, &e))
            if (add_name(r, ns, &e) != 0)
                goto fail;
    }
    if (r->f[F_CHANNEL].type != CD_JSON_NONE && add_name(r, ns, &r->f[F_CHANNEL]) != 0)
        goto fail;
    if (r->f[F_ROOM].type != CD_JSON_NONE && add_name(r, ns, &r->f[F_ROOM]) != 0)
        goto fail;
    return (int)ns->n;
fail:
    names_free(ns);
    return -1;
}

/* Exactly one channel, for presence and typing: its name goes to out and
 * its namespace's options are returned, or NULL after an error reply. */
static const cd_ns_options *one_name(req *r, char *out, size_t *len)
{
    const cd_json_value *v = r->f[F_CHANNEL].type != CD_JSON_NONE ? &r->f[F_CHANNEL]
                                                                   : &r->f[F_ROOM];
    if (v->type == CD_JSON_NONE) {
        send_error(r, "BadRequest", "\"channel\" is required");
        return NULL;
    }
    if (v->type != CD_JSON_STRING || cd_json_name(v, out, CD_CHANNEL_MAX_LEN + 1, len) != 0 ||
        !cd_hub_channel_name_valid(out, *len)) {
        send_error(r, "BadRequest", BAD_CHANNEL_NAME);
        return NULL;
    }
    return cd_hub_ns(r->srv->hub, out, *len);
}

/* At least one channel, for subscribe and unsubscribe.  Returns 0, or -1
 * after replying with an error. */
static int required_names(req *r, names *ns)
{
    int n = collect_names(r, ns);
    if (n == 0)
        send_error(r, "BadRequest", "name a \"channel\", \"channels\" or \"room\"");
    return n > 0 ? 0 : -1;
}

static void write_names(cd_jw *w, const names *ns)
{
    cd_jw_array_begin(w);
    for (size_t i = 0; i < ns->n; i++)
        cd_jw_string(w, ns->v[i], ns->len[i]);
    cd_jw_array_end(w);
}

/* ------------------------------------------------------------------ */
/* Handlers. */

/* Authenticate with the request's "token"; false after an error reply. */
static bool authenticate(req *r)
{
    const cd_json_value *t = &r->f[F_TOKEN];
    if (t->type != CD_JSON_STRING) {
        send_error(r, "BadRequest", "\"token\" (a string) is required");
        return false;
    }
    char *token = malloc(t->len + 1);
    size_t len = 0;
    if (token == NULL || cd_json_name(t, token, t->len + 1, &len) != 0) {
        free(token);
        send_error(r, "BadRequest", "\"token\" is not a valid string");
        return false;
    }
    const char *code = NULL, *msg = NULL;
    int rc = cd_conn_authenticate(r->c, token, len, &code, &msg);
    free(token);
    if (rc != 0 && code)
        send_error(r, code, msg);
    return rc == 0;
}

static void h_auth(req *r)
{
    if (!authenticate(r))
        return;
    cd_bytes b = CD_BYTES_INIT;
    cd_jw w;
    reply_begin(r, &w, &b);
    cd_jw_key(&w, "user");
    cd_jw_cstr(&w, cd_conn_user(r->c));
    cd_jw_key(&w, "expires_at");
    int64_t exp = cd_conn_token_exp(r->c);
    if (exp > 0)
        cd_jw_uint(&w, (uint64_t)exp);
    else
        cd_jw_null(&w);
    reply_end(r, &w, &b);
}

static void h_hello(req *r)
{
    const cd_json_value *v = &r->f[F_VERSION];
    if (v->type != CD_JSON_NONE && !cd_json_str_eq(v, "1")) {
        send_error(r, "UnsupportedVersion", "this server speaks protocol version \"1\"");
        return;
    }
    if (r->f[F_TOKEN].type != CD_JSON_NONE && !authenticate(r))
        return;
    cd_conn_proto(r->c)->has_hello = true;
    const conduit_options *o = &r->srv->opt;
    char session[40];
    snprintf(session, sizeof(session), "%016llx", (unsigned long long)cd_conn_id(r->c));
    cd_bytes b = CD_BYTES_INIT;
    cd_jw w;
    reply_begin(r, &w, &b);
    cd_jw_key(&w, "session");
    cd_jw_cstr(&w, session);
    cd_jw_key(&w, "user");
    cd_jw_cstr(&w, cd_conn_user(r->c));
    cd_jw_key(&w, "protocol");
    cd_jw_cstr(&w, CD_PROTO_JSON);
    cd_jw_key(&w, "version");
    cd_jw_cstr(&w, "1");
    cd_jw_key(&w, "heartbeat_ms");
    cd_jw_uint(&w, (uint64_t)o->ws_heartbeat_interval_s * 1000u);
    cd_jw_key(&w, "limits");
    cd_jw_object_begin(&w);
    cd_jw_key(&w, "max_message_size");
    cd_jw_uint(&w, o->ws_max_message_size);
    cd_jw_key(&w, "max_subscriptions");
    cd_jw_uint(&w, o->ws_max_subscriptions_per_connection);
    cd_jw_key(&w, "typing_rate_limit");
    cd_jw_uint(&w, o->ws_typing_rate_limit);
    cd_jw_key(&w, "typing_rate_window_ms");
    cd_jw_uint(&w, o->ws_typing_rate_window_ms);
    cd_jw_object_end(&w);
    reply_end(r, &w, &b);
}

static void h_ping(req *r)
{
    cd_bytes b = CD_BYTES_INIT;
    cd_jw w;
    cd_jw_init(&w, &b);
    cd_jw_object_begin(&w);
    cd_jw_key(&w, "type");
    cd_jw_cstr(&w, "pong");
    if (r->f[F_ID].type != CD_JSON_NONE) {
        cd_jw_key(&w, "id");
        cd_jw_value(&w, &r->f[F_ID]);
    }
    cd_jw_key(&w, "ts");
    cd_jw_uint(&w, wall_ms());
    reply_end(r, &w, &b);
}

static void h_echo(req *r)
{
    cd_bytes b = CD_BYTES_INIT;
    cd_jw w;
    reply_begin(r, &w, &b);
    cd_jw_key(&w, "data");
    if (r->f[F_DATA].type == CD_JSON_NONE)
        cd_jw_null(&w);
    else
        cd_jw_value(&w, &r->f[F_DATA]);
    reply_end(r, &w, &b);
}

static void h_status(req *r)
{
    cd_bytes b = CD_BYTES_INIT;
    cd_jw w;
    char id[24];
    snprintf(id, sizeof(id), "%016llx", (unsigned long long)cd_conn_id(r->c));
    reply_begin(r, &w, &b);
    cd_jw_key(&w, "connection");
    cd_jw_object_begin(&w);
    cd_jw_key(&w, "id");
    cd_jw_cstr(&w, id);
    cd_jw_key(&w, "user");
    cd_jw_cstr(&w, cd_conn_user(r->c));
    cd_jw_key(&w, "channels");
    cd_jw_array_begin(&w);
    for (const cd_sub *s = cd_hub_member_first(cd_conn_member(r->c)); s;
         s = cd_hub_member_next(s)) {
        size_t len;
        const char *name = cd_hub_sub_channel(s, &len);
        cd_jw_string(&w, name, len);
    }
    cd_jw_array_end(&w);
    cd_jw_key(&w, "credit");
    cd_jw_null(&w);
    cd_jw_key(&w, "queued");
    cd_jw_uint(&w, cd_conn_queued_bytes(r->c));
    cd_jw_object_end(&w);
    cd_jw_key(&w, "server");
    cd_jw_object_begin(&w);
    cd_jw_key(&w, "connections");
    cd_jw_uint(&w, atomic_load(&r->srv->n_conns));
    cd_jw_key(&w, "channels");
    cd_jw_uint(&w, cd_hub_channel_count(r->srv->hub));
    cd_jw_key(&w, "uptime_s");
    cd_jw_uint(&w, (cd_conn_now_ms(r->c) - r->srv->start_ms) / 1000u);
    cd_jw_key(&w, "workers");
    cd_jw_uint(&w, r->srv->n_workers);
    cd_jw_key(&w, "version");
    cd_jw_cstr(&w, CONDUIT_VERSION);
    cd_jw_object_end(&w);
    reply_end(r, &w, &b);
}

/* Forbidden, naming the channel, when the connection may not do action
 * on any of the names; true when it may on all. */
static bool names_allowed(req *r, const names *ns, conduit_action action)
{
    for (size_t i = 0; i < ns->n; i++) {
        const cd_ns_options *o = cd_hub_ns(r->srv->hub, ns->v[i], ns->len[i]);
        const char *why = cd_conn_may(r->c, ns->v[i], ns->len[i], action, o);
        if (why) {
            char msg[400];
            snprintf(msg, sizeof(msg), "%s: %s", ns->v[i], why);
            send_error(r, "Forbidden", msg);
            return false;
        }
    }
    return true;
}

static bool name_allowed(req *r, const char *name, size_t len, const cd_ns_options *o,
                         conduit_action action)
{
    const char *why = cd_conn_may(r->c, name, len, action, o);
    if (why == NULL)
        return true;
    char msg[400];
    snprintf(msg, sizeof(msg), "%s: %s", name, why);
    send_error(r, "Forbidden", msg);
    return false;
}

static void h_subscribe(req *r)
{
    names ns;
    if (required_names(r, &ns) != 0)
        return;
    if (!names_allowed(r, &ns, CONDUIT_ACTION_SUBSCRIBE)) {
        names_free(&ns);
        return;
    }
    cd_member *m = cd_conn_member(r->c);
    bool *added = calloc(ns.n, sizeof(bool));
    if (added == NULL) {
        names_free(&ns);
        send_error(r, "Internal", "out of memory");
        return;
    }
    int rc = 0;
    size_t i;
    for (i = 0; i < ns.n && rc == 0; i++) {
        bool was = false;
        rc = cd_hub_subscribe(r->srv->hub, m, ns.v[i], ns.len[i], &was);
        added[i] = rc == 0 && !was;
    }
    if (rc != 0) {
        /* All or nothing: undo what this request added. */
        for (size_t k = 0; k < ns.n; k++)
            if (added[k])
                cd_hub_unsubscribe(r->srv->hub, m, ns.v[k], ns.len[k]);
        char msg[320];
        const char *name = ns.v[i - 1];
        if (rc == CONDUIT_ELIMIT)
            snprintf(msg, sizeof(msg), "at most %u channels per connection",
                     r->srv->opt.ws_max_subscriptions_per_connection);
        else if (rc == CONDUIT_EDENIED)
            snprintf(msg, sizeof(msg), "channel %s is full", name);
        else
            snprintf(msg, sizeof(msg), "out of memory");
        send_error(r, subscribe_error_code(rc), msg);
        cd_log(&r->srv->log, CD_LOG_INFO, "subscribe_failed", "conn=%llu channel=%s error=%s",
               (unsigned long long)cd_conn_id(r->c), name, conduit_strerror(rc));
    } else {
        cd_bytes b = CD_BYTES_INIT;
        cd_jw w;
        reply_begin(r, &w, &b);
        cd_jw_key(&w, "channels");
        write_names(&w, &ns);
        reply_end(r, &w, &b);
    }
    free(added);
    names_free(&ns);
}

static void h_unsubscribe(req *r)
{
    names ns;
    if (required_names(r, &ns) != 0)
        return;
    cd_member *m = cd_conn_member(r->c);
    for (size_t i = 0; i < ns.n; i++) {
        if (!cd_hub_is_subscribed(m, ns.v[i], ns.len[i])) {
            char msg[320];
            snprintf(msg, sizeof(msg), "not subscribed to %s", ns.v[i]);
            send_error(r, "NotSubscribed", msg);
            names_free(&ns);
            return;
        }
    }
    for (size_t i = 0; i < ns.n; i++)
        cd_hub_unsubscribe(r->srv->hub, m, ns.v[i], ns.len[i]);
    cd_bytes b = CD_BYTES_INIT;
    cd_jw w;
    reply_begin(r, &w, &b);
    cd_jw_key(&w, "channels");
    write_names(&w, &ns);
    reply_end(r, &w, &b);
    names_free(&ns);
}

cd_frame *cd_proto_json_message_frame(void *ctx, uint64_t offset,
                                      const char *epoch, uint64_t ts_ms)
{
    const cd_proto_publish *p = ctx;
    cd_bytes b = CD_BYTES_INIT;
    cd_jw w;
    cd_jw_init(&w, &b);
    cd_jw_object_begin(&w);
    cd_jw_key(&w, "type");
    cd_jw_cstr(&w, "message");
    if (p->channel) {
        cd_jw_key(&w, "channel");
        cd_jw_string(&w, p->channel, p->channel_len);
    }
    cd_jw_key(&w, "data");
    cd_jw_raw(&w, p->data, p->data_len);
    if (offset) {
        cd_jw_key(&w, "offset");
        cd_jw_uint(&w, offset);
        cd_jw_key(&w, "epoch");
        cd_jw_cstr(&w, epoch);
    }
    if (p->from) {
        cd_jw_key(&w, "from");
        cd_jw_cstr(&w, p->from);
    }
    cd_jw_key(&w, "ts");
    cd_jw_uint(&w, ts_ms);
    cd_jw_object_end(&w);
    return finish_frame(&w, &b);
}

static void h_publish(req *r)
{
    const cd_json_value *data = &r->f[F_DATA];
    const cd_json_value *ex = &r->f[F_EXCLUDE_SELF];
    if (data->type == CD_JSON_NONE) {
        send_error(r, "BadRequest", "\"data\" is required");
        return;
    }
    if (ex->type != CD_JSON_NONE && ex->type != CD_JSON_TRUE && ex->type != CD_JSON_FALSE) {
        send_error(r, "BadRequest", "\"exclude_self\" must be true or false");
        return;
    }
    uint64_t exclude = ex->type == CD_JSON_TRUE ? cd_conn_id(r->c) : 0;
    names ns;
    int n = collect_names(r, &ns);
    if (n < 0)
        return;
    cd_proto_publish p = {.data = data->raw, .data_len = data->len, .from = cd_conn_user(r->c)};

    if (n == 0) {
        if (!r->srv->opt.ws_allow_broadcast_all) {
            send_error(r, "Forbidden", "publishing to everyone is disabled");
            return;
        }
        cd_frame *f = cd_proto_json_message_frame(&p, 0, NULL, wall_ms());
        if (f == NULL || cd_hub_broadcast_all(r->srv->hub, exclude, f) != 0) {
            send_error(r, "Internal", "out of memory");
            return;
        }
        cd_bytes b = CD_BYTES_INIT;
        cd_jw w;
        reply_begin(r, &w, &b);
        cd_jw_key(&w, "everyone");
        cd_jw_bool(&w, true);
        reply_end(r, &w, &b);
        return;
    }
    for (size_t i = 0; i < ns.n; i++) {
        if (!cd_hub_ns(r->srv->hub, ns.v[i], ns.len[i])->client_publish) {
            char msg[320];
            snprintf(msg, sizeof(msg), "clients may not publish to %s", ns.v[i]);
            send_error(r, "Forbidden", msg);
            names_free(&ns);
            return;
        }
    }
    if (!names_allowed(r, &ns, CONDUIT_ACTION_PUBLISH)) {
        names_free(&ns);
        return;
    }
    cd_bytes b = CD_BYTES_INIT;
    cd_jw w;
    reply_begin(r, &w, &b);
    cd_jw_key(&w, "channels");
    cd_jw_object_begin(&w);
    cd_publish_result res = {0};
    for (size_t i = 0; i < ns.n; i++) {
        p.channel = ns.v[i];
        p.channel_len = ns.len[i];
        if (cd_hub_publish(r->srv->hub, ns.v[i], ns.len[i], exclude,
                           cd_proto_json_message_frame, &p, &res) != 0) {
            cd_bytes_free(&b);
            names_free(&ns);
            send_error(r, "Internal", "out of memory");
            return;
        }
        cd_jw_key_n(&w, ns.v[i], ns.len[i]);
        cd_jw_object_begin(&w);
        cd_jw_key(&w, "offset");
        cd_jw_uint(&w, res.offset);
        cd_jw_key(&w, "subscribers");
        cd_jw_uint(&w, res.subscribers);
        cd_jw_object_end(&w);
    }
    cd_jw_object_end(&w);
    if (ns.n == 1) {
        /* The one-channel form most clients use: offset at the top too. */
        cd_jw_key(&w, "offset");
        cd_jw_uint(&w, res.offset);
        if (res.offset) {
            cd_jw_key(&w, "epoch");
            cd_jw_cstr(&w, res.epoch);
        }
    }
    reply_end(r, &w, &b);
    names_free(&ns);
}

typedef struct presence_ctx {
    cd_jw *w;
} presence_ctx;

static void presence_member(void *arg, const char *user, uint32_t n)
{
    presence_ctx *pc = arg;
    cd_jw_object_begin(pc->w);
    cd_jw_key(pc->w, "user");
    cd_jw_cstr(pc->w, user);
    cd_jw_key(pc->w, "connections");
    cd_jw_uint(pc->w, n);
    cd_jw_object_end(pc->w);
}

static void h_presence(req *r)
{
    char name[CD_CHANNEL_MAX_LEN + 1];
    size_t len;
    const cd_ns_options *ns = one_name(r, name, &len);
    if (ns == NULL)
        return;
    if (!ns->presence) {
        send_error(r, "Forbidden", "presence is off for this channel's namespace");
        return;
    }
    if (!name_allowed(r, name, len, ns, CONDUIT_ACTION_SUBSCRIBE))
        return;
    cd_bytes b = CD_BYTES_INIT;
    cd_jw w;
    reply_begin(r, &w, &b);
    cd_jw_key(&w, "channel");
    cd_jw_string(&w, name, len);
    cd_jw_key(&w, "members");
    cd_jw_array_begin(&w);
    presence_ctx pc = {&w};
    cd_hub_presence(r->srv->hub, name, len, presence_member, &pc);
    cd_jw_array_end(&w);
    reply_end(r, &w, &b);
}

/* A fixed window per connection: typing is chatter, precision is not
 * worth more state. */
static bool typing_allowed(req *r)
{
    cd_proto_state *ps = cd_conn_proto(r->c);
    uint64_t now = cd_conn_now_ms(r->c);
    if (now - ps->typing_window_start_ms >= r->srv->opt.ws_typing_rate_window_ms) {
        ps->typing_window_start_ms = now;
        ps->typing_count = 0;
    }
    return ++ps->typing_count <= r->srv->opt.ws_typing_rate_limit;
}

static void h_typing(req *r)
{
    char name[CD_CHANNEL_MAX_LEN + 1];
    size_t len;
    const cd_ns_options *ns = one_name(r, name, &len);
    if (ns == NULL)
        return;
    if (!ns->typing) {
        send_error(r, "Forbidden", "typing is off for this channel's namespace");
        return;
    }
    if (!name_allowed(r, name, len, ns, CONDUIT_ACTION_SUBSCRIBE))
        return;
    if (!cd_hub_is_subscribed(cd_conn_member(r->c), name, len)) {
        send_error(r, "NotSubscribed", "join the channel before typing in it");
        return;
    }
    if (!typing_allowed(r)) {
        send_error(r, "RateLimitExceeded", "too many typing events");
        cd_log(&r->srv->log, CD_LOG_INFO, "rate_limited", "conn=%llu kind=%s",
               (unsigned long long)cd_conn_id(r->c), "typing");
        return;
    }
    cd_frame *f = cd_proto_json_presence_frame(NULL, name, len, cd_conn_user(r->c), NULL);
    if (f == NULL || cd_hub_event(r->srv->hub, name, len, cd_conn_id(r->c), f) != 0) {
        send_error(r, "Internal", "out of memory");
        return;
    }
    cd_bytes b = CD_BYTES_INIT;
    cd_jw w;
    reply_begin(r, &w, &b);
    reply_end(r, &w, &b);
}

static void h_presence_ping(req *r)
{
    cd_bytes b = CD_BYTES_INIT;
    cd_jw w;
    reply_begin(r, &w, &b);
    reply_end(r, &w, &b);
}

/* presence event; state NULL frames a typing event instead. */
cd_frame *cd_proto_json_presence_frame(void *ctx, const char *channel,
                                       size_t len, const char *user,
                                       const char *state)
{
    CD_UNUSED(ctx);
    cd_bytes b = CD_BYTES_INIT;
    cd_jw w;
    cd_jw_init(&w, &b);
    cd_jw_object_begin(&w);
    cd_jw_key(&w, "type");
    cd_jw_cstr(&w, state ? "presence" : "typing");
    cd_jw_key(&w, "channel");
    cd_jw_string(&w, channel, len);
    cd_jw_key(&w, "user");
    cd_jw_cstr(&w, user);
    if (state) {
        cd_jw_key(&w, "state");
        cd_jw_cstr(&w, state);
    }
    cd_jw_object_end(&w);
    return finish_frame(&w, &b);
}

/* ------------------------------------------------------------------ */
/* Dispatch. */

typedef struct handler {
    const char *type;
    void (*fn)(req *r);
} handler;

static const handler handlers[] = {
    {"hello", h_hello},
    {"auth", h_auth},
    {"ping", h_ping},
    {"echo", h_echo},
    {"status", h_status},
    {"subscribe", h_subscribe},
    {"join_room", h_subscribe},
    {"unsubscribe", h_unsubscribe},
    {"leave_room", h_unsubscribe},
    {"publish", h_publish},
    {"broadcast", h_publish},
    {"presence", h_presence},
    {"typing", h_typing},
    {"presence_ping", h_presence_ping},
};

static void app_message(req *r)
{
    const conduit_callbacks *cb = &r->srv->cb;
    if (cb->on_message) {
        const cd_json_value *id = &r->f[F_ID];
        const cd_json_value *data = &r->f[F_DATA];
        conduit_msg m = {
            .type = r->type_orig,
            .type_len = r->type_len,
            .id = id->type == CD_JSON_NONE ? NULL : id->raw,
            .id_len = id->len,
            .data = data->type == CD_JSON_NONE ? NULL : data->raw,
            .data_len = data->len,
            .json = r->json,
            .json_len = r->json_len,
        };
        if (cb->on_message(r->c, &m, cb->user) != CONDUIT_ENOTFOUND)
            return;
    }
    char msg[96];
    snprintf(msg, sizeof(msg), "unknown message type \"%s\"", r->type);
    send_error(r, "UnknownType", msg);
}

void cd_proto_json_message(cd_conn *c, const uint8_t *data, size_t len)
{
    req r;
    memset(&r, 0, sizeof(r));
    r.c = c;
    r.srv = cd_conn_worker(c)->srv;
    r.json = (const char *)data;
    r.json_len = len;
    cd_json_field fields[N_FIELDS];
    for (size_t i = 0; i < N_FIELDS; i++)
        fields[i].name = field_names[i];

    cd_json_error jerr = {0};
    int rc = cd_json_object_fields((const char *)data, len, fields, N_FIELDS, MAX_DEPTH, &jerr);
    for (size_t i = 0; i < N_FIELDS; i++)
        r.f[i] = fields[i].value;
    if (rc == CD_JSON_INVALID) {
        char msg[128];
        snprintf(msg, sizeof(msg), "not valid JSON: %s at byte %zu",
                 jerr.reason ? jerr.reason : "syntax error", jerr.offset);
        send_error(&r, "BadRequest", msg);
        return;
    }
    if (rc == CD_JSON_NOT_OBJECT) {
        send_error(&r, "BadRequest", "a message is a JSON object");
        return;
    }
    if (rc == CD_JSON_DUPLICATE) {
        send_error(&r, "BadRequest", "a member of the envelope appears twice");
        return;
    }
    const cd_json_value *id = &r.f[F_ID];
    if (id->type != CD_JSON_NONE && id->type != CD_JSON_STRING && id->type != CD_JSON_NUMBER) {
        r.f[F_ID].type = CD_JSON_NONE;
        send_error(&r, "BadRequest", "\"id\" must be a string or a number");
        return;
    }
    const cd_json_value *type = &r.f[F_TYPE];
    if (type->type != CD_JSON_STRING) {
        send_error(&r, "BadRequest", "\"type\" (a string) is required");
        return;
    }
    size_t tlen = 0;
    if (cd_json_name(type, r.type, sizeof(r.type), &tlen) != 0) {
        snprintf(r.type, sizeof(r.type), "?");
        send_error(&r, "UnknownType", "unknown message type");
        return;
    }
    memcpy(r.type_orig, r.type, tlen + 1);
    for (size_t i = 0; i < tlen; i++)
        if (r.type[i] >= 'A' && r.type[i] <= 'Z')
            r.type[i] = (char)(r.type[i] - 'A' + 'a');
    r.type_len = tlen;
    if (cd_conn_is_auth_pending(c) && strcmp(r.type, "hello") != 0 &&
        strcmp(r.type, "auth") != 0 && strcmp(r.type, "ping") != 0) {
        send_error(&r, "Unauthorized", "authenticate first: send auth with a token");
        return;
    }
    for (size_t i = 0; i < CD_ARRAY_LEN(handlers); i++) {
        if (strcmp(handlers[i].type, r.type) == 0) {
            handlers[i].fn(&r);
            return;
        }
    }
    app_message(&r);
}

void cd_proto_json_open(cd_conn *c, const char *room, size_t len)
{
    conduit_server *srv = cd_conn_worker(c)->srv;
    cd_member *m = cd_conn_member(c);
    const char *why = len > 0 ? cd_conn_may(c, room, len, CONDUIT_ACTION_SUBSCRIBE,
                                            cd_hub_ns(srv->hub, room, len))
                              : NULL;
    if (why) {
        cd_frame *f = cd_proto_json_error_frame(NULL, 0, "Forbidden", why);
        if (f)
            cd_conn_send_frame(c, f);
    } else if (len > 0) {
        bool was = false;
        int rc = cd_hub_subscribe(srv->hub, m, room, len, &was);
        if (rc != 0) {
            cd_frame *f = cd_proto_json_error_frame(NULL, 0, subscribe_error_code(rc),
                                                    "could not join the room");
            if (f)
                cd_conn_send_frame(c, f);
        }
    }
    cd_hub_member_online(srv->hub, m);
    if (srv->cb.on_open)
        srv->cb.on_open(c, srv->cb.user);
}

CONDUIT_API int conduit_conn_reply(conduit_conn *c, const conduit_msg *m,
                                   const char *data, size_t len)
{
    char type[TYPE_MAX + 16];
    size_t n = m->type_len < TYPE_MAX ? m->type_len : TYPE_MAX;
    for (size_t i = 0; i < n; i++)
        type[i] = (char)(m->type[i] >= 'A' && m->type[i] <= 'Z' ? m->type[i] - 'A' + 'a'
                                                                 : m->type[i]);
    memcpy(type + n, "_response", 10);
    cd_json_value v = {0};
    if (data && cd_json_validate(data, len, MAX_DEPTH, &v, NULL) != CD_JSON_OK)
        return CONDUIT_EINVAL;
    cd_bytes b = CD_BYTES_INIT;
    cd_jw w;
    cd_jw_init(&w, &b);
    cd_jw_object_begin(&w);
    cd_jw_key(&w, "type");
    cd_jw_cstr(&w, type);
    if (m->id) {
        cd_jw_key(&w, "id");
        cd_jw_raw(&w, m->id, m->id_len);
    }
    if (data) {
        cd_jw_key(&w, "data");
        cd_jw_value(&w, &v);
    }
    cd_jw_object_end(&w);
    cd_frame *f = finish_frame(&w, &b);
    if (f == NULL)
        return CONDUIT_ENOMEM;
    return cd_conn_send_frame(c, f);
}
