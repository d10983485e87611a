/* gatekeeper.c - authentication and permissions decided by the embedding
 * program through conduit.h's hooks (docs/security.md):
 *
 *   build/examples/gatekeeper [--listen HOST:PORT]
 *
 * Tokens are "ticket-<user>" (a stand-in for the application's own session
 * store); the user "banned" is refused; channels "staff:*" are open only
 * to users whose name starts with "staff-".  auth_mode is required, so a
 * connection without a ticket is refused before the upgrade. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "conduit.h"

static int authenticate(const char *token, size_t len, const char *jwt_user, char *user,
                        size_t cap, void *ud)
{
    (void)jwt_user; /* no JWT keys configured: this hook decides alone */
    (void)ud;
    static const char prefix[] = "ticket-";
    size_t plen = sizeof(prefix) - 1;
    if (len <= plen || len - plen >= cap || memcmp(token, prefix, plen) != 0)
        return -1;
    if (len - plen == 6 && memcmp(token + plen, "banned", 6) == 0)
        return -1;
    memcpy(user, token + plen, len - plen);
    user[len - plen] = '\0';
    return 0;
}

static int check_permission(conduit_conn *c, const char *user, const char *channel,
                            size_t len, conduit_action action, void *ud)
{
    (void)c;
    (void)action;
    (void)ud;
    bool is_staff_channel = len > 6 && memcmp(channel, "staff:", 6) == 0;
    return is_staff_channel && strncmp(user, "staff-", 6) != 0 ? -1 : 0;
}

int main(int argc, char **argv)
{
    conduit_options opt;
    conduit_options_init(&opt);
    char err[256];
    if (argc == 3 && strcmp(argv[1], "--listen") == 0) {
        conduit_options_clear(&opt, "listen");
        if (conduit_options_set(&opt, "listen", argv[2], err, sizeof(err)) != 0) {
            fprintf(stderr, "gatekeeper: %s\n", err);
            return 2;
        }
    }
    if (conduit_options_set(&opt, "auth_mode", "required", err, sizeof(err)) != 0) {
        fprintf(stderr, "gatekeeper: %s\n", err);
        return 2;
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
    conduit_callbacks cb = {0};
    cb.authenticate = authenticate;
    cb.check_permission = check_permission;
    conduit_server_set_callbacks(srv, &cb);
    if ((rc = conduit_server_start(srv)) != 0) {
        fprintf(stderr, "gatekeeper: %s\n", conduit_strerror(rc));
        conduit_server_destroy(srv);
        return 1;
    }
    int sig;
    sigwait(&set, &sig);
    conduit_server_destroy(srv);
    return 0;
}
