/* test_wheel.c - the hashed timer wheel, driven by a fake clock.
 *
 * Every test checks the contract of wheel.h: a timer fires at or after its
 * deadline, at most one tick late when the wheel is advanced at least every
 * tick, exactly once, and callbacks may add or remove any timer. */
#include "wheel.h"

#include <stdint.h>
#include <stdlib.h>

#include "common.h"
#include "test.h"

typedef struct ctx {
    cd_wheel w;
    uint64_t last_tick;              /* tick of the last fired deadline */
    int n_out_of_order;
    size_t n_fired;
} ctx;

typedef struct rec {
    cd_timer t;
    uint64_t deadline_ms;            /* as armed (t.deadline_ms may move) */
    uint64_t fired_at;               /* wheel time when it last fired */
    int n_fired;
    uint64_t period_ms;              /* re-arm by this much; 0 = one-shot */
    struct rec *victim;              /* removed by the callback */
    struct rec *moved;               /* re-armed 50 ms later by the callback */
} rec;

static void on_fire(cd_timer *t, void *arg)
{
    ctx *c = arg;
    rec *r = CD_CONTAINER_OF(t, rec, t);
    uint64_t tick = r->deadline_ms / c->w.tick_ms + (r->deadline_ms % c->w.tick_ms != 0);

    if (tick < c->last_tick)
        c->n_out_of_order++;
    c->last_tick = tick;
    c->n_fired++;
    r->n_fired++;
    r->fired_at = c->w.now_ms;
    if (r->victim != NULL)
        cd_wheel_remove(&c->w, &r->victim->t);
    if (r->moved != NULL) {
        r->moved->deadline_ms = c->w.now_ms + 50;
        cd_wheel_add(&c->w, &r->moved->t, r->moved->deadline_ms);
    }
    if (r->period_ms != 0) {
        r->deadline_ms += r->period_ms;
        cd_wheel_add(&c->w, t, r->deadline_ms);
    }
}

static void ctx_init(ctx *c, uint64_t now_ms, uint32_t tick_ms)
{
    memset(c, 0, sizeof(*c));
    cd_wheel_init(&c->w, now_ms, tick_ms, c);
}

static void arm(ctx *c, rec *r, uint64_t deadline_ms)
{
    cd_timer_init(&r->t, on_fire);
    r->deadline_ms = deadline_ms;
    cd_wheel_add(&c->w, &r->t, deadline_ms);
}

static uint64_t rnd(uint64_t *s)
{
    /* xorshift64: deterministic, so a failure replays the same way. */
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

TEST(empty_wheel)
{
    ctx c;
    ctx_init(&c, 1000, 10);
    CHECK_EQ(cd_wheel_timeout_ms(&c.w, 1000), -1);
    CHECK_EQ(cd_wheel_advance(&c.w, 5000), 0);
    CHECK_EQ(c.w.count, 0);

    rec r = {0};
    cd_timer_init(&r.t, on_fire);
    CHECK(!cd_timer_is_armed(&r.t));
    cd_wheel_remove(&c.w, &r.t);     /* harmless when disarmed */
    CHECK_EQ(c.w.count, 0);
}

TEST(fire_times_one_ms_steps)
{
    enum { N = 3000 };
    static rec r[N];
    ctx c;
    uint64_t seed = 0x9e3779b97f4a7c15u;
    const uint64_t start = 100000;

    ctx_init(&c, start, 10);
    memset(r, 0, sizeof(r));
    for (int i = 0; i < N; i++)
        arm(&c, &r[i], start + 1 + rnd(&seed) % 8000);
    CHECK_EQ(c.w.count, N);
    for (uint64_t now = start; now <= start + 8020; now++)
        cd_wheel_advance(&c.w, now);

    int n_bad = 0;
    for (int i = 0; i < N; i++) {
        if (r[i].n_fired != 1 || r[i].fired_at < r[i].deadline_ms ||
            r[i].fired_at > r[i].deadline_ms + 10)
            n_bad++;
    }
    CHECK_EQ(n_bad, 0);
    CHECK_EQ(c.n_fired, N);
    CHECK_EQ(c.n_out_of_order, 0);
    CHECK_EQ(c.w.count, 0);
    CHECK_EQ(cd_wheel_timeout_ms(&c.w, c.w.now_ms), -1);
}

TEST(fire_times_uneven_steps)
{
    enum { N = 2000 };
    static rec r[N];
    ctx c;
    uint64_t seed = 12345;
    const uint64_t start = 7;

    ctx_init(&c, start, 16);
    memset(r, 0, sizeof(r));
    for (int i = 0; i < N; i++)
        arm(&c, &r[i], start + 1 + rnd(&seed) % 20000);
    /* Advance the way the loop does: at each tick boundary the wheel asks
     * for, plus a little scheduling noise. */
    uint64_t now = start;
    while (c.w.count > 0) {
        int wait = cd_wheel_timeout_ms(&c.w, now);
        CHECK(wait >= 0 && wait <= 16);
        now += (uint64_t)wait + rnd(&seed) % 2;
        cd_wheel_advance(&c.w, now);
    }
    int n_early = 0, n_late = 0;
    for (int i = 0; i < N; i++) {
        CHECK_EQ(r[i].n_fired, 1);
        n_early += r[i].fired_at < r[i].deadline_ms;
        n_late += r[i].fired_at > r[i].deadline_ms + 16 + 1;
    }
    CHECK_EQ(n_early, 0);
    CHECK_EQ(n_late, 0);
    CHECK_EQ(c.n_out_of_order, 0);
}

TEST(beyond_one_rotation)
{
    /* tick 1 ms: a rotation is CD_WHEEL_SLOTS ms, and every deadline below
     * hashes into a slot that is passed one or more times before it is due. */
    const uint64_t rot = CD_WHEEL_SLOTS;
    const uint64_t d[] = {rot - 1, rot, rot + 1, 2 * rot, 3 * rot + 7, 10 * rot + 3};
    rec r[CD_ARRAY_LEN(d)];
    ctx c;

    ctx_init(&c, 0, 1);
    memset(r, 0, sizeof(r));
    for (size_t i = 0; i < CD_ARRAY_LEN(d); i++)
        arm(&c, &r[i], d[i]);
    for (uint64_t now = 1; now <= 11 * rot; now++)
        cd_wheel_advance(&c.w, now);
    for (size_t i = 0; i < CD_ARRAY_LEN(d); i++) {
        CHECK_EQ(r[i].n_fired, 1);
        CHECK_EQ(r[i].fired_at, d[i]);
    }

    /* The same with whole-tick steps on a coarser wheel. */
    ctx_init(&c, 0, 100);
    memset(r, 0, sizeof(r));
    arm(&c, &r[0], 100 * rot * 2 + 50);
    for (uint64_t now = 0; now < 100 * rot * 2 + 50; now += 100)
        cd_wheel_advance(&c.w, now);
    CHECK_EQ(r[0].n_fired, 0);
    cd_wheel_advance(&c.w, 100 * rot * 2 + 100);
    CHECK_EQ(r[0].n_fired, 1);
}

TEST(rearm_inside_callback)
{
    ctx c;
    rec r = {0};

    ctx_init(&c, 0, 10);
    r.period_ms = 100;
    arm(&c, &r, 100);
    for (uint64_t now = 1; now <= 1000; now++) {
        uint64_t before = (uint64_t)r.n_fired;
        cd_wheel_advance(&c.w, now);
        if ((uint64_t)r.n_fired != before)
            CHECK_EQ(now % 100, 0);
    }
    CHECK_EQ(r.n_fired, 10);
    CHECK(cd_timer_is_armed(&r.t));
    CHECK_EQ(c.w.count, 1);

    /* Re-arming with a deadline already due fires on the next advance, not
     * again in this one, even when time does not move. */
    ctx_init(&c, 500, 10);
    memset(&r, 0, sizeof(r));
    arm(&c, &r, 500);
    CHECK_EQ(cd_wheel_timeout_ms(&c.w, 500), 0);
    for (int i = 1; i <= 3; i++) {
        CHECK_EQ(cd_wheel_advance(&c.w, 500), 1);
        CHECK_EQ(r.n_fired, i);
        r.deadline_ms = 400;             /* in the past */
        cd_wheel_add(&c.w, &r.t, r.deadline_ms);
    }
    CHECK_EQ(cd_wheel_timeout_ms(&c.w, 500), 0);
    cd_wheel_remove(&c.w, &r.t);
    CHECK_EQ(c.w.count, 0);
}

/* A timer that re-arms itself with a due deadline from its own callback. */
static int n_self_due;
static void on_self_due(cd_timer *t, void *arg)
{
    ctx *c = arg;
    n_self_due++;
    cd_wheel_add(&c->w, t, c->w.now_ms);
}

TEST(rearm_due_from_callback_does_not_loop)
{
    ctx c;
    cd_timer t;

    ctx_init(&c, 0, 10);
    n_self_due = 0;
    cd_timer_init(&t, on_self_due);
    cd_wheel_add(&c.w, &t, 25);
    CHECK_EQ(cd_wheel_advance(&c.w, 30), 1);
    CHECK_EQ(n_self_due, 1);
    CHECK_EQ(cd_wheel_advance(&c.w, 30), 1);
    CHECK_EQ(n_self_due, 2);
    cd_wheel_remove(&c.w, &t);
}

TEST(remove_other_due_timer_in_callback)
{
    ctx c;
    rec a = {0}, b = {0};

    /* Same slot: whichever fires first removes the other. */
    ctx_init(&c, 0, 10);
    arm(&c, &a, 55);
    arm(&c, &b, 56);
    a.victim = &b;
    b.victim = &a;
    CHECK_EQ(cd_wheel_advance(&c.w, 60), 1);
    CHECK_EQ(a.n_fired + b.n_fired, 1);
    CHECK(!cd_timer_is_armed(&a.t) && !cd_timer_is_armed(&b.t));
    CHECK_EQ(c.w.count, 0);

    /* Different slots passed by one advance. */
    ctx_init(&c, 0, 10);
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    arm(&c, &a, 10);
    arm(&c, &b, 30);
    a.victim = &b;
    CHECK_EQ(cd_wheel_advance(&c.w, 100), 1);
    CHECK_EQ(a.n_fired, 1);
    CHECK_EQ(b.n_fired, 0);
    CHECK_EQ(c.w.count, 0);

    /* On the list of already-due timers. */
    ctx_init(&c, 1000, 10);
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    arm(&c, &a, 900);
    arm(&c, &b, 950);
    a.victim = &b;
    b.victim = &a;
    CHECK_EQ(cd_wheel_advance(&c.w, 1000), 1);
    CHECK_EQ(a.n_fired + b.n_fired, 1);
    CHECK_EQ(c.w.count, 0);

    /* Three in one slot: the first to fire removes its neighbour from the
     * middle of the local list, and the third still fires. */
    rec r3[3];
    ctx_init(&c, 0, 10);
    memset(r3, 0, sizeof(r3));
    for (int i = 0; i < 3; i++)
        arm(&c, &r3[i], 41 + (uint64_t)i);
    /* Slots push at the head, so r3[2] fires first; it removes r3[1]. */
    r3[2].victim = &r3[1];
    CHECK_EQ(cd_wheel_advance(&c.w, 50), 2);
    CHECK_EQ(r3[0].n_fired, 1);
    CHECK_EQ(r3[1].n_fired, 0);
    CHECK_EQ(r3[2].n_fired, 1);
    CHECK_EQ(c.w.count, 0);
}

TEST(move_other_due_timer_in_callback)
{
    ctx c;
    rec a = {0}, b = {0};

    ctx_init(&c, 0, 10);
    arm(&c, &a, 55);
    arm(&c, &b, 56);
    a.moved = &b;
    b.moved = &a;
    CHECK_EQ(cd_wheel_advance(&c.w, 60), 1);
    rec *first = a.n_fired ? &a : &b, *second = a.n_fired ? &b : &a;
    CHECK_EQ(first->n_fired, 1);
    CHECK_EQ(second->n_fired, 0);
    CHECK_EQ(second->deadline_ms, 110);
    CHECK_EQ(c.w.count, 1);
    first->moved = NULL;
    second->moved = NULL;
    for (uint64_t now = 61; now <= 120; now++)
        cd_wheel_advance(&c.w, now);
    CHECK_EQ(second->n_fired, 1);
    CHECK_EQ(second->fired_at, 110);
    CHECK_EQ(c.w.count, 0);
}

TEST(readd_moves_timer)
{
    ctx c;
    rec r = {0};

    ctx_init(&c, 0, 10);
    arm(&c, &r, 30);
    r.deadline_ms = 200;
    cd_wheel_add(&c.w, &r.t, 200);   /* re-arm while armed */
    CHECK_EQ(c.w.count, 1);
    for (uint64_t now = 1; now <= 300; now++)
        cd_wheel_advance(&c.w, now);
    CHECK_EQ(r.n_fired, 1);
    CHECK_EQ(r.fired_at, 200);
}

TEST(many_timers_add_remove)
{
    enum { N = 100000 };
    rec *r = calloc(N, sizeof(*r));
    ctx c;
    uint64_t seed = 42;
    const uint64_t span = 200000;

    CHECK(r != NULL);
    if (r == NULL)
        return;
    ctx_init(&c, 0, 10);
    for (int i = 0; i < N; i++)
        arm(&c, &r[i], 1 + rnd(&seed) % span);
    CHECK_EQ(c.w.count, N);
    for (int i = 1; i < N; i += 2)
        cd_wheel_remove(&c.w, &r[i].t);
    CHECK_EQ(c.w.count, N / 2);
    /* Move a tenth of the survivors to new deadlines. */
    for (int i = 0; i < N; i += 20) {
        r[i].deadline_ms = 1 + rnd(&seed) % span;
        cd_wheel_add(&c.w, &r[i].t, r[i].deadline_ms);
    }
    CHECK_EQ(c.w.count, N / 2);
    for (uint64_t now = 10; now <= span + 10; now += 10)
        cd_wheel_advance(&c.w, now);

    int n_bad = 0;
    for (int i = 0; i < N; i++) {
        if (i % 2 == 1)
            n_bad += r[i].n_fired != 0;
        else
            n_bad += r[i].n_fired != 1 || r[i].fired_at < r[i].deadline_ms ||
                     r[i].fired_at > r[i].deadline_ms + 10;
    }
    CHECK_EQ(n_bad, 0);
    CHECK_EQ(c.n_fired, N / 2);
    CHECK_EQ(c.w.count, 0);
    free(r);
}

TEST(large_time_jumps)
{
    const uint64_t d[] = {100, 5000, 5120, 5130, 50000, 1000000};
    rec r[CD_ARRAY_LEN(d)];
    rec far = {0};
    ctx c;

    ctx_init(&c, 0, 10);
    memset(r, 0, sizeof(r));
    for (size_t i = 0; i < CD_ARRAY_LEN(d); i++)
        arm(&c, &r[i], d[i]);
    arm(&c, &far, 1000000000);
    CHECK_EQ(cd_wheel_advance(&c.w, 10000000), CD_ARRAY_LEN(d));
    for (size_t i = 0; i < CD_ARRAY_LEN(d); i++) {
        CHECK_EQ(r[i].n_fired, 1);
        CHECK_EQ(r[i].fired_at, 10000000);
    }
    CHECK_EQ(far.n_fired, 0);
    CHECK_EQ(c.w.count, 1);
    cd_wheel_advance(&c.w, 999999999);
    CHECK_EQ(far.n_fired, 0);
    cd_wheel_advance(&c.w, 1000000000);
    CHECK_EQ(far.n_fired, 1);
    CHECK_EQ(c.w.count, 0);

    /* Jumps of exactly one rotation and one tick more, with a timer in
     * every slot, and one rotation further out that must survive. */
    static rec all[2 * CD_WHEEL_SLOTS];
    for (uint64_t jump = CD_WHEEL_SLOTS - 1; jump <= CD_WHEEL_SLOTS + 1; jump++) {
        ctx_init(&c, 0, 10);
        memset(all, 0, sizeof(all));
        for (uint64_t i = 0; i < 2 * CD_WHEEL_SLOTS; i++)
            arm(&c, &all[i], 10 * (i + 1));
        cd_wheel_advance(&c.w, 10 * jump);
        int n_wrong = 0;
        for (uint64_t i = 0; i < 2 * CD_WHEEL_SLOTS; i++)
            n_wrong += all[i].n_fired != (all[i].deadline_ms <= 10 * jump);
        CHECK_EQ(n_wrong, 0);
        CHECK_EQ(c.w.count, 2 * CD_WHEEL_SLOTS - jump);
        cd_wheel_advance(&c.w, 10 * 2 * CD_WHEEL_SLOTS);
        CHECK_EQ(c.w.count, 0);
        CHECK_EQ(c.n_fired, 2 * CD_WHEEL_SLOTS);
    }
}

TEST(timeout_ms)
{
    ctx c;
    rec r = {0};

    ctx_init(&c, 1000, 10);
    CHECK_EQ(cd_wheel_timeout_ms(&c.w, 1000), -1);
    arm(&c, &r, 1055);
    CHECK_EQ(cd_wheel_timeout_ms(&c.w, 1000), 10);
    CHECK_EQ(cd_wheel_timeout_ms(&c.w, 1003), 7);
    CHECK_EQ(cd_wheel_timeout_ms(&c.w, 1010), 0);   /* a boundary passed */
    CHECK_EQ(cd_wheel_timeout_ms(&c.w, 1500), 0);
    CHECK_EQ(cd_wheel_advance(&c.w, 1010), 0);
    CHECK_EQ(cd_wheel_timeout_ms(&c.w, 1010), 10);
    cd_wheel_advance(&c.w, 1060);
    CHECK_EQ(r.n_fired, 1);
    CHECK_EQ(cd_wheel_timeout_ms(&c.w, 1060), -1);

    /* A deadline already reached wants an immediate advance. */
    arm(&c, &r, 1060);
    CHECK_EQ(cd_wheel_timeout_ms(&c.w, 1060), 0);
    CHECK_EQ(cd_wheel_advance(&c.w, 1060), 1);
}

TEST(zero_tick_is_one_ms)
{
    ctx c;
    rec r = {0};

    ctx_init(&c, 0, 0);
    CHECK_EQ(c.w.tick_ms, 1);
    arm(&c, &r, 3);
    cd_wheel_advance(&c.w, 2);
    CHECK_EQ(r.n_fired, 0);
    cd_wheel_advance(&c.w, 3);
    CHECK_EQ(r.n_fired, 1);
}

int main(void)
{
    RUN(empty_wheel);
    RUN(fire_times_one_ms_steps);
    RUN(fire_times_uneven_steps);
    RUN(beyond_one_rotation);
    RUN(rearm_inside_callback);
    RUN(rearm_due_from_callback_does_not_loop);
    RUN(remove_other_due_timer_in_callback);
    RUN(move_other_due_timer_in_callback);
    RUN(readd_moves_timer);
    RUN(many_timers_add_remove);
    RUN(large_time_jumps);
    RUN(timeout_ms);
    RUN(zero_tick_is_one_ms);
    return test_main_end();
}
