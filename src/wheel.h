/* wheel.h - hashed timer wheel.
 *
 * O(1) add and remove, O(expired + slots passed) advance.  Pure: time is an
 * argument (milliseconds of the loop's cached monotonic clock), so tests
 * drive it directly.  Timers are intrusive: the owner embeds a cd_timer and
 * gets back to itself with CD_CONTAINER_OF in the callback. */
#ifndef CD_WHEEL_H
#define CD_WHEEL_H

#include <stdbool.h>
#include <stdint.h>

#define CD_WHEEL_SLOTS 512           /* power of two */

struct cd_timer;
typedef void (*cd_timer_fn)(struct cd_timer *t, void *arg);

typedef struct cd_timer {
    struct cd_timer *next;           /* slot list; NULL prev == unlinked */
    struct cd_timer **pprev;
    uint64_t deadline_ms;
    cd_timer_fn fn;
} cd_timer;

typedef struct cd_wheel {
    cd_timer *slots[CD_WHEEL_SLOTS]; /* slot of tick k holds deadlines in
                                        ((k-1)*tick_ms, k*tick_ms], any round */
    cd_timer *due;                   /* armed with deadline <= now_ms */
    uint64_t now_ms;                 /* time the wheel has advanced to */
    uint64_t tick;                   /* now_ms / tick_ms: ticks <= this are done */
    uint32_t tick_ms;
    uint32_t count;                  /* armed timers */
    void *arg;                       /* passed to every callback */
} cd_wheel;

/* Start the wheel at `now_ms` with `tick_ms` granularity; callbacks get `arg`. */
void cd_wheel_init(cd_wheel *w, uint64_t now_ms, uint32_t tick_ms, void *arg);

static inline void cd_timer_init(cd_timer *t, cd_timer_fn fn)
{
    t->next = 0;
    t->pprev = 0;
    t->deadline_ms = 0;
    t->fn = fn;
}

static inline bool cd_timer_is_armed(const cd_timer *t) { return t->pprev != 0; }

/* Arm (or re-arm) `t` to fire at `deadline_ms`; a deadline in the past fires
 * on the next advance.  A timer fires at or after its deadline, at most one
 * tick late. */
void cd_wheel_add(cd_wheel *w, cd_timer *t, uint64_t deadline_ms);
/* Disarm; harmless on a disarmed timer. */
void cd_wheel_remove(cd_wheel *w, cd_timer *t);
/* Fire, tick by tick, every timer whose deadline is <= now_ms rounded down
 * to a tick boundary, and every timer armed with a deadline already past.
 * A callback may add or remove any timer, including itself and other due
 * timers; a timer armed from a callback fires on a later advance at the
 * earliest.  Returns the number fired. */
uint32_t cd_wheel_advance(cd_wheel *w, uint64_t now_ms);
/* Milliseconds until the next tick that may fire a timer (0..tick_ms), or -1
 * when no timer is armed: the poll timeout. */
int cd_wheel_timeout_ms(const cd_wheel *w, uint64_t now_ms);

#endif
