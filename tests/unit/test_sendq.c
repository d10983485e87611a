/* Unit tests for sendq.c: send order across lanes, partial writes, pong
 * replacement, and that an empty queue holds no memory. */
#include "sendq.h"
#include "test.h"

static cd_frame *frame(char tag, size_t len)
{
    cd_frame *f = cd_frame_alloc(len);
    memset(f->data, tag, len);
    f->len = (uint32_t)len;
    return f;
}

/* Drain the queue n bytes at a time and return the byte stream. */
static size_t drain(cd_sendq *q, size_t step, char *out, size_t cap)
{
    size_t total = 0;
    while (!cd_sendq_is_empty(q)) {
        struct iovec iov[8];
        int n = cd_sendq_iov(q, iov, 8);
        size_t left = step;
        for (int i = 0; i < n && left > 0; i++) {
            size_t take = iov[i].iov_len < left ? iov[i].iov_len : left;
            if (total + take <= cap)
                memcpy(out + total, iov[i].iov_base, take);
            total += take;
            left -= take;
        }
        cd_sendq_consume(q, NULL, step - left);
    }
    return total;
}

TEST(control_before_data)
{
    cd_sendq q = {0};
    CHECK_EQ(cd_sendq_push(&q, NULL, frame('a', 3), false), 0);
    CHECK_EQ(cd_sendq_push(&q, NULL, frame('P', 2), true), 0);
    CHECK_EQ(cd_sendq_push(&q, NULL, frame('b', 2), false), 0);
    char out[16];
    size_t n = drain(&q, 100, out, sizeof(out));
    CHECK_EQ(n, 7);
    CHECK_MEM(out, "PPaaabb", 7);
    CHECK(q.s == NULL); /* nothing held once drained */
}

TEST(control_never_inside_a_partial_frame)
{
    for (size_t step = 1; step <= 8; step++) {
        cd_sendq q = {0};
        cd_sendq_push(&q, NULL, frame('a', 4), false);
        cd_sendq_push(&q, NULL, frame('b', 4), false);
        /* Write 2 bytes of 'a', then a control frame arrives. */
        struct iovec iov[4];
        cd_sendq_iov(&q, iov, 4);
        cd_sendq_consume(&q, NULL, 2);
        cd_sendq_push(&q, NULL, frame('P', 2), true);
        char out[16];
        size_t n = drain(&q, step, out, sizeof(out));
        CHECK_EQ(n, 8);
        CHECK_MEM(out, "aaPPbbbb", 8);
        CHECK_EQ(cd_sendq_bytes(&q), 0);
    }
}

TEST(replace_unsent_pong)
{
    cd_sendq q = {0};
    CHECK(cd_sendq_unsent_ctl_tail(&q) == NULL);
    cd_sendq_push(&q, NULL, frame('1', 2), true);
    cd_frame **tail = cd_sendq_unsent_ctl_tail(&q);
    CHECK(tail != NULL && (*tail)->data[0] == '1');
    /* Partly written: it may not be replaced. */
    cd_sendq_consume(&q, NULL, 1);
    CHECK(cd_sendq_unsent_ctl_tail(&q) == NULL);
    cd_sendq_clear(&q, NULL);
    CHECK_EQ(cd_sendq_bytes(&q), 0);
}

TEST(iov_limit)
{
    cd_sendq q = {0};
    for (int i = 0; i < 20; i++)
        cd_sendq_push(&q, NULL, frame((char)('a' + i), 1), false);
    struct iovec iov[8];
    CHECK_EQ(cd_sendq_iov(&q, iov, 8), 8);
    char out[32];
    CHECK_EQ(drain(&q, 3, out, sizeof(out)), 20);
    CHECK_MEM(out, "abcdefghijklmnopqrst", 20);
}

TEST(shared_frame_refcount)
{
    cd_sendq a = {0}, b = {0};
    cd_frame *f = frame('x', 10);
    cd_sendq_push(&a, NULL, cd_frame_ref(f), false);
    cd_sendq_push(&b, NULL, cd_frame_ref(f), false);
    CHECK_EQ(atomic_load(&f->refs), 3);
    cd_frame_unref(f);
    cd_sendq_clear(&a, NULL);
    CHECK_EQ(atomic_load(&f->refs), 1);
    cd_sendq_clear(&b, NULL);
}

TEST(drop_unsent_keeps_partial_head)
{
    cd_sendq q = {0};
    cd_sendq_push(&q, NULL, frame('a', 4), false);
    cd_sendq_push(&q, NULL, frame('b', 4), false);
    cd_sendq_push(&q, NULL, frame('P', 2), true);
    struct iovec iov[4];
    cd_sendq_iov(&q, iov, 4);
    cd_sendq_consume(&q, NULL, 1); /* 1 byte of the pong 'P' */
    cd_sendq_drop_unsent(&q, NULL);
    char out[16];
    size_t n = drain(&q, 3, out, sizeof(out));
    CHECK_EQ(n, 1);
    CHECK_MEM(out, "P", 1);
    cd_sendq_push(&q, NULL, frame('a', 4), false);
    cd_sendq_iov(&q, iov, 4);
    cd_sendq_consume(&q, NULL, 2);
    cd_sendq_push(&q, NULL, frame('b', 4), false);
    cd_sendq_drop_unsent(&q, NULL);
    n = drain(&q, 1, out, sizeof(out));
    CHECK_EQ(n, 2);
    CHECK_EQ(cd_sendq_bytes(&q), 0);
}

TEST(append_coalesces_in_order)
{
    cd_sendq q = {0};
    CHECK_EQ(cd_sendq_append(&q, NULL, (const uint8_t *)"h", 1, (const uint8_t *)"aa", 2), 0);
    CHECK_EQ(cd_sendq_append(&q, NULL, (const uint8_t *)"h", 1, (const uint8_t *)"bb", 2), 0);
    CHECK_EQ(cd_sendq_count(&q), 1); /* one private frame holds both */
    CHECK_EQ(cd_sendq_bytes(&q), 6);
    /* A shared frame ends the private one: later appends go after it. */
    cd_sendq_push(&q, NULL, frame('S', 2), false);
    CHECK_EQ(cd_sendq_append(&q, NULL, (const uint8_t *)"h", 1, (const uint8_t *)"cc", 2), 0);
    cd_sendq_push(&q, NULL, frame('P', 1), true);
    CHECK_EQ(cd_sendq_count(&q), 4);
    char out[32];
    size_t n = drain(&q, 100, out, sizeof(out));
    CHECK_EQ(n, 12);
    CHECK_MEM(out, "PhaahbbSShcc", 12);
    CHECK(q.s == NULL);
}

TEST(append_to_partly_written_private_frame)
{
    cd_sendq q = {0};
    cd_sendq_append(&q, NULL, (const uint8_t *)"", 0, (const uint8_t *)"abcd", 4);
    struct iovec iov[4];
    cd_sendq_iov(&q, iov, 4);
    cd_sendq_consume(&q, NULL, 3);
    cd_sendq_append(&q, NULL, (const uint8_t *)"", 0, (const uint8_t *)"ef", 2);
    char out[16];
    size_t n = drain(&q, 1, out, sizeof(out));
    CHECK_EQ(n, 3);
    CHECK_MEM(out, "def", 3);
    /* Big messages get a frame of their own size. */
    static uint8_t big[10000];
    memset(big, 'x', sizeof(big));
    cd_sendq_append(&q, NULL, (const uint8_t *)"", 0, big, sizeof(big));
    CHECK_EQ(cd_sendq_bytes(&q), sizeof(big));
    cd_sendq_clear(&q, NULL);
    CHECK(q.s == NULL);
}

TEST(many_frames_spill_past_inline_slots)
{
    cd_sendq q = {0};
    for (int i = 0; i < 100; i++) {
        cd_sendq_push(&q, NULL, frame((char)('0' + i % 10), 1), false);
        cd_sendq_push(&q, NULL, frame('P', 1), true);
    }
    char out[256];
    size_t n = drain(&q, 7, out, sizeof(out));
    CHECK_EQ(n, 200);
    for (int i = 0; i < 100; i++)
        CHECK_EQ(out[i], 'P');
    for (int i = 0; i < 100; i++)
        CHECK_EQ(out[100 + i], '0' + i % 10);
}

TEST(pool_reuses_states)
{
    cd_sendq_pool pool = {0};
    cd_sendq a = {0}, b = {0};
    cd_sendq_push(&a, &pool, frame('a', 2), false);
    cd_sendq_state *first = a.s;
    cd_sendq_clear(&a, &pool);
    CHECK_EQ(pool.n_free, 1);
    cd_sendq_push(&b, &pool, frame('b', 2), false);
    CHECK(b.s == first); /* the cached state came back */
    CHECK_EQ(pool.n_free, 0);
    char out[8];
    CHECK_EQ(drain(&b, 8, out, sizeof(out)), 2);
    cd_sendq_pool_fini(&pool);
    CHECK(pool.free == NULL);
}

int main(void)
{
    RUN(control_before_data);
    RUN(control_never_inside_a_partial_frame);
    RUN(replace_unsent_pong);
    RUN(iov_limit);
    RUN(shared_frame_refcount);
    RUN(drop_unsent_keeps_partial_head);
    RUN(append_coalesces_in_order);
    RUN(append_to_partly_written_private_frame);
    RUN(many_frames_spill_past_inline_slots);
    RUN(pool_reuses_states);
    return test_main_end();
}
