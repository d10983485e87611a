/* shout.c - embed Conduit and add an application message type.
 *
 *   build/examples/shout [--listen HOST:PORT]
 *
 * Everything of the native protocol works as in the `conduit` binary; on
 * top of it a client may send
 *   {"type":"shout","id":1,"data":{"channel":"lobby","text":"hello"}}
 * and the application publishes {"text":"HELLO","by":"<user>"} to that
 * channel and answers shout_response with the count of its shouts.  A
 * thread of the application's own publishes the time to "clock" five times
 * a second: conduit_publish may be called from any thread. */
#include <conduit.h>
#include <ctype.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct session {
    unsigned shouts;
} session;

static void on_open(conduit_conn *c, void *user)
{
    (void)user;
    conduit_conn_set_user(c, calloc(1, sizeof(session)));
}

static void on_close(conduit_conn *c, int code, void *user)
{
    (void)code;
    (void)user;
    free(conduit_conn_user(c));
}

static int shout(conduit_conn *c, const conduit_msg *m, conduit_server *srv)
{
    json_t *data = m->data ? json_loadb(m->data, m->data_len, 0, NULL) : NULL;
    const char *channel = json_string_value(json_object_get(data, "channel"));
    const char *text = json_string_value(json_object_get(data, "text"));
    if (channel == NULL || text == NULL) {
        json_decref(data);
        return conduit_conn_reply(c, m, "{\"error\":\"need channel and text\"}", 33);
    }
    char *loud = strdup(text);
    for (char *p = loud; p && *p; p++)
        *p = (char)toupper((unsigned char)*p);
    json_t *out = json_pack("{s:s, s:s}", "text", loud ? loud : "", "by", conduit_conn_user_id(c));
    char *body = json_dumps(out, JSON_COMPACT);
    uint64_t offset = 0;
    int rc = body ? conduit_publish(srv, channel, body, strlen(body), &offset) : CONDUIT_ENOMEM;
    session *s = conduit_conn_user(c);
    char reply[96];
    int n = snprintf(reply, sizeof(reply), "{\"shouts\":%u,\"offset\":%llu,\"ok\":%s}",
                     s ? ++s->shouts : 0, (unsigned long long)offset, rc == 0 ? "true" : "false");
    free(body);
    free(loud);
    json_decref(out);
    json_decref(data);
    return conduit_conn_reply(c, m, reply, (size_t)n);
}

static int on_message(conduit_conn *c, const conduit_msg *m, void *user)
{
    if (m->type_len == 5 && strncasecmp(m->type, "shout", 5) == 0)
        return shout(c, m, user);
    return CONDUIT_ENOTFOUND; /* the server answers UnknownType */
}

static atomic_bool ticking = true;

static void *clock_thread(void *arg)
{
    while (atomic_load(&ticking)) {
        char body[64];
        int n = snprintf(body, sizeof(body), "{\"unix\":%lld}", (long long)time(NULL));
        conduit_publish(arg, "clock", body, (size_t)n, NULL);
        usleep(200 * 1000);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    conduit_options opt;
    conduit_options_init(&opt);
    if (argc == 3 && strcmp(argv[1], "--listen") == 0) {
        char err[256];
        conduit_options_clear(&opt, "listen");
        if (conduit_options_set(&opt, "listen", argv[2], err, sizeof(err)) != 0) {
            fprintf(stderr, "shout: %s\n", err);
            return 2;
        }
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* inherited by every thread */

    conduit_server *srv;
    int rc = conduit_server_create(&srv, &opt);
    conduit_options_fini(&opt);
    if (rc != 0)
        return 1;
    conduit_callbacks cb = {on_open, on_message, on_close, NULL};
    cb.user = srv;
    conduit_server_set_callbacks(srv, &cb);
    if ((rc = conduit_server_start(srv)) != 0) {
        fprintf(stderr, "shout: %s\n", conduit_strerror(rc));
        conduit_server_destroy(srv);
        return 1;
    }
    pthread_t ticker;
    bool has_ticker = pthread_create(&ticker, NULL, clock_thread, srv) == 0;
    int sig;
    sigwait(&set, &sig);
    /* Every thread that may publish is done before the server goes. */
    atomic_store(&ticking, false);
    if (has_ticker)
        pthread_join(ticker, NULL);
    conduit_server_destroy(srv);
    return 0;
}
