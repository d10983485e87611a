/* main.c - the `conduit` binary: options from file < environment < flags,
 * then a server from libconduit, then signals.  Only conduit.h is used. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conduit.h"

extern char **environ;

#define EXIT_USAGE 2

static void usage(FILE *out)
{
    fprintf(out,
            "usage: conduit [--flag value | --flag=value]...\n"
            "\n"
            "A real-time WebSocket messaging server.\n"
            "\n"
            "  --listen HOST:PORT        listen address, repeatable (default 127.0.0.1:8080)\n"
            "  --workers N               worker threads (default: one per core)\n"
            "  --config FILE             YAML configuration file\n"
            "  --check-config            validate, print the effective configuration, exit\n"
            "  --print-config-reference  print the option reference (Markdown), exit\n"
            "  --help, --version\n"
            "\n"
            "Every option of docs/configuration.md is a flag (--ws-max-message-size),\n"
            "an environment variable (CONDUIT_WS_MAX_MESSAGE_SIZE) and a file key\n"
            "(ws_max_message_size). Precedence: flag > environment > file > default.\n");
}

static int usage_error(const char *msg)
{
    fprintf(stderr, "conduit: %s\n", msg);
    return EXIT_USAGE;
}

/* "--ws-max-message-size" -> "ws_max_message_size"; false if not a flag. */
static int flag_to_key(const char *arg, char *key, size_t cap, const char **inline_value)
{
    if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0')
        return -1;
    const char *name = arg + 2;
    const char *eq = strchr(name, '=');
    size_t n = eq ? (size_t)(eq - name) : strlen(name);
    if (n >= cap)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (name[i] == '_')
            return -1; /* flags are spelled with dashes */
        key[i] = name[i] == '-' ? '_' : name[i];
    }
    key[n] = '\0';
    *inline_value = eq ? eq + 1 : NULL;
    return 0;
}

/* The config file is found first (flag, then environment) because the
 * file has the lowest precedence and must be applied before the rest. */
static const char *find_config_file(int argc, char **argv)
{
    const char *path = getenv("CONDUIT_CONFIG");
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "--config=", 9) == 0)
            path = argv[i] + 9;
        else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            path = argv[++i];
    }
    return path;
}

static int apply_flags(conduit_options *opt, int argc, char **argv, int *check_only)
{
    char err[512];
    int listen_replaced = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "--check-config")) {
            *check_only = 1;
            continue;
        }
        char key[96];
        const char *value;
        if (flag_to_key(arg, key, sizeof(key), &value) != 0) {
            snprintf(err, sizeof(err), "unexpected argument \"%s\" (see --help)", arg);
            return usage_error(err);
        }
        if (!conduit_options_is_key(key)) {
            snprintf(err, sizeof(err), "--%.*s: unknown flag (see --help)",
                     (int)strcspn(arg + 2, "="), arg + 2);
            return usage_error(err);
        }
        if (value == NULL) {
            if (i + 1 >= argc) {
                snprintf(err, sizeof(err), "--%s: missing value", arg + 2);
                return usage_error(err);
            }
            value = argv[++i];
        }
        if (!strcmp(key, "config"))
            continue; /* already loaded */
        if (!strcmp(key, "listen") && !listen_replaced) {
            conduit_options_clear(opt, "listen");
            listen_replaced = 1;
        }
        char origin_err[512];
        if (conduit_options_set(opt, key, value, origin_err, sizeof(origin_err)) != 0) {
            /* Name the flag the user typed, not the file key. */
            const char *colon = strchr(origin_err, ':');
            snprintf(err, sizeof(err), "--%.*s%s", (int)strcspn(arg + 2, "="), arg + 2,
                     colon ? colon : ": invalid value");
            return usage_error(err);
        }
    }
    return 0;
}

static void warn_unknown_env(void)
{
    for (char **e = environ; e && *e; e++) {
        if (strncmp(*e, "CONDUIT_", 8) != 0)
            continue;
        char key[96];
        size_t n = strcspn(*e + 8, "=");
        if (n >= sizeof(key))
            continue;
        for (size_t i = 0; i < n; i++) {
            char ch = (*e)[8 + i];
            key[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch);
        }
        key[n] = '\0';
        if (!conduit_options_is_key(key))
            fprintf(stderr,
                    "{\"level\":\"warn\",\"event\":\"unknown_env\",\"name\":\"CONDUIT_%s\"}\n",
                    key);
    }
}

/* Options from file < environment < flags, as at start and on SIGHUP.
 * The caller owns *opt (conduit_options_fini) whatever the result. */
static int load_options(conduit_options *opt, int argc, char **argv, int *check_only)
{
    char err[512];
    conduit_options_init(opt);
    const char *file = find_config_file(argc, argv);
    if (file && conduit_options_load_file(opt, file, err, sizeof(err)) != 0)
        return usage_error(err);
    if (conduit_options_load_env(opt, environ, err, sizeof(err)) != 0)
        return usage_error(err);
    return apply_flags(opt, argc, argv, check_only);
}

/* SIGHUP: what can change live.  For now the JWT keys and options. */
static void reload(conduit_server *srv, int argc, char **argv)
{
    conduit_options opt;
    int check_only = 0;
    char err[512];
    if (load_options(&opt, argc, argv, &check_only) == 0)
        (void)conduit_server_reload_auth(srv, &opt, err, sizeof(err)); /* logs either way */
    conduit_options_fini(&opt);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--version")) {
            printf("conduit %s\n", conduit_version());
            return 0;
        }
        if (!strcmp(argv[i], "--print-config-reference"))
            return conduit_options_write_reference(STDOUT_FILENO) == 0 ? 0 : 1;
    }

    conduit_options opt;
    int check_only = 0;
    int rc = load_options(&opt, argc, argv, &check_only);
    if (rc != 0) {
        conduit_options_fini(&opt);
        return rc;
    }
    if (check_only) {
        rc = conduit_options_write(&opt, STDOUT_FILENO) == 0 ? 0 : 1;
        conduit_options_fini(&opt);
        return rc;
    }
    warn_unknown_env();

    /* Signals are taken synchronously by this thread; workers inherit the
     * blocked mask, so no handler ever runs on a worker. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    conduit_server *srv = NULL;
    rc = conduit_server_create(&srv, &opt);
    conduit_options_fini(&opt);
    if (rc != 0) {
        fprintf(stderr, "conduit: %s\n", conduit_strerror(rc));
        return 1;
    }
    rc = conduit_server_start(srv);
    if (rc != 0) {
        fprintf(stderr, "conduit: cannot start: %s\n", conduit_strerror(rc));
        conduit_server_destroy(srv);
        return 1;
    }
    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            reload(srv, argc, argv);
            continue;
        }
        break;
    }
    conduit_server_destroy(srv);
    return 0;
}
