/* Unit tests for config.c: table defaults, typed parsing, bounds, the
 * environment, YAML files and the generated reference. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "config.h"
#include "test.h"

TEST(defaults_parse)
{
    /* Every default in the table must be accepted by its own parser. */
    size_t n;
    const cd_conf_entry *t = cd_conf_table(&n);
    conduit_options opt;
    conduit_options_init(&opt);
    for (size_t i = 0; i < n; i++) {
        if (t[i].def == NULL)
            continue;
        char err[256] = "";
        int rc = cd_conf_set(&opt, &t[i], t[i].def, t[i].key, err, sizeof(err));
        CHECK_EQ(rc, 0);
        if (rc)
            printf("  # %s\n", err);
    }
    conduit_options_fini(&opt);
}

TEST(default_values)
{
    conduit_options opt;
    conduit_options_init(&opt);
    CHECK_EQ(opt.n_listen, 1);
    CHECK_STR(opt.listen[0], "127.0.0.1:8080");
    CHECK_EQ(opt.ws_max_message_size, 1048576);
    CHECK_EQ(opt.ws_heartbeat_interval_s, 30);
    CHECK_EQ(opt.ws_heartbeat_timeout_s, 60);
    CHECK_EQ(opt.handshake_timeout_s, 10);
    CHECK_EQ(opt.echo_max_message_size, 16777216);
    CHECK(opt.echo_enabled);
    CHECK(opt.ws_compression);
    CHECK_STR(opt.echo_path, "/echo");
    CHECK_EQ(opt.log_level, 1);
    conduit_options_fini(&opt);
}

TEST(typed_values_and_errors)
{
    conduit_options opt;
    conduit_options_init(&opt);
    char err[256];
    CHECK_EQ(conduit_options_set(&opt, "workers", "4", err, sizeof(err)), 0);
    CHECK_EQ(opt.workers, 4);
    CHECK_EQ(conduit_options_set(&opt, "workers", "abc", err, sizeof(err)), CONDUIT_EINVAL);
    CHECK(strstr(err, "workers") != NULL);
    CHECK_EQ(conduit_options_set(&opt, "workers", "1025", err, sizeof(err)), CONDUIT_EINVAL);
    CHECK_EQ(conduit_options_set(&opt, "workers", "-1", err, sizeof(err)), CONDUIT_EINVAL);
    CHECK_EQ(conduit_options_set(&opt, "ws_max_message_size", "2m", err, sizeof(err)), 0);
    CHECK_EQ(opt.ws_max_message_size, 2 * 1024 * 1024);
    CHECK_EQ(conduit_options_set(&opt, "ws_max_message_size", "124", err, sizeof(err)),
             CONDUIT_EINVAL);
    CHECK_EQ(conduit_options_set(&opt, "ws_max_message_size", "1x", err, sizeof(err)),
             CONDUIT_EINVAL);
    CHECK_EQ(conduit_options_set(&opt, "ws_heartbeat_interval", "2m", err, sizeof(err)), 0);
    CHECK_EQ(opt.ws_heartbeat_interval_s, 120);
    CHECK_EQ(conduit_options_set(&opt, "ws_compression", "false", err, sizeof(err)), 0);
    CHECK(!opt.ws_compression);
    CHECK_EQ(conduit_options_set(&opt, "ws_compression", "maybe", err, sizeof(err)),
             CONDUIT_EINVAL);
    CHECK_EQ(conduit_options_set(&opt, "log_level", "debug", err, sizeof(err)), 0);
    CHECK_EQ(opt.log_level, 0);
    CHECK_EQ(conduit_options_set(&opt, "log_level", "loud", err, sizeof(err)), CONDUIT_EINVAL);
    CHECK_EQ(conduit_options_set(&opt, "no_such_key", "1", err, sizeof(err)), CONDUIT_EINVAL);
    CHECK(strstr(err, "no_such_key") != NULL);
    conduit_options_fini(&opt);
}

TEST(lists)
{
    conduit_options opt;
    conduit_options_init(&opt);
    char err[256];
    CHECK_EQ(conduit_options_clear(&opt, "listen"), 0);
    CHECK_EQ(opt.n_listen, 0);
    for (int i = 0; i < CONDUIT_MAX_LISTEN; i++)
        CHECK_EQ(conduit_options_set(&opt, "listen", "127.0.0.1:1", err, sizeof(err)), 0);
    CHECK_EQ(conduit_options_set(&opt, "listen", "127.0.0.1:1", err, sizeof(err)),
             CONDUIT_EINVAL);
    CHECK_EQ(opt.n_listen, CONDUIT_MAX_LISTEN);
    conduit_options_fini(&opt);
}

TEST(environment)
{
    conduit_options opt;
    conduit_options_init(&opt);
    char err[256];
    char e0[] = "PATH=/bin", e1[] = "CONDUIT_WORKERS=3",
         e2[] = "CONDUIT_LISTEN=127.0.0.1:1,[::1]:2", e3[] = "CONDUIT_SERVICE_HOST=x";
    char *env[] = {e0, e1, e2, e3, NULL};
    CHECK_EQ(conduit_options_load_env(&opt, env, err, sizeof(err)), 0);
    CHECK_EQ(opt.workers, 3);
    CHECK_EQ(opt.n_listen, 2);
    CHECK_STR(opt.listen[1], "[::1]:2");
    char b0[] = "CONDUIT_WORKERS=many";
    char *bad[] = {b0, NULL};
    CHECK_EQ(conduit_options_load_env(&opt, bad, err, sizeof(err)), CONDUIT_EINVAL);
    CHECK(strstr(err, "CONDUIT_WORKERS") != NULL);
    conduit_options_fini(&opt);
}

static char *write_file(const char *text)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/conduit-test-%d.yaml", (int)getpid());
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

TEST(yaml_file)
{
    conduit_options opt;
    conduit_options_init(&opt);
    char err[256];
    char *path = write_file("# comment\nworkers: 2\nlisten:\n  - 127.0.0.1:9000\n"
                            "  - \"[::1]:9001\"\nws:\n  max_message_size: 64k\n"
                            "  heartbeat_interval: 5\necho_enabled: no\n");
    CHECK_EQ(conduit_options_load_file(&opt, path, err, sizeof(err)), 0);
    CHECK_EQ(opt.workers, 2);
    CHECK_EQ(opt.n_listen, 2);
    CHECK_STR(opt.listen[0], "127.0.0.1:9000");
    CHECK_EQ(opt.ws_max_message_size, 65536);
    CHECK_EQ(opt.ws_heartbeat_interval_s, 5);
    CHECK(!opt.echo_enabled);
    CHECK_STR(opt.config_file, path);

    path = write_file("workers: 2\nbogus_key: 1\n");
    CHECK_EQ(conduit_options_load_file(&opt, path, err, sizeof(err)), CONDUIT_EINVAL);
    CHECK(strstr(err, ":2: bogus_key: unknown option") != NULL);
    path = write_file("ws:\n  max_message_size: lots\n");
    CHECK_EQ(conduit_options_load_file(&opt, path, err, sizeof(err)), CONDUIT_EINVAL);
    CHECK(strstr(err, "ws_max_message_size") != NULL);
    path = write_file("workers: [1, 2]\n");
    CHECK_EQ(conduit_options_load_file(&opt, path, err, sizeof(err)), CONDUIT_EINVAL);
    CHECK(strstr(err, "workers: expected a single value") != NULL);
    path = write_file("workers: \"unterminated\n");
    CHECK_EQ(conduit_options_load_file(&opt, path, err, sizeof(err)), CONDUIT_EINVAL);
    CHECK(strstr(err, "invalid YAML") != NULL);
    path = write_file("- a\n- b\n");
    CHECK_EQ(conduit_options_load_file(&opt, path, err, sizeof(err)), CONDUIT_EINVAL);
    CHECK_EQ(conduit_options_load_file(&opt, "/nonexistent/x.yaml", err, sizeof(err)),
             CONDUIT_EINVAL);
    unlink(path);
    conduit_options_fini(&opt);
}

TEST(flag_names)
{
    CHECK(cd_conf_find_flag("ws-max-message-size") == cd_conf_find("ws_max_message_size"));
    CHECK(cd_conf_find_flag("ws_max_message_size") == NULL);
    CHECK(cd_conf_find_flag("nope") == NULL);
}

TEST(reference_lists_every_key)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cd_conf_print_reference(f);
    fclose(f);
    size_t n;
    const cd_conf_entry *t = cd_conf_table(&n);
    for (size_t i = 0; i < n; i++)
        CHECK(strstr(buf, t[i].help) != NULL);
    CHECK(strstr(buf, "`CONDUIT_WS_MAX_MESSAGE_SIZE`") != NULL);
    CHECK(strstr(buf, "`--ws-max-message-size`") != NULL);
    free(buf);
}

int main(void)
{
    RUN(defaults_parse);
    RUN(default_values);
    RUN(typed_values_and_errors);
    RUN(lists);
    RUN(environment);
    RUN(yaml_file);
    RUN(flag_names);
    RUN(reference_lists_every_key);
    return test_main_end();
}
