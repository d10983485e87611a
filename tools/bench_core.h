/* bench_core.h - what conduit-bench's coordinator and its workers share.
 *
 * One run is W = processes x threads workers, each an epoll loop owning a
 * share of the connections (global connection i belongs to worker i % W).
 * The coordinator (the main thread of the first process) and the workers
 * talk through a cd_bench_shared block in MAP_SHARED memory: workers publish
 * live counters and readiness, the coordinator publishes the phase times.
 * Every field there has one writer.  Final results travel as cd_bench_result
 * bytes, over a pipe when the worker lives in a forked process. */
#ifndef CD_BENCH_CORE_H
#define CD_BENCH_CORE_H

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bench_hist.h"

typedef enum cd_bench_mode {
    CD_BENCH_ECHO,
    CD_BENCH_FANOUT,
    CD_BENCH_CONNECT,
    CD_BENCH_IDLE,
    CD_BENCH_CHURN,
} cd_bench_mode;

/* A message body with a timestamp to fill in at send time: 16 hex digits
 * at each of ts_off[0..n_ts), or, with ts_binary, 8 native-endian bytes at
 * offset 0 (binary echo).  Neither: sent as is. */
#define CD_BENCH_MAX_TS 4

typedef struct cd_bench_payload {
    uint8_t *data;
    size_t len;
    size_t ts_off[CD_BENCH_MAX_TS];
    size_t n_ts;
    bool ts_binary;
} cd_bench_payload;

typedef struct cd_bench_opts {
    cd_bench_mode mode;
    struct sockaddr_in addr;
    char host[280];                  /* Host header: "host:port" as given */
    char path[1024];                 /* from --url */
    char url[1400];
    uint32_t connections;            /* echo, idle, churn; subscribers */
    uint32_t inflight;
    uint32_t size;
    bool binary;
    double duration_s;               /* 0 with --count: run until done */
    double warmup_s;
    double hold_s;
    double timeout_s;                /* handshake deadline */
    uint32_t rooms;
    double rate;                     /* publishes/s; 0 = flow controlled */
    const char *sub_path;
    const char *sub_message;
    const char *pub_path;
    const char *pub_message;
    uint32_t concurrency;            /* connect: handshakes in flight;
                                      * others: connection attempts in flight */
    uint64_t count;                  /* connect: stop after this many */
    bool reset;
    int server_pid;
    uint32_t source_ips;
    uint32_t processes;
    uint32_t threads;
    bool quiet;
    /* Derived by the main program. */
    uint32_t n_workers;
    uint32_t n_publishers;           /* fanout: 1, or one per room when the
                                      * pub path names {room} */
    cd_bench_payload echo;           /* echo and churn message */
    char **sub_paths;                /* per room */
    cd_bench_payload *sub_msgs;      /* per room; len 0 = send nothing */
    char **pub_paths;                /* per publisher */
    cd_bench_payload *pub_msgs;      /* per room */
} cd_bench_opts;

/* Live state of one worker, one writer (the worker). */
typedef struct cd_bench_live {
    _Alignas(64) _Atomic uint64_t events;         /* echoes, deliveries, handshakes, cycles */
    _Atomic uint64_t published;      /* fanout publishes */
    _Atomic uint64_t expected;       /* fanout deliveries owed by publishes */
    _Atomic uint64_t errors;
    _Atomic uint32_t open;           /* connections past the handshake */
    _Atomic uint32_t ready;          /* set-up finished (open or failed) */
    _Atomic uint32_t done;           /* result written, loop left */
} cd_bench_live;                     /* one cache line: no false sharing */

typedef struct cd_bench_shared {
    /* Written by the coordinator; 0 = not yet decided. */
    _Atomic uint64_t t_ready_ns;     /* every worker finished set-up */
    _Atomic uint64_t t_pub_ns;       /* fanout: first publish */
    _Atomic uint64_t t_measure_ns;   /* measurement window start */
    _Atomic uint64_t t_end_ns;       /* window end; UINT64_MAX: by count */
    _Atomic int stop;                /* interrupted: finish now */
    cd_bench_live live[];
} cd_bench_shared;

typedef struct cd_bench_result {
    uint64_t events;                 /* in the window */
    uint64_t bytes;                  /* payload bytes received in the window */
    uint64_t events_total;
    uint64_t published;              /* fanout, whole run */
    uint64_t published_window;
    uint64_t expected;               /* fanout deliveries owed, whole run */
    uint64_t sent;                   /* data messages written */
    uint64_t opened;                 /* handshakes completed, whole run */
    uint64_t failures;               /* connections that failed */
    uint64_t closed_by_server;
    uint64_t close_timeouts;         /* our close got no answer in time */
    uint64_t other_messages;         /* received, not ours to measure */
    uint64_t err_connect;
    uint64_t err_handshake;
    uint64_t err_timeout;
    uint64_t err_protocol;
    uint64_t err_io;
    uint64_t err_eof;
    uint64_t err_payload;            /* echo that does not match what we sent */
    uint64_t t_first_open_ns;
    uint64_t t_last_open_ns;
    uint64_t t_stop_ns;              /* when the window closed for this worker */
    cd_bench_hist hist;
} cd_bench_result;

/* Errors that count against the exit code. */
uint64_t cd_bench_result_errors(const cd_bench_result *r);
void cd_bench_result_merge(cd_bench_result *into, const cd_bench_result *from);

/* Run worker `id` (0..n_workers-1) to completion: its share of the
 * connections, the phases published in `sh`, then a graceful close.
 * Returns 0, or -1 if the worker could not start (out of memory, no epoll). */
int cd_bench_worker_run(const cd_bench_opts *o, cd_bench_shared *sh, uint32_t id,
                        cd_bench_result *res);

uint64_t cd_bench_now_ns(void);

#endif
