/* test_mpsc.c - the intrusive MPSC queue: FIFO on one thread, and per-
 * producer order with nothing lost or doubled under 4 producer threads.
 * The threaded test is also meant to run under -fsanitize=thread. */
#include "mpsc.h"

#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>

#include "common.h"
#include "test.h"

typedef struct item {
    cd_mpsc_node node;
    uint32_t producer;
    uint32_t seq;
} item;

static item *pop_item(cd_mpsc *q)
{
    cd_mpsc_node *n = cd_mpsc_pop(q);
    return n ? CD_CONTAINER_OF(n, item, node) : NULL;
}

TEST(empty_queue)
{
    cd_mpsc q;
    cd_mpsc_init(&q);
    CHECK(cd_mpsc_pop(&q) == NULL);
    CHECK(cd_mpsc_pop(&q) == NULL);
}

TEST(single_thread_fifo)
{
    enum { N = 1000 };
    static item it[N];
    cd_mpsc q;

    cd_mpsc_init(&q);
    for (uint32_t i = 0; i < N; i++) {
        it[i].seq = i;
        cd_mpsc_push(&q, &it[i].node);
    }
    int n_wrong = 0;
    for (uint32_t i = 0; i < N; i++) {
        item *p = pop_item(&q);
        n_wrong += p == NULL || p->seq != i;
    }
    CHECK_EQ(n_wrong, 0);
    CHECK(cd_mpsc_pop(&q) == NULL);
}

TEST(one_node_at_a_time)
{
    /* A lone node exercises the stub re-insertion on every pop. */
    item a = {.seq = 1}, b = {.seq = 2};
    cd_mpsc q;

    cd_mpsc_init(&q);
    for (int round = 0; round < 3; round++) {
        cd_mpsc_push(&q, &a.node);
        item *p = pop_item(&q);
        CHECK(p == &a);
        CHECK(cd_mpsc_pop(&q) == NULL);
        cd_mpsc_push(&q, &b.node);
        cd_mpsc_push(&q, &a.node);   /* a is free again: reuse it */
        CHECK(pop_item(&q) == &b);
        CHECK(pop_item(&q) == &a);
        CHECK(cd_mpsc_pop(&q) == NULL);
    }
}

TEST(interleaved_push_pop)
{
    enum { N = 64 };
    item it[N];
    cd_mpsc q;
    uint32_t next_pop = 0, next_push = 0;

    cd_mpsc_init(&q);
    /* Push two, pop one, until all are pushed; then drain. */
    while (next_push < N) {
        for (int k = 0; k < 2 && next_push < N; k++) {
            it[next_push].seq = next_push;
            cd_mpsc_push(&q, &it[next_push].node);
            next_push++;
        }
        item *p = pop_item(&q);
        CHECK(p != NULL && p->seq == next_pop);
        next_pop++;
    }
    item *p;
    while ((p = pop_item(&q)) != NULL) {
        CHECK_EQ(p->seq, next_pop);
        next_pop++;
    }
    CHECK_EQ(next_pop, N);
}

enum { N_PRODUCERS = 4, N_PER_PRODUCER = 200000 };

typedef struct producer {
    pthread_t thread;
    cd_mpsc *q;
    uint32_t id;
    item *items;
} producer;

static void *produce(void *arg)
{
    producer *p = arg;
    for (uint32_t i = 0; i < N_PER_PRODUCER; i++) {
        p->items[i].producer = p->id;
        p->items[i].seq = i;
        cd_mpsc_push(p->q, &p->items[i].node);
        if ((i & 1023) == 0)
            sched_yield();           /* vary the interleaving a little */
    }
    return NULL;
}

TEST(four_producers)
{
    producer prod[N_PRODUCERS];
    uint32_t next_seq[N_PRODUCERS] = {0};
    cd_mpsc q;
    size_t total = 0, n_empty = 0;
    int n_wrong = 0, n_started = 0;

    memset(prod, 0, sizeof(prod));
    cd_mpsc_init(&q);
    for (uint32_t i = 0; i < N_PRODUCERS; i++) {
        prod[i].q = &q;
        prod[i].id = i;
        prod[i].items = calloc(N_PER_PRODUCER, sizeof(item));
        CHECK(prod[i].items != NULL);
        if (prod[i].items == NULL)
            goto out;
    }
    for (int i = 0; i < N_PRODUCERS; i++) {
        int rc = pthread_create(&prod[i].thread, NULL, produce, &prod[i]);
        CHECK_EQ(rc, 0);
        if (rc != 0)
            goto out;
        n_started++;
    }
    while (total < (size_t)N_PRODUCERS * N_PER_PRODUCER) {
        item *it = pop_item(&q);
        if (it == NULL) {
            n_empty++;
            sched_yield();
            continue;
        }
        if (it->producer >= N_PRODUCERS || it->seq != next_seq[it->producer])
            n_wrong++;
        else
            next_seq[it->producer]++;
        total++;
    }
    CHECK_EQ(n_wrong, 0);
    CHECK_EQ(total, (size_t)N_PRODUCERS * N_PER_PRODUCER);
    for (int i = 0; i < N_PRODUCERS; i++)
        CHECK_EQ(next_seq[i], N_PER_PRODUCER);
out:
    for (int i = 0; i < n_started; i++)
        CHECK_EQ(pthread_join(prod[i].thread, NULL), 0);
    CHECK(cd_mpsc_pop(&q) == NULL);
    for (int i = 0; i < N_PRODUCERS; i++)
        free(prod[i].items);
    printf("  # %zu empty pops while producers ran\n", n_empty);
}

int main(void)
{
    RUN(empty_queue);
    RUN(single_thread_fifo);
    RUN(one_node_at_a_time);
    RUN(interleaved_push_pop);
    RUN(four_producers);
    return test_main_end();
}
