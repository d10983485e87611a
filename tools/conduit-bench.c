/* conduit-bench.c - WebSocket load generator: options, the run, the report.
 *
 * Modes: echo, fanout, connect, idle, churn (see usage()).  The main thread
 * of the first process coordinates: it starts the workers (threads, and
 * with --processes forked copies, each running its threads), waits until
 * every worker has finished set-up, then publishes the phase times (go,
 * warm-up end, window end) in shared memory, prints progress, samples the
 * server's memory in idle mode, and at the end merges the workers' results
 * (histograms by adding buckets; forked workers send theirs over a pipe)
 * into one JSON object on stdout.  Exit status: 0, 1 if any connection
 * failed unexpectedly, 2 for a usage error. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_core.h"
#include "bench_ws.h"

#define EXIT_FAILED 1
#define EXIT_USAGE 2
#define NS_PER_S 1000000000ull
#define POLL_NS 5000000ull           /* coordinator tick */
#define SETTLE_NS 200000000ull       /* fanout: subscriptions take effect */
#define FD_RESERVE 64                /* descriptors besides connections */

static const char default_pub_message[] =
    "{\"type\":\"publish\",\"channel\":\"{room}\",\"data\":{\"ts\":\"ts={ts}\",\"pad\":\"{pad}\"}}";

/* The only global state: a signal handler can reach nothing else. */
static cd_bench_shared *volatile g_shared;
static volatile sig_atomic_t g_interrupted;

static void usage(FILE *out)
{
    fprintf(out,
        "usage: conduit-bench MODE [options]\n"
        "\n"
        "A WebSocket load generator (epoll, one thread per process by default).\n"
        "Prints one JSON object on stdout; progress once a second on stderr for\n"
        "runs longer than 3 s.  Exit status 1 if any connection failed.\n"
        "\n"
        "Modes:\n"
        "  echo     C connections, P messages of S bytes in flight on each; each\n"
        "           message carries its send time (8 bytes binary, or 16 hex chars\n"
        "           text); reports echoes/s, bytes/s, latency p50/p99/p999/max\n"
        "  fanout   C subscribers in R rooms, one publisher (one per room when\n"
        "           --pub-path names {room}); reports deliveries/s, latency\n"
        "  connect  handshakes as fast as possible, --concurrency in flight; each\n"
        "           connection closes after its 101; reports handshakes/s, latency\n"
        "  idle     open C connections, hold them; with --server-pid reports the\n"
        "           server's memory per connection\n"
        "  churn    C connections each cycle connect, one echo, close; cycles/s\n"
        "\n"
        "Common options:\n"
        "  --url ws://HOST:PORT/PATH  target (default ws://127.0.0.1:8080/echo)\n"
        "  --connections N     connections (echo, idle, churn; default 100)\n"
        "  --duration SEC      measured time (default 10)\n"
        "  --warmup SEC        unmeasured time before it (default 1 echo/fanout, else 0)\n"
        "  --concurrency N     connect: handshakes in flight (default 64); other\n"
        "                      modes: connection attempts in flight (default 256)\n"
        "  --timeout SEC       handshake deadline (default 10)\n"
        "  --source-ips N      bind connection i to 127.0.0.(1 + i %% N); 127.x only\n"
        "  --processes N       fork N copies, each with its share (default 1)\n"
        "  --threads N         worker threads per process (default 1)\n"
        "  --reset             close with an RST instead of a close handshake\n"
        "  --quiet             no progress lines\n"
        "  --help\n"
        "\n"
        "echo / churn:\n"
        "  --inflight P        messages in flight per connection (default 1)\n"
        "  --size S            message bytes (default 16; >= 16 text, >= 8 binary)\n"
        "  --binary            binary messages (default text)\n"
        "\n"
        "fanout:\n"
        "  --subscribers C     subscriber connections (default 100)\n"
        "  --rooms R           rooms; subscriber i joins room i %% R (default 1)\n"
        "  --rate N            publishes/s, open loop, timestamps are the scheduled\n"
        "                      send times; 0 = as fast as deliveries come back with\n"
        "                      at most --inflight publishes outstanding (default 0)\n"
        "  --inflight P        (default 16)\n"
        "  --size S            pad each publish to S bytes with {pad} (default 0)\n"
        "  --sub-path T        subscriber path template (default /ws/{room})\n"
        "  --sub-message T     text each subscriber sends once open (default none)\n"
        "  --pub-path T        publisher path (default /ws); if it names {room},\n"
        "                      one publisher per room\n"
        "  --pub-message T     publish template (default the native protocol:\n"
        "                      %s)\n"
        "  Templates: {room} room number, {ts} send time as 16 hex digits (must be\n"
        "  written \"ts={ts}\": subscribers find deliveries by the \"ts=\" marker),\n"
        "  {pad} padding.\n"
        "\n"
        "connect:\n"
        "  --count N           stop after N handshakes instead of --duration\n"
        "\n"
        "idle:\n"
        "  --hold SEC          how long to hold the connections (default 10)\n"
        "  --server-pid PID    sample /proc/PID VmRSS and Private_* (smaps_rollup)\n"
        "                      before opening and min(1 s, hold/2) after all are\n"
        "                      open; reports (after - before) / open connections\n"
        "\n"
        "Results: rates count events inside the window only (after --warmup);\n"
        "latencies are in microseconds from a log-linear histogram (<0.8%% error).\n"
        "echo: send time to echo; fanout: publish time to delivery; connect and\n"
        "idle: connect() to the 101; churn: connect() to the echo.  fanout\n"
        "\"missing\" counts deliveries owed by publishes that had not arrived\n"
        "0.5 s after the window.  Pings are answered in every mode.\n",
        default_pub_message);
}

__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "conduit-bench: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see --help)\n");
    return EXIT_USAGE;
}

static bool parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < min || v > max)
        return false;
    *out = (uint32_t)v;
    return true;
}

static bool parse_seconds(const char *s, double *out)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !isfinite(v) || v < 0 || v > 86400)
        return false;
    *out = v;
    return true;
}

/* ws://HOST[:PORT][/PATH]; HOST is an IPv4 address or a name. */
static int parse_url(cd_bench_opts *o, const char *url, const char *default_path)
{
    const char *p;
    const char *slash;
    const char *colon;
    char name[256];
    size_t hlen;
    uint32_t port = 80;

    if (strlen(url) >= sizeof(o->url))
        return usage_error("--url too long: %s", url);
    snprintf(o->url, sizeof(o->url), "%s", url);
    if (strncmp(url, "ws://", 5) != 0)
        return usage_error("--url must start with ws:// (no TLS): %s", url);
    p = url + 5;
    slash = strchr(p, '/');
    hlen = slash ? (size_t)(slash - p) : strlen(p);
    if (hlen == 0 || hlen >= sizeof(o->host))
        return usage_error("bad host in --url: %s", url);
    memcpy(o->host, p, hlen);
    o->host[hlen] = '\0';
    snprintf(o->path, sizeof(o->path), "%s", slash ? slash : default_path);
    colon = strrchr(o->host, ':');
    hlen = colon ? (size_t)(colon - o->host) : strlen(o->host);
    if (colon && !parse_u32(colon + 1, 1, 65535, &port))
        return usage_error("bad port in --url: %s", url);
    if (hlen >= sizeof(name))
        return usage_error("bad host in --url: %s", url);
    memcpy(name, o->host, hlen);
    name[hlen] = '\0';
    o->addr.sin_family = AF_INET;
    o->addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, name, &o->addr.sin_addr) != 1) {
        struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
        struct addrinfo *ai;
        if (getaddrinfo(name, NULL, &hints, &ai) != 0)
            return usage_error("cannot resolve %s", name);
        o->addr.sin_addr = ((struct sockaddr_in *)ai->ai_addr)->sin_addr;
        freeaddrinfo(ai);
    }
    return 0;
}

/* Expand {room}, {pad} and {ts} into a fresh payload; {ts} becomes 16
 * placeholder digits whose offsets are recorded. */
static int expand(const char *tmpl, uint32_t room, size_t pad_len, cd_bench_payload *out)
{
    char rs[16];
    size_t rlen = (size_t)snprintf(rs, sizeof(rs), "%u", room);
    size_t cap = strlen(tmpl) + pad_len + 1;
    size_t n = 0;
    bool padded = false;

    memset(out, 0, sizeof(*out));
    for (const char *t = tmpl; *t; t++)
        if (*t == '{')
            cap += 16 + rlen;        /* generous: every brace a field */
    if ((out->data = malloc(cap)) == NULL)
        return -1;
    for (const char *t = tmpl; *t;) {
        if (strncmp(t, "{room}", 6) == 0) {
            memcpy(out->data + n, rs, rlen);
            n += rlen;
            t += 6;
        } else if (strncmp(t, "{pad}", 5) == 0) {
            /* All the padding goes to the first {pad}. */
            if (!padded)
                memset(out->data + n, 'x', pad_len);
            n += padded ? 0 : pad_len;
            padded = true;
            t += 5;
        } else if (strncmp(t, "{ts}", 4) == 0) {
            if (out->n_ts == CD_BENCH_MAX_TS) {
                free(out->data);
                out->data = NULL;
                return -1;
            }
            out->ts_off[out->n_ts++] = n;
            memset(out->data + n, '0', CD_BENCH_TS_HEX);
            n += CD_BENCH_TS_HEX;
            t += 4;
        } else {
            out->data[n++] = (uint8_t)*t++;
        }
    }
    out->data[n] = '\0';
    out->len = n;
    return 0;
}

static char *expand_path(const char *tmpl, uint32_t room)
{
    cd_bench_payload p;

    if (expand(tmpl, room, 0, &p) != 0)
        return NULL;
    return (char *)p.data;
}

/* Precompute every message body and path, so the hot path only copies. */
static int build_payloads(cd_bench_opts *o)
{
    cd_bench_opts *m = o;

    if (o->mode == CD_BENCH_ECHO || o->mode == CD_BENCH_CHURN) {
        if ((m->echo.data = malloc(o->size)) == NULL)
            return -1;
        m->echo.len = o->size;
        for (uint32_t i = 0; i < o->size; i++)
            m->echo.data[i] = (uint8_t)('a' + i % 26);
        m->echo.ts_binary = o->binary;
        if (!o->binary) {
            m->echo.ts_off[0] = 0;
            m->echo.n_ts = 1;
        }
    }
    if (o->mode != CD_BENCH_FANOUT)
        return 0;
    m->n_publishers = strstr(o->pub_path, "{room}") ? o->rooms : 1;
    m->sub_paths = calloc(o->rooms, sizeof(*m->sub_paths));
    m->sub_msgs = calloc(o->rooms, sizeof(*m->sub_msgs));
    m->pub_msgs = calloc(o->rooms, sizeof(*m->pub_msgs));
    m->pub_paths = calloc(m->n_publishers, sizeof(*m->pub_paths));
    if (!m->sub_paths || !m->sub_msgs || !m->pub_msgs || !m->pub_paths)
        return -1;
    for (uint32_t r = 0; r < o->rooms; r++) {
        cd_bench_payload probe;
        if ((m->sub_paths[r] = expand_path(o->sub_path, r)) == NULL ||
            expand(o->sub_message, r, 0, &m->sub_msgs[r]) != 0 ||
            expand(o->pub_message, r, 0, &probe) != 0)
            return -1;
        size_t pad = o->size > probe.len ? o->size - probe.len : 0;
        free(probe.data);
        if (expand(o->pub_message, r, pad, &m->pub_msgs[r]) != 0)
            return -1;
    }
    for (uint32_t p = 0; p < m->n_publishers; p++)
        if ((m->pub_paths[p] = expand_path(o->pub_path, p)) == NULL)
            return -1;
    return 0;
}

/* Is every {ts} written as "ts={ts}", the marker subscribers look for? */
static bool ts_marked(const char *tmpl)
{
    const char *t = strstr(tmpl, "{ts}");

    if (t == NULL)
        return false;
    for (; t != NULL; t = strstr(t + 4, "{ts}"))
        if (t - tmpl < 3 || strncmp(t - 3, "ts=", 3) != 0)
            return false;
    return true;
}

enum {
    OPT_URL = 256, OPT_CONNECTIONS, OPT_INFLIGHT, OPT_SIZE, OPT_BINARY, OPT_DURATION,
    OPT_WARMUP, OPT_SUBSCRIBERS, OPT_ROOMS, OPT_RATE, OPT_SUB_PATH, OPT_SUB_MESSAGE,
    OPT_PUB_PATH, OPT_PUB_MESSAGE, OPT_CONCURRENCY, OPT_COUNT, OPT_RESET, OPT_HOLD,
    OPT_SERVER_PID, OPT_SOURCE_IPS, OPT_PROCESSES, OPT_THREADS, OPT_TIMEOUT, OPT_QUIET,
    OPT_HELP,
};

static const struct option long_opts[] = {
    {"url", required_argument, NULL, OPT_URL},
    {"connections", required_argument, NULL, OPT_CONNECTIONS},
    {"inflight", required_argument, NULL, OPT_INFLIGHT},
    {"size", required_argument, NULL, OPT_SIZE},
    {"binary", no_argument, NULL, OPT_BINARY},
    {"duration", required_argument, NULL, OPT_DURATION},
    {"warmup", required_argument, NULL, OPT_WARMUP},
    {"subscribers", required_argument, NULL, OPT_SUBSCRIBERS},
    {"rooms", required_argument, NULL, OPT_ROOMS},
    {"rate", required_argument, NULL, OPT_RATE},
    {"sub-path", required_argument, NULL, OPT_SUB_PATH},
    {"sub-message", required_argument, NULL, OPT_SUB_MESSAGE},
    {"pub-path", required_argument, NULL, OPT_PUB_PATH},
    {"pub-message", required_argument, NULL, OPT_PUB_MESSAGE},
    {"concurrency", required_argument, NULL, OPT_CONCURRENCY},
    {"count", required_argument, NULL, OPT_COUNT},
    {"reset", no_argument, NULL, OPT_RESET},
    {"hold", required_argument, NULL, OPT_HOLD},
    {"server-pid", required_argument, NULL, OPT_SERVER_PID},
    {"source-ips", required_argument, NULL, OPT_SOURCE_IPS},
    {"processes", required_argument, NULL, OPT_PROCESSES},
    {"threads", required_argument, NULL, OPT_THREADS},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"quiet", no_argument, NULL, OPT_QUIET},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

/* Options whose default depends on the mode, and whether they were given. */
typedef struct given {
    bool inflight, warmup, concurrency, duration, connections, size;
    const char *url;
} given;

static int parse_one(cd_bench_opts *o, given *g, int opt, const char *arg)
{
    uint32_t u;
    double d;

    switch (opt) {
    case OPT_URL: g->url = arg; return 0;
    case OPT_BINARY: o->binary = true; return 0;
    case OPT_RESET: o->reset = true; return 0;
    case OPT_QUIET: o->quiet = true; return 0;
    case OPT_SUB_PATH: o->sub_path = arg; return 0;
    case OPT_SUB_MESSAGE: o->sub_message = arg; return 0;
    case OPT_PUB_PATH: o->pub_path = arg; return 0;
    case OPT_PUB_MESSAGE: o->pub_message = arg; return 0;
    case OPT_DURATION: case OPT_WARMUP: case OPT_HOLD: case OPT_TIMEOUT: case OPT_RATE:
        if (opt == OPT_RATE) {
            char *end;
            errno = 0;
            d = strtod(arg, &end);
            if (errno || end == arg || *end || !isfinite(d) || d < 0 || d > 1e9)
                return usage_error("bad --rate: %s", arg);
            o->rate = d;
            return 0;
        }
        if (!parse_seconds(arg, &d))
            return usage_error("bad number of seconds: %s", arg);
        if (opt == OPT_DURATION) { o->duration_s = d; g->duration = true; }
        if (opt == OPT_WARMUP) { o->warmup_s = d; g->warmup = true; }
        if (opt == OPT_HOLD) o->hold_s = d;
        if (opt == OPT_TIMEOUT) o->timeout_s = d;
        return 0;
    case OPT_COUNT:
        if (!parse_u32(arg, 1, UINT32_MAX, &u))
            return usage_error("bad --count: %s", arg);
        o->count = u;
        return 0;
    case OPT_SERVER_PID:
        if (!parse_u32(arg, 1, INT32_MAX, &u))
            return usage_error("bad --server-pid: %s", arg);
        o->server_pid = (int)u;
        return 0;
    default:
        break;
    }
    if (!parse_u32(arg, opt == OPT_SOURCE_IPS || opt == OPT_SIZE ? 0 : 1, 100000000, &u))
        return usage_error("bad number: %s", arg);
    switch (opt) {
    case OPT_CONNECTIONS: case OPT_SUBSCRIBERS: o->connections = u; g->connections = true; break;
    case OPT_INFLIGHT: o->inflight = u; g->inflight = true; break;
    case OPT_SIZE: o->size = u; g->size = true; break;
    case OPT_ROOMS: o->rooms = u; break;
    case OPT_CONCURRENCY: o->concurrency = u; g->concurrency = true; break;
    case OPT_SOURCE_IPS: o->source_ips = u; break;
    case OPT_PROCESSES: o->processes = u; break;
    case OPT_THREADS: o->threads = u; break;
    default: return usage_error("unknown option");
    }
    return 0;
}

static int parse_mode(const char *s, cd_bench_mode *m)
{
    static const char *const names[] = {"echo", "fanout", "connect", "idle", "churn"};

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(s, names[i]) == 0) {
            *m = (cd_bench_mode)i;
            return 0;
        }
    }
    return usage_error("unknown mode: %s", s);
}

/* Mode-dependent defaults and cross-option checks. */
static int finish_opts(cd_bench_opts *o, const given *g)
{
    cd_bench_mode m = o->mode;
    int rc;

    if (!g->inflight)
        o->inflight = m == CD_BENCH_FANOUT ? 16 : 1;
    if (!g->warmup)
        o->warmup_s = (m == CD_BENCH_ECHO || m == CD_BENCH_FANOUT) ? 1 : 0;
    if (!g->concurrency)
        o->concurrency = m == CD_BENCH_CONNECT ? 64 : 256;
    if (!g->size)
        o->size = m == CD_BENCH_FANOUT ? 0 : 16;
    if (m == CD_BENCH_CONNECT && o->count != 0 && !g->duration)
        o->duration_s = 0;
    if ((rc = parse_url(o, g->url, m == CD_BENCH_FANOUT ? "/" : "/echo")) != 0)
        return rc;
    if (o->rooms > 1000000)
        return usage_error("--rooms is at most 1000000");
    if (o->source_ips > 254)
        return usage_error("--source-ips is at most 254");
    if (o->source_ips > 0 && (ntohl(o->addr.sin_addr.s_addr) >> 24) != 127)
        return usage_error("--source-ips needs a 127.x.x.x target, not %s", o->host);
    if ((m == CD_BENCH_ECHO || m == CD_BENCH_CHURN) && o->size < (o->binary ? 8u : 16u))
        return usage_error("--size must be at least %s for timestamps",
                           o->binary ? "8 (binary)" : "16 (text: 16 hex digits)");
    if (m != CD_BENCH_IDLE && m != CD_BENCH_CONNECT && o->duration_s <= 0)
        return usage_error("--duration must be positive");
    if (m == CD_BENCH_CONNECT && o->duration_s <= 0 && o->count == 0)
        return usage_error("connect needs --duration or --count");
    if (m == CD_BENCH_IDLE && o->hold_s <= 0)
        return usage_error("--hold must be positive");
    if (m == CD_BENCH_FANOUT && !ts_marked(o->pub_message))
        return usage_error("--pub-message needs {ts}, written as \"ts={ts}\": %s",
                           o->pub_message);
    o->n_workers = o->processes * o->threads;
    if (o->n_workers > 1024)
        return usage_error("at most 1024 workers (--processes x --threads)");
    return 0;
}

static int parse_args(cd_bench_opts *o, int argc, char **argv)
{
    given g = {.url = "ws://127.0.0.1:8080"};
    int opt;
    int rc;

    memset(o, 0, sizeof(*o));
    o->connections = 100;
    o->duration_s = 10;
    o->hold_s = 10;
    o->timeout_s = 10;
    o->rooms = 1;
    o->processes = 1;
    o->threads = 1;
    o->sub_path = "/ws/{room}";
    o->sub_message = "";
    o->pub_path = "/ws";
    o->pub_message = default_pub_message;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            exit(0);
        }
    }
    if (argc < 2 || argv[1][0] == '-')
        return usage_error("a mode comes first: echo, fanout, connect, idle or churn");
    if ((rc = parse_mode(argv[1], &o->mode)) != 0)
        return rc;
    optind = 2;
    while ((opt = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
        if (opt == '?' || opt == ':')
            return EXIT_USAGE;
        if ((rc = parse_one(o, &g, opt, optarg)) != 0)
            return rc;
    }
    if (optind < argc)
        return usage_error("unexpected argument: %s", argv[optind]);
    return finish_opts(o, &g);
}

/* Each connection is a descriptor: take the hard limit, and say so when
 * even that is too small for one process's share. */
static int raise_nofile(const cd_bench_opts *o)
{
    struct rlimit rl;
    uint64_t per_proc = (o->mode == CD_BENCH_CONNECT ? o->concurrency : o->connections) /
                            o->processes + 1 + (o->mode == CD_BENCH_FANOUT ? o->rooms : 0);

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        perror("conduit-bench: getrlimit");
        return -1;
    }
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        perror("conduit-bench: setrlimit");
        return -1;
    }
    if (rl.rlim_cur != RLIM_INFINITY && per_proc + FD_RESERVE > rl.rlim_cur) {
        fprintf(stderr,
                "conduit-bench: %llu connections per process exceed the descriptor "
                "limit %llu; use --processes\n",
                (unsigned long long)per_proc, (unsigned long long)rl.rlim_cur);
        return -1;
    }
    return 0;
}

static void on_signal(int sig)
{
    (void)sig;
    g_interrupted = 1;
    /* A lock-free atomic store is async-signal-safe. */
    if (g_shared != NULL)
        atomic_store_explicit(&g_shared->stop, 1, memory_order_relaxed);
}

static int install_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    if (sigemptyset(&sa.sa_mask) != 0 || sigaction(SIGINT, &sa, NULL) != 0 ||
        sigaction(SIGTERM, &sa, NULL) != 0) {
        perror("conduit-bench: sigaction");
        return -1;
    }
    return 0;
}

/* /proc/PID memory, in bytes: VmRSS, and Private_Clean + Private_Dirty
 * from smaps_rollup (-1 where unavailable). */
typedef struct mem_sample {
    int64_t rss;
    int64_t private_bytes;
} mem_sample;

static int64_t proc_sum_kb(const char *path, const char *const *keys, size_t n_keys)
{
    FILE *f = fopen(path, "r");
    char line[256];
    int64_t total = -1;

    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        for (size_t i = 0; i < n_keys; i++) {
            size_t klen = strlen(keys[i]);
            long long kb;
            if (strncmp(line, keys[i], klen) == 0 && sscanf(line + klen, "%lld", &kb) == 1)
                total = (total < 0 ? 0 : total) + kb * 1024;
        }
    }
    if (fclose(f) != 0)
        return -1;
    return total;
}

static mem_sample sample_memory(int pid)
{
    static const char *const rss[] = {"VmRSS:"};
    static const char *const priv[] = {"Private_Clean:", "Private_Dirty:"};
    char path[64];
    mem_sample m;

    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    m.rss = proc_sum_kb(path, rss, 1);
    snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", pid);
    m.private_bytes = proc_sum_kb(path, priv, 2);
    return m;
}

/* What the coordinator saw, for the report. */
typedef struct coord {
    uint64_t t_start;
    uint64_t t_ready;
    uint64_t t_measure;
    bool has_mem;
    mem_sample mem_before;
    mem_sample mem_after;
    uint32_t open_at_sample;
    int64_t setup_ns;
} coord;

typedef enum live_field {
    LIVE_EVENTS,
    LIVE_PUBLISHED,
    LIVE_ERRORS,
    LIVE_OPEN,
    LIVE_READY,
    LIVE_DONE,
} live_field;

/* Sum one live counter over the first n workers. */
static uint64_t live_sum(const cd_bench_shared *sh, uint32_t n, live_field f)
{
    uint64_t s = 0;

    for (uint32_t i = 0; i < n; i++) {
        const cd_bench_live *l = &sh->live[i];
        switch (f) {
        case LIVE_EVENTS: s += atomic_load_explicit(&l->events, memory_order_relaxed); break;
        case LIVE_PUBLISHED: s += atomic_load_explicit(&l->published, memory_order_relaxed); break;
        case LIVE_ERRORS: s += atomic_load_explicit(&l->errors, memory_order_relaxed); break;
        case LIVE_OPEN: s += atomic_load_explicit(&l->open, memory_order_relaxed); break;
        case LIVE_READY: s += atomic_load_explicit(&l->ready, memory_order_acquire); break;
        case LIVE_DONE: s += atomic_load_explicit(&l->done, memory_order_acquire); break;
        }
    }
    return s;
}

static void go(const cd_bench_opts *o, cd_bench_shared *sh, coord *cs, uint64_t now)
{
    uint64_t warm = (uint64_t)(o->warmup_s * (double)NS_PER_S);
    uint64_t t_measure;
    uint64_t t_end;

    cs->t_ready = now;
    if (o->mode == CD_BENCH_FANOUT && warm < SETTLE_NS)
        warm = SETTLE_NS;
    if (o->mode == CD_BENCH_IDLE)
        warm = 0;
    t_measure = now + warm;
    cs->t_measure = t_measure;
    if (o->mode == CD_BENCH_IDLE)
        t_end = now + (uint64_t)(o->hold_s * (double)NS_PER_S);
    else if (o->duration_s > 0)
        t_end = t_measure + (uint64_t)(o->duration_s * (double)NS_PER_S);
    else
        t_end = UINT64_MAX;
    atomic_store_explicit(&sh->t_pub_ns, now + (o->mode == CD_BENCH_FANOUT ? SETTLE_NS : 0),
                          memory_order_relaxed);
    atomic_store_explicit(&sh->t_measure_ns, t_measure, memory_order_relaxed);
    atomic_store_explicit(&sh->t_end_ns, t_end, memory_order_relaxed);
    atomic_store_explicit(&sh->t_ready_ns, now, memory_order_release);
}

static void progress(const cd_bench_opts *o, const cd_bench_shared *sh, const coord *cs,
                     uint64_t now, uint64_t *last_events, uint64_t *last_pub)
{
    static const char *const what[] = {"msgs/s", "deliveries/s", "handshakes/s", "open",
                                       "cycles/s"};
    uint32_t n = o->n_workers;
    uint64_t ev = live_sum(sh, n, LIVE_EVENTS);
    uint64_t pub = live_sum(sh, n, LIVE_PUBLISHED);
    double el = (double)(now - cs->t_start) / 1e9;

    fprintf(stderr, "conduit-bench: %6.1fs %-9s open=%llu", el,
            cs->t_ready ? "running" : "setting up", (unsigned long long)live_sum(sh, n, LIVE_OPEN));
    if (o->mode == CD_BENCH_FANOUT)
        fprintf(stderr, " publishes/s=%llu", (unsigned long long)(pub - *last_pub));
    if (o->mode != CD_BENCH_IDLE)
        fprintf(stderr, " %s=%llu", what[o->mode], (unsigned long long)(ev - *last_events));
    fprintf(stderr, " errors=%llu\n", (unsigned long long)live_sum(sh, n, LIVE_ERRORS));
    *last_events = ev;
    *last_pub = pub;
}

/* The coordinator's loop: runs until every worker is done. `pids` (NULL
 * without --processes) lets it notice a child that died without a word. */
static void coordinate(const cd_bench_opts *o, cd_bench_shared *sh, coord *cs,
                       const pid_t *pids, bool *child_gone)
{
    uint32_t n = o->n_workers;
    double planned = o->mode == CD_BENCH_IDLE ? o->hold_s : o->warmup_s + o->duration_s;
    bool show = !o->quiet && (planned > 3 || planned == 0);
    uint64_t next_tick = cs->t_start + NS_PER_S;
    uint64_t settle = (uint64_t)(fmin(1.0, o->hold_s / 2) * (double)NS_PER_S);
    uint64_t last_events = 0, last_pub = 0;
    struct timespec nap = {0, (long)POLL_NS};

    for (;;) {
        uint64_t now = cd_bench_now_ns();
        if (cs->t_ready == 0 && live_sum(sh, n, LIVE_READY) == n) {
            go(o, sh, cs, now);
            cs->setup_ns = (int64_t)(now - cs->t_start);
        }
        if (o->mode == CD_BENCH_IDLE && o->server_pid && !cs->has_mem && cs->t_ready &&
            now >= cs->t_ready + settle && !atomic_load(&sh->stop)) {
            cs->mem_after = sample_memory(o->server_pid);
            cs->open_at_sample = (uint32_t)live_sum(sh, n, LIVE_OPEN);
            cs->has_mem = true;
        }
        /* Echo, idle and fan-out connections are never replaced: once all
         * are gone there is nothing left to measure. */
        if (cs->t_ready && o->mode != CD_BENCH_CONNECT && o->mode != CD_BENCH_CHURN &&
            live_sum(sh, n, LIVE_OPEN) == 0)
            atomic_store(&sh->stop, 1);
        if (live_sum(sh, n, LIVE_DONE) == n)
            return;
        for (uint32_t p = 0; pids != NULL && p < o->processes; p++) {
            int status;
            if (!child_gone[p] && waitpid(pids[p], &status, WNOHANG) == pids[p]) {
                child_gone[p] = true;
                /* Its workers will never say done: do it for them. */
                for (uint32_t t = 0; t < o->threads; t++) {
                    atomic_store(&sh->live[p * o->threads + t].ready, 1);
                    atomic_store(&sh->live[p * o->threads + t].done, 1);
                }
            }
        }
        /* Count mode has no planned length: show progress once it is long. */
        if (show && now >= next_tick) {
            if (planned > 0 || now - cs->t_start > 3 * NS_PER_S)
                progress(o, sh, cs, now, &last_events, &last_pub);
            else
                last_events = live_sum(sh, n, LIVE_EVENTS);
            next_tick += NS_PER_S;
        }
        (void)nanosleep(&nap, NULL); /* woken early by a signal: fine */
    }
}

typedef struct thread_arg {
    const cd_bench_opts *o;
    cd_bench_shared *sh;
    uint32_t id;
    cd_bench_result *res;
    pthread_t tid;
    bool started;
} thread_arg;

static void *thread_main(void *p)
{
    thread_arg *a = p;

    (void)cd_bench_worker_run(a->o, a->sh, a->id, a->res);
    return NULL;
}

/* Start workers first..first+n-1 as threads.  A worker that could not be
 * started is marked done with an error so nobody waits for it. */
static void start_threads(const cd_bench_opts *o, cd_bench_shared *sh, uint32_t first,
                          uint32_t n, thread_arg *args, cd_bench_result *res)
{
    for (uint32_t i = 0; i < n; i++) {
        thread_arg *a = &args[i];
        int err;
        a->o = o;
        a->sh = sh;
        a->id = first + i;
        a->res = &res[i];
        memset(a->res, 0, sizeof(*a->res));
        if ((err = pthread_create(&a->tid, NULL, thread_main, a)) != 0) {
            fprintf(stderr, "conduit-bench: pthread_create: %s\n", strerror(err));
            a->res->err_io = 1;
            atomic_store(&sh->live[a->id].ready, 1);
            atomic_store(&sh->live[a->id].done, 1);
            continue;
        }
        a->started = true;
    }
}

static void join_threads(thread_arg *args, uint32_t n, cd_bench_result *merged,
                         cd_bench_result *res)
{
    for (uint32_t i = 0; i < n; i++) {
        if (args[i].started) {
            int err = pthread_join(args[i].tid, NULL);
            if (err != 0)
                fprintf(stderr, "conduit-bench: pthread_join: %s\n", strerror(err));
        }
        cd_bench_result_merge(merged, &res[i]);
    }
}

static bool write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        p += n;
        len -= (size_t)n;
    }
    return true;
}

static bool read_all(int fd, void *buf, size_t len)
{
    char *p = buf;

    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        p += n;
        len -= (size_t)n;
    }
    return true;
}

/* A forked copy: run this process's threads, send the merged result. */
static void child_main(const cd_bench_opts *o, cd_bench_shared *sh, uint32_t proc, int fd,
                       thread_arg *args, cd_bench_result *res, cd_bench_result *merged)
{
    start_threads(o, sh, proc * o->threads, o->threads, args, res);
    memset(merged, 0, sizeof(*merged));
    cd_bench_hist_init(&merged->hist);
    join_threads(args, o->threads, merged, res);
    _exit(write_all(fd, merged, sizeof(*merged)) ? 0 : EXIT_FAILED);
}

static int run_processes(const cd_bench_opts *o, cd_bench_shared *sh, coord *cs,
                         thread_arg *args, cd_bench_result *res, cd_bench_result *total)
{
    pid_t *pids = calloc(o->processes, sizeof(*pids));
    int *fds = calloc(o->processes, sizeof(*fds));
    bool *gone = calloc(o->processes, sizeof(*gone));
    cd_bench_result *one = malloc(sizeof(*one));
    int rc = 0;

    if (!pids || !fds || !gone || !one) {
        fprintf(stderr, "conduit-bench: out of memory\n");
        free(pids);
        free(fds);
        free(gone);
        free(one);
        return -1;
    }
    /* Buffered output would be flushed once per copy at exit. */
    (void)fflush(NULL);
    for (uint32_t p = 0; p < o->processes; p++) {
        int pfd[2];
        fds[p] = -1;
        if (pipe(pfd) != 0 || (pids[p] = fork()) < 0) {
            perror("conduit-bench: starting a process");
            atomic_store(&sh->stop, 1);
            gone[p] = true;
            for (uint32_t t = 0; t < o->threads; t++) {
                atomic_store(&sh->live[p * o->threads + t].ready, 1);
                atomic_store(&sh->live[p * o->threads + t].done, 1);
            }
            rc = -1;
            continue;
        }
        if (pids[p] == 0) {
            (void)close(pfd[0]);
            child_main(o, sh, p, pfd[1], args, res, one);
        }
        (void)close(pfd[1]);         /* the child holds the write end */
        fds[p] = pfd[0];
    }
    coordinate(o, sh, cs, pids, gone);
    for (uint32_t p = 0; p < o->processes; p++) {
        int status = 0;
        if (fds[p] < 0)
            continue;
        if (read_all(fds[p], one, sizeof(*one))) {
            cd_bench_result_merge(total, one);
        } else {
            fprintf(stderr, "conduit-bench: process %u sent no result\n", p);
            total->err_io++;
            rc = -1;
        }
        (void)close(fds[p]);
        if (!gone[p] && waitpid(pids[p], &status, 0) < 0)
            perror("conduit-bench: waitpid");
    }
    free(pids);
    free(fds);
    free(gone);
    free(one);
    return rc;
}

/* A JSON string: the URL comes from the command line, quotes and all. */
static void json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static void json_latency(const char *name, const cd_bench_hist *h, bool p999)
{
    printf(",\"%s\":{\"p50\":%.1f,\"p99\":%.1f", name,
           (double)cd_bench_hist_quantile(h, 0.50) / 1e3,
           (double)cd_bench_hist_quantile(h, 0.99) / 1e3);
    if (p999)
        printf(",\"p999\":%.1f", (double)cd_bench_hist_quantile(h, 0.999) / 1e3);
    printf(",\"max\":%.1f,\"samples\":%llu}", (double)h->max_ns / 1e3,
           (unsigned long long)h->count);
}

static void json_errors(const cd_bench_result *r)
{
    printf(",\"errors\":%llu,\"error_detail\":{\"connect\":%llu,\"handshake\":%llu,"
           "\"timeout\":%llu,\"protocol\":%llu,\"io\":%llu,\"eof\":%llu,"
           "\"closed_by_server\":%llu,\"bad_echo\":%llu}",
           (unsigned long long)cd_bench_result_errors(r), (unsigned long long)r->err_connect,
           (unsigned long long)r->err_handshake, (unsigned long long)r->err_timeout,
           (unsigned long long)r->err_protocol, (unsigned long long)r->err_io,
           (unsigned long long)r->err_eof, (unsigned long long)r->closed_by_server,
           (unsigned long long)r->err_payload);
}

static void report(const cd_bench_opts *o, const coord *cs, const cd_bench_result *r)
{
    static const char *const names[] = {"echo", "fanout", "connect", "idle", "churn"};
    uint64_t t_measure = cs->t_measure;
    double dur;

    if (o->mode == CD_BENCH_CONNECT && o->duration_s <= 0)
        dur = r->t_last_open_ns > t_measure ? (double)(r->t_last_open_ns - t_measure) / 1e9 : 0;
    else
        dur = cs->t_ready && r->t_stop_ns > t_measure ? (double)(r->t_stop_ns - t_measure) / 1e9
                                                      : 0;
    double per_s = dur > 0 ? 1.0 / dur : 0;

    printf("{\"mode\":\"%s\",\"url\":", names[o->mode]);
    json_string(o->url);
    printf(",\"processes\":%u,\"threads\":%u", o->processes, o->threads);
    switch (o->mode) {
    case CD_BENCH_ECHO:
        printf(",\"connections\":%u,\"inflight\":%u,\"size\":%u,\"binary\":%s,"
               "\"duration_s\":%.3f,\"messages\":%llu,\"msgs_per_s\":%.1f,\"bytes_per_s\":%.1f",
               o->connections, o->inflight, o->size, o->binary ? "true" : "false", dur,
               (unsigned long long)r->events, (double)r->events * per_s,
               (double)r->bytes * per_s);
        json_latency("latency_us", &r->hist, true);
        break;
    case CD_BENCH_FANOUT:
        printf(",\"subscribers\":%u,\"rooms\":%u,\"publishers\":%u,\"rate\":%.1f,"
               "\"inflight\":%u,\"duration_s\":%.3f,\"published\":%llu,\"publish_per_s\":%.1f,"
               "\"deliveries\":%llu,\"deliveries_per_s\":%.1f,\"bytes_per_s\":%.1f",
               o->connections, o->rooms, o->n_publishers, o->rate, o->inflight, dur,
               (unsigned long long)r->published_window, (double)r->published_window * per_s,
               (unsigned long long)r->events, (double)r->events * per_s,
               (double)r->bytes * per_s);
        json_latency("latency_us", &r->hist, true);
        printf(",\"published_total\":%llu,\"expected_deliveries\":%llu,"
               "\"deliveries_total\":%llu,\"missing\":%lld,\"other_messages\":%llu",
               (unsigned long long)r->published, (unsigned long long)r->expected,
               (unsigned long long)r->events_total,
               (long long)r->expected - (long long)r->events_total,
               (unsigned long long)r->other_messages);
        break;
    case CD_BENCH_CONNECT:
        printf(",\"concurrency\":%u,\"reset\":%s,\"duration_s\":%.3f,\"handshakes\":%llu,"
               "\"handshakes_per_s\":%.1f,\"failures\":%llu",
               o->concurrency, o->reset ? "true" : "false", dur, (unsigned long long)r->events,
               (double)r->events * per_s, (unsigned long long)r->failures);
        json_latency("latency_us", &r->hist, true);
        break;
    case CD_BENCH_IDLE:
        printf(",\"connections\":%u,\"opened\":%llu,\"failures\":%llu,\"setup_s\":%.3f,"
               "\"hold_s\":%.1f",
               o->connections, (unsigned long long)r->opened, (unsigned long long)r->failures,
               (double)cs->setup_ns / 1e9, o->hold_s);
        json_latency("handshake_latency_us", &r->hist, false);
        if (o->server_pid && cs->has_mem && cs->open_at_sample > 0) {
            const mem_sample *b = &cs->mem_before, *a = &cs->mem_after;
            printf(",\"server_pid\":%d,\"open_at_sample\":%u,\"server_rss_before\":%lld,"
                   "\"server_rss_after\":%lld,\"server_rss_bytes_per_conn\":%.1f",
                   o->server_pid, cs->open_at_sample, (long long)b->rss, (long long)a->rss,
                   (double)(a->rss - b->rss) / cs->open_at_sample);
            if (b->private_bytes >= 0 && a->private_bytes >= 0)
                printf(",\"server_private_before\":%lld,\"server_private_after\":%lld,"
                       "\"server_private_bytes_per_conn\":%.1f",
                       (long long)b->private_bytes, (long long)a->private_bytes,
                       (double)(a->private_bytes - b->private_bytes) / cs->open_at_sample);
        }
        break;
    case CD_BENCH_CHURN:
        printf(",\"connections\":%u,\"size\":%u,\"reset\":%s,\"duration_s\":%.3f,"
               "\"cycles\":%llu,\"cycles_per_s\":%.1f,\"failures\":%llu",
               o->connections, o->size, o->reset ? "true" : "false", dur,
               (unsigned long long)r->events, (double)r->events * per_s,
               (unsigned long long)r->failures);
        json_latency("cycle_latency_us", &r->hist, true);
        break;
    }
    json_errors(r);
    printf(",\"close_timeouts\":%llu,\"interrupted\":%s}\n",
           (unsigned long long)r->close_timeouts, g_interrupted ? "true" : "false");
}

static void free_payloads(cd_bench_opts *o)
{
    free(o->echo.data);
    for (uint32_t r = 0; o->sub_paths != NULL && r < o->rooms; r++)
        free(o->sub_paths[r]);
    for (uint32_t r = 0; o->sub_msgs != NULL && r < o->rooms; r++)
        free(o->sub_msgs[r].data);
    for (uint32_t r = 0; o->pub_msgs != NULL && r < o->rooms; r++)
        free(o->pub_msgs[r].data);
    for (uint32_t p = 0; o->pub_paths != NULL && p < o->n_publishers; p++)
        free(o->pub_paths[p]);
    free(o->sub_paths);
    free(o->sub_msgs);
    free(o->pub_msgs);
    free(o->pub_paths);
}

/* Everything after option parsing; returns the exit status. */
static int run(cd_bench_opts *o)
{
    size_t sh_size = sizeof(cd_bench_shared) + o->n_workers * sizeof(cd_bench_live);
    thread_arg *args = calloc(o->threads, sizeof(*args));
    cd_bench_result *res = calloc(o->threads, sizeof(*res));
    cd_bench_result *total = calloc(1, sizeof(*total));
    cd_bench_shared *sh;
    coord cs;
    int rc = EXIT_FAILED;

    /* Shared with forked copies: live counters and phase times. */
    sh = mmap(NULL, sh_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED || !args || !res || !total) {
        fprintf(stderr, "conduit-bench: out of memory\n");
        goto out;
    }
    g_shared = sh;
    if (install_signals() != 0)
        goto out;
    memset(&cs, 0, sizeof(cs));
    cd_bench_hist_init(&total->hist);
    if (o->mode == CD_BENCH_IDLE && o->server_pid) {
        cs.mem_before = sample_memory(o->server_pid);
        if (cs.mem_before.rss < 0) {
            fprintf(stderr, "conduit-bench: cannot read /proc/%d/status\n", o->server_pid);
            goto out;
        }
    }
    cs.t_start = cd_bench_now_ns();
    if (o->processes > 1) {
        rc = run_processes(o, sh, &cs, args, res, total);
    } else {
        start_threads(o, sh, 0, o->threads, args, res);
        coordinate(o, sh, &cs, NULL, NULL);
        join_threads(args, o->threads, total, res);
        rc = 0;
    }
    report(o, &cs, total);
    if (o->mode == CD_BENCH_IDLE && o->server_pid && !cs.has_mem)
        fprintf(stderr, "conduit-bench: no memory sample: the run ended before set-up did\n");
    if (fflush(stdout) != 0 || rc != 0 || cd_bench_result_errors(total) > 0 || total->err_io > 0)
        rc = EXIT_FAILED;
out:
    g_shared = NULL;                 /* before the handler could touch it */
    if (sh != MAP_FAILED && munmap(sh, sh_size) != 0)
        perror("conduit-bench: munmap");
    free(args);
    free(res);
    free(total);
    return rc;
}

int main(int argc, char **argv)
{
    cd_bench_opts o;
    int rc;

    if ((rc = parse_args(&o, argc, argv)) != 0)
        return rc;
    if (build_payloads(&o) != 0) {
        fprintf(stderr, "conduit-bench: out of memory building messages\n");
        rc = EXIT_FAILED;
    } else if (raise_nofile(&o) != 0) {
        rc = EXIT_FAILED;
    } else {
        rc = run(&o);
    }
    free_payloads(&o);
    return rc;
}
