/* wheel.c - hashed timer wheel.
 *
 * Tick k covers the deadlines in ((k-1)*tick_ms, k*tick_ms] and lives in
 * slot k % CD_WHEEL_SLOTS, together with the timers of later rotations that
 * hash there.  Advancing to `now` visits the slots of the ticks passed since
 * the last advance (at most one full sweep), fires the timers whose deadline
 * is <= now and re-files the others.  Because a deadline is rounded up to
 * its tick, a timer never fires early and, when advanced at every tick
 * boundary, at most one tick late.  Timers armed with a deadline that has
 * already passed go on the `due` list and fire on the next advance.
 *
 * Invariants: an armed timer is on exactly one list and t->pprev points at
 * the pointer that points at it (a slot, `due`, a previous timer's `next`,
 * or the local list of the slot being fired); `count` is the number of
 * armed timers. */
#include "wheel.h"

#include <stddef.h>

#define SLOT_MASK ((uint64_t)CD_WHEEL_SLOTS - 1)

_Static_assert((CD_WHEEL_SLOTS & (CD_WHEEL_SLOTS - 1)) == 0,
               "CD_WHEEL_SLOTS must be a power of two");

static void link_timer(cd_timer **head, cd_timer *t)
{
    t->next = *head;
    if (t->next != NULL)
        t->next->pprev = &t->next;
    t->pprev = head;
    *head = t;
}

static void unlink_timer(cd_timer *t)
{
    *t->pprev = t->next;
    if (t->next != NULL)
        t->next->pprev = t->pprev;
    t->next = NULL;
    t->pprev = NULL;
}

/* The first tick whose end is at or after the deadline; computed without
 * d + tick_ms - 1 so that deadlines near UINT64_MAX do not wrap. */
static uint64_t deadline_tick(const cd_wheel *w, uint64_t deadline_ms)
{
    return deadline_ms / w->tick_ms + (deadline_ms % w->tick_ms != 0);
}

void cd_wheel_init(cd_wheel *w, uint64_t now_ms, uint32_t tick_ms, void *arg)
{
    for (size_t i = 0; i < CD_WHEEL_SLOTS; i++)
        w->slots[i] = NULL;
    w->due = NULL;
    w->tick_ms = tick_ms ? tick_ms : 1;
    w->now_ms = now_ms;
    w->tick = now_ms / w->tick_ms;
    w->count = 0;
    w->arg = arg;
}

void cd_wheel_add(cd_wheel *w, cd_timer *t, uint64_t deadline_ms)
{
    cd_wheel_remove(w, t);
    t->deadline_ms = deadline_ms;
    /* A deadline after now_ms rounds up to a tick after w->tick, which is
     * a slot the next advances have yet to visit. */
    if (deadline_ms <= w->now_ms)
        link_timer(&w->due, t);
    else
        link_timer(&w->slots[deadline_tick(w, deadline_ms) & SLOT_MASK], t);
    w->count++;
}

void cd_wheel_remove(cd_wheel *w, cd_timer *t)
{
    if (!cd_timer_is_armed(t))
        return;
    unlink_timer(t);
    w->count--;
}

/* Fire or re-file every timer on *src.  The list is moved to a local head
 * first so that timers a callback arms (even into this very slot) wait for
 * a later advance instead of looping here, while a callback that removes a
 * timer still on the local list unlinks it through pprev like any other. */
static uint32_t run_list(cd_wheel *w, cd_timer **src)
{
    cd_timer *local = *src;
    uint32_t fired = 0;

    if (local == NULL)
        return 0;
    *src = NULL;
    local->pprev = &local;
    while (local != NULL) {
        cd_timer *t = local;
        unlink_timer(t);
        w->count--;
        if (t->deadline_ms <= w->now_ms) {
            fired++;
            t->fn(t, w->arg);
        } else {
            cd_wheel_add(w, t, t->deadline_ms);   /* a later rotation */
        }
    }
    return fired;
}

uint32_t cd_wheel_advance(cd_wheel *w, uint64_t now_ms)
{
    if (now_ms < w->now_ms)
        now_ms = w->now_ms;              /* the clock is monotonic; be safe */
    uint64_t cur = now_ms / w->tick_ms;
    uint64_t n = cur - w->tick;
    if (n > CD_WHEEL_SLOTS)
        n = CD_WHEEL_SLOTS;              /* one sweep sees every timer */
    uint64_t first = cur - n + 1;
    uint32_t fired;

    /* Time moves before any callback runs, so timers armed from a callback
     * are filed relative to the new now and never into a visited tick. */
    w->now_ms = now_ms;
    w->tick = cur;
    fired = run_list(w, &w->due);
    for (uint64_t i = 0; i < n; i++)
        fired += run_list(w, &w->slots[(first + i) & SLOT_MASK]);
    return fired;
}

int cd_wheel_timeout_ms(const cd_wheel *w, uint64_t now_ms)
{
    if (w->count == 0)
        return -1;
    if (w->due != NULL)
        return 0;
    uint64_t next_ms = (w->tick + 1) * w->tick_ms;
    if (now_ms >= next_ms)
        return 0;
    uint64_t wait_ms = next_ms - now_ms;
    return (int)(wait_ms < w->tick_ms ? wait_ms : w->tick_ms);
}
