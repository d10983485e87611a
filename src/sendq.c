/* sendq.c - two-lane queue of shared frames (see sendq.h). */
#include "sendq.h"

#include <stdlib.h>

#include "conduit.h"

static int ring_push(cd_fring *r, cd_frame *f)
{
    if (r->count == r->cap) {
        uint32_t cap = r->cap ? r->cap * 2 : 4;
        cd_frame **items = malloc(sizeof(*items) * cap);
        if (items == NULL)
            return CONDUIT_ENOMEM;
        for (uint32_t i = 0; i < r->count; i++)
            items[i] = r->items[(r->head + i) % r->cap];
        free(r->items);
        r->items = items;
        r->head = 0;
        r->cap = cap;
    }
    r->items[(r->head + r->count) % r->cap] = f;
    r->count++;
    return 0;
}

static cd_frame *ring_at(const cd_fring *r, uint32_t i)
{
    return r->items[(r->head + i) % r->cap];
}

static void ring_free(cd_fring *r)
{
    free(r->items);
    r->items = NULL;
    r->head = r->cap = r->count = r->head_off = 0;
}

static void ring_pop(cd_fring *r)
{
    cd_frame_unref(r->items[r->head]);
    r->head = (r->head + 1) % r->cap;
    r->count--;
    r->head_off = 0;
    if (r->count == 0)
        ring_free(r);
}

/* Return the state once nothing is queued. */
static void release_if_empty(cd_sendq *q)
{
    cd_sendq_state *s = q->s;
    if (s && s->data.count == 0 && s->ctl.count == 0) {
        ring_free(&s->data);
        ring_free(&s->ctl);
        free(s);
        q->s = NULL;
    }
}

int cd_sendq_push(cd_sendq *q, cd_frame *f, bool is_control)
{
    if (q->s == NULL && (q->s = calloc(1, sizeof(*q->s))) == NULL) {
        cd_frame_unref(f);
        return CONDUIT_ENOMEM;
    }
    int rc = ring_push(is_control ? &q->s->ctl : &q->s->data, f);
    if (rc != 0) {
        cd_frame_unref(f);
        release_if_empty(q);
        return rc;
    }
    q->s->bytes += f->len;
    return 0;
}

cd_frame **cd_sendq_unsent_ctl_tail(cd_sendq *q)
{
    if (q->s == NULL)
        return NULL;
    cd_fring *r = &q->s->ctl;
    if (r->count == 0 || (r->count == 1 && r->head_off > 0))
        return NULL;
    return &r->items[(r->head + r->count - 1) % r->cap];
}

void cd_sendq_adjust(cd_sendq *q, size_t old_len, size_t new_len)
{
    q->s->bytes = q->s->bytes - old_len + new_len;
}

/* The send order: a partly written data frame first, then every control
 * frame, then the remaining data.  `step` visits items in that order and
 * stops when it returns false. */
typedef bool (*visit_fn)(void *ctx, cd_fring *lane, uint32_t idx);

static void visit(cd_sendq_state *s, visit_fn step, void *ctx)
{
    uint32_t first_data = 0;
    if (s->data.count > 0 && s->data.head_off > 0) {
        if (!step(ctx, &s->data, 0))
            return;
        first_data = 1;
    }
    for (uint32_t i = 0; i < s->ctl.count; i++)
        if (!step(ctx, &s->ctl, i))
            return;
    for (uint32_t i = first_data; i < s->data.count; i++)
        if (!step(ctx, &s->data, i))
            return;
}

typedef struct iov_ctx {
    struct iovec *iov;
    int max;
    int n;
} iov_ctx;

static bool add_iov(void *vctx, cd_fring *lane, uint32_t idx)
{
    iov_ctx *c = vctx;
    if (c->n == c->max)
        return false;
    cd_frame *f = ring_at(lane, idx);
    uint32_t off = idx == 0 ? lane->head_off : 0;
    c->iov[c->n].iov_base = f->data + off;
    c->iov[c->n].iov_len = f->len - off;
    c->n++;
    return true;
}

int cd_sendq_iov(const cd_sendq *q, struct iovec *iov, int max)
{
    iov_ctx c = {iov, max, 0};
    if (q->s)
        visit(q->s, add_iov, &c);
    return c.n;
}

void cd_sendq_consume(cd_sendq *q, size_t n)
{
    cd_sendq_state *s = q->s;
    if (s == NULL)
        return;
    s->bytes -= n;
    while (n > 0) {
        /* The order of cd_sendq_iov: a partly written data head, then
         * control frames, then data. */
        cd_fring *lane;
        if (s->data.count > 0 && s->data.head_off > 0)
            lane = &s->data;
        else if (s->ctl.count > 0)
            lane = &s->ctl;
        else
            lane = &s->data;
        cd_frame *f = lane->items[lane->head];
        size_t left = f->len - lane->head_off;
        if (n < left) {
            lane->head_off += (uint32_t)n;
            return;
        }
        n -= left;
        ring_pop(lane);
    }
    release_if_empty(q);
}

/* Drop whole frames that have not started; a partly written head (in
 * either lane) stays, since cutting it would corrupt the stream. */
static void ring_drop_unsent(cd_fring *r, size_t *bytes)
{
    uint32_t keep = r->count > 0 && r->head_off > 0 ? 1 : 0;
    while (r->count > keep) {
        uint32_t last = (r->head + r->count - 1) % r->cap;
        *bytes -= r->items[last]->len;
        cd_frame_unref(r->items[last]);
        r->count--;
    }
    if (r->count == 0)
        ring_free(r);
}

void cd_sendq_drop_unsent(cd_sendq *q)
{
    if (q->s == NULL)
        return;
    ring_drop_unsent(&q->s->ctl, &q->s->bytes);
    ring_drop_unsent(&q->s->data, &q->s->bytes);
    release_if_empty(q);
}

void cd_sendq_clear(cd_sendq *q)
{
    if (q->s == NULL)
        return;
    while (q->s->ctl.count > 0)
        ring_pop(&q->s->ctl);
    while (q->s->data.count > 0)
        ring_pop(&q->s->data);
    release_if_empty(q);
}
