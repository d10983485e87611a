/* server.c - libconduit's lifecycle: options -> server -> workers.
 *
 * conduit_server_start binds every listen address once per worker (the
 * kernel spreads connections over the SO_REUSEPORT group) and starts one
 * thread per worker.  conduit_server_stop posts a stop to each worker
 * through its loop's one thread-safe door and joins it. */
#include "server.h"

#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"
#include "config.h"
#include "conn.h"
#include "json.h"
#include "proto.h"

#define READ_BUF_BYTES (256u << 10)
#define LISTEN_BACKLOG 4096
#define ACCEPTS_PER_EVENT 64
#define TICK_MS 100

static const char *const echo_protocols[] = {NULL};
static const char *const native_protocols[] = {CD_PROTO_JSON};

static int dup_options(conduit_options *dst, const conduit_options *src)
{
    if (cd_conf_copy(dst, src) != 0)
        return CONDUIT_ENOMEM;
    if ((dst->echo_path == NULL && (dst->echo_path = strdup("/echo")) == NULL) ||
        (dst->ws_path == NULL && (dst->ws_path = strdup("/ws")) == NULL) ||
        (dst->auth_mode == NULL && (dst->auth_mode = strdup("optional")) == NULL) ||
        (dst->jwt_cookie_name == NULL && (dst->jwt_cookie_name = strdup("token")) == NULL)) {
        conduit_options_fini(dst);
        return CONDUIT_ENOMEM;
    }
    return 0;
}

/* The JWT key set from the jwt_* options; *out stays NULL when none is
 * configured. */
static int load_keys(cd_jwt_keyset **out, const conduit_options *o, char *err, size_t errlen)
{
    *out = NULL;
    bool has_secret = o->jwt_secret && o->jwt_secret[0];
    bool has_file = o->jwt_key_file && o->jwt_key_file[0];
    if (!has_secret && !has_file)
        return 0;
    cd_jwt_config cfg;
    cd_jwt_config_init(&cfg);
    cfg.secret = has_secret ? o->jwt_secret : NULL;
    cfg.key_file = has_file ? o->jwt_key_file : NULL;
    cfg.issuer = o->jwt_issuer && o->jwt_issuer[0] ? o->jwt_issuer : NULL;
    cfg.audience = o->jwt_audience && o->jwt_audience[0] ? o->jwt_audience : NULL;
    cfg.leeway_s = o->jwt_leeway_s;
    return cd_jwt_keyset_load(out, &cfg, err, errlen);
}

CONDUIT_API int conduit_server_create(conduit_server **out,
                                      const conduit_options *opt)
{
    *out = NULL;
    if (opt->n_listen == 0)
        return CONDUIT_EINVAL;
    conduit_server *srv = calloc(1, sizeof(*srv));
    if (srv == NULL)
        return CONDUIT_ENOMEM;
    if (dup_options(&srv->opt, opt) != 0) {
        free(srv);
        return CONDUIT_ENOMEM;
    }
    const conduit_options *o = &srv->opt;
    cd_logger_init(&srv->log, (cd_log_level)o->log_level, STDERR_FILENO);
    char err[300] = "";
    int rc = cd_admit_init(&srv->admit, o, err, sizeof(err));
    if (rc == 0)
        rc = load_keys(&srv->keys, o, err, sizeof(err));
    if (rc != 0) {
        cd_log(&srv->log, CD_LOG_ERROR, "config_invalid", "error=%s",
               err[0] ? err : conduit_strerror(rc));
        cd_admit_fini(&srv->admit);
        conduit_options_fini(&srv->opt);
        free(srv);
        return rc;
    }
    if (srv->keys)
        cd_log(&srv->log, CD_LOG_INFO, "jwt_keys_loaded", "keys=%zu",
               cd_jwt_keyset_count(srv->keys));

    srv->pmd.enabled = o->ws_compression;
    srv->pmd.max_window_bits = (uint8_t)o->ws_compression_window_bits;
    srv->pmd.mem_level = (uint8_t)o->ws_compression_mem_level;
    srv->pmd.min_compress_bytes = o->ws_compression_min_size;

    srv->echo.limits.max_message_bytes = o->echo_max_message_size;
    srv->echo.limits.max_fragments = o->ws_max_fragments;
    srv->echo.upgrade.subprotocols = echo_protocols;
    srv->echo.upgrade.n_subprotocols = 0;
    srv->echo.upgrade.pmd = &srv->pmd;
    srv->native.limits.max_message_bytes = o->ws_max_message_size;
    srv->native.limits.max_fragments = o->ws_max_fragments;
    srv->native.upgrade.subprotocols = native_protocols;
    srv->native.upgrade.n_subprotocols = CD_ARRAY_LEN(native_protocols);
    srv->native.upgrade.pmd = &srv->pmd;

    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    srv->n_workers = o->workers ? o->workers : (size_t)(cores > 0 ? cores : 1);
    *out = srv;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Listeners. */

static void listener_on_io(cd_io *io, uint32_t events);

static void listener_resume(cd_timer *t, void *arg)
{
    CD_UNUSED(arg);
    cd_listener *l = CD_CONTAINER_OF(t, cd_listener, pause_timer);
    if (l->io.fd >= 0)
        (void)cd_loop_io_set(l->w->loop, &l->io, CD_IO_READ);
}

static void listener_on_io(cd_io *io, uint32_t events)
{
    CD_UNUSED(events);
    cd_listener *l = CD_CONTAINER_OF(io, cd_listener, io);
    cd_worker *w = l->w;
    for (int i = 0; i < ACCEPTS_PER_EVENT; i++) {
        cd_addr peer;
        peer.len = sizeof(peer.ss);
        int fd = accept4(io->fd, (struct sockaddr *)&peer.ss, &peer.len,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            (void)cd_conn_accept(w, fd, &peer);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            /* Out of descriptors: stop accepting for a moment instead of
             * spinning on a level-triggered listener. */
            cd_log(&w->srv->log, CD_LOG_WARN, "accept_paused", "worker=%u error=%s", w->id,
                   strerror(errno));
            (void)cd_loop_io_set(w->loop, io, 0);
            cd_loop_timer_start(w->loop, &l->pause_timer, cd_loop_now_ms(w->loop) + 1000);
        }
        return; /* EAGAIN or a paused listener */
    }
}

static int bind_all(conduit_server *srv, char *err, size_t errlen)
{
    for (size_t a = 0; a < srv->opt.n_listen; a++) {
        cd_addr addr;
        if (cd_addr_parse(srv->opt.listen[a], &addr, err, errlen) != 0)
            return CONDUIT_EINVAL;
        for (size_t i = 0; i < srv->n_workers; i++) {
            int fd = cd_net_listen(&addr, LISTEN_BACKLOG);
            if (fd < 0) {
                snprintf(err, errlen, "cannot listen on %s: %s", srv->opt.listen[a],
                         strerror(-fd));
                return CONDUIT_EADDR;
            }
            if (i == 0 && cd_net_local_addr(fd, &addr) != 0) {
                close(fd);
                snprintf(err, errlen, "getsockname failed on %s", srv->opt.listen[a]);
                return CONDUIT_EADDR;
            }
            /* Port 0 became a real port above: the other workers join it. */
            cd_worker *w = &srv->workers[i];
            cd_listener *l = &w->listeners[w->n_listeners];
            l->w = w;
            l->index = (int)a;
            l->io.fd = -1;
            cd_timer_init(&l->pause_timer, listener_resume);
            if (cd_loop_io_start(w->loop, &l->io, fd, CD_IO_READ, listener_on_io) != 0) {
                close(fd);
                snprintf(err, errlen, "cannot watch the listener of %s", srv->opt.listen[a]);
                return CONDUIT_EIO;
            }
            w->n_listeners++;
        }
        srv->addrs[a] = addr;
        srv->n_addrs = a + 1;
        char text[64];
        cd_addr_format((struct sockaddr *)&addr.ss, text, sizeof(text));
        cd_log(&srv->log, CD_LOG_INFO, "listening", "addr=%s workers=%zu", text,
               srv->n_workers);
    }
    return 0;
}

static void close_listeners(cd_worker *w)
{
    for (size_t i = 0; i < w->n_listeners; i++) {
        cd_listener *l = &w->listeners[i];
        cd_loop_timer_stop(w->loop, &l->pause_timer);
        if (l->io.fd >= 0) {
            int fd = l->io.fd;
            cd_loop_io_stop(w->loop, &l->io);
            close(fd);
        }
    }
    w->n_listeners = 0;
}

/* ------------------------------------------------------------------ */
/* Workers. */

static void worker_before_sleep(cd_loop *loop, void *arg)
{
    CD_UNUSED(loop);
    cd_conn_flush_all(arg);
}

static void worker_on_stop(cd_post *p, cd_loop *loop)
{
    cd_worker *w = CD_CONTAINER_OF(p, cd_worker, stop_post);
    close_listeners(w);
    cd_conn_close_all(w, CD_WS_CLOSE_GOING_AWAY, "server shutting down");
    /* One flush so the close frames leave; a slow peer misses it. */
    cd_conn_flush_all(w);
    cd_conn_destroy_all(w);
    cd_loop_stop(loop);
}

static void *worker_main(void *arg)
{
    cd_worker *w = arg;
    int rc = cd_loop_run(w->loop);
    if (rc != 0)
        cd_log(&w->srv->log, CD_LOG_ERROR, "worker_failed", "worker=%u error=%s", w->id,
               strerror(-rc));
    return NULL;
}

static int worker_init(cd_worker *w, conduit_server *srv, unsigned id)
{
    w->srv = srv;
    w->id = id;
    /* Connection ids are unique across workers: the worker number sits in
     * the top bits. */
    w->next_conn_id = ((uint64_t)id << 48) | 1;
    w->rbuf_cap = READ_BUF_BYTES;
    cd_idmap_init(&w->conns_by_id, cd_conn_key);
    if ((w->rbuf = malloc(w->rbuf_cap)) == NULL ||
        (w->http_scratch = malloc(sizeof(*w->http_scratch))) == NULL ||
        (w->token_scratch = malloc(CD_JWT_MAX_TOKEN_LEN + 1)) == NULL)
        return CONDUIT_ENOMEM;
    if ((w->loop = cd_loop_create(TICK_MS, w)) == NULL)
        return CONDUIT_ENOMEM;
    cd_loop_set_before_sleep(w->loop, worker_before_sleep, w);
    w->keys = srv->keys ? cd_jwt_keyset_ref(srv->keys) : NULL;
    return 0;
}

static void worker_fini(cd_worker *w)
{
    if (w->loop) {
        close_listeners(w);
        cd_conn_destroy_all(w);
        cd_loop_destroy(w->loop);
        w->loop = NULL;
    }
    cd_bytes_free(&w->scratch);
    cd_idmap_free(&w->conns_by_id);
    free(w->flushq);
    cd_sendq_pool_fini(&w->sq_pool);
    free(w->http_scratch);
    free(w->token_scratch);
    cd_jwt_keyset_unref(w->keys);
    w->keys = NULL;
    free(w->rbuf);
    w->rbuf = NULL;
}

/* Namespace settings: each unset field follows the global option. */
static cd_ns_options ns_resolve(const conduit_options *o, const conduit_namespace *ns)
{
    cd_ns_options r = {
        .presence = o->ws_presence,
        .join_leave = o->ws_join_leave_events,
        .client_publish = o->ws_client_publish,
        .typing = o->ws_typing,
        .max_subscribers = 0,
        .anonymous = o->ws_allow_anonymous,
        .publish_requires_subscribe = o->ws_publish_requires_subscribe,
    };
    if (ns == NULL)
        return r;
    if (ns->presence >= 0)
        r.presence = ns->presence;
    if (ns->join_leave >= 0)
        r.join_leave = ns->join_leave;
    if (ns->client_publish >= 0)
        r.client_publish = ns->client_publish;
    if (ns->typing >= 0)
        r.typing = ns->typing;
    if (ns->anonymous >= 0)
        r.anonymous = ns->anonymous;
    if (ns->publish_requires_subscribe >= 0)
        r.publish_requires_subscribe = ns->publish_requires_subscribe;
    if (ns->max_subscribers >= 0)
        r.max_subscribers = ns->max_subscribers ? (uint32_t)ns->max_subscribers : UINT32_MAX;
    return r;
}

static int hub_init(conduit_server *srv)
{
    const conduit_options *o = &srv->opt;
    cd_loop **loops = calloc(srv->n_workers, sizeof(*loops));
    const char **names = calloc(o->n_ns + 1, sizeof(*names));
    cd_ns_options *nso = calloc(o->n_ns + 1, sizeof(*nso));
    int rc = CONDUIT_ENOMEM;
    if (loops && names && nso) {
        for (size_t i = 0; i < srv->n_workers; i++)
            loops[i] = srv->workers[i].loop;
        for (size_t i = 0; i < o->n_ns; i++) {
            names[i] = o->ns[i].name;
            nso[i] = ns_resolve(o, &o->ns[i]);
        }
        cd_hub_config cfg = {
            .n_workers = srv->n_workers,
            .loops = loops,
            .max_subscriptions_per_conn = o->ws_max_subscriptions_per_connection,
            .max_subscribers_per_channel = o->ws_max_subscribers_per_channel,
            .defaults = ns_resolve(o, NULL),
            .ns_names = names,
            .ns_options = nso,
            .n_ns = o->n_ns,
            .cb = {
                .ctx = srv,
                .presence_frame = cd_proto_json_presence_frame,
                .deliver = cd_conn_deliver,
                .deliver_all = cd_conn_deliver_all,
            },
        };
        rc = cd_hub_create(&srv->hub, &cfg);
    }
    free(loops);
    free(names);
    free(nso);
    return rc;
}

CONDUIT_API int conduit_server_set_callbacks(conduit_server *srv,
                                             const conduit_callbacks *cb)
{
    if (srv->is_started)
        return CONDUIT_ESTATE;
    srv->cb = *cb;
    return 0;
}

CONDUIT_API int conduit_server_start(conduit_server *srv)
{
    if (srv->is_started)
        return CONDUIT_ESTATE;
    srv->workers = calloc(srv->n_workers, sizeof(*srv->workers));
    if (srv->workers == NULL)
        return CONDUIT_ENOMEM;
    int rc = 0;
    for (size_t i = 0; i < srv->n_workers && rc == 0; i++)
        rc = worker_init(&srv->workers[i], srv, (unsigned)i);
    if (rc == 0)
        rc = hub_init(srv);
    char err[256] = "";
    if (rc == 0)
        rc = bind_all(srv, err, sizeof(err));
    if (rc != 0) {
        if (err[0])
            cd_log(&srv->log, CD_LOG_ERROR, "start_failed", "error=%s", err);
        for (size_t i = 0; i < srv->n_workers; i++)
            worker_fini(&srv->workers[i]);
        free(srv->workers);
        srv->workers = NULL;
        cd_hub_destroy(srv->hub);
        srv->hub = NULL;
        return rc;
    }
    srv->start_ms = cd_loop_now_ms(srv->workers[0].loop);
    srv->is_started = true;
    if (strcmp(srv->opt.auth_mode, "insecure") == 0)
        cd_log(&srv->log, CD_LOG_WARN, "insecure_auth_mode", "detail=%s",
               "?user_id= is trusted without a token; never use this in production");
    for (size_t i = 0; i < srv->n_workers; i++) {
        cd_worker *w = &srv->workers[i];
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            cd_log(&srv->log, CD_LOG_ERROR, "start_failed", "error=%s",
                   "cannot create a worker thread");
            conduit_server_stop(srv);
            return CONDUIT_ENOMEM;
        }
        w->is_running = true;
    }
    return 0;
}

CONDUIT_API int conduit_server_stop(conduit_server *srv)
{
    if (!srv->is_started || srv->is_stopped)
        return 0;
    srv->is_stopped = true;
    for (size_t i = 0; i < srv->n_workers; i++) {
        cd_worker *w = &srv->workers[i];
        if (!w->is_running)
            continue;
        w->stop_post.fn = worker_on_stop;
        cd_loop_post(w->loop, &w->stop_post);
    }
    for (size_t i = 0; i < srv->n_workers; i++) {
        cd_worker *w = &srv->workers[i];
        if (w->is_running)
            pthread_join(w->thread, NULL);
        w->is_running = false;
    }
    /* Deliveries posted by one worker's last closes to a worker that had
     * already stopped still hold frames and channels: release them. */
    for (size_t i = 0; i < srv->n_workers; i++)
        cd_loop_drain_posts(srv->workers[i].loop);
    cd_log(&srv->log, CD_LOG_INFO, "stopped", "workers=%zu", srv->n_workers);
    return 0;
}

CONDUIT_API void conduit_server_destroy(conduit_server *srv)
{
    if (srv == NULL)
        return;
    conduit_server_stop(srv);
    if (srv->workers) {
        for (size_t i = 0; i < srv->n_workers; i++)
            worker_fini(&srv->workers[i]);
        free(srv->workers);
    }
    cd_hub_destroy(srv->hub);
    cd_jwt_keyset_unref(srv->keys);
    cd_admit_fini(&srv->admit);
    conduit_options_fini(&srv->opt);
    free(srv);
}

/* A new key set on its way to one worker. */
typedef struct keys_post {
    cd_post post;
    cd_jwt_keyset *keys;                 /* one reference, handed over */
} keys_post;

static void on_keys_post(cd_post *p, cd_loop *loop)
{
    keys_post *kp = CD_CONTAINER_OF(p, keys_post, post);
    cd_worker *w = cd_loop_user(loop);
    cd_jwt_keyset *old = w->keys;
    w->keys = kp->keys;
    cd_jwt_keyset_unref(old);
    free(kp);
}

CONDUIT_API int conduit_server_reload_auth(conduit_server *srv, const conduit_options *opt,
                                           char *err, size_t errlen)
{
    cd_jwt_keyset *keys = NULL;
    int rc = load_keys(&keys, opt, err, errlen);
    if (rc == 0 && keys == NULL) {
        if (srv->keys == NULL)
            return 0; /* JWT not in use: nothing to reload */
        /* Dropping every key would lock every user out: keep the old. */
        snprintf(err, errlen, "no JWT key configured; the old keys stay");
        rc = CONDUIT_EINVAL;
    }
    if (rc != 0) {
        cd_log(&srv->log, CD_LOG_ERROR, "jwt_reload_failed", "error=%s", err);
        return rc;
    }
    /* Posts are allocated first, so a failure changes nothing. */
    keys_post **posts = calloc(srv->n_workers, sizeof(*posts));
    bool ok = posts != NULL;
    for (size_t i = 0; ok && i < srv->n_workers; i++)
        ok = (posts[i] = calloc(1, sizeof(**posts))) != NULL;
    if (!ok) {
        for (size_t i = 0; posts && i < srv->n_workers; i++)
            free(posts[i]);
        free(posts);
        cd_jwt_keyset_unref(keys);
        snprintf(err, errlen, "out of memory");
        cd_log(&srv->log, CD_LOG_ERROR, "jwt_reload_failed", "error=%s", err);
        return CONDUIT_ENOMEM;
    }
    bool running = srv->is_started && !srv->is_stopped;
    for (size_t i = 0; i < srv->n_workers; i++) {
        if (running) {
            posts[i]->keys = cd_jwt_keyset_ref(keys);
            posts[i]->post.fn = on_keys_post;
            cd_loop_post(srv->workers[i].loop, &posts[i]->post);
        } else {
            free(posts[i]);
        }
    }
    free(posts);
    cd_jwt_keyset_unref(srv->keys);
    srv->keys = keys;
    cd_log(&srv->log, CD_LOG_INFO, "jwt_keys_loaded", "keys=%zu reload=%s",
           cd_jwt_keyset_count(keys), "true");
    return 0;
}

CONDUIT_API int conduit_server_listen_address(const conduit_server *srv,
                                              size_t i, char *buf, size_t len)
{
    if (i >= srv->n_addrs)
        return CONDUIT_ENOTFOUND;
    return cd_addr_format((const struct sockaddr *)&srv->addrs[i].ss, buf, len);
}

CONDUIT_API int conduit_publish(conduit_server *srv, const char *channel,
                                const char *data, size_t len, uint64_t *offset_out)
{
    if (offset_out)
        *offset_out = 0;
    if (!srv->is_started || srv->is_stopped)
        return CONDUIT_ESTATE;
    size_t clen = strlen(channel);
    cd_json_value v;
    if (!cd_hub_channel_name_valid(channel, clen) ||
        cd_json_validate(data, len, 64, &v, NULL) != CD_JSON_OK)
        return CONDUIT_EINVAL;
    cd_proto_publish p = {.channel = channel, .channel_len = clen, .data = v.raw,
                          .data_len = v.len, .from = NULL};
    cd_publish_result res;
    int rc = cd_hub_publish(srv->hub, channel, clen, 0, cd_proto_json_message_frame, &p, &res);
    if (rc == 0 && offset_out)
        *offset_out = res.offset;
    return rc;
}
